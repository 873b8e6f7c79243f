// Package persistence is the state backend seen by operators: a key-value
// [Store] with namespaces and atomic write batches. Operators reach state
// only through this interface; the engine chooses the implementation
// (persistence/badgerstore on a node, persistence/memstore in tests and for
// stateless jobs).
//
// Hot state lives in operator memory and reaches the store in batches
// ([Store.Apply]): Badger takes a few hundred thousand writes a second, far
// below the rows per second of a pipeline.
package persistence

import (
	"context"
	"encoding/binary"
	"errors"
)

// ErrNotFound is returned (possibly wrapped) by Get for an absent key.
var ErrNotFound = errors.New("persistence: key not found")

// ErrClosed is returned by a closed store.
var ErrClosed = errors.New("persistence: store closed")

// Store is a sorted key-value store.
type Store interface {
	// Get returns a copy of the value of key, or an error wrapping
	// ErrNotFound.
	Get(ctx context.Context, key []byte) ([]byte, error)
	// Scan calls fn for every key starting with prefix, in ascending key
	// order. key and value are valid only during the call. An error from fn
	// stops the scan and is returned.
	Scan(ctx context.Context, prefix []byte, fn func(key, value []byte) error) error
	// Apply writes every put and delete of b, in order, atomically: a
	// reader sees all of them or none.
	Apply(ctx context.Context, b *Batch) error
	// Namespace returns a view of the keys under name. Views nest; keys of
	// different names never collide, even when one name is a prefix of
	// another.
	Namespace(name string) Store
	// Close closes the store. Closing a namespace view does nothing.
	Close() error
}

// Op is one write of a [Batch].
type Op struct {
	Key    []byte
	Value  []byte
	Delete bool
}

// Batch collects writes for [Store.Apply]. It copies what it is given. The
// zero value is an empty batch.
type Batch struct {
	ops   []Op
	arena []byte
}

// Put adds a write of key = value.
func (b *Batch) Put(key, value []byte) {
	k, v := b.copy(key), b.copy(value)
	b.ops = append(b.ops, Op{Key: k, Value: v})
}

// Delete adds a deletion of key.
func (b *Batch) Delete(key []byte) {
	b.ops = append(b.ops, Op{Key: b.copy(key), Delete: true})
}

func (b *Batch) copy(p []byte) []byte {
	if len(b.arena)+len(p) > cap(b.arena) {
		b.arena = make([]byte, 0, max(2*cap(b.arena), len(p), 4096))
	}
	start := len(b.arena)
	b.arena = append(b.arena, p...)
	return b.arena[start:len(b.arena):len(b.arena)]
}

// Len is the number of writes in the batch.
func (b *Batch) Len() int { return len(b.ops) }

// Ops returns the writes in order. Implementations of Store read them; the
// slices must not be modified.
func (b *Batch) Ops() []Op { return b.ops }

// Reset empties the batch for reuse.
func (b *Batch) Reset() {
	clear(b.ops)
	b.ops = b.ops[:0]
	b.arena = nil
}

// NamespacePrefix is the key prefix of namespace name: its length as a
// uvarint, then the name. Length-prefixing keeps "a" and "ab" apart.
func NamespacePrefix(name string) []byte {
	p := binary.AppendUvarint(nil, uint64(len(name)))
	return append(p, name...)
}

// PrefixEnd returns the smallest key greater than every key starting with
// prefix, or nil when there is none (a prefix of only 0xff bytes).
func PrefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// Prefixed is a namespace view over a root store that understands full
// keys; implementations embed it to provide Namespace.
type Prefixed struct {
	Root   Store
	Prefix []byte
}

func (p *Prefixed) key(k []byte) []byte {
	out := make([]byte, 0, len(p.Prefix)+len(k))
	return append(append(out, p.Prefix...), k...)
}

// Get implements Store.
func (p *Prefixed) Get(ctx context.Context, key []byte) ([]byte, error) {
	return p.Root.Get(ctx, p.key(key))
}

// Scan implements Store; keys passed to fn are relative to the namespace.
func (p *Prefixed) Scan(ctx context.Context, prefix []byte, fn func(key, value []byte) error) error {
	n := len(p.Prefix)
	return p.Root.Scan(ctx, p.key(prefix), func(k, v []byte) error { return fn(k[n:], v) })
}

// Apply implements Store.
func (p *Prefixed) Apply(ctx context.Context, b *Batch) error {
	var full Batch
	full.ops = make([]Op, len(b.ops))
	for i, op := range b.ops {
		full.ops[i] = Op{Key: p.key(op.Key), Value: op.Value, Delete: op.Delete}
	}
	return p.Root.Apply(ctx, &full)
}

// Namespace implements Store.
func (p *Prefixed) Namespace(name string) Store {
	return &Prefixed{Root: p.Root, Prefix: append(append([]byte(nil), p.Prefix...), NamespacePrefix(name)...)}
}

// Close implements Store: closing a view does nothing.
func (p *Prefixed) Close() error { return nil }
