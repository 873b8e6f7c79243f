package kernels_test

import (
	"slices"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/arrow/scalar"

	"github.com/meshflow/meshflow/internal/kernels"
	"github.com/meshflow/meshflow/internal/nexmark"
)

// The benchmarks run on Nexmark bids in batches of 8192 rows (auction,
// bidder, price int64; channel, url, extra string; date_time
// timestamp[ms]). The filter keeps price > median price (about half the
// rows, scattered).

const benchRows = 8192

type bidData struct {
	recs      []arrow.RecordBatch
	threshold int64
	// Plain Go copies of the columns, for the baseline loops.
	auction, bidder, price [][]int64
	channel                [][]string
}

func loadBids(b *testing.B, batches int) *bidData {
	b.Helper()
	gen := nexmark.NewGenerator(nexmark.Config{Seed: 42})
	d := &bidData{}
	var prices []int64
	for range batches {
		rec := gen.NextBatch(memory.NewGoAllocator(), benchRows)
		d.recs = append(d.recs, rec)
		d.auction = append(d.auction, slices.Clone(rec.Column(nexmark.ColAuction).(*array.Int64).Int64Values()))
		d.bidder = append(d.bidder, slices.Clone(rec.Column(nexmark.ColBidder).(*array.Int64).Int64Values()))
		p := slices.Clone(rec.Column(nexmark.ColPrice).(*array.Int64).Int64Values())
		d.price = append(d.price, p)
		prices = append(prices, p...)
		ch := rec.Column(nexmark.ColChannel).(*array.String)
		cs := make([]string, ch.Len())
		for i := range cs {
			cs[i] = ch.Value(i)
		}
		d.channel = append(d.channel, cs)
	}
	b.Cleanup(func() {
		for _, r := range d.recs {
			r.Release()
		}
	})
	slices.Sort(prices)
	d.threshold = prices[len(prices)/2]
	return d
}

// project returns a zero-copy batch of rec's columns cols.
func project(rec arrow.RecordBatch, cols ...int) arrow.RecordBatch {
	fields := make([]arrow.Field, len(cols))
	arrs := make([]arrow.Array, len(cols))
	for i, c := range cols {
		fields[i], arrs[i] = rec.Schema().Field(c), rec.Column(c)
	}
	return array.NewRecordBatch(arrow.NewSchema(fields, nil), arrs, rec.NumRows())
}

// kernelFilterProject is the vectorised filter price > threshold plus
// projection to cols.
func kernelFilterProject(b *testing.B, mem memory.Allocator, rec arrow.RecordBatch, threshold scalar.Scalar, cols []int) int {
	mask, err := kernels.CompareScalar(mem, kernels.Gt, rec.Column(nexmark.ColPrice), threshold)
	if err != nil {
		b.Fatal(err)
	}
	proj := project(rec, cols...)
	out, err := kernels.Filter(mem, proj, mask)
	if err != nil {
		b.Fatal(err)
	}
	n := int(out.NumRows())
	out.Release()
	proj.Release()
	mask.Release()
	return n
}

type loopOut struct {
	auction, bidder, price []int64
	channel                []string
}

// loopFilterProjectInts is the plain Go baseline for auction, bidder,
// price.
func loopFilterProjectInts(auction, bidder, price []int64, threshold int64, out *loopOut) int {
	out.auction, out.bidder, out.price = out.auction[:0], out.bidder[:0], out.price[:0]
	for i, p := range price {
		if p > threshold {
			out.auction = append(out.auction, auction[i])
			out.bidder = append(out.bidder, bidder[i])
			out.price = append(out.price, p)
		}
	}
	return len(out.price)
}

// loopFilterProjectString is the plain Go baseline for auction, price,
// channel.
func loopFilterProjectString(auction, price []int64, channel []string, threshold int64, out *loopOut) int {
	out.auction, out.price, out.channel = out.auction[:0], out.price[:0], out.channel[:0]
	for i, p := range price {
		if p > threshold {
			out.auction = append(out.auction, auction[i])
			out.price = append(out.price, p)
			out.channel = append(out.channel, channel[i])
		}
	}
	return len(out.price)
}

// BenchmarkFilterProject times the kernels and the plain loop on the same
// batches, interleaved, and reports both in ns/row and the kernels'
// throughput relative to the loop (x_loop; the target is >= 0.5).
func BenchmarkFilterProject(b *testing.B) {
	d := loadBids(b, 32)
	threshold := scalar.NewInt64Scalar(d.threshold)
	cases := []struct {
		name string
		cols []int
		loop func(i int, out *loopOut) int
	}{
		{"auction,bidder,price", []int{nexmark.ColAuction, nexmark.ColBidder, nexmark.ColPrice},
			func(i int, out *loopOut) int {
				return loopFilterProjectInts(d.auction[i], d.bidder[i], d.price[i], d.threshold, out)
			}},
		{"auction,price,channel", []int{nexmark.ColAuction, nexmark.ColPrice, nexmark.ColChannel},
			func(i int, out *loopOut) int {
				return loopFilterProjectString(d.auction[i], d.price[i], d.channel[i], d.threshold, out)
			}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			mem := memory.NewGoAllocator()
			var out loopOut
			var kernelTime, loopTime time.Duration
			i := 0
			for b.Loop() {
				k := i % len(d.recs)
				t0 := time.Now()
				kn := kernelFilterProject(b, mem, d.recs[k], threshold, c.cols)
				t1 := time.Now()
				ln := c.loop(k, &out)
				t2 := time.Now()
				if kn != ln {
					b.Fatalf("kernels kept %d rows, the loop %d", kn, ln)
				}
				kernelTime += t1.Sub(t0)
				loopTime += t2.Sub(t1)
				i++
			}
			rows := float64(i * benchRows)
			b.ReportMetric(float64(kernelTime.Nanoseconds())/rows, "kernel-ns/row")
			b.ReportMetric(float64(loopTime.Nanoseconds())/rows, "loop-ns/row")
			b.ReportMetric(float64(loopTime)/float64(kernelTime), "x_loop")
		})
	}
}

// BenchmarkPartition4 hash-partitions whole bid batches by auction into 4
// instances (128 key groups).
func BenchmarkPartition4(b *testing.B) {
	d := loadBids(b, 32)
	mem := memory.NewGoAllocator()
	i := 0
	for b.Loop() {
		parts, err := kernels.Partition(mem, d.recs[i%len(d.recs)], []int{nexmark.ColAuction}, 128, 4)
		if err != nil {
			b.Fatal(err)
		}
		for _, p := range parts {
			if p != nil {
				p.Release()
			}
		}
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(i*benchRows), "ns/row")
}

// BenchmarkHashColumns hashes the auction (int64) and channel (string)
// columns.
func BenchmarkHashColumns(b *testing.B) {
	d := loadBids(b, 4)
	out := make([]uint64, benchRows)
	for _, c := range []struct {
		name string
		col  int
	}{{"int64", nexmark.ColAuction}, {"string", nexmark.ColChannel}} {
		b.Run(c.name, func(b *testing.B) {
			i := 0
			for b.Loop() {
				if err := kernels.HashColumns([]arrow.Array{d.recs[i%len(d.recs)].Column(c.col)}, out); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(i*benchRows), "ns/row")
		})
	}
}
