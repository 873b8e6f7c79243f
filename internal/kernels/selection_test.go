package kernels_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/kernels"
)

// testBatch is a batch with one column per type in types, and the Go
// values of its rows (cols[c][row]).
type testBatch struct {
	rec  arrow.RecordBatch
	cols [][]any
}

// randBatch returns a batch of n random rows that is the slice at offset
// off of a longer batch.
func randBatch(mem memory.Allocator, rng *rand.Rand, g valueGen, types []arrow.DataType, n, off int) testBatch {
	fields := make([]arrow.Field, len(types))
	arrs := make([]arrow.Array, len(types))
	cols := make([][]any, len(types))
	total := off + n + rng.IntN(3)
	for i, dt := range types {
		fields[i] = arrow.Field{Name: fmt.Sprintf("c%d_%s", i, dt), Type: dt, Nullable: true}
		vals := g.values(rng, dt, total)
		arrs[i] = build(mem, dt, vals)
		cols[i] = vals[off : off+n]
	}
	md := arrow.NewMetadata([]string{"k"}, []string{"v"})
	full := array.NewRecordBatch(arrow.NewSchema(fields, &md), arrs, int64(total))
	for _, a := range arrs {
		a.Release()
	}
	defer full.Release()
	return testBatch{rec: full.NewSlice(int64(off), int64(off+n)), cols: cols}
}

// maskKind describes how a random mask is drawn.
type maskKind struct {
	name    string
	truePct int // per row, when runs is 0
	nullPct int
	runs    int // > 0: alternating runs of up to this many equal values
}

var maskKinds = []maskKind{
	{name: "sparse", truePct: 5},
	{name: "half", truePct: 50, nullPct: 10},
	{name: "dense", truePct: 95},
	{name: "runs", runs: 100, nullPct: 1},
	{name: "short-runs", runs: 20},
	{name: "all-true", truePct: 100},
	{name: "all-false", truePct: 0},
	{name: "all-null", nullPct: 100},
	{name: "true-or-null", truePct: 100, nullPct: 50},
}

func (k maskKind) values(rng *rand.Rand, n int) []any {
	vals := make([]any, n)
	cur, left := rng.IntN(2) == 0, 0
	for i := range vals {
		if k.nullPct > 0 && rng.IntN(100) < k.nullPct {
			continue
		}
		if k.runs > 0 {
			if left == 0 {
				cur, left = !cur, 1+rng.IntN(k.runs)
			}
			left--
			vals[i] = cur
			continue
		}
		vals[i] = rng.IntN(100) < k.truePct
	}
	return vals
}

// refFilter keeps the values whose mask value is true.
func refFilter(vals, mask []any) []any {
	out := []any{}
	for i, v := range vals {
		if mask[i] == true {
			out = append(out, v)
		}
	}
	return out
}

// sameAsComputeFilter compares a filtered batch with arrow compute's.
func sameAsComputeFilter(t *testing.T, mem memory.Allocator, what string, got, rec arrow.RecordBatch, mask arrow.Array) {
	t.Helper()
	ctx := compute.WithAllocator(context.Background(), mem)
	want, err := compute.FilterRecordBatch(ctx, rec, mask, compute.DefaultFilterOptions())
	if err != nil {
		t.Fatalf("%s: compute: %v", what, err)
	}
	defer want.Release()
	for c := range want.NumCols() {
		if want.Column(int(c)).DataType().ID() == arrow.FIXED_SIZE_BINARY {
			continue // see sameAsCompute
		}
		checkValues(t, fmt.Sprintf("%s vs compute, column %s", what, rec.Schema().Field(int(c)).Name),
			got.Column(int(c)), valuesOf(want.Column(int(c))))
	}
}

func TestFilter(t *testing.T) {
	rng := newRand(t)
	g := valueGen{nullPct: 15}
	for _, mk := range maskKinds {
		t.Run(mk.name, func(t *testing.T) {
			mem := newTestAllocator()
			defer mem.AssertSize(t, 0)
			ns := append(sizes, 300)
			if mk.runs > 0 {
				ns = append(ns, 1000) // long enough for many runs
			}
			for _, n := range ns {
				for _, off := range [][2]int{{0, 0}, {5, 0}, {0, 3}, {64, 17}} {
					b := randBatch(mem, rng, g, allTypes, n, off[0])
					mv := mk.values(rng, n)
					mask := slicedArray(mem, arrow.FixedWidthTypes.Boolean, append(mk.values(rng, off[1]), mv...), off[1], n).(*array.Boolean)
					what := fmt.Sprintf("n=%d offsets=%v", n, off)

					got, err := kernels.Filter(mem, b.rec, mask)
					if err != nil {
						t.Fatalf("%s: %v", what, err)
					}
					kept := refFilter(b.cols[0], mv)
					if got.NumRows() != int64(len(kept)) {
						t.Fatalf("%s: %d rows, want %d", what, got.NumRows(), len(kept))
					}
					if !got.Schema().Equal(b.rec.Schema()) {
						t.Fatalf("%s: schema %s, want %s", what, got.Schema(), b.rec.Schema())
					}
					if len(kept) == n && got != b.rec {
						t.Errorf("%s: every row kept but the batch was copied", what)
					}
					for c := range b.cols {
						col := got.Column(c)
						checkValues(t, fmt.Sprintf("%s column %s", what, got.Schema().Field(c).Name), col, refFilter(b.cols[c], mv))
						if n < 100 {
							one, err := kernels.FilterArray(mem, b.rec.Column(c), mask)
							if err != nil {
								t.Fatalf("%s: FilterArray: %v", what, err)
							}
							checkValues(t, what+" FilterArray", one, refFilter(b.cols[c], mv))
							one.Release()
						}
					}
					sameAsComputeFilter(t, mem, what, got, b.rec, mask)
					got.Release()
					mask.Release()
					b.rec.Release()
				}
			}
		})
	}
}

func TestFilterErrors(t *testing.T) {
	mem := newTestAllocator()
	defer mem.AssertSize(t, 0)
	rng := newRand(t)
	b := randBatch(mem, rng, valueGen{}, []arrow.DataType{arrow.PrimitiveTypes.Int64}, 4, 0)
	defer b.rec.Release()
	short := build(mem, arrow.FixedWidthTypes.Boolean, []any{true}).(*array.Boolean)
	defer short.Release()
	if _, err := kernels.Filter(mem, b.rec, short); !errors.Is(err, kernels.ErrLengthMismatch) {
		t.Errorf("short mask: %v", err)
	}
	if _, err := kernels.Filter(mem, b.rec, nil); !errors.Is(err, kernels.ErrInvalidArgument) {
		t.Errorf("nil mask: %v", err)
	}
	if _, err := kernels.FilterArray(mem, b.rec.Column(0), short); !errors.Is(err, kernels.ErrLengthMismatch) {
		t.Errorf("FilterArray, short mask: %v", err)
	}
	if _, err := kernels.FilterArray(mem, b.rec.Column(0), nil); !errors.Is(err, kernels.ErrInvalidArgument) {
		t.Errorf("FilterArray, nil mask: %v", err)
	}
}

// TestFilterMetadata checks that batch metadata survives a filter.
func TestFilterMetadata(t *testing.T) {
	mem := newTestAllocator()
	defer mem.AssertSize(t, 0)
	col := build(mem, arrow.PrimitiveTypes.Int64, []any{int64(1), int64(2), int64(3)})
	defer col.Release()
	md := arrow.NewMetadata([]string{"seq"}, []string{"7"})
	sch := arrow.NewSchema([]arrow.Field{{Name: "x", Type: arrow.PrimitiveTypes.Int64}}, nil)
	rec := array.NewRecordBatchWithMetadata(sch, []arrow.Array{col}, 3, md)
	defer rec.Release()
	mask := build(mem, arrow.FixedWidthTypes.Boolean, []any{true, false, true}).(*array.Boolean)
	defer mask.Release()
	got, err := kernels.Filter(mem, rec, mask)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Release()
	m, ok := got.(arrow.RecordBatchWithMetadata)
	if !ok || m.Metadata().FindKey("seq") < 0 {
		t.Fatalf("metadata lost: %T", got)
	}
	checkValues(t, "x", got.Column(0), []any{int64(1), int64(3)})
}

func TestTake(t *testing.T) {
	rng := newRand(t)
	g := valueGen{nullPct: 15}
	mem := newTestAllocator()
	defer mem.AssertSize(t, 0)
	for _, n := range []int{1, 9, 100, 1000} {
		for _, off := range []int{0, 3} {
			b := randBatch(mem, rng, g, allTypes, n, off)
			for _, m := range []int{0, 1, n / 2, n, 2 * n} {
				idx := make([]int32, m)
				for i := range idx {
					idx[i] = rng.Int32N(int32(n))
				}
				if m == n && rng.IntN(2) == 0 {
					for i := range idx {
						idx[i] = int32(n - 1 - i) // reversed
					}
				}
				what := fmt.Sprintf("n=%d off=%d m=%d", n, off, m)
				got, err := kernels.Take(mem, b.rec, idx)
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				if got.NumRows() != int64(m) {
					t.Fatalf("%s: %d rows", what, got.NumRows())
				}
				for c := range b.cols {
					want := make([]any, m)
					for i, j := range idx {
						want[i] = b.cols[c][j]
					}
					checkValues(t, fmt.Sprintf("%s column %s", what, got.Schema().Field(c).Name), got.Column(c), want)
					if c%4 == 0 {
						one, err := kernels.TakeArray(mem, b.rec.Column(c), idx)
						if err != nil {
							t.Fatalf("%s: TakeArray: %v", what, err)
						}
						checkValues(t, what+" TakeArray", one, want)
						one.Release()
					}
				}
				got.Release()
			}
			for _, bad := range []int32{-1, int32(n), math.MaxInt32, math.MinInt32} {
				if out, err := kernels.Take(mem, b.rec, []int32{0, bad}); !errors.Is(err, kernels.ErrIndexOutOfRange) {
					if out != nil {
						out.Release()
					}
					t.Errorf("index %d of %d rows: %v", bad, n, err)
				}
				if _, err := kernels.TakeArray(mem, b.rec.Column(0), []int32{bad}); !errors.Is(err, kernels.ErrIndexOutOfRange) {
					t.Errorf("TakeArray: index %d of %d rows: %v", bad, n, err)
				}
			}
			b.rec.Release()
		}
	}
}

// TestSelectionEmpty covers empty batches and batches without columns.
func TestSelectionEmpty(t *testing.T) {
	mem := newTestAllocator()
	defer mem.AssertSize(t, 0)
	rng := newRand(t)
	b := randBatch(mem, rng, valueGen{}, allTypes, 0, 2)
	defer b.rec.Release()
	mask := build(mem, arrow.FixedWidthTypes.Boolean, nil).(*array.Boolean)
	defer mask.Release()
	got, err := kernels.Filter(mem, b.rec, mask)
	if err != nil {
		t.Fatal(err)
	}
	if got.NumRows() != 0 || got.NumCols() != int64(len(allTypes)) {
		t.Fatalf("filter of an empty batch: %d rows, %d columns", got.NumRows(), got.NumCols())
	}
	got.Release()
	got, err = kernels.Take(mem, b.rec, nil)
	if err != nil {
		t.Fatal(err)
	}
	for c := range got.NumCols() {
		checkArray(t, "take of nothing", got.Column(int(c)))
	}
	got.Release()

	noCols := array.NewRecordBatch(arrow.NewSchema(nil, nil), nil, 3)
	defer noCols.Release()
	m3 := build(mem, arrow.FixedWidthTypes.Boolean, []any{true, false, true}).(*array.Boolean)
	defer m3.Release()
	got, err = kernels.Filter(mem, noCols, m3)
	if err != nil {
		t.Fatal(err)
	}
	if got.NumRows() != 2 {
		t.Errorf("filter of a batch without columns: %d rows, want 2", got.NumRows())
	}
	got.Release()
}

// TestFilterNullsFollowMask filters columns whose nulls are exactly the
// rows the mask drops (the selected rows are all valid: no bitmap is
// copied) or exactly the rows it keeps (all null: no values gathered),
// with masks of long runs (gathered as spans) and of scattered rows.
func TestFilterNullsFollowMask(t *testing.T) {
	rng := newRand(t)
	for _, mk := range []maskKind{{name: "runs", runs: 100}, {name: "sparse", truePct: 5}, {name: "half", truePct: 50}} {
		for _, keptNull := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/kept-null=%v", mk.name, keptNull), func(t *testing.T) {
				mem := newTestAllocator()
				defer mem.AssertSize(t, 0)
				for _, n := range []int{1, 63, 1000} {
					mv := mk.values(rng, n)
					if n == 1 {
						mv[0] = true
					}
					maskArr := build(mem, arrow.FixedWidthTypes.Boolean, mv).(*array.Boolean)
					for _, dt := range allTypes {
						vals := valueGen{}.values(rng, dt, n)
						for i := range vals {
							if (mv[i] == true) == keptNull {
								vals[i] = nil
							}
						}
						col := build(mem, dt, vals)
						what := fmt.Sprintf("n=%d %s", n, dt)
						got, err := kernels.FilterArray(mem, col, maskArr)
						if err != nil {
							t.Fatalf("%s: %v", what, err)
						}
						want := refFilter(vals, mv)
						checkValues(t, what, got, want)
						if keptNull && got.NullN() != len(want) {
							t.Errorf("%s: %d nulls, want %d", what, got.NullN(), len(want))
						}
						if !keptNull && got.NullN() != 0 {
							t.Errorf("%s: %d nulls, want 0", what, got.NullN())
						}
						got.Release()
						col.Release()
					}
					maskArr.Release()
				}
			})
		}
	}
}
