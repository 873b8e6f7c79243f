package kernels

import (
	"fmt"
	"math"
	"math/bits"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/arrow/scalar"
)

// Integer modulo (remainder), with the semantics of Go's %: the result has
// the sign of the dividend (-7 % 3 is -1, 7 % -3 is 1) and
// math.MinInt64 % -1 is 0. A zero divisor in a non-null row is
// ErrDivideByZero, like Div. Operands of different integer types are
// widened to the type Div would give them. Only integer types are accepted
// (ErrUnsupportedType otherwise). A null on either side gives null.

// ModResultType returns the type of left % right, or ErrUnsupportedType
// when either is not an integer type.
func ModResultType(left, right arrow.DataType) (arrow.DataType, error) {
	if !isInteger(left) || !isInteger(right) {
		return nil, fmt.Errorf("%w: cannot compute %s %% %s", ErrUnsupportedType, left, right)
	}
	if bothInt64(left, right) {
		return arrow.PrimitiveTypes.Int64, nil
	}
	return ArithResultType(Div, left, right)
}

// Mod returns left % right, row by row; both arrays have the same length.
func Mod(mem memory.Allocator, left, right arrow.Array) (arrow.Array, error) {
	if left.Len() != right.Len() {
		return nil, fmt.Errorf("mod: %w: %d and %d rows", ErrLengthMismatch, left.Len(), right.Len())
	}
	dt, err := ModResultType(left.DataType(), right.DataType())
	if err != nil {
		return nil, err
	}
	return intBinary(mem, left, right, dt, func(ld, rd arrow.ArrayData, out, vb []byte) error {
		switch dt.ID() {
		case arrow.INT8:
			return modArrays(fixedValues[int8](ld), fixedValues[int8](rd), castSlice[int8](out), vb)
		case arrow.INT16:
			return modArrays(fixedValues[int16](ld), fixedValues[int16](rd), castSlice[int16](out), vb)
		case arrow.INT32:
			return modArrays(fixedValues[int32](ld), fixedValues[int32](rd), castSlice[int32](out), vb)
		case arrow.INT64:
			return modArrays(fixedValues[int64](ld), fixedValues[int64](rd), castSlice[int64](out), vb)
		case arrow.UINT8:
			return modArrays(fixedValues[uint8](ld), fixedValues[uint8](rd), castSlice[uint8](out), vb)
		case arrow.UINT16:
			return modArrays(fixedValues[uint16](ld), fixedValues[uint16](rd), castSlice[uint16](out), vb)
		case arrow.UINT32:
			return modArrays(fixedValues[uint32](ld), fixedValues[uint32](rd), castSlice[uint32](out), vb)
		case arrow.UINT64:
			return modArrays(fixedValues[uint64](ld), fixedValues[uint64](rd), castSlice[uint64](out), vb)
		}
		return fmt.Errorf("mod: %w: %s result", ErrUnsupportedType, dt)
	})
}

// ModScalar returns left % right for every row of left. A null scalar
// gives an all-null result; a zero one is ErrDivideByZero unless every row
// is null.
func ModScalar(mem memory.Allocator, left arrow.Array, right scalar.Scalar) (arrow.Array, error) {
	return modWithScalar(mem, left, right, false)
}

// ScalarMod returns left % right for every row of right (the scalar is the
// dividend).
func ScalarMod(mem memory.Allocator, left scalar.Scalar, right arrow.Array) (arrow.Array, error) {
	return modWithScalar(mem, right, left, true)
}

func modWithScalar(mem memory.Allocator, arr arrow.Array, s scalar.Scalar, scalarLeft bool) (arrow.Array, error) {
	if s == nil {
		return nil, fmt.Errorf("mod: %w: nil scalar", ErrInvalidArgument)
	}
	lt, rt := arr.DataType(), s.DataType()
	if scalarLeft {
		lt, rt = rt, lt
	}
	dt, err := ModResultType(lt, rt)
	if err != nil {
		return nil, err
	}
	return intWithScalar(mem, arr, s, dt, func(d arrow.ArrayData, out []byte) error {
		switch dt.ID() {
		case arrow.INT8:
			return modScalarTyped[int8](d, s, scalarLeft, out)
		case arrow.INT16:
			return modScalarTyped[int16](d, s, scalarLeft, out)
		case arrow.INT32:
			return modScalarTyped[int32](d, s, scalarLeft, out)
		case arrow.INT64:
			return modScalarTyped[int64](d, s, scalarLeft, out)
		case arrow.UINT8:
			return modScalarTyped[uint8](d, s, scalarLeft, out)
		case arrow.UINT16:
			return modScalarTyped[uint16](d, s, scalarLeft, out)
		case arrow.UINT32:
			return modScalarTyped[uint32](d, s, scalarLeft, out)
		case arrow.UINT64:
			return modScalarTyped[uint64](d, s, scalarLeft, out)
		default:
			return fmt.Errorf("mod: %w: %s result", ErrUnsupportedType, dt)
		}
	})
}

func modScalarTyped[T integer](d arrow.ArrayData, s scalar.Scalar, scalarLeft bool, out []byte) error {
	v, ok := fitScalar[T](s)
	if !ok {
		i, u, unsigned := scalarInt(s)
		if unsigned {
			return fmt.Errorf("%d does not fit %s: %w", u, d.DataType(), ErrOverflow)
		}
		return fmt.Errorf("%d does not fit %s: %w", i, d.DataType(), ErrOverflow)
	}
	a, o := fixedValues[T](d), castSlice[T](out)[:d.Len()]
	valid, off := validityBits(d), d.Offset()
	if scalarLeft {
		for i, x := range a {
			if x == 0 {
				if isValid(valid, off, i) {
					return fmt.Errorf("%d %% 0: %w", v, ErrDivideByZero)
				}
				o[i] = 0
				continue
			}
			o[i] = remainder(v, x)
		}
		return nil
	}
	if v == 0 {
		for i := range a {
			if isValid(valid, off, i) {
				return fmt.Errorf("%d %% 0: %w", a[i], ErrDivideByZero)
			}
		}
		clear(o)
		return nil
	}
	if a64, ok := any(a).([]int64); ok {
		modInt64Const(a64, int64(v), any(o).([]int64))
		return nil
	}
	for i, x := range a {
		o[i] = remainder(x, v)
	}
	return nil
}

// remainder is x % y for y != 0, with MinIntN % -1 = 0 (Go's definition;
// spelled out so the hardware division never traps).
func remainder[T integer](x, y T) T {
	if ^T(0) < 0 && y == ^T(0) {
		return 0
	}
	return x % y
}

// modArrays computes out = a % b; valid (offset 0, may be nil) marks the
// rows whose zero divisors count.
func modArrays[T integer](a, b, out []T, valid []byte) error {
	b, out = b[:len(a)], out[:len(a)]
	for i, x := range a {
		y := b[i]
		if y == 0 {
			if isValid(valid, 0, i) {
				return fmt.Errorf("%d %% 0: %w", x, ErrDivideByZero)
			}
			out[i] = 0
			continue
		}
		out[i] = remainder(x, y)
	}
	return nil
}

// divisor is a precomputed signed 64-bit division by a constant d
// (|d| >= 2, d != math.MinInt64): x / d is the high half of x*m, plus x
// when d > 0 > m, minus x when d < 0 < m, shifted right by shift, plus one
// when negative. This turns a per-row hardware division into a
// multiplication.
type divisor struct {
	m     int64
	shift uint
}

// newDivisor computes the magic number for d (Hacker's Delight, 10-1).
func newDivisor(d int64) divisor {
	const two63 = uint64(1) << 63
	ad := uint64(d)
	if d < 0 {
		ad = -ad
	}
	t := two63 + uint64(d)>>63
	anc := t - 1 - t%ad
	p := 63
	q1, r1 := two63/anc, two63-(two63/anc)*anc
	q2, r2 := two63/ad, two63-(two63/ad)*ad
	for {
		p++
		q1, r1 = 2*q1, 2*r1
		if r1 >= anc {
			q1++
			r1 -= anc
		}
		q2, r2 = 2*q2, 2*r2
		if r2 >= ad {
			q2++
			r2 -= ad
		}
		delta := ad - r2
		if !(q1 < delta || q1 == delta && r1 == 0) {
			break
		}
	}
	m := int64(q2 + 1)
	if d < 0 {
		m = -m
	}
	return divisor{m: m, shift: uint(p - 64)}
}

// modInt64Const computes out = a % d for a constant d != 0 without a
// division per row.
func modInt64Const(a []int64, d int64, out []int64) {
	out = out[:len(a)]
	switch d {
	case 1, -1:
		clear(out)
		return
	case math.MinInt64:
		for i, x := range a {
			out[i] = x % d
		}
		return
	}
	newDivisor(d).mod(a, d, out)
}

// mod computes out = a % d for the d of the divisor (|d| >= 2, not
// math.MinInt64).
func (dv divisor) mod(a []int64, d int64, out []int64) {
	out = out[:len(a)]
	// The signed high half of m*x is the unsigned one minus the sign
	// corrections (m when x < 0, x when m < 0); with the x added or
	// subtracted by the method, for d > 0 the x terms cancel and for
	// d < 0 one remains.
	um, s := uint64(dv.m), dv.shift
	if d > 0 {
		for i, x := range a {
			hi, _ := bits.Mul64(uint64(x), um)
			q := int64(hi-uint64(x>>63)&um) >> s
			q += int64(uint64(q) >> 63)
			out[i] = x - q*d
		}
		return
	}
	for i, x := range a {
		hi, _ := bits.Mul64(uint64(x), um)
		q := int64(hi-uint64(x>>63)&um-uint64(x)) >> s
		q += int64(uint64(q) >> 63)
		out[i] = x - q*d
	}
}

// ModCompareScalar returns (arr % d) op c for an int64 array and int64
// constants d != 0 and c, with op Eq or Ne, in one pass without
// materialising the remainders (q2's auction % 123 = 0). Null rows give
// null.
func ModCompareScalar(mem memory.Allocator, arr arrow.Array, d int64, op CmpOp, c int64) (*array.Boolean, error) {
	if arr.DataType().ID() != arrow.INT64 {
		return nil, fmt.Errorf("mod compare: %w: %s", ErrUnsupportedType, arr.DataType())
	}
	if d == 0 {
		return nil, fmt.Errorf("mod compare: %w: divisor 0", ErrInvalidArgument)
	}
	if op != Eq && op != Ne {
		return nil, fmt.Errorf("mod compare: %w: operator %s", ErrInvalidArgument, op)
	}
	data := arr.Data()
	n := data.Len()
	bits := newBuffer(mem, int(bitutil.BytesForBits(int64(n))))
	out := bits.Bytes()
	a := fixedValues[int64](data)
	if c == 0 {
		divisibleBits(a, d, op == Ne, out)
		valid, nulls := copyValidity(mem, data)
		return makeArray(arrow.FixedWidthTypes.Boolean, n, []*memory.Buffer{valid, bits}, nulls).(*array.Boolean), nil
	}
	var rem [64]int64
	var dv divisor
	special := d == 1 || d == -1 || d == math.MinInt64
	if !special {
		dv = newDivisor(d)
	}
	for start := 0; start < n; start += 64 {
		chunk := a[start:min(start+64, n)]
		if special {
			modInt64Const(chunk, d, rem[:len(chunk)])
		} else {
			dv.mod(chunk, d, rem[:len(chunk)])
		}
		var w uint64
		for k, r := range rem[:len(chunk)] {
			w |= uint64(b2u(r == c)) << k
		}
		if op == Ne {
			w = ^w
		}
		dst := out[start/8 : min(start/8+8, len(out))]
		for j := range dst {
			dst[j] = byte(w >> (8 * j))
		}
	}
	valid, nulls := copyValidity(mem, data)
	return makeArray(arrow.FixedWidthTypes.Boolean, n, []*memory.Buffer{valid, bits}, nulls).(*array.Boolean), nil
}

// divisibleBits sets bit i of out when d divides a[i] (the opposite with
// negate), eight rows per output byte, without computing remainders: for
// d = d0 * 2^k with d0 odd, x is a multiple of d exactly when
// (x * inverse(d0) + a) rotated right by k is at most max, with the
// constants of Hacker's Delight 10-17 (signed); for a power of two, when
// the low k bits are zero.
func divisibleBits(a []int64, d int64, negate bool, out []byte) {
	ud := uint64(d)
	if d < 0 {
		ud = -ud
	}
	var flip uint8
	if negate {
		flip = 0xff
	}
	// The tests are written out in each loop (a test passed as a func value
	// is an indirect call per row).
	full := len(a) / 8
	k := bits.TrailingZeros64(ud)
	if ud&(ud-1) == 0 { // a power of two (1 and math.MinInt64 included)
		mask := ud - 1
		for i := range full {
			v := a[i*8 : i*8+8 : i*8+8]
			out[i] = (b2u(uint64(v[0])&mask == 0) | b2u(uint64(v[1])&mask == 0)<<1 |
				b2u(uint64(v[2])&mask == 0)<<2 | b2u(uint64(v[3])&mask == 0)<<3 |
				b2u(uint64(v[4])&mask == 0)<<4 | b2u(uint64(v[5])&mask == 0)<<5 |
				b2u(uint64(v[6])&mask == 0)<<6 | b2u(uint64(v[7])&mask == 0)<<7) ^ flip
		}
		if rest := a[full*8:]; len(rest) > 0 {
			var b uint8
			for j, x := range rest {
				b |= b2u(uint64(x)&mask == 0) << j
			}
			out[full] = b ^ flip
		}
		return
	}
	d0 := ud >> k
	m := d0 // Newton's iteration for the inverse of d0 modulo 2^64
	for range 5 {
		m *= 2 - d0*m
	}
	add := (uint64(math.MaxInt64) / d0) &^ (uint64(1)<<k - 1)
	limit := bits.RotateLeft64(2*add, -k)
	// x is divisible by d when rotr(x·m + add, k) <= limit.
	for i := range full {
		v := a[i*8 : i*8+8 : i*8+8]
		out[i] = (b2u(bits.RotateLeft64(uint64(v[0])*m+add, -k) <= limit) |
			b2u(bits.RotateLeft64(uint64(v[1])*m+add, -k) <= limit)<<1 |
			b2u(bits.RotateLeft64(uint64(v[2])*m+add, -k) <= limit)<<2 |
			b2u(bits.RotateLeft64(uint64(v[3])*m+add, -k) <= limit)<<3 |
			b2u(bits.RotateLeft64(uint64(v[4])*m+add, -k) <= limit)<<4 |
			b2u(bits.RotateLeft64(uint64(v[5])*m+add, -k) <= limit)<<5 |
			b2u(bits.RotateLeft64(uint64(v[6])*m+add, -k) <= limit)<<6 |
			b2u(bits.RotateLeft64(uint64(v[7])*m+add, -k) <= limit)<<7) ^ flip
	}
	if rest := a[full*8:]; len(rest) > 0 {
		var b uint8
		for j, x := range rest {
			b |= b2u(bits.RotateLeft64(uint64(x)*m+add, -k) <= limit) << j
		}
		out[full] = b ^ flip
	}
}
