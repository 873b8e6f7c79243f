package expr_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/arrow/scalar"

	"github.com/meshflow/meshflow/internal/expr"
	"github.com/meshflow/meshflow/internal/kernels"
)

var (
	tsMs  = &arrow.TimestampType{Unit: arrow.Millisecond}
	durMs = &arrow.DurationType{Unit: arrow.Millisecond}
)

var fields = []arrow.Field{
	{Name: "i", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "f", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
	{Name: "s", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "b", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
	{Name: "i16", Type: arrow.PrimitiveTypes.Int16, Nullable: true},
	{Name: "ts", Type: tsMs, Nullable: true},
	{Name: "u8", Type: arrow.PrimitiveTypes.Uint8, Nullable: true},
	{Name: "f32", Type: arrow.PrimitiveTypes.Float32, Nullable: true},
	{Name: "d", Type: durMs, Nullable: true},
	{Name: "day", Type: arrow.FixedWidthTypes.Date32, Nullable: true},
}

var schema = arrow.NewSchema(fields, nil)

// batch: i = 0..4 with a null at 2, f = i*1.5, s = "a".."e" with a null at
// 3, b alternating with a null at 4, i16 = i-2, ts = i seconds (in ms),
// u8 = i, f32 = i/2, d = i*500ms, day = i days.
func batch(mem memory.Allocator) arrow.RecordBatch {
	return newBatch(mem, fields, [][]any{
		{int64(0), int64(1), nil, int64(3), int64(4)},
		{0.0, 1.5, 3.0, 4.5, 6.0},
		{"a", "b", "c", nil, "e"},
		{true, false, true, false, nil},
		{int64(-2), int64(-1), int64(0), int64(1), int64(2)},
		{int64(0), int64(1000), int64(2000), int64(3000), int64(4000)},
		{uint64(0), uint64(1), uint64(2), uint64(3), uint64(4)},
		{0.0, 0.5, 1.0, 1.5, 2.0},
		{int64(0), int64(500), int64(1000), int64(1500), int64(2000)},
		{int64(0), int64(1), int64(2), int64(3), int64(4)},
	})
}

var (
	T, F = any(true), any(false)
	N    = any(nil)
)

func ints(vs ...any) []any {
	out := make([]any, len(vs))
	for i, v := range vs {
		if x, ok := v.(int); ok {
			out[i] = int64(x)
		} else {
			out[i] = v
		}
	}
	return out
}

func TestEval(t *testing.T) {
	t0 := time.Unix(0, 0)
	cases := []struct {
		e    expr.Expr
		str  string // String(), when checked
		want []any
	}{
		// Comparisons, column with literal.
		{expr.Col("i").Gt(1), "(i > 1)", []any{F, F, N, T, T}},
		{expr.Col("i").Ge(1), "(i >= 1)", []any{F, T, N, T, T}},
		{expr.Col("i").Lt(1), "(i < 1)", []any{T, F, N, F, F}},
		{expr.Col("i").Le(1), "(i <= 1)", []any{T, T, N, F, F}},
		{expr.Col("i").Eq(3), "(i = 3)", []any{F, F, N, T, F}},
		{expr.Col("i").Ne(3), "(i != 3)", []any{T, T, N, F, T}},
		{expr.Lit(3).Lt(expr.Col("i")), "(3 < i)", []any{F, F, N, F, T}},
		{expr.Col("f").Gt(2), "(f > 2)", []any{F, F, T, T, T}},
		{expr.Col("s").Eq("b"), `(s = "b")`, []any{F, T, F, N, F}},
		{expr.Col("s").Ge("c"), `(s >= "c")`, []any{F, F, T, N, T}},
		{expr.Col("b").Eq(true), "(b = true)", []any{T, F, T, F, N}},
		{expr.Col("b").Lt(true), "(b < true)", []any{F, T, F, T, N}},
		{expr.Col("i16").Gt(0), "(i16 > 0)", []any{F, F, F, T, T}},
		{expr.Col("u8").Ge(2), "(u8 >= 2)", []any{F, F, T, T, T}},
		{expr.Col("f32").Eq(0.5), "(f32 = 0.5)", []any{F, T, F, F, F}},
		{expr.Col("f32").Lt(0.1), "(f32 < 0.1)", []any{T, F, F, F, F}},
		// Literals that do not convert exactly to the column type.
		{expr.Col("i16").Gt(100000), "(i16 > 100000)", []any{F, F, F, F, F}},
		{expr.Col("i16").Lt(100000), "", []any{T, T, T, T, T}},
		{expr.Col("u8").Gt(-1), "(u8 > -1)", []any{T, T, T, T, T}},
		{expr.Col("u8").Eq(-1), "", []any{F, F, F, F, F}},
		{expr.Col("i").Gt(2.5), "(i > 2.5)", []any{F, F, N, T, T}},
		{expr.Col("i").Ge(2.5), "", []any{F, F, N, T, T}},
		{expr.Col("i").Lt(-0.5), "", []any{F, F, N, F, F}},
		{expr.Col("i").Le(0.5), "", []any{T, F, N, F, F}},
		{expr.Col("i").Eq(1.0), "(i = 1)", []any{F, T, N, F, F}},
		{expr.Col("i").Eq(1.5), "", []any{F, F, N, F, F}},
		{expr.Col("i").Ne(1.5), "", []any{T, T, N, T, T}},
		{expr.Col("i").Lt(math.Inf(1)), "(i < +Inf)", []any{T, T, N, T, T}},
		{expr.Col("i").Gt(math.NaN()), "(i > NaN)", []any{F, F, N, F, F}},
		{expr.Col("i").Ne(math.NaN()), "", []any{T, T, N, T, T}},
		{expr.Col("i").Lt(uint64(math.MaxUint64)), "", []any{T, T, N, T, T}},
		// Time.
		{expr.Col("ts").Ge(t0.Add(2 * time.Second)), "(ts >= 1970-01-01T00:00:02Z)", []any{F, F, T, T, T}},
		{expr.Col("ts").Ge(t0.Add(2*time.Second + time.Microsecond)), "", []any{F, F, F, T, T}},
		{expr.Col("ts").Gt(t0.Add(2*time.Second + time.Microsecond)), "", []any{F, F, F, T, T}},
		{expr.Col("ts").Le(t0.Add(2*time.Second + time.Microsecond)), "", []any{T, T, T, F, F}},
		{expr.Col("ts").Lt(t0.Add(2*time.Second + time.Microsecond)), "", []any{T, T, T, F, F}},
		{expr.Col("ts").Eq(t0.Add(2*time.Second + time.Microsecond)), "", []any{F, F, F, F, F}},
		{expr.Col("ts").Lt(time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)), "", []any{T, T, T, T, T}},
		{expr.Col("day").Eq(time.Date(1970, 1, 3, 0, 0, 0, 0, time.UTC)), "(day = 1970-01-03T00:00:00Z)", []any{F, F, T, F, F}},
		{expr.Col("day").Lt(time.Date(1970, 1, 3, 12, 0, 0, 0, time.UTC)), "", []any{T, T, T, F, F}},
		{expr.Col("d").Ge(time.Second), "(d >= 1s)", []any{F, F, T, T, T}},
		{expr.Col("d").Gt(1500 * time.Microsecond), "", []any{F, T, T, T, T}},
		// Comparisons, column with column.
		{expr.Col("f").Gt(expr.Col("i")), "(f > i)", []any{F, T, N, T, T}},
		{expr.Col("i16").Lt(expr.Col("i")), "(i16 < i)", []any{T, T, N, T, T}},
		{expr.Col("f32").Le(expr.Col("f")), "(f32 <= f)", []any{T, T, T, T, T}},
		// Arithmetic.
		{expr.Col("i").Add(10), "(i + 10)", ints(10, 11, N, 13, 14)},
		{expr.Col("i").Sub(expr.Col("i")), "(i - i)", ints(0, 0, N, 0, 0)},
		{expr.Col("i").Mul(0.5), "(i * 0.5)", []any{0.0, 0.5, N, 1.5, 2.0}},
		{expr.Col("f").Div(2), "(f / 2)", []any{0.0, 0.75, 1.5, 2.25, 3.0}},
		{expr.Col("i").Div(2), "(i / 2)", ints(0, 0, N, 1, 2)},
		{expr.Col("i").Div(2.0), "(i / 2)", []any{0.0, 0.5, N, 1.5, 2.0}},
		{expr.Lit(7).Sub(expr.Col("i")), "(7 - i)", ints(7, 6, N, 4, 3)},
		{expr.Lit(12).Div(expr.Col("i16")), "(12 / i16)", nil}, // division by zero: error
		{expr.Col("i16").Mul(3), "(i16 * 3)", ints(-6, -3, 0, 3, 6)},
		{expr.Col("u8").Add(250), "(u8 + 250)", []any{uint64(250), uint64(251), uint64(252), uint64(253), uint64(254)}},
		{expr.Col("f32").Mul(2), "(f32 * 2)", []any{0.0, 1.0, 2.0, 3.0, 4.0}},
		{expr.Col("i16").Add(expr.Col("i")), "(i16 + i)", ints(-2, 0, N, 4, 6)},
		{expr.Col("ts").Add(time.Second), "(ts + 1s)", ints(1000, 2000, 3000, 4000, 5000)},
		{expr.Col("ts").Sub(expr.Col("d")), "(ts - d)", ints(0, 500, 1000, 1500, 2000)},
		{expr.Col("i").Neg(), "-i", ints(0, -1, N, -3, -4)},
		{expr.Col("f").Neg(), "-f", []any{math.Copysign(0, -1), -1.5, -3.0, -4.5, -6.0}},
		{expr.Col("i").Add(1).Neg(), "-(i + 1)", ints(-1, -2, N, -4, -5)},
		{expr.Col("d").Neg(), "-d", ints(0, -500, -1000, -1500, -2000)},
		// Logic.
		{expr.Col("b").And(expr.Col("i").Gt(0)), "(b AND (i > 0))", []any{F, F, N, F, N}},
		{expr.Col("b").Or(expr.Col("i").Gt(2)), "(b OR (i > 2))", []any{T, F, T, T, T}},
		{expr.Col("b").Not(), "NOT b", []any{F, T, F, T, N}},
		{expr.Col("i").Gt(1).Not(), "NOT (i > 1)", []any{T, T, N, F, F}},
		{expr.Col("i").Gt(1).And(false), "((i > 1) AND false)", []any{F, F, F, F, F}},
		{expr.Col("i").Gt(1).Or(nil), "((i > 1) OR NULL)", []any{N, N, N, T, T}},
		{expr.Col("i").Gt(1).And(nil), "((i > 1) AND NULL)", []any{F, F, N, N, N}},
		{expr.Lit(nil).Not(), "NOT NULL", []any{N, N, N, N, N}},
		// Null tests.
		{expr.Col("i").IsNull(), "(i IS NULL)", []any{F, F, T, F, F}},
		{expr.Col("s").IsNotNull(), "(s IS NOT NULL)", []any{T, T, T, F, T}},
		{expr.Col("i").Add(1).IsNull(), "((i + 1) IS NULL)", []any{F, F, T, F, F}},
		{expr.Col("f").IsNull(), "(f IS NULL)", []any{F, F, F, F, F}},
		{expr.Lit(nil).IsNull(), "(NULL IS NULL)", []any{T, T, T, T, T}},
		{expr.Lit(1).IsNotNull(), "(1 IS NOT NULL)", []any{T, T, T, T, T}},
		// Literals alone and null operands.
		{expr.Lit(7), "7", ints(7, 7, 7, 7, 7)},
		{expr.Lit("x"), `"x"`, []any{"x", "x", "x", "x", "x"}},
		{expr.Lit(nil), "NULL", []any{N, N, N, N, N}},
		{expr.Lit(3).Add(4).Mul(2), "((3 + 4) * 2)", ints(14, 14, 14, 14, 14)},
		{expr.Lit(1).Lt(2), "(1 < 2)", []any{T, T, T, T, T}},
		{expr.Lit(1).Div(2.0), "(1 / 2)", []any{0.5, 0.5, 0.5, 0.5, 0.5}},
		{expr.Col("i").Gt(nil), "(i > NULL)", []any{N, N, N, N, N}},
		{expr.Col("i").Add(nil), "(i + NULL)", []any{N, N, N, N, N}},
		{expr.Lit(nil).Eq(nil), "(NULL = NULL)", []any{N, N, N, N, N}},
		{expr.Col("i"), "i", ints(0, 1, N, 3, 4)},
	}
	for _, tc := range cases {
		t.Run(tc.e.String(), func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			rec := batch(mem)
			defer rec.Release()
			if tc.str != "" && tc.e.String() != tc.str {
				t.Errorf("String() = %q, want %q", tc.e.String(), tc.str)
			}
			out, err := eval(t, mem, tc.e, rec)
			if tc.want == nil {
				if err == nil {
					out.Release()
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer out.Release()
			checkValues(t, tc.e.String(), out, tc.want)
		})
	}
}

// TestTypes pins the result types: the promotion rules of the package
// documentation.
func TestTypes(t *testing.T) {
	P := arrow.PrimitiveTypes
	boolean := arrow.FixedWidthTypes.Boolean
	cases := []struct {
		e    expr.Expr
		want arrow.DataType
	}{
		{expr.Col("i16").Add(1), P.Int16},
		{expr.Col("i16").Add(100000), P.Int64},
		{expr.Col("i16").Add(expr.Col("i")), P.Int64},
		{expr.Col("i").Mul(0.0091), P.Float64},
		{expr.Col("i").Mul(2.0), P.Float64},
		{expr.Col("i16").Div(2.0), P.Float64},
		{expr.Col("u8").Add(1), P.Uint8},
		{expr.Col("u8").Add(-1), P.Int64},
		{expr.Col("f32").Mul(2), P.Float32},
		{expr.Col("f32").Mul(0.5), P.Float32},
		{expr.Col("f32").Mul(0.1), P.Float64},
		{expr.Col("f32").Add(expr.Col("f")), P.Float64},
		{expr.Col("i").Add(expr.Col("f")), P.Float64},
		{expr.Col("ts").Add(time.Hour), tsMs},
		{expr.Col("ts").Sub(expr.Col("ts")), durMs},
		{expr.Col("d").Add(time.Millisecond), durMs},
		{expr.Col("i16").Neg(), P.Int16},
		{expr.Col("i").Gt(2.5), boolean},
		{expr.Col("i").IsNull(), boolean},
		{expr.Col("i").Add(nil), P.Int64},
		{expr.Lit(nil).Add(nil), arrow.Null},
		{expr.Lit(1), P.Int64},
		{expr.Lit(int8(1)), P.Int8},
		{expr.Lit(uint(1)), P.Uint64},
		{expr.Lit(float32(1)), P.Float32},
		{expr.Lit(1).Add(2.5), P.Float64},
		{expr.Lit(int8(1)).Add(int16(2)), P.Int16},
		{expr.Lit("x"), arrow.BinaryTypes.String},
		{expr.Lit([]byte("x")), arrow.BinaryTypes.Binary},
		{expr.Lit(time.Unix(0, 0)), &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}},
		{expr.Lit(time.Second), arrow.FixedWidthTypes.Duration_ns},
		{expr.Lit(scalar.NewInt32Scalar(4)), P.Int32},
		{expr.Lit(nil), arrow.Null},
		{expr.Col("s"), arrow.BinaryTypes.String},
	}
	for _, c := range cases {
		b, err := expr.Bind(c.e, schema)
		if err != nil {
			t.Errorf("%s: %v", c.e, err)
			continue
		}
		if !arrow.TypeEqual(b.DataType(), c.want) {
			t.Errorf("%s: %s, want %s", c.e, b.DataType(), c.want)
		}
	}
}

func TestBindErrors(t *testing.T) {
	cases := []struct {
		e    expr.Expr
		is   error
		want string
	}{
		{expr.Col("price").Gt(1), expr.ErrUnknownColumn, `expr (price > 1): no column "price" (columns: i, f, s, b, i16, ts, u8, f32, d, day)`},
		{expr.Col("i").Add(expr.Col("nope")), expr.ErrUnknownColumn, `"nope"`},
		{expr.Col("s").Gt(1), expr.ErrType, "cannot compare s (utf8) with 1 (int64)"},
		{expr.Col("i").Eq("1"), expr.ErrType, `cannot compare i (int64) with "1" (utf8)`},
		{expr.Col("ts").Lt(5), expr.ErrType, "cannot compare ts"},
		{expr.Col("ts").Lt(time.Second), expr.ErrType, "cannot compare ts"},
		{expr.Col("b").Gt(1), expr.ErrType, "cannot compare b (bool) with 1 (int64)"},
		{expr.Col("i").And(expr.Col("b")), expr.ErrType, "i is int64, not boolean"},
		{expr.Col("b").Or(1), expr.ErrType, "1 is int64, not boolean"},
		{expr.Col("s").Not(), expr.ErrType, "s is utf8, not boolean"},
		{expr.Col("s").Mul(2), expr.ErrType, "cannot compute s (utf8) * 2 (int64)"},
		{expr.Col("b").Add(expr.Col("b")), expr.ErrType, "cannot compute b (bool) + b (bool)"},
		{expr.Col("ts").Add(expr.Col("ts")), expr.ErrType, "cannot compute ts"},
		{expr.Col("s").Neg(), expr.ErrType, "cannot negate s (utf8)"},
		{expr.Col("u8").Neg(), expr.ErrType, "cannot negate u8 (uint8)"},
		{expr.Col("i").Eq(struct{}{}), expr.ErrLiteral, "unsupported literal {} of type struct {}"},
		{expr.Lit(map[string]int{}), expr.ErrLiteral, "unsupported literal"},
		{expr.Lit(1).Div(0), kernels.ErrDivideByZero, "expr (1 / 0): 1 / 0: kernels: integer division by zero"},
		{expr.Lit(int64(math.MaxInt64)).Add(1), kernels.ErrOverflow, "overflow"},
	}
	for _, tc := range cases {
		t.Run(tc.e.String(), func(t *testing.T) {
			_, err := expr.Bind(tc.e, schema)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, tc.is) {
				t.Fatalf("got %v, want an error wrapping %v containing %q", err, tc.is, tc.want)
			}
		})
	}
	if _, err := expr.Bind(nil, schema); err == nil {
		t.Error("Bind(nil): no error")
	}
	if _, err := expr.Bind(expr.Col("i"), nil); err == nil {
		t.Error("Bind(nil schema): no error")
	}
	dup := arrow.NewSchema([]arrow.Field{{Name: "x", Type: arrow.PrimitiveTypes.Int64}, {Name: "x", Type: arrow.PrimitiveTypes.Int64}}, nil)
	if _, err := expr.Bind(expr.Col("x"), dup); !errors.Is(err, expr.ErrUnknownColumn) {
		t.Errorf("ambiguous column: %v", err)
	}
}

func TestEvalErrors(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rec := batch(mem)
	defer rec.Release()
	cases := []struct {
		e    expr.Expr
		want error
	}{
		{expr.Col("i").Div(0), kernels.ErrDivideByZero},
		{expr.Col("i").Add(int64(1 << 62)).Add(int64(1 << 62)), kernels.ErrOverflow},
		{expr.Col("i16").Mul(30000), kernels.ErrOverflow},
		{expr.Col("u8").Sub(1), kernels.ErrOverflow},
		{expr.Col("i").Sub(int64(math.MinInt64)).Neg(), kernels.ErrOverflow},
		// The error surfaces through logic operators too.
		{expr.Col("b").Or(expr.Col("i16").Div(0).Gt(1)), kernels.ErrDivideByZero},
	}
	for _, c := range cases {
		out, err := eval(t, mem, c.e, rec)
		if err == nil {
			out.Release()
		}
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.e, err, c.want)
		}
	}

	// Division by zero in a null row is not an error.
	out, err := eval(t, mem, expr.Col("i").Div(expr.Col("i16")), rec) // i16 = 0 where i is null
	if err != nil {
		t.Fatalf("division by zero in a null row: %v", err)
	}
	checkValues(t, "i / i16", out, ints(0, -1, N, 3, 2))
	out.Release()

	b, err := expr.Bind(expr.Col("i").Gt(1), schema)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Eval(ctx, mem, rec); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
	// A batch of another schema.
	other := newBatch(mem, []arrow.Field{{Name: "i", Type: arrow.BinaryTypes.String}}, [][]any{{"x"}})
	defer other.Release()
	if _, err := b.Eval(context.Background(), mem, other); !errors.Is(err, expr.ErrSchema) {
		t.Errorf("column of another type: %v", err)
	}
	empty := array.NewRecordBatch(arrow.NewSchema(nil, nil), nil, 0)
	defer empty.Release()
	if _, err := b.Eval(context.Background(), mem, empty); !errors.Is(err, expr.ErrSchema) {
		t.Errorf("batch without the column: %v", err)
	}
}

// TestEvalSliced evaluates on a batch with non-zero array offsets.
func TestEvalSliced(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	full := batch(mem)
	defer full.Release()
	rec := full.NewSlice(1, 5)
	defer rec.Release()
	cases := []struct {
		e    expr.Expr
		want []any
	}{
		{expr.Col("i").Gt(1).Or(expr.Col("s").Eq("b")), []any{T, N, T, T}},
		{expr.Col("b").And(expr.Col("i").IsNotNull()), []any{F, F, F, N}},
		{expr.Col("i").IsNull(), []any{F, T, F, F}},
		{expr.Col("i").Eq(1.5), []any{F, N, F, F}},
		{expr.Col("i").Mul(expr.Col("i16")), ints(-1, N, 3, 8)},
		{expr.Col("b").Not(), []any{T, F, T, N}},
	}
	for _, c := range cases {
		out, err := eval(t, mem, c.e, rec)
		if err != nil {
			t.Fatalf("%s: %v", c.e, err)
		}
		checkValues(t, c.e.String(), out, c.want)
		out.Release()
	}
}

// TestEvalColumnNoCopy checks that a bare column is the batch's own array.
func TestEvalColumnNoCopy(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rec := batch(mem)
	defer rec.Release()
	out, err := eval(t, mem, expr.Col("s"), rec)
	if err != nil {
		t.Fatal(err)
	}
	if out != rec.Column(2) {
		t.Error("Col returned a copy")
	}
	out.Release()
	// The batch's column is still usable: Eval retained it.
	if rec.Column(2).(*array.String).Value(1) != "b" {
		t.Error("column damaged")
	}
}

// TestEvalEmptyBatch evaluates on a batch without rows.
func TestEvalEmptyBatch(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	full := batch(mem)
	defer full.Release()
	rec := full.NewSlice(2, 2)
	defer rec.Release()
	for _, e := range []expr.Expr{
		expr.Col("i").Gt(1).And(expr.Col("s").Ne("x")), expr.Lit(5), expr.Col("f").Neg().IsNull(),
		expr.Col("i").Div(0), expr.Col("i").Eq(2.5),
	} {
		out, err := eval(t, mem, e, rec)
		if err != nil {
			t.Fatalf("%s: %v", e, err)
		}
		out.Release()
	}
}

func TestString(t *testing.T) {
	cases := []struct {
		e    expr.Expr
		want string
	}{
		{expr.Col("price").Gt(5000), "(price > 5000)"},
		{expr.Col("price").Mul(0.0091), "(price * 0.0091)"},
		{expr.Col("n").Ge(0).And(expr.Col("channel").Eq("web")), `((n >= 0) AND (channel = "web"))`},
		{expr.Col("a").Or(expr.Col("b").Not()), "(a OR NOT b)"},
		{expr.Col("unit price").Lt(1), "(`unit price` < 1)"},
		{expr.Col("x").Eq(`say "hi"`), `(x = "say \"hi\"")`},
		{expr.Col("x").Eq([]byte{0xca, 0xfe}), "(x = x'cafe')"},
		{expr.Col("x").Sub(float32(1.5)), "(x - 1.5)"},
		{expr.Col("x").Div(uint8(3)), "(x / 3)"},
		{expr.Col("t").Lt(time.Date(2024, 5, 6, 7, 8, 9, 10, time.FixedZone("X", 3600))), "(t < 2024-05-06T06:08:09.00000001Z)"},
		{expr.Col("t").Add(90 * time.Second), "(t + 1m30s)"},
		{expr.Col("x").IsNull().Or(expr.Col("x").IsNotNull()), "((x IS NULL) OR (x IS NOT NULL))"},
		{expr.Col("x").Neg(), "-x"},
		{expr.Lit(nil), "NULL"},
		{expr.Lit(true), "true"},
		{expr.Lit(struct{ A int }{}), "<bad literal struct { A int }>"},
		{expr.Lit(expr.Col("x")), "x"},
	}
	for _, c := range cases {
		if got := c.e.String(); got != c.want {
			t.Errorf("got %s, want %s", got, c.want)
		}
		if got := fmt.Sprint(c.e); got != c.want {
			t.Errorf("fmt.Sprint: got %s, want %s", got, c.want)
		}
	}
}

// TestImmutable checks that building on an expression leaves it alone.
func TestImmutable(t *testing.T) {
	base := expr.Col("x").Gt(1)
	a := base.And(expr.Col("y"))
	b := base.Or(expr.Col("z"))
	if base.String() != "(x > 1)" || a.String() != "((x > 1) AND y)" || b.String() != "((x > 1) OR z)" {
		t.Fatalf("%s, %s, %s", base, a, b)
	}
}

// TestConcurrentEval evaluates one Bound from several goroutines (run
// with -race).
func TestConcurrentEval(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rec := batch(mem)
	defer rec.Release()
	// Fast paths, arrow compute (float32, int16 to int64) and literals of
	// every kind, shared by the goroutines.
	var bounds []expr.Bound
	for _, e := range []expr.Expr{
		expr.Col("i").Mul(2).Gt(expr.Col("f")).Or(expr.Col("ts").Ge(time.Unix(2, 0))),
		expr.Col("f32").Mul(0.1).Lt(expr.Col("i16").Add(expr.Col("i"))),
		expr.Col("s").Eq("b").And(expr.Col("d").Lt(time.Second)).Or(expr.Col("b").Not()),
		expr.Col("ts").Sub(time.Second).Add(expr.Col("d")),
	} {
		b, err := expr.Bind(e, schema)
		if err != nil {
			t.Fatal(err)
		}
		bounds = append(bounds, b)
	}
	done := make(chan error)
	for range 4 {
		go func() {
			for range 30 {
				for _, b := range bounds {
					out, err := b.Eval(context.Background(), mem, rec)
					if err != nil {
						done <- err
						return
					}
					out.Release()
				}
			}
			done <- nil
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

func Example() {
	mem := memory.NewGoAllocator()
	sch := arrow.NewSchema([]arrow.Field{
		{Name: "price", Type: arrow.PrimitiveTypes.Int64},
		{Name: "channel", Type: arrow.BinaryTypes.String},
	}, nil)
	b := array.NewRecordBuilder(mem, sch)
	b.Field(0).(*array.Int64Builder).AppendValues([]int64{500, 1500, 2500, 7000}, nil)
	b.Field(1).(*array.StringBuilder).AppendValues([]string{"web", "web", "app", "web"}, nil)
	rec := b.NewRecordBatch()
	b.Release()
	defer rec.Release()

	pred := expr.Col("price").Gt(1000).And(expr.Col("channel").Eq("web"))
	bound, err := expr.Bind(pred, sch)
	if err != nil {
		panic(err)
	}
	mask, err := bound.Eval(context.Background(), mem, rec)
	if err != nil {
		panic(err)
	}
	defer mask.Release()
	fmt.Println(pred, "→", mask)

	usd := expr.Col("price").Mul(0.0091)
	bound, err = expr.Bind(usd, sch)
	if err != nil {
		panic(err)
	}
	vals, err := bound.Eval(context.Background(), mem, rec)
	if err != nil {
		panic(err)
	}
	defer vals.Release()
	fmt.Println(usd, "→", bound.DataType(), vals)
	// Output:
	// ((price > 1000) AND (channel = "web")) → [false true false true]
	// (price * 0.0091) → float64 [4.55 13.65 22.75 63.7]
}

func ExampleBind() {
	sch := arrow.NewSchema([]arrow.Field{
		{Name: "price", Type: arrow.PrimitiveTypes.Int64},
		{Name: "channel", Type: arrow.BinaryTypes.String},
	}, nil)
	_, err := expr.Bind(expr.Col("prize").Gt(5000), sch)
	fmt.Println(err)
	fmt.Println(errors.Is(err, expr.ErrUnknownColumn))
	_, err = expr.Bind(expr.Col("channel").Gt(5000), sch)
	fmt.Println(err)
	fmt.Println(errors.Is(err, expr.ErrType))
	// Output:
	// expr (prize > 5000): no column "prize" (columns: price, channel)
	// true
	// expr (channel > 5000): cannot compare channel (utf8) with 5000 (int64)
	// true
}
