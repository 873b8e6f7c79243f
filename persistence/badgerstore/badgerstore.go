// Package badgerstore is the [persistence.Store] of a node, on Badger: one
// database per node, a namespace per operator instance.
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

// Options configures a store.
type Options struct {
	// Dir is the data directory, created if missing. Ignored with InMemory.
	Dir string
	// InMemory keeps everything in memory (tests).
	InMemory bool
	// Logger receives Badger's warnings and errors; nil discards them.
	Logger *slog.Logger
	// SyncWrites fsyncs every write. Off by default: durability comes from
	// checkpoints and replaying sources.
	SyncWrites bool
	// MemTableSize is the size of one memtable (default 16 MiB; Badger keeps
	// up to NumMemtables of them in memory).
	MemTableSize int64
	// NumMemtables defaults to 3.
	NumMemtables int
	// BlockCacheSize defaults to 64 MiB.
	BlockCacheSize int64
}

// Store is a Badger-backed store. It is safe for concurrent use.
type Store struct {
	db     *badger.DB
	mu     sync.RWMutex // guards closed against use after Close
	closed bool
}

var _ persistence.Store = (*Store)(nil)

// Open opens (or creates) the store.
func Open(ctx context.Context, o Options) (*Store, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dir := o.Dir
	if o.InMemory {
		dir = ""
	} else {
		if dir == "" {
			return nil, errors.New("badgerstore: no data directory")
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("badgerstore: data directory: %w", err)
		}
	}
	opts := badger.DefaultOptions(dir).
		WithInMemory(o.InMemory).
		WithSyncWrites(o.SyncWrites).
		WithMemTableSize(or(o.MemTableSize, 16<<20)).
		WithNumMemtables(or(o.NumMemtables, 3)).
		WithBlockCacheSize(or(o.BlockCacheSize, 64<<20)).
		WithNumVersionsToKeep(1)
	if o.Logger != nil {
		opts = opts.WithLogger(logging.BadgerLogger(o.Logger)).WithLoggingLevel(badger.WARNING)
	} else {
		opts = opts.WithLogger(nil)
	}
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("badgerstore: open %s: %w", dir, err)
	}
	return &Store{db: db}, nil
}

func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// DB is the underlying database, for checkpointing.
func (s *Store) DB() *badger.DB { return s.db }

func (s *Store) enter(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return persistence.ErrClosed
	}
	return nil
}

// Get implements persistence.Store.
func (s *Store) Get(ctx context.Context, key []byte) ([]byte, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	var out []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		out, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("badgerstore: get %q: %w", key, persistence.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("badgerstore: get %q: %w", key, err)
	}
	if out == nil {
		out = []byte{}
	}
	return out, nil
}

// Scan implements persistence.Store. It reads one consistent snapshot.
func (s *Store) Scan(ctx context.Context, prefix []byte, fn func(key, value []byte) error) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	return s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			item := it.Item()
			err := item.Value(func(v []byte) error { return fn(item.Key(), v) })
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// Apply implements persistence.Store. The batch is one transaction; a batch
// too large for one Badger transaction is refused rather than split, so
// that it stays atomic (Badger's limit is about 15% of the memtable size).
func (s *Store) Apply(ctx context.Context, b *persistence.Batch) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	for _, op := range b.Ops() {
		var err error
		if op.Delete {
			err = txn.Delete(op.Key)
		} else {
			err = txn.Set(op.Key, op.Value)
		}
		if errors.Is(err, badger.ErrTxnTooBig) {
			return fmt.Errorf("badgerstore: batch of %d writes is too large for one transaction; raise MemTableSize or write smaller batches: %w", b.Len(), err)
		}
		if err != nil {
			return fmt.Errorf("badgerstore: apply: %w", err)
		}
	}
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("badgerstore: commit: %w", err)
	}
	return nil
}

// Namespace implements persistence.Store.
func (s *Store) Namespace(name string) persistence.Store {
	return &persistence.Prefixed{Root: s, Prefix: persistence.NamespacePrefix(name)}
}

// Close implements persistence.Store. It waits for calls in progress.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("badgerstore: close: %w", err)
	}
	return nil
}
