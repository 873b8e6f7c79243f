package window

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// squares is a user-defined aggregate for the tests: the sum of the
// squares of the non-null values of an int64 column (null when none).
type squares struct {
	sum  []int64
	seen []bool
}

func newSquares(in []arrow.DataType) (UDAF, error) {
	if len(in) != 1 || in[0].ID() != arrow.INT64 {
		return nil, fmt.Errorf("squares of %v: want one int64 column", in)
	}
	return &squares{}, nil
}

func (a *squares) DataType() arrow.DataType { return arrow.PrimitiveTypes.Int64 }
func (a *squares) Grow(n int) {
	a.sum = append(a.sum, make([]int64, n-len(a.sum))...)
	a.seen = append(a.seen, make([]bool, n-len(a.seen))...)
}
func (a *squares) Reset(g int32) { a.sum[g], a.seen[g] = 0, false }
func (a *squares) Update(cols []arrow.Array, rows, groups []int32) {
	col := cols[0].(*array.Int64)
	vals := col.Int64Values()
	for p, g := range groups {
		r := rows[p]
		if col.IsNull(int(r)) {
			continue
		}
		a.sum[g] += vals[r] * vals[r]
		a.seen[g] = true
	}
}
func (a *squares) Merge(dst, src int32) {
	a.sum[dst] += a.sum[src]
	a.seen[dst] = a.seen[dst] || a.seen[src]
}
func (a *squares) Result(mem memory.Allocator, groups []int32) arrow.Array {
	b := array.NewInt64Builder(mem)
	defer b.Release()
	for _, g := range groups {
		if a.seen[g] {
			b.Append(a.sum[g])
		} else {
			b.AppendNull()
		}
	}
	return b.NewArray()
}
func (a *squares) AppendState(dst []byte, g int32) []byte {
	dst = appendBool(dst, a.seen[g])
	return binary.AppendVarint(dst, a.sum[g])
}
func (a *squares) ReadState(src []byte, g int32) ([]byte, error) {
	seen, src, err := readBool(src)
	if err != nil {
		return nil, err
	}
	v, n := binary.Varint(src)
	if n <= 0 {
		return nil, errTruncated
	}
	a.seen[g], a.sum[g] = seen, v
	return src[n:], nil
}

// sessionAggs are every built-in aggregate and a user-defined one.
var sessionAggs = []Agg{
	{Kind: Count, Column: -1, Name: "n"}, {Kind: Count, Column: 2, Name: "nv"}, {Kind: Sum, Column: 2, Name: "sum"},
	{Kind: Min, Column: 2, Name: "min"}, {Kind: Max, Column: 2, Name: "max"}, {Kind: Avg, Column: 2, Name: "avg"},
	{Kind: CountDistinct, Column: 2, Name: "dv"}, {Kind: CountDistinct, Column: 0, Name: "dk"},
	{Kind: First, Column: 2, Name: "first"}, {Kind: Last, Column: 2, Name: "last"}, {Kind: Sum, Column: 3, Name: "fsum"},
	{Kind: Min, Column: 3, Name: "fmin"}, {Kind: Max, Column: 3, Name: "fmax"}, {Kind: First, Column: 0, Name: "kfirst"},
	{Kind: User, Column: -1, Columns: []int{2}, Name: "sq", User: newSquares},
}

// refAggs renders sessionAggs over rows g, row by row.
func refAggs(g []testRow) string {
	var sq int64
	seen := false
	for _, r := range g {
		if r.v != nil {
			sq += *r.v * *r.v
			seen = true
		}
	}
	s := "null"
	if seen {
		s = strconv.FormatInt(sq, 10)
	}
	return aggString(g) + "sq=" + s + " "
}

// refSessions is a brute-force model of session windows: per key, the
// sessions held as sets of rows, merged pairwise until none overlap.
type refSessions struct {
	gap, lateness int64
	held          map[string][][]testRow
	done          map[string]string // key@start-end -> aggregates
	late          map[int]bool      // by serial
}

func bounds(rows []testRow, gap int64) (int64, int64) {
	lo, hi := int64(math.MaxInt64), int64(math.MinInt64)
	for _, r := range rows {
		lo, hi = min(lo, *r.ts), max(hi, *r.ts)
	}
	return lo, hi + gap
}

func keyName(k *string) string {
	if k == nil {
		return "<null>"
	}
	return *k
}

// add takes a batch that came at watermark wm: a row is late when its
// own session [t, t+gap) plus the lateness is at or before wm and no
// session held (before the batch) overlaps it.
func (m *refSessions) add(batch []testRow, wm int64) {
	var in []testRow
	for _, r := range batch {
		if r.ts == nil {
			continue
		}
		if wm != math.MinInt64 && *r.ts+m.gap+m.lateness <= wm {
			held := false
			for _, s := range m.held[keyName(r.key)] {
				lo, hi := bounds(s, m.gap)
				held = held || lo < *r.ts+m.gap && *r.ts < hi
			}
			if !held {
				m.late[r.serial] = true
				continue
			}
		}
		in = append(in, r)
	}
	for _, r := range in {
		k := keyName(r.key)
		m.held[k] = append(m.held[k], []testRow{r})
		for merged := true; merged; {
			merged = false
			ss := m.held[k]
			for i := 0; i < len(ss) && !merged; i++ {
				for j := i + 1; j < len(ss) && !merged; j++ {
					a0, a1 := bounds(ss[i], m.gap)
					b0, b1 := bounds(ss[j], m.gap)
					if a0 < b1 && b0 < a1 {
						ss[i] = append(ss[i], ss[j]...)
						m.held[k] = slices.Delete(ss, j, j+1)
						merged = true
					}
				}
			}
		}
	}
}

// fire closes the sessions whose end plus the lateness is at or before wm.
func (m *refSessions) fire(wm int64) {
	for k, ss := range m.held {
		ss = slices.DeleteFunc(ss, func(s []testRow) bool {
			lo, hi := bounds(s, m.gap)
			if hi+m.lateness > wm && wm != math.MaxInt64 {
				return false
			}
			rows := slices.Clone(s)
			slices.SortFunc(rows, func(a, b testRow) int { return a.serial - b.serial })
			m.done[fmt.Sprintf("%s@%d-%d", k, lo, hi)] = refAggs(rows)
			return true
		})
		m.held[k] = ss
	}
}

// collectSessions renders fired sessions into fired (key@start-end ->
// aggregates), checking the watermark passed each one's end.
func collectSessions(t *testing.T, rec arrow.RecordBatch, wm int64, fired map[string]string) {
	t.Helper()
	for i := range int(rec.NumRows()) {
		var key *string
		if !rec.Column(0).IsNull(i) {
			k := rec.Column(0).(*array.String).Value(i)
			key = &k
		}
		start := int64(rec.Column(1).(*array.Timestamp).Value(i))
		end := int64(rec.Column(2).(*array.Timestamp).Value(i))
		name := fmt.Sprintf("%s@%d-%d", keyName(key), start, end)
		if end > wm {
			t.Errorf("%s fired at watermark %d before its end", name, wm)
		}
		var s string
		for c := 3; c < int(rec.NumCols()); c++ {
			v := "null"
			if !rec.Column(c).IsNull(i) {
				v = rec.Column(c).ValueStr(i)
			}
			s += rec.ColumnName(c) + "=" + v + " "
		}
		fired[name] = s
	}
}

// checkSessions compares the last result of every session emitted with
// the model's: each final session's last result equals the model's, and
// any other session emitted lies within a final session of its key (it
// was extended or merged into it: superseded).
func checkSessions(t *testing.T, fired, want map[string]string) {
	t.Helper()
	type span struct{ lo, hi int64 }
	final := map[string][]span{}
	for name, w := range want {
		if fired[name] != w {
			t.Errorf("%s: got  %s\nwant %s", name, fired[name], w)
		}
		k, b, _ := strings.Cut(name, "@")
		var s span
		fmt.Sscanf(b, "%d-%d", &s.lo, &s.hi)
		final[k] = append(final[k], s)
	}
	superseded := 0
	for name := range fired {
		if _, ok := want[name]; ok {
			continue
		}
		k, b, _ := strings.Cut(name, "@")
		var s span
		fmt.Sscanf(b, "%d-%d", &s.lo, &s.hi)
		if !slices.ContainsFunc(final[k], func(f span) bool { return f.lo <= s.lo && s.hi <= f.hi }) {
			t.Errorf("%s emitted: no such session, and within none", name)
		}
		superseded++
	}
	t.Logf("%d sessions, %d superseded ones emitted", len(want), superseded)
}

// TestSessionsRandom: shuffled, out-of-order rows over many keys (nulls
// included, distinct times) in random batches, fired at random
// watermarks, with and without lateness, checkpointed, crashed and
// restored at random, every aggregate and a user-defined one: every
// session's last result equals that of a brute-force model, superseded
// sessions lie within a final one, late rows are those of the model.
func TestSessionsRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 3))
	for _, gap := range []int64{1, 25, 120} {
		for _, lateness := range []int64{-1, 0, 150} {
			t.Run(fmt.Sprintf("gap=%d/lateness=%d", gap, lateness), func(t *testing.T) {
				testSessionsRandom(t, r, gap, lateness)
			})
		}
	}
}

func testSessionsRandom(t *testing.T, r *rand.Rand, gap, lateness int64) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	cfg := Config{Gap: gap, Schema: testSchema, Keys: []int{0}, MaxParallelism: testMaxP, Time: 1, Aggs: sessionAggs, AllowedLateness: max(lateness, 0)}
	tab, err := NewSessions(cfg)
	if err != nil {
		t.Fatal(err)
	}
	times := r.Perm(4000)
	var rows []testRow
	for i := range 2500 {
		row := testRow{}
		if r.IntN(50) != 0 {
			k := "k" + strconv.Itoa(r.IntN(30))
			row.key = &k
		}
		if r.IntN(100) != 0 {
			ts := int64(times[i]) - 100
			row.ts = &ts
		}
		if r.IntN(10) != 0 {
			v := int64(r.IntN(21)) - 10
			row.v = &v
		}
		if r.IntN(10) != 0 {
			f := float64(r.IntN(1000)) / 8
			row.f = &f
		}
		rows = append(rows, row)
	}
	slices.SortFunc(rows, func(a, b testRow) int { return int(tsOr(a, 0)/300 - tsOr(b, 0)/300) })
	for i := range rows {
		j := i + r.IntN(min(50, len(rows)-i))
		rows[i], rows[j] = rows[j], rows[i]
	}
	for i := range rows {
		rows[i].serial = i
	}

	// What the table was given, replayed into the model at the end:
	// batches (with the watermark they came at) and watermarks; a crash
	// cuts it back to the checkpoint restored.
	type step struct {
		batch []testRow
		wm    int64
		fire  bool
	}
	var log []step
	fired := map[string]string{}
	lateRows := map[int]bool{}
	wm := int64(math.MinInt64)
	type saved struct {
		store    map[string]string
		i, log   int
		wm       int64
		fired    map[string]string
		lateRows map[int]bool
	}
	store := map[string]string{}
	var last *saved
	crashes := 0
	fire := func() {
		out, err := tab.Fire(mem, wm)
		if err != nil {
			t.Fatal(err)
		}
		if out != nil {
			collectSessions(t, out, wm, fired)
			out.Release()
		}
	}
	for i := 0; i < len(rows); {
		switch {
		case r.IntN(5) == 0:
			err := tab.Checkpoint(func(k, v []byte) error {
				checkKeyGroup(t, mem, k, testSchema.Field(0).Type)
				store[string(k)] = string(v)
				return nil
			}, func(k []byte) error {
				delete(store, string(k))
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			last = &saved{store: maps.Clone(store), i: i, log: len(log), wm: wm, fired: maps.Clone(fired), lateRows: maps.Clone(lateRows)}
		case last != nil && crashes < 4 && r.IntN(12) == 0:
			crashes++
			if tab, err = NewSessions(cfg); err != nil {
				t.Fatal(err)
			}
			for k, v := range last.store {
				if err := tab.Restore([]byte(k), []byte(v)); err != nil {
					t.Fatal(err)
				}
			}
			store = maps.Clone(last.store)
			i, wm, log = last.i, last.wm, log[:last.log]
			fired, lateRows = maps.Clone(last.fired), maps.Clone(last.lateRows)
			if wm != math.MinInt64 {
				tab.SetWatermark(wm)
				fire()
			}
		}
		batch := rows[i:min(i+1+r.IntN(200), len(rows))]
		log = append(log, step{batch: batch, wm: wm})
		rec := buildBatch(mem, batch)
		if err := tab.Add(rec); err != nil {
			t.Fatal(err)
		}
		rec.Release()
		for _, row := range tab.Late() {
			lateRows[batch[row].serial] = true
		}
		i += len(batch)
		if r.IntN(3) == 0 || i == len(rows) {
			if i == len(rows) {
				wm = math.MaxInt64
			} else if lateness < 0 {
				low := int64(math.MaxInt64)
				for _, rest := range rows[i:] {
					low = min(low, tsOr(rest, low))
				}
				wm = max(wm, low-int64(r.IntN(100)))
			} else {
				wm = max(wm, tsOr(batch[len(batch)-1], 0)-int64(r.IntN(300)))
			}
			log = append(log, step{wm: wm, fire: true})
			fire()
		}
	}
	if tab.Len() != 0 {
		t.Fatalf("%d sessions left after the last watermark", tab.Len())
	}
	if len(tab.keyIdx)+len(tab.intIdx) != 0 {
		t.Fatalf("%d keys left after the last watermark", len(tab.keyIdx)+len(tab.intIdx))
	}
	m := &refSessions{gap: gap, lateness: max(lateness, 0), held: map[string][][]testRow{}, done: map[string]string{}, late: map[int]bool{}}
	for _, s := range log {
		if s.fire {
			m.fire(s.wm)
		} else {
			m.add(s.batch, s.wm)
		}
	}
	t.Logf("%d crashes, %d late rows", crashes, len(m.late))
	if lateness < 0 && len(m.late) > 0 {
		t.Errorf("%d late rows in order", len(m.late))
	}
	if !maps.Equal(lateRows, m.late) {
		t.Errorf("late rows %v, want %v", slices.Sorted(maps.Keys(lateRows)), slices.Sorted(maps.Keys(m.late)))
	}
	checkSessions(t, fired, m.done)
}

// TestSessionsMerge: small cases of sessions made, extended, bridged and
// closed, one batch at a time, with an int64 key (the fast key path).
func TestSessionsMerge(t *testing.T) {
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "k", Type: arrow.PrimitiveTypes.Int64},
		{Name: "ts", Type: arrow.PrimitiveTypes.Int64},
	}, nil)
	type step struct {
		keys, ts []int64 // a batch, or with fire a watermark
		fire     int64
	}
	add := func(keys, ts []int64) step { return step{keys: keys, ts: ts} }
	at := func(wm int64) step { return step{fire: wm} }
	for _, tc := range []struct {
		name     string
		lateness int64
		steps    []step
		want     string // "k@start-end:n" per row fired, in order
		late     int
	}{
		{"one session", 0, []step{add([]int64{1, 1, 1}, []int64{0, 5, 9}), at(19)}, "1@0-19:3", 0},
		{"gap splits", 0, []step{add([]int64{1, 1}, []int64{0, 10}), at(100)}, "1@0-10:1 1@10-20:1", 0},
		{"keys apart", 0, []step{add([]int64{1, 2}, []int64{0, 5}), at(100)}, "1@0-10:1 2@5-15:1", 0},
		{"bridge", 0, []step{add([]int64{1, 1}, []int64{0, 15}), add([]int64{1}, []int64{8}), at(100)}, "1@0-25:3", 0},
		{"extend earlier", 0, []step{add([]int64{1}, []int64{20}), add([]int64{1}, []int64{11}), at(100)}, "1@11-30:2", 0},
		{"fired then bridged within lateness", 50, []step{
			add([]int64{1, 1}, []int64{0, 15}), at(26), add([]int64{1}, []int64{8}), at(26), at(200)},
			"1@0-10:1 1@15-25:1 1@0-25:3", 0},
		{"late", 0, []step{add([]int64{1}, []int64{0}), at(30), add([]int64{1, 1}, []int64{5, 40}), at(100)},
			"1@0-10:1 1@40-50:1", 1},
		// 3+gap is past the watermark, but [0,19) is held: not late.
		{"late row in a held session", 0, []step{add([]int64{1, 1}, []int64{0, 9}), at(15), add([]int64{1}, []int64{3}), at(30)},
			"1@0-19:3", 0},
		{"fired, updated within lateness", 100, []step{add([]int64{1}, []int64{0}), at(30), add([]int64{1}, []int64{5}), at(31)},
			"1@0-10:1 1@0-15:2", 0},
		// 12+gap is not at the watermark 15: 12 is not late; but [0,15),
		// which it would extend, closed at 15 (no lateness) and is
		// forgotten: 12 begins a session of its own, overlapping it.
		{"after the session it would extend closed", 0, []step{add([]int64{1, 1}, []int64{0, 5}), at(15), add([]int64{1}, []int64{12}), at(100)},
			"1@0-15:2 1@12-22:1", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			tab, err := NewSessions(Config{Gap: 10, Schema: schema, Keys: []int{0}, MaxParallelism: testMaxP, Time: 1,
				Aggs: []Agg{{Kind: Count, Column: -1, Name: "n"}}, AllowedLateness: tc.lateness})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			late := 0
			for _, s := range tc.steps {
				if s.keys == nil {
					out, err := tab.Fire(mem, s.fire)
					if err != nil {
						t.Fatal(err)
					}
					if out != nil {
						for i := range int(out.NumRows()) {
							got = append(got, fmt.Sprintf("%d@%d-%d:%d", out.Column(0).(*array.Int64).Value(i),
								out.Column(1).(*array.Timestamp).Value(i), out.Column(2).(*array.Timestamp).Value(i),
								out.Column(3).(*array.Int64).Value(i)))
						}
						out.Release()
					}
					continue
				}
				b := array.NewRecordBuilder(mem, schema)
				b.Field(0).(*array.Int64Builder).AppendValues(s.keys, nil)
				b.Field(1).(*array.Int64Builder).AppendValues(s.ts, nil)
				rec := b.NewRecordBatch()
				b.Release()
				if err := tab.Add(rec); err != nil {
					t.Fatal(err)
				}
				rec.Release()
				late += len(tab.Late())
			}
			if g := strings.Join(got, " "); g != tc.want || late != tc.late {
				t.Fatalf("fired %q, %d late; want %q, %d late", g, late, tc.want, tc.late)
			}
		})
	}
}

// FuzzRestoreSessions: a session's bytes from a damaged store give an
// error, never a panic; a session restored from them encodes to bytes
// that read back to the same session.
func FuzzRestoreSessions(f *testing.F) {
	cfg := Config{Gap: 10, Schema: testSchema, Keys: []int{0}, MaxParallelism: testMaxP, Time: 1, Aggs: sessionAggs}
	mem := memory.NewGoAllocator()
	seedTab, err := NewSessions(cfg)
	if err != nil {
		f.Fatal(err)
	}
	k1, k2, ts, ts2, v, fl := "a", "b", int64(3), int64(9), int64(7), 2.5
	rec := buildBatch(mem, []testRow{{key: &k1, ts: &ts, v: &v, f: &fl}, {key: &k2, ts: &ts}, {key: &k1, ts: &ts2}})
	if err := seedTab.Add(rec); err != nil {
		f.Fatal(err)
	}
	rec.Release()
	if err := seedTab.Checkpoint(func(k, v []byte) error { f.Add(k, v); return nil }, func([]byte) error { return nil }); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, key, value []byte) {
		tab, err := NewSessions(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := tab.Restore(key, value); err != nil {
			if tab.Len() != 0 || len(tab.keyIdx) != 0 {
				t.Fatalf("a failed restore left %d sessions, %d keys", tab.Len(), len(tab.keyIdx))
			}
			return
		}
		var k, got []byte
		if err := tab.Checkpoint(func(kk, v []byte) error { k, got = kk, v; return nil }, func([]byte) error { return nil }); err != nil {
			t.Fatal(err)
		}
		// A restored session is not changed: Checkpoint writes nothing.
		if k != nil {
			t.Fatalf("a restored session written again: %x", k)
		}
		got = tab.encodeGroup(nil, 0)
		again, err := NewSessions(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := again.Restore(key, got); err != nil {
			t.Fatalf("session %x: its own encoding %x: %v", key, got, err)
		}
		if again := again.encodeGroup(nil, 0); string(again) != string(got) {
			t.Fatalf("session %x: encoded %x, read back and encoded %x", key, got, again)
		}
		// Emitting it gives an error or a row, never a panic.
		if out, err := tab.Fire(mem, math.MaxInt64); err == nil && out != nil {
			out.Release()
		}
	})
}
