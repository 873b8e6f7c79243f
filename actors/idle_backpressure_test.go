package actors

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/meshflow/meshflow/internal/testutil"
)

// gateOp blocks in Process until its channel is closed.
type gateOp struct {
	open      <-chan struct{}
	processed *atomic.Int64
}

func (gateOp) Open(context.Context, OperatorContext) error { return nil }
func (gateOp) Close(context.Context) error                 { return nil }
func (o gateOp) Process(ctx context.Context, _ arrow.RecordBatch, _ Emitter) error {
	select {
	case <-o.open:
	case <-ctx.Done():
		return ctx.Err()
	}
	o.processed.Add(1)
	return nil
}

// TestIdleNotUnderBackpressure: a source whose outputs are full because
// its consumer is slow is held back, not idle: however long the
// backpressure lasts (many idle timeouts on the source's clock), it does
// not go idle, so its rows never become late for a watermark that passed
// them meanwhile; once the consumer drains, it reads on.
func TestIdleNotUnderBackpressure(t *testing.T) {
	mem, nc, st := ckEnv(t)
	const batches = 64
	recs := ckBatches(t, mem, batches, 1)
	g := &ckGate{changed: make(chan struct{})}
	g.release(batches) // all there: the source always has data
	var taken, processed atomic.Int64
	const timeout = 40 * time.Millisecond
	clock := &rndClock{t: time.Unix(1_700_000_000, 0)}
	open := make(chan struct{})
	graph := &JobGraph{
		Name: "wm-idle-backpressure",
		Vertices: []*Vertex{
			{Name: "src", Parallelism: 1, IdleTimeout: timeout,
				NewSource: func() Source { return countingSource{&ckSource{recs: recs, g: g}, &taken, clock} }},
			{Name: "slow", Parallelism: 1, NewOperator: func() Operator { return gateOp{open, &processed} }},
		},
		Edges: []Edge{{From: "src", To: "slow", Partitioning: Forward}},
	}
	n, err := NewNode(NodeConfig{ID: "local", NATS: nc, Allocator: mem, State: st, Logger: testutil.TestLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithCancel(testutil.Context(t, time.Minute))
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx, graph, Placement{{"src", 0}: "local", {"slow", 0}: "local"}) }()
	src := func() (InstanceStats, error) {
		for _, is := range n.Stats(graph.Name) {
			if is.ID.Operator == "src" {
				return is, nil
			}
		}
		return InstanceStats{}, errors.New("the job is not running yet")
	}
	// The source reads until its output is full, then waits.
	var stuck int64
	testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		is, err := src()
		if err != nil {
			return err
		}
		if is.RowsIn == 0 || is.RowsIn != stuck {
			stuck = is.RowsIn
			return fmt.Errorf("the source is still reading (%d rows)", is.RowsIn)
		}
		return nil
	})
	if stuck >= batches {
		t.Fatalf("the source read all %d batches: no backpressure", stuck)
	}
	// Ten idle timeouts on the source's clock, each given time for the
	// idle checks (every quarter of the timeout, in real time) to run.
	for range 10 {
		clock.advance(timeout)
		time.Sleep(timeout / 2) // real time for the idle checks; nothing is awaited
		if is, err := src(); err != nil || is.Idle {
			t.Fatalf("source under backpressure: idle %v (%v), want active", is.Idle, err)
		}
	}
	close(open)
	testutil.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
		if p := processed.Load(); p < batches {
			return fmt.Errorf("%d of %d batches processed", p, batches)
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("stop: %v", err)
	}
}
