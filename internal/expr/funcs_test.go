package expr_test

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/expr"
	"github.com/meshflow/meshflow/internal/kernels"
)

var tsMsUTC = &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}

// funcBatch has nulls in every column: n int64, d int64, i8 int8, s
// string, t timestamp[ms, UTC].
func funcBatch(mem memory.Allocator) arrow.RecordBatch {
	ms := func(s string) any {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			panic(err)
		}
		return tm.UnixMilli()
	}
	return newBatch(mem, []arrow.Field{
		{Name: "n", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "d", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "i8", Type: arrow.PrimitiveTypes.Int8, Nullable: true},
		{Name: "s", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "t", Type: tsMsUTC, Nullable: true},
	}, [][]any{
		{int64(246), int64(-7), nil, int64(math.MinInt64), int64(5)},
		{int64(123), int64(3), int64(2), int64(-1), nil},
		{int64(-128), int64(7), int64(100), nil, int64(-1)},
		{"https://x/item/42?a=1", "Web", nil, "", "ÄPP"},
		{ms("2026-12-01T10:11:12.345Z"), ms("1969-12-31T23:59:59.999Z"), nil, ms("2026-12-01T00:00:00Z"), ms("2026-12-01T23:59:10Z")},
	})
}

func TestFuncs(t *testing.T) {
	ms := func(s string) any {
		tm, _ := time.Parse(time.RFC3339Nano, s)
		return tm.UnixMilli()
	}
	n, d, s, ts := expr.Col("n"), expr.Col("d"), expr.Col("s"), expr.Col("t")
	cases := []struct {
		e    expr.Expr
		want []any
	}{
		{n.Mod(d), []any{int64(0), int64(-1), nil, int64(0), nil}},
		{n.Mod(123), []any{int64(0), int64(-7), nil, int64(math.MinInt64 % 123), int64(5)}},
		{n.Mod(-2), []any{int64(0), int64(-1), nil, int64(0), int64(1)}},
		{n.Mod(123).Eq(0), []any{true, false, nil, false, false}},
		{n.Mod(123).Ne(0), []any{false, true, nil, true, true}},
		{n.Mod(2).Eq(1), []any{false, false, nil, false, true}},
		{n.Mod(nil), []any{nil, nil, nil, nil, nil}},
		{expr.Lit(1000).Mod(d), []any{int64(16), int64(1), int64(0), int64(0), nil}},
		{expr.Col("i8").Mod(-1), []any{int64(0), int64(0), int64(0), nil, int64(0)}},
		{expr.Col("i8").Mod(3), []any{int64(-2), int64(1), int64(1), nil, int64(-1)}},
		{s.Contains("item"), []any{true, false, nil, false, false}},
		{s.HasPrefix("https:"), []any{true, false, nil, false, false}},
		{s.HasSuffix("a=1"), []any{true, false, nil, false, false}},
		{s.Lower(), []any{"https://x/item/42?a=1", "web", nil, "", "äpp"}},
		{s.Upper(), []any{"HTTPS://X/ITEM/42?A=1", "WEB", nil, "", "ÄPP"}},
		{s.Lower().Eq("web"), []any{false, true, nil, false, false}},
		{s.RegexpExtract(`/item/(\d+)`, 1), []any{"42", nil, nil, nil, nil}},
		{s.RegexpExtract(`^\w+`, 0), []any{"https", "Web", nil, nil, nil}},
		{ts.Truncate(time.Second), []any{ms("2026-12-01T10:11:12Z"), ms("1969-12-31T23:59:59Z"), nil, ms("2026-12-01T00:00:00Z"), ms("2026-12-01T23:59:10Z")}},
		{ts.Truncate(time.Minute), []any{ms("2026-12-01T10:11:00Z"), ms("1969-12-31T23:59:00Z"), nil, ms("2026-12-01T00:00:00Z"), ms("2026-12-01T23:59:00Z")}},
		{ts.Truncate(time.Hour), []any{ms("2026-12-01T10:00:00Z"), ms("1969-12-31T23:00:00Z"), nil, ms("2026-12-01T00:00:00Z"), ms("2026-12-01T23:00:00Z")}},
		{ts.Truncate(24 * time.Hour), []any{ms("2026-12-01T00:00:00Z"), ms("1969-12-31T00:00:00Z"), nil, ms("2026-12-01T00:00:00Z"), ms("2026-12-01T00:00:00Z")}},
		{ts.Truncate(10 * time.Second), []any{ms("2026-12-01T10:11:10Z"), ms("1969-12-31T23:59:50Z"), nil, ms("2026-12-01T00:00:00Z"), ms("2026-12-01T23:59:10Z")}},
		{ts.Truncate(time.Minute).Lt(time.Date(2026, 12, 1, 10, 11, 0, 1, time.UTC)), []any{true, true, nil, true, false}},
	}
	for _, c := range cases {
		t.Run(c.e.String(), func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			rec := funcBatch(mem)
			defer rec.Release()
			got, err := eval(t, mem, c.e, rec)
			if err != nil {
				t.Fatal(err)
			}
			checkValues(t, c.e.String(), got, c.want)
			got.Release()
			// Sliced and empty batches.
			for _, r := range [][2]int64{{1, 4}, {2, 2}} {
				sl := rec.NewSlice(r[0], r[1])
				got, err := eval(t, mem, c.e, sl)
				if err != nil {
					t.Fatal(err)
				}
				checkValues(t, "slice", got, c.want[r[0]:r[1]])
				got.Release()
				sl.Release()
			}
		})
	}
}

func TestFuncsConstant(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rec := funcBatch(mem)
	defer rec.Release()
	for _, c := range []struct {
		e    expr.Expr
		want any
	}{
		{expr.Lit(17).Mod(5), int64(2)},
		{expr.Lit("AbC").Lower(), "abc"},
		{expr.Lit("abc").Contains("b"), true},
		{expr.Lit("id=7").RegexpExtract(`\d`, 0), "7"},
		{expr.Lit(nil).Upper(), nil},
		{expr.Lit([]byte("abc")).Contains("b"), true},
		{expr.Lit([]byte("abc")).HasSuffix("bc"), true},
	} {
		got, err := eval(t, mem, c.e, rec)
		if err != nil {
			t.Fatalf("%s: %v", c.e, err)
		}
		want := make([]any, rec.NumRows())
		for i := range want {
			want[i] = c.want
		}
		checkValues(t, c.e.String(), got, want)
		got.Release()
	}
}

func TestFuncErrors(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rec := funcBatch(mem)
	defer rec.Release()
	n, s, ts := expr.Col("n"), expr.Col("s"), expr.Col("t")
	for _, c := range []struct {
		e    expr.Expr
		want error
	}{
		{n.Mod(0.5), expr.ErrType},
		{s.Mod(2), expr.ErrType},
		{expr.Lit(1).Mod(0), kernels.ErrDivideByZero}, // folded at Bind
		{n.Contains("x"), expr.ErrType},
		{n.Lower(), expr.ErrType},
		{s.RegexpExtract("(", 0), expr.ErrArgument},
		{s.RegexpExtract("(a)", 2), expr.ErrArgument},
		{s.RegexpExtract("a", -1), expr.ErrArgument},
		{n.Truncate(time.Second), expr.ErrType},
		{ts.Truncate(0), expr.ErrArgument},
		{ts.Truncate(-time.Second), expr.ErrArgument},
		{ts.Truncate(1500 * time.Microsecond), expr.ErrArgument},
	} {
		if _, err := expr.Bind(c.e, rec.Schema()); !errors.Is(err, c.want) {
			t.Errorf("Bind(%s) = %v, want %v", c.e, err, c.want)
		}
	}
	// Division by zero at Eval, in a non-null row, fused or not.
	for _, e := range []expr.Expr{n.Mod(expr.Col("d").Sub(3)), n.Mod(0), n.Mod(0).Eq(0)} {
		if _, err := eval(t, mem, e, rec); !errors.Is(err, kernels.ErrDivideByZero) {
			t.Errorf("%s: %v, want ErrDivideByZero", e, err)
		}
	}
	// Truncation that leaves the type's range.
	lo := newBatch(mem, []arrow.Field{{Name: "t", Type: tsMsUTC}}, [][]any{{int64(math.MinInt64)}})
	defer lo.Release()
	if _, err := eval(t, mem, ts.Truncate(time.Second), lo); !errors.Is(err, kernels.ErrOverflow) {
		t.Errorf("truncate min: %v, want ErrOverflow", err)
	}
}

func TestFuncString(t *testing.T) {
	for _, c := range []struct {
		e    expr.Expr
		want string
	}{
		{expr.Col("auction").Mod(123).Eq(0), "((auction % 123) = 0)"},
		{expr.Col("url").Contains(`a"b`), `contains(url, "a\"b")`},
		{expr.Col("url").HasPrefix("h"), `starts_with(url, "h")`},
		{expr.Col("url").HasSuffix("h"), `ends_with(url, "h")`},
		{expr.Col("c").Lower().Eq("web"), `(lower(c) = "web")`},
		{expr.Col("c").Upper(), `upper(c)`},
		{expr.Col("url").RegexpExtract(`(\d+)`, 1), `regexp_extract(url, "(\\d+)", 1)`},
		{expr.Col("date_time").Truncate(10 * time.Second), "truncate(date_time, 10s)"},
	} {
		if got := c.e.String(); got != c.want {
			t.Errorf("String() = %s, want %s", got, c.want)
		}
	}
}

// countingAllocator counts the allocations that reach it.
type countingAllocator struct {
	memory.Allocator
	n int
}

func (c *countingAllocator) Allocate(size int) []byte {
	c.n++
	return c.Allocator.Allocate(size)
}

// TestIntermediatesRecycled: only the result's buffers come from the
// caller's allocator; intermediates come from recycled memory.
func TestIntermediatesRecycled(t *testing.T) {
	checked := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer checked.AssertSize(t, 0)
	rec := funcBatch(checked)
	defer rec.Release()
	l := expr.Col("d").Add(1).Mul(2).Sub(expr.Col("i8")).Gt(0)
	r := expr.Col("s").Lower().Contains("w")
	// What the last step, AND, allocates on its own.
	la, err := eval(t, checked, l, rec)
	if err != nil {
		t.Fatal(err)
	}
	defer la.Release()
	ra, err := eval(t, checked, r, rec)
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Release()
	last := &countingAllocator{Allocator: checked}
	want, err := kernels.And(last, la.(*array.Boolean), ra.(*array.Boolean))
	if err != nil {
		t.Fatal(err)
	}
	defer want.Release()
	// The whole expression allocates no more from the caller.
	mem := &countingAllocator{Allocator: checked}
	got, err := eval(t, mem, l.And(r), rec)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Release()
	if mem.n != last.n {
		t.Errorf("%d allocations from the caller's allocator, want %d (those of the result)", mem.n, last.n)
	}
	checkValues(t, "and", got, valuesOf(want))
}

// TestModCompareFused: x % d = c with an int64 column and literals binds
// to the one-pass evaluator; other forms do not.
func TestModCompareFused(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rec := funcBatch(mem)
	defer rec.Release()
	for _, c := range []struct {
		e     expr.Expr
		fused bool
	}{
		{expr.Col("n").Mod(123).Eq(0), true},
		{expr.Lit(0).Ne(expr.Col("n").Mod(123)), true},
		{expr.Col("n").Mod(123).Lt(0), false},
		{expr.Col("n").Mod(0).Eq(0), false},
		{expr.Col("n").Mod(expr.Col("d")).Eq(0), false},
		{expr.Col("i8").Mod(3).Eq(0), false},
	} {
		b, err := expr.Bind(c.e, rec.Schema())
		if err != nil {
			t.Fatal(err)
		}
		if got := expr.RootType(b) == "*expr.modCmpEval"; got != c.fused {
			t.Errorf("%s: bound as %s, fused = %v, want %v", c.e, expr.RootType(b), got, c.fused)
		}
	}
}

// TestTruncateTimeZone: days start at 00:00 UTC whatever the column's time
// zone (timestamps are instants).
func TestTruncateTimeZone(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	ny := &arrow.TimestampType{Unit: arrow.Second, TimeZone: "America/New_York"}
	at := time.Date(2026, 12, 1, 3, 4, 5, 0, time.UTC).Unix()
	rec := newBatch(mem, []arrow.Field{{Name: "t", Type: ny}}, [][]any{{at}})
	defer rec.Release()
	got, err := eval(t, mem, expr.Col("t").Truncate(24*time.Hour), rec)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Release()
	if !arrow.TypeEqual(got.DataType(), ny) {
		t.Errorf("type %s, want %s", got.DataType(), ny)
	}
	checkValues(t, "truncate", got, []any{time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).Unix()})
}
