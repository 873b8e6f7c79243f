package persistence

import (
	"bytes"
	"context"
	"fmt"
)

// Snapshot is a point-in-time view of the key range of a namespace and of
// every namespace below it, opened by [OpenSnapshot]. Writes made after it
// was opened are not seen by it.
type Snapshot interface {
	// Scan calls fn for every key of the range, in ascending order. The
	// keys are the raw backend keys with the namespace's prefix removed
	// ([NamespacePrefix]): they start with the tag of a key of the
	// namespace itself (0x00) or of a nested namespace (0x01), and
	// [ReplaceNamespace] writes them back under any prefix. key and value
	// are valid only during the call and must not be modified. An error
	// from fn stops the scan and is returned as is; ctx is checked before
	// every key. Scan may be called again, also concurrently, and sees the
	// same content every time; it may run on another goroutine than the
	// one that opened the snapshot. After Close, and once the store is
	// closed, Scan returns ErrClosed.
	Scan(ctx context.Context, fn func(key, value []byte) error) error

	// Close releases the snapshot (Badger: its read transaction, which
	// holds back the garbage collection of older versions). It waits for
	// a Scan in progress, which stops before its next key with ErrClosed.
	// Closing a closed snapshot returns nil. Closing the store closes its
	// open snapshots.
	Close() error
}

// SnapshotBackend is a [Backend] that can open snapshots. [OpenSnapshot]
// needs it.
type SnapshotBackend interface {
	Backend
	// Snapshot returns a point-in-time view of the keys starting with
	// prefix; its Scan passes keys with prefix removed. It must be O(1) in
	// the size of the store and must not wait for writers to finish more
	// than a single write does, nor block them once it returns: the
	// runtime opens it on an operator's goroutine at a checkpoint barrier,
	// and scans it on another while the operator keeps writing.
	Snapshot(prefix []byte) (Snapshot, error)
}

// Wrapper is implemented by a Store that wraps another one with the same
// keys, such as badgerstore.Store and memstore.Store around the root view of
// [NewStore]. [OpenSnapshot] and [ReplaceNamespace] unwrap it.
type Wrapper interface {
	Unwrap() Store
}

// OpenSnapshot returns a point-in-time view of s (the root or a view from
// [Store.Namespace], possibly nested) and of every namespace below it. It
// is O(1) and does not block writers: open it where the state is
// consistent (at a checkpoint barrier) and scan it from any goroutine
// while writes go on. The caller must close it.
//
// The snapshot of the root covers every key of the backend, the node's own
// bookkeeping keys included.
func OpenSnapshot(s Store) (Snapshot, error) {
	v, err := viewOf(s)
	if err != nil {
		return nil, err
	}
	sb, ok := v.b.(SnapshotBackend)
	if !ok {
		return nil, fmt.Errorf("persistence: backend %T cannot take snapshots", v.b)
	}
	snap, err := sb.Snapshot(v.path)
	if err != nil {
		return nil, fmt.Errorf("persistence: open snapshot: %w", err)
	}
	return snap, nil
}

// Limits of one transaction of ReplaceNamespace: far below Badger's default
// transaction size (2.4 MiB, about 19 000 small writes), and a backend
// still splits a larger one.
const (
	replaceMaxOps   = 4096
	replaceMaxBytes = 1 << 20
)

// ReplaceNamespace makes the key range of s (the root or a namespace, with
// every namespace below it) hold exactly the entries: it deletes every key
// of the range, then writes each entry under the range's prefix. Keys are
// relative to the prefix, as [Snapshot.Scan] passes them, so a snapshot of
// one namespace can be restored into another; under a namespace a key must
// start with 0x00 or 0x01. An entries func that yields nothing clears the
// namespace.
//
// entries calls yield for each entry and returns yield's error as is; yield
// copies key and value, so entries may reuse its buffers. Writes go to the
// backend in chunks of at most 4096 writes, each closed once it holds 1 MiB
// of keys and values (a backend may split a chunk further: badgerstore at
// Badger's transaction limit), so the replacement is not
// atomic: readers may see it half done, and an error (of entries, of yield
// or of the backend) leaves it half done. It is meant for restoring state
// before anything reads it; verify the entries first (snapshotstore checks
// an object's checksum before calling it), and on an error call it again.
func ReplaceNamespace(ctx context.Context, s Store, entries func(yield func(key, value []byte) error) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	v, err := viewOf(s)
	if err != nil {
		return err
	}
	w := &chunkWriter{b: v.b}
	err = v.b.Scan(ctx, v.path, func(key, _ []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return w.add(ctx, Op{Key: bytes.Clone(key), Delete: true})
	})
	if err == nil {
		err = w.flush(ctx)
	}
	if err != nil {
		return fmt.Errorf("persistence: replace namespace: clear: %w", err)
	}
	var errFromYield error
	err = entries(func(key, value []byte) error {
		if err := ctx.Err(); err != nil {
			errFromYield = err
			return err
		}
		if len(v.path) > 0 && (len(key) == 0 || key[0] > tagNamespace) {
			errFromYield = fmt.Errorf("persistence: replace namespace: key %q is not a key of a namespace (it must start with 0x00 or 0x01)", key)
			return errFromYield
		}
		full := make([]byte, len(v.path)+len(key)+len(value))
		copy(full, v.path)
		copy(full[len(v.path):], key)
		copy(full[len(v.path)+len(key):], value)
		k := full[: len(v.path)+len(key) : len(v.path)+len(key)]
		if err := w.add(ctx, Op{Key: k, Value: full[len(k):]}); err != nil {
			errFromYield = fmt.Errorf("persistence: replace namespace: write: %w", err)
			return errFromYield
		}
		return nil
	})
	if errFromYield != nil {
		return errFromYield
	}
	if err != nil {
		return fmt.Errorf("persistence: replace namespace: entries: %w", err)
	}
	if err := w.flush(ctx); err != nil {
		return fmt.Errorf("persistence: replace namespace: write: %w", err)
	}
	return nil
}

// chunkWriter writes ops to a backend in bounded chunks.
type chunkWriter struct {
	b     Backend
	ops   []Op
	bytes int
}

func (w *chunkWriter) add(ctx context.Context, op Op) error {
	w.ops = append(w.ops, op)
	w.bytes += len(op.Key) + len(op.Value)
	if len(w.ops) >= replaceMaxOps || w.bytes >= replaceMaxBytes {
		return w.flush(ctx)
	}
	return nil
}

func (w *chunkWriter) flush(ctx context.Context) error {
	if len(w.ops) == 0 {
		return nil
	}
	err := w.b.Write(ctx, w.ops)
	clear(w.ops)
	w.ops, w.bytes = w.ops[:0], 0
	return err
}

// viewOf returns the view under s, unwrapping Wrappers.
func viewOf(s Store) (*view, error) {
	for range 16 {
		switch x := s.(type) {
		case *view:
			return x, nil
		case Wrapper:
			s = x.Unwrap()
		default:
			return nil, fmt.Errorf("persistence: %T is not a store of persistence.NewStore (nor a Wrapper of one)", s)
		}
	}
	return nil, fmt.Errorf("persistence: %T: too many wrappers", s)
}

// RangeSnapshotBackend is a [SnapshotBackend] that can bound a snapshot to
// a key range. [OpenRangeSnapshot] and [ReplaceRange] use it; over a
// backend without it they fall back to a snapshot or scan of the prefix,
// filtered.
type RangeSnapshotBackend interface {
	SnapshotBackend
	// SnapshotRange is Snapshot(prefix) limited to the keys prefix|r with
	// start <= r < end (bytewise; a nil end is no upper bound). Its Scan
	// passes r. It must seek to prefix|start, not scan from prefix.
	SnapshotRange(prefix, start, end []byte) (Snapshot, error)
}

// OpenRangeSnapshot returns a point-in-time view of the keys k of s itself
// (not of its namespaces) with start <= k < end, bytewise; a nil end is no
// upper bound. Its Scan passes the keys as they were written to s. Like
// [OpenSnapshot] it is O(1) (over a [RangeSnapshotBackend]) and does not
// block writers; the caller must close it.
//
// Keyed state lays its keys out by key group (a big-endian uint16 first),
// so the state of a range of key groups is one key range: this is how an
// instance snapshots the key groups it owns.
func OpenRangeSnapshot(s Store, start, end []byte) (Snapshot, error) {
	v, err := viewOf(s)
	if err != nil {
		return nil, err
	}
	if end != nil && bytes.Compare(start, end) > 0 {
		return nil, fmt.Errorf("persistence: range snapshot: start %x after end %x", start, end)
	}
	var snap Snapshot
	switch b := v.b.(type) {
	case RangeSnapshotBackend:
		snap, err = b.SnapshotRange(v.keyPrefix, start, end)
	case SnapshotBackend:
		snap, err = b.Snapshot(v.keyPrefix)
		if err == nil {
			snap = &filteredSnapshot{Snapshot: snap, start: bytes.Clone(start), end: bytes.Clone(end)}
		}
	default:
		return nil, fmt.Errorf("persistence: backend %T cannot take snapshots", v.b)
	}
	if err != nil {
		return nil, fmt.Errorf("persistence: open range snapshot: %w", err)
	}
	return snap, nil
}

// filteredSnapshot bounds a snapshot of a prefix to a key range.
type filteredSnapshot struct {
	Snapshot
	start, end []byte
}

func (f *filteredSnapshot) Scan(ctx context.Context, fn func(key, value []byte) error) error {
	return f.Snapshot.Scan(ctx, func(k, v []byte) error {
		if !InRange(k, f.start, f.end) {
			return nil
		}
		return fn(k, v)
	})
}

// InRange reports whether start <= k < end bytewise (a nil end is no upper
// bound).
func InRange(k, start, end []byte) bool {
	return bytes.Compare(k, start) >= 0 && (end == nil || bytes.Compare(k, end) < 0)
}

// ReplaceRange makes the keys k of s itself (not of its namespaces) with
// start <= k < end hold exactly the entries: it deletes every such key,
// then writes each entry. Keys are as written to s (as the Scan of
// [OpenRangeSnapshot] passes them) and must lie in the range; keys of s
// outside it and its namespaces are untouched. Like [ReplaceNamespace] it
// writes in bounded chunks and is not atomic: it is meant for restoring
// state before anything reads it; on an error call it again.
func ReplaceRange(ctx context.Context, s Store, start, end []byte, entries func(yield func(key, value []byte) error) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	v, err := viewOf(s)
	if err != nil {
		return err
	}
	w := &chunkWriter{b: v.b}
	p := v.keyPrefix
	del := func(key []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		full := make([]byte, len(p)+len(key))
		copy(full, p)
		copy(full[len(p):], key)
		return w.add(ctx, Op{Key: full, Delete: true})
	}
	if rb, ok := v.b.(RangeSnapshotBackend); ok {
		// The snapshot seeks to the range: the cost is the range's, not
		// the namespace's.
		var snap Snapshot
		snap, err = rb.SnapshotRange(p, start, end)
		if err == nil {
			err = snap.Scan(ctx, func(k, _ []byte) error { return del(k) })
			if cerr := snap.Close(); err == nil {
				err = cerr
			}
		}
	} else {
		err = v.b.Scan(ctx, p, func(k, _ []byte) error {
			if rel := k[len(p):]; InRange(rel, start, end) {
				return del(rel)
			}
			return nil
		})
	}
	if err == nil {
		err = w.flush(ctx)
	}
	if err != nil {
		return fmt.Errorf("persistence: replace range: clear: %w", err)
	}
	var errFromYield error
	err = entries(func(key, value []byte) error {
		if err := ctx.Err(); err != nil {
			errFromYield = err
			return err
		}
		if !InRange(key, start, end) {
			errFromYield = fmt.Errorf("persistence: replace range: key %x is outside [%x, %x)", key, start, end)
			return errFromYield
		}
		full := make([]byte, len(p)+len(key)+len(value))
		copy(full, p)
		copy(full[len(p):], key)
		copy(full[len(p)+len(key):], value)
		k := full[: len(p)+len(key) : len(p)+len(key)]
		if err := w.add(ctx, Op{Key: k, Value: full[len(k):]}); err != nil {
			errFromYield = fmt.Errorf("persistence: replace range: write: %w", err)
			return errFromYield
		}
		return nil
	})
	if errFromYield != nil {
		return errFromYield
	}
	if err != nil {
		return fmt.Errorf("persistence: replace range: entries: %w", err)
	}
	if err := w.flush(ctx); err != nil {
		return fmt.Errorf("persistence: replace range: write: %w", err)
	}
	return nil
}
