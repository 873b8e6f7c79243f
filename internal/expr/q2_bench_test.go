package expr_test

import (
	"context"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/expr"
	"github.com/meshflow/meshflow/internal/kernels"
	"github.com/meshflow/meshflow/internal/nexmark"
)

// BenchmarkQ2 is Nexmark q2 (bids whose auction is a multiple of 123,
// projected to auction and price) over batches of generated bids: the
// predicate evaluated with expr and the rows gathered with kernels.Filter,
// against the tightest reference, a branch-free loop over the auction
// values building the selection, then the same gather (kernels.Take).
//
//	go test -run '^$' -bench Q2 -count 5 ./internal/expr/
func BenchmarkQ2(b *testing.B) {
	const rows, batches = 8192, 8
	gen := nexmark.NewGenerator(nexmark.Config{Seed: 1})
	mem := memory.NewGoAllocator()
	recs := make([]arrow.RecordBatch, batches)
	for i := range recs {
		full := gen.NextBatch(mem, rows)
		cols := []arrow.Array{full.Column(nexmark.ColAuction), full.Column(nexmark.ColPrice)}
		sch := arrow.NewSchema([]arrow.Field{nexmark.BidSchema.Field(nexmark.ColAuction), nexmark.BidSchema.Field(nexmark.ColPrice)}, nil)
		recs[i] = array.NewRecordBatch(sch, cols, rows)
		full.Release()
	}
	b.Cleanup(func() {
		for _, r := range recs {
			r.Release()
		}
	})
	ctx := context.Background()
	perRow := func(b *testing.B) {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*rows), "ns/row")
	}
	for _, c := range q2Exprs() {
		bound, err := expr.Bind(c.e, recs[0].Schema())
		if err != nil {
			b.Fatal(err)
		}
		b.Run("expr/"+c.name, func(b *testing.B) {
			i := 0
			for b.Loop() {
				rec := recs[i%batches]
				i++
				m, err := bound.Eval(ctx, expr.Scratch(), rec) // as operators.Filter
				if err != nil {
					b.Fatal(err)
				}
				out, err := kernels.Filter(mem, rec, m.(*array.Boolean))
				m.Release()
				if err != nil {
					b.Fatal(err)
				}
				out.Release()
			}
			perRow(b)
		})
	}
	b.Run("loop", func(b *testing.B) {
		sel := make([]int32, rows)
		i := 0
		for b.Loop() {
			rec := recs[i%batches]
			i++
			auction := rec.Column(0).(*array.Int64).Int64Values()
			n := 0
			for j, x := range auction {
				sel[n] = int32(j)
				n += b2i(x%123 == 0)
			}
			out, err := kernels.Take(mem, rec, sel[:n])
			if err != nil {
				b.Fatal(err)
			}
			out.Release()
		}
		perRow(b)
	})
}

func b2i(v bool) int {
	if v {
		return 1
	}
	return 0
}
