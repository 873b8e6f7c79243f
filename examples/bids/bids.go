// Package bids is the bundled example pipeline that `meshflow dev` runs: it
// reads Nexmark bids published as JSON on NATS, keeps the high-value ones,
// converts their price to euros and, per auction, reports the highest bid
// every time the event-time watermark advances.
package bids

import (
	"context"
	"io"
	"slices"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/domains"
	"github.com/meshflow/meshflow/internal/natsembed"
	"github.com/meshflow/meshflow/internal/nexmark"
)

// Schema is the schema of the bid events producers publish.
var Schema = nexmark.BidSchema

// TopSchema is the schema of the pipeline's results.
var TopSchema = arrow.NewSchema([]arrow.Field{
	{Name: "auction", Type: arrow.PrimitiveTypes.Int64},
	{Name: "max_price_eur", Type: arrow.PrimitiveTypes.Float64},
	{Name: "bids", Type: arrow.PrimitiveTypes.Int64},
	{Name: "watermark", Type: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}},
}, nil)

// Config configures the example pipeline.
type Config struct {
	// Input is the subject bids arrive on (default "bids.in").
	Input string
	// Output is the subject results are published to (default "bids.top").
	Output string
	// Print, when set, also receives the results.
	Print io.Writer
	// Format of Print.
	Format meshflow.PrintFormat
	// Parallelism of the keyed stage (default 4).
	Parallelism int
	// Bounded ends the pipeline once the input is read.
	Bounded bool
}

// Name is the name of the pipeline, its job, and of its NATS user.
const Name = "bids"

// consumer is the durable consumer the pipeline reads its input through.
const consumer = "bids"

func (cfg Config) withDefaults() Config {
	if cfg.Input == "" {
		cfg.Input = "bids.in"
	}
	if cfg.Output == "" {
		cfg.Output = "bids.top"
	}
	if cfg.Parallelism == 0 {
		cfg.Parallelism = 4
	}
	if cfg.Format == 0 {
		cfg.Format = meshflow.Table
	}
	return cfg
}

// deadLetter is the subject of the events that cannot be decoded and of
// the results too large to publish.
func (cfg Config) deadLetter() string { return cfg.Input + ".dlq" }

// Pipeline returns the example pipeline:
//
//	bids (JetStream) -> high-value (price > $100) -> to-eur -> shape
//	  -> key by auction -> top-bid (x4) -> bids.top (JetStream) [+ print]
//
// Its input, output and dead-letter subjects are literal; their streams
// are named after them (domains.StreamName).
func Pipeline(cfg Config) *meshflow.Pipeline {
	cfg = cfg.withDefaults()
	p := meshflow.NewPipeline(Name)
	bids := p.Source("bids", meshflow.FromJetStream(meshflow.JetStreamSource{
		Subjects:   []string{cfg.Input},
		Stream:     domains.StreamName(cfg.Input),
		Consumer:   consumer,
		DeadLetter: cfg.deadLetter(),
		Schema:     Schema,
		Bounded:    cfg.Bounded,
	}), meshflow.EventTime("date_time", 2*time.Second))
	top := bids.
		Filter("high-value", meshflow.Col("price").Gt(10_000)).
		Map("to-eur", meshflow.Set("price_eur", meshflow.Col("price").Mul(0.0092))).
		Project("shape", "auction", "price_eur").
		KeyBy("auction").
		Process("top-bid", NewTopBid, meshflow.Parallelism(cfg.Parallelism), meshflow.OutputSchema(TopSchema))
	top.To("publish", meshflow.ToJetStream(meshflow.JetStreamSink{Subject: cfg.Output, Stream: domains.StreamName(cfg.Output),
		DeadLetter: cfg.deadLetter()}))
	if cfg.Print != nil {
		top.To("print", meshflow.Print(cfg.Print, cfg.Format))
	}
	return p
}

// Users returns the NATS users of the example on the embedded server, as
// `meshflow dev --example bids` runs it:
//
// The pipeline's user, Name, may use its private subjects (mf.bids.>), its
// streams (input, results, dead letters: create, update, info; never delete
// or purge), its durable consumer on the input stream, the checkpoint
// buckets (domains.CheckpointStoreSubjects: it runs the node), publish
// results and dead letters, and receive replies under
// domains.InboxPrefix(Name).
//
// The producers' user, producer, may publish bids to cfg.Input; read the
// results and the dead letters (their subjects, and consumers of its own on
// their streams); ask the pipeline for its status (actors.StatusSubject,
// meshflow status); and receive replies under domains.InboxPrefix(producer).
// It cannot publish results, touch the pipeline's consumer, or delete,
// purge or change any stream.
func Users(cfg Config, password, producer, producerPassword string) (pipeline, producers natsembed.User) {
	cfg = cfg.withDefaults()
	in, out, dlq := domains.StreamName(cfg.Input), domains.StreamName(cfg.Output), domains.StreamName(cfg.deadLetter())
	private := "mf." + Name + ".>"
	pub := []string{private, cfg.Output, cfg.deadLetter(), "$JS.API.INFO", "$JS.API.STREAM.NAMES"}
	for _, st := range []string{in, out, dlq} {
		pub = append(pub, "$JS.API.STREAM.CREATE."+st, "$JS.API.STREAM.UPDATE."+st, "$JS.API.STREAM.INFO."+st)
	}
	pub = append(pub, domains.DurableConsumerSubjects(in, consumer)...)
	pub = append(pub, domains.CheckpointStoreSubjects()...)
	pipeline = natsembed.User{Name: Name, Password: password, Publish: pub,
		Subscribe: []string{private, domains.InboxPrefix(Name) + ".>"}, AllowResponses: true}

	ppub := []string{cfg.Input, "$JS.API.INFO", "$JS.API.STREAM.NAMES", actors.StatusSubject(Name)}
	ppub = append(ppub, domains.StreamReaderSubjects(out)...)
	ppub = append(ppub, domains.StreamReaderSubjects(dlq)...)
	producers = natsembed.User{Name: producer, Password: producerPassword, Publish: ppub,
		Subscribe:   []string{cfg.Output, cfg.deadLetter(), domains.InboxPrefix(producer) + ".>"},
		DenyPublish: domains.DurableConsumerSubjects(in, consumer)}
	return pipeline, producers
}

// TopBid keeps the highest euro price and the bid count per auction and,
// whenever the watermark advances, emits the auctions that changed since
// the last watermark. Its state lives in memory and starts empty after a
// restart.
type TopBid struct {
	oc      meshflow.OperatorContext
	max     map[int64]float64
	count   map[int64]int64
	changed map[int64]bool
}

// NewTopBid returns a TopBid operator.
func NewTopBid() meshflow.Operator { return &TopBid{} }

// Open implements meshflow.Operator.
func (t *TopBid) Open(_ context.Context, oc meshflow.OperatorContext) error {
	t.oc = oc
	t.max, t.count, t.changed = map[int64]float64{}, map[int64]int64{}, map[int64]bool{}
	return nil
}

// Process implements meshflow.Operator.
func (t *TopBid) Process(_ context.Context, in arrow.RecordBatch, _ meshflow.Emitter) error {
	auctions := in.Column(0).(*array.Int64).Int64Values()
	prices := in.Column(1).(*array.Float64).Float64Values()
	for i, a := range auctions {
		if p, ok := t.max[a]; !ok || prices[i] > p {
			t.max[a] = prices[i]
		}
		t.count[a]++
		t.changed[a] = true
	}
	return nil
}

// OnWatermark implements meshflow.WatermarkHandler.
func (t *TopBid) OnWatermark(_ context.Context, wm meshflow.Watermark, out meshflow.Emitter) error {
	if len(t.changed) == 0 {
		return nil
	}
	keys := make([]int64, 0, len(t.changed))
	for a := range t.changed {
		keys = append(keys, a)
	}
	slices.Sort(keys)
	b := array.NewRecordBuilder(t.oc.Allocator(), TopSchema)
	defer b.Release()
	ts := arrow.Timestamp(int64(wm) / 1000)
	if wm == meshflow.Watermark(1<<63-1) {
		ts = arrow.Timestamp(time.Now().UnixMilli())
	}
	for _, a := range keys {
		b.Field(0).(*array.Int64Builder).Append(a)
		b.Field(1).(*array.Float64Builder).Append(t.max[a])
		b.Field(2).(*array.Int64Builder).Append(t.count[a])
		b.Field(3).(*array.TimestampBuilder).Append(ts)
	}
	clear(t.changed)
	out.Emit(b.NewRecordBatch())
	return nil
}

// Close implements meshflow.Operator.
func (t *TopBid) Close(context.Context) error { return nil }
