package actors

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/meshflow/meshflow/internal/testutil"
	"github.com/meshflow/meshflow/messages"
)

var wmSchema = arrow.NewSchema([]arrow.Field{
	{Name: "v", Type: arrow.PrimitiveTypes.Int64},
	{Name: "ts", Type: arrow.FixedWidthTypes.Timestamp_us},
}, nil)

// dropOp consumes its input.
type dropOp struct{}

func (dropOp) Open(context.Context, OperatorContext) error { return nil }
func (dropOp) Close(context.Context) error                 { return nil }
func (dropOp) Process(context.Context, arrow.RecordBatch, Emitter) error {
	return nil
}

// TestStatsWatermark: Node.Stats reports each instance's watermark (the
// source's from its EventTime column, the operator's from its input) and,
// with an IdleTimeout, that the source and the operator after it are idle
// while the source reads nothing, and active again when it reads.
func TestStatsWatermark(t *testing.T) {
	for _, tc := range []struct {
		name string
		idle time.Duration
	}{
		{name: "no-idle-timeout"},
		{name: "idle-timeout", idle: 20 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem, nc, _ := ckEnv(t)
			b := array.NewRecordBuilder(mem, wmSchema)
			defer b.Release()
			recs := make([]arrow.RecordBatch, 3)
			for i := range recs {
				b.Field(0).(*array.Int64Builder).Append(int64(i))
				b.Field(1).(*array.TimestampBuilder).Append(arrow.Timestamp(1000 * (i + 1)))
				recs[i] = b.NewRecordBatch()
			}
			defer func() {
				for _, r := range recs {
					r.Release()
				}
			}()
			g := &ckGate{changed: make(chan struct{})}
			graph := &JobGraph{
				Name: "wm-stats-" + tc.name,
				Vertices: []*Vertex{
					{Name: "src", Parallelism: 1, NewSource: func() Source { return &ckSource{recs: recs, g: g} },
						EventTime: &EventTime{Column: "ts"}, IdleTimeout: tc.idle},
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
			// want: every instance at watermark wm, idle or not.
			want := func(wm messages.Watermark, idle bool) func() error {
				return func() error {
					st := n.Stats(graph.Name)
					if len(st) != 2 {
						return fmt.Errorf("%d instances in the stats", len(st))
					}
					for _, is := range st {
						if is.Watermark != wm || is.Idle != idle {
							return fmt.Errorf("%s: watermark %d idle %v, want %d idle %v", is.ID, is.Watermark, is.Idle, wm, idle)
						}
					}
					return nil
				}
			}
			testutil.CheckFor(t, 10*time.Second, time.Millisecond, want(messages.MinWatermark, false))
			g.release(1)
			if tc.idle == 0 {
				testutil.CheckFor(t, 10*time.Second, time.Millisecond, want(999, false))
			} else {
				testutil.CheckFor(t, 10*time.Second, time.Millisecond, want(999, true))
				g.release(2) // the source reads again: active, watermark on
				testutil.CheckFor(t, 10*time.Second, time.Millisecond, want(1999, false))
				testutil.CheckFor(t, 10*time.Second, time.Millisecond, want(1999, true))
			}
			g.release(3) // the last batch, then the end
			wg.Wait()
			if runErr != nil && !errors.Is(runErr, context.Canceled) {
				t.Fatal(runErr)
			}
		})
	}
}
