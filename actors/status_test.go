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
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
	"github.com/meshflow/meshflow/messages/pb"
)

// TestStatusOverNATS: a job on two nodes ("a" runs the source, "b" the two
// sink instances) answers a status request on StatusSubject with one reply
// per node; RequestStatus gathers both and stops once they cover the job's
// three instances. The watermarks reported follow the source's batches. A
// job nobody runs is ErrJobNotRunning at once; a job one of whose nodes does
// not run it is ErrStatusIncomplete at the deadline, with the replies that
// came.
func TestStatusOverNATS(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	ncA, ncB, client := natstest.Connect(t, srv), natstest.Connect(t, srv), natstest.Connect(t, srv)
	in := make(chan partBatch, 16)
	mk := func(ts int64) arrow.RecordBatch {
		b := array.NewRecordBuilder(mem, wmSchema)
		defer b.Release()
		b.Field(0).(*array.Int64Builder).Append(ts)
		b.Field(1).(*array.TimestampBuilder).Append(arrow.Timestamp(ts))
		return b.NewRecordBatch()
	}
	graph := func(name string, in chan partBatch) *JobGraph {
		return &JobGraph{
			Name: name,
			Vertices: []*Vertex{
				{Name: "src", Parallelism: 1, NewSource: func() Source { return &partSource{in: in} }, EventTime: &EventTime{Column: "ts"}},
				{Name: "sink", Parallelism: 2, NewOperator: func() Operator { return dropOp{} }},
			},
			Edges: []Edge{{From: "src", To: "sink", Partitioning: Broadcast}},
		}
	}
	pl := Placement{{"src", 0}: "a", {"sink", 0}: "b", {"sink", 1}: "b"}
	nodeA, err := NewNode(NodeConfig{ID: "a", NATS: ncA, Allocator: mem, Logger: testutil.TestLogger(t), GrantInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer nodeA.Close()
	nodeB, err := NewNode(NodeConfig{ID: "b", NATS: ncB, Allocator: mem, Logger: testutil.TestLogger(t), GrantInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer nodeB.Close()

	ctx, cancel := context.WithCancel(testutil.Context(t, time.Minute))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	errs := make(chan error, 3)
	for _, n := range []*Node{nodeA, nodeB} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- n.Run(ctx, graph("status", in), pl)
		}()
	}

	// byInstance flattens the replies, checking each instance comes once
	// and from the node it is placed on.
	byInstance := func(rs []*pb.StatusReply) (map[InstanceID]*pb.InstanceStatus, error) {
		out := map[InstanceID]*pb.InstanceStatus{}
		for _, r := range rs {
			if r.Job != "status" || r.JobInstances != 3 {
				return nil, fmt.Errorf("reply of node %s: job %q of %d instances, want status of 3", r.Node, r.Job, r.JobInstances)
			}
			for _, is := range r.Instances {
				id := InstanceID{is.Operator, int(is.Instance)}
				if out[id] != nil {
					return nil, fmt.Errorf("%s reported twice", id)
				}
				if pl[id] != r.Node {
					return nil, fmt.Errorf("%s reported by node %s, placed on %s", id, r.Node, pl[id])
				}
				out[id] = is
			}
		}
		return out, nil
	}
	for step, ts := range []int64{5_000, 9_000} {
		in <- partBatch{rec: mk(ts)}
		want := ts - 1
		testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
			rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
			defer rcancel()
			rs, err := RequestStatus(rctx, client, "status")
			if err != nil {
				return err
			}
			if len(rs) != 2 {
				return fmt.Errorf("%d replies, want one per node", len(rs))
			}
			got, err := byInstance(rs)
			if err != nil {
				return err
			}
			for _, id := range []InstanceID{{"src", 0}, {"sink", 0}, {"sink", 1}} {
				is := got[id]
				if is == nil {
					return fmt.Errorf("no status of %s", id)
				}
				rows := int64(step + 1)
				if is.WatermarkUs != want || is.RowsIn != rows || is.BatchesIn != rows {
					return fmt.Errorf("step %d: %s: watermark %d, %d rows in %d batches; want %d, %d rows", step, id, is.WatermarkUs, is.RowsIn, is.BatchesIn, want, rows)
				}
				if wantVertex := map[string]int32{"src": 0, "sink": 1}[id.Operator]; is.Vertex != wantVertex {
					return fmt.Errorf("%s: vertex %d, want %d", id, is.Vertex, wantVertex)
				}
			}
			return nil
		})
	}

	t.Run("not running", func(t *testing.T) {
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		defer rcancel()
		start := time.Now()
		_, err := RequestStatus(rctx, client, "nope")
		if !errors.Is(err, ErrJobNotRunning) {
			t.Fatalf("status of a job nobody runs: %v, want ErrJobNotRunning", err)
		}
		if rctx.Err() != nil {
			t.Fatalf("ErrJobNotRunning only at the deadline (%v): want it at once", time.Since(start))
		}
	})

	t.Run("incomplete", func(t *testing.T) {
		// A node a runs its part of job "half"; no node b does. Its
		// source cannot drain into the missing sinks: a short drain.
		half, err := NewNode(NodeConfig{ID: "a", NATS: natstest.Connect(t, srv), Allocator: mem, Logger: testutil.TestLogger(t), DrainTimeout: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer half.Close()
		hctx, hcancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- half.Run(hctx, graph("half", make(chan partBatch)), pl) }()
		defer func() {
			hcancel()
			<-done
		}()
		testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			rctx, rcancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer rcancel()
			rs, err := RequestStatus(rctx, client, "half")
			if !errors.Is(err, ErrStatusIncomplete) || !errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("status of a half-running job: %v, want ErrStatusIncomplete", err)
			}
			if len(rs) != 1 || rs[0].Node != "a" || len(rs[0].Instances) != 1 {
				return fmt.Errorf("replies %v, want node a's", rs)
			}
			return nil
		})
	})

	close(in)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if is := nodeA.Stats("status"); is != nil {
		t.Errorf("stats after the job ended: %v", is)
	}
}
