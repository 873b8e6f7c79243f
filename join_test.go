package meshflow_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
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
	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/actors/natsio"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
	"github.com/meshflow/meshflow/persistence"
)

var (
	joinLeft = arrow.NewSchema([]arrow.Field{
		{Name: "k", Type: arrow.BinaryTypes.String},
		{Name: "ts", Type: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}},
		{Name: "lv", Type: arrow.PrimitiveTypes.Int64},
	}, nil)
	joinRight = arrow.NewSchema([]arrow.Field{
		{Name: "k", Type: arrow.BinaryTypes.String},
		{Name: "ts", Type: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}},
		{Name: "rv", Type: arrow.PrimitiveTypes.Int64},
	}, nil)
)

type joinRow struct {
	key   string
	ts, v int64
	// behind: far behind the rows around it, so late whenever the join's
	// watermark (the least of both inputs') has passed it on arrival.
	behind bool
}

// lineSink is a transactional sink (parallelism 1): the lines line makes
// of its rows are staged in its Store at each checkpoint and committed to
// out when it completes (or at restore, for what the restored checkpoint
// staged). While fail is positive, a completion fails (and counts down).
type lineSink struct {
	line func(rec arrow.RecordBatch, i int) string
	out  interface{ commit(lines []string) }
	fail *atomic.Int64
	// complete, when set, replaces fail: a completion fails with its
	// error, and is told of the completions that commit.
	complete func(id uint64, committed bool) error
	st       persistence.Store
	buf      []string
	on       bool
}

// lineCollector counts the lines committed.
type lineCollector struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *lineCollector) commit(lines []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range lines {
		c.n[l]++
	}
}

func (s *lineSink) Open(ctx context.Context, oc meshflow.OperatorContext) error {
	s.st, s.on = oc.State(), oc.Checkpointing()
	if id := oc.RestoredCheckpoint(); id != 0 {
		return s.commit(ctx, id)
	}
	return nil
}

func (s *lineSink) Close(context.Context) error { return nil }

func (s *lineSink) Process(_ context.Context, in arrow.RecordBatch, _ meshflow.Emitter) error {
	var lines []string
	for i := range int(in.NumRows()) {
		lines = append(lines, s.line(in, i))
	}
	if !s.on {
		s.out.commit(lines)
		return nil
	}
	s.buf = append(s.buf, lines...)
	return nil
}

func (s *lineSink) PrepareCheckpoint(ctx context.Context, id uint64) error {
	var b persistence.Batch
	b.Put(fmt.Appendf(nil, "stage/%020d", id), []byte(strings.Join(s.buf, "\n")))
	s.buf = s.buf[:0]
	return s.st.Apply(ctx, &b)
}

func (s *lineSink) CheckpointComplete(ctx context.Context, id uint64) error {
	if s.complete != nil {
		if err := s.complete(id, false); err != nil {
			return err
		}
		if err := s.commit(ctx, id); err != nil {
			return err
		}
		return s.complete(id, true)
	}
	if s.fail != nil && s.fail.Load() > 0 {
		s.fail.Add(-1)
		return errors.New("commit refused (test)")
	}
	return s.commit(ctx, id)
}

func (s *lineSink) commit(ctx context.Context, upTo uint64) error {
	var del persistence.Batch
	err := s.st.Scan(ctx, []byte("stage/"), func(k, v []byte) error {
		id, err := strconv.ParseUint(strings.TrimPrefix(string(k), "stage/"), 10, 64)
		if err != nil || id > upTo {
			return err
		}
		if len(v) > 0 {
			s.out.commit(strings.Split(string(v), "\n"))
		}
		del.Delete(k)
		return nil
	})
	if err != nil || del.Len() == 0 {
		return err
	}
	return s.st.Apply(ctx, &del)
}

// colValue is the string of column name at row i.
func colValue(rec arrow.RecordBatch, name string, i int) string {
	idx := rec.Schema().FieldIndices(name)
	if len(idx) != 1 {
		panic(fmt.Sprintf("no column %q in %s", name, rec.Schema()))
	}
	c := rec.Column(idx[0])
	if ts, ok := c.(*array.Timestamp); ok {
		return strconv.FormatInt(int64(ts.Value(i)), 10)
	}
	return c.ValueStr(i)
}

// TestJoins runs each join kind in a job: two sources of shuffled,
// out-of-order rows over many keys (some rows far behind, late when the
// watermark has passed them), hash-partitioned over two join instances,
// event-time watermarks from the sources. The committed pairs equal a
// brute-force nested loop over the rows that were not late, each pair
// once; every late row is on the late-rows subject once, with its reason,
// and only rows far behind are late. The recoveries cases fail the job
// three times: it recovers from its checkpoints with the same result.
func TestJoins(t *testing.T) {
	const ret, lower, upper = 80, -50, 100
	tumbling := window{size: 100, slide: 100}
	sliding := window{size: 100, slide: 40}
	for _, tc := range []struct {
		name  string
		build func(l, r *meshflow.Stream) *meshflow.Stream
		// match says whether rows at times lt and rt join, and in which
		// windows (one 0 when the join has no windows).
		match func(lt, rt int64) []int64
		// late: can rows be late at all.
		late bool
	}{
		{"regular", func(l, r *meshflow.Stream) *meshflow.Stream {
			return meshflow.Join("j", l, r, meshflow.On("k", "k"), meshflow.Parallelism(2))
		}, func(lt, rt int64) []int64 { return []int64{0} }, false},
		{"regular-retention", func(l, r *meshflow.Stream) *meshflow.Stream {
			return meshflow.Join("j", l, r, meshflow.On("k", "k").Times("ts", "ts").Retention(ret*time.Millisecond).LateRowsTo("late.rows"), meshflow.Parallelism(2))
		}, func(lt, rt int64) []int64 {
			if lt-rt <= ret && rt-lt <= ret {
				return []int64{0}
			}
			return nil
		}, true},
		{"interval", func(l, r *meshflow.Stream) *meshflow.Stream {
			return meshflow.IntervalJoin("j", l, r, meshflow.On("k", "k").Times("ts", "ts").LateRowsTo("late.rows"),
				lower*time.Millisecond, upper*time.Millisecond, meshflow.Parallelism(2))
		}, func(lt, rt int64) []int64 {
			if rt >= lt+lower && rt <= lt+upper {
				return []int64{0}
			}
			return nil
		}, true},
		{"window-tumbling", func(l, r *meshflow.Stream) *meshflow.Stream {
			return meshflow.WindowJoin("j", l, r, meshflow.On("k", "k"),
				meshflow.TumblingWindows(100*time.Millisecond, "ts").LateRowsTo("late.rows"), meshflow.Parallelism(2))
		}, tumbling.common, true},
		{"window-sliding", func(l, r *meshflow.Stream) *meshflow.Stream {
			return meshflow.WindowJoin("j", l, r, meshflow.On("k", "k").LateRowsTo("late.rows"),
				meshflow.SlidingWindows(100*time.Millisecond, 40*time.Millisecond, "ts"), meshflow.Parallelism(2))
		}, sliding.common, true},
	} {
		for _, rec := range []bool{false, true} {
			name := tc.name
			if rec {
				name += "/recoveries"
			}
			t.Run(name, func(t *testing.T) { testJoin(t, tc.build, tc.match, tc.late, rec) })
		}
	}
}

type window struct{ size, slide int64 }

// starts lists the windows of a time.
func (w window) starts(ts int64) []int64 {
	var s []int64
	for x := ts - mod(ts, w.slide); x > ts-w.size; x -= w.slide {
		s = append(s, x)
	}
	return s
}

func (w window) common(lt, rt int64) []int64 {
	var c []int64
	rs := w.starts(rt)
	for _, s := range w.starts(lt) {
		if slices.Contains(rs, s) {
			c = append(c, s)
		}
	}
	return c
}

func joinRows(r *rand.Rand, batches, perBatch, keys int, v *int64) [][]joinRow {
	const base = int64(1_700_000_000_000)
	var rows [][]joinRow
	for b := range batches {
		var batch []joinRow
		for range perBatch {
			ts := base + int64(b)*40 + int64(r.IntN(120)) - 60 // never behind the watermark (ooo 150)
			behind := false
			if b >= 20 && r.IntN(25) == 0 {
				ts -= 2000
				behind = true
			}
			batch = append(batch, joinRow{key: "k" + strconv.Itoa(r.IntN(keys)), ts: ts, v: *v, behind: behind})
			*v++
		}
		rows = append(rows, batch)
	}
	return rows
}

func joinBatches(mem memory.Allocator, schema *arrow.Schema, rows [][]joinRow) []arrow.RecordBatch {
	recs := make([]arrow.RecordBatch, len(rows))
	for i, batch := range rows {
		b := array.NewRecordBuilder(mem, schema)
		for _, row := range batch {
			b.Field(0).(*array.StringBuilder).Append(row.key)
			b.Field(1).(*array.TimestampBuilder).Append(arrow.Timestamp(row.ts))
			b.Field(2).(*array.Int64Builder).Append(row.v)
		}
		recs[i] = b.NewRecordBatch()
		b.Release()
	}
	return recs
}

func testJoin(t *testing.T, build func(l, r *meshflow.Stream) *meshflow.Stream, match func(lt, rt int64) []int64, lateOK, recoveries bool) {
	r := rand.New(rand.NewPCG(testSeed(t), 3))
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	js := natstest.JetStream(t, nc)
	ctx := testutil.Context(t, time.Minute)

	const batches, perBatch, keys, ooo = 40, 25, 30, 150
	var v int64
	lrows, rrows := joinRows(r, batches, perBatch, keys, &v), joinRows(r, batches, perBatch, keys, &v)
	lrecs, rrecs := joinBatches(mem, joinLeft, lrows), joinBatches(mem, joinRight, rrows)
	defer func() {
		for _, rec := range append(lrecs, rrecs...) {
			rec.Release()
		}
	}()

	out := &lineCollector{n: map[string]int{}}
	var lsrc, rsrc meshflow.Source = meshflow.FromBatches(lrecs...), meshflow.FromBatches(rrecs...)
	opts := []meshflow.RunOption{meshflow.WithNATS(nc), meshflow.WithAllocator(mem), meshflow.WithState(testStore(t)),
		meshflow.WithLogger(testutil.TestLogger(t))}
	var failures atomic.Int64
	if recoveries {
		g := newGate()
		lsrc, rsrc = gated(joinLeft, lrecs, g), gated(joinRight, rrecs, g)
		failures.Store(3)
		// Checkpoints every 25 ms: a row is buffered across several.
		opts = ckptOptions(t, nc, mem, testStore(t), meshflow.WithCheckpoints(meshflow.CheckpointConfig{
			Interval: 25 * time.Millisecond,
			Recovery: meshflow.RecoveryPolicy{MaxRecoveries: 100, Window: time.Minute, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond},
		}))
		go func() {
			for i := range batches {
				g.release(i + 1)
				select {
				case <-time.After(15 * time.Millisecond):
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	p := meshflow.NewPipeline("joins")
	l := p.Source("left", lsrc, meshflow.EventTime("ts", ooo*time.Millisecond))
	rs := p.Source("right", rsrc, meshflow.EventTime("ts", ooo*time.Millisecond))
	j := build(l, rs)
	windowed := j.Schema() != nil && len(j.Schema().FieldIndices("window_start")) == 1
	line := func(rec arrow.RecordBatch, i int) string {
		s := colValue(rec, "left_k", i) + "|" + colValue(rec, "lv", i) + "|" + colValue(rec, "right_k", i) + "|" + colValue(rec, "rv", i)
		if windowed {
			s += "@" + colValue(rec, "window_start", i)
		}
		return s
	}
	j.To("out", meshflow.ToOperator(func() meshflow.Operator { return &lineSink{line: line, out: out, fail: &failures} }))
	if err := meshflow.Run(ctx, p, opts...); err != nil {
		t.Fatal(err)
	}
	if recoveries && failures.Load() > 0 {
		t.Fatalf("the job ended before the sink failed %d more times", failures.Load())
	}

	// The late rows, each once, with their reason.
	gotLate := map[int64]bool{}
	if lateOK {
		gotLate = lateRows(ctx, t, js, "late.rows", func(m map[string]any) int64 {
			if v, ok := m["lv"]; ok {
				return int64(v.(float64))
			}
			return int64(m["rv"].(float64))
		})
	}
	var behind int
	for _, rows := range [][][]joinRow{lrows, rrows} {
		for _, b := range rows {
			for _, row := range b {
				if row.behind {
					behind++
				} else if gotLate[row.v] {
					t.Errorf("row v=%d t=%d is late, though never behind the watermark", row.v, row.ts)
				}
			}
		}
	}
	if lateOK && len(gotLate) == 0 {
		t.Errorf("no late row out of %d far behind", behind)
	}

	// The reference: every pair of rows not late, with equal keys, that
	// match.
	want := map[string]int{}
	for _, lb := range lrows {
		for _, lr := range lb {
			for _, rb := range rrows {
				for _, rr := range rb {
					if lr.key != rr.key || gotLate[lr.v] || gotLate[rr.v] {
						continue
					}
					for _, s := range match(lr.ts, rr.ts) {
						k := fmt.Sprintf("%s|%d|%s|%d", lr.key, lr.v, rr.key, rr.v)
						if windowed {
							k += "@" + strconv.FormatInt(s, 10)
						}
						want[k]++
					}
				}
			}
		}
	}
	if !maps.Equal(out.n, want) {
		var missing, extra []string
		for k, n := range want {
			if out.n[k] != n {
				missing = append(missing, fmt.Sprintf("%s (%d, want %d)", k, out.n[k], n))
			}
		}
		for k := range out.n {
			if want[k] == 0 {
				extra = append(extra, k)
			}
		}
		slices.Sort(missing)
		slices.Sort(extra)
		t.Fatalf("%d pairs, want %d: wrong count %d %.20v, not in the reference %d %.20v", len(out.n), len(want), len(missing), missing, len(extra), extra)
	}
	t.Logf("%d pairs, %d late rows of %d far behind", len(want), len(gotLate), behind)
}

// lateRows reads the late-rows subject: the id of each row (by id), with
// the checks that each is there once, of class late, with a reason.
func lateRows(ctx context.Context, t *testing.T, js jetstream.JetStream, subject string, id func(map[string]any) int64) map[int64]bool {
	t.Helper()
	got := map[int64]bool{}
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
	for range info.CachedInfo().State.Msgs {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var row map[string]any
		if err := json.Unmarshal(m.Data(), &row); err != nil {
			t.Fatalf("late row %q: %v", m.Data(), err)
		}
		v := id(row)
		if got[v] {
			t.Errorf("late row %d published twice", v)
		}
		got[v] = true
		if c := m.Headers().Get(natsio.HeaderErrorClass); c != meshflow.ClassLate {
			t.Errorf("late row %d: class %q", v, c)
		}
		if !strings.HasPrefix(m.Headers().Get(natsio.HeaderError), "late: ") {
			t.Errorf("late row %d: reason %q", v, m.Headers().Get(natsio.HeaderError))
		}
	}
	return got
}

// TestJoinValidate: what keeps a join from running is reported by
// Validate, naming the operator; a valid join's schema is the left
// columns then the right ones, clashing names prefixed.
func TestJoinValidate(t *testing.T) {
	other := arrow.NewSchema([]arrow.Field{
		{Name: "k", Type: arrow.PrimitiveTypes.Int64},
		{Name: "window_start", Type: arrow.PrimitiveTypes.Int64},
		{Name: "gone", Type: arrow.FixedWidthTypes.Boolean},
	}, nil)
	tumbling := meshflow.TumblingWindows(time.Second, "ts")
	for _, tc := range []struct {
		name  string
		build func(l, r, o *meshflow.Stream) *meshflow.Stream
		want  string
	}{
		{"no left key", func(l, r, _ *meshflow.Stream) *meshflow.Stream {
			return meshflow.Join("j", l, r, meshflow.On("nope", "k"))
		}, `key column "nope" is not in its input`},
		{"no right key", func(l, r, _ *meshflow.Stream) *meshflow.Stream {
			return meshflow.Join("j", l, r, meshflow.On("k", "nope"))
		}, `key column "nope" is not in its input`},
		{"key types differ", func(l, _, o *meshflow.Stream) *meshflow.Stream {
			return meshflow.Join("j", l, o, meshflow.On("k", "k"))
		}, "want the same type"},
		{"second key types differ", func(l, r, _ *meshflow.Stream) *meshflow.Stream {
			return meshflow.Join("j", l, r, meshflow.On("k", "k").And("lv", "k"))
		}, "key 1: left int64, right utf8: want the same type"},
		{"unsupported key type", func(l, r, _ *meshflow.Stream) *meshflow.Stream {
			return meshflow.Join("j", l, r, meshflow.On("ts", "ts"))
		}, "not supported (int64, string)"},
		{"interval without times", func(l, r, _ *meshflow.Stream) *meshflow.Stream {
			return meshflow.IntervalJoin("j", l, r, meshflow.On("k", "k"), 0, time.Second)
		}, "needs the time columns"},
		{"no time column", func(l, r, _ *meshflow.Stream) *meshflow.Stream {
			return meshflow.IntervalJoin("j", l, r, meshflow.On("k", "k").Times("ts", "when"), 0, time.Second)
		}, `no right time column "when"`},
		{"empty interval", func(l, r, _ *meshflow.Stream) *meshflow.Stream {
			return meshflow.IntervalJoin("j", l, r, meshflow.On("k", "k").Times("ts", "ts"), time.Second, 0)
		}, "is empty"},
		{"retention without times", func(l, r, _ *meshflow.Stream) *meshflow.Stream {
			return meshflow.Join("j", l, r, meshflow.On("k", "k").Retention(time.Second))
		}, "needs the time columns"},
		{"retention of an interval join", func(l, r, _ *meshflow.Stream) *meshflow.Stream {
			return meshflow.IntervalJoin("j", l, r, meshflow.On("k", "k").Times("ts", "ts").Retention(time.Second), 0, time.Second)
		}, "Retention is an option of a regular join"},
		{"clashing prefixes", func(l, r, _ *meshflow.Stream) *meshflow.Stream {
			return meshflow.Join("j", l, r, meshflow.On("k", "k").Prefixes("x_", "x_"))
		}, `output field "x_k" twice`},
		{"window bounds clash", func(_, _, o *meshflow.Stream) *meshflow.Stream {
			right := o.Map("t", meshflow.Set("t", meshflow.Col("window_start"))).Project("p", "k", "t")
			return meshflow.WindowJoin("j", o.Filter("a", meshflow.Col("gone")), right,
				meshflow.On("k", "k").Times("window_start", "t"), meshflow.TumblingWindows(time.Second, "window_start"))
		}, "clashes with the window bounds"},
		{"window lateness", func(l, r, _ *meshflow.Stream) *meshflow.Stream {
			return meshflow.WindowJoin("j", l, r, meshflow.On("k", "k"), tumbling.AllowedLateness(time.Second))
		}, "no allowed lateness"},
		{"bad window size", func(l, r, _ *meshflow.Stream) *meshflow.Stream {
			return meshflow.WindowJoin("j", l, r, meshflow.On("k", "k"), meshflow.TumblingWindows(time.Microsecond, "ts"))
		}, "want positive whole milliseconds"},
		{"self join", func(l, _, _ *meshflow.Stream) *meshflow.Stream {
			return meshflow.Join("j", l, l, meshflow.On("k", "k"))
		}, "with itself is not supported"},
		{"outer regular join", func(l, r, _ *meshflow.Stream) *meshflow.Stream {
			return meshflow.Join("j", l, r, meshflow.On("k", "k").LeftOuter())
		}, "options of a lookup join"},
		{"delete column not boolean", func(l, r, _ *meshflow.Stream) *meshflow.Stream {
			return meshflow.LookupJoin("j", l, r, meshflow.On("k", "k").DeleteWhen("rv"))
		}, "want a boolean column"},
		{"no delete column", func(l, r, _ *meshflow.Stream) *meshflow.Stream {
			return meshflow.LookupJoin("j", l, r, meshflow.On("k", "k").DeleteWhen("gone"))
		}, `no delete column "gone"`},
		{"unknown input schema", func(l, r, _ *meshflow.Stream) *meshflow.Stream {
			return meshflow.Join("j", l.Apply("f", func(_ context.Context, _ memory.Allocator, in arrow.RecordBatch) (arrow.RecordBatch, error) {
				in.Retain()
				return in, nil
			}), r, meshflow.On("k", "k"))
		}, "needs its inputs' schemas"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := meshflow.NewPipeline("joins")
			l := p.Source("l", meshflow.FromJSON(joinLeft))
			r := p.Source("r", meshflow.FromJSON(joinRight))
			o := p.Source("o", meshflow.FromJSON(other))
			j := tc.build(l, r, o)
			j.To("out", meshflow.ToOperator(func() meshflow.Operator { return &lineSink{} }))
			for name, s := range map[string]*meshflow.Stream{"l": l, "r": r, "o": o} { // every output needs a consumer
				s.To("drop-"+name, meshflow.ToOperator(func() meshflow.Operator { return &lineSink{} }))
			}
			err := p.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `"j"`) && !strings.Contains(err.Error(), "key column") {
				t.Fatalf("Validate: %v, want an error with %q", err, tc.want)
			}
		})
	}

	// The schema of a valid join.
	p := meshflow.NewPipeline("joins")
	j := meshflow.IntervalJoin("j", p.Source("l", meshflow.FromJSON(joinLeft)), p.Source("r", meshflow.FromJSON(joinRight)),
		meshflow.On("k", "k").Times("ts", "ts").Prefixes("", "r_"), 0, time.Second, meshflow.Parallelism(3))
	j.To("out", meshflow.ToOperator(func() meshflow.Operator { return &lineSink{} }))
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	ts := &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}
	if got, want := fmt.Sprint(j.Schema()), fmt.Sprint(arrow.NewSchema([]arrow.Field{
		{Name: "left_k", Type: arrow.BinaryTypes.String},
		{Name: "left_ts", Type: ts},
		{Name: "lv", Type: arrow.PrimitiveTypes.Int64},
		{Name: "r_k", Type: arrow.BinaryTypes.String},
		{Name: "r_ts", Type: ts},
		{Name: "rv", Type: arrow.PrimitiveTypes.Int64},
	}, nil)); got != want {
		t.Fatalf("schema\n%s\nwant\n%s", got, want)
	}
}

var (
	lookupTable = arrow.NewSchema([]arrow.Field{
		{Name: "k", Type: arrow.BinaryTypes.String},
		{Name: "tv", Type: arrow.PrimitiveTypes.Int64},
		{Name: "gone", Type: arrow.FixedWidthTypes.Boolean},
	}, nil)
	lookupProbe = arrow.NewSchema([]arrow.Field{
		{Name: "k", Type: arrow.BinaryTypes.String},
		{Name: "pv", Type: arrow.PrimitiveTypes.Int64},
	}, nil)
)

// phaser releases the batches of its sources phase by phase: the next
// phase only once a checkpoint that holds every batch released so far
// (each source's position at it is the number released) was committed,
// so the join has applied all of them — whatever recoveries happen.
type phaser struct {
	mu        sync.Mutex
	changed   chan struct{}
	released  [2]int
	done      bool
	positions map[uint64][2]int // checkpoint -> each source's next batch
	covered   bool              // a commit held all released batches
	fail      int               // covering completions still to fail
}

func (ph *phaser) release(table, probe int, done bool) {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	ph.released, ph.done, ph.covered = [2]int{table, probe}, done, false
	close(ph.changed)
	ph.changed = make(chan struct{})
}

func (ph *phaser) prepared(src int, id uint64, next int) {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	p := ph.positions[id]
	p[src] = next + 1 // 0: not prepared
	ph.positions[id] = p
}

// complete fails the first completions of a covering checkpoint while
// fail is positive, and notes the covering commits.
func (ph *phaser) complete(id uint64, committed bool) error {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	p := ph.positions[id]
	if p[0]-1 != ph.released[0] || p[1]-1 != ph.released[1] {
		return nil
	}
	if !committed && ph.fail > 0 {
		ph.fail--
		return errors.New("commit refused (test)")
	}
	if committed {
		ph.covered = true
	}
	return nil
}

func (ph *phaser) isCovered() error {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	if !ph.covered {
		return fmt.Errorf("no commit holds the %v batches released", ph.released)
	}
	return nil
}

// phasedSource reads the batches its phaser released, and ends after the
// last once the phaser is done. Its checkpoints record the next batch.
type phasedSource struct {
	src  int
	recs []arrow.RecordBatch
	ph   *phaser
	st   persistence.Store
	next int
}

func (s *phasedSource) Open(ctx context.Context, oc meshflow.OperatorContext) error {
	s.st = oc.State()
	if oc.RestoredCheckpoint() == 0 {
		return nil
	}
	v, err := s.st.Get(ctx, []byte("next"))
	if errors.Is(err, persistence.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(string(v))
	s.next = n
	return err
}

func (s *phasedSource) Read(ctx context.Context) (arrow.RecordBatch, error) {
	for {
		s.ph.mu.Lock()
		released, done, ch := s.ph.released[s.src], s.ph.done, s.ph.changed
		s.ph.mu.Unlock()
		switch {
		case s.next < released:
			r := s.recs[s.next]
			s.next++
			r.Retain()
			return r, nil
		case done && s.next >= len(s.recs):
			return nil, io.EOF
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (s *phasedSource) PrepareCheckpoint(ctx context.Context, id uint64) error {
	var b persistence.Batch
	b.Put([]byte("next"), []byte(strconv.Itoa(s.next)))
	if err := s.st.Apply(ctx, &b); err != nil {
		return err
	}
	s.ph.prepared(s.src, id, s.next)
	return nil
}

func (s *phasedSource) Close(context.Context) error { return nil }

// TestLookupJoin runs LookupJoin in a job, over two instances: table
// phases (upserts, later ones replacing earlier ones, tombstones) and
// probe phases alternate, each probe phase released once the table
// phases before it are applied. Each probe row is paired with the latest
// table row of its key (inner: only when there is one; left outer: else
// with nulls), as a plain-Go map says; the recoveries cases fail the job
// three times, and the table restored from the checkpoints gives the same
// result.
func TestLookupJoin(t *testing.T) {
	for _, tc := range []struct {
		name              string
		outer, recoveries bool
	}{
		{"inner", false, false}, {"outer", true, false},
		{"inner/recoveries", false, true}, {"outer/recoveries", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) { testLookupJoin(t, tc.outer, tc.recoveries) })
	}
}

func testLookupJoin(t *testing.T, outer, recoveries bool) {
	r := rand.New(rand.NewPCG(testSeed(t), 4))
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	ctx := testutil.Context(t, time.Minute)

	const phases, perPhase, perBatch, keys = 3, 3, 40, 50
	var tableRecs, probeRecs []arrow.RecordBatch
	defer func() {
		for _, rec := range append(tableRecs, probeRecs...) {
			rec.Release()
		}
	}()
	table := map[string]int64{} // the reference table
	want := map[string]int{}
	var v int64
	for range phases {
		for range perPhase {
			b := array.NewRecordBuilder(mem, lookupTable)
			for range perBatch {
				k := "k" + strconv.Itoa(r.IntN(keys))
				gone := r.IntN(5) == 0
				b.Field(0).(*array.StringBuilder).Append(k)
				b.Field(1).(*array.Int64Builder).Append(v)
				b.Field(2).(*array.BooleanBuilder).Append(gone)
				if gone {
					delete(table, k)
				} else {
					table[k] = v
				}
				v++
			}
			tableRecs = append(tableRecs, b.NewRecordBatch())
			b.Release()
		}
		for range perPhase {
			b := array.NewRecordBuilder(mem, lookupProbe)
			for range perBatch {
				k := "k" + strconv.Itoa(r.IntN(keys+10)) // some keys never in the table
				b.Field(0).(*array.StringBuilder).Append(k)
				b.Field(1).(*array.Int64Builder).Append(v)
				if tv, ok := table[k]; ok {
					want[fmt.Sprintf("%s|%d|%d", k, v, tv)]++
				} else if outer {
					want[fmt.Sprintf("%s|%d|(null)", k, v)]++
				}
				v++
			}
			probeRecs = append(probeRecs, b.NewRecordBatch())
			b.Release()
		}
	}

	ph := &phaser{changed: make(chan struct{}), positions: map[uint64][2]int{}}
	if recoveries {
		ph.fail = 3
	}
	out := &lineCollector{n: map[string]int{}}
	p := meshflow.NewPipeline("lookup")
	tab := p.Source("table", meshflow.FromSource(lookupTable, func() actors.Source { return &phasedSource{src: 0, recs: tableRecs, ph: ph} }))
	probe := p.Source("probe", meshflow.FromSource(lookupProbe, func() actors.Source { return &phasedSource{src: 1, recs: probeRecs, ph: ph} }))
	on := meshflow.On("k", "k").DeleteWhen("gone").Prefixes("probe_", "table_")
	if outer {
		on = on.LeftOuter()
	}
	line := func(rec arrow.RecordBatch, i int) string {
		return colValue(rec, "probe_k", i) + "|" + colValue(rec, "pv", i) + "|" + colValue(rec, "tv", i)
	}
	meshflow.LookupJoin("j", probe, tab, on, meshflow.Parallelism(2)).
		To("out", meshflow.ToOperator(func() meshflow.Operator { return &lineSink{line: line, out: out, complete: ph.complete} }))

	done := make(chan error, 1)
	go func() { done <- meshflow.Run(ctx, p, ckptOptions(t, nc, mem, testStore(t))...) }()
	for i := range phases {
		ph.release((i+1)*perPhase, i*perPhase, false)
		testutil.CheckFor(t, 30*time.Second, 5*time.Millisecond, ph.isCovered)
		ph.release((i+1)*perPhase, (i+1)*perPhase, i == phases-1)
		if i < phases-1 {
			testutil.CheckFor(t, 30*time.Second, 5*time.Millisecond, ph.isCovered)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ph.fail > 0 {
		t.Fatalf("the job ended before the sink failed %d more times", ph.fail)
	}
	if !maps.Equal(out.n, want) {
		var diff []string
		for k, n := range want {
			if out.n[k] != n {
				diff = append(diff, fmt.Sprintf("%s: %d, want %d", k, out.n[k], n))
			}
		}
		for k, n := range out.n {
			if want[k] == 0 {
				diff = append(diff, fmt.Sprintf("%s: %d, want 0", k, n))
			}
		}
		slices.Sort(diff)
		t.Fatalf("%d rows, want %d: %d differ: %.20v", len(out.n), len(want), len(diff), diff)
	}
	t.Logf("%d rows", len(want))
}
