package domains_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/domains"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
	"github.com/meshflow/meshflow/messages"
)

// TestBoundaryNestedColumns: a port whose contract has a list column (fed
// by Arrow IPC) dead-letters a row that breaks it as a one-row Arrow IPC
// stream, which reads back as that row, and passes the others.
func TestBoundaryNestedColumns(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	js := natstest.JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	tags := arrow.ListOfNonNullable(arrow.BinaryTypes.String)
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "tags", Type: tags},
	}, nil)
	// The builder does not check nullability: the batch has the
	// contract's schema and only its data breaks it.
	b := array.NewRecordBuilder(mem, schema)
	lb := b.Field(1).(*array.ListBuilder)
	vb := lb.ValueBuilder().(*array.StringBuilder)
	for id := int64(1); id <= 4; id++ {
		b.Field(0).(*array.Int64Builder).Append(id)
		lb.Append(true)
		vb.Append("a")
		if id == 3 {
			vb.AppendNull() // breaks the non-nullable list elements
		}
	}
	claimed := b.NewRecordBatch()
	b.Release()
	defer claimed.Release()

	counts := &domains.Counts{}
	var mu sync.Mutex
	var ids []int64
	p := meshflow.NewPipeline("nested")
	p.Source("events", meshflow.FromBatches(claimed)).
		Process("boundary", func() meshflow.Operator {
			return &domains.Boundary{Domain: "tags", Port: "in", Contract: domains.Contract{Schema: schema, Version: 1}, NATS: nc, Counts: counts}
		}, meshflow.OutputSchema(schema)).
		To("out", meshflow.ToOperator(func() meshflow.Operator { return idCollector{&mu, &ids} }))
	if err := meshflow.Run(ctx, p, meshflow.WithNATS(nc), meshflow.WithAllocator(mem), meshflow.WithLogger(testutil.TestLogger(t))); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids, []int64{1, 2, 4}) {
		t.Errorf("good rows %v, want [1 2 4]", ids)
	}
	st, err := js.Stream(ctx, domains.StreamName(domains.DeadLetterSubject("tags")))
	if err != nil {
		t.Fatal(err)
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	recs, _, err := messages.DecodeIPC(mem, m.Data())
	if err != nil {
		t.Fatalf("dead letter is not Arrow IPC: %v", err)
	}
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	if len(recs) != 1 || recs[0].NumRows() != 1 || recs[0].Column(0).(*array.Int64).Value(0) != 3 {
		t.Fatalf("dead letter holds %v, want the row of id 3", recs)
	}
	if counts.DeadLettered.Total() != 1 {
		t.Errorf("%d dead letters counted, want 1", counts.DeadLettered.Total())
	}
}

type idCollector struct {
	mu  *sync.Mutex
	ids *[]int64
}

func (s idCollector) Open(context.Context, meshflow.OperatorContext) error { return nil }
func (s idCollector) Close(context.Context) error                          { return nil }
func (s idCollector) Process(_ context.Context, in arrow.RecordBatch, _ meshflow.Emitter) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	*s.ids = append(*s.ids, in.Column(0).(*array.Int64).Int64Values()...)
	return nil
}
