package actors

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
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
	st    persistence.Store
	next  int
	last  int
}

func (s *partCkSource) Partitions() int { return 2 }
func (s *partCkSource) Partition() int  { return s.last }

func (s *partCkSource) Open(ctx context.Context, oc OperatorContext) error {
	s.st = oc.State()
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
