package actors

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/meshflow/meshflow/internal/testutil"
	"github.com/meshflow/meshflow/messages"
)

// partBatch is a batch of a partSource and its partition.
type partBatch struct {
	rec  arrow.RecordBatch
	part int
}

// partSource returns the batches the test sends it, each of its partition;
// it ends when the channel is closed. partitionedSource is the same source
// as a Partitioned one.
type partSource struct {
	in          chan partBatch
	parts, last int
}

type partitionedSource struct{ *partSource }

func (s *partitionedSource) Partitions() int { return s.parts }
func (s *partitionedSource) Partition() int  { return s.last }

func (s *partSource) Open(context.Context, OperatorContext) error { return nil }
func (s *partSource) Close(context.Context) error                 { return nil }
func (s *partSource) Read(ctx context.Context) (arrow.RecordBatch, error) {
	select {
	case b, ok := <-s.in:
		if !ok {
			return nil, io.EOF
		}
		s.last = b.part
		return b.rec, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// TestPartitionWatermarks: a Partitioned source's watermark is the minimum
// over its partitions (a partition not yet read holds it at the start); a
// source that is not Partitioned takes each batch's watermark. With an
// IdleTimeout, a quiet partition stops holding the watermark while another
// partition reads on, and a late batch of it does not move the watermark
// back.
func TestPartitionWatermarks(t *testing.T) {
	const min = messages.MinWatermark
	for _, tc := range []struct {
		name        string
		partitioned bool
		idle        time.Duration
		// after batches (partition, ts) one at a time: the source's watermark
		script []struct {
			part int
			ts   int64
			want messages.Watermark
		}
	}{
		{name: "minimum over partitions", partitioned: true, script: []struct {
			part int
			ts   int64
			want messages.Watermark
		}{{0, 10_000, min}, {1, 2_000, 1_999}, {0, 30_000, 1_999}, {1, 40_000, 29_999}}},
		{name: "not partitioned", script: []struct {
			part int
			ts   int64
			want messages.Watermark
		}{{0, 10_000, 9_999}, {1, 2_000, 9_999}, {0, 30_000, 29_999}, {1, 40_000, 39_999}}},
		{name: "idle partition", partitioned: true, idle: 20 * time.Millisecond, script: []struct {
			part int
			ts   int64
			want messages.Watermark
		}{{0, 10_000, min}, {1, 2_000, 1_999}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem, nc, _ := ckEnv(t)
			in := make(chan partBatch, 1024)
			defer func() {
				for {
					select {
					case b, ok := <-in:
						if !ok {
							return
						}
						b.rec.Release()
					default:
						return
					}
				}
			}()
			mk := func(ts int64) arrow.RecordBatch {
				b := array.NewRecordBuilder(mem, wmSchema)
				defer b.Release()
				b.Field(0).(*array.Int64Builder).Append(ts)
				b.Field(1).(*array.TimestampBuilder).Append(arrow.Timestamp(ts))
				return b.NewRecordBatch()
			}
			newSrc := func() Source {
				s := &partSource{in: in, parts: 2}
				if tc.partitioned {
					return &partitionedSource{s}
				}
				return s
			}
			graph := &JobGraph{
				Name: "wm-parts",
				Vertices: []*Vertex{
					{Name: "src", Parallelism: 1, NewSource: newSrc, EventTime: &EventTime{Column: "ts"}, IdleTimeout: tc.idle},
					{Name: "sink", Parallelism: 1, NewOperator: func() Operator { return dropOp{} }},
				},
				Edges: []Edge{{From: "src", To: "sink", Partitioning: Forward}},
			}
			n, err := NewNode(NodeConfig{ID: "local", NATS: nc, Allocator: mem, Logger: testutil.TestLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			ctx, cancel := context.WithCancel(testutil.Context(t, time.Minute))
			var wg sync.WaitGroup
			defer wg.Wait()
			defer cancel() // before the wait: a failed check ends the job
			var runErr error
			wg.Add(1)
			go func() {
				defer wg.Done()
				runErr = n.Run(ctx, graph, Placement{{"src", 0}: "local", {"sink", 0}: "local"})
			}()
			var rows int64
			srcStats := func() (InstanceStats, error) {
				for _, is := range n.Stats(graph.Name) {
					if is.ID.Operator == "src" {
						return is, nil
					}
				}
				return InstanceStats{}, errors.New("no stats for src")
			}
			for i, st := range tc.script {
				in <- partBatch{mk(st.ts), st.part}
				rows++
				testutil.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
					is, err := srcStats()
					if err != nil {
						return err
					}
					if is.RowsIn != rows || is.Watermark != st.want {
						return fmt.Errorf("after batch %d: %d rows read, watermark %d; want %d rows, watermark %d", i, is.RowsIn, is.Watermark, rows, st.want)
					}
					return nil
				})
			}
			if tc.idle > 0 {
				// Partition 0 reads on, partition 1 is quiet: once it is
				// idle, the watermark follows partition 0 alone.
				ts := int64(10_000)
				testutil.CheckFor(t, 10*time.Second, 2*time.Millisecond, func() error {
					ts += 1_000
					in <- partBatch{mk(ts), 0}
					is, err := srcStats()
					if err != nil {
						return err
					}
					if is.Watermark <= 1_999 {
						return fmt.Errorf("watermark %d: partition 1 still holds it", is.Watermark)
					}
					return nil
				})
				is, _ := srcStats()
				// A late batch of partition 1 rejoins it: the watermark
				// does not go back, and is held by partition 1 now.
				in <- partBatch{mk(3_000), 1}
				testutil.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
					got, err := srcStats()
					if err != nil {
						return err
					}
					if got.RowsIn <= is.RowsIn || got.Watermark < is.Watermark {
						return fmt.Errorf("watermark %d after the late batch (%d before), rows %d", got.Watermark, is.Watermark, got.RowsIn)
					}
					return nil
				})
			}
			close(in)
			wg.Wait()
			if runErr != nil {
				t.Fatal(runErr)
			}
		})
	}
}
