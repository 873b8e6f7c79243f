package meshflow_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
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
)

var seqSchema = arrow.NewSchema([]arrow.Field{{Name: "n", Type: arrow.PrimitiveTypes.Int64}}, nil)

// seqBatches builds count batches of size rows numbered 0, 1, 2, ...
func seqBatches(mem memory.Allocator, count, size int) []arrow.RecordBatch {
	out := make([]arrow.RecordBatch, count)
	b := array.NewRecordBuilder(mem, seqSchema)
	defer b.Release()
	for i := range out {
		ib := b.Field(0).(*array.Int64Builder)
		for j := 0; j < size; j++ {
			ib.Append(int64(i*size + j))
		}
		out[i] = b.NewRecordBatch()
	}
	return out
}

func release(recs []arrow.RecordBatch) {
	for _, r := range recs {
		r.Release()
	}
}

// collector is a sink operator recording the values of column n.
type collector struct {
	mu   *sync.Mutex
	seen map[int64]int
}

func (c *collector) Open(context.Context, actors.OperatorContext) error { return nil }
func (c *collector) Close(context.Context) error                        { return nil }
func (c *collector) Process(_ context.Context, in arrow.RecordBatch, _ actors.Emitter) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, v := range in.Column(0).(*array.Int64).Int64Values() {
		c.seen[v]++
	}
	return nil
}

func fastRestarts(maxFailures int) meshflow.RunOption {
	return meshflow.WithRestartPolicy(meshflow.RestartPolicy{
		MaxFailures: maxFailures, Window: time.Minute,
		InitialBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
	})
}

// TestSupervisionRestartsAndGoesOn: an operator that panics (or returns an
// error) the first time it sees some batches is restarted; the job completes
// and every row arrives exactly once.
func TestSupervisionRestartsAndGoesOn(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)

	recs := seqBatches(mem, 20, 100)
	defer release(recs)
	var attempts sync.Map // first row -> attempts
	var failures, opens atomic.Int64
	flaky := func() meshflow.Operator {
		opens.Add(1)
		return flakyOp{attempts: &attempts, failures: &failures}
	}
	col := &collector{mu: &sync.Mutex{}, seen: map[int64]int{}}
	p := meshflow.NewPipeline("flaky")
	p.Source("numbers", meshflow.FromBatches(recs...)).
		Process("flaky", flaky, meshflow.OutputSchema(seqSchema)).
		To("collect", meshflow.ToOperator(func() meshflow.Operator { return col }))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := meshflow.Run(ctx, p, meshflow.WithNATS(nc), meshflow.WithAllocator(mem), fastRestarts(10), meshflow.WithLogger(testutil.TestLogger(t))); err != nil {
		t.Fatalf("job failed: %v", err)
	}
	if failures.Load() != 4 {
		t.Errorf("operator failed %d times, want 4", failures.Load())
	}
	if opens.Load() != 5 {
		t.Errorf("operator was built %d times, want 5 (1 + 4 restarts)", opens.Load())
	}
	for i := int64(0); i < 2000; i++ {
		if col.seen[i] != 1 {
			t.Fatalf("row %d arrived %d times, want once", i, col.seen[i])
		}
	}
}

// flakyOp fails on the first attempt of batches starting at rows 300, 700
// (panics) and 1100, 1500 (errors), passing every batch on unchanged.
type flakyOp struct {
	attempts *sync.Map
	failures *atomic.Int64
}

func (f flakyOp) Open(context.Context, actors.OperatorContext) error { return nil }
func (f flakyOp) Close(context.Context) error                        { return nil }
func (f flakyOp) Process(_ context.Context, in arrow.RecordBatch, out actors.Emitter) error {
	first := in.Column(0).(*array.Int64).Value(0)
	n, _ := f.attempts.LoadOrStore(first, new(atomic.Int64))
	attempt := n.(*atomic.Int64).Add(1)
	// Emit before failing: what a failed call emitted must be discarded.
	in.Retain()
	out.Emit(in)
	if attempt == 1 {
		switch first {
		case 300, 700:
			f.failures.Add(1)
			panic(fmt.Sprintf("boom at %d", first))
		case 1100, 1500:
			f.failures.Add(1)
			return fmt.Errorf("transient failure at %d", first)
		}
	}
	return nil
}

// TestSupervisionGivesUp: an operator that always fails ends the job with
// an error naming it, while the process (and this test) lives on.
func TestSupervisionGivesUp(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	recs := seqBatches(mem, 5, 10)
	defer release(recs)

	for _, mode := range []string{"panic", "error", "open"} {
		t.Run(mode, func(t *testing.T) {
			p := meshflow.NewPipeline("doomed-" + mode)
			p.Source("numbers", meshflow.FromBatches(recs...)).
				Process("broken", func() meshflow.Operator { return brokenOp{mode} }).
				To("sink", meshflow.ToOperator(func() meshflow.Operator { return &collector{mu: &sync.Mutex{}, seen: map[int64]int{}} }))
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			err := meshflow.Run(ctx, p, meshflow.WithNATS(nc), meshflow.WithAllocator(mem), fastRestarts(3), meshflow.WithLogger(testutil.TestLogger(t)))
			var oe *actors.OperatorError
			if !errors.As(err, &oe) {
				t.Fatalf("Run returned %v, want an *actors.OperatorError", err)
			}
			if oe.Operator != "broken" || oe.Failures != 4 {
				t.Errorf("error names operator %q after %d failures, want \"broken\" after 4", oe.Operator, oe.Failures)
			}
			if !strings.Contains(err.Error(), "always "+mode) {
				t.Errorf("error %q does not carry the operator's failure", err)
			}
		})
	}
}

type brokenOp struct{ mode string }

func (b brokenOp) Open(context.Context, actors.OperatorContext) error {
	if b.mode == "open" {
		return errors.New("always open")
	}
	return nil
}
func (b brokenOp) Close(context.Context) error { return nil }
func (b brokenOp) Process(context.Context, arrow.RecordBatch, actors.Emitter) error {
	if b.mode == "panic" {
		panic("always panic")
	}
	return errors.New("always error")
}

// TestBackpressure: a fast source feeding a deliberately slow sink is slowed
// down to the sink's pace; the batches alive at any time, and so the Arrow
// memory in use, stay under a bound set by the credit window.
func TestBackpressure(t *testing.T) {
	const (
		window    = 4
		batches   = 200
		batchRows = 4096
	)
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)

	var produced, consumed, maxAhead atomic.Int64
	var peakBytes atomic.Int64
	src := func() actors.Source {
		return &countingSource{mem: mem, n: batches, rows: batchRows, produced: &produced}
	}
	slow := func() meshflow.Operator {
		return &slowSink{consumed: &consumed, produced: &produced, maxAhead: &maxAhead, mem: mem, peak: &peakBytes}
	}
	p := meshflow.NewPipeline("backpressure")
	p.Source("fast", meshflow.FromSource(seqSchema, src)).
		Filter("all", meshflow.Col("n").Ge(0)).
		Map("double", meshflow.Set("m", meshflow.Col("n").Mul(2))).
		To("slow", meshflow.ToOperator(slow))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := meshflow.Run(ctx, p, meshflow.WithNATS(nc), meshflow.WithAllocator(mem), meshflow.WithWindow(window)); err != nil {
		t.Fatal(err)
	}
	if consumed.Load() != batches {
		t.Fatalf("sink saw %d batches, want %d", consumed.Load(), batches)
	}
	// Between source and sink there are three channels of `window`
	// envelopes, plus one batch in each operator's hands.
	bound := int64(3*window + 4)
	t.Logf("source ran at most %d batches ahead of the sink (bound %d); peak Arrow memory %d bytes", maxAhead.Load(), bound, peakBytes.Load())
	if maxAhead.Load() > bound {
		t.Errorf("source ran %d batches ahead of the slow sink, bound %d", maxAhead.Load(), bound)
	}
	batchBytes := int64(batchRows * 8 * 3) // n, m and the filter's copy
	if peakBytes.Load() > bound*batchBytes {
		t.Errorf("peak Arrow memory %d bytes exceeds %d", peakBytes.Load(), bound*batchBytes)
	}
}

type countingSource struct {
	mem      memory.Allocator
	n, rows  int
	i        int
	produced *atomic.Int64
}

func (s *countingSource) Open(context.Context, actors.OperatorContext) error { return nil }
func (s *countingSource) Close(context.Context) error                        { return nil }
func (s *countingSource) Read(ctx context.Context) (arrow.RecordBatch, error) {
	if s.i == s.n {
		return nil, io.EOF
	}
	recs := seqBatches(s.mem, 1, s.rows)
	s.i++
	s.produced.Add(1)
	return recs[0], nil
}

type slowSink struct {
	consumed, produced, maxAhead *atomic.Int64
	mem                          *memory.CheckedAllocator
	peak                         *atomic.Int64
}

func (s *slowSink) Open(context.Context, actors.OperatorContext) error { return nil }
func (s *slowSink) Close(context.Context) error                        { return nil }
func (s *slowSink) Process(ctx context.Context, in arrow.RecordBatch, _ actors.Emitter) error {
	c := s.consumed.Add(1)
	if ahead := s.produced.Load() - c; ahead > s.maxAhead.Load() {
		s.maxAhead.Store(ahead)
	}
	if cur := int64(s.mem.CurrentAlloc()); cur > s.peak.Load() {
		s.peak.Store(cur)
	}
	// The deliberate slowness under test: a sink doing 2 ms of work a batch.
	select {
	case <-time.After(2 * time.Millisecond):
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}
