package meshflow_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/actors/natsio"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
	"github.com/meshflow/meshflow/messages"
)

// positionSink records the input position of every row by its id.
type positionSink struct {
	mu  *sync.Mutex
	pos map[int64][]uint64
}

func (s positionSink) Open(context.Context, meshflow.OperatorContext) error { return nil }
func (s positionSink) Close(context.Context) error                          { return nil }
func (s positionSink) Process(ctx context.Context, in arrow.RecordBatch, _ meshflow.Emitter) error {
	l := actors.InputLineage(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, id := range in.Column(0).(*array.Int64).Int64Values() {
		s.pos[id] = append(s.pos[id], l.At(i))
	}
	return nil
}

// TestJetStreamPositionsReachOperators: rows read from JetStream, as JSON
// lines and as Arrow IPC messages of many rows (handed over as decoded, or
// small ones concatenated), reach an operator downstream with the position
// natsio.Position(stream sequence, index in the message).
func TestJetStreamPositionsReachOperators(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	js := natstest.JetStream(t, nc)
	ctx := testutil.Context(t, time.Minute)
	schema := arrow.NewSchema([]arrow.Field{{Name: "id", Type: arrow.PrimitiveTypes.Int64}}, nil)
	for i, tc := range []struct {
		name   string
		format natsio.Format
		rows   []int // rows per message
	}{
		{"json lines", natsio.JSON, []int{1, 3, 1, 5}},
		{"arrow ipc, large messages", natsio.ArrowIPC, []int{3000, 2500, 4000}},
		{"arrow ipc, small messages", natsio.ArrowIPC, []int{10, 20, 5, 7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			subject := "pos." + strconv.Itoa(i)
			if _, err := natsio.EnsureStream(ctx, js, "POS_"+strconv.Itoa(i), []string{subject}); err != nil {
				t.Fatal(err)
			}
			want := map[int64]uint64{}
			id := int64(0)
			for _, n := range tc.rows {
				var data []byte
				first := id
				switch tc.format {
				case natsio.JSON:
					for range n {
						data = append(data, []byte(`{"id":`+strconv.FormatInt(id, 10)+"}\n")...)
						id++
					}
				default:
					b := array.NewInt64Builder(mem)
					for range n {
						b.Append(id)
						id++
					}
					col := b.NewArray()
					b.Release()
					rec := array.NewRecordBatch(schema, []arrow.Array{col}, int64(n))
					col.Release()
					var err error
					data, err = messages.EncodeIPC(rec)
					rec.Release()
					if err != nil {
						t.Fatal(err)
					}
				}
				ack, err := js.Publish(ctx, subject, data)
				if err != nil {
					t.Fatal(err)
				}
				for k := first; k < id; k++ {
					want[k] = natsio.Position(ack.Sequence, int(k-first))
				}
			}
			got := positionSink{mu: &sync.Mutex{}, pos: map[int64][]uint64{}}
			p := meshflow.NewPipeline("positions" + strconv.Itoa(i))
			p.Source("in", meshflow.FromJetStream(meshflow.JetStreamSource{Subjects: []string{subject}, Schema: schema, Format: tc.format, Bounded: true})).
				To("out", meshflow.ToOperator(func() meshflow.Operator { return got }))
			if err := meshflow.Run(ctx, p, meshflow.WithNATS(nc), meshflow.WithAllocator(mem), meshflow.WithLogger(testutil.TestLogger(t))); err != nil {
				t.Fatal(err)
			}
			if len(got.pos) != len(want) {
				t.Fatalf("%d rows arrived, want %d", len(got.pos), len(want))
			}
			for k, w := range want {
				if len(got.pos[k]) != 1 || got.pos[k][0] != w {
					t.Fatalf("row %d at positions %v, want [%d]", k, got.pos[k], w)
				}
			}
		})
	}
}
