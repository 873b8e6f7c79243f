package join

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/kernels"
	"github.com/meshflow/meshflow/internal/window"
)

var benchSchema = arrow.NewSchema([]arrow.Field{
	{Name: "key", Type: arrow.PrimitiveTypes.Int64},
	{Name: "ts", Type: arrow.PrimitiveTypes.Int64},
	{Name: "v", Type: arrow.PrimitiveTypes.Int64},
}, nil)

// benchBatches returns a left and a right batch of n rows over n/4 keys,
// times near the row number, so each row has about one partner within
// [-10, 10].
func benchBatches(mem memory.Allocator, n int) (l, r arrow.RecordBatch) {
	rnd := rand.New(rand.NewPCG(1, 2))
	mk := func() arrow.RecordBatch {
		b := array.NewRecordBuilder(mem, benchSchema)
		defer b.Release()
		for i := range n {
			b.Field(0).(*array.Int64Builder).Append(int64(i % (n / 4)))
			b.Field(1).(*array.Int64Builder).Append(int64(i + rnd.IntN(11) - 5))
			b.Field(2).(*array.Int64Builder).Append(rnd.Int64())
		}
		return b.NewRecordBatch()
	}
	return mk(), mk()
}

const benchRows = 1 << 14

// BenchmarkIntervalJoin: one left and one right batch through an Interval
// (buffer the left, probe with the right, emit the pairs as a batch).
func BenchmarkIntervalJoin(b *testing.B) {
	mem := memory.NewGoAllocator()
	l, r := benchBatches(mem, benchRows)
	defer l.Release()
	defer r.Release()
	side := Side{Schema: benchSchema, Keys: []int{0}, Time: 1}
	pairs := 0
	for b.Loop() {
		j, err := NewInterval(IntervalConfig{Left: side, Right: side, Lower: -10, Upper: 10})
		if err != nil {
			b.Fatal(err)
		}
		if out, err := j.Add(mem, Left, l); err != nil || out != nil {
			b.Fatal(out, err)
		}
		out, err := j.Add(mem, Right, r)
		if err != nil {
			b.Fatal(err)
		}
		pairs = int(out.NumRows())
		out.Release()
		j.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(2*benchRows), "ns/row")
	b.ReportMetric(float64(pairs), "pairs")
}

// BenchmarkIntervalJoinGoMap is the reference: a Go map from key to the
// left rows over the same Arrow columns, probed by the right rows, the
// pairs gathered with kernels.Take into one batch as the join does.
func BenchmarkIntervalJoinGoMap(b *testing.B) {
	mem := memory.NewGoAllocator()
	l, r := benchBatches(mem, benchRows)
	defer l.Release()
	defer r.Release()
	out := arrow.NewSchema(append(benchSchema.Fields(), benchSchema.Fields()...), nil)
	pairs := 0
	for b.Loop() {
		lk, lt := l.Column(0).(*array.Int64).Int64Values(), l.Column(1).(*array.Int64).Int64Values()
		rk, rt := r.Column(0).(*array.Int64).Int64Values(), r.Column(1).(*array.Int64).Int64Values()
		index := make(map[int64][]int32)
		for i, k := range lk {
			index[k] = append(index[k], int32(i))
		}
		var li, ri []int32
		for i, k := range rk {
			for _, x := range index[k] {
				if d := rt[i] - lt[x]; d >= -10 && d <= 10 {
					li = append(li, x)
					ri = append(ri, int32(i))
				}
			}
		}
		lo, err := kernels.Take(mem, l, li)
		if err != nil {
			b.Fatal(err)
		}
		ro, err := kernels.Take(mem, r, ri)
		if err != nil {
			b.Fatal(err)
		}
		rec := array.NewRecordBatch(out, append(lo.Columns(), ro.Columns()...), int64(len(li)))
		pairs = int(rec.NumRows())
		rec.Release()
		lo.Release()
		ro.Release()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(2*benchRows), "ns/row")
	b.ReportMetric(float64(pairs), "pairs")
}

// BenchmarkRegularJoin: one left and one right batch through an unbounded
// Interval without time columns, the regular join (buffer the left,
// probe with the right: every pair with equal keys, 16 per key).
func BenchmarkRegularJoin(b *testing.B) {
	mem := memory.NewGoAllocator()
	l, r := benchBatches(mem, benchRows)
	defer l.Release()
	defer r.Release()
	side := Side{Schema: benchSchema, Keys: []int{0}, Time: -1}
	pairs := 0
	for b.Loop() {
		j, err := NewInterval(IntervalConfig{Left: side, Right: side, Lower: math.MinInt64, Upper: math.MaxInt64})
		if err != nil {
			b.Fatal(err)
		}
		if out, err := j.Add(mem, Left, l); err != nil || out != nil {
			b.Fatal(out, err)
		}
		out, err := j.Add(mem, Right, r)
		if err != nil {
			b.Fatal(err)
		}
		pairs = int(out.NumRows())
		out.Release()
		j.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(2*benchRows), "ns/row")
	b.ReportMetric(float64(pairs), "pairs")
}

// BenchmarkRegularJoinGoMap is its reference: a Go map from key to the
// left rows over the same Arrow columns, probed by the right rows, the
// pairs gathered with kernels.Take into one batch as the join does.
func BenchmarkRegularJoinGoMap(b *testing.B) {
	mem := memory.NewGoAllocator()
	l, r := benchBatches(mem, benchRows)
	defer l.Release()
	defer r.Release()
	out := arrow.NewSchema(append(benchSchema.Fields(), benchSchema.Fields()...), nil)
	pairs := 0
	for b.Loop() {
		lk, rk := l.Column(0).(*array.Int64).Int64Values(), r.Column(0).(*array.Int64).Int64Values()
		index := make(map[int64][]int32)
		for i, k := range lk {
			index[k] = append(index[k], int32(i))
		}
		var li, ri []int32
		for i, k := range rk {
			for _, x := range index[k] {
				li = append(li, x)
				ri = append(ri, int32(i))
			}
		}
		lo, err := kernels.Take(mem, l, li)
		if err != nil {
			b.Fatal(err)
		}
		ro, err := kernels.Take(mem, r, ri)
		if err != nil {
			b.Fatal(err)
		}
		rec := array.NewRecordBatch(out, append(lo.Columns(), ro.Columns()...), int64(len(li)))
		pairs = int(rec.NumRows())
		rec.Release()
		lo.Release()
		ro.Release()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(2*benchRows), "ns/row")
	b.ReportMetric(float64(pairs), "pairs")
}

// BenchmarkWindowJoin: one left and one right batch through a Window of
// tumbling 64 ms windows (buffer both, fire, emit the pairs as a batch).
func BenchmarkWindowJoin(b *testing.B) {
	mem := memory.NewGoAllocator()
	l, r := benchBatches(mem, benchRows)
	defer l.Release()
	defer r.Release()
	side := Side{Schema: benchSchema, Keys: []int{0}, Time: 1}
	pairs := 0
	for b.Loop() {
		j, err := NewWindow(WindowConfig{Spec: window.Tumbling(64), Left: side, Right: side})
		if err != nil {
			b.Fatal(err)
		}
		if err := j.Add(Left, l); err != nil {
			b.Fatal(err)
		}
		if err := j.Add(Right, r); err != nil {
			b.Fatal(err)
		}
		out, err := j.Fire(mem, math.MaxInt64)
		if err != nil {
			b.Fatal(err)
		}
		pairs = int(out.NumRows())
		out.Release()
		j.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(2*benchRows), "ns/row")
	b.ReportMetric(float64(pairs), "pairs")
}

// BenchmarkWindowJoinGoMap is the reference: a Go map from (key, window
// start) to the left rows, probed by the right rows, the pairs gathered
// with kernels.Take (the window bounds left out).
func BenchmarkWindowJoinGoMap(b *testing.B) {
	mem := memory.NewGoAllocator()
	l, r := benchBatches(mem, benchRows)
	defer l.Release()
	defer r.Release()
	out := arrow.NewSchema(append(benchSchema.Fields(), benchSchema.Fields()...), nil)
	type kw struct{ k, w int64 }
	pairs := 0
	for b.Loop() {
		lk, lt := l.Column(0).(*array.Int64).Int64Values(), l.Column(1).(*array.Int64).Int64Values()
		rk, rt := r.Column(0).(*array.Int64).Int64Values(), r.Column(1).(*array.Int64).Int64Values()
		index := make(map[kw][]int32)
		for i, k := range lk {
			w := kw{k, lt[i] - (lt[i]%64+64)%64}
			index[w] = append(index[w], int32(i))
		}
		var li, ri []int32
		for i, k := range rk {
			for _, x := range index[kw{k, rt[i] - (rt[i]%64+64)%64}] {
				li = append(li, x)
				ri = append(ri, int32(i))
			}
		}
		lo, err := kernels.Take(mem, l, li)
		if err != nil {
			b.Fatal(err)
		}
		ro, err := kernels.Take(mem, r, ri)
		if err != nil {
			b.Fatal(err)
		}
		rec := array.NewRecordBatch(out, append(lo.Columns(), ro.Columns()...), int64(len(li)))
		pairs = int(rec.NumRows())
		rec.Release()
		lo.Release()
		ro.Release()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(2*benchRows), "ns/row")
	b.ReportMetric(float64(pairs), "pairs")
}
