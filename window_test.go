package meshflow_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	late  bool
}

// winCollector holds the window rows committed: the last one of each
// window (a window updated by rows within the allowed lateness is
// emitted again).
type winCollector struct {
	mu   sync.Mutex
	last map[string]string // key@start -> aggregates
	n    int
}

func (c *winCollector) commit(lines []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range lines {
		name, aggs, _ := strings.Cut(l, "|")
		c.last[name] = aggs
		c.n++
	}
}

// winTxSink is a transactional sink of window rows (a lineSink): each
// row is the line "key@start|agg=value ...", with "key@start-end" for
// sessions (ends) and "@start" for a window without key columns
// (unkeyed).
func winTxSink(out *winCollector, ends, unkeyed bool, fail *atomic.Int64) *lineSink {
	k := 1 // the key columns
	if unkeyed {
		k = 0
	}
	line := func(in arrow.RecordBatch, i int) string {
		key := ""
		if k > 0 {
			key = in.Column(0).(*array.String).Value(i)
		}
		l := fmt.Sprintf("%s@%d", key, int64(in.Column(k).(*array.Timestamp).Value(i)))
		if ends {
			l += fmt.Sprintf("-%d", int64(in.Column(k+1).(*array.Timestamp).Value(i)))
		}
		l += "|"
		for c := k + 2; c < int(in.NumCols()); c++ {
			v := "null"
			if in.Column(c).IsValid(i) {
				v = in.Column(c).ValueStr(i)
			}
			l += in.ColumnName(c) + "=" + v + " "
		}
		return l
	}
	s := &lineSink{line: line, fail: fail}
	if out != nil {
		s.out = out
	}
	return s
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
		t.Run(tc.name, func(t *testing.T) { testWindowAggregates(t, tc.w(), tc.size, tc.starts, false) })
		t.Run(tc.name+"/recoveries", func(t *testing.T) { testWindowAggregates(t, tc.w(), tc.size, tc.starts, true) })
	}
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

func testWindowAggregates(t *testing.T, w meshflow.Windows, size int64, starts func(int64) []int64, recoveries bool) {
	r := rand.New(rand.NewPCG(testSeed(t), 2))
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	js := natstest.JetStream(t, nc)
	ctx := testutil.Context(t, time.Minute)

	const (
		batches, perBatch = 40, 50
		ooo               = 150 // the source's max out-of-orderness, ms
		lateness          = 500
		base              = int64(1_700_000_000_000)
	)
	var rows [][]winRow
	v := int64(0)
	for b := range batches {
		var batch []winRow
		for range perBatch {
			// A row is on time (jittered about the batch's time), behind
			// (its window may have fired: within the allowed lateness,
			// it updates it), or — from the 20th batch on — far behind:
			// late, whenever exactly the watermark reaches the window
			// (it may lag the batches it follows).
			ts := base + int64(b)*40 + int64(r.IntN(200)) - 100
			late := false
			switch r.IntN(25) {
			case 0:
				if b >= 20 {
					ts -= 2000
					late = true
				}
			case 1, 2:
				ts -= 200
			}
			batch = append(batch, winRow{key: "k" + strconv.Itoa(r.IntN(12)), ts: ts, v: v, late: late})
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

	// The reference: every row but the late ones in each of its windows.
	type acc struct {
		n, total, max int64
	}
	want := map[string]*acc{}
	wantLate := map[int64]bool{}
	for _, batch := range rows {
		for _, row := range batch {
			if row.late {
				wantLate[row.v] = true
				continue
			}
			for _, s := range starts(row.ts) {
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
		}
	}
	if len(wantLate) == 0 {
		t.Fatal("the input has no late rows: the test would show nothing of them")
	}

	out := &winCollector{last: map[string]string{}}
	var src meshflow.Source = meshflow.FromBatches(recs...)
	opts := []meshflow.RunOption{meshflow.WithNATS(nc), meshflow.WithAllocator(mem), meshflow.WithState(testStore(t)),
		meshflow.WithLogger(testutil.TestLogger(t))}
	var failures atomic.Int64
	if recoveries {
		// Batches come one by one, with checkpoints every 100 ms among
		// them; the sink's commit fails three times, each failing the
		// job, which recovers from its last checkpoint.
		g := newGate()
		src = gated(winSchema, recs, g)
		failures.Store(3)
		opts = ckptOptions(t, nc, mem, testStore(t))
		go func() {
			for i := range len(recs) {
				g.release(i + 1)
				select {
				case <-time.After(15 * time.Millisecond):
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	p := meshflow.NewPipeline("windows")
	p.Source("events", src, meshflow.EventTime("ts", ooo*time.Millisecond)).
		KeyBy("key").
		Window("agg", w.AllowedLateness(lateness*time.Millisecond).LateRowsTo("late.rows"),
			[]meshflow.Aggregate{meshflow.Count().As("n"), meshflow.Sum("v").As("total"), meshflow.Max("v")},
			meshflow.Parallelism(2)).
		To("out", meshflow.ToOperator(func() meshflow.Operator { return winTxSink(out, false, false, &failures) }))
	if err := meshflow.Run(ctx, p, opts...); err != nil {
		t.Fatal(err)
	}
	if recoveries && failures.Load() > 0 {
		t.Fatalf("the job ended before the sink failed %d more times", failures.Load())
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

// TestWindowValidate: what keeps a window from running is reported by
// Validate, naming the operator.
func TestWindowValidate(t *testing.T) {
	tumbling := meshflow.TumblingWindows(time.Second, "ts")
	count := []meshflow.Aggregate{meshflow.Count()}
	for _, tc := range []struct {
		name  string
		build func(p *meshflow.Pipeline) *meshflow.Stream
		want  string
	}{
		{"no time column", func(p *meshflow.Pipeline) *meshflow.Stream {
			return p.Source("s", meshflow.FromJSON(winSchema)).KeyBy("key").Window("w", meshflow.TumblingWindows(time.Second, "when"), count)
		}, `time column: no column "when"`},
		{"no key column", func(p *meshflow.Pipeline) *meshflow.Stream {
			return p.Source("s", meshflow.FromJSON(winSchema)).KeyBy("nope").Window("w", tumbling, count)
		}, `key column "nope" is not in its input`},
		{"no aggregate", func(p *meshflow.Pipeline) *meshflow.Stream {
			return p.Source("s", meshflow.FromJSON(winSchema)).KeyBy("key").Window("w", tumbling, nil)
		}, "at least one aggregate"},
		{"unsupported aggregate", func(p *meshflow.Pipeline) *meshflow.Stream {
			return p.Source("s", meshflow.FromJSON(winSchema)).KeyBy("key").Window("w", tumbling, []meshflow.Aggregate{meshflow.Sum("key")})
		}, "sum of utf8 not supported"},
		{"bad size", func(p *meshflow.Pipeline) *meshflow.Stream {
			return p.Source("s", meshflow.FromJSON(winSchema)).KeyBy("key").Window("w", meshflow.TumblingWindows(time.Microsecond, "ts"), count)
		}, "want positive whole milliseconds"},
		{"bad gap", func(p *meshflow.Pipeline) *meshflow.Stream {
			return p.Source("s", meshflow.FromJSON(winSchema)).KeyBy("key").Window("w", meshflow.SessionWindows(0, "ts"), count)
		}, "session gap 0s: want positive whole milliseconds"},
		{"user aggregate refuses its columns", func(p *meshflow.Pipeline) *meshflow.Stream {
			return p.Source("s", meshflow.FromJSON(winSchema)).KeyBy("key").Window("w", tumbling, []meshflow.Aggregate{WeightedAvg("wa", "key", "v")})
		}, "want two int64 columns"},
		{"user aggregate without its column", func(p *meshflow.Pipeline) *meshflow.Stream {
			return p.Source("s", meshflow.FromJSON(winSchema)).KeyBy("key").Window("w", tumbling, []meshflow.Aggregate{WeightedAvg("wa", "v", "weight")})
		}, `no column "weight"`},
		{"negative lateness", func(p *meshflow.Pipeline) *meshflow.Stream {
			return p.Source("s", meshflow.FromJSON(winSchema)).KeyBy("key").Window("w", tumbling.AllowedLateness(-time.Second), count)
		}, "must not be negative"},
		{"parallel without key", func(p *meshflow.Pipeline) *meshflow.Stream {
			return p.Source("s", meshflow.FromJSON(winSchema)).Window("w", tumbling, count, meshflow.Parallelism(2))
		}, "without KeyBy runs with parallelism 1"},
		{"unknown input schema", func(p *meshflow.Pipeline) *meshflow.Stream {
			return p.Source("s", meshflow.FromJSON(winSchema)).
				Apply("f", func(_ context.Context, _ memory.Allocator, in arrow.RecordBatch) (arrow.RecordBatch, error) {
					in.Retain()
					return in, nil
				}).
				KeyBy("key").Window("w", tumbling, count)
		}, "needs its input's schema"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := meshflow.NewPipeline("windows")
			tc.build(p).To("out", meshflow.ToOperator(func() meshflow.Operator { return winTxSink(nil, false, false, nil) }))
			err := p.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `"w"`) && !strings.Contains(err.Error(), "key column") {
				t.Fatalf("Validate: %v, want an error with %q", err, tc.want)
			}
		})
	}
	// The schema of a valid window (sessions, a user-defined aggregate):
	// keys, window bounds, aggregates.
	p := meshflow.NewPipeline("windows")
	w := p.Source("s", meshflow.FromJSON(winSchema)).KeyBy("key").
		Window("w", meshflow.SessionWindows(time.Second, "ts"), []meshflow.Aggregate{meshflow.Count(), meshflow.Avg("v").As("mean"),
			meshflow.CountDistinct("key"), WeightedAvg("wavg", "v", "v")})
	w.To("out", meshflow.ToOperator(func() meshflow.Operator { return winTxSink(nil, false, false, nil) }))
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(w.Schema()), fmt.Sprint(arrow.NewSchema([]arrow.Field{
		{Name: "key", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "window_start", Type: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}},
		{Name: "window_end", Type: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}},
		{Name: "count", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "mean", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
		{Name: "count_distinct_key", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "wavg", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
	}, nil)); got != want {
		t.Fatalf("schema\n%s\nwant\n%s", got, want)
	}
}
