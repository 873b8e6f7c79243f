package persistence

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Overlay is a [Store] whose writes stay in memory until [Overlay.Commit]:
// Apply records puts and deletes (deletes as tombstones) in a sorted
// buffer, a later write of a key winning; Get and Scan read the buffer
// first and the underlying store behind it. Commit writes the buffer to
// the underlying store in one atomic write and empties it; Discard drops
// it. The runtime wraps each call of an operator in an overlay over the
// operator's Store, so the writes of a call that fails are never seen
// after the call is retried.
//
// The views returned by Namespace share the buffer of the overlay they
// come from (keys are buffered in the package's key encoding, see the
// package documentation), and Commit, Discard and Size on any view act on
// that whole shared buffer.
//
// Scan reads one consistent view of the buffer and the underlying store:
// writes and commits made while it runs, also by its fn, are not seen by
// it. An Overlay is safe for concurrent use.
//
// Commit is one atomic write when the underlying store is a store of this
// module (memstore, badgerstore, a namespace of either, or another
// Overlay); over any other Store, keys of several namespaces are applied
// with one Apply per namespace, in key order.
type Overlay struct {
	buf       *overlayBuf
	s         Store  // the underlying view matching this view
	path      []byte // encoded namespace path below the overlay root
	keyPrefix []byte // path | tagKey
}

var _ Store = (*Overlay)(nil)

// overlayBuf is the buffer shared by the views of an overlay.
//
// Lock order: commitMu before mu. Commit holds commitMu for writing while
// it writes to the underlying store; Scan holds it for reading from before
// it copies the buffer until the underlying scan has taken its snapshot
// (its first callback, or its return), so that no commit falls between the
// two views.
type overlayBuf struct {
	root     Store // the store given to NewOverlay
	commitMu sync.RWMutex

	mu     sync.Mutex
	blocks [][]ovEntry // each sorted and non-empty; blocks in key order
	n      int
	size   int
	closed bool
}

// ovEntry is a buffered write of an encoded key. Its slices are never
// modified once buffered.
type ovEntry struct {
	key, value []byte
	del        bool
}

// ovMaxBlock bounds the entries an insert moves.
const ovMaxBlock = 256

// NewOverlay returns an overlay with an empty buffer over s.
func NewOverlay(s Store) *Overlay {
	return &Overlay{buf: &overlayBuf{root: s}, s: s, keyPrefix: []byte{tagKey}}
}

// Get implements [Store]: the buffered value of key, ErrNotFound when key
// is buffered as deleted, else the underlying store's value.
func (o *Overlay) Get(ctx context.Context, key []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b := o.buf
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	var arr [64]byte // keeps short keys off the heap
	ek := append(append(arr[:0], o.keyPrefix...), key...)
	if bi, i, found := b.search(ek); found {
		e := b.blocks[bi][i]
		b.mu.Unlock()
		if e.del {
			return nil, ErrNotFound
		}
		return append(make([]byte, 0, len(e.value)), e.value...), nil
	}
	b.mu.Unlock()
	return o.s.Get(ctx, key)
}

// Scan implements [Store], merging the buffer with the underlying store
// in key order and hiding the keys buffered as deleted.
func (o *Overlay) Scan(ctx context.Context, prefix []byte, fn func(key, value []byte) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b := o.buf
	b.commitMu.RLock()
	locked := true
	unlock := func() {
		if locked {
			locked = false
			b.commitMu.RUnlock()
		}
	}
	defer unlock()
	snap, err := b.snapshot(o.encode(prefix), len(o.keyPrefix))
	if err != nil {
		return err
	}
	if len(snap) == 0 {
		return o.s.Scan(ctx, prefix, func(k, v []byte) error {
			unlock()
			return fn(k, v)
		})
	}
	emit := func(e ovEntry) error {
		if e.del {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		return fn(e.key, e.value)
	}
	i := 0
	err = o.s.Scan(ctx, prefix, func(k, v []byte) error {
		unlock()
		for ; i < len(snap) && bytes.Compare(snap[i].key, k) < 0; i++ {
			if err := emit(snap[i]); err != nil {
				i++
				return err
			}
		}
		if i < len(snap) && bytes.Equal(snap[i].key, k) {
			i++
			return emit(snap[i-1])
		}
		return fn(k, v)
	})
	unlock()
	if err != nil {
		return err
	}
	for ; i < len(snap); i++ {
		if err := emit(snap[i]); err != nil {
			return err
		}
	}
	return nil
}

// Apply implements [Store]: the writes of b are buffered, atomically.
func (o *Overlay) Apply(ctx context.Context, b *Batch) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// One buffer for the copies of all keys and values.
	n := len(o.keyPrefix)
	arena := make([]byte, 0, len(b.ops)*n+b.keyBytes+b.valBytes)
	ops := make([]Op, len(b.ops))
	for i, op := range b.ops {
		start := len(arena)
		arena = append(append(arena, o.keyPrefix...), op.Key...)
		k := arena[start:len(arena):len(arena)]
		var v []byte
		if !op.Delete {
			start = len(arena)
			arena = append(arena, op.Value...)
			v = arena[start:len(arena):len(arena)]
		}
		ops[i] = Op{Key: k, Value: v, Delete: op.Delete}
	}
	return o.buf.write(ops)
}

// Namespace implements [Store]: a view of name that shares this overlay's
// buffer.
func (o *Overlay) Namespace(name string) Store {
	path := appendNamespace(o.path[:len(o.path):len(o.path)], name)
	return &Overlay{
		buf:       o.buf,
		s:         o.s.Namespace(name),
		path:      path,
		keyPrefix: append(path[:len(path):len(path)], tagKey),
	}
}

// Close implements [Store]. Closing the overlay given by NewOverlay drops
// the buffer and closes the underlying store; later calls on any view
// return ErrClosed. Closing a namespace view does nothing.
func (o *Overlay) Close() error {
	if o.path != nil {
		return nil
	}
	b := o.buf
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.clear()
	b.mu.Unlock()
	return b.root.Close()
}

// Commit writes the buffer to the underlying store and empties it. On
// error the buffer is kept, so Commit may be tried again (or the buffer
// discarded).
func (o *Overlay) Commit(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b := o.buf
	b.commitMu.Lock()
	defer b.commitMu.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	if b.n == 0 {
		return nil
	}
	ops := make([]Op, 0, b.n)
	for _, blk := range b.blocks {
		for _, e := range blk {
			ops = append(ops, Op{Key: e.key, Value: e.value, Delete: e.del})
		}
	}
	if err := writeEncoded(ctx, b.root, ops); err != nil {
		return fmt.Errorf("persistence: overlay commit of %d writes: %w", len(ops), err)
	}
	b.clear()
	return nil
}

// Discard empties the buffer: its writes are dropped.
func (o *Overlay) Discard() {
	b := o.buf
	b.mu.Lock()
	defer b.mu.Unlock()
	b.clear()
}

// Size is the number of bytes buffered: the keys (with their namespace
// encoding) and values of the buffered writes, one write per key.
func (o *Overlay) Size() int {
	b := o.buf
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.size
}

// encode returns the encoded key of key in this view.
func (o *Overlay) encode(key []byte) []byte {
	out := make([]byte, len(o.keyPrefix)+len(key))
	copy(out, o.keyPrefix)
	copy(out[len(o.keyPrefix):], key)
	return out
}

func (b *overlayBuf) clear() {
	b.blocks, b.n, b.size = nil, 0, 0
}

// search returns the position of key, or where it would be inserted.
// (Plain loops rather than sort.Search keep key off the heap.)
func (b *overlayBuf) search(key []byte) (bi, i int, found bool) {
	lo, hi := 0, len(b.blocks)
	for lo < hi { // first block whose last key is >= key
		m := int(uint(lo+hi) >> 1)
		blk := b.blocks[m]
		if bytes.Compare(blk[len(blk)-1].key, key) < 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == len(b.blocks) {
		if lo == 0 {
			return 0, 0, false
		}
		return lo - 1, len(b.blocks[lo-1]), false
	}
	blk := b.blocks[lo]
	l, h := 0, len(blk)
	for l < h { // first entry whose key is >= key
		m := int(uint(l+h) >> 1)
		if bytes.Compare(blk[m].key, key) < 0 {
			l = m + 1
		} else {
			h = m
		}
	}
	return lo, l, l < len(blk) && bytes.Equal(blk[l].key, key)
}

// write buffers ops, in order, under one lock. The slices of ops are kept.
func (b *overlayBuf) write(ops []Op) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	for _, op := range ops {
		e := ovEntry{key: op.Key, value: op.Value, del: op.Delete}
		if !e.del && e.value == nil {
			e.value = []byte{}
		}
		bi, i, found := b.search(e.key)
		if found {
			old := b.blocks[bi][i]
			b.size += len(e.value) - len(old.value)
			b.blocks[bi][i] = e
			continue
		}
		b.size += len(e.key) + len(e.value)
		b.n++
		if len(b.blocks) == 0 {
			b.blocks = [][]ovEntry{{e}}
			continue
		}
		blk := slices.Insert(b.blocks[bi], i, e)
		if len(blk) <= ovMaxBlock {
			b.blocks[bi] = blk
			continue
		}
		half := len(blk) / 2
		right := append(make([]ovEntry, 0, ovMaxBlock), blk[half:]...)
		clear(blk[half:])
		b.blocks[bi] = slices.Clip(blk[:half])
		b.blocks = slices.Insert(b.blocks, bi+1, right)
	}
	return nil
}

// snapshot copies the buffered entries whose encoded key starts with
// prefix, with keys cut by strip bytes (relative to their view).
func (b *overlayBuf) snapshot(prefix []byte, strip int) ([]ovEntry, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	var out []ovEntry
	bi, i, _ := b.search(prefix)
	for ; bi < len(b.blocks); bi, i = bi+1, 0 {
		for _, e := range b.blocks[bi][i:] {
			if !bytes.HasPrefix(e.key, prefix) {
				return out, nil
			}
			e.key = e.key[strip:]
			out = append(out, e)
		}
	}
	return out, nil
}

// writeEncoded writes ops, whose keys are encoded relative to s (namespace
// path | tagKey | key), to s: in one backend write when s is a store of
// this package's making, else with one Apply per namespace.
func writeEncoded(ctx context.Context, s Store, ops []Op) error {
	switch s := s.(type) {
	case *view:
		return s.b.Write(ctx, prefixOps(s.path, ops))
	case *Overlay:
		return s.buf.write(prefixOps(s.path, ops))
	}
	// A root store wrapping a view (memstore, badgerstore): its namespace
	// "" is a view whose path is the root's path and the encoding of "".
	if v, ok := s.Namespace("").(*view); ok {
		empty := appendNamespace(nil, "")
		if p, ok := bytes.CutSuffix(v.path, empty); ok {
			return v.b.Write(ctx, prefixOps(p, ops))
		}
	}
	// Any other store: one Apply per namespace. ops are sorted, so the
	// keys of a namespace are contiguous.
	var batch Batch
	for i := 0; i < len(ops); {
		path, _, err := splitEncoded(ops[i].Key)
		if err != nil {
			return err
		}
		ns := s
		for rest := path; len(rest) > 0; {
			var name string
			name, rest, _ = cutNamespace(rest)
			ns = ns.Namespace(name)
		}
		batch.Reset()
		for ; i < len(ops); i++ {
			p, key, err := splitEncoded(ops[i].Key)
			if err != nil {
				return err
			}
			if !bytes.Equal(p, path) {
				break
			}
			if ops[i].Delete {
				batch.Delete(key)
			} else {
				batch.Put(key, ops[i].Value)
			}
		}
		if err := ns.Apply(ctx, &batch); err != nil {
			return err
		}
	}
	return nil
}

// prefixOps returns ops with p before every key, the keys in one buffer.
func prefixOps(p []byte, ops []Op) []Op {
	if len(p) == 0 {
		return ops
	}
	n := 0
	for _, op := range ops {
		n += len(p) + len(op.Key)
	}
	buf := make([]byte, 0, n)
	out := make([]Op, len(ops))
	for i, op := range ops {
		start := len(buf)
		buf = append(append(buf, p...), op.Key...)
		out[i] = Op{Key: buf[start:len(buf):len(buf)], Value: op.Value, Delete: op.Delete}
	}
	return out
}

var errBadEncoding = errors.New("persistence: malformed encoded key")

// splitEncoded splits an encoded key into its namespace path and key.
func splitEncoded(k []byte) (path, key []byte, err error) {
	rest := k
	for len(rest) > 0 && rest[0] == tagNamespace {
		_, r, ok := cutNamespace(rest)
		if !ok {
			return nil, nil, errBadEncoding
		}
		rest = r
	}
	if len(rest) == 0 || rest[0] != tagKey {
		return nil, nil, errBadEncoding
	}
	n := len(k) - len(rest)
	return k[:n], rest[1:], nil
}

// cutNamespace reads the first namespace segment of an encoded path.
func cutNamespace(p []byte) (name string, rest []byte, ok bool) {
	if len(p) == 0 || p[0] != tagNamespace {
		return "", nil, false
	}
	l, n := binary.Uvarint(p[1:])
	if n <= 0 || l > uint64(len(p)-1-n) {
		return "", nil, false
	}
	start := 1 + n
	return string(p[start : start+int(l)]), p[start+int(l):], true
}
