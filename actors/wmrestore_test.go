package actors

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/meshflow/meshflow/internal/testutil"
	"github.com/meshflow/meshflow/messages"
	"github.com/meshflow/meshflow/persistence"
)

// partCkSource is a Partitioned source with checkpoints: it reads the
// batches its gate released, batch i of partition parts[i], records the
// next batch to read at checkpoints and goes on from there after a
// restore. It never ends by itself.
type partCkSource struct {
	recs  []arrow.RecordBatch
	parts []int
	g     *ckGate
	clock *rndClock // when set, the instance's clock (for its idle timers)
	st    persistence.Store
	next  int
	last  int
}

func (s *partCkSource) Partitions() int { return 2 }
func (s *partCkSource) Partition() int  { return s.last }

func (s *partCkSource) Open(ctx context.Context, oc OperatorContext) error {
	s.st = oc.State()
	if s.clock != nil {
		oc.(*instance).timers.now = s.clock.now
	}
	if oc.RestoredCheckpoint() == 0 {
		return nil
	}
	v, err := s.st.Get(ctx, []byte("next"))
	if err != nil {
		return err
	}
	n, _ := binary.Uvarint(v)
	s.next = int(n)
	return nil
}

func (s *partCkSource) Read(ctx context.Context) (arrow.RecordBatch, error) {
	for {
		s.g.mu.Lock()
		released, ch := s.g.released, s.g.changed
		s.g.mu.Unlock()
		if s.next < released {
			r := s.recs[s.next]
			s.last = s.parts[s.next]
			s.next++
			r.Retain()
			return r, nil
		}
		// After the last batch it waits for the stop.
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (s *partCkSource) PrepareCheckpoint(ctx context.Context, _ uint64) error {
	var b persistence.Batch
	b.Put([]byte("next"), binary.AppendUvarint(nil, uint64(s.next)))
	return s.st.Apply(ctx, &b)
}

func (s *partCkSource) Close(context.Context) error { return nil }

// TestPartitionWatermarksRestored: a Partitioned source's per-partition
// watermarks survive a restore from a checkpoint. Before the stop,
// partition 0 is at 99_999 and partition 1 lags at 9_999. After the
// restart, partition 0 reads rows older than its watermark (80_000, within
// the out-of-orderness a source may have): partition 1 still holds the
// watermark at 9_999; then partition 1 reads 90_000 and the watermark is
// 89_999, the minimum with partition 0's restored 99_999. Partitions
// restarted from the start would give 79_999 there.
func TestPartitionWatermarksRestored(t *testing.T) {
	mem, nc, st := ckEnv(t)
	type step struct {
		part int
		ts   int64
		want messages.Watermark // the source's watermark after it
	}
	before := []step{{0, 100_000, messages.MinWatermark}, {1, 10_000, 9_999}}
	after := []step{{0, 80_000, 9_999}, {1, 90_000, 89_999}}
	var recs []arrow.RecordBatch
	var parts []int
	for _, s := range append(append([]step(nil), before...), after...) {
		b := array.NewRecordBuilder(mem, wmSchema)
		b.Field(0).(*array.Int64Builder).Append(s.ts)
		b.Field(1).(*array.TimestampBuilder).Append(arrow.Timestamp(s.ts))
		recs = append(recs, b.NewRecordBatch())
		b.Release()
		parts = append(parts, s.part)
	}
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	g := &ckGate{changed: make(chan struct{})}
	graph := &JobGraph{
		Name: "wm-restore",
		Vertices: []*Vertex{
			{Name: "src", Parallelism: 1, NewSource: func() Source { return &partCkSource{recs: recs, parts: parts, g: g} },
				EventTime: &EventTime{Column: "ts"}},
			{Name: "sink", Parallelism: 1, NewOperator: func() Operator { return dropOp{} }},
		},
		Edges:      []Edge{{From: "src", To: "sink", Partitioning: Forward}},
		Checkpoint: &CheckpointConfig{Interval: time.Hour}, // the final one only
	}
	pl := Placement{{"src", 0}: "local", {"sink", 0}: "local"}
	// runSteps runs the job, releasing the batches of steps one at a time
	// and checking the watermark of the source and of the sink after each
	// (which started at first, having read first batches before), then
	// stops it with its final checkpoint.
	runSteps := func(first int, steps []step, restoredWM messages.Watermark) {
		n, err := NewNode(NodeConfig{ID: "local", NATS: nc, Allocator: mem, State: st, Logger: testutil.TestLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		ctx, cancel := context.WithCancel(testutil.Context(t, time.Minute))
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- n.Run(ctx, graph, pl) }()
		stats := func() (src, sink InstanceStats, err error) {
			select {
			case err := <-done:
				t.Fatalf("the job ended: %v", err)
			default:
			}
			for _, is := range n.Stats(graph.Name) {
				switch is.ID.Operator {
				case "src":
					src = is
				case "sink":
					sink = is
				}
			}
			if src.ID.Operator == "" || sink.ID.Operator == "" {
				err = errors.New("the job is not running yet")
			}
			return src, sink, err
		}
		// Restored, before reading anything: the watermark of the checkpoint.
		testutil.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
			src, _, err := stats()
			if err == nil && src.Watermark != restoredWM {
				err = fmt.Errorf("watermark %d at the start, want %d", src.Watermark, restoredWM)
			}
			return err
		})
		for i, s := range steps {
			g.release(first + i + 1)
			testutil.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
				src, sink, err := stats()
				if err != nil {
					return err
				}
				if src.RowsIn != int64(i+1) || src.Watermark != s.want || sink.Watermark != s.want {
					return fmt.Errorf("after batch %d (partition %d, %d): %d rows read, watermark %d at the source and %d at the sink; want %d",
						first+i, s.part, s.ts, src.RowsIn, src.Watermark, sink.Watermark, s.want)
				}
				return nil
			})
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("stop: %v, want a stop after the final checkpoint", err)
		}
	}
	runSteps(0, before, messages.MinWatermark)
	runSteps(len(before), after, before[len(before)-1].want)
}

// TestPartitionIdleAfterRestore: idleness is not restored. Before the
// stop, partition 1 (never read) is idle and the watermark follows
// partition 0. After the restart it counts as active again, with its
// restored watermark, and holds the watermark back; its idle timer starts
// when the source starts reading, and when it runs out the watermark
// follows partition 0 again. The source's clock moves only when the test
// says.
func TestPartitionIdleAfterRestore(t *testing.T) {
	mem, nc, st := ckEnv(t)
	const timeout = 40 * time.Millisecond
	type step struct {
		advance time.Duration // move the clock first
		ts      int64         // then read this on partition 0 (0: nothing)
		want    messages.Watermark
		idle    bool
	}
	before := []step{
		{ts: 100_000, want: messages.MinWatermark}, // partition 1 not read yet
		{advance: timeout / 2, ts: 110_000, want: messages.MinWatermark},
		{advance: timeout / 2, want: 109_999}, // partition 1 idle
	}
	after := []step{
		{ts: 120_000, want: 109_999}, // partition 1 active again, holds it
		{advance: timeout / 2, ts: 121_000, want: 109_999},
		{advance: timeout / 2, want: 120_999}, // partition 1 idle again
	}
	var recs []arrow.RecordBatch
	for _, s := range append(append([]step(nil), before...), after...) {
		if s.ts == 0 {
			continue
		}
		b := array.NewRecordBuilder(mem, wmSchema)
		b.Field(0).(*array.Int64Builder).Append(s.ts)
		b.Field(1).(*array.TimestampBuilder).Append(arrow.Timestamp(s.ts))
		recs = append(recs, b.NewRecordBatch())
		b.Release()
	}
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	g := &ckGate{changed: make(chan struct{})}
	clock := &rndClock{t: time.Unix(1_700_000_000, 0)}
	graph := &JobGraph{
		Name: "wm-idle-restore",
		Vertices: []*Vertex{
			{Name: "src", Parallelism: 1, EventTime: &EventTime{Column: "ts"}, IdleTimeout: timeout,
				NewSource: func() Source {
					return &partCkSource{recs: recs, parts: make([]int, len(recs)), g: g, clock: clock}
				}},
			{Name: "sink", Parallelism: 1, NewOperator: func() Operator { return dropOp{} }},
		},
		Edges:      []Edge{{From: "src", To: "sink", Partitioning: Forward}},
		Checkpoint: &CheckpointConfig{Interval: time.Hour}, // the final one only
	}
	pl := Placement{{"src", 0}: "local", {"sink", 0}: "local"}
	read := 0
	runSteps := func(steps []step) {
		n, err := NewNode(NodeConfig{ID: "local", NATS: nc, Allocator: mem, State: st, Logger: testutil.TestLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		ctx, cancel := context.WithCancel(testutil.Context(t, time.Minute))
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- n.Run(ctx, graph, pl) }()
		rows := int64(0)
		for i, s := range steps {
			clock.advance(s.advance)
			if s.ts != 0 {
				read++
				rows++
				g.release(read)
			}
			testutil.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
				select {
				case err := <-done:
					t.Fatalf("the job ended: %v", err)
				default:
				}
				for _, is := range n.Stats(graph.Name) {
					if is.ID.Operator != "src" {
						continue
					}
					if is.RowsIn != rows || is.Watermark != s.want || is.Idle != s.idle {
						return fmt.Errorf("step %d: %d rows read, watermark %d, idle %v; want %d rows, watermark %d", i, is.RowsIn, is.Watermark, is.Idle, rows, s.want)
					}
					return nil
				}
				return errors.New("the job is not running yet")
			})
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("stop: %v, want a stop after the final checkpoint", err)
		}
	}
	runSteps(before)
	runSteps(after)
}

// countingSource counts the checkpoints a ckSource takes, and runs its
// instance's idle timers on clock.
type countingSource struct {
	*ckSource
	n     *atomic.Int64
	clock *rndClock
}

func (s countingSource) Open(ctx context.Context, oc OperatorContext) error {
	oc.(*instance).timers.now = s.clock.now
	return s.ckSource.Open(ctx, oc)
}

func (s countingSource) PrepareCheckpoint(ctx context.Context, id uint64) error {
	s.n.Add(1)
	return s.ckSource.PrepareCheckpoint(ctx, id)
}

// TestIdleWithCheckpoints: a quiet source goes idle once its idle timeout
// has passed since its last batch, even when checkpoints, taken between
// two of its reads, come more often than that: they do not restart its
// idle timer. The source's clock moves a quarter of the timeout at a time,
// each followed by a checkpoint.
func TestIdleWithCheckpoints(t *testing.T) {
	mem, nc, st := ckEnv(t)
	recs := ckBatches(t, mem, 2, 1)
	g := &ckGate{changed: make(chan struct{})}
	g.release(1) // one batch, then quiet
	var taken atomic.Int64
	const timeout = 40 * time.Millisecond
	clock := &rndClock{t: time.Unix(1_700_000_000, 0)}
	graph := &JobGraph{
		Name: "wm-idle-ckpt",
		Vertices: []*Vertex{
			{Name: "src", Parallelism: 1, IdleTimeout: timeout,
				NewSource: func() Source { return countingSource{&ckSource{recs: recs, g: g}, &taken, clock} }},
			{Name: "sink", Parallelism: 1, NewOperator: func() Operator { return dropOp{} }},
		},
		Edges:      []Edge{{From: "src", To: "sink", Partitioning: Forward}},
		Checkpoint: &CheckpointConfig{Interval: 10 * time.Millisecond},
	}
	n, err := NewNode(NodeConfig{ID: "local", NATS: nc, Allocator: mem, State: st, Logger: testutil.TestLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithCancel(testutil.Context(t, time.Minute))
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx, graph, Placement{{"src", 0}: "local", {"sink", 0}: "local"}) }()
	src := func() (InstanceStats, error) {
		for _, is := range n.Stats(graph.Name) {
			if is.ID.Operator == "src" {
				return is, nil
			}
		}
		return InstanceStats{}, errors.New("the job is not running yet")
	}
	testutil.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
		is, err := src()
		if err == nil && is.RowsIn != 1 {
			err = errors.New("the batch is not read yet")
		}
		return err
	})
	for k := 1; k <= 4; k++ {
		clock.advance(timeout / 4)
		before := taken.Load()
		testutil.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
			if taken.Load() <= before {
				return errors.New("no checkpoint since the clock moved")
			}
			return nil
		})
		if is, err := src(); k < 4 && (err != nil || is.Idle) {
			t.Fatalf("%v after the last batch: idle %v (%v), want active", time.Duration(k)*timeout/4, is.Idle, err)
		}
	}
	testutil.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
		is, err := src()
		if err == nil && !is.Idle {
			err = fmt.Errorf("the source is not idle %v after its last batch", timeout)
		}
		return err
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("stop: %v", err)
	}
}
