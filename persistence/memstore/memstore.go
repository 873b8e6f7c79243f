// Package memstore is an in-memory [persistence.Store], for tests and for
// jobs whose state need not outlive the process.
package memstore

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/meshflow/meshflow/persistence"
)

// Store is an in-memory, goroutine-safe store. Keys are kept sorted.
type Store struct {
	mu     sync.RWMutex
	keys   [][]byte // sorted
	vals   map[string][]byte
	closed bool
}

// New returns an empty store.
func New() *Store { return &Store{vals: make(map[string][]byte)} }

var _ persistence.Store = (*Store)(nil)

func (s *Store) check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed {
		return persistence.ErrClosed
	}
	return nil
}

// Get implements persistence.Store.
func (s *Store) Get(ctx context.Context, key []byte) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	v, ok := s.vals[string(key)]
	if !ok {
		return nil, fmt.Errorf("memstore: get %q: %w", key, persistence.ErrNotFound)
	}
	return bytes.Clone(v), nil
}

// Scan implements persistence.Store. It works on a copy of the matching
// entries, so fn may write to the store.
func (s *Store) Scan(ctx context.Context, prefix []byte, fn func(key, value []byte) error) error {
	s.mu.RLock()
	if err := s.check(ctx); err != nil {
		s.mu.RUnlock()
		return err
	}
	i, _ := slices.BinarySearchFunc(s.keys, prefix, bytes.Compare)
	type kv struct{ k, v []byte }
	var found []kv
	for ; i < len(s.keys) && bytes.HasPrefix(s.keys[i], prefix); i++ {
		found = append(found, kv{s.keys[i], s.vals[string(s.keys[i])]})
	}
	s.mu.RUnlock()
	for _, e := range found {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(bytes.Clone(e.k), bytes.Clone(e.v)); err != nil {
			return err
		}
	}
	return nil
}

// Apply implements persistence.Store.
func (s *Store) Apply(ctx context.Context, b *persistence.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return err
	}
	for _, op := range b.Ops() {
		i, found := slices.BinarySearchFunc(s.keys, op.Key, bytes.Compare)
		switch {
		case op.Delete && found:
			s.keys = slices.Delete(s.keys, i, i+1)
			delete(s.vals, string(op.Key))
		case op.Delete:
		case found:
			s.vals[string(op.Key)] = bytes.Clone(op.Value)
		default:
			k := bytes.Clone(op.Key)
			s.keys = slices.Insert(s.keys, i, k)
			s.vals[string(k)] = bytes.Clone(op.Value)
		}
	}
	return nil
}

// Namespace implements persistence.Store.
func (s *Store) Namespace(name string) persistence.Store {
	return &persistence.Prefixed{Root: s, Prefix: persistence.NamespacePrefix(name)}
}

// Close implements persistence.Store.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

// Len is the number of keys stored.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.keys)
}
