package domains_test

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/actors/natsio"
	"github.com/meshflow/meshflow/domains"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
)

type idSink struct {
	mu  *sync.Mutex
	ids *[]int64
}

func (s idSink) Open(context.Context, meshflow.OperatorContext) error { return nil }
func (s idSink) Close(context.Context) error                          { return nil }
func (s idSink) Process(_ context.Context, in arrow.RecordBatch, _ meshflow.Emitter) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !in.Schema().Equal(orderSchema) {
		panic("boundary emitted a batch not of the contract's schema")
	}
	*s.ids = append(*s.ids, in.Column(0).(*array.Int64).Int64Values()...)
	return nil
}

// TestBoundary: good rows go on under the contract's schema, every bad row
// is on the domain's dead-letter stream with the rules it broke, and the
// counts add up.
func TestBoundary(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	js := natstest.JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	contract := domains.Contract{Schema: orderSchema, Version: 2, Rules: []domains.Rule{
		domains.Range("amount", 0, 10_000),
		domains.Pattern("email", regexp.MustCompile(`@`)),
	}}
	in := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		orderSchema.Field(1), orderSchema.Field(2), orderSchema.Field(3), orderSchema.Field(4),
	}, nil)
	counts := &domains.Counts{}
	var mu sync.Mutex
	var ids []int64
	p := meshflow.NewPipeline("checkout")
	p.Source("events", meshflow.FromJSON(in,
		`{"id":1,"amount":5}`,
		`{"id":2,"amount":-5}`,
		`{"amount":7}`,
		`{"id":4,"email":"nobody"}`,
		`{"id":5,"email":"a@b"}`,
	)).
		Process("boundary", func() meshflow.Operator {
			return &domains.Boundary{Domain: "orders", Port: "checkout", Contract: contract, NATS: nc, Counts: counts}
		}, meshflow.OutputSchema(orderSchema)).
		To("out", meshflow.ToOperator(func() meshflow.Operator { return idSink{&mu, &ids} }))
	if err := meshflow.Run(ctx, p, meshflow.WithNATS(nc), meshflow.WithAllocator(mem), meshflow.WithLogger(testutil.TestLogger(t))); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids, []int64{1, 5}) {
		t.Errorf("good rows %v, want [1 5]", ids)
	}
	if counts.RowsIn.Load() != 5 || counts.RowsOut.Load() != 2 || counts.DeadLettered.Total() != 3 {
		t.Errorf("counts in %d out %d dead %d", counts.RowsIn.Load(), counts.RowsOut.Load(), counts.DeadLettered.Total())
	}
	st, err := js.Stream(ctx, domains.StreamName(domains.DeadLetterSubject("orders")))
	if err != nil {
		t.Fatal(err)
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(3, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for m := range batch.Messages() {
		if m.Headers().Get(domains.HeaderPort) != "checkout" || m.Headers().Get(domains.HeaderVersion) != "2" {
			t.Errorf("headers %v", m.Headers())
		}
		got = append(got, string(m.Data())+" | "+m.Headers().Get(natsio.HeaderError))
	}
	want := []string{
		`{"id":2,"amount":-5,"currency":null,"email":null,"paid":null} | contract broken: amount in [0, 10000]`,
		`{"id":null,"amount":7,"currency":null,"email":null,"paid":null} | contract broken: id not null`,
		`{"id":4,"amount":null,"currency":null,"email":"nobody","paid":null} | contract broken: email matches @`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("dead letters:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
