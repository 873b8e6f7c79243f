// Package operators holds Meshflow's built-in operators: vectorised filter,
// project and map over Arrow batches (expressions evaluated with tight loops
// over column buffers, arrow compute kernels where those are the better
// choice), user batch functions, union, a printing sink and bounded
// in-memory sources.
//
// All of them follow the runtime's ownership rule: the input batch is
// borrowed, emitted batches are handed over.
package operators

import (
	"context"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/internal/expr"
	"github.com/meshflow/meshflow/internal/kernels"
)

// base holds what every built-in operator keeps from Open.
type base struct {
	mem memory.Allocator
}

func (b *base) Open(_ context.Context, oc actors.OperatorContext) error {
	b.mem = oc.Allocator()
	return nil
}

func (b *base) Close(context.Context) error { return nil }

// boundCache binds an expression once per input schema.
type boundCache struct {
	e      expr.Expr
	schema *arrow.Schema
	bound  expr.Bound
}

func (c *boundCache) get(s *arrow.Schema) (expr.Bound, error) {
	if c.bound != nil && (c.schema == s || c.schema.Equal(s)) {
		return c.bound, nil
	}
	b, err := expr.Bind(c.e, s)
	if err != nil {
		return nil, err
	}
	c.schema, c.bound = s, b
	return b, nil
}

// Filter keeps the rows for which a predicate is true (null counts as
// false). With Columns set it also projects: only those columns are copied.
type Filter struct {
	base
	pred    boundCache
	Columns []string
	proj    projection
}

// NewFilter returns a filter on pred, projecting to columns when any are
// given.
func NewFilter(pred expr.Expr, columns ...string) *Filter {
	return &Filter{pred: boundCache{e: pred}, Columns: columns}
}

func (f *Filter) Process(ctx context.Context, in arrow.RecordBatch, out actors.Emitter) error {
	b, err := f.pred.get(in.Schema())
	if err != nil {
		return err
	}
	// The mask is released before Process returns: recycled memory.
	m, err := b.Eval(ctx, expr.Scratch(), in)
	if err != nil {
		return fmt.Errorf("filter %s: %w", f.pred.e, err)
	}
	defer m.Release()
	mask, ok := m.(*array.Boolean)
	if !ok {
		return fmt.Errorf("filter %s: predicate is %s, not boolean", f.pred.e, m.DataType())
	}
	src := in
	if len(f.Columns) > 0 {
		p, err := f.proj.apply(in, f.Columns)
		if err != nil {
			return err
		}
		defer p.Release()
		src = p
	}
	res, err := kernels.Filter(f.mem, src, mask)
	if err != nil {
		return fmt.Errorf("filter %s: %w", f.pred.e, err)
	}
	actors.EmitSelected(out, res, mask)
	return nil
}

// projection caches the column indexes and output schema of a projection
// per input schema.
type projection struct {
	in   *arrow.Schema
	idx  []int
	out  *arrow.Schema
	cols []arrow.Array
}

func (p *projection) apply(in arrow.RecordBatch, columns []string) (arrow.RecordBatch, error) {
	if p.in != in.Schema() {
		idx := make([]int, len(columns))
		fields := make([]arrow.Field, len(columns))
		for i, name := range columns {
			ix := in.Schema().FieldIndices(name)
			if len(ix) != 1 {
				return nil, fmt.Errorf("project: column %q not in %s", name, in.Schema())
			}
			idx[i], fields[i] = ix[0], in.Schema().Field(ix[0])
		}
		md := in.Schema().Metadata()
		p.in, p.idx, p.out = in.Schema(), idx, arrow.NewSchema(fields, &md)
		p.cols = make([]arrow.Array, len(columns))
	}
	for i, ix := range p.idx {
		p.cols[i] = in.Column(ix)
	}
	return array.NewRecordBatch(p.out, p.cols, in.NumRows()), nil
}

// Project keeps the named columns, in that order, without copying them.
type Project struct {
	base
	Columns []string
	proj    projection
}

// NewProject returns a projection to columns.
func NewProject(columns ...string) *Project { return &Project{Columns: columns} }

func (p *Project) Process(_ context.Context, in arrow.RecordBatch, out actors.Emitter) error {
	rec, err := p.proj.apply(in, p.Columns)
	if err != nil {
		return err
	}
	actors.EmitSameRows(out, rec)
	return nil
}

// Assignment sets column Name to the value of Expr.
type Assignment struct {
	Name string
	Expr expr.Expr
}

// Map computes columns from expressions: an assignment to an existing
// column replaces it in place, others are appended in order.
type Map struct {
	base
	Assign []Assignment
	bound  []boundCache
	schema *arrow.Schema
	out    *arrow.Schema
	target []int // output position per assignment
}

// NewMap returns a map applying assigns.
func NewMap(assigns ...Assignment) *Map {
	m := &Map{Assign: assigns, bound: make([]boundCache, len(assigns))}
	for i, a := range assigns {
		m.bound[i] = boundCache{e: a.Expr}
	}
	return m
}

func (m *Map) Process(ctx context.Context, in arrow.RecordBatch, out actors.Emitter) error {
	vals := make([]arrow.Array, len(m.Assign))
	defer func() {
		for _, v := range vals {
			if v != nil {
				v.Release()
			}
		}
	}()
	for i := range m.Assign {
		b, err := m.bound[i].get(in.Schema())
		if err != nil {
			return fmt.Errorf("map %s: %w", m.Assign[i].Name, err)
		}
		v, err := b.Eval(ctx, m.mem, in)
		if err != nil {
			return fmt.Errorf("map %s = %s: %w", m.Assign[i].Name, m.Assign[i].Expr, err)
		}
		vals[i] = v
	}
	if m.schema != in.Schema() {
		fields := append([]arrow.Field(nil), in.Schema().Fields()...)
		m.target = make([]int, len(m.Assign))
		for i, a := range m.Assign {
			f := arrow.Field{Name: a.Name, Type: vals[i].DataType(), Nullable: true}
			if ix := in.Schema().FieldIndices(a.Name); len(ix) == 1 {
				fields[ix[0]] = f
				m.target[i] = ix[0]
			} else {
				m.target[i] = len(fields)
				fields = append(fields, f)
			}
		}
		md := in.Schema().Metadata()
		m.schema, m.out = in.Schema(), arrow.NewSchema(fields, &md)
	}
	cols := make([]arrow.Array, m.out.NumFields())
	copy(cols, in.Columns())
	for i, t := range m.target {
		cols[t] = vals[i]
	}
	actors.EmitSameRows(out, array.NewRecordBatch(m.out, cols, in.NumRows()))
	return nil
}

// BatchFunc is a user function over one batch. in is borrowed; the returned
// batch is handed over (nil emits nothing). It may return in itself after
// in.Retain().
type BatchFunc func(ctx context.Context, mem memory.Allocator, in arrow.RecordBatch) (arrow.RecordBatch, error)

// Apply runs a BatchFunc on every batch.
type Apply struct {
	base
	Fn BatchFunc
}

// NewApply returns an operator running fn.
func NewApply(fn BatchFunc) *Apply { return &Apply{Fn: fn} }

func (a *Apply) Process(ctx context.Context, in arrow.RecordBatch, out actors.Emitter) error {
	rec, err := a.Fn(ctx, a.mem, in)
	if err != nil {
		return err
	}
	if rec != nil {
		out.Emit(rec)
	}
	return nil
}

// Union forwards every batch of all its inputs unchanged. Its inputs must
// share one schema.
type Union struct {
	base
	schema *arrow.Schema
}

func (u *Union) Process(_ context.Context, in arrow.RecordBatch, out actors.Emitter) error {
	if u.schema == nil {
		u.schema = in.Schema()
	} else if u.schema != in.Schema() && !u.schema.Equal(in.Schema()) {
		return fmt.Errorf("union: input schema %s differs from %s", in.Schema(), u.schema)
	}
	in.Retain()
	actors.EmitSameRows(out, in)
	return nil
}
