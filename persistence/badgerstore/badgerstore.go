// Package badgerstore is the [persistence.Store] of a node, on Badger: one
// database per node, a namespace per operator instance.
//
// Badger's defaults are sized for one large database per machine (five
// 64 MiB memtables and a 256 MiB block cache). A node runs beside NATS and
// the operators' own hot state, so Open uses smaller defaults; see
// [Options].
package badgerstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/dgraph-io/badger/v4"

	"github.com/meshflow/meshflow/internal/logging"
	"github.com/meshflow/meshflow/persistence"
)

// Defaults of [Options]. In the worst case Badger holds NumMemtables
// memtables and the block cache in memory: 3 × 16 MiB + 64 MiB = 112 MiB,
// plus the indexes and bloom filters of its tables.
const (
	DefaultMemTableSize   = 16 << 20
	DefaultNumMemtables   = 3
	DefaultBlockCacheSize = 64 << 20
)

// Options configures a store. The zero value of a field selects its default.
type Options struct {
	// Dir is the data directory, created if missing. Required unless
	// InMemory is set; ignored with InMemory.
	Dir string
	// InMemory keeps everything in memory, for tests.
	InMemory bool
	// Logger receives Badger's logs (its informational messages at debug
	// level); nil discards them.
	Logger *slog.Logger
	// SyncWrites makes every Apply wait for an fsync. Off by default:
	// durability comes from checkpoints and replaying the sources.
	SyncWrites bool
	// MemTableSize is the size of one memtable (default 16 MiB). It also
	// bounds a transaction, and so an atomic Apply: Badger commits at most
	// 15% of it, in bytes, in one transaction (2.4 MiB by default, about
	// 19 000 puts of 16-byte keys and 100-byte values).
	MemTableSize int64
	// NumMemtables is the number of memtables held in memory, the one being
	// written and those waiting to be flushed (default 3).
	NumMemtables int
	// BlockCacheSize is the size of the cache of decompressed table blocks
	// (default 64 MiB).
	BlockCacheSize int64
}

// Store is a Badger-backed [persistence.Store]. It is safe for concurrent
// use.
//
// Apply writes a batch in one Badger transaction when it fits (see
// [Options.MemTableSize]), and is then atomic. A larger batch is split: when
// Badger reports ErrTxnTooBig the writes so far are committed and a new
// transaction continues, in order. Readers may then see a prefix of such a
// batch, and if Apply fails (or the node crashes) in the middle, a prefix
// stays written. Operators that need atomic flushes keep their batches
// below the limit; recovery restores the last checkpoint anyway, which
// overwrites a torn flush.
type Store struct {
	root persistence.Store
	kv   *kv
}

var _ persistence.Store = (*Store)(nil)

// Open opens the database in o.Dir, or an in-memory one, and returns its
// root store. Badger locks the directory: a node opens it once.
func Open(ctx context.Context, o Options) (*Store, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	opts, err := o.badgerOptions()
	if err != nil {
		return nil, err
	}
	if !o.InMemory {
		if err := os.MkdirAll(o.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("badgerstore: data directory: %w", err)
		}
	}
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("badgerstore: open %s: %w", describe(o), err)
	}
	kv := &kv{db: db, snaps: map[*snapshot]struct{}{}}
	kv.idle.L = &kv.mu
	return &Store{root: persistence.NewStore(kv), kv: kv}, nil
}

func describe(o Options) string {
	if o.InMemory {
		return "in-memory database"
	}
	return o.Dir
}

func (o Options) badgerOptions() (badger.Options, error) {
	if o.MemTableSize < 0 || o.NumMemtables < 0 || o.BlockCacheSize < 0 {
		return badger.Options{}, errors.New("badgerstore: negative size in options")
	}
	if !o.InMemory && o.Dir == "" {
		return badger.Options{}, errors.New("badgerstore: no data directory (set Dir or InMemory)")
	}
	dir := o.Dir
	if o.InMemory {
		dir = ""
	}
	memTable := or(o.MemTableSize, DefaultMemTableSize)
	opts := badger.DefaultOptions(dir).
		WithInMemory(o.InMemory).
		WithSyncWrites(o.SyncWrites).
		WithMemTableSize(memTable).
		WithNumMemtables(or(o.NumMemtables, DefaultNumMemtables)).
		WithBlockCacheSize(or(o.BlockCacheSize, DefaultBlockCacheSize)).
		// Values up to this size live in the LSM tree, larger ones in the
		// value log. Badger refuses a threshold above its transaction
		// limit (15% of the memtable), which a small memtable reaches.
		WithValueThreshold(min(1<<20, memTable*15/100)).
		// Conflict detection (serializable snapshot isolation) only ever
		// fails a transaction that read a key another one wrote. Apply's
		// transactions never read, so it cannot report a conflict; it would
		// only cost memory: Badger keeps the key fingerprints of every
		// commit while any older read transaction — a long Scan or a
		// checkpoint snapshot — is open. Code that does read-modify-write
		// transactions on DB() must serialize them itself.
		WithDetectConflicts(false)
	// Note: WithLoggingLevel would replace the logger with Badger's own,
	// so the level is left to the slog handler.
	if o.Logger != nil {
		opts = opts.WithLogger(logging.BadgerLogger(o.Logger))
	} else {
		opts = opts.WithLogger(nil)
	}
	return opts, nil
}

func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// DB returns the underlying database, for checkpoint and restore code. Keys
// in it are encoded as the persistence package describes; see
// [persistence.NamespacePrefix]. Keys whose first byte is neither 0x00 nor
// 0x01 are never written by the store and are free for the node's own
// bookkeeping. The DB is closed by [Store.Close].
func (s *Store) DB() *badger.DB { return s.kv.db }

// Get implements [persistence.Store].
func (s *Store) Get(ctx context.Context, key []byte) ([]byte, error) {
	return s.root.Get(ctx, key)
}

// Scan implements [persistence.Store]. It reads in one Badger read
// transaction, which holds back the garbage collection of older versions
// while it is open.
func (s *Store) Scan(ctx context.Context, prefix []byte, fn func(key, value []byte) error) error {
	return s.root.Scan(ctx, prefix, fn)
}

// Apply implements [persistence.Store]. It is atomic up to Badger's
// transaction size; see [Store] for larger batches.
func (s *Store) Apply(ctx context.Context, b *persistence.Batch) error {
	return s.root.Apply(ctx, b)
}

// Namespace implements [persistence.Store].
func (s *Store) Namespace(name string) persistence.Store { return s.root.Namespace(name) }

// Close implements [persistence.Store]: it waits for calls in progress,
// closes the open snapshots (a snapshot scan in progress stops at its next
// key with persistence.ErrClosed), then closes the database.
func (s *Store) Close() error { return s.root.Close() }

// Unwrap implements [persistence.Wrapper]: it returns the root view, for
// persistence.OpenSnapshot and persistence.ReplaceNamespace.
func (s *Store) Unwrap() persistence.Store { return s.root }

// kv is the backend over the database. Calls register in active so that
// Close can wait for them before closing the database (Badger must not be
// closed under a running transaction). A mutex and a counter, not an
// RWMutex: fn of a Scan may call the store again, and a nested RLock
// deadlocks once Close waits for the write lock.
type kv struct {
	db *badger.DB

	mu     sync.Mutex
	idle   sync.Cond // signalled when active or snaps drops to 0 after Close
	active int
	closed bool
	snaps  map[*snapshot]struct{} // open snapshots, closed by Close
}

func (s *kv) enter() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return persistence.ErrClosed
	}
	s.active++
	return nil
}

func (s *kv) exit() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active--
	if s.active == 0 && s.closed {
		s.idle.Broadcast()
	}
}

func (s *kv) Get(_ context.Context, key []byte) ([]byte, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.exit()
	var out []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		out, err = item.ValueCopy(nil)
		return err
	})
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return nil, persistence.ErrNotFound // not wrapped: a miss is common and must not allocate
	case err != nil:
		return nil, fmt.Errorf("badgerstore: get: %w", err)
	case out == nil:
		return []byte{}, nil
	}
	return out, nil
}

func (s *kv) Scan(_ context.Context, prefix []byte, fn func(key, value []byte) error) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.exit()
	return s.db.View(func(txn *badger.Txn) error {
		// No value prefetching: it starts a goroutine per item, and small
		// values are read from the LSM tree in place anyway.
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
			item := it.Item()
			if err := item.Value(func(v []byte) error { return fn(item.Key(), v) }); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *kv) Write(_ context.Context, ops []persistence.Op) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.exit()
	if len(ops) == 0 {
		return nil
	}
	txn := s.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	for i := range ops {
		err := write(txn, &ops[i])
		if errors.Is(err, badger.ErrTxnTooBig) {
			// Commit what fits and go on in a new transaction; see Store.
			if err := txn.Commit(); err != nil {
				return fmt.Errorf("badgerstore: commit: %w", err)
			}
			txn = s.db.NewTransaction(true)
			err = write(txn, &ops[i])
		}
		if err != nil {
			return fmt.Errorf("badgerstore: write %d of %d: %w", i+1, len(ops), err)
		}
	}
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("badgerstore: commit: %w", err)
	}
	return nil
}

func write(txn *badger.Txn, op *persistence.Op) error {
	if op.Delete {
		return txn.Delete(op.Key)
	}
	return txn.Set(op.Key, op.Value)
}

func (s *kv) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for s.active > 0 {
		s.idle.Wait()
	}
	snaps := make([]*snapshot, 0, len(s.snaps))
	for sn := range s.snaps {
		snaps = append(snaps, sn)
	}
	s.mu.Unlock()
	// Badger must not be closed under a read transaction: close the
	// snapshots (their scans stop at the next key), and wait for those
	// whose Close is running elsewhere.
	for _, sn := range snaps {
		sn.Close()
	}
	s.mu.Lock()
	for len(s.snaps) > 0 {
		s.idle.Wait()
	}
	s.mu.Unlock()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("badgerstore: close: %w", err)
	}
	return nil
}
