package persistencetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshflow/meshflow/internal/testutil"
	"github.com/meshflow/meshflow/persistence"
)

// snapshotTests check persistence.OpenSnapshot and
// persistence.ReplaceNamespace; every backend must support them.
var snapshotTests = []struct {
	name string
	fn   func(t *testing.T, s persistence.Store)
}{
	{"SnapshotIsolation", testSnapshotIsolation},
	{"SnapshotRange", testSnapshotRange},
	{"SnapshotRoot", testSnapshotRoot},
	{"SnapshotConcurrentWriter", testSnapshotConcurrentWriter},
	{"SnapshotRepeatedScans", testSnapshotRepeatedScans},
	{"SnapshotScanStops", testSnapshotScanStops},
	{"SnapshotClose", testSnapshotClose},
	{"SnapshotCloseDuringScan", testSnapshotCloseDuringScan},
	{"SnapshotStoreClosed", testSnapshotStoreClosed},
	{"ReplaceNamespace", testReplaceNamespace},
	{"ReplaceNamespaceLarge", testReplaceNamespaceLarge},
	{"ReplaceNamespaceErrors", testReplaceNamespaceErrors},
	{"RangeSnapshot", testRangeSnapshot},
	{"RangeSnapshotIsolation", testRangeSnapshotIsolation},
	{"ReplaceRange", testReplaceRange},
}

// rel returns the key of a snapshot entry for key written in the namespace
// at path below the snapshot's namespace.
func rel(key string, path ...string) string {
	return string(persistence.NamespacePrefix(path...)) + "\x00" + key
}

func openSnapshot(t *testing.T, s persistence.Store) persistence.Snapshot {
	t.Helper()
	snap, err := persistence.OpenSnapshot(s)
	if err != nil {
		t.Fatalf("OpenSnapshot: %v", err)
	}
	t.Cleanup(func() {
		if err := snap.Close(); err != nil {
			t.Errorf("Snapshot.Close: %v", err)
		}
	})
	return snap
}

func snapScan(t *testing.T, snap persistence.Snapshot) []kv {
	t.Helper()
	got, err := snapEntries(snap)
	if err != nil {
		t.Fatalf("Snapshot.Scan: %v", err)
	}
	return got
}

func snapEntries(snap persistence.Snapshot) ([]kv, error) {
	var out []kv
	err := snap.Scan(context.Background(), func(k, v []byte) error {
		out = append(out, kv{string(k), string(v)})
		return nil
	})
	return out, err
}

func wantSnap(t *testing.T, snap persistence.Snapshot, want []kv) {
	t.Helper()
	slices.SortFunc(want, func(a, b kv) int { return strings.Compare(a.k, b.k) })
	if got := snapScan(t, snap); !slices.Equal(got, want) {
		t.Fatalf("Snapshot.Scan\n got %q\nwant %q", got, want)
	}
}

// testSnapshotIsolation: writes, overwrites and deletes made after
// OpenSnapshot, in the namespace and below it, are not seen.
func testSnapshotIsolation(t *testing.T, s persistence.Store) {
	ns := s.Namespace("job").Namespace("op/0")
	sub := ns.Namespace("sub")
	put(t, ns, kv{"a", "1"}, kv{"b", "2"}, kv{"c", "3"})
	put(t, sub, kv{"x", "10"}, kv{"y", "20"})
	want := []kv{
		{rel("a"), "1"}, {rel("b"), "2"}, {rel("c"), "3"},
		{rel("x", "sub"), "10"}, {rel("y", "sub"), "20"},
	}
	snap := openSnapshot(t, ns)

	put(t, ns, kv{"a", "changed"}, kv{"0", "new first"}, kv{"z", "new last"}, kv{"bb", "new"})
	del(t, ns, "b")
	put(t, sub, kv{"x", "changed"}, kv{"w", "new"})
	del(t, sub, "y")
	put(t, ns.Namespace("new"), kv{"k", "new namespace"})

	wantSnap(t, snap, want)
	// The store has moved on.
	wantValue(t, ns, "a", "changed")
	wantAbsent(t, ns, "b")
	wantAbsent(t, sub, "y")

	// A later snapshot sees the new state; the first one still the old.
	snap2 := openSnapshot(t, ns)
	del(t, ns, "a", "c", "0", "z", "bb")
	wantSnap(t, snap2, []kv{
		{rel("0"), "new first"}, {rel("a"), "changed"}, {rel("bb"), "new"}, {rel("c"), "3"}, {rel("z"), "new last"},
		{rel("k", "new"), "new namespace"},
		{rel("w", "sub"), "new"}, {rel("x", "sub"), "changed"},
	})
	wantSnap(t, snap, want)
}

// testSnapshotRange: nested namespaces are included; the parent, siblings
// whose names share a prefix, and other namespaces are not.
func testSnapshotRange(t *testing.T, s persistence.Store) {
	a := s.Namespace("a")
	views := map[string]persistence.Store{
		"root":  s,
		"a":     a,
		"ab":    s.Namespace("ab"),
		"a/b":   a.Namespace("b"),
		"a/b/c": a.Namespace("b").Namespace("c"),
		"a/":    a.Namespace(""),
		"b":     s.Namespace("b"),
		"\xff":  s.Namespace("\xff"),
		"":      s.Namespace(""),
	}
	for name, v := range views {
		put(t, v, kv{"k", name}, kv{"", name + " empty"}, kv{"\xff\xff", name + " ff"})
	}
	wantSnap(t, openSnapshot(t, a), []kv{
		{rel(""), "a empty"}, {rel("k"), "a"}, {rel("\xff\xff"), "a ff"},
		{rel("", "b"), "a/b empty"}, {rel("k", "b"), "a/b"}, {rel("\xff\xff", "b"), "a/b ff"},
		{rel("", "b", "c"), "a/b/c empty"}, {rel("k", "b", "c"), "a/b/c"}, {rel("\xff\xff", "b", "c"), "a/b/c ff"},
		{rel("", ""), "a/ empty"}, {rel("k", ""), "a/"}, {rel("\xff\xff", ""), "a/ ff"},
	})
	wantSnap(t, openSnapshot(t, a.Namespace("b").Namespace("c")), []kv{
		{rel(""), "a/b/c empty"}, {rel("k"), "a/b/c"}, {rel("\xff\xff"), "a/b/c ff"},
	})
	wantSnap(t, openSnapshot(t, s.Namespace("\xff")), []kv{
		{rel(""), "\xff empty"}, {rel("k"), "\xff"}, {rel("\xff\xff"), "\xff ff"},
	})
	// An empty namespace has an empty snapshot.
	wantSnap(t, openSnapshot(t, s.Namespace("none")), nil)
	wantSnap(t, openSnapshot(t, a.Namespace("none")), nil)
}

// testSnapshotRoot: the snapshot of the root holds every key, with the
// namespace encoding of the backend.
func testSnapshotRoot(t *testing.T, s persistence.Store) {
	put(t, s, kv{"r", "root"})
	put(t, s.Namespace("n"), kv{"k", "ns"})
	wantSnap(t, openSnapshot(t, s), []kv{{rel("r"), "root"}, {rel("k", "n"), "ns"}})
}

// testSnapshotConcurrentWriter scans a snapshot on one goroutine while
// another keeps writing (puts, overwrites, deletes) to the namespace.
func testSnapshotConcurrentWriter(t *testing.T, s persistence.Store) {
	ctx := context.Background()
	ns := s.Namespace("op")
	const n = 3000
	var b persistence.Batch
	var want []kv
	for i := range n {
		k := fmt.Sprintf("k%05d", i)
		b.Put([]byte(k), []byte("v0-"+k))
		want = append(want, kv{rel(k), "v0-" + k})
	}
	if err := ns.Apply(ctx, &b); err != nil {
		t.Fatal(err)
	}
	snap := openSnapshot(t, ns)

	done := make(chan struct{})
	var wg sync.WaitGroup
	var writeErr error
	wg.Go(func() {
		for round := 1; ; round++ {
			select {
			case <-done:
				return
			default:
			}
			var b persistence.Batch
			for i := round % 7; i < n; i += 7 {
				k := fmt.Appendf(nil, "k%05d", i)
				switch round % 3 {
				case 0:
					b.Delete(k)
				default:
					b.Put(k, fmt.Appendf(nil, "v%d", round))
				}
				b.Put(fmt.Appendf(nil, "new%d-%d", round, i), nil)
			}
			if err := ns.Apply(ctx, &b); err != nil {
				writeErr = err
				return
			}
		}
	})
	for range 3 {
		got, err := snapEntries(snap)
		if err != nil {
			t.Error(err)
			break
		}
		if !slices.Equal(got, want) {
			t.Errorf("snapshot changed under a writer: %d entries, want %d", len(got), len(want))
			break
		}
	}
	close(done)
	wg.Wait()
	if writeErr != nil {
		t.Fatal(writeErr)
	}
}

// testSnapshotRepeatedScans: scans, also concurrent ones, see the same
// content.
func testSnapshotRepeatedScans(t *testing.T, s persistence.Store) {
	put(t, s, kv{"a", "1"}, kv{"b", "2"})
	snap := openSnapshot(t, s)
	del(t, s, "a")
	want := []kv{{rel("a"), "1"}, {rel("b"), "2"}}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			got, err := snapEntries(snap)
			if err != nil || !slices.Equal(got, want) {
				t.Errorf("concurrent scan = %q, %v; want %q", got, err, want)
			}
		})
	}
	wg.Wait()
	wantSnap(t, snap, want)
}

func testSnapshotScanStops(t *testing.T, s persistence.Store) {
	put(t, s, kv{"a", "1"}, kv{"b", "2"}, kv{"c", "3"})
	snap := openSnapshot(t, s)
	stop := errors.New("stop")
	calls := 0
	err := snap.Scan(context.Background(), func(k, v []byte) error {
		calls++
		if calls == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 2 {
		t.Fatalf("Scan = %v after %d calls; want %v after 2", err, calls, stop)
	}
	ctx, cancel := context.WithCancel(context.Background())
	calls = 0
	err = snap.Scan(ctx, func(k, v []byte) error {
		calls++
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) || calls != 1 {
		t.Fatalf("Scan cancelled in fn = %v after %d calls; want context.Canceled after 1", err, calls)
	}
	err = snap.Scan(ctx, func(k, v []byte) error { return errors.New("scan called fn") })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Scan with a cancelled ctx = %v, want context.Canceled", err)
	}
}

func testSnapshotClose(t *testing.T, s persistence.Store) {
	put(t, s, kv{"a", "1"})
	snap, err := persistence.OpenSnapshot(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := snap.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	err = snap.Scan(context.Background(), func(k, v []byte) error { return errors.New("scan called fn") })
	if !errors.Is(err, persistence.ErrClosed) {
		t.Fatalf("Scan after Close = %v, want ErrClosed", err)
	}
	// The store is unaffected; many snapshots opened and closed leave
	// nothing behind that blocks writes or Close.
	for i := range 100 {
		snap, err := persistence.OpenSnapshot(s.Namespace("n"))
		if err != nil {
			t.Fatal(err)
		}
		put(t, s.Namespace("n"), kv{fmt.Sprint(i), "v"})
		if err := snap.Close(); err != nil {
			t.Fatal(err)
		}
	}
	wantValue(t, s, "a", "1")
}

// testSnapshotCloseDuringScan: Close waits for a running scan, which stops
// at its next key with ErrClosed.
func testSnapshotCloseDuringScan(t *testing.T, s persistence.Store) {
	put(t, s, kv{"a", "1"}, kv{"b", "2"}, kv{"c", "3"})
	snap, err := persistence.OpenSnapshot(s)
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	calls := 0
	err = snap.Scan(context.Background(), func(k, v []byte) error {
		calls++
		if calls > 1 {
			return nil
		}
		go func() { closed <- snap.Close() }()
		// Close marks the snapshot closed at once, then waits for this
		// scan: a new scan already fails.
		testutil.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
			err := snap.Scan(context.Background(), func(k, v []byte) error { return nil })
			if !errors.Is(err, persistence.ErrClosed) {
				return fmt.Errorf("scan during Close = %v, want ErrClosed", err)
			}
			return nil
		})
		select {
		case err := <-closed:
			return fmt.Errorf("Close returned (%v) before the scan ended", err)
		default:
		}
		return nil
	})
	if !errors.Is(err, persistence.ErrClosed) || calls != 1 {
		t.Fatalf("scan closed in fn = %v after %d calls; want ErrClosed after 1", err, calls)
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// testSnapshotStoreClosed: closing the store closes its snapshots (and
// does not wait for them to be closed).
func testSnapshotStoreClosed(t *testing.T, s persistence.Store) {
	put(t, s, kv{"a", "1"})
	snap, err := persistence.OpenSnapshot(s.Namespace("x"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close store with an open snapshot: %v", err)
	}
	err = snap.Scan(context.Background(), func(k, v []byte) error { return errors.New("scan called fn") })
	if !errors.Is(err, persistence.ErrClosed) {
		t.Fatalf("Scan after the store closed = %v, want ErrClosed", err)
	}
	if err := snap.Close(); err != nil {
		t.Fatalf("Snapshot.Close after the store closed: %v", err)
	}
	if _, err := persistence.OpenSnapshot(s); !errors.Is(err, persistence.ErrClosed) {
		t.Fatalf("OpenSnapshot on a closed store = %v, want ErrClosed", err)
	}
	err = persistence.ReplaceNamespace(context.Background(), s, func(func(k, v []byte) error) error { return nil })
	if !errors.Is(err, persistence.ErrClosed) {
		t.Fatalf("ReplaceNamespace on a closed store = %v, want ErrClosed", err)
	}
}

// entriesOf returns an entries func for persistence.ReplaceNamespace that
// reuses its buffers between calls, as a decoder does.
func entriesOf(kvs []kv) func(yield func(k, v []byte) error) error {
	return func(yield func(k, v []byte) error) error {
		var kb, vb []byte
		for _, e := range kvs {
			kb = append(kb[:0], e.k...)
			vb = append(vb[:0], e.v...)
			if err := yield(kb, vb); err != nil {
				return err
			}
		}
		return nil
	}
}

// testReplaceNamespace restores a snapshot of one namespace into another:
// the target ends with exactly the snapshot's keys, nested namespaces
// included; its parent, siblings and the source are untouched.
func testReplaceNamespace(t *testing.T, s persistence.Store) {
	ctx := context.Background()
	src := s.Namespace("job").Namespace("op/0")
	dst := s.Namespace("job").Namespace("op/1")
	sibling := s.Namespace("job").Namespace("op/10")
	put(t, src, kv{"a", "src a"}, kv{"b", "src b"})
	put(t, src.Namespace("timers"), kv{"t1", "src t1"})
	put(t, dst, kv{"a", "old a"}, kv{"stale", "old"})
	put(t, dst.Namespace("timers"), kv{"t9", "old t9"})
	put(t, dst.Namespace("other"), kv{"o", "old o"})
	put(t, sibling, kv{"a", "sibling"})
	put(t, s.Namespace("job"), kv{"a", "parent"})
	put(t, s, kv{"a", "root"})

	snap := openSnapshot(t, src)
	entries := snapScan(t, snap)
	if err := persistence.ReplaceNamespace(ctx, dst, entriesOf(entries)); err != nil {
		t.Fatal(err)
	}
	wantScan(t, dst, "", []kv{{"a", "src a"}, {"b", "src b"}})
	wantScan(t, dst.Namespace("timers"), "", []kv{{"t1", "src t1"}})
	wantScan(t, dst.Namespace("other"), "", nil)
	wantSnap(t, openSnapshot(t, dst), slices.Clone(entries))
	wantScan(t, src, "", []kv{{"a", "src a"}, {"b", "src b"}})
	wantScan(t, sibling, "", []kv{{"a", "sibling"}})
	wantValue(t, s.Namespace("job"), "a", "parent")
	wantValue(t, s, "a", "root")

	// No entries: the namespace is cleared, nested ones too.
	if err := persistence.ReplaceNamespace(ctx, dst, entriesOf(nil)); err != nil {
		t.Fatal(err)
	}
	wantSnap(t, openSnapshot(t, dst), nil)
	wantScan(t, sibling, "", []kv{{"a", "sibling"}})
	wantScan(t, src, "", []kv{{"a", "src a"}, {"b", "src b"}})
}

// testReplaceNamespaceLarge replaces a namespace larger than a Badger
// transaction of badgerstore's SmallTransactions configuration (150 KiB)
// with another such content. It stays within two 1 MiB memtables: with
// 30 000 keys, under load and the race detector, Badger 4.9.6 was once seen
// to bring back the 7 476 keys of the first flushed table after their
// deletion (a compaction dropped the tombstones while the old values lived
// on in another level). That is a Badger bug, not this suite's subject; how
// ReplaceNamespace bounds its transactions is tested in package persistence.
func testReplaceNamespaceLarge(t *testing.T, s persistence.Store) {
	ctx := context.Background()
	ns := s.Namespace("big")
	val := bytes.Repeat([]byte("v"), 64)
	var b persistence.Batch
	for i := range 2000 {
		b.Put(fmt.Appendf(nil, "old%06d", i), val)
	}
	if err := ns.Apply(ctx, &b); err != nil {
		t.Fatal(err)
	}
	var entries []kv
	for i := range 1800 {
		entries = append(entries, kv{rel(fmt.Sprintf("new%06d", i)), fmt.Sprintf("%d%s", i, val)})
	}
	if err := persistence.ReplaceNamespace(ctx, ns, entriesOf(entries)); err != nil {
		t.Fatal(err)
	}
	wantSnap(t, openSnapshot(t, ns), entries)
}

func testReplaceNamespaceErrors(t *testing.T, s persistence.Store) {
	ctx := context.Background()
	ns := s.Namespace("ns")
	put(t, ns, kv{"keep", "v"})

	// An error of entries is returned as is.
	boom := errors.New("boom")
	err := persistence.ReplaceNamespace(ctx, ns, func(yield func(k, v []byte) error) error { return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("ReplaceNamespace = %v, want %v", err, boom)
	}
	// A key that no view can have written: an error naming it.
	for _, k := range []string{"", "\x02x", "plain"} {
		err := persistence.ReplaceNamespace(ctx, ns, entriesOf([]kv{{rel("a"), "1"}, {k, "v"}}))
		if err == nil || !strings.Contains(err.Error(), "not a key of a namespace") {
			t.Fatalf("ReplaceNamespace with key %q = %v, want an error", k, err)
		}
	}
	// A cancelled ctx does nothing.
	put(t, ns, kv{"keep", "v"})
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := persistence.ReplaceNamespace(cctx, ns, entriesOf(nil)); !errors.Is(err, context.Canceled) {
		t.Fatalf("ReplaceNamespace(cancelled) = %v, want context.Canceled", err)
	}
	wantValue(t, ns, "keep", "v")
}

func openRangeSnapshot(t *testing.T, s persistence.Store, start, end []byte) persistence.Snapshot {
	t.Helper()
	snap, err := persistence.OpenRangeSnapshot(s, start, end)
	if err != nil {
		t.Fatalf("OpenRangeSnapshot: %v", err)
	}
	t.Cleanup(func() {
		if err := snap.Close(); err != nil {
			t.Errorf("Snapshot.Close: %v", err)
		}
	})
	return snap
}

// testRangeSnapshot: a range snapshot holds the view's own keys in
// [start, end), passed as written; keys outside, nested namespaces and
// siblings are not in it.
func testRangeSnapshot(t *testing.T, s persistence.Store) {
	ns := s.Namespace("job/op/keyed")
	put(t, ns, kv{"", "empty"}, kv{"\x00\x01a", "g1 a"}, kv{"\x00\x01b", "g1 b"}, kv{"\x00\x02", "g2"},
		kv{"\x00\x03z", "g3"}, kv{"\x00\x04", "g4"}, kv{"\xff\xff", "ff"})
	put(t, ns.Namespace("sub"), kv{"\x00\x02", "nested"})
	put(t, s.Namespace("job/op/keyed2"), kv{"\x00\x02", "sibling"})
	put(t, s, kv{"\x00\x02", "root"})
	for _, tc := range []struct {
		name       string
		start, end []byte
		want       []kv
	}{
		{"groups 1-2", []byte{0, 1}, []byte{0, 3}, []kv{{"\x00\x01a", "g1 a"}, {"\x00\x01b", "g1 b"}, {"\x00\x02", "g2"}}},
		{"group 3", []byte{0, 3}, []byte{0, 4}, []kv{{"\x00\x03z", "g3"}}},
		{"empty range", []byte{0, 2}, []byte{0, 2}, nil},
		{"no keys in range", []byte{1, 0}, []byte{2, 0}, nil},
		{"no upper bound", []byte{0, 4}, nil, []kv{{"\x00\x04", "g4"}, {"\xff\xff", "ff"}}},
		{"everything", nil, nil, []kv{{"", "empty"}, {"\x00\x01a", "g1 a"}, {"\x00\x01b", "g1 b"}, {"\x00\x02", "g2"},
			{"\x00\x03z", "g3"}, {"\x00\x04", "g4"}, {"\xff\xff", "ff"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantSnap(t, openRangeSnapshot(t, ns, tc.start, tc.end), tc.want)
		})
	}
	if _, err := persistence.OpenRangeSnapshot(ns, []byte{2}, []byte{1}); err == nil {
		t.Fatal("OpenRangeSnapshot with start > end: no error")
	}
}

// testRangeSnapshotIsolation: writes in the range after the snapshot was
// opened are not seen by it.
func testRangeSnapshotIsolation(t *testing.T, s persistence.Store) {
	ns := s.Namespace("keyed")
	put(t, ns, kv{"\x00\x01a", "1"}, kv{"\x00\x01b", "2"})
	snap := openRangeSnapshot(t, ns, []byte{0, 1}, []byte{0, 2})
	put(t, ns, kv{"\x00\x01a", "changed"}, kv{"\x00\x01c", "new"})
	del(t, ns, "\x00\x01b")
	wantSnap(t, snap, []kv{{"\x00\x01a", "1"}, {"\x00\x01b", "2"}})
	wantSnap(t, openRangeSnapshot(t, ns, []byte{0, 1}, []byte{0, 2}), []kv{{"\x00\x01a", "changed"}, {"\x00\x01c", "new"}})
}

// testReplaceRange: the range ends with exactly the entries; keys of the
// view outside it, its nested namespaces and siblings are untouched; an
// entry outside the range is an error.
func testReplaceRange(t *testing.T, s persistence.Store) {
	ctx := context.Background()
	ns := s.Namespace("keyed")
	put(t, ns, kv{"\x00\x00x", "g0"}, kv{"\x00\x01a", "old a"}, kv{"\x00\x01stale", "old"}, kv{"\x00\x02b", "old b"}, kv{"\x00\x03", "g3"})
	put(t, ns.Namespace("sub"), kv{"\x00\x01a", "nested"})
	put(t, s.Namespace("keyed2"), kv{"\x00\x01a", "sibling"})
	start, end := []byte{0, 1}, []byte{0, 3}
	entries := []kv{{"\x00\x01a", "new a"}, {"\x00\x02c", "new c"}}
	if err := persistence.ReplaceRange(ctx, ns, start, end, entriesOf(entries)); err != nil {
		t.Fatal(err)
	}
	wantScan(t, ns, "", []kv{{"\x00\x00x", "g0"}, {"\x00\x01a", "new a"}, {"\x00\x02c", "new c"}, {"\x00\x03", "g3"}})
	wantScan(t, ns.Namespace("sub"), "", []kv{{"\x00\x01a", "nested"}})
	wantScan(t, s.Namespace("keyed2"), "", []kv{{"\x00\x01a", "sibling"}})

	// A large replacement (more than one chunk) of a range.
	var big []kv
	for i := range 5000 {
		big = append(big, kv{fmt.Sprintf("\x00\x01%06d", i), "v"})
	}
	if err := persistence.ReplaceRange(ctx, ns, start, end, entriesOf(big)); err != nil {
		t.Fatal(err)
	}
	wantSnap(t, openRangeSnapshot(t, ns, start, end), slices.Clone(big))
	// No entries: the range is cleared.
	if err := persistence.ReplaceRange(ctx, ns, start, end, entriesOf(nil)); err != nil {
		t.Fatal(err)
	}
	wantScan(t, ns, "", []kv{{"\x00\x00x", "g0"}, {"\x00\x03", "g3"}})

	for _, k := range []string{"\x00\x03", "\x00\x00z", ""} {
		err := persistence.ReplaceRange(ctx, ns, start, end, entriesOf([]kv{{k, "v"}}))
		if err == nil || !strings.Contains(err.Error(), "outside") {
			t.Fatalf("ReplaceRange with key %q = %v, want an error", k, err)
		}
	}
	wantScan(t, ns, "", []kv{{"\x00\x00x", "g0"}, {"\x00\x03", "g3"}})
}
