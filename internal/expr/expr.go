// Package expr holds typed column expressions, evaluated a batch at a time
// with the vectorised kernels of internal/kernels.
//
// An [Expr] is built from [Col] and [Lit] and chained methods
// (Col("price").Gt(1000).And(Col("channel").Eq("web"))). [Bind] checks it
// against a schema, once per schema, and returns a [Bound] expression that
// evaluates whole batches.
//
// Types: a Go literal takes the type of the column it meets when its value
// fits (an int literal compared with an int16 column is an int16; with a
// float64 column, a float64); time.Time literals are timestamps and take
// the unit of the timestamp column they meet. Arithmetic on int64 is
// checked (overflow and integer division by zero are errors); int64 mixed
// with float64 computes in float64. Nulls propagate through comparisons and
// arithmetic; And and Or follow Kleene logic (false AND null is false).
package expr

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/arrow/scalar"

	"github.com/meshflow/meshflow/internal/kernels"
)

// Expr is a column expression. Method arguments are expressions or Go
// literals (see [Lit]).
type Expr interface {
	fmt.Stringer
	Eq(v any) Expr
	Ne(v any) Expr
	Lt(v any) Expr
	Le(v any) Expr
	Gt(v any) Expr
	Ge(v any) Expr
	Add(v any) Expr
	Sub(v any) Expr
	Mul(v any) Expr
	Div(v any) Expr
	And(v any) Expr
	Or(v any) Expr
	Not() Expr
	IsNull() Expr
	IsNotNull() Expr

	node() *node
}

type kind uint8

const (
	kCol kind = iota + 1
	kLit
	kCmp
	kArith
	kAnd
	kOr
	kNot
	kIsNull
	kIsNotNull
)

type node struct {
	kind  kind
	name  string        // kCol
	lit   scalar.Scalar // kLit
	err   error         // kLit: a literal of an unsupported Go type
	cmp   kernels.CmpOp
	arith kernels.ArithOp
	args  []*node
}

func (n *node) node() *node { return n }

// Col refers to the column called name.
func Col(name string) Expr { return &node{kind: kCol, name: name} }

// Lit is a literal: nil, bool, int, int8…int64, uint, uint8…uint64,
// float32, float64, string, []byte, time.Time (a timestamp in µs, UTC) or
// an arrow scalar.Scalar.
func Lit(v any) Expr {
	s, err := literal(v)
	return &node{kind: kLit, lit: s, err: err}
}

func literal(v any) (scalar.Scalar, error) {
	switch x := v.(type) {
	case nil:
		return scalar.MakeNullScalar(arrow.Null), nil
	case bool:
		return scalar.NewBooleanScalar(x), nil
	case int:
		return scalar.NewInt64Scalar(int64(x)), nil
	case int8:
		return scalar.NewInt8Scalar(x), nil
	case int16:
		return scalar.NewInt16Scalar(x), nil
	case int32:
		return scalar.NewInt32Scalar(x), nil
	case int64:
		return scalar.NewInt64Scalar(x), nil
	case uint:
		return scalar.NewUint64Scalar(uint64(x)), nil
	case uint8:
		return scalar.NewUint8Scalar(x), nil
	case uint16:
		return scalar.NewUint16Scalar(x), nil
	case uint32:
		return scalar.NewUint32Scalar(x), nil
	case uint64:
		return scalar.NewUint64Scalar(x), nil
	case float32:
		return scalar.NewFloat32Scalar(x), nil
	case float64:
		return scalar.NewFloat64Scalar(x), nil
	case string:
		return scalar.NewStringScalar(x), nil
	case []byte:
		return scalar.NewBinaryScalar(memory.NewBufferBytes(append([]byte(nil), x...)), arrow.BinaryTypes.Binary), nil
	case time.Time:
		return scalar.NewTimestampScalar(arrow.Timestamp(x.UnixMicro()), &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}), nil
	case scalar.Scalar:
		return x, nil
	}
	return nil, fmt.Errorf("unsupported literal %v of type %T", v, v)
}

func toNode(v any) *node {
	if e, ok := v.(Expr); ok && e != nil {
		return e.node()
	}
	return Lit(v).node()
}

func (n *node) Eq(v any) Expr { return &node{kind: kCmp, cmp: kernels.Eq, args: []*node{n, toNode(v)}} }
func (n *node) Ne(v any) Expr { return &node{kind: kCmp, cmp: kernels.Ne, args: []*node{n, toNode(v)}} }
func (n *node) Lt(v any) Expr { return &node{kind: kCmp, cmp: kernels.Lt, args: []*node{n, toNode(v)}} }
func (n *node) Le(v any) Expr { return &node{kind: kCmp, cmp: kernels.Le, args: []*node{n, toNode(v)}} }
func (n *node) Gt(v any) Expr { return &node{kind: kCmp, cmp: kernels.Gt, args: []*node{n, toNode(v)}} }
func (n *node) Ge(v any) Expr { return &node{kind: kCmp, cmp: kernels.Ge, args: []*node{n, toNode(v)}} }
func (n *node) Add(v any) Expr {
	return &node{kind: kArith, arith: kernels.Add, args: []*node{n, toNode(v)}}
}
func (n *node) Sub(v any) Expr {
	return &node{kind: kArith, arith: kernels.Sub, args: []*node{n, toNode(v)}}
}
func (n *node) Mul(v any) Expr {
	return &node{kind: kArith, arith: kernels.Mul, args: []*node{n, toNode(v)}}
}
func (n *node) Div(v any) Expr {
	return &node{kind: kArith, arith: kernels.Div, args: []*node{n, toNode(v)}}
}
func (n *node) And(v any) Expr  { return &node{kind: kAnd, args: []*node{n, toNode(v)}} }
func (n *node) Or(v any) Expr   { return &node{kind: kOr, args: []*node{n, toNode(v)}} }
func (n *node) Not() Expr       { return &node{kind: kNot, args: []*node{n}} }
func (n *node) IsNull() Expr    { return &node{kind: kIsNull, args: []*node{n}} }
func (n *node) IsNotNull() Expr { return &node{kind: kIsNotNull, args: []*node{n}} }

func (n *node) String() string {
	var b strings.Builder
	n.write(&b)
	return b.String()
}

func (n *node) write(b *strings.Builder) {
	switch n.kind {
	case kCol:
		b.WriteString(n.name)
	case kLit:
		b.WriteString(litString(n.lit, n.err))
	case kCmp, kArith, kAnd, kOr:
		op := map[kind]string{kAnd: "AND", kOr: "OR"}[n.kind]
		if n.kind == kCmp {
			op = n.cmp.String()
		} else if n.kind == kArith {
			op = n.arith.String()
		}
		b.WriteByte('(')
		n.args[0].write(b)
		b.WriteString(" " + op + " ")
		n.args[1].write(b)
		b.WriteByte(')')
	case kNot:
		b.WriteString("NOT ")
		n.args[0].write(b)
	case kIsNull, kIsNotNull:
		b.WriteByte('(')
		n.args[0].write(b)
		if n.kind == kIsNull {
			b.WriteString(" IS NULL)")
		} else {
			b.WriteString(" IS NOT NULL)")
		}
	}
}

func litString(s scalar.Scalar, err error) string {
	switch {
	case err != nil:
		return "<bad literal>"
	case !s.IsValid():
		return "NULL"
	}
	switch x := s.(type) {
	case *scalar.String:
		return strconv.Quote(x.String())
	case *scalar.Timestamp:
		return x.String()
	}
	return s.String()
}

// Bound is an expression bound to a schema.
type Bound interface {
	// DataType is the type of the values Eval returns.
	DataType() arrow.DataType
	// Eval evaluates the expression over rec (borrowed, of the bound
	// schema) and returns an array of rec.NumRows() values, owned by the
	// caller.
	Eval(ctx context.Context, mem memory.Allocator, rec arrow.RecordBatch) (arrow.Array, error)
}

// Bind checks e against schema and prepares it for evaluation. Errors name
// the expression and the offending column or types.
func Bind(e Expr, schema *arrow.Schema) (Bound, error) {
	if e == nil {
		return nil, errors.New("expr: nil expression")
	}
	b, err := bind(e.node(), schema)
	if err != nil {
		return nil, fmt.Errorf("expr %s: %w", e, err)
	}
	return &bound{root: b}, nil
}

// evaluator is a bound node. eval returns an array or, for constant
// subexpressions, a scalar.
type evaluator interface {
	dataType() arrow.DataType
	eval(mem memory.Allocator, rec arrow.RecordBatch) (datum, error)
}

// datum is an owned array or a scalar.
type datum struct {
	arr arrow.Array
	sc  scalar.Scalar
}

func (d datum) release() {
	if d.arr != nil {
		d.arr.Release()
	}
}

// array broadcasts a scalar datum to n rows; the result is owned.
func (d datum) array(mem memory.Allocator, n int) (arrow.Array, error) {
	if d.arr != nil {
		return d.arr, nil
	}
	return broadcast(mem, d.sc, n)
}

func broadcast(mem memory.Allocator, s scalar.Scalar, n int) (a arrow.Array, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("broadcast %s: %v", s.DataType(), p)
		}
	}()
	return scalar.MakeArrayFromScalar(s, n, mem)
}

type bound struct{ root evaluator }

func (b *bound) DataType() arrow.DataType { return b.root.dataType() }

func (b *bound) Eval(ctx context.Context, mem memory.Allocator, rec arrow.RecordBatch) (arrow.Array, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d, err := b.root.eval(mem, rec)
	if err != nil {
		return nil, err
	}
	return d.array(mem, int(rec.NumRows()))
}

func bind(n *node, s *arrow.Schema) (evaluator, error) {
	switch n.kind {
	case kCol:
		idx := s.FieldIndices(n.name)
		if len(idx) == 0 {
			names := make([]string, s.NumFields())
			for i, f := range s.Fields() {
				names[i] = f.Name
			}
			return nil, fmt.Errorf("no column %q (columns: %s)", n.name, strings.Join(names, ", "))
		}
		if len(idx) > 1 {
			return nil, fmt.Errorf("column name %q is ambiguous", n.name)
		}
		return &colEval{idx: idx[0], dt: s.Field(idx[0]).Type}, nil
	case kLit:
		if n.err != nil {
			return nil, n.err
		}
		return &litEval{s: n.lit}, nil
	case kNot, kIsNull, kIsNotNull:
		a, err := bind(n.args[0], s)
		if err != nil {
			return nil, err
		}
		if n.kind == kNot {
			if err := wantBool(a, n.args[0]); err != nil {
				return nil, err
			}
			return &notEval{a: a}, nil
		}
		return &nullEval{a: a, isNull: n.kind == kIsNull}, nil
	}
	l, err := bind(n.args[0], s)
	if err != nil {
		return nil, err
	}
	r, err := bind(n.args[1], s)
	if err != nil {
		return nil, err
	}
	l, r = coerce(l, r), coerce(r, l)
	switch n.kind {
	case kAnd, kOr:
		for i, e := range []evaluator{l, r} {
			if err := wantBool(e, n.args[i]); err != nil {
				return nil, err
			}
		}
		return &logicEval{and: n.kind == kAnd, l: l, r: r}, nil
	case kCmp:
		lt, rt := l.dataType(), r.dataType()
		if lt.ID() != arrow.NULL && rt.ID() != arrow.NULL {
			if err := kernels.CompareTypes(lt, rt); err != nil {
				return nil, fmt.Errorf("cannot compare %s (%s) with %s (%s)", n.args[0], lt, n.args[1], rt)
			}
		}
		return &cmpEval{op: n.cmp, l: l, r: r}, nil
	case kArith:
		lt, rt := l.dataType(), r.dataType()
		dt, err := kernels.ArithResultType(n.arith, lt, rt)
		if err != nil {
			return nil, fmt.Errorf("cannot compute %s (%s) %s %s (%s)", n.args[0], lt, n.arith, n.args[1], rt)
		}
		return &arithEval{op: n.arith, l: l, r: r, dt: dt}, nil
	}
	return nil, fmt.Errorf("unknown expression kind %d", n.kind)
}

func wantBool(e evaluator, n *node) error {
	if id := e.dataType().ID(); id != arrow.BOOL && id != arrow.NULL {
		return fmt.Errorf("%s is %s, not boolean", n, e.dataType())
	}
	return nil
}

// coerce gives a literal the type of the other operand when its value fits
// that type exactly.
func coerce(e, other evaluator) evaluator {
	lit, ok := e.(*litEval)
	if !ok {
		return e
	}
	to := other.dataType()
	from := lit.s.DataType()
	if arrow.TypeEqual(from, to) || to.ID() == arrow.NULL {
		return e
	}
	if !lit.s.IsValid() {
		return &litEval{s: scalar.MakeNullScalar(to)}
	}
	if c, ok := castExact(lit.s, to); ok {
		return &litEval{s: c}
	}
	return e
}

// castExact converts s to type to when no value is lost.
func castExact(s scalar.Scalar, to arrow.DataType) (scalar.Scalar, bool) {
	var i int64
	var u uint64
	var f float64
	isUint, isFloat := false, false
	switch x := s.(type) {
	case *scalar.Int8:
		i = int64(x.Value)
	case *scalar.Int16:
		i = int64(x.Value)
	case *scalar.Int32:
		i = int64(x.Value)
	case *scalar.Int64:
		i = x.Value
	case *scalar.Uint8:
		u, isUint = uint64(x.Value), true
	case *scalar.Uint16:
		u, isUint = uint64(x.Value), true
	case *scalar.Uint32:
		u, isUint = uint64(x.Value), true
	case *scalar.Uint64:
		u, isUint = x.Value, true
	case *scalar.Float32:
		f, isFloat = float64(x.Value), true
	case *scalar.Float64:
		f, isFloat = x.Value, true
	case *scalar.Timestamp:
		ts, ok := to.(*arrow.TimestampType)
		if !ok {
			return nil, false
		}
		from := x.DataType().(*arrow.TimestampType)
		var t time.Time
		v := int64(x.Value)
		switch from.Unit {
		case arrow.Second:
			t = time.Unix(v, 0)
		case arrow.Millisecond:
			t = time.UnixMilli(v)
		case arrow.Microsecond:
			t = time.UnixMicro(v)
		default:
			t = time.Unix(0, v)
		}
		var out int64
		switch ts.Unit {
		case arrow.Second:
			out = t.Unix()
		case arrow.Millisecond:
			out = t.UnixMilli()
		case arrow.Microsecond:
			out = t.UnixMicro()
		default:
			out = t.UnixNano()
		}
		return scalar.NewTimestampScalar(arrow.Timestamp(out), ts), true
	case *scalar.String:
		if to.ID() == arrow.LARGE_STRING {
			return scalar.NewLargeStringScalar(x.String()), true
		}
		return nil, false
	default:
		return nil, false
	}
	if isUint {
		if u > math.MaxInt64 {
			if to.ID() == arrow.UINT64 {
				return scalar.NewUint64Scalar(u), true
			}
			return nil, false
		}
		i = int64(u)
	}
	if isFloat {
		if f != math.Trunc(f) || math.Abs(f) >= 1<<63 {
			switch to.ID() {
			case arrow.FLOAT32:
				if float64(float32(f)) == f {
					return scalar.NewFloat32Scalar(float32(f)), true
				}
			case arrow.FLOAT64:
				return scalar.NewFloat64Scalar(f), true
			}
			return nil, false
		}
		if to.ID() == arrow.FLOAT32 || to.ID() == arrow.FLOAT64 {
			if to.ID() == arrow.FLOAT32 {
				return scalar.NewFloat32Scalar(float32(f)), float64(float32(f)) == f
			}
			return scalar.NewFloat64Scalar(f), true
		}
		i = int64(f)
	}
	in := func(lo, hi int64) bool { return i >= lo && i <= hi }
	switch to.ID() {
	case arrow.INT8:
		return scalar.NewInt8Scalar(int8(i)), in(math.MinInt8, math.MaxInt8)
	case arrow.INT16:
		return scalar.NewInt16Scalar(int16(i)), in(math.MinInt16, math.MaxInt16)
	case arrow.INT32:
		return scalar.NewInt32Scalar(int32(i)), in(math.MinInt32, math.MaxInt32)
	case arrow.INT64:
		return scalar.NewInt64Scalar(i), true
	case arrow.UINT8:
		return scalar.NewUint8Scalar(uint8(i)), in(0, math.MaxUint8)
	case arrow.UINT16:
		return scalar.NewUint16Scalar(uint16(i)), in(0, math.MaxUint16)
	case arrow.UINT32:
		return scalar.NewUint32Scalar(uint32(i)), in(0, math.MaxUint32)
	case arrow.UINT64:
		return scalar.NewUint64Scalar(uint64(i)), i >= 0
	case arrow.FLOAT32:
		return scalar.NewFloat32Scalar(float32(i)), int64(float32(i)) == i
	case arrow.FLOAT64:
		return scalar.NewFloat64Scalar(float64(i)), int64(float64(i)) == i
	}
	return nil, false
}

type colEval struct {
	idx int
	dt  arrow.DataType
}

func (c *colEval) dataType() arrow.DataType { return c.dt }
func (c *colEval) eval(_ memory.Allocator, rec arrow.RecordBatch) (datum, error) {
	a := rec.Column(c.idx)
	a.Retain()
	return datum{arr: a}, nil
}

type litEval struct{ s scalar.Scalar }

func (l *litEval) dataType() arrow.DataType { return l.s.DataType() }
func (l *litEval) eval(memory.Allocator, arrow.RecordBatch) (datum, error) {
	return datum{sc: l.s}, nil
}

// evalBoth evaluates both operands; on error nothing is left owned.
func evalBoth(mem memory.Allocator, rec arrow.RecordBatch, l, r evaluator) (datum, datum, error) {
	ld, err := l.eval(mem, rec)
	if err != nil {
		return datum{}, datum{}, err
	}
	rd, err := r.eval(mem, rec)
	if err != nil {
		ld.release()
		return datum{}, datum{}, err
	}
	return ld, rd, nil
}

type cmpEval struct {
	op   kernels.CmpOp
	l, r evaluator
}

func (c *cmpEval) dataType() arrow.DataType { return arrow.FixedWidthTypes.Boolean }
func (c *cmpEval) eval(mem memory.Allocator, rec arrow.RecordBatch) (datum, error) {
	ld, rd, err := evalBoth(mem, rec, c.l, c.r)
	if err != nil {
		return datum{}, err
	}
	defer ld.release()
	defer rd.release()
	n := int(rec.NumRows())
	var out *array.Boolean
	switch {
	case ld.arr != nil && rd.arr != nil:
		out, err = kernels.Compare(mem, c.op, ld.arr, rd.arr)
	case ld.arr != nil:
		out, err = kernels.CompareScalar(mem, c.op, ld.arr, rd.sc)
	case rd.arr != nil:
		out, err = kernels.CompareScalar(mem, c.op.Swap(), rd.arr, ld.sc)
	default:
		var la arrow.Array
		if la, err = broadcast(mem, ld.sc, n); err == nil {
			out, err = kernels.CompareScalar(mem, c.op, la, rd.sc)
			la.Release()
		}
	}
	if err != nil {
		return datum{}, err
	}
	return datum{arr: out}, nil
}

type arithEval struct {
	op   kernels.ArithOp
	l, r evaluator
	dt   arrow.DataType
}

func (a *arithEval) dataType() arrow.DataType { return a.dt }
func (a *arithEval) eval(mem memory.Allocator, rec arrow.RecordBatch) (datum, error) {
	ld, rd, err := evalBoth(mem, rec, a.l, a.r)
	if err != nil {
		return datum{}, err
	}
	defer ld.release()
	defer rd.release()
	var out arrow.Array
	switch {
	case ld.arr != nil && rd.arr != nil:
		out, err = kernels.Arith(mem, a.op, ld.arr, rd.arr)
	case ld.arr != nil:
		out, err = kernels.ArithScalar(mem, a.op, ld.arr, rd.sc)
	case rd.arr != nil:
		out, err = kernels.ScalarArith(mem, a.op, ld.sc, rd.arr)
	default:
		var la arrow.Array
		if la, err = broadcast(mem, ld.sc, int(rec.NumRows())); err == nil {
			out, err = kernels.ArithScalar(mem, a.op, la, rd.sc)
			la.Release()
		}
	}
	if err != nil {
		return datum{}, err
	}
	return datum{arr: out}, nil
}

// boolArray evaluates e as a boolean array of n rows (a null literal
// becomes all nulls).
func boolArray(mem memory.Allocator, rec arrow.RecordBatch, e evaluator) (*array.Boolean, error) {
	d, err := e.eval(mem, rec)
	if err != nil {
		return nil, err
	}
	if d.sc != nil && !d.sc.IsValid() {
		d.sc = scalar.MakeNullScalar(arrow.FixedWidthTypes.Boolean)
	}
	a, err := d.array(mem, int(rec.NumRows()))
	if err != nil {
		return nil, err
	}
	b, ok := a.(*array.Boolean)
	if !ok {
		a.Release()
		return nil, fmt.Errorf("expected boolean, got %s", a.DataType())
	}
	return b, nil
}

type logicEval struct {
	and  bool
	l, r evaluator
}

func (l *logicEval) dataType() arrow.DataType { return arrow.FixedWidthTypes.Boolean }
func (l *logicEval) eval(mem memory.Allocator, rec arrow.RecordBatch) (datum, error) {
	a, err := boolArray(mem, rec, l.l)
	if err != nil {
		return datum{}, err
	}
	defer a.Release()
	b, err := boolArray(mem, rec, l.r)
	if err != nil {
		return datum{}, err
	}
	defer b.Release()
	var out *array.Boolean
	if l.and {
		out, err = kernels.And(mem, a, b)
	} else {
		out, err = kernels.Or(mem, a, b)
	}
	if err != nil {
		return datum{}, err
	}
	return datum{arr: out}, nil
}

type notEval struct{ a evaluator }

func (n *notEval) dataType() arrow.DataType { return arrow.FixedWidthTypes.Boolean }
func (n *notEval) eval(mem memory.Allocator, rec arrow.RecordBatch) (datum, error) {
	a, err := boolArray(mem, rec, n.a)
	if err != nil {
		return datum{}, err
	}
	defer a.Release()
	return datum{arr: kernels.Not(mem, a)}, nil
}

type nullEval struct {
	a      evaluator
	isNull bool
}

func (n *nullEval) dataType() arrow.DataType { return arrow.FixedWidthTypes.Boolean }
func (n *nullEval) eval(mem memory.Allocator, rec arrow.RecordBatch) (datum, error) {
	d, err := n.a.eval(mem, rec)
	if err != nil {
		return datum{}, err
	}
	defer d.release()
	if d.sc != nil {
		return datum{sc: scalar.NewBooleanScalar(d.sc.IsValid() != n.isNull)}, nil
	}
	rows := d.arr.Len()
	vals := memory.NewResizableBuffer(mem)
	vals.Resize(int(bitutil.BytesForBits(int64(rows))))
	out := vals.Bytes()
	data := d.arr.Data()
	if data.NullN() == 0 || len(data.Buffers()) == 0 || data.Buffers()[0] == nil {
		// A null-typed array has no bitmap and is all null.
		allNull := d.arr.DataType().ID() == arrow.NULL
		fill := byte(0)
		if allNull == n.isNull {
			fill = 0xff
		}
		for i := range out {
			out[i] = fill
		}
	} else {
		bitutil.CopyBitmap(data.Buffers()[0].Bytes(), data.Offset(), rows, out, 0)
		if n.isNull {
			bitutil.InvertBitmap(out, 0, rows, out, 0)
		}
	}
	res := array.NewData(arrow.FixedWidthTypes.Boolean, rows, []*memory.Buffer{nil, vals}, nil, 0, 0)
	vals.Release()
	defer res.Release()
	return datum{arr: array.MakeFromData(res)}, nil
}
