package meshflow_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
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

var randSchema = arrow.NewSchema([]arrow.Field{
	{Name: "key", Type: arrow.BinaryTypes.String},
	{Name: "ts", Type: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}},
	{Name: "id", Type: arrow.PrimitiveTypes.Int64},
	{Name: "v", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "d", Type: arrow.PrimitiveTypes.Int64},
	{Name: "s", Type: arrow.BinaryTypes.String},
	{Name: "w", Type: arrow.PrimitiveTypes.Int64},
}, nil)

type randRow struct {
	key      string
	ts, id   int64
	v        *int64
	d, w     int64
	s        string
	late     bool
	fromIdle bool // from the source that goes idle
}

// randAggs: every built-in aggregate and a user-defined one.
func randAggs() []meshflow.Aggregate {
	return []meshflow.Aggregate{
		meshflow.Count().As("n"), meshflow.CountOf("v").As("nv"), meshflow.Sum("v").As("sum"),
		meshflow.Min("v").As("min"), meshflow.Max("v").As("max"), meshflow.Avg("v").As("avg"),
		meshflow.CountDistinct("d").As("dd"), meshflow.First("s").As("first"), meshflow.Last("v").As("last"),
		WeightedAvg("wavg", "v", "w"),
	}
}

// randRef renders randAggs over rows, one row at a time.
func randRef(rows []randRow) string {
	var nv, sum, num, den int64
	var mn, mx, last *int64
	var first *randRow
	var lastTS int64
	dd := map[int64]bool{}
	for i := range rows {
		r := &rows[i]
		dd[r.d] = true
		if first == nil || r.ts < first.ts {
			first = r
		}
		if r.v == nil {
			continue
		}
		v := *r.v
		nv++
		sum += v
		if mn == nil || v < *mn {
			mn = r.v
		}
		if mx == nil || v > *mx {
			mx = r.v
		}
		if last == nil || r.ts > lastTS {
			last, lastTS = r.v, r.ts
		}
		if r.w > 0 {
			num += v * r.w
			den += r.w
		}
	}
	i64 := func(p *int64) string {
		if p == nil {
			return "null"
		}
		return strconv.FormatInt(*p, 10)
	}
	sumS, avgS, wavgS := "null", "null", "null"
	if nv > 0 {
		sumS = strconv.FormatInt(sum, 10)
		avgS = strconv.FormatFloat(float64(sum)/float64(nv), 'g', -1, 64)
	}
	if den > 0 {
		wavgS = strconv.FormatFloat(float64(num)/float64(den), 'g', -1, 64)
	}
	return fmt.Sprintf("n=%d nv=%d sum=%s min=%s max=%s avg=%s dd=%d first=%s last=%s wavg=%s ",
		len(rows), nv, sumS, i64(mn), i64(mx), avgS, len(dd), first.s, i64(last), wavgS)
}

// TestWindowRandom runs Window in a job over two sources unioned:
// shuffled, out-of-order rows over many keys (distinct times), some
// behind (within the allowed lateness: updated results), some beyond it
// (late); the second source goes idle for a while (IdleTimeout: windows
// fire meanwhile) and rejoins. For tumbling, sliding and session windows
// and every aggregate (a user-defined one too), the last result of each
// window equals a brute-force reference (sessions: sessions a merge or an
// extension replaced lie within a final one), and every late row is on
// the late subject once, with its reason. session/recoveries: the same
// with checkpoints and three failures the job recovers from.
func TestWindowRandom(t *testing.T) {
	const size, slide, gap = 100, 40, 20
	tumbling := func(ts int64) []int64 { return []int64{ts - mod(ts, size)} }
	sliding := func(ts int64) []int64 {
		var s []int64
		for w := ts - mod(ts, slide); w > ts-size; w -= slide {
			s = append(s, w)
		}
		return s
	}
	for _, tc := range []struct {
		name       string
		w          meshflow.Windows
		starts     func(ts int64) []int64 // nil: sessions
		recoveries bool
	}{
		{"tumbling", meshflow.TumblingWindows(size*time.Millisecond, "ts"), tumbling, false},
		{"sliding", meshflow.SlidingWindows(size*time.Millisecond, slide*time.Millisecond, "ts"), sliding, false},
		{"session", meshflow.SessionWindows(gap*time.Millisecond, "ts"), nil, false},
		{"session/recoveries", meshflow.SessionWindows(gap*time.Millisecond, "ts"), nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testWindowRandom(t, tc.w, size, gap, tc.starts, tc.recoveries)
		})
	}
}

func testWindowRandom(t *testing.T, w meshflow.Windows, size, gap int64, starts func(int64) []int64, recoveries bool) {
	r := rand.New(rand.NewPCG(testSeed(t), 7))
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	js := natstest.JetStream(t, nc)
	ctx := testutil.Context(t, time.Minute)

	const (
		steps, perStep = 80, 25
		idleFrom       = 8  // the second source sends nothing from this step
		idleTo         = 24 // to this one
		lateFrom       = 60 // late rows from this step
		ooo            = 150
		lateness       = 500
		keys           = 50
		base           = int64(1_700_000_000_000)
		// No row but late ones falls in the holes [hole*j+hole-holeW,
		// hole*j+hole): a late row in the middle of one can be in no
		// session held.
		hole, holeW = 400, 80
	)
	inHole := func(ts int64) bool { return mod(ts-base, hole) >= hole-holeW }
	used := map[string]bool{} // key@ts: distinct times per key
	var all []randRow
	// batches[0] is the busy source's, batches[1] the one that goes idle.
	var batches [2][][]randRow
	id := int64(0)
	for step := range steps {
		for src := range 2 {
			if src == 1 && (step >= idleFrom && step < idleTo || step == steps-1) {
				continue // idle; and it ends before the busy one
			}
			var batch []randRow
			for range perStep {
				row := randRow{key: "k" + strconv.Itoa(r.IntN(keys)), id: id, d: int64(r.IntN(8)), s: "s" + strconv.Itoa(r.IntN(100)),
					w: int64(r.IntN(4)), fromIdle: src == 1}
				id++
				if r.IntN(8) != 0 {
					v := int64(r.IntN(41)) - 20
					row.v = &v
				}
				for {
					// On time, jittered about the step's time; or behind
					// (within the allowed lateness: an update); or, late
					// in the run, late: in the middle of a hole far
					// behind.
					row.ts = base + int64(step)*40 + int64(r.IntN(200)) - 100
					row.late = false
					switch k := r.IntN(25); {
					case k == 0 && step >= lateFrom:
						j := (row.ts - base - 2000) / hole
						row.ts = base + j*hole + hole - holeW + gap + int64(r.IntN(int(holeW-2*gap)))
						row.late = true
					case k == 1 || k == 2:
						row.ts -= 200
					}
					if !used[row.key+"@"+strconv.FormatInt(row.ts, 10)] && (row.late || !inHole(row.ts)) {
						break
					}
				}
				used[row.key+"@"+strconv.FormatInt(row.ts, 10)] = true
				batch = append(batch, row)
				all = append(all, row)
			}
			batches[src] = append(batches[src], batch)
		}
	}
	var recs [2][]arrow.RecordBatch
	for src, bs := range batches {
		for _, batch := range bs {
			b := array.NewRecordBuilder(mem, randSchema)
			for _, row := range batch {
				b.Field(0).(*array.StringBuilder).Append(row.key)
				b.Field(1).(*array.TimestampBuilder).Append(arrow.Timestamp(row.ts))
				b.Field(2).(*array.Int64Builder).Append(row.id)
				if row.v == nil {
					b.Field(3).AppendNull()
				} else {
					b.Field(3).(*array.Int64Builder).Append(*row.v)
				}
				b.Field(4).(*array.Int64Builder).Append(row.d)
				b.Field(5).(*array.StringBuilder).Append(row.s)
				b.Field(6).(*array.Int64Builder).Append(row.w)
			}
			recs[src] = append(recs[src], b.NewRecordBatch())
			b.Release()
		}
	}
	defer func() {
		for _, rs := range recs {
			for _, rec := range rs {
				rec.Release()
			}
		}
	}()

	// The reference, over every row but the late ones.
	byWindow := map[string][]randRow{}
	wantLate := map[int64]bool{}
	byKey := map[string][]randRow{}
	for _, row := range all {
		if row.late {
			wantLate[row.id] = true
			continue
		}
		if starts != nil {
			for _, s := range starts(row.ts) {
				name := fmt.Sprintf("%s@%d", row.key, s)
				byWindow[name] = append(byWindow[name], row)
			}
			continue
		}
		byKey[row.key] = append(byKey[row.key], row)
	}
	type span struct{ lo, hi int64 }
	sessions := map[string][]span{}
	for k, rows := range byKey {
		slices.SortFunc(rows, func(a, b randRow) int { return int(a.ts - b.ts) })
		for i := 0; i < len(rows); {
			j := i + 1
			for j < len(rows) && rows[j].ts-rows[j-1].ts < gap {
				j++
			}
			lo, hi := rows[i].ts, rows[j-1].ts+gap
			byWindow[fmt.Sprintf("%s@%d-%d", k, lo, hi)] = rows[i:j]
			sessions[k] = append(sessions[k], span{lo, hi})
			i = j
		}
	}
	want := map[string]string{}
	for name, rows := range byWindow {
		want[name] = randRef(rows)
	}
	if len(wantLate) == 0 {
		t.Fatal("the input has no late rows: the test would show nothing of them")
	}

	out := &winCollector{last: map[string]string{}}
	var failures atomic.Int64
	opts := []meshflow.RunOption{meshflow.WithNATS(nc), meshflow.WithAllocator(mem), meshflow.WithState(testStore(t)),
		meshflow.WithLogger(testutil.TestLogger(t))}
	if recoveries {
		failures.Store(3)
		opts = ckptOptions(t, nc, mem, testStore(t))
	}
	ga, gb := newGate(), newGate()
	p := meshflow.NewPipeline("windows")
	a := p.Source("busy", gated(randSchema, recs[0], ga), meshflow.EventTime("ts", ooo*time.Millisecond))
	b := p.Source("idle", gated(randSchema, recs[1], gb), meshflow.EventTime("ts", ooo*time.Millisecond),
		meshflow.IdleTimeout(50*time.Millisecond))
	meshflow.Union("both", a, b).
		KeyBy("key").
		Window("agg", w.AllowedLateness(lateness*time.Millisecond).LateRowsTo("late.rows"), randAggs(), meshflow.Parallelism(2)).
		To("out", meshflow.ToOperator(func() meshflow.Operator {
			return &winTxSink{out: out, fail: &failures, ends: starts == nil}
		}))
	wait := runAsync(t, ctx, p, opts...)
	nb := 0
	for step := range steps {
		if step == idleTo {
			// The idle source held its watermark at its last row (step
			// idleFrom-1, minus the out-of-orderness): a window ending
			// after that fires only if the watermark went on without it.
			held := base + int64(idleFrom)*40 + 100
			testutil.CheckFor(t, 30*time.Second, 5*time.Millisecond, func() error {
				out.mu.Lock()
				defer out.mu.Unlock()
				for name := range out.last {
					_, bounds, _ := strings.Cut(name, "@")
					var start, end int64
					fmt.Sscanf(bounds, "%d-%d", &start, &end)
					if starts != nil {
						end = start + size
					}
					if end > held {
						return nil
					}
				}
				return fmt.Errorf("no window past %d emitted while the second source is idle", held)
			})
		}
		if step < idleFrom || step >= idleTo && step < steps-1 {
			nb++
			gb.release(nb)
		}
		ga.release(step + 1)
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if recoveries && failures.Load() > 0 {
		t.Fatalf("the job ended before the sink failed %d more times", failures.Load())
	}

	superseded := 0
	for name, w := range want {
		if got := out.last[name]; got != w {
			t.Errorf("%s: got  %q\nwant %q", name, got, w)
		}
	}
	for name := range out.last {
		if _, ok := want[name]; ok {
			continue
		}
		k, bounds, _ := strings.Cut(name, "@")
		var s span
		if n, _ := fmt.Sscanf(bounds, "%d-%d", &s.lo, &s.hi); starts != nil || n != 2 ||
			!slices.ContainsFunc(sessions[k], func(f span) bool { return f.lo <= s.lo && s.hi <= f.hi }) {
			t.Errorf("%s emitted, not in the reference", name)
			continue
		}
		superseded++
	}
	t.Logf("%d windows, %d rows emitted (updates included), %d superseded sessions, %d late rows",
		len(want), out.n, superseded, len(wantLate))

	stream, err := js.StreamNameBySubject(ctx, "late.rows")
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	gotLate := map[int64]bool{}
	for range info.CachedInfo().State.Msgs {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var row struct {
			ID int64 `json:"id"`
		}
		if err := json.Unmarshal(m.Data(), &row); err != nil {
			t.Fatalf("late row %q: %v", m.Data(), err)
		}
		if gotLate[row.ID] {
			t.Errorf("late row id=%d published twice", row.ID)
		}
		gotLate[row.ID] = true
		if c := m.Headers().Get(natsio.HeaderErrorClass); c != meshflow.ClassLate {
			t.Errorf("late row id=%d: class %q", row.ID, c)
		}
		reason := m.Headers().Get(natsio.HeaderError)
		if !strings.Contains(reason, "late: event time") || !strings.Contains(reason, "allowed lateness 500ms") ||
			starts == nil && !strings.Contains(reason, "its session (gap 20ms) would be closed") {
			t.Errorf("late row id=%d: reason %q", row.ID, reason)
		}
	}
	if !maps.Equal(gotLate, wantLate) {
		t.Errorf("late rows %v, want %v", slices.Sorted(maps.Keys(gotLate)), slices.Sorted(maps.Keys(wantLate)))
	}
}
