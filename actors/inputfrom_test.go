package actors_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/actors/operators"
	"github.com/meshflow/meshflow/internal/natstest"
)

// fromRecorder records, per InputFrom, the values of column 1 it got.
type fromRecorder struct {
	mu  *sync.Mutex
	got map[string][]int64
}

func (r *fromRecorder) Open(context.Context, actors.OperatorContext) error { return nil }
func (r *fromRecorder) Close(context.Context) error                        { return nil }
func (r *fromRecorder) Process(ctx context.Context, in arrow.RecordBatch, _ actors.Emitter) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	from := actors.InputFrom(ctx)
	r.got[from] = append(r.got[from], in.Column(1).(*array.Int64).Int64Values()...)
	return nil
}

// TestInputFrom: an operator with two inputs learns which one each batch
// comes from.
func TestInputFrom(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	nc := natstest.Connect(t, natstest.RunJetStream(t))
	a, b := numBatches(mem, 3, 10), numBatches(mem, 5, 10) // values 0..29 and 0..49
	defer func() {
		for _, r := range append(a, b...) {
			r.Release()
		}
	}()
	var mu sync.Mutex
	rec := &fromRecorder{mu: &mu, got: map[string][]int64{}}
	g := &actors.JobGraph{
		Name: "inputfrom",
		Vertices: []*actors.Vertex{
			{Name: "a", Parallelism: 1, NewSource: func() actors.Source { return &operators.Batches{Recs: a} }},
			{Name: "b", Parallelism: 1, NewSource: func() actors.Source { return &operators.Batches{Recs: b} }},
			{Name: "sink", Parallelism: 1, NewOperator: func() actors.Operator { return rec }},
		},
		Edges: []actors.Edge{{From: "a", To: "sink", Partitioning: actors.Forward}, {From: "b", To: "sink", Partitioning: actors.Forward}},
	}
	n := newNode(t, "local", nc, mem)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Run(ctx, g, actors.Placement{{Operator: "a"}: "local", {Operator: "b"}: "local", {Operator: "sink"}: "local"}); err != nil {
		t.Fatal(err)
	}
	for from, want := range map[string]int{"a": 30, "b": 50} {
		got := rec.got[from]
		if len(got) != want {
			t.Fatalf("from %q: %d rows, want %d", from, len(got), want)
		}
		for i, v := range got {
			if v != int64(i) {
				t.Fatalf("from %q: row %d is %d: %v", from, i, v, fmt.Sprint(got))
			}
		}
	}
	if len(rec.got) != 2 {
		t.Fatalf("inputs %v, want a and b", rec.got)
	}
}
