package meshflow_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
	"github.com/meshflow/meshflow/messages"
)

// firedTimers records the tags of the event-time timers an eventTimerOp
// fired, and the watermark each fired at.
type firedTimers struct {
	mu   sync.Mutex
	at   map[int64]messages.Watermark
	seen map[int64]bool // rows processed
}

func (f *firedTimers) saw(v int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.seen[v] {
		return fmt.Errorf("row %d not processed yet", v)
	}
	return nil
}

func (f *firedTimers) has(vs ...int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, v := range vs {
		if _, ok := f.at[v]; !ok {
			return fmt.Errorf("event-time timer of row %d has not fired (%d fired)", v, len(f.at))
		}
	}
	return nil
}

// eventTimerOp registers, per row (v, ts), an event-time timer at ts + 1 h
// and records it when it fires. It emits nothing.
type eventTimerOp struct {
	fired  *firedTimers
	timers actors.TimerService
}

var _ actors.TimerHandler = (*eventTimerOp)(nil)

func (o *eventTimerOp) Open(_ context.Context, oc actors.OperatorContext) error {
	o.timers = oc.Timers()
	return nil
}

func (o *eventTimerOp) Close(context.Context) error { return nil }

func (o *eventTimerOp) Process(_ context.Context, in arrow.RecordBatch, _ actors.Emitter) error {
	vs, ts := in.Column(0).(*array.Int64), in.Column(1).(*array.Timestamp)
	o.fired.mu.Lock()
	defer o.fired.mu.Unlock()
	for i := 0; i < vs.Len(); i++ {
		o.fired.seen[vs.Value(i)] = true
		o.timers.At(messages.Watermark(int64(ts.Value(i))+3600e6), fmt.Sprint(vs.Value(i)))
	}
	return nil
}

func (o *eventTimerOp) OnTimer(_ context.Context, tm actors.Timer, _ actors.Emitter) error {
	var v int64
	if _, err := fmt.Sscan(tm.Tag, &v); err != nil {
		return err
	}
	o.fired.mu.Lock()
	o.fired.at[v] = o.timers.Watermark()
	o.fired.mu.Unlock()
	return nil
}

// TestIdleSourceReleasesWatermark: of two sources into a union, "quiet"
// sends one batch and then nothing, without ending; "busy" moves event time
// 3 h on. With IdleTimeout on "quiet", the union's watermark follows
// "busy" alone, so the event-time timer of quiet's row (1 h after it)
// fires while "quiet" is still open. Then "quiet" sends again (it rejoins)
// and both end: every timer fires.
func TestIdleSourceReleasesWatermark(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	const size = 4
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro()
	// quiet: values 0..7, ts base..; busy: values 100.., its third batch at
	// base + 3 h, its fourth (held back until the end) at base + 2 ms.
	quiet := tsBatches(mem, base, 2, size)
	defer release(quiet)
	busy := tsBatches(mem, base, 4, size)
	defer release(busy)
	busy[2], busy[3] = busy[3], busy[2]
	for _, rs := range [][]arrow.RecordBatch{busy} { // renumber busy: v + 100
		for i, r := range rs {
			b := array.NewRecordBuilder(mem, tsSchema)
			vs, ts := r.Column(0).(*array.Int64), r.Column(1).(*array.Timestamp)
			for j := 0; j < vs.Len(); j++ {
				b.Field(0).(*array.Int64Builder).Append(100 + vs.Value(j))
				b.Field(1).(*array.TimestampBuilder).Append(ts.Value(j))
			}
			rs[i] = b.NewRecordBatch()
			b.Release()
			r.Release()
		}
	}
	gq, gb := newGate(), newGate()
	gq.release(1)
	gb.release(3)
	fired := &firedTimers{at: map[int64]messages.Watermark{}, seen: map[int64]bool{}}
	p := meshflow.NewPipeline("idle-wm")
	q := p.Source("quiet", gated(tsSchema, quiet, gq), meshflow.EventTime("ts", 0), meshflow.IdleTimeout(50*time.Millisecond))
	b := p.Source("busy", gated(tsSchema, busy, gb), meshflow.EventTime("ts", 0))
	meshflow.Union("both", q, b).
		Process("timers", func() meshflow.Operator { return &eventTimerOp{fired: fired} }, meshflow.OutputSchema(tsSchema)).
		To("sink", meshflow.ToOperator(func() meshflow.Operator { return passOp{} }))
	ctx := testutil.Context(t, time.Minute)
	wait := runAsync(t, ctx, p, meshflow.WithNATS(nc), meshflow.WithAllocator(mem), meshflow.WithLogger(testutil.TestLogger(t)))
	testutil.CheckFor(t, 30*time.Second, 5*time.Millisecond, func() error { return fired.has(0, 1, 2, 3) })
	fired.mu.Lock()
	if _, ok := fired.at[4]; ok {
		t.Error("timer of quiet's second batch fired before the batch was read")
	}
	fired.mu.Unlock()
	// quiet rejoins while busy is open (a source that ends sends the
	// maximum watermark: with quiet idle, that would make quiet's later
	// rows late).
	gq.release(2)
	testutil.CheckFor(t, 30*time.Second, 5*time.Millisecond, func() error { return fired.saw(4) })
	if err := fired.has(4); err == nil {
		t.Error("timer of quiet's second batch (4 h) fired at busy's watermark (3 h)")
	}
	gb.release(4)
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	var all []int64
	for v := int64(0); v < 2*size; v++ {
		all = append(all, v)
	}
	for v := int64(100); v < 100+4*size; v++ {
		all = append(all, v)
	}
	if err := fired.has(all...); err != nil {
		t.Fatal(errors.Join(err, fmt.Errorf("after the end: %v", fired.at)))
	}
}
