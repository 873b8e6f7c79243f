package queries_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/examples/nexmark/queries"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/nexmark"
	"github.com/meshflow/meshflow/messages"
)

// BenchmarkNexmark runs every Nexmark query over the same pre-generated
// events (batches of nexmark.EventSchema, generated once before the timed
// loops) in the engine and in plain Go, in one run:
//
//	BenchmarkNexmark/<q>/engine       queries.Build(q) run in process by meshflow.Run, checkpoints off
//	BenchmarkNexmark/<q>/engine-ckpt  the same with checkpoints every 100 ms
//	BenchmarkNexmark/<q>/reference    the tightest honest loop in plain Go (reference_test.go)
//	BenchmarkNexmark/q2/engine-one-filter  q2 written as one filter (buildOneFilter)
//	BenchmarkNexmark/startup  q0 run over no events: the fixed cost of a
//	                          run (node and job start and stop), in ns/op,
//	                          part of every engine op
//
// One op is the whole query over all the events; each reports events/s.
// The engine's source hands over the prebuilt batches (retained, not
// copied) and its sink counts rows; the count is checked against the
// reference's (when -bench runs both), outside the timing. Queries Build
// refuses (ErrNotSupported) are skipped. Measure on one core and print
// engine/reference ratios (of the medians over the runs) with
//
//	go test -run '^$' -bench Nexmark -cpu 1 -count 5 -benchtime 5x ./examples/nexmark/queries/ > bench.txt
//	go run ./scripts/benchratio < bench.txt
//
// -args -nexmark.events N sets the number of events (default 1,000,000).
func BenchmarkNexmark(b *testing.B) {
	n := *nexmarkEvents
	recs := benchBatches(b, n)
	srv := natstest.RunJetStream(b)
	nc := natstest.Connect(b, srv)
	b.Run("startup", func(b *testing.B) {
		for b.Loop() {
			if _, err := runEngine(context.Background(), queries.Build, "q0", nil, meshflow.WithoutCheckpoints(), meshflow.WithNATS(nc)); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, q := range allQueries {
		b.Run(q, func(b *testing.B) {
			want := int64(-1)
			b.Run("reference", func(b *testing.B) {
				ref := newReference(q)
				var rows int64
				for b.Loop() {
					rows = ref(recs)
				}
				reportEvents(b, n)
				want = rows
			})
			for _, v := range []struct {
				name  string
				fresh bool
				opts  []meshflow.RunOption
				build func(string, meshflow.Source, meshflow.Sink) (*meshflow.Pipeline, error)
			}{
				{"engine", false, []meshflow.RunOption{meshflow.WithoutCheckpoints()}, nil},
				{"engine-ckpt", true, []meshflow.RunOption{meshflow.WithCheckpoints(meshflow.CheckpointConfig{Interval: 100 * time.Millisecond})}, nil},
				{"engine-one-filter", false, []meshflow.RunOption{meshflow.WithoutCheckpoints()}, buildOneFilter},
			} {
				b.Run(v.name, func(b *testing.B) {
					build := queries.Build
					if v.build != nil {
						build = v.build
					}
					if _, err := build(q, meshflow.FromBatches(recs...), meshflow.ToOperator(func() meshflow.Operator { return countSink{new(atomic.Int64)} })); errors.Is(err, queries.ErrNotSupported) {
						b.Skip(err)
					}
					var rows int64
					for range b.N {
						conn := nc
						if v.fresh {
							// A run restores the job's last checkpoint on
							// its server: each run gets a new server.
							b.StopTimer()
							conn = natstest.Connect(b, natstest.RunJetStream(b))
							b.StartTimer()
						}
						var err error
						rows, err = runEngine(context.Background(), build, q, recs, append(v.opts, meshflow.WithNATS(conn))...)
						if err != nil {
							b.Fatal(err)
						}
					}
					reportEvents(b, n)
					if want >= 0 && rows != want {
						b.Fatalf("%s: the engine emitted %d rows, the reference %d", q, rows, want)
					}
				})
			}
		})
	}
}

var nexmarkEvents = flag.Int("nexmark.events", 1_000_000, "number of events of BenchmarkNexmark")

// allQueries are the Nexmark queries, in order.
var allQueries = []string{"q0", "q1", "q2", "q3", "q4", "q5", "q6", "q7", "q8"}

// benchBatchRows is the number of events of a batch of BenchmarkNexmark.
const benchBatchRows = 4096

func reportEvents(b *testing.B, n int) {
	b.ReportMetric(float64(b.N)*float64(n)/b.Elapsed().Seconds(), "events/s")
}

// buildOneFilter builds q2 as one filter on both conditions, projected to
// auction and price (a filter fused with a projection copies only the
// projected columns), where queries.Build filters the bids (copying all
// their columns) and then the auctions: what a plan fusing consecutive
// filters would run. It refuses the other queries.
func buildOneFilter(q string, src meshflow.Source, sink meshflow.Sink) (*meshflow.Pipeline, error) {
	if q != "q2" {
		return nil, fmt.Errorf("%s: %w", q, queries.ErrNotSupported)
	}
	p := meshflow.NewPipeline(queries.Name(q))
	p.Source("events", src).
		Filter("q2", meshflow.Col("type").Eq("bid").And(meshflow.Col("auction").Mod(123).Eq(0))).
		Project("shape", "auction", "price").
		To("out", sink)
	return p, nil
}

// runEngine runs query q over recs in process and returns the number of
// rows its sink received.
func runEngine(ctx context.Context, build func(string, meshflow.Source, meshflow.Sink) (*meshflow.Pipeline, error),
	q string, recs []arrow.RecordBatch, opts ...meshflow.RunOption) (int64, error) {
	var rows atomic.Int64
	p, err := build(q, meshflow.FromBatches(recs...), meshflow.ToOperator(func() meshflow.Operator { return countSink{&rows} }))
	if err != nil {
		return 0, err
	}
	if err := meshflow.Run(ctx, p, opts...); err != nil {
		return 0, err
	}
	return rows.Load(), nil
}

// countSink counts the rows it receives.
type countSink struct{ rows *atomic.Int64 }

func (c countSink) Open(context.Context, actors.OperatorContext) error { return nil }
func (c countSink) Close(context.Context) error                        { return nil }
func (c countSink) Process(_ context.Context, in arrow.RecordBatch, _ actors.Emitter) error {
	c.rows.Add(in.NumRows())
	return nil
}

var benchCache = map[int][]arrow.RecordBatch{}

// benchBatches returns the first n events of the stream of seed 1 as
// batches of benchBatchRows events, generated once per n for the whole
// run (never released: they live as long as the benchmark binary).
func benchBatches(b *testing.B, n int) []arrow.RecordBatch {
	if recs, ok := benchCache[n]; ok {
		return recs
	}
	recs, err := eventBatches(memory.NewGoAllocator(), nexmark.Config{Seed: 1}, n, benchBatchRows)
	if err != nil {
		b.Fatal(err)
	}
	benchCache[n] = recs
	return recs
}

// eventBatches returns the first n events of the stream of cfg as batches
// of nexmark.EventSchema of at most rows events, decoded from the events'
// JSON lines by the decoder the file and JetStream sources use, so they
// are the batches those sources hand the queries. The caller releases them.
func eventBatches(mem memory.Allocator, cfg nexmark.Config, n, rows int) ([]arrow.RecordBatch, error) {
	dec, err := messages.NewJSONDecoder(mem, nexmark.EventSchema)
	if err != nil {
		return nil, err
	}
	defer dec.Release()
	g := nexmark.NewGenerator(cfg)
	var recs []arrow.RecordBatch
	var line []byte
	for i := range n {
		ev := g.NextEvent()
		line = nexmark.AppendEventJSON(line[:0], &ev)
		if err := dec.Append(line); err != nil {
			releaseAll(recs)
			return nil, fmt.Errorf("event %d: %w", i, err)
		}
		if dec.Len() == rows || i == n-1 {
			recs = append(recs, dec.NewBatch())
		}
	}
	return recs, nil
}

func releaseAll(recs []arrow.RecordBatch) {
	for _, r := range recs {
		r.Release()
	}
}
