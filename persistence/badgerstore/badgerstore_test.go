package badgerstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/meshflow/meshflow/persistence"
	"github.com/meshflow/meshflow/persistence/badgerstore"
	"github.com/meshflow/meshflow/persistence/persistencetest"
)

// Small sizes keep the many stores of the suite cheap.
func testOptions(o badgerstore.Options) badgerstore.Options {
	o.MemTableSize = 4 << 20
	o.BlockCacheSize = 4 << 20
	return o
}

func open(t testing.TB, o badgerstore.Options) *badgerstore.Store {
	t.Helper()
	s, err := badgerstore.Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	t.Run("InMemory", func(t *testing.T) {
		t.Parallel()
		persistencetest.Run(t, func(t *testing.T) persistence.Store {
			return open(t, testOptions(badgerstore.Options{InMemory: true}))
		})
	})
	t.Run("OnDisk", func(t *testing.T) {
		t.Parallel()
		persistencetest.Run(t, func(t *testing.T) persistence.Store {
			return open(t, testOptions(badgerstore.Options{Dir: t.TempDir()}))
		})
	})
	t.Run("SmallTransactions", func(t *testing.T) {
		t.Parallel()
		// 1 MiB memtables: a transaction holds at most 150 KiB, so larger
		// batches are split; everything but atomicity must still hold.
		persistencetest.Run(t, func(t *testing.T) persistence.Store {
			return open(t, badgerstore.Options{InMemory: true, MemTableSize: 1 << 20, BlockCacheSize: 1 << 20})
		})
	})
}

// TestSplitBatch checks where Apply stops being one transaction: each
// commit takes a new Badger version.
func TestSplitBatch(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		memTable int64
		puts     int
		split    bool
	}{
		// Default 16 MiB memtable: 2.4 MiB per transaction, about 19 000
		// puts of 16-byte keys and 100-byte values.
		{0, 1024, false},
		{0, 18000, false},
		{0, 21000, true},
		{1 << 20, 500, false}, // 150 KiB per transaction
		{1 << 20, 5000, true},
	} {
		s := open(t, badgerstore.Options{InMemory: true, MemTableSize: tc.memTable, BlockCacheSize: 1 << 20})
		var b persistence.Batch
		val := bytes.Repeat([]byte("v"), 100)
		for i := range tc.puts {
			b.Put(fmt.Appendf(nil, "key%013d", i), val)
		}
		b.Delete(fmt.Appendf(nil, "key%013d", 0)) // the last write of a split batch still wins
		before := s.DB().MaxVersion()
		if err := s.Apply(ctx, &b); err != nil {
			t.Fatal(err)
		}
		commits := s.DB().MaxVersion() - before
		if (commits > 1) != tc.split {
			t.Errorf("memtable %d, %d puts: %d commits", tc.memTable, tc.puts, commits)
		}
		if _, err := s.Get(ctx, fmt.Appendf(nil, "key%013d", 0)); !errors.Is(err, persistence.ErrNotFound) {
			t.Errorf("memtable %d, %d puts: deleted key: %v", tc.memTable, tc.puts, err)
		}
		if v, err := s.Get(ctx, fmt.Appendf(nil, "key%013d", tc.puts-1)); err != nil || len(v) != 100 {
			t.Errorf("memtable %d, %d puts: last key: %v", tc.memTable, tc.puts, err)
		}
	}
}

func TestReopen(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state", "node-1") // created by Open
	o := testOptions(badgerstore.Options{Dir: dir})

	s, err := badgerstore.Open(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	var b persistence.Batch
	b.Put([]byte("root"), []byte("r"))
	b.Put([]byte("gone"), []byte("g"))
	if err := s.Apply(ctx, &b); err != nil {
		t.Fatal(err)
	}
	b.Reset()
	b.Delete([]byte("gone"))
	if err := s.Apply(ctx, &b); err != nil {
		t.Fatal(err)
	}
	b.Reset()
	for i := range 5000 {
		b.Put(fmt.Appendf(nil, "k%04d", i), fmt.Appendf(nil, "v%d", i))
	}
	if err := s.Namespace("job").Namespace("op/0").Apply(ctx, &b); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, o)
	if v, err := s.Get(ctx, []byte("root")); err != nil || string(v) != "r" {
		t.Fatalf("after reopen: Get(root) = %q, %v", v, err)
	}
	if _, err := s.Get(ctx, []byte("gone")); !errors.Is(err, persistence.ErrNotFound) {
		t.Fatalf("after reopen: deleted key: %v", err)
	}
	n := 0
	err = s.Namespace("job").Namespace("op/0").Scan(ctx, nil, func(k, v []byte) error {
		if want := fmt.Sprintf("k%04d", n); string(k) != want {
			return fmt.Errorf("key %q, want %q", k, want)
		}
		n++
		return nil
	})
	if err != nil || n != 5000 {
		t.Fatalf("after reopen: scan: %v after %d keys, want 5000", err, n)
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := badgerstore.Open(ctx, badgerstore.Options{Dir: file})
	if err == nil || !strings.HasPrefix(err.Error(), "badgerstore: ") || !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("Open(a file) = %v; want a badgerstore error wrapping ENOTDIR", err)
	}
	_, err = badgerstore.Open(ctx, badgerstore.Options{Dir: filepath.Join(file, "sub")})
	if err == nil || !strings.HasPrefix(err.Error(), "badgerstore: ") {
		t.Errorf("Open(below a file) = %v; want a badgerstore error", err)
	}
	if _, err := badgerstore.Open(ctx, badgerstore.Options{}); err == nil {
		t.Error("Open without Dir or InMemory succeeded")
	}
	if _, err := badgerstore.Open(ctx, badgerstore.Options{InMemory: true, MemTableSize: -1}); err == nil {
		t.Error("Open with a negative size succeeded")
	}

	// A directory is opened once: Badger locks it.
	dir := t.TempDir()
	open(t, testOptions(badgerstore.Options{Dir: dir}))
	if s, err := badgerstore.Open(ctx, testOptions(badgerstore.Options{Dir: dir})); err == nil {
		s.Close()
		t.Error("opened a directory twice")
	} else if !strings.HasPrefix(err.Error(), "badgerstore: open "+dir) {
		t.Errorf("second Open: %v", err)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := badgerstore.Open(cctx, badgerstore.Options{InMemory: true}); !errors.Is(err, context.Canceled) {
		t.Errorf("Open with a cancelled ctx: %v", err)
	}
}

// TestLogger checks that Badger's logs reach the slog logger passed in.
func TestLogger(t *testing.T) {
	var mu sync.Mutex
	var buf bytes.Buffer
	h := slog.NewTextHandler(&lockedWriter{mu: &mu, w: &buf}, &slog.HandlerOptions{Level: slog.LevelDebug})
	s := open(t, testOptions(badgerstore.Options{Dir: t.TempDir(), Logger: slog.New(h)}))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(buf.String(), "lib=badger") {
		t.Fatalf("no Badger logs on the logger; got %q", buf.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestCloseWaits closes the store while a scan is running; fn calls the
// store again, which must fail with ErrClosed rather than deadlock.
func TestCloseWaits(t *testing.T) {
	ctx := context.Background()
	s := open(t, testOptions(badgerstore.Options{InMemory: true}))
	var b persistence.Batch
	b.Put([]byte("a"), []byte("1"))
	b.Put([]byte("b"), []byte("2"))
	if err := s.Apply(ctx, &b); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error)
	var calls int
	err := s.Scan(ctx, nil, func(k, v []byte) error {
		calls++
		if calls == 1 {
			go func() { closed <- s.Close() }()
			// Close soon waits for this scan; nested calls must then fail
			// rather than block.
			for {
				_, err := s.Get(ctx, []byte("a"))
				if errors.Is(err, persistence.ErrClosed) {
					return nil
				}
				if err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if !s.DB().IsClosed() {
		t.Fatal("DB not closed")
	}
}
