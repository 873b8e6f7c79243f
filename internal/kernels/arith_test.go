package kernels_test

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/arrow/scalar"

	"github.com/meshflow/meshflow/internal/kernels"
)

var arithOps = []kernels.ArithOp{kernels.Add, kernels.Sub, kernels.Mul, kernels.Div}

var arithComputeNames = map[kernels.ArithOp]string{
	kernels.Add: "add", kernels.Sub: "sub", kernels.Mul: "multiply", kernels.Div: "divide",
}

// arithPairs are operand types: the int64/float64 fast paths first, then
// types that go through arrow compute.
var arithPairs = [][2]arrow.DataType{
	{arrow.PrimitiveTypes.Int64, arrow.PrimitiveTypes.Int64},
	{arrow.PrimitiveTypes.Int64, arrow.PrimitiveTypes.Float64},
	{arrow.PrimitiveTypes.Float64, arrow.PrimitiveTypes.Int64},
	{arrow.PrimitiveTypes.Float64, arrow.PrimitiveTypes.Float64},
	{arrow.PrimitiveTypes.Int32, arrow.PrimitiveTypes.Int32},
	{arrow.PrimitiveTypes.Int8, arrow.PrimitiveTypes.Int8},
	{arrow.PrimitiveTypes.Uint16, arrow.PrimitiveTypes.Uint16},
	{arrow.PrimitiveTypes.Uint64, arrow.PrimitiveTypes.Uint64},
	{arrow.PrimitiveTypes.Float32, arrow.PrimitiveTypes.Float32},
	{arrow.PrimitiveTypes.Int32, arrow.PrimitiveTypes.Int64},
	{arrow.PrimitiveTypes.Float32, arrow.PrimitiveTypes.Float64},
}

// fault is the reference's verdict on one row.
type fault int

const (
	noFault fault = iota
	overflow
	divByZero
)

func toFloat(v any) float64 {
	switch v := v.(type) {
	case int64:
		return float64(v)
	case uint64:
		return float64(v)
	}
	return v.(float64)
}

func toBig(v any) *big.Int {
	switch v := v.(type) {
	case int64:
		return big.NewInt(v)
	case uint64:
		return new(big.Int).SetUint64(v)
	}
	panic(fmt.Sprintf("toBig(%T)", v))
}

// refArith is the row-by-row reference of a op b with result type dt:
// exact integer arithmetic checked against dt's range, IEEE 754 in dt's
// float width.
func refArith(op kernels.ArithOp, dt arrow.DataType, a, b any) (any, fault) {
	if a == nil || b == nil {
		return nil, noFault
	}
	switch dt.ID() {
	case arrow.FLOAT32:
		x, y := float32(toFloat(a)), float32(toFloat(b))
		var r float32
		switch op {
		case kernels.Add:
			r = x + y
		case kernels.Sub:
			r = x - y
		case kernels.Mul:
			r = x * y
		default:
			r = x / y
		}
		return float64(r), noFault
	case arrow.FLOAT64:
		x, y := toFloat(a), toFloat(b)
		switch op {
		case kernels.Add:
			return x + y, noFault
		case kernels.Sub:
			return x - y, noFault
		case kernels.Mul:
			return x * y, noFault
		default:
			return x / y, noFault
		}
	}
	x, y := toBig(a), toBig(b)
	r := new(big.Int)
	switch op {
	case kernels.Add:
		r.Add(x, y)
	case kernels.Sub:
		r.Sub(x, y)
	case kernels.Mul:
		r.Mul(x, y)
	default:
		if y.Sign() == 0 {
			return nil, divByZero
		}
		r.Quo(x, y) // truncated toward zero
	}
	w := uint(bitWidth(dt))
	if isUnsigned(dt.ID()) {
		if r.Sign() < 0 || r.BitLen() > int(w) {
			return nil, overflow
		}
		return r.Uint64(), noFault
	}
	lo := new(big.Int).Neg(new(big.Int).Lsh(big.NewInt(1), w-1))
	hi := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), w-1), big.NewInt(1))
	if r.Cmp(lo) < 0 || r.Cmp(hi) > 0 {
		return nil, overflow
	}
	return r.Int64(), noFault
}

// checkArith checks a kernel result against the reference values and
// faults: any fault in a valid row must make the kernel fail with the
// matching sentinel.
func checkArith(t *testing.T, what string, got arrow.Array, err error, dt arrow.DataType, want []any, faults []fault) {
	t.Helper()
	var kinds [3]bool
	for _, f := range faults {
		kinds[f] = true
	}
	if kinds[overflow] || kinds[divByZero] {
		if got != nil {
			got.Release()
		}
		switch {
		case err == nil:
			t.Fatalf("%s: no error, want a fault (overflow %v, division by zero %v)", what, kinds[overflow], kinds[divByZero])
		case !kinds[divByZero] && !errors.Is(err, kernels.ErrOverflow):
			t.Fatalf("%s: %v, want ErrOverflow", what, err)
		case !kinds[overflow] && !errors.Is(err, kernels.ErrDivideByZero):
			t.Fatalf("%s: %v, want ErrDivideByZero", what, err)
		case !errors.Is(err, kernels.ErrOverflow) && !errors.Is(err, kernels.ErrDivideByZero):
			t.Fatalf("%s: %v, want ErrOverflow or ErrDivideByZero", what, err)
		}
		return
	}
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	defer got.Release()
	if !arrow.TypeEqual(got.DataType(), dt) {
		t.Fatalf("%s: result type %s, ArithResultType says %s", what, got.DataType(), dt)
	}
	checkValues(t, what, got, want)
}

func TestArith(t *testing.T) {
	rng := newRand(t)
	for _, p := range arithPairs {
		t.Run(p[0].String()+"_"+p[1].String(), func(t *testing.T) {
			mem := newTestAllocator()
			defer mem.AssertSize(t, 0)
			// Small values exercise the results, full-range ones the
			// overflow checks.
			for _, small := range []bool{true, false} {
				for _, op := range arithOps {
					dt, err := kernels.ArithResultType(op, p[0], p[1])
					if err != nil {
						t.Fatalf("ArithResultType(%s): %v", op, err)
					}
					lg := valueGen{nullPct: 15, small: small, lim: 50}
					rg := lg
					rg.noZero = small && op == kernels.Div
					for _, n := range sizes {
						off := [2]int{n % 3, n % 5}
						left, lv := randArray(mem, rng, lg, p[0], n, off[0])
						right, rv := randArray(mem, rng, rg, p[1], n, off[1])
						what := fmt.Sprintf("small=%v n=%d offsets=%v: l %s r", small, n, off, op)
						want, faults := make([]any, n), make([]fault, n)
						for i := range n {
							want[i], faults[i] = refArith(op, dt, lv[i], rv[i])
						}
						got, err := kernels.Arith(mem, op, left, right)
						checkArith(t, what+" "+showAll(lv)+" "+showAll(rv), got, err, dt, want, faults)

						// Array op scalar and scalar op array.
						if n > 0 {
							sv := lv[rng.IntN(n)]
							if rng.IntN(5) == 0 {
								sv = nil
							}
							s := newScalar(mem, p[0], sv)
							for i := range n {
								want[i], faults[i] = refArith(op, dt, sv, rv[i])
							}
							got, err = kernels.ScalarArith(mem, op, s, right)
							checkArith(t, what+" (scalar left "+show(sv)+")", got, err, dt, want, faults)
							releaseScalar(s)

							sv = rv[rng.IntN(n)]
							if rng.IntN(5) == 0 {
								sv = nil
							}
							s = newScalar(mem, p[1], sv)
							for i := range n {
								want[i], faults[i] = refArith(op, dt, lv[i], sv)
							}
							got, err = kernels.ArithScalar(mem, op, left, s)
							checkArith(t, what+" (scalar right "+show(sv)+")", got, err, dt, want, faults)
							releaseScalar(s)
						}
						left.Release()
						right.Release()
					}
				}
			}
		})
	}
}

// TestArithFaults pins the fault handling: a fault in a valid row is an
// error, one in a null row (whatever its value slot holds) is not.
func TestArithFaults(t *testing.T) {
	i64 := arrow.PrimitiveTypes.Int64
	i32 := arrow.PrimitiveTypes.Int32
	cases := []struct {
		name    string
		dt      arrow.DataType
		op      kernels.ArithOp
		l, r    []int64
		lv, rv  []bool // validity (nil: all valid)
		want    []any
		wantErr error
	}{
		{"add overflow", i64, kernels.Add, []int64{1, math.MaxInt64}, []int64{1, 1}, nil, nil, nil, kernels.ErrOverflow},
		{"add overflow in null row", i64, kernels.Add, []int64{1, math.MaxInt64}, []int64{1, 1}, []bool{true, false}, nil, []any{int64(2), nil}, nil},
		{"sub overflow", i64, kernels.Sub, []int64{math.MinInt64}, []int64{1}, nil, nil, nil, kernels.ErrOverflow},
		{"mul overflow", i64, kernels.Mul, []int64{1 << 32, 3}, []int64{1 << 31, 3}, nil, nil, nil, kernels.ErrOverflow},
		{"mul overflow in null row", i64, kernels.Mul, []int64{1 << 32, 3}, []int64{1 << 32, 3}, nil, []bool{false, true}, []any{nil, int64(9)}, nil},
		{"mul min by -1", i64, kernels.Mul, []int64{math.MinInt64}, []int64{-1}, nil, nil, nil, kernels.ErrOverflow},
		{"div by zero", i64, kernels.Div, []int64{4, 1}, []int64{2, 0}, nil, nil, nil, kernels.ErrDivideByZero},
		{"div by zero in null row", i64, kernels.Div, []int64{4, 1}, []int64{2, 0}, nil, []bool{true, false}, []any{int64(2), nil}, nil},
		{"div by zero, null dividend", i64, kernels.Div, []int64{4, 1}, []int64{2, 0}, []bool{true, false}, nil, []any{int64(2), nil}, nil},
		{"div min by -1", i64, kernels.Div, []int64{math.MinInt64}, []int64{-1}, nil, nil, nil, kernels.ErrOverflow},
		{"div truncates", i64, kernels.Div, []int64{7, -7, 7, -7}, []int64{2, 2, -2, -2}, nil, nil, []any{int64(3), int64(-3), int64(-3), int64(3)}, nil},
		{"int32 add overflow", i32, kernels.Add, []int64{math.MaxInt32}, []int64{1}, nil, nil, nil, kernels.ErrOverflow},
		{"int32 div by zero", i32, kernels.Div, []int64{1}, []int64{0}, nil, nil, nil, kernels.ErrDivideByZero},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mem := newTestAllocator()
			defer mem.AssertSize(t, 0)
			// Build with explicit values in null slots.
			l, r := buildWithSlots(mem, c.dt, c.l, c.lv), buildWithSlots(mem, c.dt, c.r, c.rv)
			defer l.Release()
			defer r.Release()
			got, err := kernels.Arith(mem, c.op, l, r)
			check := func(what string, got arrow.Array, err error) {
				t.Helper()
				if c.wantErr != nil {
					if got != nil {
						got.Release()
					}
					if !errors.Is(err, c.wantErr) {
						t.Fatalf("%s: got %v, want %v", what, err, c.wantErr)
					}
					return
				}
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				checkValues(t, what, got, c.want)
				got.Release()
			}
			check("arrays", got, err)
			if len(c.l) == 1 || allSame(c.r, c.rv) {
				// The same with the right side as a scalar.
				var sv any
				if c.rv == nil || c.rv[0] {
					sv = c.r[0]
				}
				s := newScalar(mem, c.dt, sv)
				got, err = kernels.ArithScalar(mem, c.op, l, s)
				releaseScalar(s)
				if sv != nil {
					check("array op scalar", got, err)
				} else {
					checkValues(t, "null scalar", got, make([]any, len(c.l)))
					got.Release()
				}
			}
			if len(c.l) == 1 || allSame(c.l, c.lv) {
				var sv any
				if c.lv == nil || c.lv[0] {
					sv = c.l[0]
				}
				s := newScalar(mem, c.dt, sv)
				got, err = kernels.ScalarArith(mem, c.op, s, r)
				releaseScalar(s)
				if sv != nil {
					check("scalar op array", got, err)
				} else {
					checkValues(t, "null scalar", got, make([]any, len(c.r)))
					got.Release()
				}
			}
		})
	}
}

func allSame(vs []int64, valid []bool) bool {
	for i := range vs {
		if vs[i] != vs[0] || (valid != nil && valid[i] != valid[0]) {
			return false
		}
	}
	return true
}

// buildWithSlots builds an integer array whose null slots hold the given
// values (builders would write zeros there).
func buildWithSlots(mem memory.Allocator, dt arrow.DataType, vs []int64, valid []bool) arrow.Array {
	vals := make([]any, len(vs))
	for i, v := range vs {
		vals[i] = v
	}
	full := build(mem, dt, vals)
	defer full.Release()
	if valid == nil {
		full.Retain()
		return full
	}
	bm := memory.NewResizableBuffer(mem)
	bm.Resize(len(vs)/8 + 1)
	clear(bm.Bytes())
	nulls := 0
	for i, ok := range valid {
		if ok {
			bm.Bytes()[i/8] |= 1 << (i % 8)
		} else {
			nulls++
		}
	}
	d := full.Data()
	bufs := []*memory.Buffer{bm, d.Buffers()[1]}
	data := array.NewData(dt, len(vs), bufs, nil, nulls, 0)
	bm.Release()
	defer data.Release()
	return array.MakeFromData(data)
}

func TestArithScalarZeroDivisor(t *testing.T) {
	mem := newTestAllocator()
	defer mem.AssertSize(t, 0)
	i64 := arrow.PrimitiveTypes.Int64
	a := buildWithSlots(mem, i64, []int64{1, 2, 3}, []bool{false, false, false})
	defer a.Release()
	zero := scalar.NewInt64Scalar(0)
	// Only null rows: no error.
	got, err := kernels.ArithScalar(mem, kernels.Div, a, zero)
	if err != nil {
		t.Fatal(err)
	}
	checkValues(t, "all-null / 0", got, []any{nil, nil, nil})
	got.Release()
	b := build(mem, i64, []any{int64(1), nil})
	defer b.Release()
	if got, err := kernels.ArithScalar(mem, kernels.Div, b, zero); !errors.Is(err, kernels.ErrDivideByZero) {
		if got != nil {
			got.Release()
		}
		t.Fatalf("[1 null] / 0: %v", err)
	}
	// 0 as the array side of scalar / array.
	c := build(mem, i64, []any{int64(1), int64(0)})
	defer c.Release()
	if got, err := kernels.ScalarArith(mem, kernels.Div, scalar.NewInt64Scalar(5), c); !errors.Is(err, kernels.ErrDivideByZero) {
		if got != nil {
			got.Release()
		}
		t.Fatalf("5 / [1 0]: %v", err)
	}
	// Float division by zero is IEEE.
	f := build(mem, arrow.PrimitiveTypes.Float64, []any{1.0, -1.0, 0.0})
	defer f.Release()
	got, err = kernels.ArithScalar(mem, kernels.Div, f, scalar.NewInt64Scalar(0))
	if err != nil {
		t.Fatal(err)
	}
	checkValues(t, "float / 0", got, []any{math.Inf(1), math.Inf(-1), math.NaN()})
	got.Release()
}

func TestArithErrors(t *testing.T) {
	mem := newTestAllocator()
	defer mem.AssertSize(t, 0)
	a := build(mem, arrow.PrimitiveTypes.Int64, []any{int64(1), int64(2)})
	defer a.Release()
	b := build(mem, arrow.PrimitiveTypes.Int64, []any{int64(1)})
	defer b.Release()
	s := build(mem, arrow.BinaryTypes.String, []any{"x", "y"})
	defer s.Release()
	cases := []struct {
		name string
		call func() (arrow.Array, error)
		want error
	}{
		{"length", func() (arrow.Array, error) { return kernels.Arith(mem, kernels.Add, a, b) }, kernels.ErrLengthMismatch},
		{"operator", func() (arrow.Array, error) { return kernels.Arith(mem, kernels.ArithOp(9), a, a) }, kernels.ErrInvalidArgument},
		{"types", func() (arrow.Array, error) { return kernels.Arith(mem, kernels.Mul, a, s) }, kernels.ErrUnsupportedType},
		{"nil scalar", func() (arrow.Array, error) { return kernels.ArithScalar(mem, kernels.Add, a, nil) }, kernels.ErrInvalidArgument},
		{"scalar types", func() (arrow.Array, error) {
			return kernels.ScalarArith(mem, kernels.Add, scalar.NewStringScalar("x"), a)
		}, kernels.ErrUnsupportedType},
	}
	for _, c := range cases {
		out, err := c.call()
		if !errors.Is(err, c.want) {
			if out != nil {
				out.Release()
			}
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	if _, err := kernels.ArithResultType(kernels.Add, arrow.BinaryTypes.String, arrow.PrimitiveTypes.Int64); !errors.Is(err, kernels.ErrUnsupportedType) {
		t.Errorf("ArithResultType(utf8 + int64) = %v", err)
	}
	if got := kernels.ArithOp(9).String(); got != "ArithOp(9)" {
		t.Errorf("String of an invalid op = %q", got)
	}
}

// TestArithVsCompute checks the fast paths against arrow compute's checked
// kernels on values that do not overflow.
func TestArithVsCompute(t *testing.T) {
	rng := newRand(t)
	mem := newTestAllocator()
	defer mem.AssertSize(t, 0)
	g := valueGen{nullPct: 10, small: true, lim: 1000, noZero: true}
	for _, p := range arithPairs[:4] {
		left, _ := randArray(mem, rng, g, p[0], 100, 3)
		right, _ := randArray(mem, rng, g, p[1], 100, 6)
		for _, op := range arithOps {
			got, err := kernels.Arith(mem, op, left, right)
			if err != nil {
				t.Fatal(err)
			}
			sameAsCompute(t, mem, fmt.Sprintf("%s %s %s", p[0], op, p[1]), got, arithComputeNames[op],
				compute.NewDatumWithoutOwning(left), compute.NewDatumWithoutOwning(right))
			got.Release()
		}
		left.Release()
		right.Release()
	}
}

// TestArithTemporalTypesUntouched checks that arithmetic on temporal types
// of different units leaves the inputs' types alone (arrow compute's type
// dispatch sets their units in place when given the chance).
func TestArithTemporalTypesUntouched(t *testing.T) {
	mem := newTestAllocator()
	defer mem.AssertSize(t, 0)
	ts := &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}
	dur := &arrow.DurationType{Unit: arrow.Microsecond}
	a := build(mem, ts, []any{int64(1000), nil, int64(3000)})
	defer a.Release()
	d := build(mem, dur, []any{int64(1), int64(2), int64(3)})
	defer d.Release()
	dt, err := kernels.ArithResultType(kernels.Add, ts, dur)
	if err != nil {
		t.Fatal(err)
	}
	if dt.(*arrow.TimestampType).Unit != arrow.Microsecond {
		t.Errorf("timestamp[ms] + duration[us] is %s", dt)
	}
	got, err := kernels.Arith(mem, kernels.Add, a, d)
	if err != nil {
		t.Fatal(err)
	}
	checkValues(t, "ts + dur", got, []any{int64(1000001), nil, int64(3000003)})
	got.Release()
	got, err = kernels.ArithScalar(mem, kernels.Sub, a, scalar.NewDurationScalar(5, dur))
	if err != nil {
		t.Fatal(err)
	}
	checkValues(t, "ts - 5us", got, []any{int64(999995), nil, int64(2999995)})
	got.Release()
	_, _ = kernels.ArithResultType(kernels.Mul, ts, dur) // unsupported, but dispatch runs
	if ts.Unit != arrow.Millisecond || dur.Unit != arrow.Microsecond ||
		a.DataType().(*arrow.TimestampType).Unit != arrow.Millisecond {
		t.Fatalf("input types modified: %s, %s, array %s", ts, dur, a.DataType())
	}
	if arrow.FixedWidthTypes.Timestamp_ms.(*arrow.TimestampType).Unit != arrow.Millisecond {
		t.Fatal("arrow.FixedWidthTypes.Timestamp_ms modified")
	}
}
