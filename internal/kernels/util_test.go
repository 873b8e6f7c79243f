package kernels_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/decimal128"
	"github.com/apache/arrow-go/v18/arrow/float16"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/arrow/scalar"
)

// Test data is described by Go values, one per row, nil for null:
//
//	signed integers, dates, times, timestamps, durations: int64
//	unsigned integers: uint64
//	float16, float32, float64: float64
//	string, binary (all widths), fixed-size binary: string
//	boolean: bool
//	list<int32>: []int32
//	dictionary<int16, utf8>: string
//	decimal128: int64 (the unscaled value)
//
// The references in these tests compute on those values, never on the
// arrays the kernels read.

var (
	tsMs     = &arrow.TimestampType{Unit: arrow.Millisecond}
	tsUsUTC  = &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}
	fsb3     = &arrow.FixedSizeBinaryType{ByteWidth: 3}
	listI32  = arrow.ListOf(arrow.PrimitiveTypes.Int32)
	dictStr  = &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int16, ValueType: arrow.BinaryTypes.String}
	dec128   = &arrow.Decimal128Type{Precision: 20, Scale: 2}
	durNs    = arrow.FixedWidthTypes.Duration_ns
	time32ms = arrow.FixedWidthTypes.Time32ms
	time64us = arrow.FixedWidthTypes.Time64us
)

// primitiveTypes have a fast path in every kernel that handles them.
var primitiveTypes = []arrow.DataType{
	arrow.PrimitiveTypes.Int8, arrow.PrimitiveTypes.Int16, arrow.PrimitiveTypes.Int32, arrow.PrimitiveTypes.Int64,
	arrow.PrimitiveTypes.Uint8, arrow.PrimitiveTypes.Uint16, arrow.PrimitiveTypes.Uint32, arrow.PrimitiveTypes.Uint64,
	arrow.PrimitiveTypes.Float32, arrow.PrimitiveTypes.Float64,
	arrow.FixedWidthTypes.Date32, arrow.FixedWidthTypes.Date64, time32ms, time64us, tsMs, tsUsUTC, durNs,
	arrow.BinaryTypes.String, arrow.BinaryTypes.LargeString, arrow.BinaryTypes.Binary, arrow.BinaryTypes.LargeBinary,
	arrow.FixedWidthTypes.Boolean,
}

// allTypes adds the layouts that go through arrow compute or special code.
var allTypes = append(append([]arrow.DataType(nil), primitiveTypes...),
	fsb3, listI32, dictStr, dec128, arrow.FixedWidthTypes.Float16)

// newRand returns a seeded generator; the seed is logged and can be fixed
// with MESHFLOW_SEED.
func newRand(t testing.TB) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("MESHFLOW_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("MESHFLOW_SEED: %v", err)
		}
	}
	t.Logf("seed %d (rerun with MESHFLOW_SEED=%[1]d)", seed)
	return rand.New(rand.NewPCG(seed, 0x6d657368))
}

func isSigned(id arrow.Type) bool {
	switch id {
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64, arrow.DATE32, arrow.DATE64,
		arrow.TIME32, arrow.TIME64, arrow.TIMESTAMP, arrow.DURATION:
		return true
	}
	return false
}

func isUnsigned(id arrow.Type) bool {
	switch id {
	case arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64:
		return true
	}
	return false
}

func isFloat(id arrow.Type) bool {
	return id == arrow.FLOAT16 || id == arrow.FLOAT32 || id == arrow.FLOAT64
}

func isBinary(id arrow.Type) bool {
	switch id {
	case arrow.STRING, arrow.LARGE_STRING, arrow.BINARY, arrow.LARGE_BINARY:
		return true
	}
	return false
}

// bitWidth of the integer types.
func bitWidth(dt arrow.DataType) int {
	if fw, ok := dt.(arrow.FixedWidthDataType); ok {
		return fw.BitWidth()
	}
	return 64
}

// valueGen describes random values.
type valueGen struct {
	nullPct int // percentage of nulls
	// small keeps numbers in [-lim, lim] (unsigned [0, lim]); otherwise a
	// quarter of them span the type's whole range.
	small bool
	lim   int64
	// noZero avoids zeros (divisors).
	noZero bool
}

func (g valueGen) value(rng *rand.Rand, dt arrow.DataType) any {
	if g.nullPct > 0 && rng.IntN(100) < g.nullPct {
		return nil
	}
	lim := g.lim
	if lim == 0 {
		lim = 4
	}
	id := dt.ID()
	switch {
	case isSigned(id) || id == arrow.DECIMAL128:
		w := bitWidth(dt)
		if id == arrow.DATE64 || id == arrow.TIME64 || id == arrow.DURATION || id == arrow.TIMESTAMP || id == arrow.DECIMAL128 {
			w = 64
		}
		for {
			var v int64
			if g.small || rng.IntN(4) != 0 {
				v = rng.Int64N(2*lim+1) - lim
			} else {
				switch rng.IntN(4) {
				case 0:
					v = math.MinInt64 >> (64 - w)
				case 1:
					v = math.MaxInt64 >> (64 - w)
				default:
					v = int64(rng.Uint64()) >> (64 - w)
				}
			}
			if id == arrow.TIME32 || id == arrow.TIME64 {
				v = max(v, 0) // times of day are non-negative
			}
			if g.noZero && v == 0 {
				continue
			}
			return v
		}
	case isUnsigned(id):
		w := bitWidth(dt)
		for {
			var v uint64
			if g.small || rng.IntN(4) != 0 {
				v = rng.Uint64N(uint64(lim) + 1)
			} else {
				v = rng.Uint64() >> (64 - w)
			}
			if g.noZero && v == 0 {
				continue
			}
			return v
		}
	case isFloat(id):
		var v float64
		switch r := rng.IntN(20); {
		case g.small || r < 14:
			v = float64(rng.Int64N(8*lim+1)-4*lim) / 4
		case r == 14:
			v = math.NaN()
		case r == 15:
			v = math.Copysign(0, -1)
		case r == 16:
			v = math.Inf(1 - 2*rng.IntN(2))
		default:
			v = rng.NormFloat64() * 1e6
		}
		if g.noZero && v == 0 {
			v = 1
		}
		switch id {
		case arrow.FLOAT32:
			v = float64(float32(v))
		case arrow.FLOAT16:
			v = float64(float16.New(float32(v)).Float32())
		}
		return v
	case isBinary(id) || id == arrow.DICTIONARY:
		// Mostly short values over a small alphabet (many equal values and
		// prefixes); some longer than the 32-byte block copies.
		n := rng.IntN(4)
		if rng.IntN(4) == 0 {
			n = rng.IntN(80)
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = "ab\x00\xff"[rng.IntN(4)]
			if id == arrow.STRING || id == arrow.LARGE_STRING || id == arrow.DICTIONARY {
				b[i] = "abc"[rng.IntN(3)]
			}
		}
		return string(b)
	case id == arrow.FIXED_SIZE_BINARY:
		w := dt.(*arrow.FixedSizeBinaryType).ByteWidth
		b := make([]byte, w)
		for i := range b {
			b[i] = byte(rng.IntN(3))
		}
		return string(b)
	case id == arrow.BOOL:
		return rng.IntN(2) == 1
	case id == arrow.LIST:
		l := make([]int32, rng.IntN(4))
		for i := range l {
			l[i] = rng.Int32N(100)
		}
		return l
	}
	panic(fmt.Sprintf("no generator for %s", dt))
}

func (g valueGen) values(rng *rand.Rand, dt arrow.DataType, n int) []any {
	vals := make([]any, n)
	for i := range vals {
		vals[i] = g.value(rng, dt)
	}
	return vals
}

// build returns an array of type dt holding vals.
func build(mem memory.Allocator, dt arrow.DataType, vals []any) arrow.Array {
	b := array.NewBuilder(mem, dt)
	defer b.Release()
	for _, v := range vals {
		if v == nil {
			b.AppendNull()
			continue
		}
		switch b := b.(type) {
		case *array.Int8Builder:
			b.Append(int8(v.(int64)))
		case *array.Int16Builder:
			b.Append(int16(v.(int64)))
		case *array.Int32Builder:
			b.Append(int32(v.(int64)))
		case *array.Int64Builder:
			b.Append(v.(int64))
		case *array.Uint8Builder:
			b.Append(uint8(v.(uint64)))
		case *array.Uint16Builder:
			b.Append(uint16(v.(uint64)))
		case *array.Uint32Builder:
			b.Append(uint32(v.(uint64)))
		case *array.Uint64Builder:
			b.Append(v.(uint64))
		case *array.Float16Builder:
			b.Append(float16.New(float32(v.(float64))))
		case *array.Float32Builder:
			b.Append(float32(v.(float64)))
		case *array.Float64Builder:
			b.Append(v.(float64))
		case *array.Date32Builder:
			b.Append(arrow.Date32(v.(int64)))
		case *array.Date64Builder:
			b.Append(arrow.Date64(v.(int64)))
		case *array.Time32Builder:
			b.Append(arrow.Time32(v.(int64)))
		case *array.Time64Builder:
			b.Append(arrow.Time64(v.(int64)))
		case *array.TimestampBuilder:
			b.Append(arrow.Timestamp(v.(int64)))
		case *array.DurationBuilder:
			b.Append(arrow.Duration(v.(int64)))
		case *array.StringBuilder:
			b.Append(v.(string))
		case *array.LargeStringBuilder:
			b.Append(v.(string))
		case *array.BinaryBuilder:
			b.Append([]byte(v.(string)))
		case *array.FixedSizeBinaryBuilder:
			b.Append([]byte(v.(string)))
		case *array.BooleanBuilder:
			b.Append(v.(bool))
		case *array.ListBuilder:
			b.Append(true)
			b.ValueBuilder().(*array.Int32Builder).AppendValues(v.([]int32), nil)
		case *array.BinaryDictionaryBuilder:
			if err := b.AppendString(v.(string)); err != nil {
				panic(err)
			}
		case *array.Decimal128Builder:
			b.Append(decimal128.FromI64(v.(int64)))
		default:
			panic(fmt.Sprintf("no builder case for %T", b))
		}
	}
	return b.NewArray()
}

// randArray returns n random values and an array of them that is a slice
// at offset off of a longer array (0 <= off).
func randArray(mem memory.Allocator, rng *rand.Rand, g valueGen, dt arrow.DataType, n, off int) (arrow.Array, []any) {
	vals := g.values(rng, dt, off+n+rng.IntN(3))
	return slicedArray(mem, dt, vals, off, n), vals[off : off+n]
}

// slicedArray builds vals and returns the slice [off, off+n) of it.
func slicedArray(mem memory.Allocator, dt arrow.DataType, vals []any, off, n int) arrow.Array {
	full := build(mem, dt, vals)
	defer full.Release()
	return array.NewSlice(full, int64(off), int64(off+n))
}

// newScalar returns a scalar of type dt holding v (nil: null). The caller
// releases it with releaseScalar.
func newScalar(mem memory.Allocator, dt arrow.DataType, v any) scalar.Scalar {
	a := build(mem, dt, []any{v})
	defer a.Release()
	s, err := scalar.GetScalar(a, 0)
	if err != nil {
		panic(err)
	}
	return s
}

func releaseScalar(s scalar.Scalar) {
	if r, ok := s.(scalar.Releasable); ok {
		r.Release()
	}
}

// checkArray checks the structural invariants of a kernel's output: a null
// count matching the validity bitmap, and full validation where arrow
// offers it.
func checkArray(t testing.TB, what string, a arrow.Array) {
	t.Helper()
	nulls := 0
	for i := range a.Len() {
		if a.IsNull(i) {
			nulls++
		}
	}
	if a.NullN() != nulls {
		t.Fatalf("%s: NullN() = %d, bitmap has %d nulls", what, a.NullN(), nulls)
	}
	if v, ok := a.(interface{ ValidateFull() error }); ok {
		if err := v.ValidateFull(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
}

// sameValue reports whether two Go test values are equal, NaN equal to NaN
// and -0 distinct from +0 (kernels that copy must copy bits).
func sameValue(a, b any) bool {
	fa, okA := a.(float64)
	fb, okB := b.(float64)
	if okA && okB {
		return math.Float64bits(fa) == math.Float64bits(fb) || (math.IsNaN(fa) && math.IsNaN(fb))
	}
	switch a := a.(type) {
	case []int32:
		b, ok := b.([]int32)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if a[i] != b[i] {
				return false
			}
		}
		return true
	}
	return a == b
}

// valuesOf reads an array back into Go test values.
func valuesOf(a arrow.Array) []any {
	out := make([]any, a.Len())
	for i := range out {
		if a.IsNull(i) {
			continue
		}
		switch a := a.(type) {
		case *array.Int8:
			out[i] = int64(a.Value(i))
		case *array.Int16:
			out[i] = int64(a.Value(i))
		case *array.Int32:
			out[i] = int64(a.Value(i))
		case *array.Int64:
			out[i] = a.Value(i)
		case *array.Uint8:
			out[i] = uint64(a.Value(i))
		case *array.Uint16:
			out[i] = uint64(a.Value(i))
		case *array.Uint32:
			out[i] = uint64(a.Value(i))
		case *array.Uint64:
			out[i] = a.Value(i)
		case *array.Float16:
			out[i] = float64(a.Value(i).Float32())
		case *array.Float32:
			out[i] = float64(a.Value(i))
		case *array.Float64:
			out[i] = a.Value(i)
		case *array.Date32:
			out[i] = int64(a.Value(i))
		case *array.Date64:
			out[i] = int64(a.Value(i))
		case *array.Time32:
			out[i] = int64(a.Value(i))
		case *array.Time64:
			out[i] = int64(a.Value(i))
		case *array.Timestamp:
			out[i] = int64(a.Value(i))
		case *array.Duration:
			out[i] = int64(a.Value(i))
		case *array.String:
			out[i] = a.Value(i)
		case *array.LargeString:
			out[i] = a.Value(i)
		case *array.Binary:
			out[i] = string(a.Value(i))
		case *array.LargeBinary:
			out[i] = string(a.Value(i))
		case *array.FixedSizeBinary:
			out[i] = string(a.Value(i))
		case *array.Boolean:
			out[i] = a.Value(i)
		case *array.List:
			s, e := a.ValueOffsets(i)
			vals := a.ListValues().(*array.Int32).Int32Values()
			out[i] = append([]int32{}, vals[s:e]...)
		case *array.Dictionary:
			out[i] = a.Dictionary().(*array.String).Value(a.GetValueIndex(i))
		case *array.Decimal128:
			out[i] = int64(a.Value(i).LowBits())
		default:
			panic(fmt.Sprintf("valuesOf: %T", a))
		}
	}
	return out
}

// checkValues compares an array with expected Go values.
func checkValues(t testing.TB, what string, got arrow.Array, want []any) {
	t.Helper()
	checkArray(t, what, got)
	if got.Len() != len(want) {
		t.Fatalf("%s: %d rows, want %d", what, got.Len(), len(want))
	}
	for i, g := range valuesOf(got) {
		if !sameValue(g, want[i]) {
			t.Fatalf("%s: row %d = %s, want %s", what, i, show(g), show(want[i]))
		}
	}
}

func show(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return strconv.Quote(v)
	}
	return fmt.Sprint(v)
}

func showAll(vals []any) string {
	parts := make([]string, len(vals))
	for i, v := range vals {
		parts[i] = show(v)
	}
	return "[" + strings.Join(parts, " ") + "]"
}
