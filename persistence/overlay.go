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
	// arena holds the keys and values, appended only; entries refer to it
	// by offset, so that they hold no pointers (moving them costs no GC
	// write barriers). shared is set while a scan may read the arena: it
	// is then not reused when the buffer is emptied.
	arena  []byte
	shared bool
	// Kept across Commit and Discard for the next writes.
	spare []ovEntry // the first block's array
	ops   []Op      // Commit's scratch
}

// ovEntry is a buffered write: its encoded key and its value, in the
// arena.
type ovEntry struct {
	koff, klen, voff, vlen int
	del                    bool
}

func (b *overlayBuf) key(e ovEntry) []byte {
	return b.arena[e.koff : e.koff+e.klen : e.koff+e.klen]
}

func (b *overlayBuf) value(e ovEntry) []byte {
	return b.arena[e.voff : e.voff+e.vlen : e.voff+e.vlen]
}

// scanEntry is a buffered write as a scan sees it.
type scanEntry struct {
	key, value []byte
	del        bool
}

// maxReusedArena bounds the arena kept for reuse when the buffer empties.
const maxReusedArena = 1 << 20

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
		var v []byte
		if !e.del { // copied before the arena can be reused
			v = append(make([]byte, 0, e.vlen), b.value(e)...)
		}
		b.mu.Unlock()
		if e.del {
			return nil, ErrNotFound
		}
		return v, nil
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
	emit := func(e scanEntry) error {
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
	return o.buf.write(o.keyPrefix, b.ops, len(b.ops)*len(o.keyPrefix)+b.keyBytes+b.valBytes)
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
	ops := b.ops[:0]
	for _, blk := range b.blocks {
		for _, e := range blk {
			ops = append(ops, Op{Key: b.key(e), Value: b.value(e), Delete: e.del})
		}
	}
	err := writeEncoded(ctx, b.root, ops)
	clear(ops)
	b.ops = ops[:0]
	if err != nil {
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
	if len(b.blocks) > 0 && cap(b.blocks[0]) <= ovMaxBlock {
		b.spare = b.blocks[0][:0]
	}
	clear(b.blocks)
	b.blocks, b.n, b.size = b.blocks[:0], 0, 0
	if b.shared || cap(b.arena) > maxReusedArena {
		b.arena, b.shared = nil, false
	} else {
		b.arena = b.arena[:0]
	}
}

// search returns the position of key, or where it would be inserted.
// (Plain loops rather than sort.Search keep key off the heap.)
func (b *overlayBuf) search(key []byte) (bi, i int, found bool) {
	lo, hi := 0, len(b.blocks)
	for lo < hi { // first block whose last key is >= key
		m := int(uint(lo+hi) >> 1)
		blk := b.blocks[m]
		if bytes.Compare(b.key(blk[len(blk)-1]), key) < 0 {
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
		if bytes.Compare(b.key(blk[m]), key) < 0 {
			l = m + 1
		} else {
			h = m
		}
	}
	return lo, l, l < len(blk) && bytes.Equal(b.key(blk[l]), key)
}

// write buffers ops, in order, under one lock, each key preceded by
// prefix; keys and values are copied into the arena. grow is a hint of the
// bytes that takes.
func (b *overlayBuf) write(prefix []byte, ops []Op, grow int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	if free := cap(b.arena) - len(b.arena); free < grow {
		b.arena = slices.Grow(b.arena, grow)
	}
	for _, op := range ops {
		koff := len(b.arena)
		b.arena = append(append(b.arena, prefix...), op.Key...)
		e := ovEntry{koff: koff, klen: len(b.arena) - koff, del: op.Delete}
		bi, i, found := b.search(b.key(e))
		if found {
			b.arena = b.arena[:koff] // the key is there already
			e.koff = b.blocks[bi][i].koff
		}
		if !e.del {
			e.voff = len(b.arena)
			b.arena = append(b.arena, op.Value...)
			e.vlen = len(op.Value)
		}
		if found {
			b.size += e.vlen - b.blocks[bi][i].vlen
			b.blocks[bi][i] = e
			continue
		}
		b.size += e.klen + e.vlen
		b.n++
		if len(b.blocks) == 0 {
			b.blocks = append(b.blocks, append(b.spare, e))
			b.spare = nil
			continue
		}
		blk := slices.Insert(b.blocks[bi], i, e)
		if len(blk) <= ovMaxBlock {
			b.blocks[bi] = blk
			continue
		}
		half := len(blk) / 2
		right := append(make([]ovEntry, 0, ovMaxBlock), blk[half:]...)
		b.blocks[bi] = slices.Clip(blk[:half])
		b.blocks = slices.Insert(b.blocks, bi+1, right)
	}
	return nil
}

// snapshot copies the buffered entries whose encoded key starts with
// prefix, with keys cut by strip bytes (relative to their view).
func (b *overlayBuf) snapshot(prefix []byte, strip int) ([]scanEntry, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	var out []scanEntry
	bi, i, _ := b.search(prefix)
	for ; bi < len(b.blocks); bi, i = bi+1, 0 {
		for _, e := range b.blocks[bi][i:] {
			k := b.key(e)
			if !bytes.HasPrefix(k, prefix) {
				b.shared = b.shared || len(out) > 0
				return out, nil
			}
			out = append(out, scanEntry{key: k[strip:], value: b.value(e), del: e.del})
		}
	}
	b.shared = b.shared || len(out) > 0
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
		return s.buf.write(s.path, ops, 0)
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
