package kernels

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/arrow/scalar"
)

// number is the element type of the numeric fast paths.
type number interface {
	~int8 | ~int16 | ~int32 | ~int64 | ~uint8 | ~uint16 | ~uint32 | ~uint64 | ~float32 | ~float64
}

// CmpOp is a comparison operator.
type CmpOp uint8

// The comparison operators. Floating-point comparisons follow IEEE 754: NaN
// is unequal to everything, itself included.
const (
	Eq CmpOp = iota // =
	Ne              // !=
	Lt              // <
	Le              // <=
	Gt              // >
	Ge              // >=
)

var cmpSymbols = [...]string{Eq: "=", Ne: "!=", Lt: "<", Le: "<=", Gt: ">", Ge: ">="}
var cmpFuncs = [...]string{Eq: "equal", Ne: "not_equal", Lt: "less", Le: "less_equal", Gt: "greater", Ge: "greater_equal"}

// String returns the operator's symbol.
func (op CmpOp) String() string {
	if int(op) < len(cmpSymbols) {
		return cmpSymbols[op]
	}
	return fmt.Sprintf("CmpOp(%d)", op)
}

// Swap returns the operator with the operands exchanged: a op b is
// b op.Swap() a.
func (op CmpOp) Swap() CmpOp {
	switch op {
	case Lt:
		return Gt
	case Le:
		return Ge
	case Gt:
		return Lt
	case Ge:
		return Le
	}
	return op
}

// Negate returns the operator giving the opposite result for ordered
// (non-NaN) operands: !(a op b) is a op.Negate() b.
func (op CmpOp) Negate() CmpOp {
	return [...]CmpOp{Eq: Ne, Ne: Eq, Lt: Ge, Le: Gt, Gt: Le, Ge: Lt}[op]
}

func (op CmpOp) valid() bool { return op <= Ge }

// resultMask has bit c+1 set when op holds for a three-way comparison
// result c in {-1, 0, 1}.
func (op CmpOp) resultMask() uint8 {
	return [...]uint8{Eq: 0b010, Ne: 0b101, Lt: 0b001, Le: 0b011, Gt: 0b100, Ge: 0b110}[op]
}

// CompareTypes reports whether values of types left and right can be
// compared with every CmpOp, by the fast paths or by arrow compute.
func CompareTypes(left, right arrow.DataType) error {
	if arrow.TypeEqual(left, right) && fastCompare(left.ID()) {
		return nil
	}
	for _, fn := range []string{cmpFuncs[Eq], cmpFuncs[Lt]} {
		if _, err := probeOutputType(fn, left, right); err != nil {
			return fmt.Errorf("%w: cannot compare %s with %s", ErrUnsupportedType, left, right)
		}
	}
	return nil
}

// fastCompare reports whether two arrays of the same type id have a
// hand-written comparison.
func fastCompare(id arrow.Type) bool {
	return numericLayout(id) || binaryLayout(id) || id == arrow.BOOL || id == arrow.FIXED_SIZE_BINARY
}

// Compare returns left op right, row by row. Both arrays must have the same
// length. A null on either side gives null.
func Compare(mem memory.Allocator, op CmpOp, left, right arrow.Array) (*array.Boolean, error) {
	if !op.valid() {
		return nil, fmt.Errorf("compare: %w: operator %d", ErrInvalidArgument, op)
	}
	if left.Len() != right.Len() {
		return nil, fmt.Errorf("compare: %w: %d and %d rows", ErrLengthMismatch, left.Len(), right.Len())
	}
	if !arrow.TypeEqual(left.DataType(), right.DataType()) {
		return compareCompute(mem, op, compute.NewDatumWithoutOwning(left), compute.NewDatumWithoutOwning(right))
	}
	ld, rd := left.Data(), right.Data()
	n := ld.Len()
	out := newBuffer(mem, int(bitutil.BytesForBits(int64(n))))
	if !compareArrays(op, ld, rd, out.Bytes()) {
		out.Release()
		return compareCompute(mem, op, compute.NewDatumWithoutOwning(left), compute.NewDatumWithoutOwning(right))
	}
	valid, nulls := andValidity(mem, ld, rd)
	return makeArray(arrow.FixedWidthTypes.Boolean, n, []*memory.Buffer{valid, out}, nulls).(*array.Boolean), nil
}

// CompareScalar returns left op right for every row of left. A null scalar
// gives an all-null result.
func CompareScalar(mem memory.Allocator, op CmpOp, left arrow.Array, right scalar.Scalar) (*array.Boolean, error) {
	if !op.valid() {
		return nil, fmt.Errorf("compare: %w: operator %d", ErrInvalidArgument, op)
	}
	if right == nil {
		return nil, fmt.Errorf("compare: %w: nil scalar", ErrInvalidArgument)
	}
	ld := left.Data()
	n := ld.Len()
	if !right.IsValid() {
		valid, nulls := allNull(mem, n)
		return makeArray(arrow.FixedWidthTypes.Boolean, n, []*memory.Buffer{valid, newBitmap(mem, n)}, nulls).(*array.Boolean), nil
	}
	if arrow.TypeEqual(left.DataType(), right.DataType()) {
		out := newBuffer(mem, int(bitutil.BytesForBits(int64(n))))
		if compareWithScalar(op, ld, right, out.Bytes()) {
			valid, nulls := copyValidity(mem, ld)
			return makeArray(arrow.FixedWidthTypes.Boolean, n, []*memory.Buffer{valid, out}, nulls).(*array.Boolean), nil
		}
		out.Release()
	}
	return compareCompute(mem, op, compute.NewDatumWithoutOwning(left), compute.NewDatumWithoutOwning(right))
}

func compareCompute(mem memory.Allocator, op CmpOp, left, right compute.Datum) (*array.Boolean, error) {
	ctx := compute.WithAllocator(context.Background(), mem)
	res, err := compute.CallFunction(ctx, cmpFuncs[op], nil, left, right)
	if err != nil {
		return nil, fmt.Errorf("compare %s %s %s: %w: %w", typeOf(left), op, typeOf(right), ErrUnsupportedType, err)
	}
	defer res.Release()
	arr := res.(*compute.ArrayDatum).MakeArray()
	b, ok := arr.(*array.Boolean)
	if !ok {
		arr.Release()
		return nil, fmt.Errorf("compare: %w: %s result", ErrUnsupportedType, arr.DataType())
	}
	return b, nil
}

func typeOf(d compute.Datum) arrow.DataType {
	if d, ok := d.(compute.ArrayLikeDatum); ok {
		return d.Type()
	}
	return nil
}

// numericLayout reports whether values of type id are compared as plain
// integers or floats by the fast paths.
func numericLayout(id arrow.Type) bool {
	switch id {
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64,
		arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64,
		arrow.FLOAT32, arrow.FLOAT64,
		arrow.DATE32, arrow.DATE64, arrow.TIME32, arrow.TIME64, arrow.TIMESTAMP, arrow.DURATION:
		return true
	}
	return false
}

func binaryLayout(id arrow.Type) bool {
	switch id {
	case arrow.STRING, arrow.BINARY, arrow.LARGE_STRING, arrow.LARGE_BINARY:
		return true
	}
	return false
}

// compareArrays writes left op right into out for two arrays of the same
// type; false when the type has no fast path.
func compareArrays(op CmpOp, l, r arrow.ArrayData, out []byte) bool {
	switch l.DataType().ID() {
	case arrow.INT8:
		cmpArrays(op, fixedValues[int8](l), fixedValues[int8](r), out)
	case arrow.INT16:
		cmpArrays(op, fixedValues[int16](l), fixedValues[int16](r), out)
	case arrow.INT32, arrow.DATE32, arrow.TIME32:
		cmpArrays(op, fixedValues[int32](l), fixedValues[int32](r), out)
	case arrow.INT64, arrow.DATE64, arrow.TIME64, arrow.TIMESTAMP, arrow.DURATION:
		cmpArrays(op, fixedValues[int64](l), fixedValues[int64](r), out)
	case arrow.UINT8:
		cmpArrays(op, fixedValues[uint8](l), fixedValues[uint8](r), out)
	case arrow.UINT16:
		cmpArrays(op, fixedValues[uint16](l), fixedValues[uint16](r), out)
	case arrow.UINT32:
		cmpArrays(op, fixedValues[uint32](l), fixedValues[uint32](r), out)
	case arrow.UINT64:
		cmpArrays(op, fixedValues[uint64](l), fixedValues[uint64](r), out)
	case arrow.FLOAT32:
		cmpArrays(op, fixedValues[float32](l), fixedValues[float32](r), out)
	case arrow.FLOAT64:
		cmpArrays(op, fixedValues[float64](l), fixedValues[float64](r), out)
	case arrow.STRING, arrow.BINARY:
		cmpBinaryArrays(op, binaryView[int32](l), binaryView[int32](r), out)
	case arrow.LARGE_STRING, arrow.LARGE_BINARY:
		cmpBinaryArrays(op, binaryView[int64](l), binaryView[int64](r), out)
	case arrow.FIXED_SIZE_BINARY:
		// Not arrow compute: as of arrow-go v18.8.0 it ignores the offset
		// of sliced fixed-size binary arrays.
		lv, rv := fixedBinaryView(l), fixedBinaryView(r)
		cmpBinary(op, lv.len(), lv.at, rv.at, out)
	case arrow.BOOL:
		// arrow compute only has equal and not_equal for booleans.
		cmpBoolArrays(op, l, r, out)
	default:
		return false
	}
	return true
}

// compareWithScalar writes l op s into out for an array and a valid scalar
// of the same type; false when the type has no fast path.
func compareWithScalar(op CmpOp, l arrow.ArrayData, s scalar.Scalar, out []byte) bool {
	switch l.DataType().ID() {
	case arrow.INT8:
		cmpScalar(op, fixedValues[int8](l), scalarValue[int8](s), out)
	case arrow.INT16:
		cmpScalar(op, fixedValues[int16](l), scalarValue[int16](s), out)
	case arrow.INT32, arrow.DATE32, arrow.TIME32:
		cmpScalar(op, fixedValues[int32](l), scalarValue[int32](s), out)
	case arrow.INT64, arrow.DATE64, arrow.TIME64, arrow.TIMESTAMP, arrow.DURATION:
		cmpScalar(op, fixedValues[int64](l), scalarValue[int64](s), out)
	case arrow.UINT8:
		cmpScalar(op, fixedValues[uint8](l), scalarValue[uint8](s), out)
	case arrow.UINT16:
		cmpScalar(op, fixedValues[uint16](l), scalarValue[uint16](s), out)
	case arrow.UINT32:
		cmpScalar(op, fixedValues[uint32](l), scalarValue[uint32](s), out)
	case arrow.UINT64:
		cmpScalar(op, fixedValues[uint64](l), scalarValue[uint64](s), out)
	case arrow.FLOAT32:
		cmpScalar(op, fixedValues[float32](l), scalarValue[float32](s), out)
	case arrow.FLOAT64:
		cmpScalar(op, fixedValues[float64](l), scalarValue[float64](s), out)
	case arrow.STRING, arrow.BINARY:
		cmpBinaryScalar(op, binaryView[int32](l), s.(scalar.BinaryScalar).Data(), out)
	case arrow.LARGE_STRING, arrow.LARGE_BINARY:
		cmpBinaryScalar(op, binaryView[int64](l), s.(scalar.BinaryScalar).Data(), out)
	case arrow.FIXED_SIZE_BINARY:
		lv, sv := fixedBinaryView(l), s.(scalar.BinaryScalar).Data()
		cmpBinary(op, lv.len(), lv.at, func(int) []byte { return sv }, out)
	case arrow.BOOL:
		cmpBoolScalar(op, l, s.(*scalar.Boolean).Value, out)
	default:
		return false
	}
	return true
}

// scalarValue returns the value of a primitive scalar whose values are
// T-typed.
func scalarValue[T number](s scalar.Scalar) T {
	b := s.(scalar.PrimitiveScalar).Data()
	return *(*T)(unsafe.Pointer(unsafe.SliceData(b)))
}

func cmpScalar[T number](op CmpOp, a []T, s T, out []byte) {
	switch op {
	case Eq:
		eqScalar(a, s, out)
	case Ne:
		neScalar(a, s, out)
	case Lt:
		ltScalar(a, s, out)
	case Le:
		leScalar(a, s, out)
	case Gt:
		gtScalar(a, s, out)
	case Ge:
		geScalar(a, s, out)
	}
}

func cmpArrays[T number](op CmpOp, a, b []T, out []byte) {
	switch op {
	case Eq:
		eqArrays(a, b, out)
	case Ne:
		neArrays(a, b, out)
	case Lt:
		ltArrays(a, b, out)
	case Le:
		leArrays(a, b, out)
	case Gt:
		ltArrays(b, a, out)
	case Ge:
		leArrays(b, a, out)
	}
}

// binaryValues is a string or binary array's offsets (array offset applied,
// len = rows+1) and its whole data buffer.
type binaryValues[O int32 | int64] struct {
	offs []O
	data []byte
}

func (v binaryValues[O]) len() int { return max(len(v.offs)-1, 0) }

func (v binaryValues[O]) at(i int) []byte { return v.data[v.offs[i]:v.offs[i+1]] }

func binaryView[O int32 | int64](d arrow.ArrayData) binaryValues[O] {
	var v binaryValues[O]
	if d.Len() == 0 {
		return v
	}
	v.offs = castSlice[O](d.Buffers()[1].Bytes())[d.Offset() : d.Offset()+d.Len()+1]
	if b := d.Buffers()[2]; b != nil {
		v.data = b.Bytes()
	}
	return v
}

func cmpBinaryScalar[O int32 | int64](op CmpOp, a binaryValues[O], s []byte, out []byte) {
	n := a.len()
	var acc uint8
	switch op {
	case Eq, Ne:
		want := op == Eq
		if len(s) <= 8 {
			cmpShortScalar(want, a, s, out)
			return
		}
		for i := range n {
			acc |= b2u(bytes.Equal(a.at(i), s) == want) << (i & 7)
			if i&7 == 7 {
				out[i>>3], acc = acc, 0
			}
		}
	default:
		m := op.resultMask()
		for i := range n {
			acc |= (m >> (bytes.Compare(a.at(i), s) + 1) & 1) << (i & 7)
			if i&7 == 7 {
				out[i>>3], acc = acc, 0
			}
		}
	}
	if n&7 != 0 {
		out[n>>3] = acc
	}
}

// cmpShortScalar is the Eq (want) or Ne (!want) comparison with a scalar
// of at most 8 bytes: a value is equal when it has the scalar's length
// and its first 8 bytes, masked to that length, are the scalar's, read as
// one word where 8 bytes are left in the data (bytes.Equal otherwise:
// the last values only).
func cmpShortScalar[O int32 | int64](want bool, a binaryValues[O], s []byte, out []byte) {
	n := a.len()
	var sw [8]byte
	copy(sw[:], s)
	word := binary.LittleEndian.Uint64(sw[:])
	mask := uint64(1)<<(8*len(s)) - 1
	if len(s) == 8 {
		mask = math.MaxUint64
	}
	if n == 0 {
		return
	}
	size, data, offs := O(len(s)), a.data, a.offs[:n+1]
	// Offsets never decrease: the values starting with 8 bytes left in the
	// data come first, compared 8 at a time without a branch; the last few
	// with bytes.Equal.
	last := O(len(data) - 8) // the last start with 8 bytes left
	words := n
	if last < 0 {
		words = 0
	}
	for words > 0 && offs[words-1] > last {
		words--
	}
	ne := b2u(!want)
	full := words &^ 7
	if full > 0 {
		base := unsafe.Pointer(unsafe.SliceData(data))
		// Well-formed offsets have 0 <= start <= last here, 8 bytes left;
		// clamped all the same, so that offsets forged in an IPC frame
		// never read outside the data. The 8 tests are written out (a
		// loop shifts by a variable).
		eq := func(start, end O) uint8 {
			w := *(*uint64)(unsafe.Add(base, min(max(start, 0), last)))
			return b2u(end-start == size) & b2u(w&mask == word)
		}
		for i := 0; i < full; i += 8 {
			o := (*[9]O)(offs[i : i+9])
			out[i>>3] = (eq(o[0], o[1]) | eq(o[1], o[2])<<1 | eq(o[2], o[3])<<2 | eq(o[3], o[4])<<3 |
				eq(o[4], o[5])<<4 | eq(o[5], o[6])<<5 | eq(o[6], o[7])<<6 | eq(o[7], o[8])<<7) ^ (0 - ne)
		}
	}
	var acc uint8
	for i := full; i < n; i++ {
		acc |= b2u(bytes.Equal(data[offs[i]:offs[i+1]], s) == want) << (i & 7)
		if i&7 == 7 {
			out[i>>3], acc = acc, 0
		}
	}
	if n&7 != 0 {
		out[n>>3] = acc
	}
}

func cmpBinaryArrays[O int32 | int64](op CmpOp, a, b binaryValues[O], out []byte) {
	n := a.len()
	var acc uint8
	switch op {
	case Eq, Ne:
		want := op == Eq
		for i := range n {
			acc |= b2u(bytes.Equal(a.at(i), b.at(i)) == want) << (i & 7)
			if i&7 == 7 {
				out[i>>3], acc = acc, 0
			}
		}
	default:
		m := op.resultMask()
		for i := range n {
			acc |= (m >> (bytes.Compare(a.at(i), b.at(i)) + 1) & 1) << (i & 7)
			if i&7 == 7 {
				out[i>>3], acc = acc, 0
			}
		}
	}
	if n&7 != 0 {
		out[n>>3] = acc
	}
}

// fixedBinaryValues is a fixed-size binary array's values, array offset
// applied.
type fixedBinaryValues struct {
	data  []byte
	width int
	n     int
}

func (v fixedBinaryValues) len() int { return v.n }

func (v fixedBinaryValues) at(i int) []byte { return v.data[i*v.width : (i+1)*v.width] }

func fixedBinaryView(d arrow.ArrayData) fixedBinaryValues {
	w := d.DataType().(*arrow.FixedSizeBinaryType).ByteWidth
	v := fixedBinaryValues{width: w, n: d.Len()}
	if b := d.Buffers()[1]; b != nil && d.Len() > 0 {
		v.data = b.Bytes()[d.Offset()*w : (d.Offset()+d.Len())*w]
	}
	return v
}

// cmpBinary writes a(i) op b(i) for i < n into out.
func cmpBinary(op CmpOp, n int, a, b func(int) []byte, out []byte) {
	m := op.resultMask()
	var acc uint8
	for i := range n {
		acc |= (m >> (bytes.Compare(a(i), b(i)) + 1) & 1) << (i & 7)
		if i&7 == 7 {
			out[i>>3], acc = acc, 0
		}
	}
	if n&7 != 0 {
		out[n>>3] = acc
	}
}

// boolWord computes one output byte from bytes of the left and right
// values (false < true).
func boolWord(op CmpOp, a, b byte) byte {
	switch op {
	case Eq:
		return ^(a ^ b)
	case Ne:
		return a ^ b
	case Lt:
		return ^a & b
	case Le:
		return ^a | b
	case Gt:
		return a &^ b
	default:
		return a | ^b
	}
}

func cmpBoolArrays(op CmpOp, l, r arrow.ArrayData, out []byte) {
	n := l.Len()
	if n == 0 {
		return
	}
	a := alignedBits(l.Buffers()[1].Bytes(), l.Offset(), n)
	b := alignedBits(r.Buffers()[1].Bytes(), r.Offset(), n)
	for i := range out[:bitutil.BytesForBits(int64(n))] {
		out[i] = boolWord(op, a[i], b[i])
	}
}

func cmpBoolScalar(op CmpOp, l arrow.ArrayData, s bool, out []byte) {
	n := l.Len()
	if n == 0 {
		return
	}
	a := alignedBits(l.Buffers()[1].Bytes(), l.Offset(), n)
	var b byte
	if s {
		b = 0xff
	}
	for i := range out[:bitutil.BytesForBits(int64(n))] {
		out[i] = boolWord(op, a[i], b)
	}
}
