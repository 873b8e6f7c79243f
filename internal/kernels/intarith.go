package kernels

import (
	"context"
	"fmt"
	"math/bits"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/arrow/scalar"
)

// Checked arithmetic on the integer types other than int64 (which has its
// own tuned loops in arith.go). Not arrow compute: as of arrow-go v18.8.0
// its checked "add" and "sub" miss overflows toward the negative end
// (math.MinInt32 + -1 wraps to math.MaxInt32 without an error).

type integer interface {
	~int8 | ~int16 | ~int32 | ~int64 | ~uint8 | ~uint16 | ~uint32 | ~uint64
}

func isInteger(dt arrow.DataType) bool {
	if dt == nil {
		return false
	}
	switch dt.ID() {
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64,
		arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64:
		return true
	}
	return false
}

func isFloat(dt arrow.DataType) bool {
	if dt == nil {
		return false
	}
	switch dt.ID() {
	case arrow.FLOAT16, arrow.FLOAT32, arrow.FLOAT64:
		return true
	}
	return false
}

func bothInt64(a, b arrow.DataType) bool {
	return a.ID() == arrow.INT64 && b.ID() == arrow.INT64
}

// arithFault is what went wrong in one row.
type arithFault uint8

const (
	faultNone arithFault = iota
	faultOverflow
	faultDivZero
)

func faultError[T integer](f arithFault, a T, op ArithOp, b T) error {
	if f == faultDivZero {
		return fmt.Errorf("%d %s %d: %w", a, op, b, ErrDivideByZero)
	}
	return fmt.Errorf("%d %s %d: %w", a, op, b, ErrOverflow)
}

// checkedOp returns a op b and the fault, if any, in T's width.
func checkedOp[T integer](op ArithOp, a, b T) (T, arithFault) {
	signed := ^T(0) < 0
	size := unsafe.Sizeof(a)
	switch op {
	case Add:
		r := a + b
		if signed && (a^r)&(b^r) < 0 || !signed && r < a {
			return 0, faultOverflow
		}
		return r, faultNone
	case Sub:
		r := a - b
		if signed && (a^b)&(a^r) < 0 || !signed && a < b {
			return 0, faultOverflow
		}
		return r, faultNone
	case Mul:
		var bad bool
		switch {
		case size <= 4 && signed:
			w := int64(a) * int64(b)
			bad = int64(T(w)) != w
		case size <= 4:
			w := uint64(a) * uint64(b)
			bad = uint64(T(w)) != w
		case signed:
			bad = mulOverflow(int64(a), int64(b)) != 0
		default:
			hi, _ := bits.Mul64(uint64(a), uint64(b))
			bad = hi != 0
		}
		if bad {
			return 0, faultOverflow
		}
		return a * b, faultNone
	default: // Div
		if b == 0 {
			return 0, faultDivZero
		}
		if signed && b == ^T(0) && a == ^T(0)<<(8*size-1) {
			return 0, faultOverflow // MinIntN / -1
		}
		return a / b, faultNone
	}
}

// intArrays computes out = a op b; valid (offset 0, may be nil) marks the
// rows whose faults count.
func intArrays[T integer](op ArithOp, a, b, out []T, valid []byte) error {
	b, out = b[:len(a)], out[:len(a)]
	for i := range a {
		r, f := checkedOp(op, a[i], b[i])
		if f != faultNone && isValid(valid, 0, i) {
			return faultError(f, a[i], op, b[i])
		}
		out[i] = r
	}
	return nil
}

// intScalar computes out = a op s, or s op a when scalarLeft; valid/off is
// a's validity bitmap.
func intScalar[T integer](op ArithOp, a []T, s T, scalarLeft bool, out []T, valid []byte, off int) error {
	out = out[:len(a)]
	for i, x := range a {
		l, r := x, s
		if scalarLeft {
			l, r = s, x
		}
		v, f := checkedOp(op, l, r)
		if f != faultNone && isValid(valid, off, i) {
			return faultError(f, l, op, r)
		}
		out[i] = v
	}
	return nil
}

// castArray returns arr as type dt (arr itself, retained, when it has that
// type). A value that does not fit is ErrOverflow.
func castArray(mem memory.Allocator, arr arrow.Array, dt arrow.DataType) (arrow.Array, error) {
	if arrow.TypeEqual(arr.DataType(), dt) {
		arr.Retain()
		return arr, nil
	}
	ctx := compute.WithAllocator(context.Background(), mem)
	out, err := compute.CastArray(ctx, arr, compute.SafeCastOptions(dt))
	if err != nil {
		return nil, fmt.Errorf("cast %s to %s: %w: %w", arr.DataType(), dt, ErrOverflow, err)
	}
	return out, nil
}

// intArith is Arith for two integer arrays not both int64.
func intArith(mem memory.Allocator, op ArithOp, left, right arrow.Array) (arrow.Array, error) {
	dt, err := ArithResultType(op, left.DataType(), right.DataType())
	if err != nil {
		return nil, err
	}
	return intBinary(mem, left, right, dt, func(ld, rd arrow.ArrayData, out, vb []byte) error {
		switch dt.ID() {
		case arrow.INT8:
			return intArrays(op, fixedValues[int8](ld), fixedValues[int8](rd), castSlice[int8](out), vb)
		case arrow.INT16:
			return intArrays(op, fixedValues[int16](ld), fixedValues[int16](rd), castSlice[int16](out), vb)
		case arrow.INT32:
			return intArrays(op, fixedValues[int32](ld), fixedValues[int32](rd), castSlice[int32](out), vb)
		case arrow.INT64:
			return int64Arrays(op, fixedValues[int64](ld), fixedValues[int64](rd), castSlice[int64](out), vb)
		case arrow.UINT8:
			return intArrays(op, fixedValues[uint8](ld), fixedValues[uint8](rd), castSlice[uint8](out), vb)
		case arrow.UINT16:
			return intArrays(op, fixedValues[uint16](ld), fixedValues[uint16](rd), castSlice[uint16](out), vb)
		case arrow.UINT32:
			return intArrays(op, fixedValues[uint32](ld), fixedValues[uint32](rd), castSlice[uint32](out), vb)
		case arrow.UINT64:
			return intArrays(op, fixedValues[uint64](ld), fixedValues[uint64](rd), castSlice[uint64](out), vb)
		}
		return fmt.Errorf("arith: %w: %s result", ErrUnsupportedType, dt)
	})
}

// intBinary casts left and right to the integer type dt and returns a new
// array of dt whose values apply computes from theirs (out: the result's
// value buffer; vb: the rows valid in both, nil when all are), null where
// either is.
func intBinary(mem memory.Allocator, left, right arrow.Array, dt arrow.DataType, apply func(ld, rd arrow.ArrayData, out, vb []byte) error) (arrow.Array, error) {
	l, err := castArray(mem, left, dt)
	if err != nil {
		return nil, err
	}
	defer l.Release()
	r, err := castArray(mem, right, dt)
	if err != nil {
		return nil, err
	}
	defer r.Release()
	ld, rd := l.Data(), r.Data()
	n := ld.Len()
	vbuf := newBuffer(mem, n*dt.(arrow.FixedWidthDataType).BitWidth()/8)
	valid, nulls := andValidity(mem, ld, rd)
	var vb []byte
	if valid != nil {
		vb = valid.Bytes()
	}
	if err := apply(ld, rd, vbuf.Bytes(), vb); err != nil {
		vbuf.Release()
		if valid != nil {
			valid.Release()
		}
		return nil, err
	}
	return makeArray(dt, n, []*memory.Buffer{valid, vbuf}, nulls), nil
}

// intWithScalar casts arr to the integer type dt and returns a new array
// of dt whose values apply computes from its data (out: the result's value
// buffer), null where arr is or everywhere when the scalar s is null.
func intWithScalar(mem memory.Allocator, arr arrow.Array, s scalar.Scalar, dt arrow.DataType, apply func(d arrow.ArrayData, out []byte) error) (arrow.Array, error) {
	n := arr.Len()
	if !s.IsValid() || arr.NullN() == n {
		return array.MakeArrayOfNull(mem, dt, n), nil
	}
	a, err := castArray(mem, arr, dt)
	if err != nil {
		return nil, err
	}
	defer a.Release()
	d := a.Data()
	vbuf := newBuffer(mem, n*dt.(arrow.FixedWidthDataType).BitWidth()/8)
	if err := apply(d, vbuf.Bytes()); err != nil {
		vbuf.Release()
		return nil, err
	}
	valid, nulls := copyValidity(mem, d)
	return makeArray(dt, n, []*memory.Buffer{valid, vbuf}, nulls), nil
}

// scalarInt returns the value of an integer scalar as int64 (signed types)
// or uint64 (unsigned).
func scalarInt(s scalar.Scalar) (i int64, u uint64, unsigned bool) {
	switch x := s.(type) {
	case *scalar.Int8:
		return int64(x.Value), 0, false
	case *scalar.Int16:
		return int64(x.Value), 0, false
	case *scalar.Int32:
		return int64(x.Value), 0, false
	case *scalar.Int64:
		return x.Value, 0, false
	case *scalar.Uint8:
		return 0, uint64(x.Value), true
	case *scalar.Uint16:
		return 0, uint64(x.Value), true
	case *scalar.Uint32:
		return 0, uint64(x.Value), true
	case *scalar.Uint64:
		return 0, x.Value, true
	}
	return 0, 0, false
}

// fitScalar converts an integer scalar's value to T; false when it does
// not fit.
func fitScalar[T integer](s scalar.Scalar) (T, bool) {
	i, u, unsigned := scalarInt(s)
	v := T(i)
	if unsigned {
		v = T(u)
		return v, v >= 0 && uint64(v) == u
	}
	return v, int64(v) == i && (v < 0) == (i < 0)
}

// intScalarTyped is intArithScalar's loop for the result type T.
func intScalarTyped[T integer](op ArithOp, d arrow.ArrayData, s scalar.Scalar, scalarLeft bool, out []byte) error {
	v, ok := fitScalar[T](s)
	if !ok {
		i, u, unsigned := scalarInt(s)
		if unsigned {
			return fmt.Errorf("%d does not fit %s: %w", u, d.DataType(), ErrOverflow)
		}
		return fmt.Errorf("%d does not fit %s: %w", i, d.DataType(), ErrOverflow)
	}
	return intScalar(op, fixedValues[T](d), v, scalarLeft, castSlice[T](out), validityBits(d), d.Offset())
}

// intArithScalar is arithWithScalar for an integer array and scalar not
// both int64.
func intArithScalar(mem memory.Allocator, op ArithOp, arr arrow.Array, s scalar.Scalar, scalarLeft bool) (arrow.Array, error) {
	lt, rt := arr.DataType(), s.DataType()
	if scalarLeft {
		lt, rt = rt, lt
	}
	dt, err := ArithResultType(op, lt, rt)
	if err != nil {
		return nil, err
	}
	return intWithScalar(mem, arr, s, dt, func(d arrow.ArrayData, out []byte) error {
		switch dt.ID() {
		case arrow.INT8:
			return intScalarTyped[int8](op, d, s, scalarLeft, out)
		case arrow.INT16:
			return intScalarTyped[int16](op, d, s, scalarLeft, out)
		case arrow.INT32:
			return intScalarTyped[int32](op, d, s, scalarLeft, out)
		case arrow.INT64:
			v, ok := fitScalar[int64](s)
			if !ok {
				return fmt.Errorf("%s does not fit int64: %w", s, ErrOverflow)
			}
			return int64Scalar(op, fixedValues[int64](d), v, scalarLeft, castSlice[int64](out), validityBits(d), d.Offset())
		case arrow.UINT8:
			return intScalarTyped[uint8](op, d, s, scalarLeft, out)
		case arrow.UINT16:
			return intScalarTyped[uint16](op, d, s, scalarLeft, out)
		case arrow.UINT32:
			return intScalarTyped[uint32](op, d, s, scalarLeft, out)
		case arrow.UINT64:
			return intScalarTyped[uint64](op, d, s, scalarLeft, out)
		default:
			return fmt.Errorf("arith: %w: %s result", ErrUnsupportedType, dt)
		}
	})
}
