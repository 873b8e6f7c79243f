package kernels_test

import (
	"errors"
	"math"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/scalar"

	"github.com/meshflow/meshflow/internal/kernels"
)

var i64 = arrow.PrimitiveTypes.Int64

func TestMod(t *testing.T) {
	cases := []struct {
		name    string
		lt, rt  arrow.DataType
		l, r    []any
		want    []any
		wantErr error
	}{
		{"signs", i64, i64, []any{int64(7), int64(-7), int64(7), int64(-7)}, []any{int64(3), int64(3), int64(-3), int64(-3)},
			[]any{int64(1), int64(-1), int64(1), int64(-1)}, nil},
		{"min % -1", i64, i64, []any{int64(math.MinInt64)}, []any{int64(-1)}, []any{int64(0)}, nil},
		{"int8 min % -1", arrow.PrimitiveTypes.Int8, arrow.PrimitiveTypes.Int8, []any{int64(math.MinInt8)}, []any{int64(-1)}, []any{int64(0)}, nil},
		{"nulls", i64, i64, []any{nil, int64(5), int64(5)}, []any{int64(2), nil, int64(2)}, []any{nil, nil, int64(1)}, nil},
		{"zero in null row", i64, i64, []any{nil, int64(5)}, []any{int64(0), int64(3)}, []any{nil, int64(2)}, nil},
		{"zero divisor", i64, i64, []any{int64(5)}, []any{int64(0)}, nil, kernels.ErrDivideByZero},
		{"empty", i64, i64, []any{}, []any{}, []any{}, nil},
		{"widen int32 int64", arrow.PrimitiveTypes.Int32, i64, []any{int64(-9)}, []any{int64(4)}, []any{int64(-1)}, nil},
		{"uint8", arrow.PrimitiveTypes.Uint8, arrow.PrimitiveTypes.Uint8, []any{uint64(255)}, []any{uint64(7)}, []any{uint64(3)}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mem := newTestAllocator()
			defer mem.AssertSize(t, 0)
			l, r := build(mem, c.lt, c.l), build(mem, c.rt, c.r)
			defer l.Release()
			defer r.Release()
			got, err := kernels.Mod(mem, l, r)
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("err = %v, want %v", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer got.Release()
			checkValues(t, "mod", got, c.want)
		})
	}
}

func TestModTypes(t *testing.T) {
	for _, c := range []struct{ l, r arrow.DataType }{
		{arrow.PrimitiveTypes.Float64, i64}, {arrow.BinaryTypes.String, i64}, {i64, tsMs},
	} {
		if _, err := kernels.ModResultType(c.l, c.r); !errors.Is(err, kernels.ErrUnsupportedType) {
			t.Errorf("%s %% %s: err = %v, want ErrUnsupportedType", c.l, c.r, err)
		}
	}
}

// TestModScalarRandom checks the constant-divisor path (a multiplication
// by a precomputed magic number for int64) against Go's % on random and
// extreme values and divisors, sliced and with nulls.
func TestModScalarRandom(t *testing.T) {
	rng := newRand(t)
	mem := newTestAllocator()
	defer mem.AssertSize(t, 0)
	edges := []int64{0, 1, -1, 2, -2, 3, 7, 123, -123, 1 << 32, math.MaxInt64, math.MinInt64, math.MaxInt64 - 1, math.MinInt64 + 1, 1000000007}
	pick := func() int64 {
		switch rng.IntN(4) {
		case 0:
			return edges[rng.IntN(len(edges))]
		case 1:
			return rng.Int64N(2000) - 1000
		case 2:
			return int64(rng.Uint64())
		}
		return int64(rng.Uint64()) >> rng.IntN(63)
	}
	for round := range 300 {
		d := pick()
		if d == 0 {
			d = 123
		}
		n := rng.IntN(70)
		off := rng.IntN(3)
		vals := make([]any, off+n)
		for i := range vals {
			if rng.IntN(10) == 0 {
				continue
			}
			vals[i] = pick()
		}
		arr := slicedArray(mem, i64, vals, off, n)
		want := make([]any, n)
		wantL := make([]any, n)
		for i, v := range vals[off:] {
			if v != nil {
				want[i] = v.(int64) % d
				if v.(int64) != 0 {
					if v.(int64) == -1 {
						wantL[i] = int64(0)
					} else {
						wantL[i] = d % v.(int64)
					}
				}
			}
		}
		got, err := kernels.ModScalar(mem, arr, scalar.NewInt64Scalar(d))
		if err != nil {
			t.Fatalf("round %d: %% %d: %v", round, d, err)
		}
		checkValues(t, "mod scalar", got, want)
		got.Release()
		// Scalar dividend: zero divisors in non-null rows fail.
		gotL, err := kernels.ScalarMod(mem, scalar.NewInt64Scalar(d), arr)
		hasZero := false
		for i, v := range vals[off:] {
			if v != nil && v.(int64) == 0 {
				hasZero = true
			}
			if v == nil || v.(int64) == 0 {
				wantL[i] = nil
			}
		}
		switch {
		case hasZero && !errors.Is(err, kernels.ErrDivideByZero):
			t.Fatalf("round %d: %d %% zero row: err = %v", round, d, err)
		case !hasZero && err != nil:
			t.Fatalf("round %d: %d %% x: %v", round, d, err)
		case !hasZero:
			checkValues(t, "scalar mod", gotL, wantL)
			gotL.Release()
		}
		arr.Release()
	}
}

func TestModScalarZeroAndNull(t *testing.T) {
	mem := newTestAllocator()
	defer mem.AssertSize(t, 0)
	arr := build(mem, i64, []any{int64(1), nil})
	defer arr.Release()
	if _, err := kernels.ModScalar(mem, arr, scalar.NewInt64Scalar(0)); !errors.Is(err, kernels.ErrDivideByZero) {
		t.Fatalf("x %% 0: err = %v", err)
	}
	nulls := build(mem, i64, []any{nil, nil})
	defer nulls.Release()
	got, err := kernels.ModScalar(mem, nulls, scalar.NewInt64Scalar(0))
	if err != nil {
		t.Fatalf("null %% 0: %v", err)
	}
	checkValues(t, "null % 0", got, []any{nil, nil})
	got.Release()
	got, err = kernels.ModScalar(mem, arr, scalar.MakeNullScalar(i64))
	if err != nil {
		t.Fatal(err)
	}
	checkValues(t, "x % null", got, []any{nil, nil})
	got.Release()
	i32 := build(mem, arrow.PrimitiveTypes.Int32, []any{int64(-7), int64(8)})
	defer i32.Release()
	got, err = kernels.ModScalar(mem, i32, scalar.NewInt32Scalar(3))
	if err != nil {
		t.Fatal(err)
	}
	checkValues(t, "int32 % 3", got, []any{int64(-1), int64(2)})
	got.Release()
}

// TestModCompareScalar checks the fused (x % d) op c against Go on random
// values, divisors (including ±1 and math.MinInt64) and lengths across
// the 64-row chunks, sliced and with nulls.
func TestModCompareScalar(t *testing.T) {
	rng := newRand(t)
	mem := newTestAllocator()
	defer mem.AssertSize(t, 0)
	divs := []int64{1, -1, 2, 3, 6, -12, 123, -123, 1 << 40, 3 << 40, math.MinInt64, math.MaxInt64, math.MinInt64 + 1, -(1 << 62)}
	for round := range 400 {
		d := divs[rng.IntN(len(divs))]
		if rng.IntN(2) == 0 {
			d = rng.Int64N(1000) - 500
			if d == 0 {
				d = 7
			}
		}
		c := rng.Int64N(5) - 2
		if rng.IntN(2) == 0 {
			c = 0 // the divisibility test
		}
		op := kernels.Eq
		if rng.IntN(2) == 0 {
			op = kernels.Ne
		}
		n, off := rng.IntN(200), rng.IntN(3)
		vals := make([]any, off+n)
		for i := range vals {
			switch rng.IntN(12) {
			case 0:
			case 1:
				vals[i] = int64(rng.Uint64())
			case 2, 3: // a multiple of d (wrapping), or next to one
				vals[i] = d*int64(rng.Uint64()) + rng.Int64N(3) - 1
			case 4:
				vals[i] = []int64{math.MinInt64, math.MaxInt64, math.MinInt64 + 1, 0}[rng.IntN(4)]
			default:
				vals[i] = rng.Int64N(2000) - 1000
			}
		}
		arr := slicedArray(mem, i64, vals, off, n)
		want := make([]any, n)
		for i, v := range vals[off:] {
			if v != nil {
				want[i] = (v.(int64)%d == c) == (op == kernels.Eq)
			}
		}
		got, err := kernels.ModCompareScalar(mem, arr, d, op, c)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		checkValues(t, "mod compare", got, want)
		got.Release()
		arr.Release()
	}
	arr := build(mem, i64, []any{int64(1)})
	defer arr.Release()
	if _, err := kernels.ModCompareScalar(mem, arr, 0, kernels.Eq, 0); !errors.Is(err, kernels.ErrInvalidArgument) {
		t.Errorf("divisor 0: %v", err)
	}
	if _, err := kernels.ModCompareScalar(mem, arr, 3, kernels.Lt, 0); !errors.Is(err, kernels.ErrInvalidArgument) {
		t.Errorf("operator <: %v", err)
	}
}
