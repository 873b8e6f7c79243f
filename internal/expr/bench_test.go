package expr_test

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/arrow/scalar"

	"github.com/meshflow/meshflow/internal/expr"
	"github.com/meshflow/meshflow/internal/kernels"
)

// The benchmarks measure the cost of going through expr (Bind once, then
// Eval per batch) against calling the kernels directly, on batches of
// 8192 bids (price int64, channel string). Compare the expr and kernel
// sub-benchmarks of each case, for example with benchstat.

const benchRows = 8192

func benchBatch(b *testing.B) arrow.RecordBatch {
	b.Helper()
	rng := rand.New(rand.NewPCG(42, 0))
	mem := memory.NewGoAllocator()
	sch := arrow.NewSchema([]arrow.Field{
		{Name: "price", Type: arrow.PrimitiveTypes.Int64},
		{Name: "channel", Type: arrow.BinaryTypes.String},
	}, nil)
	bld := array.NewRecordBuilder(mem, sch)
	defer bld.Release()
	channels := []string{"web", "app", "partner", "web"}
	for range benchRows {
		bld.Field(0).(*array.Int64Builder).Append(rng.Int64N(10000))
		bld.Field(1).(*array.StringBuilder).Append(channels[rng.IntN(len(channels))])
	}
	rec := bld.NewRecordBatch()
	b.Cleanup(rec.Release)
	return rec
}

func BenchmarkEval(b *testing.B) {
	rec := benchBatch(b)
	price, channel := rec.Column(0), rec.Column(1)
	mem := memory.NewGoAllocator()
	cases := []struct {
		name   string
		e      expr.Expr
		kernel func() (arrow.Array, error)
	}{
		{"price>5000", expr.Col("price").Gt(5000), func() (arrow.Array, error) {
			return kernels.CompareScalar(mem, kernels.Gt, price, scalar.NewInt64Scalar(5000))
		}},
		{"price*0.0091", expr.Col("price").Mul(0.0091), func() (arrow.Array, error) {
			return kernels.ArithScalar(mem, kernels.Mul, price, scalar.NewFloat64Scalar(0.0091))
		}},
		{"price>5000&&channel=web", expr.Col("price").Gt(5000).And(expr.Col("channel").Eq("web")), func() (arrow.Array, error) {
			a, err := kernels.CompareScalar(mem, kernels.Gt, price, scalar.NewInt64Scalar(5000))
			if err != nil {
				return nil, err
			}
			defer a.Release()
			c, err := kernels.CompareScalar(mem, kernels.Eq, channel, scalar.NewStringScalar("web"))
			if err != nil {
				return nil, err
			}
			defer c.Release()
			return kernels.And(mem, a, c)
		}},
	}
	for _, c := range cases {
		bound, err := expr.Bind(c.e, rec.Schema())
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name+"/expr", func(b *testing.B) {
			ctx := context.Background()
			for b.Loop() {
				out, err := bound.Eval(ctx, mem, rec)
				if err != nil {
					b.Fatal(err)
				}
				out.Release()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchRows), "ns/row")
		})
		b.Run(c.name+"/kernel", func(b *testing.B) {
			for b.Loop() {
				out, err := c.kernel()
				if err != nil {
					b.Fatal(err)
				}
				out.Release()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchRows), "ns/row")
		})
	}
}

// BenchmarkBind is the one-off cost of binding a predicate to a schema.
func BenchmarkBind(b *testing.B) {
	sch := benchBatch(b).Schema()
	e := expr.Col("price").Gt(5000).And(expr.Col("channel").Eq("web"))
	for b.Loop() {
		if _, err := expr.Bind(e, sch); err != nil {
			b.Fatal(err)
		}
	}
}
