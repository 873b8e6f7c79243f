package persistence

// Batch collects writes for [Store.Apply]. Put and Delete copy their
// arguments, so the caller may reuse its buffers at once. The zero value is
// an empty batch; a Batch is not safe for concurrent use.
//
// A Batch keeps its buffers across [Batch.Reset], so an operator that
// flushes its hot state regularly can reuse one Batch without allocating.
type Batch struct {
	ops      []Op
	arena    []byte // current chunk; copies of keys and values are carved from it
	keyBytes int
	valBytes int
}

// Batch arena chunks grow by doubling from minChunk up to maxChunk; a key
// and value larger than that get a chunk of their own.
const (
	minChunk = 4 << 10
	maxChunk = 1 << 20
)

// Put adds a write of key = value.
func (b *Batch) Put(key, value []byte) {
	buf := b.alloc(len(key) + len(value))
	copy(buf, key)
	copy(buf[len(key):], value)
	b.ops = append(b.ops, Op{
		Key:   buf[:len(key):len(key)],
		Value: buf[len(key):],
	})
	b.keyBytes += len(key)
	b.valBytes += len(value)
}

// Delete adds a deletion of key. Deleting an absent key is not an error.
func (b *Batch) Delete(key []byte) {
	buf := b.alloc(len(key))
	copy(buf, key)
	b.ops = append(b.ops, Op{Key: buf, Delete: true})
	b.keyBytes += len(key)
}

// alloc returns n bytes carved from the arena, with capacity n.
func (b *Batch) alloc(n int) []byte {
	if len(b.arena)+n > cap(b.arena) {
		size := min(max(2*cap(b.arena), minChunk), maxChunk)
		// Earlier chunks stay referenced by the ops that use them.
		b.arena = make([]byte, 0, max(size, n))
	}
	start := len(b.arena)
	b.arena = b.arena[:start+n]
	return b.arena[start : start+n : start+n]
}

// Ops returns the writes of the batch, in order. The slice, keys and
// values belong to the batch: read them only, and not after Reset. A
// Store that checks what it is asked to write (keyed state checks key
// groups) reads them.
func (b *Batch) Ops() []Op { return b.ops }

// Len is the number of writes in the batch.
func (b *Batch) Len() int { return len(b.ops) }

// Size is the number of key and value bytes in the batch, a measure for
// deciding when to flush.
func (b *Batch) Size() int { return b.keyBytes + b.valBytes }

// Reset empties the batch for reuse, keeping its buffers.
func (b *Batch) Reset() {
	clear(b.ops) // drop references to older arena chunks
	b.ops = b.ops[:0]
	b.arena = b.arena[:0]
	b.keyBytes, b.valBytes = 0, 0
}
