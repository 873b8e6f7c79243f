// Package memstore is an in-memory [persistence.Store], for tests and for
// jobs whose state need not outlive the process.
package memstore

import (
	"bytes"
	"context"
	"slices"
	"sort"
	"sync"

	"github.com/meshflow/meshflow/persistence"
)

// Store is an in-memory store. It is safe for concurrent use; every Apply is
// atomic, whatever its size.
type Store struct {
	root persistence.Store
	kv   *kv
}

var _ persistence.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store {
	kv := &kv{}
	return &Store{root: persistence.NewStore(kv), kv: kv}
}

// Get implements [persistence.Store].
func (s *Store) Get(ctx context.Context, key []byte) ([]byte, error) {
	return s.root.Get(ctx, key)
}

// Scan implements [persistence.Store].
func (s *Store) Scan(ctx context.Context, prefix []byte, fn func(key, value []byte) error) error {
	return s.root.Scan(ctx, prefix, fn)
}

// Apply implements [persistence.Store].
func (s *Store) Apply(ctx context.Context, b *persistence.Batch) error {
	return s.root.Apply(ctx, b)
}

// Namespace implements [persistence.Store].
func (s *Store) Namespace(name string) persistence.Store { return s.root.Namespace(name) }

// Close implements [persistence.Store]. The data is dropped.
func (s *Store) Close() error { return s.root.Close() }

// Len is the number of keys stored, in all namespaces.
func (s *Store) Len() int {
	s.kv.mu.RLock()
	defer s.kv.mu.RUnlock()
	return s.kv.n
}

// kv is the backend: a sorted sequence of entries cut into blocks of at
// most maxBlock entries, so that an insert or delete moves at most one
// block and the slice of blocks, not the whole key space.
type kv struct {
	mu     sync.RWMutex
	blocks [][]entry // each sorted and non-empty; blocks in key order
	n      int
	closed bool
}

type entry struct{ key, value []byte } // never modified once stored

const maxBlock = 512

func cmpEntry(e entry, key []byte) int { return bytes.Compare(e.key, key) }

// search returns the position of key, or where it would be inserted.
func (s *kv) search(key []byte) (bi, i int, found bool) {
	bi = sort.Search(len(s.blocks), func(j int) bool {
		b := s.blocks[j]
		return bytes.Compare(b[len(b)-1].key, key) >= 0
	})
	if bi == len(s.blocks) { // after the last key
		if bi == 0 {
			return 0, 0, false
		}
		return bi - 1, len(s.blocks[bi-1]), false
	}
	i, found = slices.BinarySearchFunc(s.blocks[bi], key, cmpEntry)
	return bi, i, found
}

func (s *kv) Get(_ context.Context, key []byte) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, persistence.ErrClosed
	}
	bi, i, found := s.search(key)
	if !found {
		return nil, persistence.ErrNotFound
	}
	return bytes.Clone(s.blocks[bi][i].value), nil
}

// Scan collects the matching entries under the read lock and calls fn
// without it, so fn may write to the store.
func (s *kv) Scan(_ context.Context, prefix []byte, fn func(key, value []byte) error) error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return persistence.ErrClosed
	}
	var found []entry
	bi, i, _ := s.search(prefix)
scan:
	for ; bi < len(s.blocks); bi, i = bi+1, 0 {
		for _, e := range s.blocks[bi][i:] {
			if !bytes.HasPrefix(e.key, prefix) {
				break scan
			}
			found = append(found, e)
		}
	}
	s.mu.RUnlock()
	for _, e := range found {
		if err := fn(bytes.Clone(e.key), bytes.Clone(e.value)); err != nil {
			return err
		}
	}
	return nil
}

func (s *kv) Write(_ context.Context, ops []persistence.Op) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return persistence.ErrClosed
	}
	for _, op := range ops {
		bi, i, found := s.search(op.Key)
		switch {
		case op.Delete && found:
			s.blocks[bi] = slices.Delete(s.blocks[bi], i, i+1)
			if len(s.blocks[bi]) == 0 {
				s.blocks = slices.Delete(s.blocks, bi, bi+1)
			}
			s.n--
		case op.Delete:
		case found:
			s.blocks[bi][i].value = bytes.Clone(op.Value)
		default:
			s.insert(bi, i, entry{bytes.Clone(op.Key), bytes.Clone(op.Value)})
			s.n++
		}
	}
	return nil
}

func (s *kv) insert(bi, i int, e entry) {
	if len(s.blocks) == 0 {
		s.blocks = [][]entry{{e}}
		return
	}
	b := slices.Insert(s.blocks[bi], i, e)
	if len(b) <= maxBlock {
		s.blocks[bi] = b
		return
	}
	half := len(b) / 2
	left := slices.Clip(b[:half])
	right := append(make([]entry, 0, maxBlock), b[half:]...)
	clear(b[half:]) // the left half keeps b's array
	s.blocks[bi] = left
	s.blocks = slices.Insert(s.blocks, bi+1, right)
}

func (s *kv) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.blocks, s.n = nil, 0
	return nil
}
