// Package memstore is an in-memory [persistence.Store], for tests and for
// jobs whose state need not outlive the process.
package memstore

import (
	"bytes"
	"context"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/meshflow/meshflow/persistence"
)

// Store is an in-memory store. It is safe for concurrent use; every Apply is
// atomic, whatever its size. It supports persistence.OpenSnapshot with
// copy-on-write snapshots: opening one is O(1); while one is open, the
// first write to each block of up to 512 keys copies that block, and the
// first write at all copies the index of blocks (a pointer per block).
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

// Close implements [persistence.Store]. The data is dropped; open
// snapshots return persistence.ErrClosed from then on.
func (s *Store) Close() error { return s.root.Close() }

// Unwrap implements [persistence.Wrapper]: it returns the root view, for
// persistence.OpenSnapshot and persistence.ReplaceNamespace.
func (s *Store) Unwrap() persistence.Store { return s.root }

// Len is the number of keys stored, in all namespaces.
func (s *Store) Len() int {
	s.kv.mu.RLock()
	defer s.kv.mu.RUnlock()
	return s.kv.n
}

// kv is the backend: a sorted sequence of entries cut into blocks of at
// most maxBlock entries, so that an insert or delete moves at most one
// block and the slice of blocks, not the whole key space.
//
// Snapshots are copy-on-write: opening one keeps the current slice of
// blocks (O(1)) and starts a new generation. While a snapshot is open, a
// writer copies a block made in an earlier generation before changing it,
// and the slice of blocks too, once per generation; so a snapshot's blocks
// never change. Entries (their key and value bytes) are never modified once
// stored. With no snapshot open, writers change blocks in place.
type kv struct {
	mu     sync.RWMutex
	blocks []*block // each sorted and non-empty; blocks in key order
	n      int
	closed bool
	// isClosed mirrors closed for snapshot scans, which run without mu.
	isClosed atomic.Bool

	gen       uint64 // current generation; a snapshot opens a new one
	blocksGen uint64 // generation of the array of blocks
	snaps     int    // open snapshots
}

type block struct {
	gen     uint64 // generation in which the block was made
	entries []entry
}

type entry struct{ key, value []byte } // never modified once stored

const maxBlock = 512

func cmpEntry(e entry, key []byte) int { return bytes.Compare(e.key, key) }

// search returns the position of key in blocks, or where it would be
// inserted.
func search(blocks []*block, key []byte) (bi, i int, found bool) {
	bi = sort.Search(len(blocks), func(j int) bool {
		b := blocks[j].entries
		return bytes.Compare(b[len(b)-1].key, key) >= 0
	})
	if bi == len(blocks) { // after the last key
		if bi == 0 {
			return 0, 0, false
		}
		return bi - 1, len(blocks[bi-1].entries), false
	}
	i, found = slices.BinarySearchFunc(blocks[bi].entries, key, cmpEntry)
	return bi, i, found
}

// shared reports whether something made in generation gen may be seen by
// an open snapshot. Called with mu held.
func (s *kv) shared(gen uint64) bool { return s.snaps > 0 && gen < s.gen }

// ownBlocks makes the array of blocks writable. Called with mu held.
func (s *kv) ownBlocks() {
	if s.shared(s.blocksGen) {
		s.blocks = slices.Clone(s.blocks)
		s.blocksGen = s.gen
	}
}

// ownBlock makes block bi writable and returns it. Called with mu held.
func (s *kv) ownBlock(bi int) *block {
	s.ownBlocks()
	b := s.blocks[bi]
	if s.shared(b.gen) {
		nb := &block{gen: s.gen, entries: make([]entry, len(b.entries), len(b.entries)+1)}
		copy(nb.entries, b.entries)
		s.blocks[bi] = nb
		return nb
	}
	return b
}

func (s *kv) Get(_ context.Context, key []byte) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, persistence.ErrClosed
	}
	bi, i, found := search(s.blocks, key)
	if !found {
		return nil, persistence.ErrNotFound
	}
	return bytes.Clone(s.blocks[bi].entries[i].value), nil
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
	bi, i, _ := search(s.blocks, prefix)
scan:
	for ; bi < len(s.blocks); bi, i = bi+1, 0 {
		for _, e := range s.blocks[bi].entries[i:] {
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
		bi, i, found := search(s.blocks, op.Key)
		switch {
		case op.Delete && found:
			b := s.ownBlock(bi)
			b.entries = slices.Delete(b.entries, i, i+1)
			if len(b.entries) == 0 {
				s.blocks = slices.Delete(s.blocks, bi, bi+1) // ownBlock owned the array
			}
			s.n--
		case op.Delete:
		case found:
			s.ownBlock(bi).entries[i].value = bytes.Clone(op.Value)
		default:
			s.insert(bi, i, entry{bytes.Clone(op.Key), bytes.Clone(op.Value)})
			s.n++
		}
	}
	return nil
}

func (s *kv) insert(bi, i int, e entry) {
	if len(s.blocks) == 0 {
		s.ownBlocks()
		s.blocks = append(s.blocks, &block{gen: s.gen, entries: []entry{e}})
		return
	}
	b := s.ownBlock(bi)
	b.entries = slices.Insert(b.entries, i, e)
	if len(b.entries) <= maxBlock {
		return
	}
	half := len(b.entries) / 2
	right := &block{gen: s.gen, entries: append(make([]entry, 0, maxBlock), b.entries[half:]...)}
	clear(b.entries[half:]) // the left half keeps b's array
	b.entries = slices.Clip(b.entries[:half])
	s.blocks = slices.Insert(s.blocks, bi+1, right)
}

func (s *kv) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.isClosed.Store(true)
	s.blocks, s.n = nil, 0
	return nil
}

// Snapshot implements [persistence.SnapshotBackend], copy-on-write (see kv):
// opening one takes the write lock for O(1) work.
func (s *kv) Snapshot(prefix []byte) (persistence.Snapshot, error) {
	return s.SnapshotRange(prefix, nil, nil)
}

// SnapshotRange implements [persistence.RangeSnapshotBackend]: a snapshot
// whose scans start at prefix|start and stop before prefix|end.
func (s *kv) SnapshotRange(prefix, start, end []byte) (persistence.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, persistence.ErrClosed
	}
	sn := &snapshot{kv: s, blocks: s.blocks, prefix: bytes.Clone(prefix)}
	sn.seek = append(bytes.Clone(prefix), start...)
	if end != nil {
		sn.end = append(bytes.Clone(prefix), end...)
	}
	sn.idle.L = &sn.mu
	s.gen++
	s.snaps++
	return sn, nil
}

type snapshot struct {
	kv     *kv
	prefix []byte
	seek   []byte      // prefix|start: where scans begin
	end    []byte      // prefix|end: where they stop; nil for the whole prefix
	stop   atomic.Bool // set by Close: a running scan stops

	mu     sync.Mutex
	idle   sync.Cond // signalled when scans drops to 0
	blocks []*block  // never modified; nil once closed
	scans  int
	closed bool
}

func (sn *snapshot) Scan(ctx context.Context, fn func(key, value []byte) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	sn.mu.Lock()
	if sn.closed || sn.kv.isClosed.Load() {
		sn.mu.Unlock()
		return persistence.ErrClosed
	}
	sn.scans++
	blocks := sn.blocks
	sn.mu.Unlock()
	defer func() {
		sn.mu.Lock()
		sn.scans--
		if sn.scans == 0 {
			sn.idle.Broadcast()
		}
		sn.mu.Unlock()
	}()
	n := len(sn.prefix)
	bi, i, _ := search(blocks, sn.seek)
	for ; bi < len(blocks); bi, i = bi+1, 0 {
		for _, e := range blocks[bi].entries[i:] {
			if !bytes.HasPrefix(e.key, sn.prefix) || (sn.end != nil && bytes.Compare(e.key, sn.end) >= 0) {
				return nil
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			if sn.stop.Load() || sn.kv.isClosed.Load() {
				return persistence.ErrClosed
			}
			if err := fn(e.key[n:], e.value); err != nil {
				return err
			}
		}
	}
	return nil
}

func (sn *snapshot) Close() error {
	sn.mu.Lock()
	if sn.closed {
		sn.mu.Unlock()
		return nil
	}
	sn.closed = true
	sn.stop.Store(true)
	for sn.scans > 0 {
		sn.idle.Wait()
	}
	sn.blocks = nil
	sn.mu.Unlock()
	// Only now may writers change in place what the scans read.
	sn.kv.mu.Lock()
	sn.kv.snaps--
	sn.kv.mu.Unlock()
	return nil
}
