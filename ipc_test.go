package meshflow_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/actors/natsio"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
	"github.com/meshflow/meshflow/messages"
)

// TestArrowIPCEndToEnd: producers publish Arrow IPC batches; a batch of the
// wrong schema and bytes that are not Arrow go to the dead-letter subject;
// the result is published as Arrow IPC and read back intact.
func TestArrowIPCEndToEnd(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	js := natstest.JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := natsio.EnsureStream(ctx, js, "IPC_IN", []string{"ipc.in"}); err != nil {
		t.Fatal(err)
	}

	sch := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "name", Type: arrow.BinaryTypes.String, Nullable: true},
	}, nil)
	build := func(s *arrow.Schema, ids []int64, names []string) []byte {
		b := array.NewRecordBuilder(mem, s)
		defer b.Release()
		b.Field(0).(*array.Int64Builder).AppendValues(ids, nil)
		if len(s.Fields()) > 1 {
			b.Field(1).(*array.StringBuilder).AppendValues(names, nil)
		}
		rec := b.NewRecordBatch()
		defer rec.Release()
		data, err := messages.EncodeIPC(rec)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	other := arrow.NewSchema([]arrow.Field{{Name: "id", Type: arrow.PrimitiveTypes.Int32}}, nil)
	b32 := array.NewRecordBuilder(mem, other)
	b32.Field(0).(*array.Int32Builder).Append(1)
	wrongRec := b32.NewRecordBatch()
	b32.Release()
	wrong, err := messages.EncodeIPC(wrongRec)
	wrongRec.Release()
	if err != nil {
		t.Fatal(err)
	}
	payloads := [][]byte{
		build(sch, []int64{1, 2, 3}, []string{"a", "b", "c"}),
		wrong,
		[]byte("not arrow at all"),
		build(sch, []int64{4, 5}, []string{"d", "e"}),
	}
	for _, p := range payloads {
		if _, err := js.Publish(ctx, "ipc.in", p); err != nil {
			t.Fatal(err)
		}
	}

	p := meshflow.NewPipeline("ipc")
	p.Source("in", meshflow.FromJetStream(meshflow.JetStreamSource{
		Subjects: []string{"ipc.in"}, Schema: sch, Format: natsio.ArrowIPC, Bounded: true,
	})).
		Filter("odd", meshflow.Col("id").Ne(2)).
		To("out", meshflow.ToJetStream(meshflow.JetStreamSink{Subject: "ipc.out", Format: natsio.ArrowIPC}))
	if err := meshflow.Run(ctx, p, meshflow.WithNATS(nc), meshflow.WithAllocator(mem), meshflow.WithLogger(testutil.TestLogger(t))); err != nil {
		t.Fatal(err)
	}

	var ids []int64
	var names []string
	for _, m := range readAll(t, ctx, js, "ipc.out") {
		recs, got, err := messages.DecodeIPC(mem, m.Data())
		if err != nil {
			t.Fatal(err)
		}
		if !got.Equal(sch) {
			t.Errorf("output schema %s, want %s", got, sch)
		}
		for _, r := range recs {
			ids = append(ids, r.Column(0).(*array.Int64).Int64Values()...)
			for i := range int(r.NumRows()) {
				names = append(names, r.Column(1).(*array.String).Value(i))
			}
			r.Release()
		}
	}
	if !slices.Equal(ids, []int64{1, 3, 4, 5}) || strings.Join(names, "") != "acde" {
		t.Errorf("output ids %v names %v", ids, names)
	}
	dlq := readAll(t, ctx, js, "ipc.in.dlq")
	if len(dlq) != 2 {
		t.Fatalf("%d dead letters, want 2", len(dlq))
	}
	reasons := dlq[0].Headers().Get(natsio.HeaderError) + " | " + dlq[1].Headers().Get(natsio.HeaderError)
	if !strings.Contains(reasons, "schema mismatch: 1 fields, want 2") || !strings.Contains(reasons, "arrow ipc") {
		t.Errorf("dead-letter reasons: %s", reasons)
	}
	if string(dlq[1].Data()) != "not arrow at all" {
		t.Errorf("dead letter carries %q, not the original payload", dlq[1].Data())
	}
}
