package natsio_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/actors/natsio"
	"github.com/meshflow/meshflow/cluster"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
	"github.com/meshflow/meshflow/messages"
)

var rowSchema = arrow.NewSchema([]arrow.Field{
	{Name: "v", Type: arrow.PrimitiveTypes.Int64},
	{Name: "s", Type: arrow.BinaryTypes.String},
}, nil)

// rowsSource is a bounded source of rows (v, s) whose positions are given
// by pos(v), as a JetStream source gives stream sequences.
type rowsSource struct {
	mem   memory.Allocator
	vals  []int64
	str   func(v int64) string
	batch int
	pos   func(v int64) uint64
	last  []int64
}

func (r *rowsSource) Open(context.Context, actors.OperatorContext) error { return nil }
func (r *rowsSource) Close(context.Context) error                        { return nil }
func (r *rowsSource) Read(context.Context) (arrow.RecordBatch, error) {
	if len(r.vals) == 0 {
		return nil, io.EOF
	}
	n := min(r.batch, len(r.vals))
	r.last, r.vals = r.vals[:n], r.vals[n:]
	b := array.NewRecordBuilder(r.mem, rowSchema)
	defer b.Release()
	for _, v := range r.last {
		b.Field(0).(*array.Int64Builder).Append(v)
		b.Field(1).(*array.StringBuilder).Append(r.str(v))
	}
	return b.NewRecordBatch(), nil
}
func (r *rowsSource) Positions() []uint64 {
	pos := make([]uint64, len(r.last))
	for i, v := range r.last {
		pos[i] = r.pos(v)
	}
	return pos
}

// runSink runs source → sink on one node until the source ends.
func runSink(t *testing.T, nc *nats.Conn, mem memory.Allocator, src func() actors.Source, cfg natsio.SinkConfig) {
	t.Helper()
	g := &actors.JobGraph{
		Name: "sinktest",
		Vertices: []*actors.Vertex{
			{Name: "src", Parallelism: 1, NewSource: src},
			{Name: "out", Parallelism: 1, NewOperator: func() actors.Operator { return natsio.NewSink(nc, cfg) }},
		},
		Edges: []actors.Edge{{From: "src", To: "out", Partitioning: actors.Forward}},
	}
	node, err := actors.NewNode(actors.NodeConfig{ID: "n", NATS: nc, Allocator: mem, Logger: testutil.TestLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	pl, err := cluster.SingleNode{}.Place(g, []string{"n"})
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Run(testutil.Context(t, time.Minute), g, pl); err != nil {
		t.Fatal(err)
	}
}

func seqRange(lo, hi int64) []int64 {
	out := make([]int64, 0, hi-lo)
	for v := lo; v < hi; v++ {
		out = append(out, v)
	}
	return out
}

// streamValues reads every message of stream and returns how many times
// each value of column v appears.
func streamValues(t *testing.T, js jetstream.JetStream, stream string) map[int64]int {
	t.Helper()
	ctx := testutil.Context(t, time.Minute)
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64]int{}
	if info.State.Msgs == 0 {
		return got
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(0); i < info.State.Msgs; i++ {
		m, err := c.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("message %d of %d: %v", i+1, info.State.Msgs, err)
		}
		var row struct{ V int64 }
		if err := json.Unmarshal(m.Data(), &row); err != nil {
			t.Fatalf("message %q: %v", m.Data(), err)
		}
		got[row.V]++
	}
	return got
}

// TestSinkIDsFromPositions publishes rows, publishes some of them again
// (a re-read after a restart: same positions) together with new ones, and
// finds every row stored exactly once: the re-published rows are
// recognised by their ids, and no new row is mistaken for an old one even
// though the sink's batches and input sequence numbers start over.
func TestSinkIDsFromPositions(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := natsio.SinkConfig{Subject: "ids.out", MaxPending: 64}
	str := func(v int64) string { return fmt.Sprint("row-", v) }
	pos := func(v int64) uint64 { return natsio.Position(uint64(v)+1, 0) }
	runSink(t, nc, mem, func() actors.Source {
		return &rowsSource{mem: mem, vals: seqRange(0, 3000), str: str, batch: 700, pos: pos}
	}, cfg)
	// The second run re-reads rows 2000-2999 with other batch cuts, then
	// new rows 3000-4999.
	runSink(t, nc, mem, func() actors.Source {
		return &rowsSource{mem: mem, vals: seqRange(2000, 5000), str: str, batch: 333, pos: pos}
	}, cfg)
	got := streamValues(t, js, "IDS_OUT")
	for v := int64(0); v < 5000; v++ {
		if got[v] != 1 {
			t.Fatalf("value %d stored %d times, want once", v, got[v])
		}
	}
	if len(got) != 5000 {
		t.Fatalf("%d values stored, want 5000", len(got))
	}
}

// TestSinkOversizeRows puts rows larger than the server's max payload (or
// than the stream's max message size) between good rows, in JSON and
// Arrow IPC: each is dead-lettered with its size and hash, the good rows
// of the same batches are all published, and the job does not fail.
func TestSinkOversizeRows(t *testing.T) {
	for _, tc := range []struct {
		name       string
		format     natsio.Format
		maxMsgSize int32 // stream limit; 0: the server's max payload applies
	}{
		{"json over max payload", natsio.JSON, 0},
		{"arrow over max payload", natsio.ArrowIPC, 0},
		{"json over stream max message size", natsio.JSON, 64 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			srv := natstest.RunJetStream(t)
			nc := natstest.Connect(t, srv)
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			ctx := testutil.Context(t, time.Minute)
			if tc.maxMsgSize > 0 {
				if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BIG_OUT", Subjects: []string{"big.out"}, MaxMsgSize: tc.maxMsgSize}); err != nil {
					t.Fatal(err)
				}
			}
			big := int(nc.MaxPayload()) + 1000
			if tc.maxMsgSize > 0 {
				big = int(tc.maxMsgSize) + 1000
			}
			str := func(v int64) string {
				if v%100 == 50 {
					return strings.Repeat("\b", big)
				}
				return fmt.Sprint("row-", v)
			}
			runSink(t, nc, mem, func() actors.Source {
				return &rowsSource{mem: mem, vals: seqRange(0, 300), str: str, batch: 128,
					pos: func(v int64) uint64 { return natsio.Position(uint64(v)+1, 0) }}
			}, natsio.SinkConfig{Subject: "big.out", Format: tc.format})
			var good map[int64]int
			if tc.format == natsio.ArrowIPC {
				good = ipcStreamValues(t, js, mem, "BIG_OUT")
			} else {
				good = streamValues(t, js, "BIG_OUT")
			}
			for v := int64(0); v < 300; v++ {
				want := 1
				if v%100 == 50 {
					want = 0
				}
				if good[v] != want {
					t.Fatalf("value %d stored %d times, want %d", v, good[v], want)
				}
			}
			dlq, err := js.Stream(ctx, "BIG_OUT_DLQ")
			if err != nil {
				t.Fatal(err)
			}
			c, err := dlq.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3; i++ {
				m, err := c.Next(jetstream.FetchMaxWait(10 * time.Second))
				if err != nil {
					t.Fatalf("dead letter %d: %v", i+1, err)
				}
				h := m.Headers()
				if h.Get(natsio.HeaderErrorClass) != natsio.ClassOversize || h.Get(natsio.HeaderError) == "" {
					t.Fatalf("dead letter %d headers %v, want class %s and a reason", i+1, h, natsio.ClassOversize)
				}
				if tc.maxMsgSize == 0 && (h.Get(natsio.HeaderTruncated) != "true" || h.Get(natsio.HeaderOriginalSHA256) == "") {
					t.Fatalf("dead letter %d of a row above max payload: headers %v, want it truncated with its hash", i+1, h)
				}
			}
		})
	}
}

func ipcStreamValues(t *testing.T, js jetstream.JetStream, mem memory.Allocator, stream string) map[int64]int {
	t.Helper()
	ctx := testutil.Context(t, time.Minute)
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64]int{}
	for i := uint64(0); i < info.State.Msgs; i++ {
		m, err := c.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		recs, _, err := messages.DecodeIPC(mem, m.Data())
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			for _, v := range r.Column(0).(*array.Int64).Int64Values() {
				got[v]++
			}
			r.Release()
		}
	}
	return got
}
