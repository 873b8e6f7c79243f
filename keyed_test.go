package meshflow_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/actors"
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
