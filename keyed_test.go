package meshflow_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/internal/kernels"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
	"github.com/meshflow/meshflow/persistence/badgerstore"
)

// keyedSumOp keeps a running sum per key k in a ValueState and emits
// (k, v, sum) per row, like sumOp but on keyed state. fail decides, by a
// batch's first v and attempt, to panic after it updated its state and
// emitted. maxCached records the most bytes the cache held after a batch,
// spills how often it passed its bound.
type keyedSumOp struct {
	bound     int
	fail      func(first, attempt int64) bool
	tries     *attempts
	restored  *atomic.Uint64
	maxCached *atomic.Int64
	spills    *atomic.Int64

	mem  memory.Allocator
	ks   *meshflow.KeyedState
	sums *meshflow.ValueState[int64]
	keys meshflow.KeyRows
}

func (o *keyedSumOp) Open(ctx context.Context, oc meshflow.OperatorContext) error {
	o.mem = oc.Allocator()
	if o.restored != nil && oc.RestoredCheckpoint() > o.restored.Load() {
		o.restored.Store(oc.RestoredCheckpoint())
	}
	var err error
	o.ks, err = meshflow.NewKeyedState(ctx, oc, meshflow.KeyedOptions{MemoryBound: o.bound})
	if err != nil {
		return err
	}
	o.sums, err = meshflow.NewValueState[int64](o.ks, "sum", meshflow.StateOptions[int64]{})
	return err
}

func (o *keyedSumOp) Close(context.Context) error { return nil }

func (o *keyedSumOp) Process(ctx context.Context, in arrow.RecordBatch, out meshflow.Emitter) error {
	if err := o.keys.Compute(o.ks, in, "k"); err != nil {
		return err
	}
	ks, vs := in.Column(0).(*array.Int64), in.Column(1).(*array.Int64)
	b := array.NewRecordBuilder(o.mem, sumSchema)
	defer b.Release()
	for i := 0; i < ks.Len(); i++ {
		key := o.keys.Key(i)
		s, _, err := o.sums.Get(ctx, key)
		if err != nil {
			return err
		}
		s += vs.Value(i)
		if err := o.sums.Set(ctx, key, s); err != nil {
			return err
		}
		b.Field(0).(*array.Int64Builder).Append(ks.Value(i))
		b.Field(1).(*array.Int64Builder).Append(vs.Value(i))
		b.Field(2).(*array.Int64Builder).Append(s)
	}
	out.Emit(b.NewRecordBatch())
	if o.maxCached != nil {
		for c := int64(o.ks.CachedBytes()); c > o.maxCached.Load(); {
			if o.maxCached.CompareAndSwap(o.maxCached.Load(), c) {
				break
			}
		}
		o.spills.Store(int64(o.ks.Spills()))
	}
	if o.fail != nil && ks.Len() > 0 {
		first := vs.Value(0)
		if o.fail(first, o.tries.next(first)) {
			panic(fmt.Sprintf("keyed sum fails at v=%d", first))
		}
	}
	return nil
}

// TestKeyedRandomCrashRecover runs a job whose keyed operator keeps its
// sums in ValueState and panics at random after updating its cache: the
// job recovers from its last checkpoint (the cache's unflushed changes are
// not lost silently, nor applied twice), and the rows the transactional
// sink committed are exactly the brute-force reference, each once. One
// case keeps the state in memory, one spills (memory bound far below the
// state).
func TestKeyedRandomCrashRecover(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	seed := testSeed(t)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	for i, tc := range []struct {
		name  string
		bound int
		keys  int
	}{
		{"in-memory", 0, 50},
		{"spilling", 4 << 10, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const batches, size = 60, 40
			rng := rand.New(rand.NewPCG(seed, uint64(i)+1))
			recs := kvBatches(mem, rng, batches, size, tc.keys)
			defer release(recs)
			want := runningSums(recs)
			fails := map[int64]bool{}
			for v := range int64(batches * size) {
				fails[v] = rng.Float64() < 0.05
			}
			var tries attempts
			var failures, spills, maxCached atomic.Int64
			var restored atomic.Uint64
			var forced atomic.Bool
			out := newCommitted()
			op := func() meshflow.Operator {
				return &keyedSumOp{bound: tc.bound, tries: &tries, restored: &restored, maxCached: &maxCached, spills: &spills,
					fail: func(first, attempt int64) bool {
						if (attempt == 1 && fails[first]) || (len(out.rows()) > 0 && forced.CompareAndSwap(false, true)) {
							failures.Add(1)
							return true
						}
						return false
					}}
			}
			p := meshflow.NewPipeline("keyed-random-" + tc.name)
			var passTries attempts
			pace := passOp{pace: 4 * time.Millisecond, tries: &passTries, fails: new(atomic.Int64), fail: func(int64) bool { return false }}
			p.Source("numbers", meshflow.FromBatches(recs...)).
				Process("pace", func() meshflow.Operator { return pace }, meshflow.OutputSchema(kvSchema)).
				KeyBy("k").Process("sum", op, meshflow.Parallelism(2), meshflow.OutputSchema(sumSchema)).
				To("sink", meshflow.ToOperator(newTxSink(out, nil)))
			if err := meshflow.Run(testutil.Context(t, 2*time.Minute), p, ckptOptions(t, nc, mem, testStore(t))...); err != nil {
				t.Fatalf("job failed: %v", err)
			}
			t.Logf("%d failures, restored from checkpoint %d at most, %d spills", failures.Load(), restored.Load(), spills.Load())
			if failures.Load() == 0 || restored.Load() == 0 {
				t.Fatalf("%d failures, restored from %d: the test did not exercise recovery", failures.Load(), restored.Load())
			}
			if tc.bound > 0 && spills.Load() == 0 {
				t.Fatal("the spilling case never spilled")
			}
			out.check(t, want)
		})
	}
}

// TestKeyedSpill: keyed state of more than 4× the memory bound is exact,
// and the cache never holds more than the bound after a batch.
func TestKeyedSpill(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	const bound, keys = 16 << 10, 3000
	recs := kvBatches(mem, rand.New(rand.NewPCG(5, 6)), 50, 200, keys)
	defer release(recs)
	want := runningSums(recs)
	var spills, maxCached atomic.Int64
	out := newCommitted()
	p := meshflow.NewPipeline("keyed-spill")
	p.Source("numbers", meshflow.FromBatches(recs...)).
		KeyBy("k").Process("sum", func() meshflow.Operator {
		return &keyedSumOp{bound: bound, maxCached: &maxCached, spills: &spills}
	}, meshflow.Parallelism(2), meshflow.OutputSchema(sumSchema)).
		To("sink", meshflow.ToOperator(newTxSink(out, nil)))
	st := testStore(t)
	if err := meshflow.Run(testutil.Context(t, time.Minute), p, ckptOptions(t, nc, mem, st)...); err != nil {
		t.Fatal(err)
	}
	out.check(t, want)
	// The state in the store: every key's sum, its bytes counted as the
	// cache counts them.
	stateBytes, entries := 0, 0
	err := st.Namespace(actors.KeyedNamespace("keyed-spill", "sum")).Scan(context.Background(), nil, func(k, v []byte) error {
		stateBytes += len(k) + len(v) + 64
		entries++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	distinct := map[int64]bool{}
	for _, r := range want {
		distinct[r.k] = true
	}
	t.Logf("%d entries, %d bytes of state, bound %d (2 instances), most cached %d, %d spills", entries, stateBytes, bound, maxCached.Load(), spills.Load())
	if entries != len(distinct) {
		t.Errorf("%d entries in the store, want %d keys", entries, len(distinct))
	}
	if stateBytes < 2*4*bound { // each of the 2 instances holds ≥ 4× its bound
		t.Errorf("state of %d bytes is less than 4× the bound of each instance", stateBytes)
	}
	if m := maxCached.Load(); m > bound || m == 0 {
		t.Errorf("the cache held up to %d bytes, bound %d", m, bound)
	}
	if spills.Load() == 0 {
		t.Error("never spilled")
	}
}

// TestKeyedRestartSameDataDir: a job with keyed state is stopped (its final
// checkpoint flushes the cache), the node's Badger database is closed and
// opened again from the same directory, and the job run again goes on with
// its state: exact running sums, no row lost or repeated.
func TestKeyedRestartSameDataDir(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	recs := kvBatches(mem, rand.New(rand.NewPCG(7, 8)), 20, 25, 30)
	defer release(recs)
	want := runningSums(recs)
	dir := t.TempDir()
	open := func() *badgerstore.Store {
		st, err := badgerstore.Open(context.Background(), badgerstore.Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	g := newGate()
	out := newCommitted()
	var processed atomic.Int64
	build := func() *meshflow.Pipeline {
		p := meshflow.NewPipeline("keyed-restart")
		p.Source("numbers", gated(kvSchema, recs, g)).
			KeyBy("k").Process("sum", func() meshflow.Operator { return &keyedSumOp{} }, meshflow.Parallelism(2), meshflow.OutputSchema(sumSchema)).
			To("sink", meshflow.ToOperator(newTxSink(out, &processed)))
		return p
	}
	g.release(10)
	st := open()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := runAsync(t, ctx, build(), ckptOptions(t, nc, mem, st)...)
	testutil.CheckFor(t, 30*time.Second, time.Millisecond, atLeast(&processed, 250, "rows at the sink"))
	cancel()
	if err := wait(); err != context.Canceled {
		t.Fatalf("Run returned %v, want context.Canceled after a clean stop", err)
	}
	out.check(t, runningSums(recs[:10]))
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st = open()
	defer st.Close()
	g.release(len(recs))
	if err := meshflow.Run(testutil.Context(t, time.Minute), build(), ckptOptions(t, nc, mem, st)...); err != nil {
		t.Fatalf("restart: %v", err)
	}
	out.check(t, want)
}

// scriptOp runs a test's steps on keyed state inside the runtime: setup in
// Open, step per input batch (numbered from 0), and passes timers to the
// keyed state.
type scriptOp struct {
	opts  meshflow.KeyedOptions
	setup func(ks *meshflow.KeyedState) error
	step  func(ctx context.Context, oc meshflow.OperatorContext, ks *meshflow.KeyedState, keys *meshflow.KeyRows, in arrow.RecordBatch, n int) error

	cols []string // key columns; "k" when empty

	oc   meshflow.OperatorContext
	ks   *meshflow.KeyedState
	keys meshflow.KeyRows
	n    int
}

func (o *scriptOp) Open(ctx context.Context, oc meshflow.OperatorContext) error {
	o.oc = oc
	var err error
	if o.ks, err = meshflow.NewKeyedState(ctx, oc, o.opts); err != nil {
		return err
	}
	return o.setup(o.ks)
}

func (o *scriptOp) Close(context.Context) error { return nil }

func (o *scriptOp) Process(ctx context.Context, in arrow.RecordBatch, _ meshflow.Emitter) error {
	cols := o.cols
	if len(cols) == 0 {
		cols = []string{"k"}
	}
	if err := o.keys.Compute(o.ks, in, cols...); err != nil {
		return err
	}
	n := o.n
	o.n++
	return o.step(ctx, o.oc, o.ks, &o.keys, in, n)
}

func (o *scriptOp) OnTimer(ctx context.Context, t meshflow.Timer, out meshflow.Emitter) error {
	if ok, err := o.ks.HandleTimer(ctx, t, out); ok || err != nil {
		return err
	}
	return fmt.Errorf("unexpected timer %+v", t)
}

// runScript runs scriptOp over recs at parallelism 1 with 4 key groups,
// checkpoints off, and returns the step errors.
func runScript(t *testing.T, mem memory.Allocator, src meshflow.Source, op func() meshflow.Operator, opts ...meshflow.Option) {
	t.Helper()
	p := meshflow.NewPipeline("keyed-script")
	p.SetMaxParallelism(4)
	p.Source("numbers", src, opts...).KeyBy("k").
		To("script", meshflow.ToOperator(op))
	if err := meshflow.Run(testutil.Context(t, time.Minute), p, meshflow.WithAllocator(mem),
		meshflow.WithState(testStore(t)), meshflow.WithLogger(testutil.TestLogger(t)), meshflow.WithoutCheckpoints()); err != nil {
		t.Fatal(err)
	}
}

// stateEntries counts the store entries of each state of a keyed store
// (keys: group | uvarint(len(name)) | name | ...).
func stateEntries(ctx context.Context, oc meshflow.OperatorContext) (map[string]int, error) {
	out := map[string]int{}
	err := oc.KeyedState().Scan(ctx, nil, func(k, _ []byte) error {
		l, w := binary.Uvarint(k[2:])
		out[string(k[2+w:2+w+int(l)])]++
		return nil
	})
	return out, err
}

// TestKeyedTTL: values, map entries and lists with a TTL read as absent
// once their TTL passed since their last write (processing time, the
// test's clock), a write renews it, states without a TTL keep their
// entries, and FlushState removes the expired entries from the store.
func TestKeyedTTL(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	// Every batch has keys 0..9.
	b := array.NewRecordBuilder(mem, kvSchema)
	defer b.Release()
	var batches []arrow.RecordBatch
	for range 4 {
		for k := range int64(10) {
			b.Field(0).(*array.Int64Builder).Append(k)
			b.Field(1).(*array.Int64Builder).Append(k)
		}
		batches = append(batches, b.NewRecordBatch())
	}
	defer release(batches)

	var now atomic.Int64
	now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro())
	advance := func(d time.Duration) { now.Add(d.Microseconds()) }
	var (
		vals  *meshflow.ValueState[string]
		maps  *meshflow.MapState[string, int64]
		lists *meshflow.ListState[int64]
		keep  *meshflow.ValueState[int64]
	)
	var errs []error
	check := func(cond bool, format string, args ...any) {
		if !cond {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	op := &scriptOp{
		opts: meshflow.KeyedOptions{Now: func() time.Time { return time.UnixMicro(now.Load()) }},
		setup: func(ks *meshflow.KeyedState) (err error) {
			ttl := time.Hour
			if vals, err = meshflow.NewValueState[string](ks, "vals", meshflow.StateOptions[string]{TTL: ttl}); err != nil {
				return err
			}
			if maps, err = meshflow.NewMapState[string, int64](ks, "maps", nil, meshflow.StateOptions[int64]{TTL: ttl}); err != nil {
				return err
			}
			if lists, err = meshflow.NewListState[int64](ks, "lists", meshflow.StateOptions[int64]{TTL: ttl}); err != nil {
				return err
			}
			keep, err = meshflow.NewValueState[int64](ks, "keep", meshflow.StateOptions[int64]{})
			return err
		},
		step: func(ctx context.Context, oc meshflow.OperatorContext, ks *meshflow.KeyedState, keys *meshflow.KeyRows, in arrow.RecordBatch, n int) error {
			for i := range keys.Len() {
				key := keys.Key(i)
				switch n {
				case 0:
					if err := errors.Join(vals.Set(ctx, key, "v"), maps.Put(ctx, key, "a", int64(i)),
						lists.Add(ctx, key, int64(i)), keep.Set(ctx, key, int64(i))); err != nil {
						return err
					}
				case 1:
					if i == 0 {
						advance(30 * time.Minute)
					}
					if i < 5 { // renewed: expires at 1h30
						if err := vals.Set(ctx, key, "renewed"); err != nil {
							return err
						}
					}
				case 2:
					if i == 0 {
						advance(31 * time.Minute) // 1h01
					}
					v, ok, err := vals.Get(ctx, key)
					if err != nil {
						return err
					}
					if i < 5 {
						check(ok && v == "renewed", "row %d: renewed value = %q, %v", i, v, ok)
					} else {
						check(!ok, "row %d: expired value = %q, %v", i, v, ok)
					}
					_, ok, err = maps.Get(ctx, key, "a")
					check(err == nil && !ok, "row %d: expired map entry visible (%v)", i, err)
					n := 0
					err = maps.Range(ctx, key, func(string, int64) error { n++; return nil })
					check(err == nil && n == 0, "row %d: Range visits %d expired entries (%v)", i, n, err)
					l, err := lists.Get(ctx, key)
					check(err == nil && l == nil, "row %d: expired list %v (%v)", i, l, err)
					k, ok, err := keep.Get(ctx, key)
					check(err == nil && ok && k == int64(i), "row %d: value without TTL = %d, %v (%v)", i, k, ok, err)
				}
			}
			switch n {
			case 2:
				return ks.FlushState(ctx)
			case 3:
				got, err := stateEntries(ctx, oc)
				if err != nil {
					return err
				}
				want := map[string]int{"vals": 5, "keep": 10}
				check(fmt.Sprint(got) == fmt.Sprint(want), "store entries per state after cleanup = %v, want %v", got, want)
			}
			return nil
		},
	}
	runScript(t, mem, meshflow.FromBatches(batches...), func() meshflow.Operator { return op })
	if op.n != 4 {
		t.Fatalf("%d batches processed, want 4", op.n)
	}
	for _, err := range errs {
		t.Error(err)
	}
}

// TestKeyedTTLCleanupEvictsCache: the TTL cleanup of FlushState removes
// the expired entries it deletes from the store from the cache too, for
// value, list and map states.
func TestKeyedTTLCleanupEvictsCache(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	b := array.NewRecordBuilder(mem, kvSchema)
	defer b.Release()
	for k := range int64(10) {
		b.Field(0).(*array.Int64Builder).Append(k)
		b.Field(1).(*array.Int64Builder).Append(k)
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	var now atomic.Int64
	now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro())
	var (
		vals  *meshflow.ValueState[string]
		maps  *meshflow.MapState[string, int64]
		lists *meshflow.ListState[int64]
		errs  []error
	)
	op := &scriptOp{
		opts: meshflow.KeyedOptions{Now: func() time.Time { return time.UnixMicro(now.Load()) }},
		setup: func(ks *meshflow.KeyedState) (err error) {
			o := meshflow.StateOptions[int64]{TTL: time.Hour}
			if vals, err = meshflow.NewValueState[string](ks, "vals", meshflow.StateOptions[string]{TTL: time.Hour}); err != nil {
				return err
			}
			if maps, err = meshflow.NewMapState[string, int64](ks, "maps", nil, o); err != nil {
				return err
			}
			lists, err = meshflow.NewListState[int64](ks, "lists", o)
			return err
		},
		step: func(ctx context.Context, _ meshflow.OperatorContext, ks *meshflow.KeyedState, keys *meshflow.KeyRows, _ arrow.RecordBatch, _ int) error {
			for i := range keys.Len() {
				key := keys.Key(i)
				if err := errors.Join(vals.Set(ctx, key, "v"), maps.Put(ctx, key, "a", int64(i)), lists.Add(ctx, key, int64(i))); err != nil {
					return err
				}
			}
			if err := ks.FlushState(ctx); err != nil { // written: the entries are clean
				return err
			}
			before := ks.CachedBytes()
			now.Add((2 * time.Hour).Microseconds())
			if err := ks.FlushState(ctx); err != nil { // expired: cleaned up
				return err
			}
			if before == 0 || ks.CachedBytes() != 0 {
				errs = append(errs, fmt.Errorf("cached bytes %d before the cleanup, %d after, want > 0 and 0", before, ks.CachedBytes()))
			}
			return nil
		},
	}
	runScript(t, mem, meshflow.FromBatches(rec), func() meshflow.Operator { return op })
	for _, err := range errs {
		t.Error(err)
	}
}

var keyedTSSchema = arrow.NewSchema([]arrow.Field{
	{Name: "k", Type: arrow.PrimitiveTypes.Int64},
	{Name: "ts", Type: &arrow.TimestampType{Unit: arrow.Microsecond}},
}, nil)

// TestKeyedTimers: event-time timers registered per key fire once each,
// with their key and tag, in time order, when the watermark passes them
// (the last at the end of the input); a processing-time timer fires when
// the clock reaches it. Timers live in keyed state, in their key's group.
func TestKeyedTimers(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rng := rand.New(rand.NewPCG(9, 10))
	b := array.NewRecordBuilder(mem, keyedTSSchema)
	defer b.Release()
	var recs []arrow.RecordBatch
	type fired struct {
		k   int64
		at  int64
		tag string
	}
	want := map[fired]bool{}
	ts := int64(1_000_000)
	for range 20 {
		for range 10 {
			k := int64(rng.IntN(8))
			ts += int64(rng.IntN(100))
			b.Field(0).(*array.Int64Builder).Append(k)
			b.Field(1).(*array.TimestampBuilder).Append(arrow.Timestamp(ts))
			want[fired{k, ts + 50, fmt.Sprint("e", k)}] = true
		}
		recs = append(recs, b.NewRecordBatch())
	}
	defer release(recs)

	var (
		mu        sync.Mutex
		got       []fired
		procFired atomic.Bool
		stored    atomic.Int64
	)
	g := newGate()
	op := &scriptOp{
		opts: meshflow.KeyedOptions{OnTimer: func(_ context.Context, key meshflow.StateKey, tm meshflow.Timer, _ meshflow.Emitter) error {
			k := int64(binary.LittleEndian.Uint64(key.Bytes()[1:])) // valid byte, then the int64
			if tm.Kind == meshflow.ProcessingTimeTimer {
				if tm.Tag != "p" || k != 3 {
					return fmt.Errorf("processing timer %+v of key %d", tm, k)
				}
				procFired.Store(true)
				return nil
			}
			mu.Lock()
			defer mu.Unlock()
			got = append(got, fired{k, tm.Time, tm.Tag})
			return nil
		}},
		setup: func(*meshflow.KeyedState) error { return nil },
		step: func(ctx context.Context, oc meshflow.OperatorContext, ks *meshflow.KeyedState, keys *meshflow.KeyRows, in arrow.RecordBatch, n int) error {
			kc, tc := in.Column(0).(*array.Int64), in.Column(1).(*array.Timestamp)
			for i := range keys.Len() {
				at := time.UnixMicro(int64(tc.Value(i)) + 50)
				if err := ks.RegisterEventTimer(ctx, keys.Key(i), at, fmt.Sprint("e", kc.Value(i))); err != nil {
					return err
				}
				if n == 0 && kc.Value(i) == 3 && !procFired.Load() {
					if err := ks.RegisterProcessingTimer(ctx, keys.Key(i), time.Now().Add(20*time.Millisecond), "p"); err != nil {
						return err
					}
				}
			}
			// Timers registered or fired reach the store at barriers
			// only: until then it holds what the last flush wrote.
			m, err := stateEntries(ctx, oc)
			if err != nil {
				return err
			}
			if got := int64(m["\x00timers"]); got != stored.Load() {
				return fmt.Errorf("%d timers stored before the flush, %d after the last", got, stored.Load())
			}
			// Flush as a barrier would.
			if err := ks.FlushState(ctx); err != nil {
				return err
			}
			m, err = stateEntries(ctx, oc)
			stored.Store(int64(m["\x00timers"]))
			return err
		},
	}
	// Key 3 in the first batch, for the processing timer.
	if kc := recs[0].Column(0).(*array.Int64); !slices.Contains(kc.Int64Values(), 3) {
		t.Fatal("no key 3 in the first batch")
	}
	g.release(1)
	p := meshflow.NewPipeline("keyed-timers")
	p.SetMaxParallelism(4)
	p.Source("numbers", gated(keyedTSSchema, recs, g), meshflow.EventTime("ts", 0)).KeyBy("k").
		To("script", meshflow.ToOperator(func() meshflow.Operator { return op }))
	wait := runAsync(t, testutil.Context(t, time.Minute), p, meshflow.WithAllocator(mem),
		meshflow.WithState(testStore(t)), meshflow.WithLogger(testutil.TestLogger(t)), meshflow.WithoutCheckpoints())
	testutil.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
		if !procFired.Load() {
			return errors.New("processing timer not fired")
		}
		return nil
	})
	g.release(len(recs))
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if stored.Load() == 0 {
		t.Error("no timers in keyed state")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != len(want) {
		t.Fatalf("%d event timers fired, want %d", len(got), len(want))
	}
	for i, f := range got {
		if !want[f] {
			t.Fatalf("fired %+v, not registered", f)
		}
		if i > 0 && f.at < got[i-1].at {
			t.Fatalf("timer %+v fired after %+v", f, got[i-1])
		}
		delete(want, f)
	}
}

// benchOp runs n read-modify-write updates over the keys of its one input
// batch, round robin, on a ValueState (state) or on a Go map of the
// int64 key values (the reference), and records the time they took.
type benchOp struct {
	n     int
	state bool
	took  *atomic.Int64

	ks   *meshflow.KeyedState
	vs   *meshflow.ValueState[int64]
	keys meshflow.KeyRows
}

func (o *benchOp) Open(ctx context.Context, oc meshflow.OperatorContext) (err error) {
	if o.ks, err = meshflow.NewKeyedState(ctx, oc, meshflow.KeyedOptions{}); err != nil {
		return err
	}
	o.vs, err = meshflow.NewValueState[int64](o.ks, "v", meshflow.StateOptions[int64]{})
	return err
}

func (o *benchOp) Close(context.Context) error { return nil }

func (o *benchOp) Process(ctx context.Context, in arrow.RecordBatch, _ meshflow.Emitter) error {
	if err := o.keys.Compute(o.ks, in, "k"); err != nil {
		return err
	}
	vals := in.Column(0).(*array.Int64).Int64Values()
	rows := len(vals)
	start := time.Now()
	if o.state {
		for i := range o.n {
			key := o.keys.Key(i % rows)
			v, _, err := o.vs.Get(ctx, key)
			if err != nil {
				return err
			}
			if err := o.vs.Set(ctx, key, v+1); err != nil {
				return err
			}
		}
	} else {
		m := map[int64]int64{}
		for i := range o.n {
			m[vals[i%rows]]++
		}
		if len(m) != min(rows, o.n) {
			return fmt.Errorf("%d keys", len(m))
		}
	}
	o.took.Store(int64(time.Since(start)))
	return nil
}

// BenchmarkKeyedValueState compares read-modify-write updates of a
// ValueState[int64] (cache hits: the state fits in memory) with the same
// updates of a Go map[int64]int64, over 10 000 keys. ns/update is the
// time of the update loop alone, inside the operator.
//
//	go test -run '^$' -bench BenchmarkKeyedValueState -benchtime 2000000x .
func BenchmarkKeyedValueState(b *testing.B) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(b, 0)
	bld := array.NewRecordBuilder(mem, kvSchema)
	defer bld.Release()
	const keys = 10_000
	for k := range int64(keys) {
		bld.Field(0).(*array.Int64Builder).Append(k)
		bld.Field(1).(*array.Int64Builder).Append(k)
	}
	rec := bld.NewRecordBatch()
	defer rec.Release()
	perUpdate := map[bool]float64{}
	for _, state := range []bool{false, true} {
		name := "gomap"
		if state {
			name = "valuestate"
		}
		b.Run(name, func(b *testing.B) {
			var took atomic.Int64
			p := meshflow.NewPipeline("keyed-bench")
			p.Source("numbers", meshflow.FromBatches(rec)).KeyBy("k").
				To("op", meshflow.ToOperator(func() meshflow.Operator { return &benchOp{n: b.N, state: state, took: &took} }))
			st, err := badgerstore.Open(context.Background(), badgerstore.Options{InMemory: true})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			if err := meshflow.Run(context.Background(), p, meshflow.WithAllocator(mem), meshflow.WithState(st),
				meshflow.WithoutCheckpoints()); err != nil {
				b.Fatal(err)
			}
			ns := float64(took.Load()) / float64(b.N)
			perUpdate[state] = ns
			b.ReportMetric(ns, "ns/update")
		})
	}
	if perUpdate[false] > 0 && perUpdate[true] > 0 {
		b.Logf("ValueState / Go map: %.1f× (%.1f vs %.1f ns/update)", perUpdate[true]/perUpdate[false], perUpdate[true], perUpdate[false])
	}
}

// TestKeyRows: KeyRows gives every row of a batch keyed by several columns
// (with nulls, -0 and NaN) a key in a key group of the instance the keyed
// edge routed it to, the group of the edge's hash; equal key values get
// equal key bytes and different ones different bytes. Computed on a column
// the input is not keyed by, it fails with ErrKeyGroupNotOwned.
func TestKeyRows(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "k", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "s", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "f", Type: arrow.PrimitiveTypes.Float64},
		{Name: "v", Type: arrow.PrimitiveTypes.Int64},
	}, nil)
	rng := rand.New(rand.NewPCG(11, 12))
	b := array.NewRecordBuilder(mem, schema)
	defer b.Release()
	floats := []float64{0, math.Copysign(0, -1), math.NaN(), 1.5, -2}
	strs := []string{"", "a", "ab", "b"}
	var recs []arrow.RecordBatch
	for range 10 {
		for range 50 {
			if k := rng.IntN(6); k == 0 {
				b.Field(0).AppendNull()
			} else {
				b.Field(0).(*array.Int64Builder).Append(int64(k))
			}
			if s := rng.IntN(5); s == 4 {
				b.Field(1).AppendNull()
			} else {
				b.Field(1).(*array.StringBuilder).Append(strs[s])
			}
			b.Field(2).(*array.Float64Builder).Append(floats[rng.IntN(len(floats))])
			b.Field(3).(*array.Int64Builder).Append(rng.Int64N(1000))
		}
		recs = append(recs, b.NewRecordBatch())
	}
	defer release(recs)
	tuple := func(in arrow.RecordBatch, i int) string {
		k, s, f := in.Column(0).(*array.Int64), in.Column(1).(*array.String), in.Column(2).(*array.Float64).Value(i)
		out := "null"
		if k.IsValid(i) {
			out = fmt.Sprint(k.Value(i))
		}
		if s.IsValid(i) {
			out += fmt.Sprintf("|%q", s.Value(i))
		} else {
			out += "|null"
		}
		if f == 0 {
			f = 0
		}
		return out + fmt.Sprintf("|%v", f)
	}
	var (
		mu     sync.Mutex
		byTup  = map[string]string{}
		byKey  = map[string]string{}
		rows   atomic.Int64
		errs   []error
		wrongs atomic.Int64
	)
	op := func() meshflow.Operator {
		return &scriptOp{
			cols:  []string{"k", "s", "f"},
			setup: func(*meshflow.KeyedState) error { return nil },
			step: func(ctx context.Context, oc meshflow.OperatorContext, ks *meshflow.KeyedState, keys *meshflow.KeyRows, in arrow.RecordBatch, n int) error {
				hashes := make([]uint64, in.NumRows())
				if err := kernels.HashColumns([]arrow.Array{in.Column(0), in.Column(1), in.Column(2)}, hashes); err != nil {
					return err
				}
				lo, hi := oc.KeyGroups()
				mu.Lock()
				defer mu.Unlock()
				for i := range keys.Len() {
					key := keys.Key(i)
					g := key.Group()
					if g < lo || g >= hi || g != kernels.KeyGroup(hashes[i], oc.MaxParallelism()) {
						errs = append(errs, fmt.Errorf("row %d: group %d, hash group %d, instance owns [%d, %d)", i, g, kernels.KeyGroup(hashes[i], oc.MaxParallelism()), lo, hi))
					}
					tup := tuple(in, i)
					if old, ok := byTup[tup]; ok && old != string(key) {
						errs = append(errs, fmt.Errorf("%s: keys %x and %x", tup, old, []byte(key)))
					}
					if old, ok := byKey[string(key)]; ok && old != tup {
						errs = append(errs, fmt.Errorf("key %x for %s and %s", []byte(key), old, tup))
					}
					byTup[tup], byKey[string(key)] = string(key), tup
				}
				rows.Add(int64(keys.Len()))
				// Not the key the input is partitioned by.
				var other meshflow.KeyRows
				if err := other.Compute(ks, in, "v"); errors.Is(err, meshflow.ErrKeyGroupNotOwned) {
					wrongs.Add(1)
				} else if err != nil {
					return err
				}
				return nil
			},
		}
	}
	p := meshflow.NewPipeline("keyed-rows")
	p.SetMaxParallelism(16)
	p.Source("rows", meshflow.FromBatches(recs...)).KeyBy("k", "s", "f").
		To("script", meshflow.ToOperator(op), meshflow.Parallelism(3))
	if err := meshflow.Run(testutil.Context(t, time.Minute), p, meshflow.WithAllocator(mem),
		meshflow.WithState(testStore(t)), meshflow.WithLogger(testutil.TestLogger(t)), meshflow.WithoutCheckpoints()); err != nil {
		t.Fatal(err)
	}
	for _, err := range errs {
		t.Error(err)
	}
	if rows.Load() != 500 {
		t.Fatalf("%d rows, want 500", rows.Load())
	}
	if len(byTup) < 50 {
		t.Fatalf("only %d distinct keys", len(byTup))
	}
	if wrongs.Load() == 0 {
		t.Error("keys of a column the input is not keyed by never failed")
	}
}

// TestKeyedMapAndListState runs random map and list operations, with a
// memory bound that makes the cache spill all the time, against a
// brute-force reference of Go maps and slices: every Get, Range (in key
// order) and list read agrees. The seed is printed; MESHFLOW_SEED replays.
func TestKeyedMapAndListState(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 77))
	recs := kvBatches(mem, rng, 30, 40, 12)
	defer release(recs)
	refMap := map[int64]map[string]int64{}
	refList := map[int64][]int64{}
	var (
		ms     *meshflow.MapState[string, int64]
		ls     *meshflow.ListState[int64]
		errs   []error
		spills int
	)
	check := func(cond bool, format string, args ...any) {
		if !cond && len(errs) < 20 {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	op := &scriptOp{
		opts: meshflow.KeyedOptions{MemoryBound: 1 << 10},
		setup: func(ks *meshflow.KeyedState) (err error) {
			if ms, err = meshflow.NewMapState[string, int64](ks, "m", nil, meshflow.StateOptions[int64]{}); err != nil {
				return err
			}
			ls, err = meshflow.NewListState[int64](ks, "l", meshflow.StateOptions[int64]{})
			return err
		},
		step: func(ctx context.Context, _ meshflow.OperatorContext, ks *meshflow.KeyedState, keys *meshflow.KeyRows, in arrow.RecordBatch, n int) error {
			kc, vc := in.Column(0).(*array.Int64), in.Column(1).(*array.Int64)
			for i := range keys.Len() {
				key, k, v := keys.Key(i), kc.Value(i), vc.Value(i)
				mk := fmt.Sprintf("m%02d", v%17)
				if refMap[k] == nil {
					refMap[k] = map[string]int64{}
				}
				switch v % 5 {
				case 0, 1:
					if err := ms.Put(ctx, key, mk, v); err != nil {
						return err
					}
					refMap[k][mk] = v
					if err := ls.Add(ctx, key, v); err != nil {
						return err
					}
					refList[k] = append(refList[k], v)
				case 2:
					if err := ms.Delete(ctx, key, mk); err != nil {
						return err
					}
					delete(refMap[k], mk)
				case 3:
					got, ok, err := ms.Get(ctx, key, mk)
					if err != nil {
						return err
					}
					want, wok := refMap[k][mk]
					check(ok == wok && got == want, "key %d: %s = %d, %v; want %d, %v", k, mk, got, ok, want, wok)
					l, err := ls.Get(ctx, key)
					if err != nil {
						return err
					}
					check(slices.Equal(l, refList[k]), "key %d: list %v, want %v", k, l, refList[k])
				case 4:
					if v%3 == 0 {
						if err := ls.Clear(ctx, key); err != nil {
							return err
						}
						refList[k] = nil
					} else {
						var got []string
						err := ms.Range(ctx, key, func(mk string, mv int64) error {
							got = append(got, fmt.Sprint(mk, "=", mv))
							return nil
						})
						if err != nil {
							return err
						}
						var want []string
						for _, mk := range slices.Sorted(maps.Keys(refMap[k])) {
							want = append(want, fmt.Sprint(mk, "=", refMap[k][mk]))
						}
						check(slices.Equal(got, want), "key %d: Range %v, want %v", k, got, want)
					}
				}
			}
			spills = ks.Spills()
			return nil
		},
	}
	runScript(t, mem, meshflow.FromBatches(recs...), func() meshflow.Operator { return op })
	for _, err := range errs {
		t.Error(err)
	}
	if op.n != len(recs) {
		t.Fatalf("%d batches, want %d", op.n, len(recs))
	}
	if spills == 0 {
		t.Error("never spilled")
	}
	t.Logf("%d spills", spills)
}

// TestKeyedTimersSurviveRestart: event-time timers registered before a
// stop (final checkpoint) are in the checkpointed key groups and fire once
// each in the next run, with their keys, when its input ends.
func TestKeyedTimersSurviveRestart(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	b := array.NewRecordBuilder(mem, keyedTSSchema)
	defer b.Release()
	var recs []arrow.RecordBatch
	for i := range 10 {
		for k := range int64(5) {
			b.Field(0).(*array.Int64Builder).Append(k)
			b.Field(1).(*array.TimestampBuilder).Append(arrow.Timestamp(int64(i*10) + k))
		}
		recs = append(recs, b.NewRecordBatch())
	}
	defer release(recs)
	const far = int64(1e12) // beyond every watermark until the input ends
	type fired struct {
		k, at int64
		run   int
	}
	var (
		mu        sync.Mutex
		got       []fired
		run       atomic.Int64
		processed atomic.Int64
	)
	g0 := newGate()
	build := func() *meshflow.Pipeline {
		op := func() meshflow.Operator {
			return &scriptOp{
				opts: meshflow.KeyedOptions{OnTimer: func(_ context.Context, key meshflow.StateKey, tm meshflow.Timer, _ meshflow.Emitter) error {
					mu.Lock()
					defer mu.Unlock()
					got = append(got, fired{int64(binary.LittleEndian.Uint64(key.Bytes()[1:])), tm.Time, int(run.Load())})
					return nil
				}},
				setup: func(*meshflow.KeyedState) error { return nil },
				step: func(ctx context.Context, _ meshflow.OperatorContext, ks *meshflow.KeyedState, keys *meshflow.KeyRows, in arrow.RecordBatch, _ int) error {
					tc := in.Column(1).(*array.Timestamp)
					for i := range keys.Len() {
						if err := ks.RegisterEventTimer(ctx, keys.Key(i), time.UnixMicro(far+int64(tc.Value(i))), "t"); err != nil {
							return err
						}
					}
					processed.Add(int64(keys.Len()))
					return nil
				},
			}
		}
		p := meshflow.NewPipeline("keyed-timers-restart")
		p.SetMaxParallelism(8)
		p.Source("numbers", gated(keyedTSSchema, recs, g0), meshflow.EventTime("ts", 0)).KeyBy("k").
			To("script", meshflow.ToOperator(op), meshflow.Parallelism(2))
		return p
	}
	st := testStore(t)
	g0.release(4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run.Store(1)
	wait := runAsync(t, ctx, build(), ckptOptions(t, nc, mem, st)...)
	testutil.CheckFor(t, 30*time.Second, time.Millisecond, atLeast(&processed, 20, "rows processed"))
	cancel()
	if err := wait(); err != context.Canceled {
		t.Fatalf("Run returned %v, want context.Canceled", err)
	}
	mu.Lock()
	if len(got) != 0 {
		t.Fatalf("timers fired in the first run: %v", got)
	}
	mu.Unlock()
	run.Store(2)
	g0.release(len(recs))
	if err := meshflow.Run(testutil.Context(t, time.Minute), build(), ckptOptions(t, nc, mem, st)...); err != nil {
		t.Fatalf("restart: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := map[fired]bool{}
	for _, r := range recs {
		kc, tc := r.Column(0).(*array.Int64), r.Column(1).(*array.Timestamp)
		for i := range kc.Len() {
			want[fired{kc.Value(i), far + int64(tc.Value(i)), 2}] = true
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d timers fired, want %d", len(got), len(want))
	}
	for _, f := range got {
		if !want[f] {
			t.Fatalf("fired %+v: not registered, or twice", f)
		}
		delete(want, f)
	}
}

// TestKeyedFailureWithoutCheckpoints: with checkpoints off, an instance
// with keyed state that fails is not restarted alone (its cache would be
// lost silently): the job fails.
func TestKeyedFailureWithoutCheckpoints(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	recs := kvBatches(mem, rand.New(rand.NewPCG(13, 14)), 5, 10, 3)
	defer release(recs)
	var tries attempts
	var opens atomic.Int64
	p := meshflow.NewPipeline("keyed-nockpt")
	p.Source("numbers", meshflow.FromBatches(recs...)).KeyBy("k").
		Process("sum", func() meshflow.Operator {
			opens.Add(1)
			return &keyedSumOp{tries: &tries, fail: func(first, attempt int64) bool { return first == 20 && attempt == 1 }}
		}, meshflow.OutputSchema(sumSchema)).
		To("sink", meshflow.Print(io.Discard, meshflow.JSONLines))
	err := meshflow.Run(testutil.Context(t, time.Minute), p, meshflow.WithAllocator(mem),
		meshflow.WithState(testStore(t)), meshflow.WithLogger(testutil.TestLogger(t)), meshflow.WithoutCheckpoints(), fastRestarts(1000))
	var oe *actors.OperatorError
	if !errors.As(err, &oe) || oe.Operator != "sum" {
		t.Fatalf("Run = %v, want the operator's failure", err)
	}
	if n := opens.Load(); n != 1 {
		t.Fatalf("the operator was built %d times, want 1 (no restart)", n)
	}
}

// TestKeyedSavepointRestore: a job restored from a savepoint goes on from
// the keyed state of the savepoint, not from the state reached since.
func TestKeyedSavepointRestore(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	const size = 20
	recs := kvBatches(mem, rand.New(rand.NewPCG(15, 16)), 30, size, 40)
	defer release(recs)
	want := runningSums(recs)
	st := testStore(t)
	g := newGate()
	const job = "keyed-savepoint"
	build := func(out *committed, processed *atomic.Int64) *meshflow.Pipeline {
		p := meshflow.NewPipeline(job)
		p.Source("numbers", gated(kvSchema, recs, g)).
			KeyBy("k").Process("sum", func() meshflow.Operator { return &keyedSumOp{bound: 2 << 10} }, meshflow.Parallelism(2), meshflow.OutputSchema(sumSchema)).
			To("sink", meshflow.ToOperator(newTxSink(out, processed)))
		return p
	}
	opts := func(extra ...meshflow.RunOption) []meshflow.RunOption {
		return ckptOptions(t, nc, mem, st, append([]meshflow.RunOption{meshflow.WithCheckpoints(meshflow.CheckpointConfig{
			Interval: time.Second,
		})}, extra...)...)
	}
	out := newCommitted()
	var processed atomic.Int64
	g.release(10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := runAsync(t, ctx, build(out, &processed), opts()...)
	testutil.CheckFor(t, 30*time.Second, 5*time.Millisecond, atLeast(&processed, 10*size, "rows at the sink"))
	sp, err := requestCheckpoint(testutil.Context(t, time.Minute), nc, job, true)
	if err != nil {
		t.Fatal(err)
	}
	g.release(20)
	testutil.CheckFor(t, 30*time.Second, 5*time.Millisecond, atLeast(&processed, 20*size, "rows at the sink"))
	cancel()
	if err := wait(); err != context.Canceled {
		t.Fatalf("stop: %v", err)
	}
	// From the savepoint: batches 10-29 again, on the state of 0-9.
	g.release(len(recs))
	out2 := newCommitted()
	if err := meshflow.Run(testutil.Context(t, time.Minute), build(out2, nil), opts(meshflow.WithRestore(job, sp.Id))...); err != nil {
		t.Fatalf("run from savepoint %d: %v", sp.Id, err)
	}
	out2.checkWith(t, want, checkOpts{below: 10 * size})
}
