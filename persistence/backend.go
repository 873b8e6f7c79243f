package persistence

import (
	"context"
	"encoding/binary"
)

// Op is one write handed to a [Backend]: a put of Key = Value, or a
// deletion of Key.
type Op struct {
	Key    []byte
	Value  []byte
	Delete bool
}

// Backend is the flat, sorted key space under a [Store]. [NewStore] layers
// the key encoding and namespaces on top of it, so an implementation deals
// only with full keys. Implementations must be safe for concurrent use and
// need not check ctx before work: the Store has done that.
type Backend interface {
	// Get returns a copy of the value of key, or an error satisfying
	// errors.Is(err, ErrNotFound).
	Get(ctx context.Context, key []byte) ([]byte, error)
	// Scan calls fn for every key starting with prefix, in ascending
	// order, over one consistent snapshot. fn's error is returned as is.
	// fn may call the backend again (but not Close it).
	Scan(ctx context.Context, prefix []byte, fn func(key, value []byte) error) error
	// Write applies ops in order, atomically when it can (see Store.Apply).
	// The slices of ops must not be retained once Write returns.
	Write(ctx context.Context, ops []Op) error
	// Close releases the backend; later calls return ErrClosed.
	Close() error
}

// Tags of the key encoding (see the package documentation).
const (
	tagKey       = 0x00
	tagNamespace = 0x01
)

// NewStore returns the root Store over b. Closing it closes b.
func NewStore(b Backend) Store {
	return &view{b: b, keyPrefix: []byte{tagKey}, root: true}
}

// NamespacePrefix returns the backend key prefix shared by every key of the
// namespace at path (root.Namespace(path[0]).Namespace(path[1])…) and of the
// namespaces below it. With no path it returns an empty prefix: the whole
// store. Checkpoint and restore code working on the backend directly use it
// to select the key range of an operator instance.
func NamespacePrefix(path ...string) []byte {
	var p []byte
	for _, name := range path {
		p = appendNamespace(p, name)
	}
	return p
}

func appendNamespace(p []byte, name string) []byte {
	p = append(p, tagNamespace)
	p = binary.AppendUvarint(p, uint64(len(name)))
	return append(p, name...)
}

// view is a Store over a Backend: the root, or a namespace.
type view struct {
	b         Backend
	path      []byte // encoded namespace path; prefix of every key in and below the view
	keyPrefix []byte // path | tagKey; prefix of the view's own keys
	root      bool
}

func (v *view) key(k []byte) []byte {
	out := make([]byte, len(v.keyPrefix)+len(k))
	copy(out, v.keyPrefix)
	copy(out[len(v.keyPrefix):], k)
	return out
}

func (v *view) Get(ctx context.Context, key []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return v.b.Get(ctx, v.key(key))
}

func (v *view) Scan(ctx context.Context, prefix []byte, fn func(key, value []byte) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	n := len(v.keyPrefix)
	return v.b.Scan(ctx, v.key(prefix), func(k, val []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return fn(k[n:], val)
	})
}

func (v *view) Apply(ctx context.Context, b *Batch) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// One buffer for all encoded keys; values are passed through.
	n := len(v.keyPrefix)
	buf := make([]byte, 0, len(b.ops)*n+b.keyBytes)
	ops := make([]Op, len(b.ops))
	for i, op := range b.ops {
		start := len(buf)
		buf = append(append(buf, v.keyPrefix...), op.Key...)
		ops[i] = Op{Key: buf[start:len(buf):len(buf)], Value: op.Value, Delete: op.Delete}
	}
	return v.b.Write(ctx, ops)
}

func (v *view) Namespace(name string) Store {
	path := appendNamespace(v.path[:len(v.path):len(v.path)], name)
	return &view{
		b:         v.b,
		path:      path,
		keyPrefix: append(path[:len(path):len(path)], tagKey),
	}
}

func (v *view) Close() error {
	if !v.root {
		return nil
	}
	return v.b.Close()
}
