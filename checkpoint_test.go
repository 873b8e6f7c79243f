package meshflow_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/cluster/checkpoint"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
	"github.com/meshflow/meshflow/messages"
	"github.com/meshflow/meshflow/messages/pb"
	"github.com/meshflow/meshflow/persistence"
	"github.com/meshflow/meshflow/persistence/badgerstore"
)

// Tests of the runtime's checkpoints and recovery: jobs run through the
// public API on the embedded NATS server and a Badger store, with a
// transactional test sink that makes only what a complete checkpoint
// covers visible, as an exactly-once sink does.

var (
	kvSchema = arrow.NewSchema([]arrow.Field{
		{Name: "k", Type: arrow.PrimitiveTypes.Int64},
		{Name: "v", Type: arrow.PrimitiveTypes.Int64},
	}, nil)
	sumSchema = arrow.NewSchema([]arrow.Field{
		{Name: "k", Type: arrow.PrimitiveTypes.Int64},
		{Name: "v", Type: arrow.PrimitiveTypes.Int64},
		{Name: "sum", Type: arrow.PrimitiveTypes.Int64},
	}, nil)
)

// row is a result row: key, value and running sum (0 where absent).
type row struct{ k, v, s int64 }

// kvBatches builds count batches of size rows: v numbers the rows from
// 0, k is drawn from [0, keys).
func kvBatches(mem memory.Allocator, rng *rand.Rand, count, size, keys int) []arrow.RecordBatch {
	b := array.NewRecordBuilder(mem, kvSchema)
	defer b.Release()
	out := make([]arrow.RecordBatch, count)
	for i := range out {
		for j := 0; j < size; j++ {
			b.Field(0).(*array.Int64Builder).Append(int64(rng.IntN(keys)))
			b.Field(1).(*array.Int64Builder).Append(int64(i*size + j))
		}
		out[i] = b.NewRecordBatch()
	}
	return out
}

// runningSums is the brute-force reference of sumOp over recs in order.
func runningSums(recs []arrow.RecordBatch) map[int64]row {
	sums := map[int64]int64{}
	want := map[int64]row{}
	for _, r := range recs {
		ks, vs := r.Column(0).(*array.Int64), r.Column(1).(*array.Int64)
		for i := 0; i < ks.Len(); i++ {
			k, v := ks.Value(i), vs.Value(i)
			sums[k] += v
			want[v] = row{k, v, sums[k]}
		}
	}
	return want
}

// testStore opens a Badger store in a temporary directory.
func testStore(t *testing.T) persistence.Store {
	t.Helper()
	st, err := badgerstore.Open(context.Background(), badgerstore.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// ckptOptions are the options of a checkpointed test run.
func ckptOptions(t *testing.T, nc *nats.Conn, mem memory.Allocator, st persistence.Store, extra ...meshflow.RunOption) []meshflow.RunOption {
	opts := []meshflow.RunOption{
		meshflow.WithNATS(nc), meshflow.WithAllocator(mem), meshflow.WithState(st),
		meshflow.WithLogger(testutil.TestLogger(t)), fastRestarts(1000),
		meshflow.WithCheckpoints(meshflow.CheckpointConfig{
			Interval: 100 * time.Millisecond,
			Recovery: meshflow.RecoveryPolicy{MaxRecoveries: 100, Window: time.Minute, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond},
		}),
	}
	return append(opts, extra...)
}

func checkpointStore(t *testing.T, nc *nats.Conn) *checkpoint.Store {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := checkpoint.OpenStore(context.Background(), js)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// committed is what the transactional sinks made visible: rows per
// (instance, checkpoint) epoch. Committing an epoch again (after a
// recovery from the checkpoint that staged it) must bring the same rows.
type committed struct {
	mu       sync.Mutex
	epochs   map[string][]row
	mismatch []string
}

func newCommitted() *committed { return &committed{epochs: map[string][]row{}} }

func (c *committed) commit(inst int, id uint64, rows []row) {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := fmt.Sprintf("%d/%d", inst, id)
	if old, ok := c.epochs[key]; ok && !slices.Equal(old, rows) {
		c.mismatch = append(c.mismatch, key)
	}
	c.epochs[key] = rows
}

func (c *committed) rows() []row {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []row
	for _, rs := range c.epochs {
		out = append(out, rs...)
	}
	return out
}

// check compares the committed rows with want (by v): no row missing, none
// twice, none unexpected, every value exact.
func (c *committed) check(t *testing.T, want map[int64]row) {
	t.Helper()
	c.checkWith(t, want, checkOpts{})
}

type checkOpts struct {
	// below: committed rows with a lower v must be right but may be
	// missing or repeated (a restored sink re-commits what it staged).
	below int64
	// anySum: the sum column is not compared.
	anySum bool
}

func (c *committed) checkWith(t *testing.T, want map[int64]row, o checkOpts) {
	t.Helper()
	c.mu.Lock()
	if len(c.mismatch) > 0 {
		t.Errorf("epochs committed twice with other rows: %v", c.mismatch)
	}
	c.mu.Unlock()
	got := map[int64]int{}
	bad := 0
	for _, r := range c.rows() {
		if r.v >= o.below {
			got[r.v]++
		}
		w, ok := want[r.v]
		if o.anySum {
			w.s = r.s
		}
		if !ok || w != r {
			if bad++; bad <= 5 {
				t.Errorf("committed row %+v, want %+v (expected: %v)", r, w, ok)
			}
		}
	}
	missing, dup := 0, 0
	for v := range want {
		if v < o.below {
			continue
		}
		switch n := got[v]; {
		case n == 0:
			if missing++; missing <= 5 {
				t.Errorf("row v=%d never committed", v)
			}
		case n > 1:
			if dup++; dup <= 5 {
				t.Errorf("row v=%d committed %d times", v, n)
			}
		}
	}
	if bad+missing+dup > 0 {
		t.Fatalf("%d wrong, %d missing, %d duplicated rows of %d", bad, missing, dup, len(want))
	}
}

// txSink is a transactional sink: rows of an epoch are kept in memory,
// staged in its Store by PrepareCheckpoint and made visible (committed)
// only by CheckpointComplete, or at restore for what the checkpoint
// restored from staged.
type txSink struct {
	out       *committed
	processed *atomic.Int64
	// commitErr, when set, fails the next CheckpointComplete and is
	// cleared.
	commitErr *atomic.Bool

	st   persistence.Store
	inst int
	buf  []row
}

var (
	_ actors.CheckpointHandler  = (*txSink)(nil)
	_ actors.CheckpointListener = (*txSink)(nil)
)

func newTxSink(out *committed, processed *atomic.Int64) func() meshflow.Operator {
	return func() meshflow.Operator { return &txSink{out: out, processed: processed} }
}

func stageKey(id uint64) []byte { return fmt.Appendf(nil, "stage/%020d", id) }

func (s *txSink) Open(ctx context.Context, oc actors.OperatorContext) error {
	s.st, s.inst = oc.State(), oc.Instance()
	if id := oc.RestoredCheckpoint(); id != 0 {
		return s.commitStaged(ctx, id)
	}
	return nil
}

func (s *txSink) Close(context.Context) error { return nil }

func (s *txSink) Process(_ context.Context, in arrow.RecordBatch, _ actors.Emitter) error {
	var cols [3]*array.Int64
	for i := 0; i < int(in.NumCols()) && i < 3; i++ {
		cols[i], _ = in.Column(i).(*array.Int64)
	}
	for r := 0; r < int(in.NumRows()); r++ {
		var x [3]int64
		for i, c := range cols {
			if c != nil {
				x[i] = c.Value(r)
			}
		}
		s.buf = append(s.buf, row{x[0], x[1], x[2]})
	}
	if s.processed != nil {
		s.processed.Add(in.NumRows())
	}
	return nil
}

func (s *txSink) PrepareCheckpoint(ctx context.Context, id uint64) error {
	var enc []byte
	for _, r := range s.buf {
		enc = binary.AppendVarint(enc, r.k)
		enc = binary.AppendVarint(enc, r.v)
		enc = binary.AppendVarint(enc, r.s)
	}
	var b persistence.Batch
	b.Put(stageKey(id), enc)
	if err := s.st.Apply(ctx, &b); err != nil {
		return err
	}
	s.buf = s.buf[:0]
	return nil
}

func (s *txSink) CheckpointComplete(ctx context.Context, id uint64) error {
	if s.commitErr != nil && s.commitErr.CompareAndSwap(true, false) {
		return errors.New("commit refused")
	}
	return s.commitStaged(ctx, id)
}

// commitStaged commits every staged epoch up to id and drops it from the
// Store.
func (s *txSink) commitStaged(ctx context.Context, upTo uint64) error {
	var del persistence.Batch
	err := s.st.Scan(ctx, []byte("stage/"), func(k, v []byte) error {
		id, err := strconv.ParseUint(strings.TrimPrefix(string(k), "stage/"), 10, 64)
		if err != nil {
			return fmt.Errorf("staged key %q: %w", k, err)
		}
		if id > upTo {
			return nil
		}
		var rows []row
		for len(v) > 0 {
			var x [3]int64
			for i := range x {
				n, l := binary.Varint(v)
				if l <= 0 {
					return fmt.Errorf("staged epoch %d: bad encoding", id)
				}
				x[i], v = n, v[l:]
			}
			rows = append(rows, row{x[0], x[1], x[2]})
		}
		s.out.commit(s.inst, id, rows)
		del.Delete(k)
		return nil
	})
	if err != nil || del.Len() == 0 {
		return err
	}
	return s.st.Apply(ctx, &del)
}

// attempts counts the attempts at processing each batch (by its first v)
// across restarts and recoveries.
type attempts struct{ m sync.Map }

func (a *attempts) next(first int64) int64 {
	n, _ := a.m.LoadOrStore(first, new(atomic.Int64))
	return n.(*atomic.Int64).Add(1)
}

// sumOp is a keyed stateful operator keeping running sums per key in
// memory, flushed to its Store at PrepareCheckpoint. It emits (k, v, sum)
// per row. fail decides, by a batch's first v and attempt, to panic after
// it updated its sums and emitted.
type sumOp struct {
	fail     func(first, attempt int64) bool
	tries    *attempts
	restored *atomic.Uint64

	st    persistence.Store
	mem   memory.Allocator
	sums  map[int64]int64
	dirty map[int64]bool
}

var _ actors.CheckpointHandler = (*sumOp)(nil)

func sumKey(k int64) []byte { return binary.BigEndian.AppendUint64([]byte("sum/"), uint64(k)) }

func (o *sumOp) Open(ctx context.Context, oc actors.OperatorContext) error {
	o.st, o.mem = oc.State(), oc.Allocator()
	o.sums, o.dirty = map[int64]int64{}, map[int64]bool{}
	if o.restored != nil && oc.RestoredCheckpoint() > o.restored.Load() {
		o.restored.Store(oc.RestoredCheckpoint())
	}
	return o.st.Scan(ctx, []byte("sum/"), func(k, v []byte) error {
		s, n := binary.Varint(v)
		if n <= 0 || len(k) != 12 {
			return fmt.Errorf("bad sum %x=%x", k, v)
		}
		o.sums[int64(binary.BigEndian.Uint64(k[4:]))] = s
		return nil
	})
}

func (o *sumOp) Close(context.Context) error { return nil }

func (o *sumOp) Process(_ context.Context, in arrow.RecordBatch, out actors.Emitter) error {
	ks, vs := in.Column(0).(*array.Int64), in.Column(1).(*array.Int64)
	b := array.NewRecordBuilder(o.mem, sumSchema)
	defer b.Release()
	for i := 0; i < ks.Len(); i++ {
		k := ks.Value(i)
		o.sums[k] += vs.Value(i)
		o.dirty[k] = true
		b.Field(0).(*array.Int64Builder).Append(k)
		b.Field(1).(*array.Int64Builder).Append(vs.Value(i))
		b.Field(2).(*array.Int64Builder).Append(o.sums[k])
	}
	out.Emit(b.NewRecordBatch())
	if o.fail != nil && ks.Len() > 0 {
		first := vs.Value(0)
		if o.fail(first, o.tries.next(first)) {
			panic(fmt.Sprintf("sum fails at v=%d", first))
		}
	}
	return nil
}

func (o *sumOp) PrepareCheckpoint(ctx context.Context, _ uint64) error {
	var b persistence.Batch
	for k := range o.dirty {
		b.Put(sumKey(k), binary.AppendVarint(nil, o.sums[k]))
	}
	clear(o.dirty)
	return o.st.Apply(ctx, &b)
}

// passOp passes batches on, taking pace per batch (the job's work), and
// panics the first time it sees the batches fail picks.
type passOp struct {
	pace  time.Duration
	fail  func(first int64) bool
	tries *attempts
	fails *atomic.Int64
}

func (o passOp) Open(context.Context, actors.OperatorContext) error { return nil }
func (o passOp) Close(context.Context) error                        { return nil }
func (o passOp) Process(_ context.Context, in arrow.RecordBatch, out actors.Emitter) error {
	if o.pace > 0 {
		time.Sleep(o.pace) // the operator's work, not a wait for a condition
	}
	if o.fail != nil && in.NumRows() > 0 {
		first := in.Column(1).(*array.Int64).Value(0)
		if o.tries.next(first) == 1 && o.fail(first) {
			o.fails.Add(1)
			panic(fmt.Sprintf("pass fails at v=%d", first))
		}
	}
	in.Retain()
	out.Emit(in)
	return nil
}

// gate releases a gatedSource's batches as the test says.
type gate struct {
	mu       sync.Mutex
	released int
	changed  chan struct{}
}

func newGate() *gate { return &gate{changed: make(chan struct{})} }

func (g *gate) release(n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if n > g.released {
		g.released = n
		close(g.changed)
		g.changed = make(chan struct{})
	}
}

// gatedSource is a bounded source of fixed batches that reads only the
// batches its gate released, and ends after the last. Its checkpoints
// record the next batch to read.
type gatedSource struct {
	recs  []arrow.RecordBatch
	g     *gate
	reads *atomic.Int64

	st   persistence.Store
	next int
}

var _ actors.CheckpointHandler = (*gatedSource)(nil)

func (s *gatedSource) Open(ctx context.Context, oc actors.OperatorContext) error {
	s.st = oc.State()
	if oc.RestoredCheckpoint() == 0 {
		return nil
	}
	v, err := s.st.Get(ctx, []byte("next"))
	if errors.Is(err, persistence.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	n, l := binary.Uvarint(v)
	if l <= 0 {
		return fmt.Errorf("bad position %x", v)
	}
	s.next = int(n)
	return nil
}

func (s *gatedSource) Read(ctx context.Context) (arrow.RecordBatch, error) {
	for {
		s.g.mu.Lock()
		released, ch := s.g.released, s.g.changed
		s.g.mu.Unlock()
		switch {
		case s.next >= len(s.recs):
			return nil, io.EOF
		case s.next < released:
			r := s.recs[s.next]
			s.next++
			if s.reads != nil {
				s.reads.Add(1)
			}
			r.Retain()
			return r, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (s *gatedSource) PrepareCheckpoint(ctx context.Context, _ uint64) error {
	var b persistence.Batch
	b.Put([]byte("next"), binary.AppendUvarint(nil, uint64(s.next)))
	return s.st.Apply(ctx, &b)
}

func (s *gatedSource) Close(context.Context) error { return nil }

func gated(schema *arrow.Schema, recs []arrow.RecordBatch, g *gate) meshflow.Source {
	return meshflow.FromSource(schema, func() actors.Source { return &gatedSource{recs: recs, g: g} })
}

// testSeed is the seed of a randomized test: MESHFLOW_SEED or the clock.
func testSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("MESHFLOW_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("MESHFLOW_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("seed %d (MESHFLOW_SEED=%d replays its data and failure plan)", seed, seed)
	return seed
}

// TestCheckpointRandomCrashRecover runs a keyed stateful job, from fixed
// batches and from a bounded JetStream source, whose stateless operator
// panics at random (restarted alone and its batch retried) and whose
// stateful operator panics at random (the whole job recovers from its last
// checkpoint): the rows the transactional sink committed are exactly the
// brute-force reference, each once, with exact running sums.
func TestCheckpointRandomCrashRecover(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}

	const batches, size, keys = 100, 40, 7
	recs := kvBatches(mem, rng, batches, size, keys)
	defer release(recs)
	want := runningSums(recs)
	// The same rows in a stream, for a bounded JetStream source.
	ctx := testutil.Context(t, 3*time.Minute)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "CKPT_RANDOM", Subjects: []string{"ckpt.random"}}); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		ks, vs := r.Column(0).(*array.Int64), r.Column(1).(*array.Int64)
		for i := 0; i < ks.Len(); i++ {
			if _, err := js.PublishAsync("ckpt.random", fmt.Appendf(nil, `{"k":%d,"v":%d}`, ks.Value(i), vs.Value(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("publishing timed out")
	}

	for i, tc := range []struct {
		name string
		src  meshflow.Source
	}{
		{"batches", meshflow.FromBatches(recs...)},
		{"jetstream", meshflow.FromJetStream(meshflow.JetStreamSource{
			Subjects: []string{"ckpt.random"}, Stream: "CKPT_RANDOM", Consumer: "ckpt-random",
			Schema: kvSchema, BatchSize: size, Bounded: true,
		})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A batch (or a keyed part of one) whose first row is in a
			// set fails the first time an operator sees it.
			// Each case draws its own failure plan from the seed, so
			// -run replays one case alone.
			rng := rand.New(rand.NewPCG(seed, uint64(i)+1))
			passFail := map[int64]bool{}
			sumFail := map[int64]bool{}
			for v := range int64(batches * size) {
				passFail[v] = rng.Float64() < 0.1
				sumFail[v] = rng.Float64() < 0.04
			}
			passFail[int64(rng.IntN(batches)*size)] = true
			var passTries, sumTries attempts
			var passFails, sumFails atomic.Int64
			var restored atomic.Uint64
			var forced atomic.Bool
			out := newCommitted()
			pass := passOp{pace: 4 * time.Millisecond, tries: &passTries, fails: &passFails,
				fail: func(first int64) bool { return passFail[first] }}
			sum := func() meshflow.Operator {
				return &sumOp{tries: &sumTries, restored: &restored, fail: func(first, attempt int64) bool {
					// One failure is forced once a checkpoint with output
					// completed: the job recovers from a checkpoint then.
					if (attempt == 1 && sumFail[first]) || (len(out.rows()) > 0 && forced.CompareAndSwap(false, true)) {
						sumFails.Add(1)
						return true
					}
					return false
				}}
			}
			p := meshflow.NewPipeline("ckpt-random-" + tc.name)
			p.Source("numbers", tc.src).
				Process("flaky", func() meshflow.Operator { return pass }, meshflow.OutputSchema(kvSchema)).
				KeyBy("k").Process("sum", sum, meshflow.Parallelism(2), meshflow.OutputSchema(sumSchema)).
				To("sink", meshflow.ToOperator(newTxSink(out, nil)))
			if err := meshflow.Run(ctx, p, ckptOptions(t, nc, mem, testStore(t))...); err != nil {
				t.Fatalf("job failed: %v", err)
			}
			t.Logf("%d stateless failures, %d stateful failures, highest checkpoint restored %d",
				passFails.Load(), sumFails.Load(), restored.Load())
			if passFails.Load() == 0 || sumFails.Load() == 0 || restored.Load() == 0 {
				t.Fatalf("%d stateless and %d stateful failures, restored from checkpoint %d: the test did not exercise them all",
					passFails.Load(), sumFails.Load(), restored.Load())
			}
			out.check(t, want)
			if tc.name == "jetstream" {
				// The source acknowledged everything, on completions. The
				// last acknowledgements were sent and flushed before Run
				// returned, but the server applies a consumer's
				// acknowledgements in the background: wait for them.
				c, err := js.Consumer(ctx, "CKPT_RANDOM", "ckpt-random")
				if err != nil {
					t.Fatal(err)
				}
				testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
					info, err := c.Info(ctx)
					if err != nil {
						return err
					}
					if info.NumAckPending != 0 || info.AckFloor.Stream != batches*size {
						return fmt.Errorf("consumer: %d pending, ack floor %d, want 0 and %d", info.NumAckPending, info.AckFloor.Stream, batches*size)
					}
					return nil
				})
			}
		})
	}
}

// TestCheckpointRetriedBatchWritesOnce: an operator whose state is only in
// its Store writes to it and then fails; the supervisor restarts it alone
// and retries the batch, and the Store holds the write once.
func TestCheckpointRetriedBatchWritesOnce(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	recs := kvBatches(mem, rand.New(rand.NewPCG(1, 2)), 20, 10, 3)
	defer release(recs)

	for _, tc := range []struct {
		name        string
		mode        string // panic or error
		checkpoints bool
	}{
		{"panic", "panic", true},
		{"error", "error", true},
		{"panic-no-checkpoints", "panic", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := testStore(t)
			var tries attempts
			var fails atomic.Int64
			var final atomic.Int64
			var wrong atomic.Int64
			op := func() meshflow.Operator {
				return &countOp{mode: tc.mode, tries: &tries, fails: &fails, final: &final, wrong: &wrong}
			}
			p := meshflow.NewPipeline("ckpt-once-" + tc.name)
			p.Source("numbers", meshflow.FromBatches(recs...)).
				Process("count", op, meshflow.OutputSchema(kvSchema)).
				To("sink", meshflow.ToOperator(func() meshflow.Operator { return &collector{mu: &sync.Mutex{}, seen: map[int64]int{}} }))
			opts := ckptOptions(t, nc, mem, st)
			if !tc.checkpoints {
				opts = append(opts, meshflow.WithoutCheckpoints())
			}
			if err := meshflow.Run(testutil.Context(t, time.Minute), p, opts...); err != nil {
				t.Fatalf("job failed: %v", err)
			}
			if fails.Load() != 5 {
				t.Fatalf("operator failed %d times, want 5", fails.Load())
			}
			if wrong.Load() != 0 {
				t.Errorf("%d batches saw a count other than the batches before them: a failed call's write survived", wrong.Load())
			}
			if final.Load() != int64(len(recs)) {
				t.Errorf("the Store counts %d batches at the end, want %d", final.Load(), len(recs))
			}
		})
	}
}

// countOp counts its batches in its Store (read, add one, Apply), then
// fails the first time it sees batches 3, 7, 11, 15 and 19.
type countOp struct {
	mode                string
	tries               *attempts
	fails, final, wrong *atomic.Int64

	st persistence.Store
}

var countKey = []byte("count")

func (o *countOp) Open(_ context.Context, oc actors.OperatorContext) error {
	o.st = oc.State()
	return nil
}
func (o *countOp) Close(context.Context) error { return nil }

func (o *countOp) count(ctx context.Context) (int64, error) {
	v, err := o.st.Get(ctx, countKey)
	if errors.Is(err, persistence.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n, _ := binary.Varint(v)
	return n, nil
}

func (o *countOp) Process(ctx context.Context, in arrow.RecordBatch, out actors.Emitter) error {
	first := in.Column(1).(*array.Int64).Value(0)
	batch := first / in.NumRows()
	n, err := o.count(ctx)
	if err != nil {
		return err
	}
	if n != batch {
		o.wrong.Add(1)
	}
	var b persistence.Batch
	b.Put(countKey, binary.AppendVarint(nil, n+1))
	if err := o.st.Apply(ctx, &b); err != nil {
		return err
	}
	if batch%4 == 3 && o.tries.next(first) == 1 {
		o.fails.Add(1)
		if o.mode == "panic" {
			panic("count fails after its write")
		}
		return errors.New("count fails after its write")
	}
	in.Retain()
	out.Emit(in)
	return nil
}

// Finish records the count the Store holds at the end.
func (o *countOp) Finish(ctx context.Context, _ actors.Emitter) error {
	n, err := o.count(ctx)
	o.final.Store(n)
	return err
}

// runAsync runs p in the background; the returned function waits for Run's
// result.
func runAsync(t *testing.T, ctx context.Context, p *meshflow.Pipeline, opts ...meshflow.RunOption) func() error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- meshflow.Run(ctx, p, opts...) }()
	t.Cleanup(func() {
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Error("Run did not return")
		}
	})
	return func() error {
		select {
		case err := <-done:
			done <- err
			return err
		case <-time.After(time.Minute):
			t.Fatal("Run did not return within a minute")
			return nil
		}
	}
}

// requestCheckpoint asks job's coordinator for a checkpoint, waiting for
// the coordinator to be up (it starts after the job's operators).
func requestCheckpoint(ctx context.Context, nc *nats.Conn, job string, savepoint bool) (*pb.CheckpointMeta, error) {
	for {
		meta, err := checkpoint.RequestCheckpoint(ctx, nc, job, savepoint)
		if !errors.Is(err, checkpoint.ErrNoCoordinator) {
			return meta, err
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return nil, err
		}
	}
}

func atLeast(n *atomic.Int64, want int64, what string) func() error {
	return func() error {
		if got := n.Load(); got < want {
			return fmt.Errorf("%s: %d, want %d", what, got, want)
		}
		return nil
	}
}

// TestCheckpointStopTakesFinalCheckpoint: cancelling Run's context stops
// the sources, takes a final checkpoint and returns once the sink
// committed everything processed; a restart with the same name and data
// goes on from there, without repeating or losing a row. When the final
// checkpoint's commit fails, Run returns that error and the restart still
// loses nothing.
func TestCheckpointStopTakesFinalCheckpoint(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	cks := checkpointStore(t, nc)
	recs := kvBatches(mem, rand.New(rand.NewPCG(3, 4)), 20, 25, 5)
	defer release(recs)
	want := runningSums(recs)

	for _, tc := range []struct {
		name       string
		failCommit bool
		// atStart stops the job as soon as a row reached the sink, maybe
		// before its checkpoint coordinator is up.
		atStart bool
	}{
		{"commits", false, false},
		{"commit-fails", true, false},
		{"at-start", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := testStore(t)
			g := newGate()
			out := newCommitted()
			var processed atomic.Int64
			var commitErr atomic.Bool
			job := "ckpt-stop-" + tc.name
			build := func() *meshflow.Pipeline {
				p := meshflow.NewPipeline(job)
				p.Source("numbers", gated(kvSchema, recs, g)).
					KeyBy("k").Process("sum", func() meshflow.Operator { return &sumOp{} }, meshflow.Parallelism(2), meshflow.OutputSchema(sumSchema)).
					To("sink", meshflow.ToOperator(func() meshflow.Operator {
						return &txSink{out: out, processed: &processed, commitErr: &commitErr}
					}))
				return p
			}
			g.release(10)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			wait := runAsync(t, ctx, build(), ckptOptions(t, nc, mem, st)...)
			until := int64(250)
			if tc.atStart {
				until = 1
			}
			testutil.CheckFor(t, 30*time.Second, time.Millisecond, atLeast(&processed, until, "rows at the sink"))
			commitErr.Store(tc.failCommit)
			start := time.Now()
			cancel()
			err := wait()
			t.Logf("Run returned after %v: %v", time.Since(start), err)
			if tc.failCommit {
				if err == nil || !strings.Contains(err.Error(), "commit refused") {
					t.Fatalf("Run returned %v, want the error of the final checkpoint's commit", err)
				}
				// The failure ends the wait for the final checkpoint: Run
				// does not wait out the drain timeout (30 s).
				if d := time.Since(start); d > 15*time.Second {
					t.Errorf("Run returned %v after the stop, want well under the drain timeout", d)
				}
			} else {
				if err != context.Canceled {
					t.Fatalf("Run returned %v, want context.Canceled after a clean stop", err)
				}
				if tc.atStart {
					// Everything processed is committed.
					rows := out.rows()
					if int64(len(rows)) != processed.Load() {
						t.Fatalf("%d rows committed, %d processed", len(rows), processed.Load())
					}
					sub := map[int64]row{}
					for _, r := range rows {
						sub[r.v] = want[r.v]
					}
					out.check(t, sub)
				} else {
					out.check(t, runningSums(recs[:10]))
				}
				meta, err := cks.Latest(context.Background(), job)
				if err != nil || meta == nil {
					t.Fatalf("no latest checkpoint after the stop: %v", err)
				}
				for _, task := range meta.Tasks {
					if task.Operator == "numbers" && !task.Paused {
						t.Errorf("the final checkpoint %d has source task %s/%d not paused", meta.Id, task.Operator, task.Instance)
					}
				}
			}

			commitErr.Store(false)
			g.release(len(recs))
			if err := meshflow.Run(testutil.Context(t, time.Minute), build(), ckptOptions(t, nc, mem, st)...); err != nil {
				t.Fatalf("restart: %v", err)
			}
			out.check(t, want)
		})
	}
}

// TestCheckpointBoundedJobEndsAfterCommit: a bounded job's Run returns only
// once a checkpoint covering its last output completed and every sink
// instance committed it.
func TestCheckpointBoundedJobEndsAfterCommit(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	cks := checkpointStore(t, nc)
	recs := kvBatches(mem, rand.New(rand.NewPCG(5, 6)), 30, 20, 9)
	defer release(recs)
	want := runningSums(recs)
	var lines []string
	for _, r := range recs {
		ks, vs := r.Column(0).(*array.Int64), r.Column(1).(*array.Int64)
		for i := 0; i < ks.Len(); i++ {
			lines = append(lines, fmt.Sprintf(`{"k":%d,"v":%d}`, ks.Value(i), vs.Value(i)))
		}
	}

	for _, tc := range []struct {
		name string
		src  meshflow.Source
		sink int // sink parallelism
		// failOnce fails the first commit (the last checkpoint's, when the
		// job ends before a periodic one): the job recovers and ends.
		failOnce bool
	}{
		{"batches", meshflow.FromBatches(recs...), 1, false},
		{"batches-3-sinks", meshflow.FromBatches(recs...), 3, false},
		{"json", meshflow.FromJSON(kvSchema, lines...), 1, false},
		{"json-3-sinks", meshflow.FromJSON(kvSchema, lines...), 3, false},
		{"commit-fails-once", meshflow.FromBatches(recs...), 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := newCommitted()
			var commitErr atomic.Bool
			commitErr.Store(tc.failOnce)
			job := "ckpt-bounded-" + tc.name
			p := meshflow.NewPipeline(job)
			p.Source("numbers", tc.src).
				KeyBy("k").Process("sum", func() meshflow.Operator { return &sumOp{} }, meshflow.Parallelism(2), meshflow.OutputSchema(sumSchema)).
				To("sink", meshflow.ToOperator(func() meshflow.Operator { return &txSink{out: out, commitErr: &commitErr} }), meshflow.Parallelism(tc.sink))
			start := time.Now()
			if err := meshflow.Run(testutil.Context(t, time.Minute), p, ckptOptions(t, nc, mem, testStore(t))...); err != nil {
				t.Fatal(err)
			}
			// A failed commit ends the wait for the last checkpoint at
			// once: the job does not wait out the drain timeout (30 s).
			if d := time.Since(start); tc.failOnce && d > 15*time.Second {
				t.Errorf("Run took %v, want well under the drain timeout", d)
			}
			if commitErr.Load() {
				t.Fatal("no commit failed")
			}
			out.check(t, want)
			meta, err := cks.Latest(context.Background(), job)
			if err != nil || meta == nil {
				t.Fatalf("no latest checkpoint: %v", err)
			}
			for _, task := range meta.Tasks {
				if !task.Finished {
					t.Errorf("last checkpoint %d: task %s/%d not finished", meta.Id, task.Operator, task.Instance)
				}
			}
		})
	}
}

// TestCheckpointSavepointRestore: a savepoint taken while the job runs
// restores the job's state and source positions of that moment, after the
// job stopped, ran again on more input and ended; retention keeps the last
// K checkpoints and every savepoint.
func TestCheckpointSavepointRestore(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	cks := checkpointStore(t, nc)
	const size, retain = 20, 2
	recs := kvBatches(mem, rand.New(rand.NewPCG(7, 8)), 30, size, 6)
	defer release(recs)
	want := runningSums(recs)
	st := testStore(t)
	g := newGate()
	const job = "ckpt-savepoint"
	build := func(out *committed, processed *atomic.Int64) *meshflow.Pipeline {
		p := meshflow.NewPipeline(job)
		p.Source("numbers", gated(kvSchema, recs, g)).
			KeyBy("k").Process("sum", func() meshflow.Operator { return &sumOp{} }, meshflow.Parallelism(2), meshflow.OutputSchema(sumSchema)).
			To("sink", meshflow.ToOperator(newTxSink(out, processed)))
		return p
	}
	opts := func(extra ...meshflow.RunOption) []meshflow.RunOption {
		return ckptOptions(t, nc, mem, st, append([]meshflow.RunOption{meshflow.WithCheckpoints(meshflow.CheckpointConfig{
			Interval: time.Second, Retain: retain,
		})}, extra...)...)
	}

	// Run 1: batches 0-9, a savepoint, more checkpoints, batches 10-19, stop.
	out := newCommitted()
	var processed atomic.Int64
	g.release(10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := runAsync(t, ctx, build(out, &processed), opts()...)
	testutil.CheckFor(t, 30*time.Second, 5*time.Millisecond, atLeast(&processed, 10*size, "rows at the sink"))
	rctx := testutil.Context(t, time.Minute)
	sp, err := requestCheckpoint(rctx, nc, job, true)
	if err != nil {
		t.Fatal(err)
	}
	if !sp.Savepoint {
		t.Fatalf("checkpoint %d is not a savepoint", sp.Id)
	}
	for i := 0; i < retain+1; i++ {
		if _, err := requestCheckpoint(rctx, nc, job, false); err != nil {
			t.Fatal(err)
		}
	}
	g.release(20)
	testutil.CheckFor(t, 30*time.Second, 5*time.Millisecond, atLeast(&processed, 20*size, "rows at the sink"))
	cancel()
	if err := wait(); err != context.Canceled {
		t.Fatalf("stop: %v", err)
	}

	// Run 2: from the latest checkpoint, to the end.
	g.release(len(recs))
	if err := meshflow.Run(testutil.Context(t, time.Minute), build(out, nil), opts()...); err != nil {
		t.Fatalf("run 2: %v", err)
	}
	out.check(t, want)

	// Run 3: from the savepoint: batches 10-29 again, on the state of
	// batches 0-9. The sink restored from the savepoint may commit again
	// what it had staged for it.
	out3 := newCommitted()
	if err := meshflow.Run(testutil.Context(t, time.Minute), build(out3, nil), opts(meshflow.WithRestore(job, sp.Id))...); err != nil {
		t.Fatalf("run 3 from savepoint %d: %v", sp.Id, err)
	}
	out3.checkWith(t, want, checkOpts{below: 10 * size})

	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		all, err := cks.List(context.Background(), job)
		if err != nil {
			return err
		}
		var regular, savepoints []uint64
		for _, m := range all {
			if m.Savepoint {
				savepoints = append(savepoints, m.Id)
			} else {
				regular = append(regular, m.Id)
			}
		}
		if !slices.Equal(savepoints, []uint64{sp.Id}) || len(regular) != retain {
			return fmt.Errorf("kept checkpoints %v and savepoints %v, want %d checkpoints and savepoint %d", regular, savepoints, retain, sp.Id)
		}
		return nil
	})
}

// TestCheckpointRestoreRefusesChangedJob: a job whose operators or
// parallelism differ from its checkpoint's fails at once with an error
// saying so, without opening an operator or recovering in a loop.
func TestCheckpointRestoreRefusesChangedJob(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	recs := kvBatches(mem, rand.New(rand.NewPCG(9, 10)), 5, 10, 3)
	defer release(recs)

	var opens atomic.Int64
	sum := func() meshflow.Operator { opens.Add(1); return &sumOp{} }
	build := func(job string, par int, extra bool, sinkName string) *meshflow.Pipeline {
		p := meshflow.NewPipeline(job)
		s := p.Source("numbers", meshflow.FromBatches(recs...)).
			KeyBy("k").Process("sum", sum, meshflow.Parallelism(par), meshflow.OutputSchema(sumSchema))
		if extra {
			s = s.Filter("some", meshflow.Col("v").Gt(3))
		}
		s.To(sinkName, meshflow.ToOperator(newTxSink(newCommitted(), nil)))
		return p
	}
	for _, tc := range []struct {
		name    string
		changed func(job string) *meshflow.Pipeline
		restore uint64
		want    string
	}{
		{"parallelism", func(job string) *meshflow.Pipeline { return build(job, 3, false, "sink") }, 0, "operators or parallelism changed"},
		{"added-operator", func(job string) *meshflow.Pipeline { return build(job, 2, true, "sink") }, 0, "operators or parallelism changed"},
		{"renamed-operator", func(job string) *meshflow.Pipeline { return build(job, 2, false, "out") }, 0, "operators or parallelism changed"},
		{"unknown-savepoint", func(job string) *meshflow.Pipeline { return build(job, 2, false, "sink") }, 999, "from checkpoint 999"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := testStore(t)
			job := "ckpt-refuse-" + tc.name
			if err := meshflow.Run(testutil.Context(t, time.Minute), build(job, 2, false, "sink"), ckptOptions(t, nc, mem, st)...); err != nil {
				t.Fatal(err)
			}
			opens.Store(0)
			var extra []meshflow.RunOption
			if tc.restore != 0 {
				extra = append(extra, meshflow.WithRestore(job, tc.restore))
			}
			err := meshflow.Run(testutil.Context(t, time.Minute), tc.changed(job), ckptOptions(t, nc, mem, st, extra...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run returned %v, want an error saying %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "recoveries") {
				t.Errorf("the job recovered before failing: %v", err)
			}
			if opens.Load() != 0 {
				t.Errorf("%d operator instances were opened", opens.Load())
			}
		})
	}
}

var tsSchema = arrow.NewSchema([]arrow.Field{
	{Name: "v", Type: arrow.PrimitiveTypes.Int64},
	{Name: "ts", Type: arrow.FixedWidthTypes.Timestamp_us},
}, nil)

// tsBatches builds count batches of size rows: v numbers the rows from 0,
// ts is base + 1 ms per batch + 1 µs per row; the last batch is at
// base + 3 h.
func tsBatches(mem memory.Allocator, base int64, count, size int) []arrow.RecordBatch {
	b := array.NewRecordBuilder(mem, tsSchema)
	defer b.Release()
	out := make([]arrow.RecordBatch, count)
	for i := range out {
		at := base + int64(i)*1000
		if i == count-1 {
			at = base + 3*3600e6
		}
		for j := 0; j < size; j++ {
			b.Field(0).(*array.Int64Builder).Append(int64(i*size + j))
			b.Field(1).(*array.TimestampBuilder).Append(arrow.Timestamp(at + int64(j)))
		}
		out[i] = b.NewRecordBatch()
	}
	return out
}

const (
	eventTimerKind = 1
	procTimerKind  = 2
	procTimerBase  = 1_000_000 // v of a processing-time timer's row: base + v
)

// timerOp registers, per row, an event-time timer 1 h after its ts and,
// for rows below procRows, a processing-time timer procDelay from now;
// OnTimer emits a row (kind, v). It fails once, on the batch starting at
// failAt, and keeps no state beyond its timers; as a CheckpointListener
// its failure makes the job recover.
type timerOp struct {
	procRows   int64
	procDelay  time.Duration
	failAt     int64
	failed     *atomic.Bool
	batches    *atomic.Int64
	procFired  *atomic.Int64
	restoredWM *atomic.Int64

	mem    memory.Allocator
	timers actors.TimerService
}

var (
	_ actors.TimerHandler       = (*timerOp)(nil)
	_ actors.CheckpointListener = (*timerOp)(nil)
)

func (o *timerOp) Open(_ context.Context, oc actors.OperatorContext) error {
	o.mem, o.timers = oc.Allocator(), oc.Timers()
	if oc.RestoredCheckpoint() != 0 {
		o.restoredWM.Store(int64(oc.Timers().Watermark()))
	}
	return nil
}

func (o *timerOp) Close(context.Context) error { return nil }

func (o *timerOp) Process(_ context.Context, in arrow.RecordBatch, _ actors.Emitter) error {
	vs, ts := in.Column(0).(*array.Int64), in.Column(1).(*array.Timestamp)
	for i := 0; i < vs.Len(); i++ {
		v := vs.Value(i)
		o.timers.At(messages.Watermark(int64(ts.Value(i))+3600e6), "e"+strconv.FormatInt(v, 10))
		if v < o.procRows {
			o.timers.After(o.procDelay, "p"+strconv.FormatInt(v, 10))
		}
	}
	o.batches.Add(1)
	if vs.Value(0) == o.failAt && o.failed.CompareAndSwap(false, true) {
		panic("timers fail once")
	}
	return nil
}

func (o *timerOp) OnTimer(_ context.Context, tm actors.Timer, out actors.Emitter) error {
	v, err := strconv.ParseInt(tm.Tag[1:], 10, 64)
	if err != nil {
		return err
	}
	kind := int64(eventTimerKind)
	if tm.Kind == actors.ProcessingTimeTimer {
		kind, v = procTimerKind, procTimerBase+v
		o.procFired.Add(1)
	}
	b := array.NewRecordBuilder(o.mem, kvSchema)
	defer b.Release()
	b.Field(0).(*array.Int64Builder).Append(kind)
	b.Field(1).(*array.Int64Builder).Append(v)
	out.Emit(b.NewRecordBatch())
	return nil
}

func (o *timerOp) CheckpointComplete(context.Context, uint64) error { return nil }

// TestCheckpointTimersSurviveRecovery: event-time and processing-time
// timers registered before a checkpoint, and the watermark, are restored
// when the job recovers from it; every timer fires once in what the sink
// committed.
func TestCheckpointTimersSurviveRecovery(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	const batches, size, before = 10, 5, 4
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro()
	recs := tsBatches(mem, base, batches, size)
	defer release(recs)
	want := map[int64]row{}
	for v := int64(0); v < batches*size; v++ {
		want[v] = row{eventTimerKind, v, 0}
	}
	for v := int64(0); v < before*size; v++ {
		want[procTimerBase+v] = row{procTimerKind, procTimerBase + v, 0}
	}

	g := newGate()
	out := newCommitted()
	var failed atomic.Bool
	var seen, procFired, restoredWM atomic.Int64
	const job = "ckpt-timers"
	p := meshflow.NewPipeline(job)
	p.Source("events", gated(tsSchema, recs, g), meshflow.EventTime("ts", 0)).
		Process("timers", func() meshflow.Operator {
			return &timerOp{procRows: before * size, procDelay: 2 * time.Second, failAt: before * size,
				failed: &failed, batches: &seen, procFired: &procFired, restoredWM: &restoredWM}
		}, meshflow.OutputSchema(kvSchema)).
		To("sink", meshflow.ToOperator(newTxSink(out, nil)))
	ctx := testutil.Context(t, time.Minute)
	g.release(before)
	wait := runAsync(t, ctx, p, ckptOptions(t, nc, mem, testStore(t))...)
	testutil.CheckFor(t, 30*time.Second, 5*time.Millisecond, atLeast(&seen, before, "batches at the timer operator"))
	meta, err := requestCheckpoint(ctx, nc, job, false)
	if err != nil {
		t.Fatal(err)
	}
	// The next batch fails the operator: the job recovers from checkpoint
	// meta.Id or a later one, holding the timers of the first batches.
	g.release(before + 1)
	testutil.CheckFor(t, 30*time.Second, 5*time.Millisecond, func() error {
		if !failed.Load() || restoredWM.Load() == 0 {
			return errors.New("the job has not recovered yet")
		}
		return nil
	})
	if wm := restoredWM.Load(); wm < base+(before-1)*1000 {
		t.Errorf("restored watermark %d, want at least %d (the watermark at checkpoint %d)", wm, base+(before-1)*1000, meta.Id)
	}
	// The processing-time timers fire after the recovery (2 s after their
	// registration); then the rest of the input moves event time past
	// every event-time timer.
	testutil.CheckFor(t, 30*time.Second, 10*time.Millisecond, atLeast(&procFired, before*size, "processing-time timers fired"))
	g.release(batches)
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	out.check(t, want)
}

// TestCheckpointUnionEndWhileAligning: a union of two sources where one
// input ends while the union aligns a checkpoint's barrier of the other,
// then the job recovers from that checkpoint: no row is lost or repeated
// and the keyed state after the union is exact.
func TestCheckpointUnionEndWhileAligning(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	cks := checkpointStore(t, nc)
	rng := rand.New(rand.NewPCG(11, 12))
	const size, bOffset = 10, 10_000
	recsA := kvBatches(mem, rng, 3, size, 4)
	defer release(recsA)
	recsB := kvBatches(mem, rng, 12, size, 4)
	defer release(recsB)
	// B's values follow A's: v + bOffset.
	for i, r := range recsB {
		b := array.NewRecordBuilder(mem, kvSchema)
		ks, vs := r.Column(0).(*array.Int64), r.Column(1).(*array.Int64)
		for j := 0; j < ks.Len(); j++ {
			b.Field(0).(*array.Int64Builder).Append(ks.Value(j))
			b.Field(1).(*array.Int64Builder).Append(vs.Value(j) + bOffset)
		}
		recsB[i] = b.NewRecordBatch()
		b.Release()
		r.Release()
	}
	want := map[int64]row{}
	totals := map[int64]int64{}
	for _, recs := range [][]arrow.RecordBatch{recsA, recsB} {
		for v, r := range runningSums(recs) {
			want[v] = row{r.k, v, 0}
			totals[r.k] += v
		}
	}

	gA, gB, hold := newGate(), newGate(), newGate()
	gA.release(len(recsA))
	var readsA atomic.Int64
	var heldOnce atomic.Bool
	var sumTries attempts
	var sumFails atomic.Int64
	out := newCommitted()
	var processed atomic.Int64
	const job = "ckpt-union-eos"
	p := meshflow.NewPipeline(job)
	a := p.Source("a", meshflow.FromSource(kvSchema, func() actors.Source {
		return &gatedSource{recs: recsA, g: gA, reads: &readsA}
	})).Process("held", func() meshflow.Operator { return &holdOp{g: hold, once: &heldOnce} }, meshflow.OutputSchema(kvSchema))
	b := p.Source("b", gated(kvSchema, recsB, gB))
	const failAt = bOffset + 6*size // the first row of B's batch 6
	meshflow.Union("u", a, b).
		KeyBy("k").Process("sum", func() meshflow.Operator {
		return &sumOp{tries: &sumTries, fail: func(first, attempt int64) bool {
			if first == failAt && attempt == 1 {
				sumFails.Add(1)
				return true
			}
			return false
		}}
	}, meshflow.OutputSchema(sumSchema)).
		To("sink", meshflow.ToOperator(newTxSink(out, &processed)))

	// Checkpoints only on request: the test places them.
	ctx := testutil.Context(t, time.Minute)
	opts := ckptOptions(t, nc, mem, testStore(t), meshflow.WithCheckpoints(meshflow.CheckpointConfig{
		Interval: 10 * time.Second,
		Recovery: meshflow.RecoveryPolicy{MaxRecoveries: 3, Window: time.Minute, InitialBackoff: 5 * time.Millisecond},
	}))
	acks, err := nc.SubscribeSync(checkpoint.AckSubject(job))
	if err != nil {
		t.Fatal(err)
	}
	defer acks.Unsubscribe()
	gB.release(5)
	wait := runAsync(t, ctx, p, opts...)
	// A has read everything and ended while its rows wait at "held"; B's
	// first batches went through.
	testutil.CheckFor(t, 30*time.Second, 5*time.Millisecond, func() error {
		if readsA.Load() < int64(len(recsA)) || !heldOnce.Load() {
			return errors.New("A not read yet")
		}
		return atLeast(&processed, 5*size, "B rows at the sink")()
	})
	// Checkpoint 1: B's barrier reaches the union and blocks B there; A's
	// side ends (end-of-stream, no barrier: "held" takes checkpoint 1 when
	// it finishes) once "held" lets A's rows go.
	type result struct {
		id  uint64
		err error
	}
	done := make(chan result, 1)
	go func() {
		meta, err := requestCheckpoint(ctx, nc, job, false)
		if err != nil {
			done <- result{err: err}
			return
		}
		done <- result{id: meta.Id}
	}()
	for {
		m, err := acks.NextMsg(30 * time.Second)
		if err != nil {
			t.Fatalf("no checkpoint ack from source b: %v", err)
		}
		var ack pb.CheckpointAck
		if err := proto.Unmarshal(m.Data, &ack); err != nil {
			t.Fatal(err)
		}
		if ack.Operator == "b" {
			break
		}
	}
	hold.release(1)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	meta, err := cks.Get(ctx, job, r.id)
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range meta.Tasks {
		t.Logf("checkpoint %d: %s/%d finished=%v alignment=%dµs", meta.Id, task.Operator, task.Instance, task.Finished, task.AlignmentUs)
		switch task.Operator {
		case "held":
			if !task.Finished {
				t.Errorf("checkpoint %d: held did not take it at its end", meta.Id)
			}
		case "u":
			if task.Finished || task.AlignmentUs == 0 {
				t.Errorf("checkpoint %d: the union did not align it over an ending input", meta.Id)
			}
		}
	}
	// B's batch 6 fails the keyed operator: the job recovers from
	// checkpoint 1, with A's side ended.
	gB.release(len(recsB))
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if sumFails.Load() != 1 {
		t.Fatalf("the keyed operator failed %d times, want 1", sumFails.Load())
	}
	out.checkWith(t, want, checkOpts{anySum: true})
	final := map[int64]int64{}
	for _, r := range out.rows() {
		final[r.k] = max(final[r.k], r.s)
	}
	if !maps.Equal(final, totals) {
		t.Errorf("final sums per key %v, want %v", final, totals)
	}
}

// holdOp passes batches on; the first batch it sees waits for its gate.
type holdOp struct {
	g    *gate
	once *atomic.Bool
}

func (o *holdOp) Open(context.Context, actors.OperatorContext) error { return nil }
func (o *holdOp) Close(context.Context) error                        { return nil }
func (o *holdOp) Process(ctx context.Context, in arrow.RecordBatch, out actors.Emitter) error {
	if o.once.CompareAndSwap(false, true) {
		o.g.mu.Lock()
		ch, open := o.g.changed, o.g.released > 0
		o.g.mu.Unlock()
		if !open {
			select {
			case <-ch:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	in.Retain()
	out.Emit(in)
	return nil
}
