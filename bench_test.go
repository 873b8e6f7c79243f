package meshflow

import (
	"context"
	"io"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/cluster"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/nexmark"
)

// The benchmarks below compare Meshflow with a plain Go loop doing the same
// work on the same data, in the same run: Nexmark bids in batches of 8192
// rows, keep price > threshold (about half the rows), project auction,
// bidder, price.
//
//	go test -run '^$' -bench 'ChainVsLoop' -benchtime 5000x -cpu 1 .
//
// The reported "x_loop" metric is Meshflow's rows/s divided by the loop's.

const (
	benchBatchRows = 8192
	benchBatches   = 32
)

func benchData(b *testing.B) ([]arrow.RecordBatch, int64) {
	b.Helper()
	gen := nexmark.NewGenerator(nexmark.Config{Seed: 42})
	recs := make([]arrow.RecordBatch, benchBatches)
	var prices []int64
	for i := range recs {
		recs[i] = gen.NextBatch(memory.DefaultAllocator, benchBatchRows)
		prices = append(prices, recs[i].Column(recs[i].Schema().FieldIndices("price")[0]).(*array.Int64).Int64Values()...)
	}
	b.Cleanup(func() {
		for _, r := range recs {
			r.Release()
		}
	})
	// The median price selects about half the rows.
	return recs, median(prices)
}

func median(v []int64) int64 {
	c := slices.Clone(v)
	slices.Sort(c)
	return c[len(c)/2]
}

// loopFilterProject is the plain Go baseline: the same filter and
// projection written by hand over the same column buffers, branch-free
// (with a threshold at the median a branch per row is mispredicted half
// the time): every row is written at the next output slot, which only
// advances when the row is kept.
type loopOut struct {
	auction, bidder, price []int64
}

func loopFilterProject(rec arrow.RecordBatch, threshold int64, out *loopOut) int {
	auction := rec.Column(0).(*array.Int64).Int64Values()
	bidder := rec.Column(1).(*array.Int64).Int64Values()
	price := rec.Column(2).(*array.Int64).Int64Values()
	n := len(price)
	if cap(out.price) < n {
		out.auction, out.bidder, out.price = make([]int64, n), make([]int64, n), make([]int64, n)
	}
	oa, ob, op := out.auction[:n], out.bidder[:n], out.price[:n]
	auction, bidder = auction[:n], bidder[:n]
	k := 0
	for i, p := range price {
		oa[k], ob[k], op[k] = auction[i], bidder[i], p
		k += b2i(p > threshold)
	}
	out.auction, out.bidder, out.price = oa[:k], ob[:k], op[:k]
	return k
}

// b2i is 1 for true, 0 for false; the compiler makes it a flag move, not
// a branch.
func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// loopFilterProjectBranchy is the loop with a branch per row, for
// comparison (BenchmarkLoopVariants).
func loopFilterProjectBranchy(rec arrow.RecordBatch, threshold int64, out *loopOut) int {
	auction := rec.Column(0).(*array.Int64).Int64Values()
	bidder := rec.Column(1).(*array.Int64).Int64Values()
	price := rec.Column(2).(*array.Int64).Int64Values()
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

// BenchmarkLoopVariants: the branch-free loop of BenchmarkChainVsLoop
// against the loop branching on each row, over the same batches.
//
//	go test -run '^$' -bench 'LoopVariants' -cpu 1 .
func BenchmarkLoopVariants(b *testing.B) {
	recs, threshold := benchData(b)
	for _, v := range []struct {
		name string
		f    func(arrow.RecordBatch, int64, *loopOut) int
	}{{"branch-free", loopFilterProject}, {"branchy", loopFilterProjectBranchy}} {
		b.Run(v.name, func(b *testing.B) {
			var out loopOut
			var rows int
			for i := 0; b.Loop(); i++ {
				rows += v.f(recs[i%len(recs)], threshold, &out)
			}
			b.ReportMetric(float64(b.N)*benchBatchRows/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// cycleSource emits n batches cycling over recs.
type cycleSource struct {
	recs []arrow.RecordBatch
	n, i int
}

func (s *cycleSource) Open(context.Context, actors.OperatorContext) error { return nil }
func (s *cycleSource) Close(context.Context) error                        { return nil }
func (s *cycleSource) Read(context.Context) (arrow.RecordBatch, error) {
	if s.i == s.n {
		return nil, io.EOF
	}
	r := s.recs[s.i%len(s.recs)]
	s.i++
	r.Retain()
	return r, nil
}

type countSink struct{ rows *atomic.Int64 }

func (c countSink) Open(context.Context, actors.OperatorContext) error { return nil }
func (c countSink) Close(context.Context) error                        { return nil }
func (c countSink) Process(_ context.Context, in arrow.RecordBatch, _ actors.Emitter) error {
	c.rows.Add(in.NumRows())
	return nil
}

func benchPipeline(recs []arrow.RecordBatch, n int, threshold int64, rows *atomic.Int64) *Pipeline {
	p := NewPipeline("bench")
	p.Source("bids", FromSource(nexmark.BidSchema, func() actors.Source { return &cycleSource{recs: recs, n: n} })).
		Filter("expensive", Col("price").Gt(threshold)).
		Project("shape", "auction", "bidder", "price").
		To("count", ToOperator(func() Operator { return countSink{rows} }))
	return p
}

func runLoop(recs []arrow.RecordBatch, n int, threshold int64) (int64, time.Duration) {
	var out loopOut
	var rows int64
	start := time.Now()
	for i := 0; i < n; i++ {
		rows += int64(loopFilterProject(recs[i%len(recs)], threshold, &out))
	}
	return rows, time.Since(start)
}

// BenchmarkChainVsLoop: the in-process filter+project chain (source, chain
// and sink are three actors) against the plain loop.
func BenchmarkChainVsLoop(b *testing.B) {
	recs, threshold := benchData(b)
	srv := natstest.RunJetStream(b)
	nc := natstest.Connect(b, srv)
	var rows atomic.Int64
	p := benchPipeline(recs, b.N, threshold, &rows)
	b.ResetTimer()
	start := time.Now()
	if err := Run(context.Background(), p, WithNATS(nc)); err != nil {
		b.Fatal(err)
	}
	mf := time.Since(start)
	b.StopTimer()
	loopRows, loop := runLoop(recs, b.N, threshold)
	if loopRows != rows.Load() {
		b.Fatalf("meshflow kept %d rows, the loop %d", rows.Load(), loopRows)
	}
	reportRatio(b, int64(b.N)*benchBatchRows, mf, loop)
}

// BenchmarkNATSHopVsLoop: the same chain with the source on node "a" and
// the filter, projection and sink on node "b", so every batch crosses NATS
// (TCP loopback to an embedded server) as Arrow IPC.
func BenchmarkNATSHopVsLoop(b *testing.B) {
	recs, threshold := benchData(b)
	srv := natstest.RunJetStream(b)
	ncA, err := nats.Connect(srv.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer ncA.Close()
	ncB, err := nats.Connect(srv.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer ncB.Close()
	var rows atomic.Int64
	p := benchPipeline(recs, b.N, threshold, &rows)
	if err := p.Validate(); err != nil {
		b.Fatal(err)
	}
	g, err := p.graph(&runEnv{})
	if err != nil {
		b.Fatal(err)
	}
	pl, err := cluster.Pinned{Operators: map[string]string{"bids": "a"}, Default: "b"}.Place(g, []string{"a", "b"})
	if err != nil {
		b.Fatal(err)
	}
	nodes := map[string]*actors.Node{}
	for id, nc := range map[string]*nats.Conn{"a": ncA, "b": ncB} {
		n, err := actors.NewNode(actors.NodeConfig{ID: id, NATS: nc})
		if err != nil {
			b.Fatal(err)
		}
		defer n.Close()
		nodes[id] = n
	}
	b.ResetTimer()
	start := time.Now()
	errs := make(chan error, 2)
	for _, n := range nodes {
		go func() { errs <- n.Run(context.Background(), g, pl) }()
	}
	for range nodes {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	mf := time.Since(start)
	b.StopTimer()
	loopRows, loop := runLoop(recs, b.N, threshold)
	if loopRows != rows.Load() {
		b.Fatalf("meshflow kept %d rows, the loop %d", rows.Load(), loopRows)
	}
	reportRatio(b, int64(b.N)*benchBatchRows, mf, loop)
}

func reportRatio(b *testing.B, rows int64, mf, loop time.Duration) {
	mfRate := float64(rows) / mf.Seconds()
	loopRate := float64(rows) / loop.Seconds()
	b.ReportMetric(mfRate, "rows/s")
	b.ReportMetric(loopRate, "loop_rows/s")
	b.ReportMetric(mfRate/loopRate, "x_loop")
}
