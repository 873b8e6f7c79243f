package meshflow

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/internal/kernels"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
)

var fusionSchema = arrow.NewSchema([]arrow.Field{
	{Name: "id", Type: arrow.PrimitiveTypes.Int64},
	{Name: "a", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "b", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "s", Type: arrow.BinaryTypes.String, Nullable: true},
}, nil)

// fusionBatches returns random batches of fusionSchema: id counts the rows,
// a in [-3, 3], b in [-20, 20], s one of x, y, z, each null one time in
// eight.
func fusionBatches(rng *rand.Rand, mem memory.Allocator) []arrow.RecordBatch {
	b := array.NewRecordBuilder(mem, fusionSchema)
	defer b.Release()
	var recs []arrow.RecordBatch
	id := int64(0)
	for range 8 {
		n := rng.IntN(300)
		for range n {
			b.Field(0).(*array.Int64Builder).Append(id)
			id++
			for c, span := range []int64{3, 20} {
				ib := b.Field(1 + c).(*array.Int64Builder)
				if rng.IntN(8) == 0 {
					ib.AppendNull()
				} else {
					ib.Append(rng.Int64N(2*span+1) - span)
				}
			}
			sb := b.Field(3).(*array.StringBuilder)
			if rng.IntN(8) == 0 {
				sb.AppendNull()
			} else {
				sb.Append([]string{"x", "y", "z"}[rng.IntN(3)])
			}
		}
		recs = append(recs, b.NewRecordBatch())
	}
	return recs
}

// positionedSource hands out borrowed batches with the position
// 10·id + 1 for each row.
type positionedSource struct {
	recs []arrow.RecordBatch
	i    int
	pos  []uint64
}

func (s *positionedSource) Open(context.Context, actors.OperatorContext) error { return nil }
func (s *positionedSource) Close(context.Context) error                        { return nil }
func (s *positionedSource) Read(context.Context) (arrow.RecordBatch, error) {
	if s.i == len(s.recs) {
		return nil, io.EOF
	}
	r := s.recs[s.i]
	s.i++
	r.Retain()
	s.pos = s.pos[:0]
	for _, id := range r.Column(0).(*array.Int64).Int64Values() {
		s.pos = append(s.pos, 10*uint64(id)+1)
	}
	return r, nil
}

func (s *positionedSource) Positions() []uint64 { return slices.Clone(s.pos) }

// rowSink writes every row it receives as text, with its position.
type rowSink struct {
	mu   *sync.Mutex
	rows *[]string
}

func (s rowSink) Open(context.Context, actors.OperatorContext) error { return nil }
func (s rowSink) Close(context.Context) error                        { return nil }
func (s rowSink) Process(ctx context.Context, in arrow.RecordBatch, _ actors.Emitter) error {
	l := actors.InputLineage(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range int(in.NumRows()) {
		var sb strings.Builder
		for c, col := range in.Columns() {
			fmt.Fprintf(&sb, "%s=%s ", in.Schema().Field(c).Name, col.ValueStr(i))
		}
		fmt.Fprintf(&sb, "@%d", l.At(i))
		*s.rows = append(*s.rows, sb.String())
	}
	return nil
}

// TestFusedChainEquivalence: chains of filters and projections give
// the same rows, in the same order, at the same positions, and fail with
// the same errors, fused (one vertex) as apart (a one-input Union between
// the operators keeps them apart), over random batches with nulls.
func TestFusedChainEquivalence(t *testing.T) {
	seed := testutil.Seed(t)
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	ctx := testutil.Context(t, time.Minute)
	type step func(s *Stream, name string) *Stream
	filter := func(e Expr) step { return func(s *Stream, n string) *Stream { return s.Filter(n, e) } }
	project := func(c ...string) step { return func(s *Stream, n string) *Stream { return s.Project(n, c...) } }
	mapc := func(as ...Assignment) step {
		return func(s *Stream, n string) *Stream {
			args := make([]MapArg, len(as))
			for i, a := range as {
				args[i] = a
			}
			return s.Map(n, args...)
		}
	}
	cases := []struct {
		name     string
		steps    []step
		vertices int   // of the fused job: source, chain(s), sink
		err      error // both fail with it
	}{
		{"two filters, project", []step{filter(Col("a").Gt(0)), filter(Col("b").Mod(3).Eq(0)), project("id", "b")}, 3, nil},
		{"three filters", []step{filter(Col("s").Eq("x")), filter(Col("a").Lt(Col("b"))), filter(Col("b").Ne(0))}, 3, nil},
		{"filter, project, filter", []step{filter(Col("a").Ge(0)), project("id", "b", "a"), filter(Col("b").Gt(Col("a"))), project("b", "id")}, 3, nil},
		{"filters, projects", []step{filter(Col("s").Ne("y")), filter(Col("a").Ne(0)), project("id", "a", "b"), project("id", "b")}, 3, nil},
		{"a map ends the chain", []step{filter(Col("a").Gt(-2)), project("id", "a"), mapc(Set("e", Col("a").Mul(2))), filter(Col("e").Ne(2)), project("id", "e")}, 5, nil},
		{"second predicate fails only on dropped rows", []step{filter(Col("a").Ne(0)), filter(Col("b").Mod(Col("a")).Eq(0)), project("id", "a", "b")}, 3, nil},
		{"second predicate fails on kept rows", []step{filter(Col("b").Gt(-100)), filter(Col("b").Mod(Col("a")).Eq(0))}, 3, kernels.ErrDivideByZero},
		{"first predicate fails", []step{filter(Col("b").Mod(Col("a")).Eq(1)), filter(Col("a").Ne(0))}, 3, kernels.ErrDivideByZero},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			recs := fusionBatches(rng, mem)
			defer func() {
				for _, r := range recs {
					r.Release()
				}
			}()
			run := func(fused bool) ([]string, int, error) {
				var rows []string
				p := NewPipeline(fmt.Sprintf("fusion-%d-%t", i, fused))
				s := p.Source("in", FromSource(fusionSchema, func() actors.Source { return &positionedSource{recs: recs} }))
				for k, st := range c.steps {
					if !fused && k > 0 {
						s = Union(fmt.Sprintf("apart%d", k), s)
					}
					s = st(s, fmt.Sprintf("op%d", k))
				}
				s.To("out", ToOperator(func() Operator { return rowSink{&sync.Mutex{}, &rows} }))
				if err := p.Validate(); err != nil {
					t.Fatal(err)
				}
				g, err := p.graph(nil)
				if err != nil {
					t.Fatal(err)
				}
				if fused && (g.Vertex("op0") == nil || g.Vertex("op1") != nil) {
					t.Errorf("the chain is not one vertex named after its first filter")
				}
				err = Run(ctx, p, WithNATS(nc), WithAllocator(mem), WithoutCheckpoints(), WithLogger(testutil.TestLogger(t)))
				return rows, len(g.Vertices), err
			}
			fused, nv, errF := run(true)
			apart, _, errA := run(false)
			if nv != c.vertices {
				t.Errorf("fused job has %d vertices, want %d", nv, c.vertices)
			}
			if c.err != nil {
				if !errors.Is(errF, c.err) || !errors.Is(errA, c.err) {
					t.Fatalf("fused: %v, apart: %v; want both %v", errF, errA, c.err)
				}
				return
			}
			if errF != nil || errA != nil {
				t.Fatalf("fused: %v, apart: %v", errF, errA)
			}
			if len(apart) == 0 {
				t.Fatalf("no rows: the case tests nothing")
			}
			if !slices.Equal(fused, apart) {
				t.Fatalf("fused rows differ:\n%s\napart:\n%s", strings.Join(fused, "\n"), strings.Join(apart, "\n"))
			}
			for _, r := range fused {
				var id, at uint64
				if k := strings.Index(r, "id="); k >= 0 {
					fmt.Sscanf(r[k:], "id=%d", &id)
					fmt.Sscanf(r[strings.LastIndexByte(r, '@'):], "@%d", &at)
					if at != 10*id+1 {
						t.Fatalf("row %q: position %d, want %d", r, at, 10*id+1)
					}
				}
			}
		})
	}
}
