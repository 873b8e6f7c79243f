// Package persistencetest is the conformance suite every
// [persistence.Store] implementation must pass:
//
//	func TestConformance(t *testing.T) {
//		persistencetest.Run(t, func(t *testing.T) persistence.Store { return memstore.New() })
//	}
package persistencetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/meshflow/meshflow/persistence"
)

// Run runs the suite. open must return a new, empty store for each call;
// it may register its own cleanup (closing the store twice is fine).
func Run(t *testing.T, open func(t *testing.T) persistence.Store) {
	run(t, open, true)
}

// RunStore runs the cases of Run that every Store must pass, without those
// of snapshots and namespace replacement, which only the stores of
// persistence.NewStore (the backends) support: for Stores layered over
// another one, such as persistence.Overlay.
func RunStore(t *testing.T, open func(t *testing.T) persistence.Store) {
	run(t, open, false)
}

func run(t *testing.T, open func(t *testing.T) persistence.Store, snapshots bool) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s persistence.Store)
	}{
		{"GetPutDelete", testGetPutDelete},
		{"GetReturnsCopy", testGetReturnsCopy},
		{"BatchCopies", testBatchCopies},
		{"BatchReuse", testBatchReuse},
		{"BatchOrder", testBatchOrder},
		{"LargeBatch", testLargeBatch},
		{"ScanOrder", testScanOrder},
		{"ScanPrefixBounds", testScanPrefixBounds},
		{"ScanStops", testScanStops},
		{"ScanSnapshot", testScanSnapshot},
		{"NamespaceIsolation", testNamespaceIsolation},
		{"NamespacePrefixBounds", testNamespacePrefixBounds},
		{"NamespaceClose", testNamespaceClose},
		{"BatchAtomicity", testBatchAtomicity},
		{"Concurrent", testConcurrent},
		{"Closed", testClosed},
		{"ContextCancelled", testContextCancelled},
	}
	if snapshots {
		tests = append(tests, snapshotTests...)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tt.fn(t, s)
		})
	}
}

type kv struct{ k, v string }

func put(t *testing.T, s persistence.Store, kvs ...kv) {
	t.Helper()
	var b persistence.Batch
	for _, e := range kvs {
		b.Put([]byte(e.k), []byte(e.v))
	}
	if err := s.Apply(context.Background(), &b); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

func del(t *testing.T, s persistence.Store, keys ...string) {
	t.Helper()
	var b persistence.Batch
	for _, k := range keys {
		b.Delete([]byte(k))
	}
	if err := s.Apply(context.Background(), &b); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

func wantValue(t *testing.T, s persistence.Store, key, want string) {
	t.Helper()
	got, err := s.Get(context.Background(), []byte(key))
	if err != nil {
		t.Fatalf("Get(%q): %v, want %q", key, err, want)
	}
	if string(got) != want {
		t.Fatalf("Get(%q) = %q, want %q", key, got, want)
	}
}

func wantAbsent(t *testing.T, s persistence.Store, key string) {
	t.Helper()
	got, err := s.Get(context.Background(), []byte(key))
	if !errors.Is(err, persistence.ErrNotFound) {
		t.Fatalf("Get(%q) = %q, %v; want ErrNotFound", key, got, err)
	}
}

func scan(t *testing.T, s persistence.Store, prefix string) []kv {
	t.Helper()
	var out []kv
	err := s.Scan(context.Background(), []byte(prefix), func(k, v []byte) error {
		out = append(out, kv{string(k), string(v)})
		return nil
	})
	if err != nil {
		t.Fatalf("Scan(%q): %v", prefix, err)
	}
	return out
}

func wantScan(t *testing.T, s persistence.Store, prefix string, want []kv) {
	t.Helper()
	got := scan(t, s, prefix)
	if !slices.Equal(got, want) {
		t.Fatalf("Scan(%q)\n got %q\nwant %q", prefix, got, want)
	}
}

func testGetPutDelete(t *testing.T, s persistence.Store) {
	wantAbsent(t, s, "k")
	put(t, s, kv{"k", "v1"})
	wantValue(t, s, "k", "v1")
	put(t, s, kv{"k", "v2"})
	wantValue(t, s, "k", "v2")
	del(t, s, "k")
	wantAbsent(t, s, "k")
	del(t, s, "never-written") // deleting an absent key is fine

	// Empty values and empty keys are valid.
	put(t, s, kv{"empty", ""}, kv{"", "empty key"})
	got, err := s.Get(context.Background(), []byte("empty"))
	if err != nil || got == nil || len(got) != 0 {
		t.Fatalf("Get(empty value) = %#v, %v; want a non-nil empty slice", got, err)
	}
	wantValue(t, s, "", "empty key")
	del(t, s, "")
	wantAbsent(t, s, "")

	// Binary keys.
	bin := string([]byte{0, 0xff, 1, 0})
	put(t, s, kv{bin, "bin"})
	wantValue(t, s, bin, "bin")

	// An empty batch is fine.
	if err := s.Apply(context.Background(), &persistence.Batch{}); err != nil {
		t.Fatalf("Apply(empty batch): %v", err)
	}
}

func testGetReturnsCopy(t *testing.T, s persistence.Store) {
	put(t, s, kv{"k", "value"})
	got, err := s.Get(context.Background(), []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	copy(got, "XXXXX")
	wantValue(t, s, "k", "value")
}

func testBatchCopies(t *testing.T, s persistence.Store) {
	key, val := []byte("key"), []byte("value")
	var b persistence.Batch
	b.Put(key, val)
	dk := []byte("gone")
	b.Delete(dk)
	copy(key, "KEY")
	copy(val, "VALUE")
	copy(dk, "kkkk")
	if b.Len() != 2 || b.Size() != len("key")+len("value")+len("gone") {
		t.Fatalf("Len, Size = %d, %d; want 2, 12", b.Len(), b.Size())
	}
	put(t, s, kv{"kkkk", "stays"})
	if err := s.Apply(context.Background(), &b); err != nil {
		t.Fatal(err)
	}
	wantValue(t, s, "key", "value")
	wantAbsent(t, s, "KEY")
	wantValue(t, s, "kkkk", "stays")
}

// testBatchReuse checks that a store keeps nothing of a batch after Apply:
// a reset batch overwrites its buffers.
func testBatchReuse(t *testing.T, s persistence.Store) {
	ctx := context.Background()
	var b persistence.Batch
	for round := range 3 {
		for i := range 100 {
			b.Put(fmt.Appendf(nil, "r%d/k%03d", round, i), fmt.Appendf(nil, "r%d/v%03d", round, i))
		}
		if err := s.Apply(ctx, &b); err != nil {
			t.Fatal(err)
		}
		b.Reset()
		if b.Len() != 0 || b.Size() != 0 {
			t.Fatalf("after Reset: Len, Size = %d, %d", b.Len(), b.Size())
		}
	}
	for round := range 3 {
		for i := range 100 {
			wantValue(t, s, fmt.Sprintf("r%d/k%03d", round, i), fmt.Sprintf("r%d/v%03d", round, i))
		}
	}
}

func testBatchOrder(t *testing.T, s persistence.Store) {
	ctx := context.Background()
	var b persistence.Batch
	b.Put([]byte("a"), []byte("1"))
	b.Delete([]byte("a"))
	b.Put([]byte("a"), []byte("2"))
	b.Put([]byte("b"), []byte("1"))
	b.Delete([]byte("b"))
	if err := s.Apply(ctx, &b); err != nil {
		t.Fatal(err)
	}
	wantValue(t, s, "a", "2")
	wantAbsent(t, s, "b")
}

// testLargeBatch writes a batch larger than typical transaction limits,
// with overwrites and deletions far apart, and checks the last write wins.
func testLargeBatch(t *testing.T, s persistence.Store) {
	ctx := context.Background()
	const n = 10000
	var b persistence.Batch
	val := bytes.Repeat([]byte("v"), 100)
	for i := range n {
		b.Put(fmt.Appendf(nil, "k%05d", i), val)
	}
	for i := 0; i < n; i += 2 {
		b.Delete(fmt.Appendf(nil, "k%05d", i))
	}
	for i := 0; i < n; i += 4 {
		b.Put(fmt.Appendf(nil, "k%05d", i), []byte("last"))
	}
	if err := s.Apply(ctx, &b); err != nil {
		t.Fatal(err)
	}
	i := 0
	err := s.Scan(ctx, nil, func(k, v []byte) error {
		for i%4 == 2 {
			i++
		}
		want := string(val)
		if i%4 == 0 {
			want = "last"
		}
		if string(k) != fmt.Sprintf("k%05d", i) || string(v) != want {
			return fmt.Errorf("got %q = %.8q…, want k%05d = %.8q…", k, v, i, want)
		}
		i++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if i != n {
		t.Fatalf("scan stopped at %d, want %d", i, n)
	}
}

func testScanOrder(t *testing.T, s persistence.Store) {
	r := rand.New(rand.NewPCG(1, 2))
	model := map[string]string{}
	for range 10 {
		var b persistence.Batch
		for range 50 {
			k := make([]byte, 1+r.IntN(6))
			for i := range k {
				k[i] = byte(r.IntN(256))
			}
			v := fmt.Sprint(r.Int())
			b.Put(k, []byte(v))
			model[string(k)] = v
		}
		if err := s.Apply(context.Background(), &b); err != nil {
			t.Fatal(err)
		}
	}
	var want []kv
	for _, k := range slices.Sorted(maps.Keys(model)) {
		want = append(want, kv{k, model[k]})
	}
	wantScan(t, s, "", want)
}

// edgeKeys surround 0x00 and 0xff boundaries.
var edgeKeys = []string{
	"", "\x00", "\x00\x00", "\x00\xff", "\x01",
	"a", "a\x00", "ab", "a\xff", "a\xff\x00", "a\xff\xff", "b",
	"\xfe", "\xfe\xff", "\xfe\xff\xff", "\xff", "\xff\x00", "\xff\xfe", "\xff\xff", "\xff\xff\xff",
}

var edgePrefixes = []string{
	"", "\x00", "\x01", "a", "a\xff", "a\xff\xff", "b", "c",
	"\xfe", "\xfe\xff", "\xff", "\xff\xff", "\xff\xff\xff", "\xff\xff\xff\xff",
}

func putEdgeKeys(t *testing.T, s persistence.Store, tag string) {
	t.Helper()
	var kvs []kv
	for _, k := range edgeKeys {
		kvs = append(kvs, kv{k, tag + "=" + k})
	}
	put(t, s, kvs...)
}

func wantEdgeScans(t *testing.T, s persistence.Store, tag string) {
	t.Helper()
	for _, p := range edgePrefixes {
		var want []kv
		for _, k := range edgeKeys { // edgeKeys are sorted
			if len(k) >= len(p) && k[:len(p)] == p {
				want = append(want, kv{k, tag + "=" + k})
			}
		}
		wantScan(t, s, p, want)
	}
}

func testScanPrefixBounds(t *testing.T, s persistence.Store) {
	if !slices.IsSorted(edgeKeys) {
		t.Fatal("edgeKeys must be sorted")
	}
	putEdgeKeys(t, s, "root")
	wantEdgeScans(t, s, "root")
}

func testScanStops(t *testing.T, s persistence.Store) {
	put(t, s, kv{"a", "1"}, kv{"b", "2"}, kv{"c", "3"})
	stop := errors.New("stop")
	calls := 0
	err := s.Scan(context.Background(), nil, func(k, v []byte) error {
		calls++
		if string(k) == "b" {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 2 {
		t.Fatalf("Scan = %v after %d calls; want %v after 2", err, calls, stop)
	}
}

// testScanSnapshot checks that fn may write to the store and that the scan
// does not see those writes.
func testScanSnapshot(t *testing.T, s persistence.Store) {
	ctx := context.Background()
	put(t, s, kv{"a", "1"}, kv{"b", "2"}, kv{"c", "3"})
	var seen []string
	err := s.Scan(ctx, nil, func(k, v []byte) error {
		seen = append(seen, string(k))
		var b persistence.Batch
		b.Delete(k)
		b.Put(append(slices.Clip(k), "-new"...), v)
		b.Put([]byte("zzz"), []byte("late"))
		return s.Apply(ctx, &b)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seen, []string{"a", "b", "c"}) {
		t.Fatalf("scan saw %q, want [a b c]", seen)
	}
	wantScan(t, s, "", []kv{{"a-new", "1"}, {"b-new", "2"}, {"c-new", "3"}, {"zzz", "late"}})
}

func testNamespaceIsolation(t *testing.T, s persistence.Store) {
	a := s.Namespace("a")
	views := map[string]persistence.Store{
		"root":  s,
		"a":     a,
		"ab":    s.Namespace("ab"),
		"a/b":   a.Namespace("b"),
		"a/b/c": a.Namespace("b").Namespace("c"),
		"abc":   s.Namespace("abc"),
		"b":     s.Namespace("b"),
		"empty": s.Namespace(""),
		"\x00":  s.Namespace("\x00"),
		"a/":    a.Namespace(""),
	}
	names := slices.Sorted(maps.Keys(views))
	for _, n := range names {
		put(t, views[n], kv{"k", n}, kv{"", n + " empty"})
	}
	// Keys that look like the encoding of a nested namespace must stay in
	// their own view, whatever the implementation's encoding.
	tricky := []string{"\x00k", "\x01\x01b\x00k", "\x01\x01bk", "b\x00k", "\x01b", "bk", "\x02ab"}
	for _, k := range tricky {
		put(t, a, kv{k, "tricky"})
	}
	for _, n := range names {
		v := views[n]
		wantValue(t, v, "k", n)
		want := []kv{{"", n + " empty"}, {"k", n}}
		if n == "a" {
			for _, k := range tricky {
				want = append(want, kv{k, "tricky"})
			}
			slices.SortFunc(want, func(x, y kv) int { return bytes.Compare([]byte(x.k), []byte(y.k)) })
		}
		wantScan(t, v, "", want)
	}
	// A deletion in one view leaves the others alone.
	del(t, a, "k")
	wantAbsent(t, a, "k")
	wantValue(t, views["a/b"], "k", "a/b")
	wantValue(t, views["ab"], "k", "ab")
	wantValue(t, s, "k", "root")
	// Two views of the same name share their keys.
	wantValue(t, s.Namespace("a").Namespace("b"), "k", "a/b")
}

func testNamespacePrefixBounds(t *testing.T, s persistence.Store) {
	views := []persistence.Store{
		s,
		s.Namespace("\xff"),
		s.Namespace("\xff\xff"),
		s.Namespace("\xff").Namespace("\xff"),
		s.Namespace("a"),
		s.Namespace("a\xff"),
	}
	for i, v := range views {
		putEdgeKeys(t, v, fmt.Sprint(i))
	}
	for i, v := range views {
		wantEdgeScans(t, v, fmt.Sprint(i))
	}
}

func testNamespaceClose(t *testing.T, s persistence.Store) {
	ns := s.Namespace("ns")
	put(t, ns, kv{"k", "v"})
	if err := ns.Close(); err != nil {
		t.Fatalf("closing a namespace: %v", err)
	}
	wantValue(t, ns, "k", "v")
	put(t, s, kv{"root", "v"})
	wantValue(t, s, "root", "v")
}

// testBatchAtomicity has a writer replace a set of keys batch by batch while
// readers scan: every scan must see exactly one batch.
func testBatchAtomicity(t *testing.T, s persistence.Store) {
	ctx := context.Background()
	views := []persistence.Store{s, s.Namespace("x").Namespace("y")}
	for vi, v := range views {
		t.Run(fmt.Sprint(vi), func(t *testing.T) {
			const keys, rounds = 100, 60
			write := func(round int) error {
				var b persistence.Batch
				for k := range keys {
					if round%5 == 4 {
						b.Delete(fmt.Appendf(nil, "k%03d", k))
					} else {
						b.Put(fmt.Appendf(nil, "k%03d", k), fmt.Appendf(nil, "%d", round))
					}
				}
				return v.Apply(ctx, &b)
			}
			if err := write(0); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			var wg sync.WaitGroup
			errs := make(chan error, 4)
			for range 2 {
				wg.Go(func() {
					for {
						select {
						case <-done:
							return
						default:
						}
						var n int
						var first string
						err := v.Scan(ctx, []byte("k"), func(k, val []byte) error {
							if n == 0 {
								first = string(val)
							} else if string(val) != first {
								return fmt.Errorf("torn batch: %s = %s, first key = %s", k, val, first)
							}
							n++
							return nil
						})
						if err == nil && n != 0 && n != keys {
							err = fmt.Errorf("torn batch: scan saw %d of %d keys", n, keys)
						}
						if err != nil {
							errs <- err
							return
						}
					}
				})
			}
			for round := 1; round < rounds; round++ {
				if err := write(round); err != nil {
					t.Error(err)
					break
				}
			}
			close(done)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

func testConcurrent(t *testing.T, s persistence.Store) {
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 4 {
		ns := s.Namespace(fmt.Sprint(g))
		wg.Go(func() {
			for i := range 50 {
				var b persistence.Batch
				b.Put(fmt.Appendf(nil, "k%02d", i), fmt.Appendf(nil, "%d", i))
				if err := ns.Apply(ctx, &b); err != nil {
					t.Error(err)
					return
				}
				if _, err := ns.Get(ctx, fmt.Appendf(nil, "k%02d", i)); err != nil {
					t.Error(err)
					return
				}
				if _, err := s.Get(ctx, []byte("absent")); !errors.Is(err, persistence.ErrNotFound) {
					t.Errorf("Get(absent): %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	for g := range 4 {
		if got := len(scan(t, s.Namespace(fmt.Sprint(g)), "")); got != 50 {
			t.Errorf("namespace %d has %d keys, want 50", g, got)
		}
	}
}

func testClosed(t *testing.T, s persistence.Store) {
	ctx := context.Background()
	before := s.Namespace("before")
	put(t, before, kv{"k", "v"})
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for name, v := range map[string]persistence.Store{"root": s, "before": before, "after": s.Namespace("after")} {
		if _, err := v.Get(ctx, []byte("k")); !errors.Is(err, persistence.ErrClosed) {
			t.Errorf("%s: Get after Close: %v, want ErrClosed", name, err)
		}
		err := v.Scan(ctx, nil, func(k, v []byte) error { return errors.New("scan called fn") })
		if !errors.Is(err, persistence.ErrClosed) {
			t.Errorf("%s: Scan after Close: %v, want ErrClosed", name, err)
		}
		var b persistence.Batch
		b.Put([]byte("k"), []byte("v"))
		if err := v.Apply(ctx, &b); !errors.Is(err, persistence.ErrClosed) {
			t.Errorf("%s: Apply after Close: %v, want ErrClosed", name, err)
		}
		if err := v.Apply(ctx, &persistence.Batch{}); !errors.Is(err, persistence.ErrClosed) {
			t.Errorf("%s: Apply(empty batch) after Close: %v, want ErrClosed", name, err)
		}
	}
}

func testContextCancelled(t *testing.T, s persistence.Store) {
	put(t, s, kv{"a", "1"}, kv{"b", "2"}, kv{"c", "3"})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for name, v := range map[string]persistence.Store{"root": s, "ns": s.Namespace("ns")} {
		if _, err := v.Get(ctx, []byte("a")); !errors.Is(err, context.Canceled) {
			t.Errorf("%s: Get: %v, want context.Canceled", name, err)
		}
		err := v.Scan(ctx, nil, func(k, v []byte) error { return errors.New("scan called fn") })
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s: Scan: %v, want context.Canceled", name, err)
		}
		var b persistence.Batch
		b.Put([]byte("a"), []byte("changed"))
		b.Put([]byte("new"), []byte("v"))
		if err := v.Apply(ctx, &b); !errors.Is(err, context.Canceled) {
			t.Errorf("%s: Apply: %v, want context.Canceled", name, err)
		}
	}
	wantValue(t, s, "a", "1")
	wantAbsent(t, s, "new")
	wantAbsent(t, s.Namespace("ns"), "new")

	// Cancelled during a scan: the scan stops before the next key.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	calls := 0
	err := s.Scan(ctx, nil, func(k, v []byte) error {
		calls++
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) || calls != 1 {
		t.Fatalf("Scan cancelled in fn = %v after %d calls; want context.Canceled after 1", err, calls)
	}
}
