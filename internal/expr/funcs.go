package expr

import (
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/arrow/scalar"

	"github.com/meshflow/meshflow/internal/kernels"
)

// strFunc is a string function.
type strFunc uint8

const (
	fContains strFunc = iota + 1
	fHasPrefix
	fHasSuffix
	fLower
	fUpper
	fRegexpExtract
)

var strFuncNames = [...]string{
	fContains: "contains", fHasPrefix: "starts_with", fHasSuffix: "ends_with",
	fLower: "lower", fUpper: "upper", fRegexpExtract: "regexp_extract",
}

func (n *node) Mod(v any) Expr { return n.binary(kMod, v) }

func (n *node) str(f strFunc, text string, group int) Expr {
	return &node{kind: kStr, args: []*node{n}, fn: f, text: text, group: group}
}

func (n *node) Contains(substr string) Expr  { return n.str(fContains, substr, 0) }
func (n *node) HasPrefix(prefix string) Expr { return n.str(fHasPrefix, prefix, 0) }
func (n *node) HasSuffix(suffix string) Expr { return n.str(fHasSuffix, suffix, 0) }
func (n *node) Lower() Expr                  { return n.str(fLower, "", 0) }
func (n *node) Upper() Expr                  { return n.str(fUpper, "", 0) }
func (n *node) RegexpExtract(pattern string, group int) Expr {
	return n.str(fRegexpExtract, pattern, group)
}

func (n *node) Truncate(step time.Duration) Expr {
	return &node{kind: kTrunc, args: []*node{n}, step: step}
}

// writeFunc writes a function call: lower(url), contains(url, "x"),
// regexp_extract(url, "/(\d+)", 1), truncate(date_time, 1m0s).
func (n *node) writeFunc(b *strings.Builder) {
	if n.kind == kTrunc {
		b.WriteString("truncate(")
		n.args[0].write(b)
		b.WriteString(", " + n.step.String() + ")")
		return
	}
	b.WriteString(strFuncNames[n.fn] + "(")
	n.args[0].write(b)
	switch n.fn {
	case fContains, fHasPrefix, fHasSuffix:
		b.WriteString(", " + strconv.Quote(n.text))
	case fRegexpExtract:
		b.WriteString(", " + strconv.Quote(n.text) + ", " + strconv.Itoa(n.group))
	}
	b.WriteByte(')')
}

func bindMod(n *node, l, r evaluator) (evaluator, error) {
	l, r, lt, rt, allNull := numericOperands(l, r)
	if allNull {
		return nullOf(arrow.Null), nil
	}
	dt, err := kernels.ModResultType(lt, rt)
	if err != nil {
		return nil, errorf(ErrType, "cannot compute %s (%s) %% %s (%s)", n.args[0], l.dataType(), n.args[1], r.dataType())
	}
	if l.dataType().ID() == arrow.NULL || r.dataType().ID() == arrow.NULL {
		return nullOf(dt), nil
	}
	return &modEval{l: l, r: r, dt: dt}, nil
}

type modEval struct {
	l, r evaluator
	dt   arrow.DataType
}

func (m *modEval) dataType() arrow.DataType { return m.dt }

func (m *modEval) eval(mem memory.Allocator, rec arrow.RecordBatch) (datum, error) {
	return evalBinary(mem, rec, m.l, m.r,
		func(l, r arrow.Array) (arrow.Array, error) { return kernels.Mod(mem, l, r) },
		func(l arrow.Array, r scalar.Scalar) (arrow.Array, error) { return kernels.ModScalar(mem, l, r) },
		func(l scalar.Scalar, r arrow.Array) (arrow.Array, error) { return kernels.ScalarMod(mem, l, r) })
}

func bindStr(n *node, a evaluator) (evaluator, error) {
	dt := a.dataType()
	var out arrow.DataType = arrow.FixedWidthTypes.Boolean
	textual := dt.ID() == arrow.STRING || dt.ID() == arrow.LARGE_STRING
	ok := textual
	switch n.fn {
	case fContains, fHasPrefix, fHasSuffix:
		ok = textual || dt.ID() == arrow.BINARY || dt.ID() == arrow.LARGE_BINARY
	default:
		out = dt
	}
	if dt.ID() == arrow.NULL {
		if out.ID() == arrow.NULL {
			out = arrow.BinaryTypes.String
		}
		return nullOf(out), nil
	}
	if !ok {
		return nil, errorf(ErrType, "%s: %s is %s, not a string", strFuncNames[n.fn], n.args[0], dt)
	}
	s := &strEval{fn: n.fn, a: a, dt: out, text: []byte(n.text), group: n.group}
	if n.fn == fRegexpExtract {
		re, err := regexp.Compile(n.text)
		if err != nil {
			return nil, errorf(ErrArgument, "regexp_extract: %w", err)
		}
		if n.group < 0 || n.group > re.NumSubexp() {
			return nil, errorf(ErrArgument, "regexp_extract: group %d of %q, which has %d", n.group, n.text, re.NumSubexp())
		}
		s.re = re
	}
	return s, nil
}

type strEval struct {
	fn    strFunc
	a     evaluator
	dt    arrow.DataType
	text  []byte
	re    *regexp.Regexp // safe for concurrent use
	group int
}

func (s *strEval) dataType() arrow.DataType { return s.dt }

func (s *strEval) eval(mem memory.Allocator, rec arrow.RecordBatch) (datum, error) {
	d, err := s.a.eval(scratch(mem), rec)
	if err != nil {
		return datum{}, err
	}
	if d.sc != nil && !d.sc.IsValid() {
		return datum{sc: scalar.MakeNullScalar(s.dt)}, nil
	}
	a, err := d.array(scratch(mem), int(rec.NumRows()))
	if err != nil {
		return datum{}, err
	}
	defer a.Release()
	var out arrow.Array
	switch s.fn {
	case fContains:
		out, err = kernels.MatchString(mem, kernels.Contains, a, s.text)
	case fHasPrefix:
		out, err = kernels.MatchString(mem, kernels.HasPrefix, a, s.text)
	case fHasSuffix:
		out, err = kernels.MatchString(mem, kernels.HasSuffix, a, s.text)
	case fLower:
		out, err = kernels.MapCase(mem, kernels.Lower, a)
	case fUpper:
		out, err = kernels.MapCase(mem, kernels.Upper, a)
	default:
		out, err = kernels.RegexpExtract(mem, a, s.re, s.group)
	}
	if err != nil {
		return datum{}, err
	}
	return datum{arr: out}, nil
}

func bindTrunc(n *node, a evaluator) (evaluator, error) {
	dt := a.dataType()
	if dt.ID() == arrow.NULL {
		return a, nil
	}
	ts, ok := dt.(*arrow.TimestampType)
	if !ok {
		return nil, errorf(ErrType, "truncate: %s is %s, not a timestamp", n.args[0], dt)
	}
	unit := time.Duration(ts.Unit.Multiplier())
	if n.step <= 0 || n.step%unit != 0 {
		return nil, errorf(ErrArgument, "truncate: step %s is not a positive whole number of %s", n.step, ts.Unit)
	}
	return &truncEval{a: a, step: int64(n.step / unit)}, nil
}

type truncEval struct {
	a    evaluator
	step int64 // in ticks of the column's unit
}

func (t *truncEval) dataType() arrow.DataType { return t.a.dataType() }

func (t *truncEval) eval(mem memory.Allocator, rec arrow.RecordBatch) (datum, error) {
	d, err := t.a.eval(scratch(mem), rec)
	if err != nil {
		return datum{}, err
	}
	if d.sc != nil && !d.sc.IsValid() {
		return d, nil
	}
	a, err := d.array(scratch(mem), int(rec.NumRows()))
	if err != nil {
		return datum{}, err
	}
	defer a.Release()
	out, err := kernels.TruncateTime(mem, a, t.step)
	if err != nil {
		return datum{}, err
	}
	return datum{arr: out}, nil
}

// fuseModCompare turns x % d = c and x % d != c, with x int64 and d, c
// non-null int64 literals (d != 0), into one pass that produces the
// boolean without materialising the remainders.
func fuseModCompare(ev evaluator) evaluator {
	c, ok := ev.(*cmpEval)
	if !ok || c.op != kernels.Eq && c.op != kernels.Ne {
		return ev
	}
	m, ok := c.l.(*modEval)
	if !ok || m.l.dataType().ID() != arrow.INT64 {
		return ev
	}
	d, ok1 := int64Literal(m.r)
	v, ok2 := int64Literal(c.r)
	if !ok1 || !ok2 || d == 0 {
		return ev
	}
	return &modCmpEval{x: m.l, d: d, op: c.op, c: v}
}

func int64Literal(e evaluator) (int64, bool) {
	l, ok := e.(*litEval)
	if !ok || !l.lit.s.IsValid() {
		return 0, false
	}
	s, ok := l.lit.s.(*scalar.Int64)
	if !ok {
		return 0, false
	}
	return s.Value, true
}

type modCmpEval struct {
	x  evaluator
	d  int64
	op kernels.CmpOp
	c  int64
}

func (m *modCmpEval) dataType() arrow.DataType { return arrow.FixedWidthTypes.Boolean }

func (m *modCmpEval) eval(mem memory.Allocator, rec arrow.RecordBatch) (datum, error) {
	d, err := m.x.eval(scratch(mem), rec)
	if err != nil {
		return datum{}, err
	}
	defer d.release()
	out, err := kernels.ModCompareScalar(mem, d.arr, m.d, m.op, m.c)
	if err != nil {
		return datum{}, err
	}
	return datum{arr: out}, nil
}
