package expr

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/arrow/scalar"

	"github.com/meshflow/meshflow/internal/kernels"
)

// Bound is an expression bound to a schema, ready to evaluate batches of
// that schema. It holds no per-batch state: one Bound may evaluate batches
// from several goroutines at once.
type Bound interface {
	// DataType is the type of the arrays Eval returns.
	DataType() arrow.DataType
	// Eval evaluates the expression over rec, which must have the bound
	// schema's columns, and returns an array of rec.NumRows() values. rec
	// is borrowed; the result is owned by the caller, who releases it.
	// Buffers are allocated from mem.
	Eval(ctx context.Context, mem memory.Allocator, rec arrow.RecordBatch) (arrow.Array, error)
}

// Bind checks e against schema and prepares it for evaluation. The error,
// if any, names the expression and wraps ErrUnknownColumn, ErrType or
// ErrLiteral (or a kernels error when a constant subexpression fails, such
// as 1/0).
func Bind(e Expr, schema *arrow.Schema) (Bound, error) {
	if e == nil {
		return nil, errors.New("expr: nil expression")
	}
	if schema == nil {
		return nil, fmt.Errorf("expr %s: nil schema", e)
	}
	ev, err := bind(e.node(), schema)
	if err != nil {
		return nil, fmt.Errorf("expr %s: %w", e, err)
	}
	return &bound{root: ev}, nil
}

func bind(n *node, s *arrow.Schema) (evaluator, error) {
	switch n.kind {
	case kCol:
		idx := s.FieldIndices(n.name)
		if len(idx) == 1 {
			return &colEval{idx: idx[0], name: n.name, dt: s.Field(idx[0]).Type}, nil
		}
		if len(idx) > 1 {
			return nil, errorf(ErrUnknownColumn, "column name %q is ambiguous (%d columns)", n.name, len(idx))
		}
		names := make([]string, s.NumFields())
		for i, f := range s.Fields() {
			names[i] = f.Name
		}
		return nil, errorf(ErrUnknownColumn, "no column %q (columns: %s)", n.name, strings.Join(names, ", "))
	case kLit:
		if n.lit.err != nil {
			return nil, n.lit.err
		}
		return &litEval{lit: n.lit}, nil
	}

	args := make([]evaluator, len(n.args))
	for i, a := range n.args {
		ev, err := bind(a, s)
		if err != nil {
			return nil, err
		}
		args[i] = ev
	}
	ev, err := bindOp(n, args)
	if err != nil {
		return nil, err
	}
	return fold(ev)
}

// bindOp binds an operator node over its bound operands.
func bindOp(n *node, args []evaluator) (evaluator, error) {
	switch n.kind {
	case kNot:
		a, err := wantBool(args[0], n.args[0])
		if err != nil {
			return nil, err
		}
		return &notEval{a: a}, nil
	case kIsNull, kIsNotNull:
		return &nullTestEval{a: args[0], isNull: n.kind == kIsNull}, nil
	case kNeg:
		return bindNeg(n, args[0])
	case kAnd, kOr:
		l, err := wantBool(args[0], n.args[0])
		if err != nil {
			return nil, err
		}
		r, err := wantBool(args[1], n.args[1])
		if err != nil {
			return nil, err
		}
		return &logicEval{and: n.kind == kAnd, l: l, r: r}, nil
	case kCmp:
		ev, err := bindCompare(n, args[0], args[1])
		if err != nil {
			return nil, err
		}
		return fuseModCompare(ev), nil
	case kArith:
		return bindArith(n, args[0], args[1])
	case kMod:
		return bindMod(n, args[0], args[1])
	case kStr:
		return bindStr(n, args[0])
	case kTrunc:
		return bindTrunc(n, args[0])
	}
	return nil, fmt.Errorf("expr: unknown expression kind %d", n.kind)
}

// wantBool checks that e is boolean; a NULL literal becomes a boolean null.
func wantBool(e evaluator, n *node) (evaluator, error) {
	switch e.dataType().ID() {
	case arrow.BOOL:
		return e, nil
	case arrow.NULL:
		return nullOf(arrow.FixedWidthTypes.Boolean), nil
	}
	return nil, errorf(ErrType, "%s is %s, not boolean", n, e.dataType())
}

func bindCompare(n *node, l, r evaluator) (evaluator, error) {
	lt, rt := l.dataType(), r.dataType()
	// Normalise to expression op literal.
	op := n.cmp
	ll, lIsLit := l.(*litEval)
	rl, rIsLit := r.(*litEval)
	if lIsLit && !rIsLit {
		l, r, rl, op = r, l, ll, op.Swap()
		lIsLit, rIsLit = false, true
	}
	if rIsLit && !lIsLit {
		if ev, ok := compareWithLiteral(op, l, rl.lit); ok {
			return ev, nil
		}
		if c, ok := coerce(rl.lit, l.dataType()); ok {
			r = &litEval{lit: c}
		}
	}
	if l.dataType().ID() == arrow.NULL || r.dataType().ID() == arrow.NULL {
		// A null-typed column, or two literals one of which is NULL.
		return nullOf(arrow.FixedWidthTypes.Boolean), nil
	}
	if err := kernels.CompareTypes(l.dataType(), r.dataType()); err != nil {
		return nil, errorf(ErrType, "cannot compare %s (%s) with %s (%s)", n.args[0], lt, n.args[1], rt)
	}
	return &cmpEval{op: op, l: l, r: r}, nil
}

func bindArith(n *node, l, r evaluator) (evaluator, error) {
	l, r, lt, rt, allNull := numericOperands(l, r)
	if allNull {
		return nullOf(arrow.Null), nil
	}
	dt, err := kernels.ArithResultType(n.arith, lt, rt)
	if err != nil {
		return nil, errorf(ErrType, "cannot compute %s (%s) %s %s (%s)", n.args[0], l.dataType(), n.arith, n.args[1], r.dataType())
	}
	if l.dataType().ID() == arrow.NULL || r.dataType().ID() == arrow.NULL {
		return nullOf(dt), nil
	}
	return &arithEval{op: n.arith, l: l, r: r, dt: dt}, nil
}

// numericOperands prepares the operands of a binary numeric operator: a
// literal beside a column takes the column's type when it fits, and a
// null operand takes the other's type (lt, rt: the types to resolve the
// result type from). allNull: both are null.
func numericOperands(l, r evaluator) (_, _ evaluator, lt, rt arrow.DataType, allNull bool) {
	ll, lIsLit := l.(*litEval)
	rl, rIsLit := r.(*litEval)
	switch {
	case lIsLit && !rIsLit:
		if c, ok := coerce(ll.lit, r.dataType()); ok {
			l = &litEval{lit: c}
		}
	case rIsLit && !lIsLit:
		if c, ok := coerce(rl.lit, l.dataType()); ok {
			r = &litEval{lit: c}
		}
	}
	lt, rt = l.dataType(), r.dataType()
	switch {
	case lt.ID() == arrow.NULL && rt.ID() == arrow.NULL:
		return l, r, lt, rt, true
	case lt.ID() == arrow.NULL:
		lt = rt
	case rt.ID() == arrow.NULL:
		rt = lt
	}
	return l, r, lt, rt, false
}

func bindNeg(n *node, a evaluator) (evaluator, error) {
	dt := a.dataType()
	var zero, minusOne scalar.Scalar
	switch dt.ID() {
	case arrow.NULL:
		return a, nil
	case arrow.INT8:
		zero = scalar.NewInt8Scalar(0)
	case arrow.INT16:
		zero = scalar.NewInt16Scalar(0)
	case arrow.INT32:
		zero = scalar.NewInt32Scalar(0)
	case arrow.INT64:
		zero = scalar.NewInt64Scalar(0)
	case arrow.DURATION:
		zero = scalar.NewDurationScalar(0, dt)
	case arrow.FLOAT32:
		minusOne = scalar.NewFloat32Scalar(-1) // x * -1 turns +0 into -0
	case arrow.FLOAT64:
		minusOne = scalar.NewFloat64Scalar(-1)
	default:
		return nil, errorf(ErrType, "cannot negate %s (%s)", n.args[0], dt)
	}
	if zero != nil {
		// 0 - x: checked, so -MinInt64 is an overflow.
		return &arithEval{op: kernels.Sub, l: &litEval{lit: &literal{s: zero}}, r: a, dt: dt}, nil
	}
	return &arithEval{op: kernels.Mul, l: a, r: &litEval{lit: &literal{s: minusOne}}, dt: dt}, nil
}

// fold evaluates an operator whose operands are all literals, once, and
// returns it as a literal.
func fold(e evaluator) (evaluator, error) {
	if !constant(e) {
		return e, nil
	}
	if _, ok := e.(*litEval); ok {
		return e, nil
	}
	// Go-allocated and never released: the garbage collector owns it.
	mem := memory.DefaultAllocator
	one := array.NewRecordBatch(arrow.NewSchema(nil, nil), nil, 1)
	defer one.Release()
	d, err := e.eval(mem, one)
	if err != nil {
		return nil, err
	}
	defer d.release()
	s := d.sc
	if s == nil {
		if s, err = scalar.GetScalar(d.arr, 0); err != nil {
			return nil, err
		}
	}
	return &litEval{lit: &literal{s: s, v: scalarValue(s)}}, nil
}

// constant reports whether e reads no column.
func constant(e evaluator) bool {
	switch e := e.(type) {
	case *colEval:
		return false
	case *litEval, *nullEval:
		return true
	case *cmpEval:
		return constant(e.l) && constant(e.r)
	case *arithEval:
		return constant(e.l) && constant(e.r)
	case *modEval:
		return constant(e.l) && constant(e.r)
	case *strEval:
		return constant(e.a)
	case *truncEval:
		return constant(e.a)
	case *logicEval:
		return constant(e.l) && constant(e.r)
	case *notEval:
		return constant(e.a)
	case *nullTestEval:
		return constant(e.a)
	case *constBoolEval:
		return constant(e.a)
	}
	return false
}

// scalarValue returns the Go value of a scalar for coercions: int64,
// uint64, float64, string, []byte or bool; nil for other types and nulls.
func scalarValue(s scalar.Scalar) any {
	if !s.IsValid() {
		return nil
	}
	switch x := s.(type) {
	case *scalar.Boolean:
		return x.Value
	case *scalar.Int8:
		return int64(x.Value)
	case *scalar.Int16:
		return int64(x.Value)
	case *scalar.Int32:
		return int64(x.Value)
	case *scalar.Int64:
		return x.Value
	case *scalar.Uint8:
		return uint64(x.Value)
	case *scalar.Uint16:
		return uint64(x.Value)
	case *scalar.Uint32:
		return uint64(x.Value)
	case *scalar.Uint64:
		return x.Value
	case *scalar.Float32:
		return float64(x.Value)
	case *scalar.Float64:
		return x.Value
	case *scalar.String:
		return x.String()
	case *scalar.LargeString:
		return x.String()
	case *scalar.Binary:
		return append([]byte(nil), x.Data()...)
	case *scalar.LargeBinary:
		return append([]byte(nil), x.Data()...)
	}
	return nil
}

// coerce converts literal l to type to when that loses nothing (see the
// package documentation); false when it does not apply.
func coerce(l *literal, to arrow.DataType) (*literal, bool) {
	if to.ID() == arrow.NULL || arrow.TypeEqual(l.s.DataType(), to) {
		return nil, false
	}
	if !l.s.IsValid() {
		// An untyped NULL takes any type; a typed null (such as the folded
		// Lit(0.5).Add(nil)) converts like a value of its type.
		if l.s.DataType().ID() == arrow.NULL {
			return &literal{s: scalar.MakeNullScalar(to)}, true
		}
		v := zeroValue(l.s.DataType())
		if v == nil {
			return nil, false
		}
		if s := convert(v, to); s != nil {
			return &literal{s: scalar.MakeNullScalar(s.DataType())}, true
		}
		return nil, false
	}
	if s := convert(l.v, to); s != nil {
		return &literal{s: s, v: l.v}, true
	}
	return nil, false
}

// convert returns the Go value v as a scalar of type to, or of the type
// an operand of type to calls for, when exact; nil when none.
func convert(v any, to arrow.DataType) scalar.Scalar {
	switch v := v.(type) {
	case int64, uint64:
		if isInteger(to.ID()) {
			return intScalar(bigOf(v), to)
		}
		return exactFloat(new(big.Float).SetInt(bigOf(v)), to)
	case float64:
		if !math.IsNaN(v) {
			return exactFloat(big.NewFloat(v), to)
		}
	case string:
		switch to.ID() {
		case arrow.LARGE_STRING:
			return scalar.NewLargeStringScalar(v)
		case arrow.BINARY:
			return scalar.NewBinaryScalar(memory.NewBufferBytes([]byte(v)), to)
		case arrow.LARGE_BINARY:
			return scalar.NewLargeBinaryScalar(memory.NewBufferBytes([]byte(v)))
		}
	case []byte:
		switch to.ID() {
		case arrow.LARGE_BINARY:
			return scalar.NewLargeBinaryScalar(memory.NewBufferBytes(v))
		case arrow.FIXED_SIZE_BINARY:
			if len(v) == to.(*arrow.FixedSizeBinaryType).ByteWidth {
				return scalar.NewFixedSizeBinaryScalar(memory.NewBufferBytes(v), to)
			}
		}
	case time.Time, time.Duration:
		target := to
		if _, isDur := v.(time.Duration); isDur && to.ID() == arrow.TIMESTAMP {
			// timestamp ± duration: a duration of the timestamp's unit.
			target = &arrow.DurationType{Unit: to.(*arrow.TimestampType).Unit}
		}
		if f, exact, ok := ticks(v, target); ok && exact {
			return intScalar(f, target)
		}
	}
	return nil
}

// compareWithLiteral handles e op lit exactly when e has an integer-like
// type (integers, timestamps, dates, durations) and the literal a numeric
// or time value that may not convert to it exactly, by comparing with the
// integer just below or above the literal, or returning a constant.
func compareWithLiteral(op kernels.CmpOp, e evaluator, lit *literal) (evaluator, bool) {
	to := e.dataType()
	if !lit.s.IsValid() {
		return nil, false
	}
	var f *big.Int
	var exact bool
	switch v := lit.v.(type) {
	case int64, uint64:
		if !isInteger(to.ID()) {
			return nil, false
		}
		f, exact = bigOf(v), true
	case float64:
		if !isInteger(to.ID()) {
			return nil, false
		}
		if math.IsNaN(v) {
			return &constBoolEval{a: e, val: op == kernels.Ne}, true
		}
		f, exact = floatFloor(v)
	case time.Time, time.Duration:
		var ok bool
		if f, exact, ok = ticks(v, to); !ok {
			return nil, false
		}
	default:
		return nil, false
	}
	// The literal x satisfies f <= x < f+1, with x == f when exact.
	lo, hi := intRange(to)
	switch {
	case f.Cmp(hi) > 0 || f.Cmp(hi) == 0 && !exact: // x > every value
		return &constBoolEval{a: e, val: op == kernels.Lt || op == kernels.Le || op == kernels.Ne}, true
	case f.Cmp(lo) < 0: // x < every value
		return &constBoolEval{a: e, val: op == kernels.Gt || op == kernels.Ge || op == kernels.Ne}, true
	case exact:
		return &cmpEval{op: op, l: e, r: &litEval{lit: &literal{s: intScalar(f, to), v: lit.v}}}, true
	}
	// f < x < f+1: e > x ⇔ e > f, e <= x ⇔ e <= f, e < x ⇔ e < f+1,
	// e >= x ⇔ e >= f+1; e = x never holds.
	switch op {
	case kernels.Eq, kernels.Ne:
		return &constBoolEval{a: e, val: op == kernels.Ne}, true
	case kernels.Lt, kernels.Ge:
		f.Add(f, big.NewInt(1))
	}
	return &cmpEval{op: op, l: e, r: &litEval{lit: &literal{s: intScalar(f, to), v: lit.v}}}, true
}

func isInteger(id arrow.Type) bool {
	switch id {
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64,
		arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64:
		return true
	}
	return false
}

func bigOf(v any) *big.Int {
	if u, ok := v.(uint64); ok {
		return new(big.Int).SetUint64(u)
	}
	return big.NewInt(v.(int64))
}

// floatFloor returns floor(v) and whether v is an integer; ±Inf map to
// values beyond every integer type.
func floatFloor(v float64) (*big.Int, bool) {
	if math.IsInf(v, 0) {
		f := new(big.Int).Lsh(big.NewInt(1), 70)
		if v < 0 {
			f.Neg(f)
		}
		return f, false
	}
	f, acc := big.NewFloat(v).Int(nil) // truncated toward zero
	if acc == big.Exact {
		return f, true
	}
	if v < 0 {
		f.Sub(f, big.NewInt(1))
	}
	return f, false
}

// ticks returns floor(v / unit of to) for a time.Time (timestamp, date32,
// date64) or time.Duration (duration) literal, and whether it is exact.
func ticks(v any, to arrow.DataType) (f *big.Int, exact, ok bool) {
	var total *big.Int // nanoseconds
	switch v := v.(type) {
	case time.Time:
		if id := to.ID(); id != arrow.TIMESTAMP && id != arrow.DATE32 && id != arrow.DATE64 {
			return nil, false, false
		}
		total = new(big.Int).Mul(big.NewInt(v.Unix()), big.NewInt(1e9))
		total.Add(total, big.NewInt(int64(v.Nanosecond())))
	case time.Duration:
		if to.ID() != arrow.DURATION {
			return nil, false, false
		}
		total = big.NewInt(int64(v))
	default:
		return nil, false, false
	}
	var per int64
	switch t := to.(type) {
	case *arrow.Date32Type:
		per = 86400e9
	case *arrow.Date64Type:
		per = 1e6
	case arrow.TemporalWithUnit:
		per = int64(t.TimeUnit().Multiplier())
	}
	q, m := new(big.Int).DivMod(total, big.NewInt(per), new(big.Int)) // Euclidean: floor
	return q, m.Sign() == 0, true
}

// intRange returns the values of an integer-like type.
func intRange(dt arrow.DataType) (lo, hi *big.Int) {
	w := uint(64)
	if fw, ok := dt.(arrow.FixedWidthDataType); ok {
		w = uint(fw.BitWidth())
	}
	switch dt.ID() {
	case arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64:
		return big.NewInt(0), new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), w), big.NewInt(1))
	}
	hi = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), w-1), big.NewInt(1))
	return new(big.Int).Neg(new(big.Int).Add(hi, big.NewInt(1))), hi
}

// intScalar returns v (in range) as a scalar of the integer-like type dt.
func intScalar(v *big.Int, dt arrow.DataType) scalar.Scalar {
	lo, hi := intRange(dt)
	if v.Cmp(lo) < 0 || v.Cmp(hi) > 0 {
		return nil
	}
	i := v.Int64()
	switch dt.ID() {
	case arrow.INT8:
		return scalar.NewInt8Scalar(int8(i))
	case arrow.INT16:
		return scalar.NewInt16Scalar(int16(i))
	case arrow.INT32:
		return scalar.NewInt32Scalar(int32(i))
	case arrow.INT64:
		return scalar.NewInt64Scalar(i)
	case arrow.UINT8:
		return scalar.NewUint8Scalar(uint8(i))
	case arrow.UINT16:
		return scalar.NewUint16Scalar(uint16(i))
	case arrow.UINT32:
		return scalar.NewUint32Scalar(uint32(i))
	case arrow.UINT64:
		return scalar.NewUint64Scalar(v.Uint64())
	case arrow.TIMESTAMP:
		return scalar.NewTimestampScalar(arrow.Timestamp(i), dt)
	case arrow.DURATION:
		return scalar.NewDurationScalar(arrow.Duration(i), dt)
	case arrow.DATE32:
		return scalar.NewDate32Scalar(arrow.Date32(i))
	case arrow.DATE64:
		return scalar.NewDate64Scalar(arrow.Date64(i))
	}
	return nil
}

// exactFloat returns f as a scalar of the float type to when exact.
func exactFloat(f *big.Float, to arrow.DataType) scalar.Scalar {
	switch to.ID() {
	case arrow.FLOAT32:
		if x, acc := f.Float32(); acc == big.Exact {
			return scalar.NewFloat32Scalar(x)
		}
	case arrow.FLOAT64:
		if x, acc := f.Float64(); acc == big.Exact {
			return scalar.NewFloat64Scalar(x)
		}
	}
	return nil
}

// zeroValue returns a value of the Go type a literal of type dt holds, for
// converting typed nulls; nil when none.
func zeroValue(dt arrow.DataType) any {
	switch dt.ID() {
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64:
		return int64(0)
	case arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64:
		return uint64(0)
	case arrow.FLOAT32, arrow.FLOAT64:
		return 0.0
	case arrow.STRING, arrow.LARGE_STRING:
		return ""
	case arrow.BINARY, arrow.LARGE_BINARY:
		return []byte{}
	case arrow.TIMESTAMP:
		return time.Unix(0, 0)
	case arrow.DURATION:
		return time.Duration(0)
	}
	return nil
}
