package snapshotstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
	"github.com/meshflow/meshflow/persistence"
	"github.com/meshflow/meshflow/persistence/badgerstore"
	"github.com/meshflow/meshflow/persistence/memstore"
	"github.com/meshflow/meshflow/persistence/snapshotstore"
)

// bucket starts a JetStream server and opens the default bucket on it.
func bucket(t testing.TB) (*snapshotstore.Store, jetstream.JetStream) {
	t.Helper()
	js := natstest.JetStream(t, natstest.Connect(t, natstest.RunJetStream(t)))
	s, err := snapshotstore.Open(testutil.Context(t, 30*time.Second), js, "")
	if err != nil {
		t.Fatal(err)
	}
	if s.Bucket() != snapshotstore.DefaultBucket {
		t.Fatalf("bucket %q, want %q", s.Bucket(), snapshotstore.DefaultBucket)
	}
	return s, js
}

func openBadger(t testing.TB, dir string) *badgerstore.Store {
	t.Helper()
	s, err := badgerstore.Open(context.Background(), badgerstore.Options{Dir: dir, MemTableSize: 8 << 20, BlockCacheSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

var backends = []struct {
	name string
	open func(t testing.TB) persistence.Store
}{
	{"memstore", func(t testing.TB) persistence.Store {
		s := memstore.New()
		t.Cleanup(func() { s.Close() })
		return s
	}},
	{"badger", func(t testing.TB) persistence.Store { return openBadger(t, t.TempDir()) }},
}

func apply(t testing.TB, s persistence.Store, kvs ...kv) {
	t.Helper()
	var b persistence.Batch
	for _, e := range kvs {
		b.Put([]byte(e.k), []byte(e.v))
	}
	if err := s.Apply(context.Background(), &b); err != nil {
		t.Fatal(err)
	}
}

func scanStore(t testing.TB, s persistence.Store) []kv {
	t.Helper()
	var out []kv
	err := s.Scan(context.Background(), nil, func(k, v []byte) error {
		out = append(out, kv{string(k), string(v)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// content is everything in the namespace and below it, as snapshot
// entries.
func content(t testing.TB, s persistence.Store) []kv {
	t.Helper()
	snap, err := persistence.OpenSnapshot(s)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	var out []kv
	err = snap.Scan(context.Background(), func(k, v []byte) error {
		out = append(out, kv{string(k), string(v)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func put(t testing.TB, st *snapshotstore.Store, job string, id uint64, task string, meta string, ns persistence.Store) snapshotstore.Handle {
	t.Helper()
	snap, err := persistence.OpenSnapshot(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	h, err := st.Put(testutil.Context(t, time.Minute), job, id, task, []byte(meta), snap)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// fill writes an operator's state: own keys and a nested namespace.
func fill(t testing.TB, ns persistence.Store, tag string) {
	apply(t, ns, kv{"a", tag + "-a"}, kv{"b", tag + "-b"}, kv{"", tag + "-empty"})
	apply(t, ns.Namespace("timers"), kv{"t1", tag + "-t1"}, kv{"t2", tag + "-t2"})
}

func TestRoundTrip(t *testing.T) {
	st, _ := bucket(t)
	ctx := testutil.Context(t, time.Minute)
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			src := be.open(t)
			ns := src.Namespace("job").Namespace("count/0")
			fill(t, ns, "src")
			want := content(t, ns)

			h := put(t, st, "job-"+be.name, 7, "count/0", "meta-blob", ns)
			if wantName := "job-" + be.name + "/7/count/0"; h.Object != wantName {
				t.Fatalf("object %q, want %q", h.Object, wantName)
			}
			r, err := st.Read(ctx, h.Object)
			if err != nil {
				t.Fatal(err)
			}
			if h.Size != int64(r.Size()) || r.Len() != len(want) {
				t.Fatalf("handle size %d, object %d bytes; %d entries, want %d", h.Size, r.Size(), r.Len(), len(want))
			}

			// Into another store, under another namespace.
			dst := be.open(t)
			into := dst.Namespace("job").Namespace("count/3")
			meta, err := st.Restore(ctx, h.Object, into)
			if err != nil {
				t.Fatal(err)
			}
			if string(meta) != "meta-blob" {
				t.Fatalf("meta %q, want %q", meta, "meta-blob")
			}
			if got := content(t, into); !slices.Equal(got, want) {
				t.Fatalf("restored\n got %q\nwant %q", got, want)
			}
			if got := scanStore(t, into.Namespace("timers")); !slices.Equal(got, []kv{{"t1", "src-t1"}, {"t2", "src-t2"}}) {
				t.Fatalf("restored timers = %q", got)
			}
		})
	}
}

// TestRestoreReplaces: keys of the namespace that are not in the snapshot
// are gone after Restore; other namespaces are untouched.
func TestRestoreReplaces(t *testing.T) {
	st, _ := bucket(t)
	ctx := testutil.Context(t, time.Minute)
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			s := be.open(t)
			job := s.Namespace("job")
			ns := job.Namespace("op/1")
			fill(t, ns, "checkpoint")
			h := put(t, st, "job-"+be.name, 1, "op/1", "", ns)
			want := content(t, ns)

			// After the checkpoint: changes, new keys, a new nested
			// namespace, and neighbours.
			apply(t, ns, kv{"a", "later"}, kv{"stale", "later"})
			apply(t, ns.Namespace("timers"), kv{"t9", "later"})
			apply(t, ns.Namespace("new"), kv{"x", "later"})
			sibling := job.Namespace("op/10")
			apply(t, sibling, kv{"a", "sibling"})
			apply(t, job, kv{"a", "parent"})
			apply(t, s, kv{"a", "root"})
			other := s.Namespace("other-job").Namespace("op/1")
			apply(t, other, kv{"a", "other"})

			if _, err := st.Restore(ctx, h.Object, ns); err != nil {
				t.Fatal(err)
			}
			if got := content(t, ns); !slices.Equal(got, want) {
				t.Fatalf("restored\n got %q\nwant %q", got, want)
			}
			for name, c := range map[string]struct {
				s    persistence.Store
				want []kv
			}{
				"sibling": {sibling, []kv{{"a", "sibling"}}},
				"parent":  {job, []kv{{"a", "parent"}}},
				"root":    {s, []kv{{"a", "root"}}},
				"other":   {other, []kv{{"a", "other"}}},
			} {
				if got := scanStore(t, c.s); !slices.Equal(got, c.want) {
					t.Errorf("%s: %q, want %q", name, got, c.want)
				}
			}
		})
	}
}

// TestPutWhileWriting: the object holds the state at OpenSnapshot, while
// another goroutine writes to the namespace during the upload.
func TestPutWhileWriting(t *testing.T) {
	st, _ := bucket(t)
	ctx := testutil.Context(t, time.Minute)
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			s := be.open(t)
			ns := s.Namespace("op/0")
			const n = 20000
			var b persistence.Batch
			for i := range n {
				b.Put(fmt.Appendf(nil, "k%06d", i), fmt.Appendf(nil, "v0-%d", i))
			}
			if err := ns.Apply(ctx, &b); err != nil {
				t.Fatal(err)
			}
			want := content(t, ns)
			snap, err := persistence.OpenSnapshot(ns)
			if err != nil {
				t.Fatal(err)
			}
			defer snap.Close()

			// The scan waits half-way until the writer has applied some
			// batches, so writes always happen during the upload.
			stop, written := make(chan struct{}), make(chan struct{})
			gated := &gatedSnapshot{Snapshot: snap, at: n / 2, gate: written}
			var wg sync.WaitGroup
			var rounds int
			var writeErr error
			wg.Go(func() {
				for rounds = 1; ; rounds++ {
					select {
					case <-stop:
						return
					default:
					}
					if rounds == 4 {
						close(written)
					}
					var b persistence.Batch
					for i := rounds % 5; i < n; i += 50 {
						k := fmt.Appendf(nil, "k%06d", i)
						if rounds%2 == 0 {
							b.Delete(k)
						} else {
							b.Put(k, fmt.Appendf(nil, "v%d", rounds))
						}
						b.Put(fmt.Appendf(nil, "new-%d-%d", rounds, i), nil)
					}
					if err := ns.Apply(ctx, &b); err != nil {
						writeErr = err
						return
					}
				}
			})
			h, err := st.Put(ctx, "job-"+be.name, 1, "op/0", nil, gated)
			close(stop)
			wg.Wait()
			if err != nil {
				t.Fatal(err)
			}
			if writeErr != nil {
				t.Fatal(writeErr)
			}
			t.Logf("%d write batches during the upload", rounds-1)
			into := be.open(t).Namespace("op/0")
			if _, err := st.Restore(ctx, h.Object, into); err != nil {
				t.Fatal(err)
			}
			if got := content(t, into); !slices.Equal(got, want) {
				t.Fatalf("restored %d entries, want the %d at OpenSnapshot (or values differ)", len(got), len(want))
			}
		})
	}
}

// gatedSnapshot waits for gate before the entry at.
type gatedSnapshot struct {
	persistence.Snapshot
	at   int
	gate <-chan struct{}
}

func (g *gatedSnapshot) Scan(ctx context.Context, fn func(k, v []byte) error) error {
	i := 0
	return g.Snapshot.Scan(ctx, func(k, v []byte) error {
		if i == g.at {
			select {
			case <-g.gate:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		i++
		return fn(k, v)
	})
}

// TestLarge round-trips 200 000 keys.
func TestLarge(t *testing.T) {
	st, _ := bucket(t)
	ctx := testutil.Context(t, 5*time.Minute)
	const n = 200_000
	val := bytes.Repeat([]byte("v"), 100)
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			s := be.open(t)
			ns := s.Namespace("job").Namespace("op/0")
			var b persistence.Batch
			for i := range n {
				b.Put(fmt.Appendf(nil, "key-%08d", i), fmt.Appendf(val[:0:0], "%d-%s", i, val))
				if b.Len() == 10000 {
					if err := ns.Apply(ctx, &b); err != nil {
						t.Fatal(err)
					}
					b.Reset()
				}
			}
			h := put(t, st, "job-"+be.name, 1, "op/0", "m", ns)
			t.Logf("%d keys: %d bytes", n, h.Size)

			into := be.open(t).Namespace("job").Namespace("op/0")
			apply(t, into, kv{"stale", "x"})
			if _, err := st.Restore(ctx, h.Object, into); err != nil {
				t.Fatal(err)
			}
			i := 0
			err := into.Scan(ctx, nil, func(k, v []byte) error {
				wk, wv := fmt.Sprintf("key-%08d", i), fmt.Sprintf("%d-%s", i, val)
				if string(k) != wk || string(v) != wv {
					return fmt.Errorf("key %d: %q = %.12q…, want %q = %.12q…", i, k, v, wk, wv)
				}
				i++
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if i != n {
				t.Fatalf("restored %d keys, want %d", i, n)
			}
		})
	}
}

// TestDiskLoss: a node's data directory is lost; a fresh Badger in an
// empty directory is restored from the Object Store alone.
func TestDiskLoss(t *testing.T) {
	st, _ := bucket(t)
	ctx := testutil.Context(t, time.Minute)
	dir := t.TempDir() + "/data"
	s, err := badgerstore.Open(ctx, badgerstore.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	tasks := []string{"count/0", "count/1"}
	var handles []snapshotstore.Handle
	var want [][]kv
	for _, task := range tasks {
		ns := s.Namespace("job").Namespace(task)
		fill(t, ns, task)
		for i := range 1000 {
			apply(t, ns.Namespace("keyed"), kv{fmt.Sprintf("k%04d", i), task})
		}
		want = append(want, content(t, ns))
		handles = append(handles, put(t, st, "job", 3, task, "meta-"+task, ns))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}

	fresh := openBadger(t, dir)
	for i, task := range tasks {
		ns := fresh.Namespace("job").Namespace(task)
		meta, err := st.Restore(ctx, handles[i].Object, ns)
		if err != nil {
			t.Fatal(err)
		}
		if string(meta) != "meta-"+task {
			t.Fatalf("meta %q", meta)
		}
		if got := content(t, ns); !slices.Equal(got, want[i]) {
			t.Fatalf("%s: restored %d entries, want %d (or values differ)", task, len(got), len(want[i]))
		}
	}
}

// TestRestoreCorrupt: a corrupt, truncated or missing object is an error
// and the namespace keeps its content.
func TestRestoreCorrupt(t *testing.T) {
	st, js := bucket(t)
	ctx := testutil.Context(t, time.Minute)
	obs, err := js.ObjectStore(ctx, snapshotstore.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	src := memstore.New()
	defer src.Close()
	fill(t, src.Namespace("op/0"), "good")
	for i := range 3000 {
		apply(t, src.Namespace("op/0"), kv{fmt.Sprintf("k%04d", i), strings.Repeat("v", 100)})
	}
	h := put(t, st, "job", 1, "op/0", "meta", src.Namespace("op/0"))
	good, err := obs.GetBytes(ctx, h.Object)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		d := slices.Clone(good)
		d[i] ^= 0x20
		return d
	}
	tests := []struct {
		name string
		data []byte // nil: no object
		is   error
	}{
		{"missing", nil, jetstream.ErrObjectNotFound},
		{"empty", []byte{}, snapshotstore.ErrCorrupt},
		{"not a snapshot", []byte("hello"), snapshotstore.ErrCorrupt},
		{"truncated in the entries", good[:len(good)/2], snapshotstore.ErrCorrupt},
		{"truncated in the trailer", good[:len(good)-2], snapshotstore.ErrCorrupt},
		{"byte flipped in the meta", flip(9), snapshotstore.ErrCorrupt},
		{"byte flipped near the end", flip(len(good) - 100), snapshotstore.ErrCorrupt},
		{"byte flipped in the middle", flip(len(good) / 2), snapshotstore.ErrCorrupt},
	}
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			s := be.open(t)
			ns := s.Namespace("op/0")
			fill(t, ns, "current")
			want := content(t, ns)
			for i, tt := range tests {
				name := fmt.Sprintf("job/9/bad-%d/%s", i, be.name)
				if tt.data != nil {
					if _, err := obs.PutBytes(ctx, name, tt.data); err != nil {
						t.Fatal(err)
					}
				}
				meta, err := st.Restore(ctx, name, ns)
				if !errors.Is(err, tt.is) {
					t.Errorf("%s: Restore = %q, %v; want an error wrapping %v", tt.name, meta, err, tt.is)
				}
				if got := content(t, ns); !slices.Equal(got, want) {
					t.Fatalf("%s: the namespace changed: %q", tt.name, got)
				}
			}
		})
	}
}

func TestDeleteCheckpoint(t *testing.T) {
	st, _ := bucket(t)
	ctx := testutil.Context(t, time.Minute)
	s := memstore.New()
	defer s.Close()
	ns := s.Namespace("op")
	apply(t, ns, kv{"k", "v"})
	objects := []struct {
		job  string
		id   uint64
		task string
	}{
		{"job", 1, "op/0"}, {"job", 1, "op/1"}, {"job", 1, "sink/0"},
		{"job", 11, "op/0"}, {"job", 2, "op/0"}, {"job2", 1, "op/0"}, {"dom.job", 1, "op/0"},
	}
	for _, o := range objects {
		put(t, st, o.job, o.id, o.task, "", ns)
	}
	if err := st.DeleteCheckpoint(ctx, "job", 1); err != nil {
		t.Fatal(err)
	}
	for _, o := range objects {
		_, err := st.Read(ctx, snapshotstore.ObjectName(o.job, o.id, o.task))
		deleted := o.job == "job" && o.id == 1
		if deleted && !errors.Is(err, jetstream.ErrObjectNotFound) {
			t.Errorf("%s/%d/%s: %v, want ErrObjectNotFound", o.job, o.id, o.task, err)
		}
		if !deleted && err != nil {
			t.Errorf("%s/%d/%s: %v, want it kept", o.job, o.id, o.task, err)
		}
	}
	// Deleting none is not an error; neither is deleting a missing object.
	if err := st.DeleteCheckpoint(ctx, "job", 1); err != nil {
		t.Fatalf("DeleteCheckpoint again: %v", err)
	}
	if err := st.DeleteCheckpoint(ctx, "nojob", 5); err != nil {
		t.Fatalf("DeleteCheckpoint of an unknown job: %v", err)
	}
	if err := st.Delete(ctx, "job/1/op/0"); err != nil {
		t.Fatalf("Delete of a deleted object: %v", err)
	}
	if err := st.Delete(ctx, "never/1/op/0"); err != nil {
		t.Fatalf("Delete of a missing object: %v", err)
	}
	if err := st.Delete(ctx, "job/2/op/0"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Read(ctx, "job/2/op/0"); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Fatalf("Read after Delete: %v", err)
	}
	// An empty bucket.
	for _, o := range []string{"job/11/op/0", "job2/1/op/0", "dom.job/1/op/0"} {
		if err := st.Delete(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.DeleteCheckpoint(ctx, "job", 11); err != nil {
		t.Fatalf("DeleteCheckpoint on an empty bucket: %v", err)
	}
}

// failingSnapshot yields entries, then fails.
type failingSnapshot struct {
	entries listSnapshot
	err     error
}

func (f failingSnapshot) Scan(ctx context.Context, fn func(k, v []byte) error) error {
	if err := f.entries.Scan(ctx, fn); err != nil {
		return err
	}
	return f.err
}

func (failingSnapshot) Close() error { return nil }

// TestPutErrors: a failed Put leaves no object behind.
func TestPutErrors(t *testing.T) {
	st, _ := bucket(t)
	ctx := testutil.Context(t, time.Minute)
	closed, err := persistence.OpenSnapshot(memstore.New())
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	scanErr := errors.New("disk read error")
	var big listSnapshot
	for i := range 50 {
		big = append(big, kv{fmt.Sprintf("\x00k%02d", i), strings.Repeat("v", 64<<10)})
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	tests := []struct {
		name       string
		ctx        context.Context
		job, task  string
		snap       persistence.Snapshot
		is         error
		wantInName string
	}{
		{"job with a slash", ctx, "a/b", "op/0", listSnapshot{}, nil, "job name"},
		{"empty job", ctx, "", "op/0", listSnapshot{}, nil, "job name"},
		{"empty task", ctx, "job", "", listSnapshot{}, nil, "task name"},
		{"task with an empty segment", ctx, "job", "op//0", listSnapshot{}, nil, "task name"},
		{"closed snapshot", ctx, "job", "op/0", closed, persistence.ErrClosed, ""},
		{"scan fails after 3 MiB", ctx, "job", "op/1", failingSnapshot{big, scanErr}, scanErr, ""},
		{"ctx done", cancelled, "job", "op/2", big, context.Canceled, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := st.Put(tt.ctx, tt.job, 1, tt.task, nil, tt.snap)
			if err == nil || (tt.is != nil && !errors.Is(err, tt.is)) || !strings.Contains(err.Error(), tt.wantInName) {
				t.Fatalf("Put = %+v, %v; want an error wrapping %v containing %q", h, err, tt.is, tt.wantInName)
			}
			if tt.job != "" && !strings.Contains(tt.job, "/") && tt.task != "" {
				if _, err := st.Read(ctx, snapshotstore.ObjectName(tt.job, 1, tt.task)); !errors.Is(err, jetstream.ErrObjectNotFound) {
					t.Fatalf("after a failed Put: Read = %v, want ErrObjectNotFound", err)
				}
			}
		})
	}
	// A Put replaces an object of the same name.
	s := memstore.New()
	defer s.Close()
	apply(t, s, kv{"k", "1"})
	put(t, st, "job", 5, "op/0", "first", s)
	apply(t, s, kv{"k", "2"})
	put(t, st, "job", 5, "op/0", "second", s)
	into := memstore.New()
	defer into.Close()
	meta, err := st.Restore(ctx, "job/5/op/0", into)
	if err != nil || string(meta) != "second" {
		t.Fatalf("Restore = %q, %v; want the second Put", meta, err)
	}
	if got := scanStore(t, into); !slices.Equal(got, []kv{{"k", "2"}}) {
		t.Fatalf("restored %q", got)
	}
}
