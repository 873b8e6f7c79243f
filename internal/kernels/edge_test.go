package kernels_test

import (
	"math"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/scalar"

	"github.com/meshflow/meshflow/internal/kernels"
)

// TestAllNullArrays runs the kernels on arrays made by MakeArrayOfNull
// (whose buffers arrow may share or omit) and on null-typed columns.
func TestAllNullArrays(t *testing.T) {
	mem := newTestAllocator()
	defer mem.AssertSize(t, 0)
	const n = 70
	nulls := make([]any, n)

	b := array.MakeArrayOfNull(mem, arrow.FixedWidthTypes.Boolean, n).(*array.Boolean)
	defer b.Release()
	bs := array.NewSlice(b, 3, n).(*array.Boolean)
	defer bs.Release()
	tr := build(mem, arrow.FixedWidthTypes.Boolean, func() []any {
		v := make([]any, n)
		for i := range v {
			v[i] = i%2 == 0
		}
		return v
	}())
	defer tr.Release()
	trs := array.NewSlice(tr, 0, n-3).(*array.Boolean)
	defer trs.Release()
	and, err := kernels.And(mem, bs, trs)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]any, n-3)
	for i := range want {
		want[i] = kleeneAnd(nil, i%2 == 0)
	}
	checkValues(t, "null AND x", and, want)
	and.Release()
	not := kernels.Not(mem, b)
	checkValues(t, "NOT null", not, nulls)
	not.Release()

	i := array.MakeArrayOfNull(mem, arrow.PrimitiveTypes.Int64, n)
	defer i.Release()
	cmp, err := kernels.CompareScalar(mem, kernels.Lt, i, scalar.NewInt64Scalar(3))
	if err != nil {
		t.Fatal(err)
	}
	checkValues(t, "null < 3", cmp, nulls)
	cmp.Release()
	sum, err := kernels.ArithScalar(mem, kernels.Div, i, scalar.NewInt64Scalar(0))
	if err != nil {
		t.Fatal(err)
	}
	checkValues(t, "null / 0", sum, nulls)
	sum.Release()

	// A batch with a null-typed column: Filter, Take and Partition.
	na := array.NewNull(n)
	defer na.Release()
	ids := make([]any, n)
	for r := range ids {
		ids[r] = int64(r)
	}
	id := build(mem, arrow.PrimitiveTypes.Int64, ids)
	defer id.Release()
	sch := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "nothing", Type: arrow.Null, Nullable: true},
	}, nil)
	rec := array.NewRecordBatch(sch, []arrow.Array{id, na}, n)
	defer rec.Release()
	mask := trs
	sliced := rec.NewSlice(3, n)
	defer sliced.Release()
	f, err := kernels.Filter(mem, sliced, mask)
	if err != nil {
		t.Fatal(err)
	}
	if f.Column(1).Len() != int(f.NumRows()) || f.Column(1).NullN() != int(f.NumRows()) {
		t.Errorf("null column after filter: %d rows, %d nulls", f.Column(1).Len(), f.Column(1).NullN())
	}
	f.Release()
	parts, err := kernels.Partition(mem, rec, []int{1}, 128, 4)
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for _, p := range parts {
		if p != nil {
			if p != rec {
				t.Errorf("all-null keys: expected the batch itself in one instance")
			}
			got++
		}
	}
	if got != 1 {
		t.Errorf("all-null keys went to %d instances", got)
	}
	releaseAll(parts)
}

// TestHashFloatNormalisation checks that -0 and +0, and NaNs with any
// payload, fall in the same key group.
func TestHashFloatNormalisation(t *testing.T) {
	mem := newTestAllocator()
	defer mem.AssertSize(t, 0)
	otherNaN := math.Float64frombits(0x7ff8000000000abc)
	for _, dt := range []arrow.DataType{arrow.PrimitiveTypes.Float64, arrow.PrimitiveTypes.Float32} {
		var a arrow.Array
		if dt.ID() == arrow.FLOAT64 {
			a = build(mem, dt, []any{0.0, math.Copysign(0, -1), math.NaN(), otherNaN, -math.NaN()})
		} else {
			fb := array.NewFloat32Builder(mem)
			fb.AppendValues([]float32{0, float32(math.Copysign(0, -1)), float32(math.NaN()),
				math.Float32frombits(0x7fc00abc), math.Float32frombits(0xffc00000)}, nil)
			a = fb.NewArray()
			fb.Release()
		}
		h := make([]uint64, 5)
		if err := kernels.HashColumns([]arrow.Array{a}, h); err != nil {
			t.Fatal(err)
		}
		if h[0] != h[1] {
			t.Errorf("%s: -0 and +0 hash differently", dt)
		}
		if h[2] != h[3] || h[2] != h[4] {
			t.Errorf("%s: NaN payloads hash differently: %#x %#x %#x", dt, h[2], h[3], h[4])
		}
		a.Release()
	}
}
