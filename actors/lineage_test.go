package actors_test

import (
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/actors/operators"
	"github.com/meshflow/meshflow/cluster"
	"github.com/meshflow/meshflow/internal/expr"
	"github.com/meshflow/meshflow/internal/natstest"
)

// posOf is the input position the test source gives the row with value v.
func posOf(v int64) uint64 { return uint64(v)*7 + 3 }

// positioned is a source giving every row the position posOf(v).
type positioned struct {
	recs []arrow.RecordBatch
	next int
	last arrow.RecordBatch
}

func (p *positioned) Open(context.Context, actors.OperatorContext) error { return nil }
func (p *positioned) Close(context.Context) error                        { return nil }
func (p *positioned) Read(context.Context) (arrow.RecordBatch, error) {
	if p.next == len(p.recs) {
		return nil, io.EOF
	}
	p.last = p.recs[p.next]
	p.next++
	p.last.Retain()
	return p.last, nil
}
func (p *positioned) Positions() []uint64 {
	vs := p.last.Column(1).(*array.Int64).Int64Values()
	pos := make([]uint64, len(vs))
	for i, v := range vs {
		pos[i] = posOf(v)
	}
	return pos
}

type lineageRow struct {
	origin string
	pos    uint64
}

// lineageSink records the lineage of every row it gets, by value.
type lineageSink struct {
	mu   *sync.Mutex
	rows map[int64][]lineageRow
}

func (s lineageSink) Open(context.Context, actors.OperatorContext) error { return nil }
func (s lineageSink) Close(context.Context) error                        { return nil }
func (s lineageSink) Process(ctx context.Context, in arrow.RecordBatch, _ actors.Emitter) error {
	l := actors.InputLineage(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, v := range in.Column(1).(*array.Int64).Int64Values() {
		s.rows[v] = append(s.rows[v], lineageRow{l.Origin, l.At(i)})
	}
	return nil
}

// TestLineageFollowsRows runs a positioned source through a filter, a
// keyed edge that crosses NATS to another node, and a fan-out to two
// sinks; a third branch goes through an operator that emits with plain
// Emit. Every row that reaches the keyed sinks carries the position its
// source gave it; the branches of the fan-out get distinct origins; the
// plain-Emit branch gets an origin derived from its input, the same when
// the job runs again.
func TestLineageFollowsRows(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	recs := numBatches(mem, 20, 500)
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	run := func() (keyed, side, applied map[int64][]lineageRow) {
		keyed, side, applied = map[int64][]lineageRow{}, map[int64][]lineageRow{}, map[int64][]lineageRow{}
		mu := &sync.Mutex{}
		g := &actors.JobGraph{
			Name: "lineage",
			Vertices: []*actors.Vertex{
				{Name: "src", Parallelism: 1, NewSource: func() actors.Source { return &positioned{recs: recs} }},
				{Name: "odd", Parallelism: 2, NewOperator: func() actors.Operator {
					return operators.NewFilter(expr.Col("k").Lt(50))
				}},
				{Name: "keyed", Parallelism: 3, NewOperator: func() actors.Operator { return lineageSink{mu, keyed} }},
				{Name: "side", Parallelism: 1, NewOperator: func() actors.Operator { return lineageSink{mu, side} }},
				{Name: "apply", Parallelism: 1, NewOperator: func() actors.Operator {
					return operators.NewApply(func(_ context.Context, _ memory.Allocator, in arrow.RecordBatch) (arrow.RecordBatch, error) {
						in.Retain()
						return in, nil
					})
				}},
				{Name: "applied", Parallelism: 1, NewOperator: func() actors.Operator { return lineageSink{mu, applied} }},
			},
			Edges: []actors.Edge{
				{From: "src", To: "odd", Partitioning: actors.Rebalance},
				{From: "odd", To: "keyed", Partitioning: actors.Hash, KeyColumns: []string{"k"}},
				{From: "odd", To: "side", Partitioning: actors.Rebalance},
				{From: "src", To: "apply", Partitioning: actors.Forward},
				{From: "apply", To: "applied", Partitioning: actors.Forward},
			},
		}
		pl, err := cluster.Pinned{Operators: map[string]string{"keyed": "b"}, Default: "a"}.Place(g, []string{"a", "b"})
		if err != nil {
			t.Fatal(err)
		}
		nodeA := newNode(t, "a", natstest.Connect(t, srv), mem)
		nodeB := newNode(t, "b", natstest.Connect(t, srv), mem)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		errs := make(chan error, 2)
		go func() { errs <- nodeB.Run(ctx, g, pl) }()
		go func() { errs <- nodeA.Run(ctx, g, pl) }()
		for i := 0; i < 2; i++ {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		return keyed, side, applied
	}
	keyed, side, applied := run()
	origins := map[string]bool{}
	for v := int64(0); v < 10_000; v++ {
		for name, got := range map[string]map[int64][]lineageRow{"keyed": keyed, "side": side} {
			rows := got[v]
			if v%97 >= 50 {
				if len(rows) != 0 {
					t.Fatalf("%s: filtered-out value %d arrived", name, v)
				}
				continue
			}
			if len(rows) != 1 || rows[0].pos != posOf(v) || !strings.HasPrefix(rows[0].origin, "src/") {
				t.Fatalf("%s: value %d arrived as %+v, want once at position %d from src/<edge>", name, v, rows, posOf(v))
			}
			origins[name+"="+rows[0].origin] = true
		}
		if len(applied[v]) != 1 || !strings.HasPrefix(applied[v][0].origin, "apply#") {
			t.Fatalf("applied: value %d arrived as %+v, want once with an origin derived by apply", v, applied[v])
		}
	}
	if len(origins) != 2 {
		t.Fatalf("fan-out branches share origins: %v", origins)
	}
	_, _, again := run()
	for v, rows := range applied {
		if again[v][0] != rows[0] {
			t.Fatalf("value %d: derived lineage %+v in the first run, %+v in the second", v, rows[0], again[v][0])
		}
	}
}
