package expr_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/expr"
)

var schema = arrow.NewSchema([]arrow.Field{
	{Name: "i", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "f", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
	{Name: "s", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "b", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
	{Name: "i16", Type: arrow.PrimitiveTypes.Int16, Nullable: true},
	{Name: "ts", Type: &arrow.TimestampType{Unit: arrow.Millisecond}, Nullable: true},
}, nil)

// batch: i = 0..4 with a null at 2, f = i*1.5, s = "a".."e", b alternating,
// i16 = i-2, ts = 1000*i ms.
func batch(mem memory.Allocator) arrow.RecordBatch {
	b := array.NewRecordBuilder(mem, schema)
	defer b.Release()
	valid := []bool{true, true, false, true, true}
	b.Field(0).(*array.Int64Builder).AppendValues([]int64{0, 1, 2, 3, 4}, valid)
	b.Field(1).(*array.Float64Builder).AppendValues([]float64{0, 1.5, 3, 4.5, 6}, nil)
	b.Field(2).(*array.StringBuilder).AppendValues([]string{"a", "b", "c", "d", "e"}, []bool{true, true, true, false, true})
	b.Field(3).(*array.BooleanBuilder).AppendValues([]bool{true, false, true, false, true}, []bool{true, true, true, true, false})
	b.Field(4).(*array.Int16Builder).AppendValues([]int16{-2, -1, 0, 1, 2}, nil)
	b.Field(5).(*array.TimestampBuilder).AppendValues([]arrow.Timestamp{0, 1000, 2000, 3000, 4000}, nil)
	return b.NewRecordBatch()
}

func show(a arrow.Array) string {
	parts := make([]string, a.Len())
	for i := range parts {
		parts[i] = a.ValueStr(i)
	}
	return strings.Join(parts, " ")
}

func TestEval(t *testing.T) {
	cases := []struct {
		e    expr.Expr
		str  string
		want string
	}{
		{expr.Col("i").Gt(1), "(i > 1)", "false false (null) true true"},
		{expr.Col("i").Ge(1), "(i >= 1)", "false true (null) true true"},
		{expr.Col("i").Lt(1), "(i < 1)", "true false (null) false false"},
		{expr.Col("i").Le(1), "(i <= 1)", "true true (null) false false"},
		{expr.Col("i").Eq(3), "(i = 3)", "false false (null) true false"},
		{expr.Col("i").Ne(3), "(i != 3)", "true true (null) false true"},
		{expr.Col("f").Gt(2), "(f > 2)", "false false true true true"},
		{expr.Col("f").Gt(expr.Col("i")), "(f > i)", "false true (null) true true"},
		{expr.Lit(3).Lt(expr.Col("i")), "(3 < i)", "false false (null) false true"},
		{expr.Col("s").Eq("b"), `(s = "b")`, "false true false (null) false"},
		{expr.Col("s").Ge("c"), `(s >= "c")`, "false false true (null) true"},
		{expr.Col("i16").Gt(0), "(i16 > 0)", "false false false true true"},
		{expr.Col("i16").Gt(100000), "(i16 > 100000)", "false false false false false"},
		{expr.Col("ts").Ge(time.UnixMilli(2000)), "", "false false true true true"},
		{expr.Col("i").Add(10), "(i + 10)", "10 11 (null) 13 14"},
		{expr.Col("i").Sub(expr.Col("i")), "(i - i)", "0 0 (null) 0 0"},
		{expr.Col("i").Mul(0.5), "(i * 0.5)", "0 0.5 (null) 1.5 2"},
		{expr.Col("f").Div(2), "(f / 2)", "0 0.75 1.5 2.25 3"},
		{expr.Col("i").Div(2), "(i / 2)", "0 0 (null) 1 2"},
		{expr.Col("b").And(expr.Col("i").Gt(0)), "(b AND (i > 0))", "false false (null) false (null)"},
		{expr.Col("b").Or(expr.Col("i").Gt(2)), "(b OR (i > 2))", "true false true true true"},
		{expr.Col("b").Not(), "NOT b", "false true false true (null)"},
		{expr.Col("i").IsNull(), "(i IS NULL)", "false false true false false"},
		{expr.Col("s").IsNotNull(), "(s IS NOT NULL)", "true true true false true"},
		{expr.Lit(nil).IsNull(), "(NULL IS NULL)", "true true true true true"},
		{expr.Lit(7), "7", "7 7 7 7 7"},
		{expr.Col("i").Gt(nil), "(i > NULL)", "(null) (null) (null) (null) (null)"},
		{expr.Col("i").Gt(1).And(false), "((i > 1) AND false)", "false false false false false"},
		{expr.Col("i").Gt(1).Or(nil), "((i > 1) OR NULL)", "(null) (null) (null) true true"},
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
			b, err := expr.Bind(tc.e, schema)
			if err != nil {
				t.Fatal(err)
			}
			out, err := b.Eval(context.Background(), mem, rec)
			if err != nil {
				t.Fatal(err)
			}
			defer out.Release()
			if !arrow.TypeEqual(out.DataType(), b.DataType()) {
				t.Errorf("Eval gave %s, DataType says %s", out.DataType(), b.DataType())
			}
			if got := show(out); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestEvalSliced(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	full := batch(mem)
	defer full.Release()
	rec := full.NewSlice(1, 4)
	defer rec.Release()
	b, err := expr.Bind(expr.Col("i").Gt(1).Or(expr.Col("s").Eq("b")), schema)
	if err != nil {
		t.Fatal(err)
	}
	out, err := b.Eval(context.Background(), mem, rec)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Release()
	if got, want := show(out), "true (null) true"; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestBindErrors(t *testing.T) {
	cases := []struct {
		e    expr.Expr
		want string
	}{
		{expr.Col("price").Gt(1), `no column "price" (columns: i, f, s, b, i16, ts)`},
		{expr.Col("s").Gt(1), "cannot compare s (utf8) with 1 (int64)"},
		{expr.Col("i").And(expr.Col("b")), "i is int64, not boolean"},
		{expr.Col("s").Not(), "s is utf8, not boolean"},
		{expr.Col("s").Mul(2), "cannot compute s (utf8) * 2 (int64)"},
		{expr.Col("i").Eq(struct{}{}), "unsupported literal"},
	}
	for _, tc := range cases {
		t.Run(tc.e.String(), func(t *testing.T) {
			_, err := expr.Bind(tc.e, schema)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestEvalErrors(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rec := batch(mem)
	defer rec.Release()
	for _, e := range []expr.Expr{
		expr.Col("i").Div(0),
		expr.Col("i").Add(int64(1 << 62)).Add(int64(1 << 62)),
	} {
		b, err := expr.Bind(e, schema)
		if err != nil {
			t.Fatal(err)
		}
		if out, err := b.Eval(context.Background(), mem, rec); err == nil {
			out.Release()
			t.Errorf("%s: no error", e)
		}
	}
}

// TestRandomized compares evaluation with a row-by-row reference on random
// data with nulls.
func TestRandomized(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("MESHFLOW_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (rerun with MESHFLOW_SEED=%[1]d)", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	sch := arrow.NewSchema([]arrow.Field{
		{Name: "x", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "y", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
	}, nil)
	n := 1000 + rng.IntN(1000)
	xs, ys := make([]int64, n), make([]float64, n)
	xv, yv := make([]bool, n), make([]bool, n)
	for i := range n {
		xs[i], ys[i] = rng.Int64N(200)-100, float64(rng.IntN(200)-100)/4
		xv[i], yv[i] = rng.IntN(7) != 0, rng.IntN(9) != 0
	}
	bld := array.NewRecordBuilder(mem, sch)
	bld.Field(0).(*array.Int64Builder).AppendValues(xs, xv)
	bld.Field(1).(*array.Float64Builder).AppendValues(ys, yv)
	rec := bld.NewRecordBatch()
	bld.Release()
	defer rec.Release()

	k := rng.Int64N(100) - 50
	// (x > k AND y <= 0) OR x*2 = y, with Kleene logic.
	e := expr.Col("x").Gt(k).And(expr.Col("y").Le(0)).Or(expr.Col("x").Mul(2).Eq(expr.Col("y")))
	b, err := expr.Bind(e, sch)
	if err != nil {
		t.Fatal(err)
	}
	out, err := b.Eval(context.Background(), mem, rec)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Release()
	got := out.(*array.Boolean)
	type tri int8 // -1 null, 0 false, 1 true
	and := func(a, b tri) tri {
		if a == 0 || b == 0 {
			return 0
		}
		if a < 0 || b < 0 {
			return -1
		}
		return 1
	}
	or := func(a, b tri) tri {
		if a == 1 || b == 1 {
			return 1
		}
		if a < 0 || b < 0 {
			return -1
		}
		return 0
	}
	cmp := func(ok bool, v bool) tri {
		if !ok {
			return -1
		}
		if v {
			return 1
		}
		return 0
	}
	for i := range n {
		want := or(and(cmp(xv[i], xs[i] > k), cmp(yv[i], ys[i] <= 0)), cmp(xv[i] && yv[i], float64(xs[i]*2) == ys[i]))
		have := tri(-1)
		if got.IsValid(i) {
			have = cmp(true, got.Value(i))
		}
		if have != want {
			t.Fatalf("row %d (x=%d/%v y=%g/%v k=%d): got %d, want %d", i, xs[i], xv[i], ys[i], yv[i], k, have, want)
		}
	}
}

func Example() {
	mem := memory.NewGoAllocator()
	sch := arrow.NewSchema([]arrow.Field{{Name: "price", Type: arrow.PrimitiveTypes.Int64}}, nil)
	b := array.NewRecordBuilder(mem, sch)
	b.Field(0).(*array.Int64Builder).AppendValues([]int64{500, 1500, 2500}, nil)
	rec := b.NewRecordBatch()
	b.Release()
	defer rec.Release()

	e := expr.Col("price").Gt(1000).And(expr.Col("price").Mul(0.01).Lt(20))
	bound, err := expr.Bind(e, sch)
	if err != nil {
		panic(err)
	}
	mask, err := bound.Eval(context.Background(), mem, rec)
	if err != nil {
		panic(err)
	}
	defer mask.Release()
	fmt.Println(e, "→", mask)
	// Output: ((price > 1000) AND ((price * 0.01) < 20)) → [false true false]
}
