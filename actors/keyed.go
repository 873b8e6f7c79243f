package actors

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/meshflow/meshflow/internal/kernels"
	"github.com/meshflow/meshflow/persistence"
)

// Keyed state
//
// The keyed state of an operator lives in one namespace per operator,
// `<job>/<operator>/keyed` of the node's store, shared by its instances.
// Every key starts with its key group as a big-endian uint16, so the state
// of a range of key groups is one contiguous key range. Instance i of an
// operator with parallelism p owns the key groups
// kernels.KeyGroupRange(i, maxParallelism, p): the groups its hash input
// routes to it. A checkpoint of the instance snapshots its own namespace
// and that key range; restore replaces both. A later rescale moves ranges:
// the instances of the new parallelism restore, from the snapshots of the
// old one, the key groups they now own (see TestKeyedRescaleByKeyRange).

// KeyedNamespace is the name of an operator's keyed state namespace in the
// node's store (the namespace of its instances' own state is
// `<job>/<operator>/<index>`).
func KeyedNamespace(job, operator string) string { return job + "/" + operator + "/keyed" }

// ErrKeyGroupNotOwned is wrapped by the error of a write to keyed state in
// a key group the instance does not own (or of a key shorter than the two
// bytes of its key group).
var ErrKeyGroupNotOwned = errors.New("actors: key group not owned by this instance")

// errKeyedNamespace is the error of every call on a namespace of keyed
// state: a key outside the key-group layout would escape checkpoints.
var errKeyedNamespace = errors.New("actors: keyed state has no namespaces (prefix keys after the key group instead)")

// KeyGroupKey appends to dst the two-byte big-endian key group every keyed
// state key starts with.
func KeyGroupKey(dst []byte, keyGroup int) []byte {
	return binary.BigEndian.AppendUint16(dst, uint16(keyGroup))
}

// StateFlusher is state an operator keeps in memory in front of its Store
// or keyed state (a cache of keyed state, say). The runtime calls
// FlushState at every checkpoint barrier, after the operator's
// PrepareCheckpoint and before the snapshot, so the checkpoint holds
// everything. An instance that registered one keeps state a restart of it
// alone would lose: when it fails the whole job recovers from its last
// checkpoint (with checkpoints off, the job fails instead of restarting
// the instance with its memory lost).
type StateFlusher interface {
	FlushState(ctx context.Context) error
}

// keyedStore is an instance's view of its operator's keyed state: writes
// to key groups the instance does not own are rejected.
type keyedStore struct {
	s      persistence.Store
	lo, hi int // owned key groups [lo, hi)
}

func (k *keyedStore) Get(ctx context.Context, key []byte) ([]byte, error) {
	return k.s.Get(ctx, key)
}

func (k *keyedStore) Scan(ctx context.Context, prefix []byte, fn func(key, value []byte) error) error {
	return k.s.Scan(ctx, prefix, fn)
}

func (k *keyedStore) Apply(ctx context.Context, b *persistence.Batch) error {
	for _, op := range b.Ops() {
		if len(op.Key) < 2 {
			return fmt.Errorf("%w: key %x has no key group", ErrKeyGroupNotOwned, op.Key)
		}
		if g := int(binary.BigEndian.Uint16(op.Key)); g < k.lo || g >= k.hi {
			return fmt.Errorf("%w: key group %d, the instance owns [%d, %d)", ErrKeyGroupNotOwned, g, k.lo, k.hi)
		}
	}
	return k.s.Apply(ctx, b)
}

func (k *keyedStore) Namespace(string) persistence.Store { return errStore{errKeyedNamespace} }

func (k *keyedStore) Close() error { return nil }

// errStore fails every call with err.
type errStore struct{ err error }

func (e errStore) Get(context.Context, []byte) ([]byte, error) { return nil, e.err }
func (e errStore) Scan(context.Context, []byte, func(key, value []byte) error) error {
	return e.err
}
func (e errStore) Apply(context.Context, *persistence.Batch) error { return e.err }
func (e errStore) Namespace(string) persistence.Store              { return e }
func (e errStore) Close() error                                    { return nil }

// keyRange is the key range of key groups [lo, hi) in keyed state.
func keyRange(lo, hi int) (start, end []byte) {
	return KeyGroupKey(nil, lo), KeyGroupKey(nil, hi)
}

// keyGroups returns the key groups the instance owns.
func (s *instance) keyGroups() (lo, hi int) {
	return kernels.KeyGroupRange(s.id.Index, s.part.g.maxParallelism(), s.v.Parallelism)
}

// Tag of the keyed state's entries in an instance's snapshot object: the
// entries of its own namespace start with 0x00 or 0x01 (see persistence),
// those of its key range with tagKeyed.
const tagKeyed = 0x02

// instanceSnapshot is an instance's snapshot: its namespace, then its key
// range of keyed state (tagged), both opened at the same barrier. Only the
// instance writes either, so the two are one consistent point in time.
type instanceSnapshot struct {
	ns, keyed persistence.Snapshot
}

func (sn *instanceSnapshot) Scan(ctx context.Context, fn func(key, value []byte) error) error {
	if err := sn.ns.Scan(ctx, fn); err != nil {
		return err
	}
	var buf []byte
	return sn.keyed.Scan(ctx, func(k, v []byte) error {
		buf = append(append(buf[:0], tagKeyed), k...)
		return fn(buf, v)
	})
}

func (sn *instanceSnapshot) Close() error {
	return errors.Join(sn.ns.Close(), sn.keyed.Close())
}

// openSnapshot opens the instance's snapshot.
func (s *instance) openSnapshot() (persistence.Snapshot, error) {
	ns, err := persistence.OpenSnapshot(s.state)
	if err != nil {
		return nil, err
	}
	start, end := keyRange(s.keyGroups())
	keyed, err := persistence.OpenRangeSnapshot(s.keyed, start, end)
	if err != nil {
		ns.Close()
		return nil, err
	}
	return &instanceSnapshot{ns: ns, keyed: keyed}, nil
}

// restoreState replaces the instance's namespace and key range with the
// entries of a snapshot (nil: clears both).
func (s *instance) restoreState(ctx context.Context, entries func(yield func(key, value []byte) error) error) error {
	if entries == nil {
		entries = func(func(k, v []byte) error) error { return nil }
	}
	err := persistence.ReplaceNamespace(ctx, s.state, func(yield func(k, v []byte) error) error {
		return entries(func(k, v []byte) error {
			if len(k) > 0 && k[0] == tagKeyed {
				return nil
			}
			return yield(k, v)
		})
	})
	if err != nil {
		return err
	}
	start, end := keyRange(s.keyGroups())
	return persistence.ReplaceRange(ctx, s.keyed, start, end, func(yield func(k, v []byte) error) error {
		return entries(func(k, v []byte) error {
			if len(k) == 0 || k[0] != tagKeyed {
				return nil
			}
			return yield(k[1:], v)
		})
	})
}

// flushState runs the registered flushers (inside callState).
func (s *instance) flushState(ctx context.Context) error {
	for _, f := range s.flushers {
		if err := f.FlushState(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (s *instance) KeyGroups() (start, end int) { return s.keyGroups() }
func (s *instance) MaxParallelism() int         { return s.part.g.maxParallelism() }
func (s *instance) KeyedState() persistence.Store {
	return s.keyedView
}
func (s *instance) RegisterFlusher(f StateFlusher) { s.flushers = append(s.flushers, f) }
