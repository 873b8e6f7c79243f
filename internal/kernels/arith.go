package kernels

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/arrow/scalar"
)

// ArithOp is an arithmetic operator.
type ArithOp uint8

// The arithmetic operators. On integers they are checked: a result outside
// the result type's range is ErrOverflow and an integer division by zero is
// ErrDivideByZero; division truncates toward zero. Two integer operands of
// different types are first widened to arrow's common type (int32 and
// int64 give int64, int8 and uint8 give int16; uint64 and a signed type give
// int64, and a uint64 value above the int64 range is ErrOverflow). Faults
// in null rows are ignored. On floats they follow IEEE 754 (x/0 is ±Inf or
// NaN). Mixing int64 and float64 computes in float64. Other types go through
// arrow compute ("add", "sub", "multiply", "divide"; the "_unchecked"
// variants when an operand is a float), whose result types arrow decides;
// timestamp and duration operands of different units are first cast to the
// finer unit (timestamp[ms] + duration[us] is a timestamp[us]).
const (
	Add ArithOp = iota // +
	Sub                // -
	Mul                // *
	Div                // /
)

var arithSymbols = [...]string{Add: "+", Sub: "-", Mul: "*", Div: "/"}
var arithFuncs = [...]string{Add: "add", Sub: "sub", Mul: "multiply", Div: "divide"}

// String returns the operator's symbol.
func (op ArithOp) String() string {
	if int(op) < len(arithSymbols) {
		return arithSymbols[op]
	}
	return fmt.Sprintf("ArithOp(%d)", op)
}

func (op ArithOp) valid() bool { return op <= Div }

// arithKind classifies the operand types of the fast paths.
type arithKind uint8

const (
	kindOther arithKind = iota
	kindInt64
	kindFloat64
)

func kindOf(dt arrow.DataType) arithKind {
	switch dt.ID() {
	case arrow.INT64:
		return kindInt64
	case arrow.FLOAT64:
		return kindFloat64
	}
	return kindOther
}

// ArithResultType returns the type of left op right for operands of the
// given types, or ErrUnsupportedType.
func ArithResultType(op ArithOp, left, right arrow.DataType) (arrow.DataType, error) {
	if !op.valid() {
		return nil, fmt.Errorf("arith: %w: operator %d", ErrInvalidArgument, op)
	}
	lk, rk := kindOf(left), kindOf(right)
	switch {
	case lk == kindInt64 && rk == kindInt64:
		return arrow.PrimitiveTypes.Int64, nil
	case lk != kindOther && rk != kindOther:
		return arrow.PrimitiveTypes.Float64, nil
	}
	dt, err := probeOutputType(arithFuncs[op], left, right)
	if err != nil {
		return nil, fmt.Errorf("%w: cannot compute %s %s %s", ErrUnsupportedType, left, op, right)
	}
	return dt, nil
}

// Arith returns left op right, row by row. Both arrays must have the same
// length. A null on either side gives null.
func Arith(mem memory.Allocator, op ArithOp, left, right arrow.Array) (arrow.Array, error) {
	if !op.valid() {
		return nil, fmt.Errorf("arith: %w: operator %d", ErrInvalidArgument, op)
	}
	if left.Len() != right.Len() {
		return nil, fmt.Errorf("arith: %w: %d and %d rows", ErrLengthMismatch, left.Len(), right.Len())
	}
	if isInteger(left.DataType()) && isInteger(right.DataType()) && !bothInt64(left.DataType(), right.DataType()) {
		return intArith(mem, op, left, right)
	}
	lk, rk := kindOf(left.DataType()), kindOf(right.DataType())
	if lk == kindOther || rk == kindOther {
		return arithCompute(mem, op, compute.NewDatumWithoutOwning(left), compute.NewDatumWithoutOwning(right))
	}
	ld, rd := left.Data(), right.Data()
	n := ld.Len()
	vbuf := newBuffer(mem, n*8)
	valid, nulls := andValidity(mem, ld, rd)
	release := func() {
		vbuf.Release()
		if valid != nil {
			valid.Release()
		}
	}
	var validBits []byte
	if valid != nil {
		validBits = valid.Bytes()
	}
	var dt arrow.DataType = arrow.PrimitiveTypes.Float64
	switch {
	case lk == kindInt64 && rk == kindInt64:
		dt = arrow.PrimitiveTypes.Int64
		if err := int64Arrays(op, fixedValues[int64](ld), fixedValues[int64](rd), castSlice[int64](vbuf.Bytes()), validBits); err != nil {
			release()
			return nil, err
		}
	case lk == kindInt64:
		floatArrays(op, fixedValues[int64](ld), fixedValues[float64](rd), castSlice[float64](vbuf.Bytes()))
	case rk == kindInt64:
		floatArrays(op, fixedValues[float64](ld), fixedValues[int64](rd), castSlice[float64](vbuf.Bytes()))
	default:
		floatArrays(op, fixedValues[float64](ld), fixedValues[float64](rd), castSlice[float64](vbuf.Bytes()))
	}
	return makeArray(dt, n, []*memory.Buffer{valid, vbuf}, nulls), nil
}

// ArithScalar returns left op right for every row of left. A null scalar
// gives an all-null result.
func ArithScalar(mem memory.Allocator, op ArithOp, left arrow.Array, right scalar.Scalar) (arrow.Array, error) {
	return arithWithScalar(mem, op, left, right, false)
}

// ScalarArith returns left op right for every row of right (the scalar is
// the left operand). A null scalar gives an all-null result.
func ScalarArith(mem memory.Allocator, op ArithOp, left scalar.Scalar, right arrow.Array) (arrow.Array, error) {
	return arithWithScalar(mem, op, right, left, true)
}

// arithWithScalar computes arr op s, or s op arr when scalarLeft.
func arithWithScalar(mem memory.Allocator, op ArithOp, arr arrow.Array, s scalar.Scalar, scalarLeft bool) (arrow.Array, error) {
	if !op.valid() {
		return nil, fmt.Errorf("arith: %w: operator %d", ErrInvalidArgument, op)
	}
	if s == nil {
		return nil, fmt.Errorf("arith: %w: nil scalar", ErrInvalidArgument)
	}
	if isInteger(arr.DataType()) && isInteger(s.DataType()) && !bothInt64(arr.DataType(), s.DataType()) {
		return intArithScalar(mem, op, arr, s, scalarLeft)
	}
	ak, sk := kindOf(arr.DataType()), kindOf(s.DataType())
	if ak == kindOther || sk == kindOther {
		a, b := compute.NewDatumWithoutOwning(arr), compute.NewDatumWithoutOwning(s)
		if scalarLeft {
			a, b = b, a
		}
		return arithCompute(mem, op, a, b)
	}
	d := arr.Data()
	n := d.Len()
	if !s.IsValid() {
		dt := arrow.DataType(arrow.PrimitiveTypes.Float64)
		if ak == kindInt64 && sk == kindInt64 {
			dt = arrow.PrimitiveTypes.Int64
		}
		return array.MakeArrayOfNull(mem, dt, n), nil
	}
	vbuf := newBuffer(mem, n*8)
	if ak == kindInt64 && sk == kindInt64 {
		v := scalarValue[int64](s)
		if err := int64Scalar(op, fixedValues[int64](d), v, scalarLeft, castSlice[int64](vbuf.Bytes()), validityBits(d), d.Offset()); err != nil {
			vbuf.Release()
			return nil, err
		}
		valid, nulls := copyValidity(mem, d)
		return makeArray(arrow.PrimitiveTypes.Int64, n, []*memory.Buffer{valid, vbuf}, nulls), nil
	}
	var v float64
	if sk == kindInt64 {
		v = float64(scalarValue[int64](s))
	} else {
		v = scalarValue[float64](s)
	}
	out := castSlice[float64](vbuf.Bytes())
	if ak == kindInt64 {
		floatScalar(op, fixedValues[int64](d), v, scalarLeft, out)
	} else {
		floatScalar(op, fixedValues[float64](d), v, scalarLeft, out)
	}
	valid, nulls := copyValidity(mem, d)
	return makeArray(arrow.PrimitiveTypes.Float64, n, []*memory.Buffer{valid, vbuf}, nulls), nil
}

func arithCompute(mem memory.Allocator, op ArithOp, left, right compute.Datum) (arrow.Array, error) {
	ctx := compute.WithAllocator(context.Background(), mem)
	fn := arithFuncs[op]
	if isFloat(typeOf(left)) || isFloat(typeOf(right)) {
		// The checked float kernels fail on x/0; IEEE 754 gives ±Inf or
		// NaN, like the float64 fast path.
		fn += "_unchecked"
	}
	left, right = privateDatum(left), privateDatum(right)
	defer func() {
		left.Release()
		right.Release()
	}()
	if err := alignTemporalUnits(ctx, &left, &right); err != nil {
		return nil, err
	}
	res, err := compute.CallFunction(ctx, fn, nil, left, right)
	if err != nil {
		msg := strings.ToLower(err.Error())
		switch {
		case errors.Is(err, arrow.ErrInvalid) && strings.Contains(msg, "overflow"):
			return nil, fmt.Errorf("%s %s %s: %w: %w", typeOf(left), op, typeOf(right), ErrOverflow, err)
		case errors.Is(err, arrow.ErrInvalid) && strings.Contains(msg, "divide by zero"):
			return nil, fmt.Errorf("%s %s %s: %w: %w", typeOf(left), op, typeOf(right), ErrDivideByZero, err)
		case errors.Is(err, arrow.ErrNotImplemented):
			return nil, fmt.Errorf("%s %s %s: %w: %w", typeOf(left), op, typeOf(right), ErrUnsupportedType, err)
		}
		return nil, fmt.Errorf("%s %s %s: %w", typeOf(left), op, typeOf(right), err)
	}
	defer res.Release()
	return res.(*compute.ArrayDatum).MakeArray(), nil
}

// isValid reports whether row i of a validity bitmap read at offset off is
// valid (nil bitmap: all valid).
func isValid(valid []byte, off, i int) bool {
	return valid == nil || bitutil.BitIsSet(valid, off+i)
}

// int64Arrays computes out = a op b with overflow and division checks.
// valid (offset 0, may be nil) marks the rows whose result matters: faults
// in null rows are ignored.
func int64Arrays(op ArithOp, a, b, out []int64, valid []byte) error {
	n := len(a)
	b, out = b[:n], out[:n]
	var ovf int64
	switch op {
	case Add:
		for i := range a {
			r := a[i] + b[i]
			ovf |= (a[i] ^ r) & (b[i] ^ r)
			out[i] = r
		}
	case Sub:
		for i := range a {
			r := a[i] - b[i]
			ovf |= (a[i] ^ b[i]) & (a[i] ^ r)
			out[i] = r
		}
	case Mul:
		var u uint64
		for i := range a {
			u |= mulOverflow(a[i], b[i])
			out[i] = a[i] * b[i]
		}
		if u != 0 {
			ovf = -1
		}
	case Div:
		for i := range a {
			x, y := a[i], b[i]
			if y == 0 || (y == -1 && x == math.MinInt64) {
				if !isValid(valid, 0, i) {
					out[i] = 0
					continue
				}
				if y == 0 {
					return fmt.Errorf("%d / 0: %w", x, ErrDivideByZero)
				}
				return fmt.Errorf("%d / -1: %w", x, ErrOverflow)
			}
			out[i] = x / y
		}
		return nil
	}
	if ovf < 0 {
		// Locate the first overflow in a valid row, if any.
		for i := range a {
			if !isValid(valid, 0, i) {
				continue
			}
			switch op {
			case Add:
				if r := a[i] + b[i]; (a[i]^r)&(b[i]^r) < 0 {
					return fmt.Errorf("%d + %d: %w", a[i], b[i], ErrOverflow)
				}
			case Sub:
				if r := a[i] - b[i]; (a[i]^b[i])&(a[i]^r) < 0 {
					return fmt.Errorf("%d - %d: %w", a[i], b[i], ErrOverflow)
				}
			case Mul:
				if mulOverflow(a[i], b[i]) != 0 {
					return fmt.Errorf("%d * %d: %w", a[i], b[i], ErrOverflow)
				}
			}
		}
	}
	return nil
}

// mulOverflow is non-zero when a*b overflows int64: the high half of the
// signed 128-bit product must be the sign extension of the low half.
func mulOverflow(a, b int64) uint64 {
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	hi -= uint64(a>>63)&uint64(b) + uint64(b>>63)&uint64(a)
	return hi ^ uint64(int64(lo)>>63)
}

// int64Scalar computes out = a op s (or s op a when scalarLeft) with
// overflow and division checks; valid/off is a's validity bitmap.
func int64Scalar(op ArithOp, a []int64, s int64, scalarLeft bool, out []int64, valid []byte, off int) error {
	out = out[:len(a)]
	var ovf int64
	switch {
	case op == Add:
		for i, x := range a {
			r := x + s
			ovf |= (x ^ r) & (s ^ r)
			out[i] = r
		}
	case op == Sub && !scalarLeft:
		for i, x := range a {
			r := x - s
			ovf |= (x ^ s) & (x ^ r)
			out[i] = r
		}
	case op == Sub:
		for i, x := range a {
			r := s - x
			ovf |= (s ^ x) & (s ^ r)
			out[i] = r
		}
	case op == Mul:
		var u uint64
		for i, x := range a {
			u |= mulOverflow(x, s)
			out[i] = x * s
		}
		if u != 0 {
			ovf = -1
		}
	case op == Div && !scalarLeft:
		switch s {
		case 0:
			for i := range a {
				if isValid(valid, off, i) {
					return fmt.Errorf("%d / 0: %w", a[i], ErrDivideByZero)
				}
			}
			clear(out)
			return nil
		case -1:
			for i, x := range a {
				if x == math.MinInt64 && isValid(valid, off, i) {
					return fmt.Errorf("%d / -1: %w", x, ErrOverflow)
				}
				out[i] = -x
			}
			return nil
		}
		for i, x := range a {
			out[i] = x / s
		}
		return nil
	default: // s / a
		for i, x := range a {
			if x == 0 || (x == -1 && s == math.MinInt64) {
				if !isValid(valid, off, i) {
					out[i] = 0
					continue
				}
				if x == 0 {
					return fmt.Errorf("%d / 0: %w", s, ErrDivideByZero)
				}
				return fmt.Errorf("%d / -1: %w", s, ErrOverflow)
			}
			out[i] = s / x
		}
		return nil
	}
	if ovf < 0 {
		for i, x := range a {
			if !isValid(valid, off, i) {
				continue
			}
			l, r := x, s
			if scalarLeft {
				l, r = s, x
			}
			var bad bool
			switch op {
			case Add:
				res := l + r
				bad = (l^res)&(r^res) < 0
			case Sub:
				res := l - r
				bad = (l^r)&(l^res) < 0
			case Mul:
				bad = mulOverflow(l, r) != 0
			}
			if bad {
				return fmt.Errorf("%d %s %d: %w", l, op, r, ErrOverflow)
			}
		}
	}
	return nil
}

// floatArrays computes out = a op b in float64.
func floatArrays[L, R int64 | float64](op ArithOp, a []L, b []R, out []float64) {
	b, out = b[:len(a)], out[:len(a)]
	switch op {
	case Add:
		for i := range a {
			out[i] = float64(a[i]) + float64(b[i])
		}
	case Sub:
		for i := range a {
			out[i] = float64(a[i]) - float64(b[i])
		}
	case Mul:
		for i := range a {
			out[i] = float64(a[i]) * float64(b[i])
		}
	case Div:
		for i := range a {
			out[i] = float64(a[i]) / float64(b[i])
		}
	}
}

// floatScalar computes out = a op s (or s op a when scalarLeft) in float64.
func floatScalar[T int64 | float64](op ArithOp, a []T, s float64, scalarLeft bool, out []float64) {
	out = out[:len(a)]
	switch {
	case op == Add:
		for i, x := range a {
			out[i] = float64(x) + s
		}
	case op == Sub && !scalarLeft:
		for i, x := range a {
			out[i] = float64(x) - s
		}
	case op == Sub:
		for i, x := range a {
			out[i] = s - float64(x)
		}
	case op == Mul:
		for i, x := range a {
			out[i] = float64(x) * s
		}
	case op == Div && !scalarLeft:
		for i, x := range a {
			out[i] = float64(x) / s
		}
	default:
		for i, x := range a {
			out[i] = s / float64(x)
		}
	}
}
