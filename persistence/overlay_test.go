package persistence_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/meshflow/meshflow/persistence"
	"github.com/meshflow/meshflow/persistence/badgerstore"
	"github.com/meshflow/meshflow/persistence/memstore"
	"github.com/meshflow/meshflow/persistence/persistencetest"
)

// autoCommit commits its overlay after every Apply, through any view.
type autoCommit struct {
	persistence.Store
	o *persistence.Overlay
}

func (a autoCommit) Apply(ctx context.Context, b *persistence.Batch) error {
	if err := a.Store.Apply(ctx, b); err != nil {
		return err
	}
	return a.o.Commit(ctx)
}

func (a autoCommit) Namespace(name string) persistence.Store {
	return autoCommit{a.Store.Namespace(name), a.o}
}

func openBadger(t testing.TB) *badgerstore.Store {
	t.Helper()
	s, err := badgerstore.Open(context.Background(), badgerstore.Options{InMemory: true, MemTableSize: 4 << 20, BlockCacheSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestOverlayConformance runs the Store suite on overlays whose writes
// stay buffered, and on overlays committed after every Apply.
func TestOverlayConformance(t *testing.T) {
	t.Run("Buffered", func(t *testing.T) {
		persistencetest.RunStore(t, func(t *testing.T) persistence.Store {
			return persistence.NewOverlay(memstore.New())
		})
	})
	t.Run("BufferedInNamespace", func(t *testing.T) {
		persistencetest.RunStore(t, func(t *testing.T) persistence.Store {
			return persistence.NewOverlay(memstore.New().Namespace("job").Namespace("op/0"))
		})
	})
	t.Run("Committed", func(t *testing.T) {
		persistencetest.RunStore(t, func(t *testing.T) persistence.Store {
			o := persistence.NewOverlay(memstore.New())
			return autoCommit{o, o}
		})
	})
	t.Run("CommittedBadger", func(t *testing.T) {
		persistencetest.RunStore(t, func(t *testing.T) persistence.Store {
			o := persistence.NewOverlay(openBadger(t))
			return autoCommit{o, o}
		})
	})
	t.Run("CommittedNested", func(t *testing.T) {
		// An overlay over an overlay, both committed after every Apply.
		persistencetest.RunStore(t, func(t *testing.T) persistence.Store {
			inner := persistence.NewOverlay(memstore.New())
			outer := persistence.NewOverlay(autoCommit{inner, inner})
			return autoCommit{outer, outer}
		})
	})
}

type kv struct{ k, v string }

func apply(t *testing.T, s persistence.Store, ops ...string) {
	t.Helper()
	var b persistence.Batch
	for _, op := range ops {
		if k, ok := strings.CutPrefix(op, "-"); ok {
			b.Delete([]byte(k))
			continue
		}
		k, v, _ := strings.Cut(op, "=")
		b.Put([]byte(k), []byte(v))
	}
	if err := s.Apply(context.Background(), &b); err != nil {
		t.Fatalf("Apply(%q): %v", ops, err)
	}
}

func dump(t *testing.T, s persistence.Store) string {
	t.Helper()
	var out []string
	err := s.Scan(context.Background(), nil, func(k, v []byte) error {
		out = append(out, string(k)+"="+string(v))
		return nil
	})
	if err != nil {
		t.Fatalf("Scan: %v", err)
	}
	return strings.Join(out, " ")
}

// TestOverlayCommitDiscard: what the overlay and the underlying store
// show before and after Commit or Discard. ops are "k=v" puts and "-k"
// deletes, applied as one batch per element of writes.
func TestOverlayCommitDiscard(t *testing.T) {
	tests := []struct {
		name     string
		stored   []string
		writes   [][]string
		view     string // through the overlay, before commit or discard
		size     int
		commit   string // underlying after Commit
		discard  string // underlying after Discard
		noChange bool
	}{
		{
			name:    "puts over an empty store",
			writes:  [][]string{{"b=2", "a=1"}},
			view:    "a=1 b=2",
			size:    2 * (1 + 1 + 1), // tag byte, key, value
			commit:  "a=1 b=2",
			discard: "",
		},
		{
			name:    "later write wins, across batches",
			writes:  [][]string{{"a=1", "a=2"}, {"a=3", "b=1", "-b", "b=4"}},
			view:    "a=3 b=4",
			size:    6,
			commit:  "a=3 b=4",
			discard: "",
		},
		{
			name:    "delete of a stored key hides it and deletes it on commit",
			stored:  []string{"a=s", "b=s", "c=s"},
			writes:  [][]string{{"-b"}},
			view:    "a=s c=s",
			size:    2,
			commit:  "a=s c=s",
			discard: "a=s b=s c=s",
		},
		{
			name:    "put over a stored key shadows it",
			stored:  []string{"a=s", "c=s"},
			writes:  [][]string{{"c=new", "b=new"}},
			view:    "a=s b=new c=new",
			size:    10,
			commit:  "a=s b=new c=new",
			discard: "a=s c=s",
		},
		{
			name:    "delete then put of a stored key",
			stored:  []string{"a=s"},
			writes:  [][]string{{"-a"}, {"a=again"}},
			view:    "a=again",
			size:    7,
			commit:  "a=again",
			discard: "a=s",
		},
		{
			name:    "delete of an absent key",
			stored:  []string{"a=s"},
			writes:  [][]string{{"-z"}},
			view:    "a=s",
			size:    2,
			commit:  "a=s",
			discard: "a=s",
		},
		{
			name:    "empty value",
			writes:  [][]string{{"e="}},
			view:    "e=",
			size:    2,
			commit:  "e=",
			discard: "",
		},
	}
	for _, tt := range tests {
		for _, action := range []string{"commit", "discard"} {
			t.Run(tt.name+"/"+action, func(t *testing.T) {
				ctx := context.Background()
				under := memstore.New()
				defer under.Close()
				apply(t, under, tt.stored...)
				o := persistence.NewOverlay(under)
				for _, w := range tt.writes {
					apply(t, o, w...)
				}
				if got := dump(t, o); got != tt.view {
					t.Fatalf("overlay shows %q, want %q", got, tt.view)
				}
				if got := dump(t, under); got != strings.Join(tt.stored, " ") {
					t.Fatalf("underlying store shows %q before %s, want %q", got, action, strings.Join(tt.stored, " "))
				}
				if got := o.Size(); got != tt.size {
					t.Fatalf("Size = %d, want %d", got, tt.size)
				}
				want := tt.discard
				if action == "commit" {
					if err := o.Commit(ctx); err != nil {
						t.Fatal(err)
					}
					want = tt.commit
				} else {
					o.Discard()
				}
				if got := dump(t, under); got != want {
					t.Fatalf("underlying store shows %q after %s, want %q", got, action, want)
				}
				if got := dump(t, o); got != want {
					t.Fatalf("overlay shows %q after %s, want %q", got, action, want)
				}
				if o.Size() != 0 {
					t.Fatalf("Size = %d after %s", o.Size(), action)
				}
				// Get agrees with Scan, including on deleted keys.
				for _, k := range []string{"a", "b", "c", "e", "z"} {
					v, err := o.Get(ctx, []byte(k))
					in := strings.Contains(" "+want+" ", " "+k+"=")
					if in != (err == nil) || (err != nil && !errors.Is(err, persistence.ErrNotFound)) {
						t.Fatalf("Get(%q) = %q, %v; scan shows %q", k, v, err, want)
					}
				}
			})
		}
	}
}

// TestOverlayNamespaces: views share the buffer, keep their key spaces
// apart, and Commit writes each key into its namespace of the underlying
// store.
func TestOverlayNamespaces(t *testing.T) {
	ctx := context.Background()
	under := memstore.New()
	defer under.Close()
	apply(t, under.Namespace("a"), "k=stored-a", "gone=stored")
	o := persistence.NewOverlay(under)
	a := o.Namespace("a")
	ab := a.Namespace("b")
	apply(t, o, "k=root")
	apply(t, a, "k=a", "-gone")
	apply(t, ab, "k=a/b")
	apply(t, o.Namespace("ab"), "k=ab")

	// A view made later, of the same name, sees the same buffer.
	if got := dump(t, o.Namespace("a")); got != "k=a" {
		t.Fatalf("namespace a shows %q", got)
	}
	for name, want := range map[string]string{"root": "k=root", "a/b": "k=a/b", "ab": "k=ab"} {
		v := map[string]persistence.Store{"root": o, "a/b": ab, "ab": o.Namespace("ab")}[name]
		if got := dump(t, v); got != want {
			t.Fatalf("%s shows %q, want %q", name, got, want)
		}
	}
	// Size, Commit and Discard on a view act on the shared buffer.
	if a.(*persistence.Overlay).Size() != o.Size() || o.Size() == 0 {
		t.Fatalf("sizes: view %d, root %d", a.(*persistence.Overlay).Size(), o.Size())
	}
	if dump(t, under.Namespace("a").Namespace("b")) != "" {
		t.Fatal("underlying store written before commit")
	}
	if err := ab.(*persistence.Overlay).Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		s    persistence.Store
		want string
	}{
		{under, "k=root"},
		{under.Namespace("a"), "k=a"},
		{under.Namespace("a").Namespace("b"), "k=a/b"},
		{under.Namespace("ab"), "k=ab"},
	} {
		if got := dump(t, c.s); got != c.want {
			t.Fatalf("after commit: got %q, want %q", got, c.want)
		}
	}
	if o.Size() != 0 {
		t.Fatalf("Size = %d after commit", o.Size())
	}
	apply(t, ab, "k=changed")
	a.(*persistence.Overlay).Discard()
	if got := dump(t, ab); got != "k=a/b" {
		t.Fatalf("after discard through another view: %q", got)
	}
}

// countingBackend is a memstore-like backend that counts Write calls.
type countingBackend struct {
	mu     sync.Mutex
	m      map[string]string
	writes atomic.Int64
}

func (c *countingBackend) Get(_ context.Context, key []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[string(key)]
	if !ok {
		return nil, persistence.ErrNotFound
	}
	return []byte(v), nil
}

func (c *countingBackend) Scan(_ context.Context, prefix []byte, fn func(k, v []byte) error) error {
	c.mu.Lock()
	m := maps.Clone(c.m)
	c.mu.Unlock()
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if strings.HasPrefix(k, string(prefix)) {
			if err := fn([]byte(k), []byte(m[k])); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *countingBackend) Write(_ context.Context, ops []persistence.Op) error {
	c.writes.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, op := range ops {
		if op.Delete {
			delete(c.m, string(op.Key))
		} else {
			c.m[string(op.Key)] = string(op.Value)
		}
	}
	return nil
}

func (c *countingBackend) Close() error { return nil }

// rootWrapper is a root store of another package, like memstore.Store.
type rootWrapper struct{ persistence.Store }

// opaqueView hides every view's type: the overlay cannot reach its backend.
type opaqueView struct{ persistence.Store }

func (o opaqueView) Namespace(name string) persistence.Store {
	return opaqueView{o.Store.Namespace(name)}
}

// TestOverlayCommitWrites: a commit touching several namespaces is one
// backend write over this package's stores, and one Apply per namespace
// over any other store.
func TestOverlayCommitWrites(t *testing.T) {
	tests := []struct {
		name   string
		wrap   func(root persistence.Store) persistence.Store
		writes int64
	}{
		{"root view", func(r persistence.Store) persistence.Store { return r }, 1},
		{"namespace view", func(r persistence.Store) persistence.Store { return r.Namespace("job") }, 1},
		{"wrapped root", func(r persistence.Store) persistence.Store { return rootWrapper{r} }, 1},
		{"other store", func(r persistence.Store) persistence.Store { return opaqueView{r} }, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			be := &countingBackend{m: map[string]string{}}
			root := persistence.NewStore(be)
			s := tt.wrap(root)
			apply(t, s.Namespace("x"), "old=1", "keep=1")
			be.writes.Store(0)
			o := persistence.NewOverlay(s)
			apply(t, o, "r=1")
			apply(t, o.Namespace("x"), "k=x", "-old")
			apply(t, o.Namespace("x").Namespace("y"), "k=xy")
			apply(t, o.Namespace("z"), "k=z")
			apply(t, o, "r2=2")
			if be.writes.Load() != 0 {
				t.Fatal("the backend was written before Commit")
			}
			if err := o.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if got := be.writes.Load(); got != tt.writes {
				t.Errorf("Commit made %d backend writes, want %d", got, tt.writes)
			}
			for _, c := range []struct {
				s    persistence.Store
				want string
			}{
				{s, "r=1 r2=2"},
				{s.Namespace("x"), "k=x keep=1"},
				{s.Namespace("x").Namespace("y"), "k=xy"},
				{s.Namespace("z"), "k=z"},
			} {
				if got := dump(t, c.s); got != c.want {
					t.Errorf("got %q, want %q", got, c.want)
				}
			}
		})
	}
}

// TestOverlayCommitFailure: a failed commit keeps the buffer.
func TestOverlayCommitFailure(t *testing.T) {
	ctx := context.Background()
	under := memstore.New()
	ns := under.Namespace("n")
	o := persistence.NewOverlay(ns)
	apply(t, o, "a=1")
	size := o.Size()
	if err := under.Close(); err != nil {
		t.Fatal(err)
	}
	if err := o.Commit(ctx); !errors.Is(err, persistence.ErrClosed) {
		t.Fatalf("Commit over a closed store = %v, want ErrClosed", err)
	}
	if o.Size() != size {
		t.Fatalf("Size = %d after a failed commit, want %d", o.Size(), size)
	}
	if v, err := o.Get(ctx, []byte("a")); err != nil || string(v) != "1" {
		t.Fatalf("Get after a failed commit = %q, %v", v, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := o.Commit(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Commit with a cancelled ctx = %v", err)
	}
}

// TestOverlayClose: closing the overlay closes the store under it and
// drops the buffer; closing a namespace view of it does nothing.
func TestOverlayClose(t *testing.T) {
	ctx := context.Background()
	under := memstore.New()
	apply(t, under, "stored=1")
	o := persistence.NewOverlay(under)
	apply(t, o, "buffered=1")
	if err := o.Namespace("ns").Close(); err != nil {
		t.Fatal(err)
	}
	if got := dump(t, o); got != "buffered=1 stored=1" {
		t.Fatalf("after closing a namespace view: %q", got)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := under.Get(ctx, []byte("stored")); !errors.Is(err, persistence.ErrClosed) {
		t.Fatalf("underlying Get after Close = %v, want ErrClosed", err)
	}
	if o.Size() != 0 {
		t.Fatalf("Size = %d after Close", o.Size())
	}
	if err := o.Commit(ctx); !errors.Is(err, persistence.ErrClosed) {
		t.Fatalf("Commit after Close = %v, want ErrClosed", err)
	}
}

// TestOverlayScanKeepsItsView: a scan over buffered keys goes on seeing
// them while its fn commits, discards and rewrites the buffer.
func TestOverlayScanKeepsItsView(t *testing.T) {
	ctx := context.Background()
	for _, action := range []string{"commit", "discard"} {
		t.Run(action, func(t *testing.T) {
			under := memstore.New()
			defer under.Close()
			o := persistence.NewOverlay(under)
			apply(t, o, "a=1", "b=2", "c=3")
			var seen []string
			err := o.Scan(ctx, nil, func(k, v []byte) error {
				seen = append(seen, string(k)+"="+string(v))
				if action == "commit" {
					if err := o.Commit(ctx); err != nil {
						return err
					}
				} else {
					o.Discard()
				}
				apply(t, o, "a=X", "b=Y", "c=Z", "d=W")
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(seen, " "); got != "a=1 b=2 c=3" {
				t.Fatalf("scan saw %q", got)
			}
			if got := dump(t, o); got != "a=X b=Y c=Z d=W" {
				t.Fatalf("after the scan: %q", got)
			}
		})
	}
}

// TestOverlayModel applies random puts and deletes to a store and to an
// overlay over it, in several namespaces, and checks every Get and prefix
// Scan against a model, before and after Commit.
func TestOverlayModel(t *testing.T) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(5, 6))
	names := []string{"", "n", "n2"}
	for round := range 30 {
		under := memstore.New()
		o := persistence.NewOverlay(under)
		model := map[string]map[string]string{}
		view := func(s persistence.Store, name string) persistence.Store {
			if name == "" {
				return s
			}
			return s.Namespace(name)
		}
		key := func() []byte {
			k := make([]byte, 1+r.IntN(3))
			for i := range k {
				k[i] = "ab\x00\xff"[r.IntN(4)]
			}
			return k
		}
		write := func(s persistence.Store, buffered bool) {
			for _, name := range names {
				if model[name] == nil {
					model[name] = map[string]string{}
				}
				var b persistence.Batch
				for range r.IntN(20) {
					k := key()
					if r.IntN(3) == 0 {
						b.Delete(k)
						delete(model[name], string(k))
					} else {
						v := fmt.Sprintf("r%d-%d-%v", round, r.IntN(100), buffered)
						b.Put(k, []byte(v))
						model[name][string(k)] = v
					}
				}
				if err := view(s, name).Apply(ctx, &b); err != nil {
					t.Fatal(err)
				}
			}
		}
		check := func(when string) {
			for _, name := range names {
				v := view(o, name)
				for _, p := range []string{"", "a", "b", "\x00", "\xff", "ab", "a\xff"} {
					var want []kv
					for _, k := range slices.Sorted(maps.Keys(model[name])) {
						if strings.HasPrefix(k, p) {
							want = append(want, kv{k, model[name][k]})
						}
					}
					var got []kv
					err := v.Scan(ctx, []byte(p), func(k, val []byte) error {
						got = append(got, kv{string(k), string(val)})
						return nil
					})
					if err != nil {
						t.Fatal(err)
					}
					if !slices.Equal(got, want) {
						t.Fatalf("round %d %s: namespace %q Scan(%q)\n got %q\nwant %q", round, when, name, p, got, want)
					}
				}
				for range 20 {
					k := key()
					val, err := v.Get(ctx, k)
					want, ok := model[name][string(k)]
					if ok != (err == nil) || (ok && string(val) != want) || (!ok && !errors.Is(err, persistence.ErrNotFound)) {
						t.Fatalf("round %d %s: namespace %q Get(%q) = %q, %v; want %q, %v", round, when, name, k, val, err, want, ok)
					}
				}
			}
		}
		write(under, false) // stored
		write(o, true)      // buffered over it
		write(o, true)
		check("buffered")
		if err := o.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		check("committed")
		o2 := persistence.NewOverlay(under)
		o = o2
		check("fresh overlay")
		under.Close()
	}
}

// TestOverlayScanSeesNoCommit: a scan never mixes a buffer with an
// underlying store committed past it. The writer commits "a" then "b" with
// the same round number, so b <= a must hold in every scan.
func TestOverlayScanSeesNoCommit(t *testing.T) {
	ctx := context.Background()
	under := memstore.New()
	defer under.Close()
	o := persistence.NewOverlay(under)
	put := func(k string, v uint64) error {
		var b persistence.Batch
		b.Put([]byte(k), binary.BigEndian.AppendUint64(nil, v))
		if err := o.Apply(ctx, &b); err != nil {
			return err
		}
		return o.Commit(ctx)
	}
	if err := errors.Join(put("a", 0), put("b", 0)); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				vals := map[string]uint64{}
				err := o.Scan(ctx, nil, func(k, v []byte) error {
					vals[string(k)] = binary.BigEndian.Uint64(v)
					return nil
				})
				if err == nil && vals["b"] > vals["a"] {
					err = fmt.Errorf("scan saw a=%d b=%d", vals["a"], vals["b"])
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for round := uint64(1); round <= 2000; round++ {
		if err := errors.Join(put("a", round), put("b", round)); err != nil {
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
}

// Benchmarks: the cost of reading and writing through an overlay, against
// the same store without one. Keys are 16 bytes, values 100.

type benchStore struct {
	name string
	open func(b *testing.B) persistence.Store
}

var benchStores = []benchStore{
	{"memstore", func(b *testing.B) persistence.Store { s := memstore.New(); b.Cleanup(func() { s.Close() }); return s }},
	{"badger", func(b *testing.B) persistence.Store { return openBadger(b) }},
}

func benchKey(k []byte, i uint64) []byte {
	binary.BigEndian.PutUint64(k[8:], i*0x9e3779b97f4a7c15)
	return k
}

// fill stores n keys in s (the instance's namespace) and returns them.
func fill(b *testing.B, s persistence.Store, n int) [][]byte {
	var batch persistence.Batch
	keys := make([][]byte, n)
	val := make([]byte, 100)
	for i := range keys {
		keys[i] = benchKey(make([]byte, 16), uint64(i))
		batch.Put(keys[i], val)
	}
	if err := s.Apply(context.Background(), &batch); err != nil {
		b.Fatal(err)
	}
	return keys
}

// BenchmarkOverlayGet reads stored keys: plain, through an overlay
// buffering 100 other keys (a miss in the buffer), and keys found in the
// buffer.
func BenchmarkOverlayGet(b *testing.B) {
	for _, bs := range benchStores {
		for _, mode := range []string{"plain", "overlay-miss", "overlay-hit"} {
			b.Run(bs.name+"/"+mode, func(b *testing.B) {
				ctx := context.Background()
				ns := bs.open(b).Namespace("job").Namespace("op/0")
				keys := fill(b, ns, 10000)
				var s persistence.Store = ns
				if mode != "plain" {
					o := persistence.NewOverlay(ns)
					var batch persistence.Batch
					val := make([]byte, 100)
					for i := range 100 {
						k := keys[i]
						if mode == "overlay-miss" {
							k = benchKey(make([]byte, 16), uint64(1e6+i))
						}
						batch.Put(k, val)
					}
					if err := o.Apply(ctx, &batch); err != nil {
						b.Fatal(err)
					}
					s = o
				}
				n := len(keys)
				if mode == "overlay-hit" {
					n = 100
				}
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if _, err := s.Get(ctx, keys[i%n]); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		}
	}
}

// BenchmarkOverlayApply writes batches of 64 puts over a fixed set of
// 16384 stored keys (the store does not grow with b.N): plain Apply, Apply
// to an overlay then Commit (the runtime's pattern for a successful call),
// and Apply to an overlay then Discard (a failed call).
func BenchmarkOverlayApply(b *testing.B) {
	for _, bs := range benchStores {
		for _, mode := range []string{"plain", "overlay-commit", "overlay-discard"} {
			b.Run(bs.name+"/"+mode, func(b *testing.B) {
				ctx := context.Background()
				ns := bs.open(b).Namespace("job").Namespace("op/0")
				fill(b, ns, 16384)
				o := persistence.NewOverlay(ns)
				var batch persistence.Batch
				key, val := make([]byte, 16), make([]byte, 100)
				var seq uint64
				b.SetBytes(64 * int64(len(key)+len(val)))
				b.ReportAllocs()
				for b.Loop() {
					batch.Reset()
					for range 64 {
						seq++
						batch.Put(benchKey(key, seq%16384), val)
					}
					var err error
					switch mode {
					case "plain":
						err = ns.Apply(ctx, &batch)
					case "overlay-commit":
						if err = o.Apply(ctx, &batch); err == nil {
							err = o.Commit(ctx)
						}
					case "overlay-discard":
						err = o.Apply(ctx, &batch)
						o.Discard()
					}
					if err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkOverlayScan scans 1000 stored keys: plain, through an overlay
// with an empty buffer, and through one buffering new values for 100 of
// them.
func BenchmarkOverlayScan(b *testing.B) {
	for _, bs := range benchStores {
		for _, mode := range []string{"plain", "overlay-empty", "overlay-10pct"} {
			b.Run(bs.name+"/"+mode, func(b *testing.B) {
				ctx := context.Background()
				ns := bs.open(b).Namespace("job").Namespace("op/0")
				keys := fill(b, ns, 1000)
				var s persistence.Store = ns
				if mode != "plain" {
					o := persistence.NewOverlay(ns)
					if mode == "overlay-10pct" {
						var batch persistence.Batch
						val := bytes.Repeat([]byte("n"), 100)
						for _, k := range keys[:100] {
							batch.Put(k, val)
						}
						if err := o.Apply(ctx, &batch); err != nil {
							b.Fatal(err)
						}
					}
					s = o
				}
				b.ReportAllocs()
				for b.Loop() {
					n := 0
					if err := s.Scan(ctx, nil, func(k, v []byte) error { n++; return nil }); err != nil {
						b.Fatal(err)
					}
					if n != len(keys) {
						b.Fatalf("scan saw %d keys, want %d", n, len(keys))
					}
				}
			})
		}
	}
}
