// Package meshflow is the API for pipeline authors: declare sources,
// vectorised transforms over Arrow record batches, key-by repartitioning,
// custom operators and sinks, then run the pipeline on an embedded node or a
// NATS cluster. Actors, NATS subjects and the state store stay behind it.
//
//	p := meshflow.NewPipeline("bids")
//	bids := p.Source("bids", meshflow.FromJetStream(meshflow.JetStreamSource{
//		Subjects: []string{"bids.in"}, Schema: schema}))
//	big := bids.Filter("big", meshflow.Col("price").Gt(1000))
//	eur := big.Map("eur", meshflow.Set("price_eur", meshflow.Col("price").Mul(0.0091)))
//	eur.KeyBy("auction").Process("per-auction", newTopBids, meshflow.Parallelism(4)).
//		To("out", meshflow.ToJetStream(meshflow.JetStreamSink{Subject: "bids.top"}))
//	err := meshflow.Run(ctx, p)
//
// # Arrow ownership
//
// Operators borrow their input batch: the engine releases it after Process
// returns (Retain it to keep it). Batches given to Emit, or returned by a
// batch function, are handed over to the engine, which releases them.
package meshflow

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/actors/operators"
	"github.com/meshflow/meshflow/internal/expr"
	"github.com/meshflow/meshflow/messages"
)

// Pipeline is a declared job: a graph of named operators. Building it
// starts nothing; errors are collected and returned by [Pipeline.Validate].
type Pipeline struct {
	name           string
	nodes          []*node
	errs           []error
	maxParallelism int
}

type nodeKind uint8

const (
	kindSource nodeKind = iota + 1
	kindOperator
	kindSink
)

type input struct {
	from *node
	key  []string
}

type node struct {
	name        string
	kind        nodeKind
	parallelism int
	inputs      []input
	schema      *arrow.Schema // output schema; nil when not known before running
	consumers   int

	source    Source
	sink      Sink
	newOp     func() actors.Operator
	eventTime *actors.EventTime
	idle      time.Duration

	// For validation and fusion.
	filter  expr.Expr
	project []string
	assigns []operators.Assignment
	union   bool
	custom  bool
	window  *windowNode
	join    *joinNode
}

// NewPipeline returns an empty pipeline. name identifies the job: letters,
// digits, '_' and '-'.
func NewPipeline(name string) *Pipeline {
	return &Pipeline{name: name}
}

// Name is the pipeline's name.
func (p *Pipeline) Name() string { return p.name }

// SetMaxParallelism sets the number of key groups of the pipeline's keyed
// edges (default 128): the highest parallelism a keyed operator can ever be
// rescaled to.
func (p *Pipeline) SetMaxParallelism(n int) { p.maxParallelism = n }

// Stream is the output of an operator.
type Stream struct {
	p   *Pipeline
	n   *node
	key []string
}

// Schema is the stream's schema, or nil when it is only known at run time
// (after a custom operator without [OutputSchema]).
func (s *Stream) Schema() *arrow.Schema { return s.n.schema }

// Option configures an operator.
type Option func(*node)

// Parallelism sets how many instances of the operator run (default 1).
func Parallelism(n int) Option { return func(nd *node) { nd.parallelism = n } }

// OutputSchema declares the schema a custom operator or batch function
// emits, so the operators after it are checked by Validate.
func OutputSchema(s *arrow.Schema) Option { return func(nd *node) { nd.schema = s } }

// EventTime makes a source derive watermarks from a timestamp column,
// allowing events to arrive up to maxOutOfOrderness late.
func EventTime(column string, maxOutOfOrderness time.Duration) Option {
	return func(nd *node) {
		nd.eventTime = &actors.EventTime{Column: column, MaxOutOfOrderness: maxOutOfOrderness}
	}
}

// IdleTimeout makes a source instance that has read no data for d stop
// holding back the watermark of the operators after it, until it reads
// data again. Off (zero) by default: what the source sends after it was
// idle may be late for the watermark that passed meanwhile.
func IdleTimeout(d time.Duration) Option { return func(nd *node) { nd.idle = d } }

func (p *Pipeline) add(n *node, opts []Option, inputs ...input) *Stream {
	n.parallelism = 1
	for _, o := range opts {
		o(n)
	}
	for _, in := range inputs {
		if in.from == nil {
			p.errs = append(p.errs, fmt.Errorf("operator %q: nil input stream", n.name))
			continue
		}
		in.from.consumers++
	}
	n.inputs = inputs
	p.nodes = append(p.nodes, n)
	return &Stream{p: p, n: n}
}

// Source adds a source operator.
func (p *Pipeline) Source(name string, src Source, opts ...Option) *Stream {
	n := &node{name: name, kind: kindSource, source: src}
	if src != nil {
		n.schema = src.schema()
	}
	return p.add(n, opts)
}

// Filter keeps the rows for which pred is true; a null result drops the row.
//
// A filter starts a fused chain: the filters and projections after it,
// each the only consumer of the one before, without KeyBy and with the
// same parallelism, run in the filter's instances as one operator. The
// chain evaluates its filters' predicates over the input and ANDs them,
// then copies only the kept rows of the columns the projections leave,
// once; the results, row positions and errors are those of the operators
// run apart. The job's status and stats show the chain under the first
// filter's name; the fused operators have no vertex of their own. A
// [Stream.Map] (which copies nothing it does not compute) ends a chain.
func (s *Stream) Filter(name string, pred Expr, opts ...Option) *Stream {
	n := &node{name: name, kind: kindOperator, filter: pred}
	n.newOp = func() actors.Operator { return operators.NewFilter(pred) }
	return s.p.add(n, opts, s.in())
}

// Project keeps the named columns, in that order, without copying data.
// [Stream.ProjectWith] takes options as well.
func (s *Stream) Project(name string, columns ...string) *Stream {
	return s.ProjectWith(name, columns, nil...)
}

// ProjectWith is [Stream.Project] with options, such as [Parallelism]. It
// is a variant rather than a change of Project because the columns are
// plain strings: no option type can share their variadic list without
// giving up type checking. A projection right after a [Stream.Filter] with
// the same parallelism is fused into it (see [Stream.Filter]).
func (s *Stream) ProjectWith(name string, columns []string, opts ...Option) *Stream {
	columns = slices.Clone(columns)
	if columns == nil {
		columns = []string{}
	}
	n := &node{name: name, kind: kindOperator, project: columns}
	n.newOp = func() actors.Operator { return operators.NewProject(columns...) }
	return s.p.add(n, opts, s.in())
}

// Assignment is one computed column of [Stream.Map], made by [Set].
type Assignment struct {
	Name string
	Expr Expr
}

// Set assigns the value of e to column name: an existing column is replaced
// in place, a new one appended.
func Set(name string, e Expr) Assignment { return Assignment{Name: name, Expr: e} }

// MapArg is an argument of [Stream.Map]: an [Assignment] or an [Option].
// Both go in Map's one variadic list, so that
//
//	s.Map("eur", meshflow.Set("price_eur", meshflow.Col("price").Mul(0.0091)), meshflow.Parallelism(4))
//
// reads like the other operators (whose options come last) while calls
// without options keep their form. The interface is sealed: only the
// package's Assignment and Option satisfy it.
type MapArg interface{ applyMap(*node) }

func (a Assignment) applyMap(n *node) {
	n.assigns = append(n.assigns, operators.Assignment{Name: a.Name, Expr: a.Expr})
}

func (o Option) applyMap(n *node) { o(n) }

// Map computes columns with expressions over its input batch; the options
// configure the operator.
func (s *Stream) Map(name string, args ...MapArg) *Stream {
	n := &node{name: name, kind: kindOperator}
	var opts []Option
	for _, a := range args {
		switch a := a.(type) {
		case Option:
			opts = append(opts, a)
		case nil:
			s.p.errs = append(s.p.errs, fmt.Errorf("operator %q: nil map argument", name))
		default:
			a.applyMap(n)
		}
	}
	assigns := n.assigns
	n.newOp = func() actors.Operator { return operators.NewMap(assigns...) }
	return s.p.add(n, opts, s.in())
}

// BatchFunc is a user function over one batch: in is borrowed, the returned
// batch is handed over to the engine (nil emits nothing; to pass in on,
// return it after in.Retain()). mem is the allocator for new batches.
type BatchFunc = operators.BatchFunc

// Apply runs fn on every batch. Declare its output schema with
// [OutputSchema] when it differs from the input's.
func (s *Stream) Apply(name string, fn BatchFunc, opts ...Option) *Stream {
	n := &node{name: name, kind: kindOperator, custom: true}
	n.newOp = func() actors.Operator { return operators.NewApply(fn) }
	return s.p.add(n, opts, s.in())
}

// Process adds a custom operator; factory builds one instance (called again
// for every restart).
func (s *Stream) Process(name string, factory func() Operator, opts ...Option) *Stream {
	n := &node{name: name, kind: kindOperator, custom: true}
	n.newOp = func() actors.Operator { return factory() }
	return s.p.add(n, opts, s.in())
}

// KeyBy repartitions the stream by the hash of columns: rows with equal keys
// reach the same instance of the next operator.
func (s *Stream) KeyBy(columns ...string) *Stream {
	return &Stream{p: s.p, n: s.n, key: slices.Clone(columns)}
}

// To adds a sink.
func (s *Stream) To(name string, sink Sink, opts ...Option) {
	n := &node{name: name, kind: kindSink, sink: sink}
	s.p.add(n, opts, s.in())
}

// Union merges streams of one schema.
func Union(name string, streams ...*Stream) *Stream {
	if len(streams) == 0 {
		p := &Pipeline{}
		p.errs = append(p.errs, errors.New("union: no streams"))
		return &Stream{p: p, n: &node{}}
	}
	p := streams[0].p
	ins := make([]input, len(streams))
	for i, s := range streams {
		if s.p != p {
			p.errs = append(p.errs, fmt.Errorf("union %q: streams of different pipelines", name))
		}
		ins[i] = s.in()
	}
	n := &node{name: name, kind: kindOperator, union: true}
	n.newOp = func() actors.Operator { return &operators.Union{} }
	return p.add(n, nil, ins...)
}

func (s *Stream) in() input { return input{from: s.n, key: s.key} }

// Validate checks the pipeline without running it: names, parallelism,
// graph shape, and — where schemas are known — every expression, column
// reference, key and sink encoding. It reports all problems together and
// never panics.
func (p *Pipeline) Validate() error {
	errs := slices.Clone(p.errs)
	add := func(n *node, format string, args ...any) {
		errs = append(errs, fmt.Errorf("operator %q: "+format, append([]any{n.name}, args...)...))
	}
	if len(p.nodes) == 0 {
		errs = append(errs, fmt.Errorf("pipeline %q has no operators", p.name))
	}
	for _, n := range p.nodes {
		if n.kind != kindSink && n.consumers == 0 {
			add(n, "its output goes nowhere (add a sink)")
		}
		var in *arrow.Schema
		if len(n.inputs) > 0 && n.inputs[0].from != nil {
			in = n.inputs[0].from.schema
		}
		for _, i := range n.inputs {
			if i.from == nil || i.from.schema == nil {
				continue
			}
			for _, k := range i.key {
				if len(i.from.schema.FieldIndices(k)) != 1 {
					add(n, "key column %q is not in its input (%s)", k, fieldNames(i.from.schema))
				}
			}
		}
		switch {
		case n.kind == kindSource:
			if n.source == nil {
				add(n, "nil source")
			} else if err := n.source.validate(); err != nil {
				add(n, "%v", err)
			}
			if n.eventTime != nil && n.schema != nil {
				ix := n.schema.FieldIndices(n.eventTime.Column)
				if len(ix) != 1 || n.schema.Field(ix[0]).Type.ID() != arrow.TIMESTAMP {
					add(n, "event-time column %q must be a timestamp column", n.eventTime.Column)
				}
			}
		case n.kind == kindSink:
			if n.sink == nil {
				add(n, "nil sink")
			} else if err := n.sink.validate(in); err != nil {
				add(n, "%v", err)
			}
		case n.filter != nil:
			n.schema = in
			if in != nil {
				b, err := expr.Bind(n.filter, in)
				if err != nil {
					add(n, "%v", err)
				} else if b.DataType().ID() != arrow.BOOL {
					add(n, "predicate %s is %s, not boolean", n.filter, b.DataType())
				}
			}
		case n.project != nil:
			if len(n.project) == 0 {
				add(n, "project needs at least one column")
			}
			if in != nil {
				fields := make([]arrow.Field, 0, len(n.project))
				for _, c := range n.project {
					ix := in.FieldIndices(c)
					if len(ix) != 1 {
						add(n, "column %q is not in its input (%s)", c, fieldNames(in))
						continue
					}
					fields = append(fields, in.Field(ix[0]))
				}
				n.schema = arrow.NewSchema(fields, nil)
			}
		case n.assigns != nil:
			if in != nil {
				fields := slices.Clone(in.Fields())
				for _, a := range n.assigns {
					b, err := expr.Bind(a.Expr, in)
					if err != nil {
						add(n, "%s: %v", a.Name, err)
						continue
					}
					f := arrow.Field{Name: a.Name, Type: b.DataType(), Nullable: true}
					if ix := in.FieldIndices(a.Name); len(ix) == 1 {
						fields[ix[0]] = f
					} else {
						fields = append(fields, f)
					}
				}
				n.schema = arrow.NewSchema(fields, nil)
			}
		case n.window != nil:
			if err := n.window.validate(in, n.parallelism); err != nil {
				add(n, "%v", err)
				break
			}
			cfg, _ := n.window.config(in)
			if t, err := newWindowTable(cfg); err == nil {
				n.schema = t.Schema()
			}
		case n.join != nil:
			s, err := n.join.validate(n)
			if err != nil {
				add(n, "%v", err)
			}
			n.schema = s
		case n.union:
			n.schema = in
			for _, i := range n.inputs[1:] {
				if in != nil && i.from.schema != nil && !sameFields(in, i.from.schema) {
					add(n, "input %q has schema %s, unlike %s", i.from.name, i.from.schema, in)
				}
			}
		}
	}
	if len(errs) == 0 {
		g, err := p.graph(nil)
		if err == nil {
			err = g.Validate()
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func fieldNames(s *arrow.Schema) string {
	names := make([]string, s.NumFields())
	for i, f := range s.Fields() {
		names[i] = f.Name
	}
	return "columns: " + strings.Join(names, ", ")
}

func sameFields(a, b *arrow.Schema) bool {
	if a.NumFields() != b.NumFields() {
		return false
	}
	for i := range a.Fields() {
		fa, fb := a.Field(i), b.Field(i)
		if fa.Name != fb.Name || !arrow.TypeEqual(fa.Type, fb.Type) || fa.Nullable != fb.Nullable {
			return false
		}
	}
	return true
}

// graph builds the job graph. env is nil when only validating. Chains of
// stateless operators starting with a filter are fused (see
// [Stream.Filter]) into one vertex named after the filter.
func (p *Pipeline) graph(env *runEnv) (*actors.JobGraph, error) {
	g := &actors.JobGraph{Name: p.name, MaxParallelism: p.maxParallelism}
	chainOf := map[*node]*node{}  // fused operator -> its chain's filter
	chains := map[*node][]*node{} // filter -> its chain, itself first
	for _, n := range p.nodes {
		if n.filter == nil && n.project == nil {
			continue
		}
		if len(n.inputs) == 1 && n.inputs[0].key == nil && n.inputs[0].from != nil {
			up := n.inputs[0].from
			head := up
			if h, ok := chainOf[up]; ok {
				head = h
			}
			if c, ok := chains[head]; ok && c[len(c)-1] == up && up.consumers == 1 &&
				up.parallelism == n.parallelism {
				chains[head] = append(c, n)
				chainOf[n] = head
				continue
			}
		}
		if n.filter != nil {
			chains[n] = []*node{n}
		}
	}
	vertexOf := func(n *node) string {
		if h, ok := chainOf[n]; ok {
			return h.name
		}
		return n.name
	}
	fused := map[*node][]operators.Stage{}
	for head, c := range chains {
		if len(c) < 2 {
			continue
		}
		stages := make([]operators.Stage, len(c))
		for i, n := range c {
			if n.filter != nil {
				stages[i] = operators.FilterStage(n.filter)
			} else {
				stages[i] = operators.ProjectStage(n.project...)
			}
		}
		if _, err := operators.NewFused(stages...); err != nil {
			return nil, fmt.Errorf("operator %q: %w", head.name, err)
		}
		fused[head] = stages
	}
	for _, n := range p.nodes {
		if _, ok := chainOf[n]; ok {
			continue
		}
		v := &actors.Vertex{Name: n.name, Parallelism: n.parallelism, EventTime: n.eventTime, IdleTimeout: n.idle}
		switch n.kind {
		case kindSource:
			if env != nil {
				v.NewSource = n.source.build(env)
			} else {
				v.NewSource = func() actors.Source { return nil }
			}
		case kindSink:
			if env != nil {
				v.NewOperator = n.sink.build(env)
			} else {
				v.NewOperator = func() actors.Operator { return nil }
			}
		default:
			v.NewOperator = n.newOp
			if n.window != nil {
				v.NewOperator = func() actors.Operator { return nil }
				if env != nil && len(n.inputs) > 0 && n.inputs[0].from != nil {
					v.NewOperator = n.window.build(env, n.inputs[0].from.schema)
				}
			}
			if n.join != nil {
				v.NewOperator = func() actors.Operator { return nil }
				if env != nil {
					v.NewOperator = n.join.build(env, n, vertexOf(n.inputs[0].from), vertexOf(n.inputs[1].from))
				}
			}
			if stages, ok := fused[n]; ok {
				v.NewOperator = func() actors.Operator {
					op, _ := operators.NewFused(stages...) // checked above
					return op
				}
			}
		}
		g.Vertices = append(g.Vertices, v)
		for _, in := range n.inputs {
			if in.from == nil {
				continue
			}
			from := g.Vertex(vertexOf(in.from))
			e := actors.Edge{From: vertexOf(in.from), To: n.name}
			switch {
			case in.key != nil:
				e.Partitioning, e.KeyColumns = actors.Hash, in.key
			case from != nil && from.Parallelism == n.parallelism:
				e.Partitioning = actors.Forward
			default:
				e.Partitioning = actors.Rebalance
			}
			g.Edges = append(g.Edges, e)
		}
	}
	return g, nil
}

// Operator is the contract of a custom operator; see [actors.Operator].
type Operator = actors.Operator

// Emitter takes the batches an operator produces.
type Emitter = actors.Emitter

// OperatorContext is what the engine offers an operator instance.
type OperatorContext = actors.OperatorContext

// Optional operator capabilities.
type (
	WatermarkHandler = actors.WatermarkHandler
	TimerHandler     = actors.TimerHandler
	Finisher         = actors.Finisher
	// CheckpointHandler is implemented by operators that keep state outside
	// their Store between checkpoints: PrepareCheckpoint writes it there.
	CheckpointHandler = actors.CheckpointHandler
	// CheckpointListener is implemented by operators that act when a
	// checkpoint completes (sinks publishing what they staged).
	CheckpointListener = actors.CheckpointListener
	Timer              = actors.Timer
	Watermark          = messages.Watermark
)

// Expr is a typed column expression, evaluated batch at a time.
type Expr = expr.Expr

// Col refers to a column by name.
func Col(name string) Expr { return expr.Col(name) }

// Lit is a literal value: int, int64, float64, string, bool, time.Time or
// nil.
func Lit(v any) Expr { return expr.Lit(v) }

// EmitSameRows emits rec whose row i is (derived from) row i of the batch
// being processed, so each row keeps its input position: a sink downstream
// then recognises the row when it is published again after a restart.
// Plain out.Emit gives the emitted rows positions derived from the input
// batch as a whole. Like Emit, it hands rec over.
func EmitSameRows(out Emitter, rec arrow.RecordBatch) { actors.EmitSameRows(out, rec) }

// EmitTaken emits rec whose row i is (derived from) row rows[i] of the
// batch being processed; see [EmitSameRows].
func EmitTaken(out Emitter, rec arrow.RecordBatch, rows []int32) {
	actors.EmitTaken(out, rec, rows)
}

// InputSeq is the sequence number of the batch being processed by the
// calling operator instance: stable when a batch is processed again after a
// restart, so sinks can derive idempotent ids from it.
func InputSeq(ctx context.Context) uint64 { return actors.InputSeq(ctx) }
