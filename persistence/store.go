// Package persistence is the state backend seen by operators: a sorted
// key-value [Store] with namespaces and atomic write batches. Operators
// reach state only through this interface; the engine chooses the
// implementation (persistence/badgerstore on a node, persistence/memstore in
// tests and for jobs whose state need not outlive the process).
//
// Hot state lives in operator memory and reaches the store in batches
// ([Store.Apply] is the only write path): Badger takes a few hundred
// thousand writes a second, far below the rows per second of a pipeline, so
// an operator folds many rows into one write per key and flushes them
// together.
//
// # Key encoding
//
// Every view of a store — the root and each [Store.Namespace] — has its own
// key space. In the backend a key is stored as the encoded namespace path
// of its view, a 0x00 byte, then the key:
//
//	namespace segment = 0x01 | uvarint(len(name)) | name
//	key               = segment* | 0x00 | key
//
// Length-prefixing keeps names apart when one is a prefix of another ("a"
// and "ab"), and the tag byte keeps the keys of a view apart from the keys
// of its namespaces, so no key written through one view can be read or
// scanned through another. All keys of a namespace and of the namespaces
// below it share the prefix [NamespacePrefix] returns, so a namespace is one
// contiguous key range of the backend.
package persistence

import (
	"context"
	"errors"
)

// ErrNotFound is returned by [Store.Get] for an absent key. Test for it with
// errors.Is.
var ErrNotFound = errors.New("persistence: key not found")

// ErrClosed is returned by every call on a closed store, and on the
// namespace views of a closed store. Test for it with errors.Is.
var ErrClosed = errors.New("persistence: store closed")

// Store is a key-value store of one operator instance (or the root store of
// a node). Keys are ordered bytewise. A Store is safe for concurrent use.
//
// Every method that takes a ctx returns ctx.Err() without doing any work
// when ctx is already done.
type Store interface {
	// Get returns a copy of the value of key, or an error satisfying
	// errors.Is(err, ErrNotFound) when key is absent. A stored empty value
	// is returned as a non-nil empty slice.
	Get(ctx context.Context, key []byte) ([]byte, error)

	// Scan calls fn for every key starting with prefix (every key when
	// prefix is empty), in ascending key order. Keys passed to fn are
	// relative to the view, as they were written. key and value are valid
	// only during the call and must not be modified.
	//
	// Scan reads one consistent snapshot: writes made while it runs, also
	// by fn itself, are not seen by it. fn may call the store (for
	// instance to delete what it visits) but must not close it. An error
	// from fn stops the scan and is returned as is; ctx is checked before
	// every key.
	Scan(ctx context.Context, prefix []byte, fn func(key, value []byte) error) error

	// Apply writes every put and delete of b, in order: a later write of a
	// key wins over an earlier one. A batch is atomic — a reader sees all
	// of it or none — up to the backend's transaction size; see the
	// implementation for what happens above it (badgerstore splits larger
	// batches into several transactions, in order). b is not modified and
	// may be reset and reused once Apply returns.
	Apply(ctx context.Context, b *Batch) error

	// Namespace returns a view of the keys under name. Views nest, and
	// every view has its own key space: keys of different names never
	// collide, even when one name is a prefix of another, and the keys of a
	// view never collide with those of its namespaces. Namespace does no
	// I/O and is cheap; a view of a closed store returns ErrClosed.
	Namespace(name string) Store

	// Close closes the store and releases its resources, after waiting for
	// calls in progress. Closing a namespace view does nothing; closing the
	// root closes the underlying database. Closing a closed store returns
	// nil.
	Close() error
}
