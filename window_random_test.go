package meshflow_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math"
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
	batch    int  // the index of its batch among its source's
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
// fire meanwhile) and rejoins. Which rows are late depends on when the
// second source is judged idle (processing time), so the test checks
// what holds for every interleaving: each row on the late subject is
// there once, with its reason, and late by the rule for the watermark
// the reason names (one the operator could have had); the first
// source's on-time rows are never late; and for tumbling, sliding and
// session windows and every aggregate (a user-defined one too), the
// last result of each window is a brute-force reference's over the rows
// not late (sliding: less the second source's rows that came after the
// window closed; sessions: the sessions not within another emitted one
// hold every such row once). session/recoveries: the same with
// checkpoints and three failures the job recovers from.
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
				row.batch = len(batches[src])
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

	// The late rows by design: far behind, in a hole of their key.
	wantLate := map[int64]bool{}
	maxTS := int64(math.MinInt64) // the greatest time of any row
	for _, row := range all {
		if row.late {
			wantLate[row.id] = true
		}
		maxTS = max(maxTS, row.ts)
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
			return winTxSink(out, starts == nil, false, &failures)
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

	// The late rows published: each once, of class late, with its reason
	// and the watermark it names.
	gotLate := readLateRows(t, ctx, js, "late.rows")
	byID := map[int64]randRow{}
	for _, row := range all {
		byID[row.id] = row
	}
	// Which rows are late depends on when the watermark reaches the
	// operator relative to them: the second source's idleness is judged
	// by processing time (IdleTimeout), so under load it may be declared
	// idle while it still has rows to send, or fall behind after a
	// recovery, and the busy source's watermark then passes rows it has
	// not sent yet (or, once the busy source ended, the end of event
	// time does). What is guaranteed:
	//   - a row is late only by the rule, for a watermark the operator
	//     could have had: none past the greatest time less the
	//     out-of-orderness, but the end of event time;
	//   - the busy source has no idle timeout and is never left out, so
	//     no watermark passes its own before it ends: its on-time rows
	//     (at most 300ms behind its own) are never late;
	//   - a row late by design (at least 1.1s behind the front when it
	//     comes) is late unless the other source holds the watermark
	//     back;
	//   - every row is either on the late subject or counted in the
	//     results, once.
	unplanned, plannedLate := 0, 0
	for id, wm := range gotLate {
		row, ok := byID[id]
		if !ok {
			t.Errorf("late row id=%d: no such row", id)
			continue
		}
		// A source's watermark, or the end of event time once the busy
		// source ended (the idle one then ended, or was left out as idle).
		if wm > maxTS-ooo && wm != math.MaxInt64 {
			t.Errorf("late row id=%d: watermark %d, past any source's last %d", id, wm, maxTS-ooo)
		}
		lateBy := row.ts + gap + lateness // sessions: its own session closed
		if starts != nil {
			lateBy = slices.Max(starts(row.ts)) + size + lateness // every window of it closed
		}
		if lateBy > wm {
			t.Errorf("late row id=%d at %d: not late at the watermark %d", id, row.ts, wm)
		}
		switch {
		case wantLate[id]:
			plannedLate++
		case !row.fromIdle:
			t.Errorf("late row id=%d at %d: an on-time row of the busy source", id, row.ts)
		default:
			unplanned++
		}
	}
	if plannedLate == 0 {
		t.Errorf("none of the %d rows late by design is on the late subject", len(wantLate))
	}
	t.Logf("%d late rows (%d of %d by design, %d of the idle source that fell behind)",
		len(gotLate), plannedLate, len(wantLate), unplanned)
	if starts == nil {
		checkSessions(t, out.last, all, gotLate, gap)
		return
	}

	// Tumbling and sliding: each window holds its rows not late. A row
	// of the idle source that came after one of its windows closed (a
	// sliding window: another of its windows still open) is in the open
	// ones only: the rows a window misses that way are those of the idle
	// source's batches from some batch on (the window closed between two
	// of its batches).
	byWindow := map[string][]randRow{}
	for _, row := range all {
		if _, l := gotLate[row.id]; l {
			continue
		}
		for _, s := range starts(row.ts) {
			name := fmt.Sprintf("%s@%d", row.key, s)
			byWindow[name] = append(byWindow[name], row)
		}
	}
	missed := 0
	for name, rows := range byWindow {
		got := out.last[name]
		if got == randRef(rows) {
			continue
		}
		_, startS, _ := strings.Cut(name, "@")
		start, _ := strconv.ParseInt(startS, 10, 64)
		ok := false
		for from := range len(batches[1]) {
			var kept []randRow
			for _, row := range rows {
				if !row.fromIdle || row.batch < from || slices.Max(starts(row.ts)) == start {
					kept = append(kept, row)
				}
			}
			if len(kept) < len(rows) && got == randRef(kept) {
				ok = true
				break
			}
		}
		if !ok {
			t.Errorf("%s: got  %q\nwant %q", name, got, randRef(rows))
			continue
		}
		missed++
	}
	for name := range out.last {
		if _, ok := byWindow[name]; !ok {
			t.Errorf("%s emitted, not in the reference", name)
		}
	}
	t.Logf("%d windows, %d rows emitted (updates included), %d missing rows of the idle source that came after they closed",
		len(byWindow), out.n, missed)
}

// readLateRows reads the late rows published on subject: by id, the
// watermark (ms) their reason names. Each must come once, of class late,
// with a reason naming the allowed lateness (and, for sessions, the gap).
func readLateRows(t *testing.T, ctx context.Context, js jetstream.JetStream, subject string) map[int64]int64 {
	t.Helper()
	stream, err := js.StreamNameBySubject(ctx, subject)
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
	got := map[int64]int64{}
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
		if _, dup := got[row.ID]; dup {
			t.Errorf("late row id=%d published twice", row.ID)
		}
		if c := m.Headers().Get(natsio.HeaderErrorClass); c != meshflow.ClassLate {
			t.Errorf("late row id=%d: class %q", row.ID, c)
		}
		reason := m.Headers().Get(natsio.HeaderError)
		_, wmS, _ := strings.Cut(reason, "behind the watermark ")
		wmS, what, _ := strings.Cut(wmS, ": ")
		// The end of event time (every source ended or idle) prints
		// beyond what time.Parse reads.
		wm, err := time.Parse(time.RFC3339Nano, wmS)
		ms := wm.UnixMilli()
		if wmS == time.UnixMilli(math.MaxInt64).UTC().Format(time.RFC3339Nano) {
			ms, err = math.MaxInt64, nil
		}
		if err != nil || !strings.Contains(reason, "late: event time") || !strings.Contains(reason, "allowed lateness 500ms") ||
			what != "every window holding it is closed" && !strings.Contains(what, "its session (gap 20ms) would be closed") {
			t.Errorf("late row id=%d: reason %q", row.ID, reason)
		}
		got[row.ID] = ms
	}
	return got
}

// checkSessions checks the sessions emitted (the last emission of each,
// named key@start-end) against the rows not late, for any order the
// rows and the watermark came in. The sessions of a key not within
// another emitted one (the others were replaced by a merge or an
// extension) hold its rows, each in one: a session [start, end) holds
// the rows from start to end-gap, the first at start, the last at
// end-gap, less than gap apart, and its aggregates are theirs. Two such
// sessions are at least gap apart, unless the later one began with a row
// of the idle source that came after the earlier one closed (it is then
// not merged into it: a closed session is forgotten).
func checkSessions(t *testing.T, last map[string]string, all []randRow, late map[int64]int64, gap int64) {
	t.Helper()
	type sess struct {
		lo, hi int64
		aggs   string
	}
	byKey := map[string][]sess{}
	for name, aggs := range last {
		k, bounds, _ := strings.Cut(name, "@")
		var s sess
		if n, _ := fmt.Sscanf(bounds, "%d-%d", &s.lo, &s.hi); n != 2 {
			t.Errorf("%s: not a session", name)
			continue
		}
		s.aggs = aggs
		byKey[k] = append(byKey[k], s)
	}
	rowsOf := map[string][]randRow{}
	for _, row := range all {
		if _, l := late[row.id]; !l {
			rowsOf[row.key] = append(rowsOf[row.key], row)
		}
	}
	superseded, apart, n := 0, 0, 0
	for k, rows := range rowsOf {
		slices.SortFunc(rows, func(a, b randRow) int { return cmp.Compare(a.ts, b.ts) })
		var final []sess
		for _, s := range byKey[k] {
			if slices.ContainsFunc(byKey[k], func(o sess) bool { return o != s && o.lo <= s.lo && s.hi <= o.hi }) {
				superseded++
				continue
			}
			final = append(final, s)
		}
		slices.SortFunc(final, func(a, b sess) int { return cmp.Compare(a.lo, b.lo) })
		i := 0 // the next row
		for j, s := range final {
			name := fmt.Sprintf("%s@%d-%d", k, s.lo, s.hi)
			if i < len(rows) && rows[i].ts < s.lo {
				t.Errorf("%s: row id=%d at %d of %s in no session", name, rows[i].id, rows[i].ts, k)
			}
			for i < len(rows) && rows[i].ts < s.lo {
				i++
			}
			from := i
			for i < len(rows) && rows[i].ts <= s.hi-gap {
				if i > from && rows[i].ts-rows[i-1].ts >= gap {
					t.Errorf("%s: rows at %d and %d are a gap apart", name, rows[i-1].ts, rows[i].ts)
				}
				i++
			}
			in := rows[from:i]
			if len(in) == 0 || in[0].ts != s.lo || in[len(in)-1].ts != s.hi-gap {
				t.Errorf("%s: not the span of its %d rows", name, len(in))
				continue
			}
			if want := randRef(in); s.aggs != want {
				t.Errorf("%s: got  %q\nwant %q", name, s.aggs, want)
			}
			if j > 0 && s.lo-(final[j-1].hi-gap) < gap {
				if !in[0].fromIdle {
					t.Errorf("%s: less than the gap after %s@%d-%d", name, k, final[j-1].lo, final[j-1].hi)
				}
				apart++
			}
			n++
		}
		for ; i < len(rows); i++ {
			t.Errorf("row id=%d at %d of %s in no session", rows[i].id, rows[i].ts, k)
		}
	}
	for k := range byKey {
		if _, ok := rowsOf[k]; !ok {
			t.Errorf("sessions of %s emitted: it has no rows", k)
		}
	}
	t.Logf("%d sessions, %d superseded, %d begun after the session before them closed", n, superseded, apart)
}
