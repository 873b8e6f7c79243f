package meshflow_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/actors/natsio"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
)

var winSchema = arrow.NewSchema([]arrow.Field{
	{Name: "key", Type: arrow.BinaryTypes.String},
	{Name: "ts", Type: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}},
	{Name: "v", Type: arrow.PrimitiveTypes.Int64},
}, nil)

type winRow struct {
	key   string
	ts, v int64
}

func winSeed(t *testing.T) uint64 {
	t.Helper()
	s := rand.Uint64()
	if env := os.Getenv("MESHFLOW_SEED"); env != "" {
		v, err := strconv.ParseUint(env, 10, 64)
		if err != nil {
			t.Fatalf("MESHFLOW_SEED=%q: %v", env, err)
		}
		s = v
	}
	t.Logf("seed %d (MESHFLOW_SEED=%d replays)", s, s)
	return s
}

// winResult is one emitted window row, rendered.
type winCollector struct {
	mu   sync.Mutex
	last map[string]string // key@start -> aggregates, the last emitted
	n    int
}

func (c *winCollector) Open(context.Context, meshflow.OperatorContext) error { return nil }
func (c *winCollector) Close(context.Context) error                          { return nil }
func (c *winCollector) Process(_ context.Context, in arrow.RecordBatch, _ meshflow.Emitter) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range int(in.NumRows()) {
		name := fmt.Sprintf("%s@%d", in.Column(0).(*array.String).Value(i), int64(in.Column(1).(*array.Timestamp).Value(i)))
		var s string
		for c := 3; c < int(in.NumCols()); c++ {
			s += in.ColumnName(c) + "=" + in.Column(c).ValueStr(i) + " "
		}
		c.last[name] = s
		c.n++
	}
	return nil
}

// TestWindowAggregates runs Window in a job: shuffled, out-of-order events
// over many keys, some later than the allowed lateness, keyed over two
// instances, event-time watermarks from the source. Every window's last
// result equals a brute-force reference over the rows it took, and every
// late row is on the late-rows subject once, with its reason.
func TestWindowAggregates(t *testing.T) {
	for _, tc := range []struct {
		name string
		w    func() meshflow.Windows
		size int64
		// starts lists the windows of a time.
		starts func(ts int64) []int64
	}{
		{"tumbling", func() meshflow.Windows { return meshflow.TumblingWindows(100*time.Millisecond, "ts") }, 100,
			func(ts int64) []int64 { return []int64{ts - mod(ts, 100)} }},
		{"sliding", func() meshflow.Windows {
			return meshflow.SlidingWindows(100*time.Millisecond, 40*time.Millisecond, "ts")
		}, 100,
			func(ts int64) []int64 {
				var s []int64
				for w := ts - mod(ts, 40); w > ts-100; w -= 40 {
					s = append(s, w)
				}
				return s
			}},
	} {
		t.Run(tc.name, func(t *testing.T) { testWindowAggregates(t, tc.w(), tc.size, tc.starts) })
	}
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

func testWindowAggregates(t *testing.T, w meshflow.Windows, size int64, starts func(int64) []int64) {
	r := rand.New(rand.NewPCG(winSeed(t), 2))
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	js := natstest.JetStream(t, nc)
	ctx := testutil.Context(t, time.Minute)

	const (
		batches, perBatch = 40, 50
		ooo               = 150 // the source's max out-of-orderness, ms
		lateness          = 100
		base              = int64(1_700_000_000_000)
	)
	var rows [][]winRow
	v := int64(0)
	for b := range batches {
		var batch []winRow
		for range perBatch {
			ts := base + int64(b)*40 + int64(r.IntN(200)) - 100
			switch r.IntN(25) {
			case 0:
				ts -= 400 // far behind: late
			case 1, 2:
				ts -= 200 // behind: within the allowed lateness or late
			}
			batch = append(batch, winRow{key: "k" + strconv.Itoa(r.IntN(12)), ts: ts, v: v})
			v++
		}
		rows = append(rows, batch)
	}
	recs := make([]arrow.RecordBatch, len(rows))
	for i, batch := range rows {
		b := array.NewRecordBuilder(mem, winSchema)
		for _, row := range batch {
			b.Field(0).(*array.StringBuilder).Append(row.key)
			b.Field(1).(*array.TimestampBuilder).Append(arrow.Timestamp(row.ts))
			b.Field(2).(*array.Int64Builder).Append(row.v)
		}
		recs[i] = b.NewRecordBatch()
		b.Release()
	}
	defer func() {
		for _, rec := range recs {
			rec.Release()
		}
	}()

	// The reference: rows of batch k+1 arrive after the watermark that
	// followed batch k (the highest time so far minus ooo).
	type acc struct {
		n, total, max int64
	}
	want := map[string]*acc{}
	wantLate := map[int64]bool{}
	wm, maxTS := int64(math.MinInt64), int64(math.MinInt64)
	for _, batch := range rows {
		for _, row := range batch {
			took := false
			for _, s := range starts(row.ts) {
				if wm != math.MinInt64 && s+size+lateness <= wm {
					continue
				}
				took = true
				name := fmt.Sprintf("%s@%d", row.key, s)
				a := want[name]
				if a == nil {
					a = &acc{max: math.MinInt64}
					want[name] = a
				}
				a.n++
				a.total += row.v
				a.max = max(a.max, row.v)
			}
			if !took {
				wantLate[row.v] = true
			}
			maxTS = max(maxTS, row.ts)
		}
		wm = max(wm, maxTS-ooo)
	}
	if len(wantLate) == 0 {
		t.Fatal("the input has no late rows: the test would show nothing of them")
	}

	out := &winCollector{last: map[string]string{}}
	p := meshflow.NewPipeline("windows")
	p.Source("events", meshflow.FromBatches(recs...), meshflow.EventTime("ts", ooo*time.Millisecond)).
		KeyBy("key").
		Window("agg", w.AllowedLateness(lateness*time.Millisecond).LateRowsTo("late.rows"),
			[]meshflow.Aggregate{meshflow.Count().As("n"), meshflow.Sum("v").As("total"), meshflow.Max("v")},
			meshflow.Parallelism(2)).
		To("out", meshflow.ToOperator(func() meshflow.Operator { return out }))
	if err := meshflow.Run(ctx, p, meshflow.WithNATS(nc), meshflow.WithAllocator(mem), meshflow.WithState(testStore(t)),
		meshflow.WithLogger(testutil.TestLogger(t))); err != nil {
		t.Fatal(err)
	}

	for name, a := range want {
		w := fmt.Sprintf("n=%d total=%d max_v=%d ", a.n, a.total, a.max)
		if got := out.last[name]; got != w {
			t.Errorf("%s: got %q, want %q", name, got, w)
		}
	}
	for name := range out.last {
		if want[name] == nil {
			t.Errorf("%s emitted, not in the reference", name)
		}
	}
	t.Logf("%d windows, %d rows emitted (updates included), %d late rows", len(want), out.n, len(wantLate))

	// The late rows, each once, with their reason.
	stream, err := js.StreamNameBySubject(ctx, "late.rows")
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	gotLate := map[int64]bool{}
	info, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	for range info.CachedInfo().State.Msgs {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var row struct{ V int64 }
		if err := json.Unmarshal(m.Data(), &row); err != nil {
			t.Fatalf("late row %q: %v", m.Data(), err)
		}
		if gotLate[row.V] {
			t.Errorf("late row v=%d published twice", row.V)
		}
		gotLate[row.V] = true
		if c := m.Headers().Get(natsio.HeaderErrorClass); c != meshflow.ClassLate {
			t.Errorf("late row v=%d: class %q", row.V, c)
		}
		if m.Headers().Get(natsio.HeaderError) == "" {
			t.Errorf("late row v=%d: no reason", row.V)
		}
	}
	if !maps.Equal(gotLate, wantLate) {
		t.Errorf("late rows %v, want %v", slices.Sorted(maps.Keys(gotLate)), slices.Sorted(maps.Keys(wantLate)))
	}
}
