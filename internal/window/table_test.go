package window

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/kernels"
	"github.com/meshflow/meshflow/internal/testutil"
)

func TestAssign(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec Spec
		ts   int64
		want []int64
	}{
		{"tumbling", Tumbling(10), 25, []int64{20}},
		{"tumbling start", Tumbling(10), 20, []int64{20}},
		{"tumbling negative", Tumbling(10), -1, []int64{-10}},
		{"tumbling offset", Spec{Size: 10, Slide: 10, Offset: 3}, 12, []int64{3}},
		{"sliding", Sliding(10, 5), 12, []int64{5, 10}},
		{"sliding edge", Sliding(10, 5), 10, []int64{5, 10}},
		{"sliding uneven", Sliding(10, 3), 10, []int64{3, 6, 9}},
		{"gap inside", Sliding(5, 10), 3, []int64{0}},
		{"gap outside", Sliding(5, 10), 7, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, starts, err := tc.spec.Assign([]int64{tc.ts}, nil, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(starts, tc.want) {
				t.Fatalf("windows of %d: %v, want %v", tc.ts, starts, tc.want)
			}
		})
	}
	if _, _, err := (Spec{}).Assign([]int64{1}, nil, nil, nil); err == nil {
		t.Fatal("a zero size assigned windows")
	}
}

var testSchema = arrow.NewSchema([]arrow.Field{
	{Name: "key", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "ts", Type: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}, Nullable: true},
	{Name: "v", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "f", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
}, nil)

type testRow struct {
	key    *string
	ts     *int64
	v      *int64
	f      *float64
	serial int
}

func seed(t testing.TB) uint64 { t.Helper(); return testutil.Seed(t) }

// testMaxP is the number of key groups of the tables of the tests.
const testMaxP = 7

// checkKeyGroup fails t unless the stored key, of a table keyed by one
// column of type dt, starts with the key group of its key:
// kernels.HashColumns over a one-row column of the key, modulo testMaxP.
func checkKeyGroup(t testing.TB, mem memory.Allocator, key []byte, dt arrow.DataType) {
	t.Helper()
	if len(key) < keyGroupLen+1+8 {
		t.Fatalf("stored key %x: too short", key)
	}
	enc, err := newKeyEncoder(dt)
	if err != nil {
		t.Fatal(err)
	}
	b := array.NewBuilder(mem, dt)
	defer b.Release()
	if rest, err := enc.appendValue(b, key[keyGroupLen:len(key)-8]); err != nil || len(rest) != 0 {
		t.Fatalf("stored key %x: %v, %d bytes left", key, err, len(rest))
	}
	col := b.NewArray()
	defer col.Release()
	h := make([]uint64, 1)
	if err := kernels.HashColumns([]arrow.Array{col}, h); err != nil {
		t.Fatal(err)
	}
	if got, want := int(binary.BigEndian.Uint16(key)), kernels.KeyGroup(h[0], testMaxP); got != want {
		t.Fatalf("stored key %x: key group %d, want %d (key %s)", key, got, want, col)
	}
}

// TestTableRandom: shuffled, out-of-order rows over many keys (nulls
// included) in random batches, fired at random watermarks (never past a
// row still to come), for tumbling,
// sliding and gapped windows and every aggregate (a user-defined one
// too): every fired row equals
// a brute-force reference, each (key, window) fires once, at the first
// watermark at or past its end.
func TestTableRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 1))
	aggs := []Agg{
		{Kind: Count, Column: -1, Name: "n"}, {Kind: Count, Column: 2, Name: "nv"}, {Kind: Sum, Column: 2, Name: "sum"}, {Kind: Min, Column: 2, Name: "min"}, {Kind: Max, Column: 2, Name: "max"},
		{Kind: Avg, Column: 2, Name: "avg"}, {Kind: CountDistinct, Column: 2, Name: "dv"}, {Kind: CountDistinct, Column: 0, Name: "dk"}, {Kind: First, Column: 2, Name: "first"},
		{Kind: Last, Column: 2, Name: "last"}, {Kind: Sum, Column: 3, Name: "fsum"}, {Kind: Min, Column: 3, Name: "fmin"}, {Kind: Max, Column: 3, Name: "fmax"}, {Kind: First, Column: 0, Name: "kfirst"},
		{Kind: User, Column: -1, Columns: []int{2}, Name: "sq", User: newSquares},
	}
	type tcase struct {
		spec     Spec
		lateness int64 // -1: in order (the watermark never passes a row to come)
		keyCol   int   // 0: the string column "key"; 2: the int64 column "v"
	}
	var cases []tcase
	for _, spec := range []Spec{Tumbling(100), Sliding(100, 30), Sliding(40, 100), {Size: 50, Slide: 50, Offset: 7}} {
		for _, k := range []int{0, 2} {
			cases = append(cases, tcase{spec, -1, k}, tcase{spec, 0, k}, tcase{spec, 150, k})
		}
	}
	for _, tc := range cases {
		spec := tc.spec
		// The key of a row, as the reference names its groups.
		keyOf := func(r testRow) *string { return r.key }
		if tc.keyCol == 2 {
			keyOf = func(r testRow) *string {
				if r.v == nil {
					return nil
				}
				k := strconv.FormatInt(*r.v, 10)
				return &k
			}
		}
		t.Run(fmt.Sprintf("%+v/lateness=%d/key=%s", spec, tc.lateness, testSchema.Field(tc.keyCol).Name), func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			tab, err := NewTable(Config{Spec: spec, Schema: testSchema, Keys: []int{tc.keyCol}, MaxParallelism: testMaxP, Time: 1, Aggs: aggs,
				AllowedLateness: max(tc.lateness, 0)})
			if err != nil {
				t.Fatal(err)
			}
			var rows []testRow
			for i := range 3000 {
				row := testRow{serial: i}
				if r.IntN(50) != 0 {
					k := "k" + strconv.Itoa(r.IntN(40))
					row.key = &k
				}
				if r.IntN(100) != 0 {
					ts := int64(r.IntN(2000)) - 100
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
			// Roughly ordered by time, shuffled locally: out of order.
			slices.SortFunc(rows, func(a, b testRow) int { return int(tsOr(a, 0)/300 - tsOr(b, 0)/300) })
			for i := range rows {
				j := i + r.IntN(min(50, len(rows)-i))
				rows[i], rows[j] = rows[j], rows[i]
			}
			for i := range rows {
				rows[i].serial = i // arrival order
			}

			fired := map[string]string{} // (key, start) -> last aggregates emitted
			firedAt := map[string]int64{}
			arrival := make([]int64, len(rows)) // the watermark when each row came
			lateRows := map[int]bool{}
			wm := int64(math.MinInt64)
			// Checkpoints into a map, and crashes that restore the last
			// one: what was emitted since is dropped (as a transactional
			// sink drops it) and the rows since are added again.
			type saved struct {
				store    map[string]string
				i        int
				wm       int64
				fired    map[string]string
				firedAt  map[string]int64
				lateRows map[int]bool
			}
			store := map[string]string{}
			var last *saved
			crashes := 0
			cfg := Config{Spec: spec, Schema: testSchema, Keys: []int{tc.keyCol}, MaxParallelism: testMaxP, Time: 1, Aggs: aggs, AllowedLateness: max(tc.lateness, 0)}
			for i := 0; i < len(rows); {
				switch {
				case r.IntN(5) == 0:
					err := tab.Checkpoint(func(k, v []byte) error {
						checkKeyGroup(t, mem, k, testSchema.Field(tc.keyCol).Type)
						store[string(k)] = string(v)
						return nil
					}, func(k []byte) error {
						delete(store, string(k))
						return nil
					})
					if err != nil {
						t.Fatal(err)
					}
					last = &saved{store: maps.Clone(store), i: i, wm: wm, fired: maps.Clone(fired),
						firedAt: maps.Clone(firedAt), lateRows: maps.Clone(lateRows)}
				case last != nil && crashes < 4 && r.IntN(12) == 0:
					crashes++
					if tab, err = NewTable(cfg); err != nil {
						t.Fatal(err)
					}
					for k, v := range last.store {
						if err := tab.Restore([]byte(k), []byte(v)); err != nil {
							t.Fatal(err)
						}
					}
					store = maps.Clone(last.store)
					i, wm = last.i, last.wm
					fired, firedAt, lateRows = maps.Clone(last.fired), maps.Clone(last.firedAt), maps.Clone(last.lateRows)
					if wm != math.MinInt64 {
						// The restored watermark comes back first.
						out, err := tab.Fire(mem, wm)
						if err != nil {
							t.Fatal(err)
						}
						if out != nil {
							collect(t, out, wm, fired, firedAt, tc.lateness > 0)
							out.Release()
						}
					}
				}
				n := 1 + r.IntN(200)
				batch := rows[i:min(i+n, len(rows))]
				for j := range batch {
					arrival[i+j] = wm
				}
				rec := buildBatch(mem, batch)
				if err := tab.Add(rec); err != nil {
					t.Fatal(err)
				}
				rec.Release()
				for _, row := range tab.Late() {
					lateRows[i+int(row)] = true
				}
				i += len(batch)
				if r.IntN(3) == 0 || i == len(rows) {
					if i == len(rows) {
						wm = math.MaxInt64
					} else if tc.lateness < 0 {
						// Never past a row still to come.
						low := int64(math.MaxInt64)
						for _, rest := range rows[i:] {
							low = min(low, tsOr(rest, low))
						}
						wm = max(wm, low-int64(r.IntN(100)))
					} else {
						// Trailing the rows seen: later rows may be late.
						wm = max(wm, tsOr(batch[len(batch)-1], 0)-int64(r.IntN(300)))
					}
					out, err := tab.Fire(mem, wm)
					if err != nil {
						t.Fatal(err)
					}
					if out != nil {
						collect(t, out, wm, fired, firedAt, tc.lateness > 0)
						out.Release()
					}
				}
			}
			if tab.Len() != 0 {
				t.Fatalf("%d groups left after the last watermark", tab.Len())
			}
			t.Logf("%d crashes", crashes)
			// A window takes a row while its end plus the lateness is
			// after the watermark the row came at.
			open := func(row int, start int64) bool {
				return arrival[row] == math.MinInt64 || start+spec.Size+max(tc.lateness, 0) > arrival[row]
			}
			want, wantLate := reference(spec, rows, open, keyOf)
			if !maps.Equal(lateRows, wantLate) {
				t.Errorf("late rows %v, want %v", slices.Sorted(maps.Keys(lateRows)), slices.Sorted(maps.Keys(wantLate)))
			}
			for k, w := range want {
				if fired[k] != w {
					t.Errorf("%s: got %s\nwant %s", k, fired[k], w)
				}
			}
			for k := range fired {
				if _, ok := want[k]; !ok {
					t.Errorf("%s fired, not in the reference", k)
				}
			}
		})
	}
}

func tsOr(r testRow, d int64) int64 {
	if r.ts == nil {
		return d
	}
	return *r.ts
}

func buildBatch(mem memory.Allocator, rows []testRow) arrow.RecordBatch {
	b := array.NewRecordBuilder(mem, testSchema)
	defer b.Release()
	for _, r := range rows {
		if r.key == nil {
			b.Field(0).AppendNull()
		} else {
			b.Field(0).(*array.StringBuilder).Append(*r.key)
		}
		if r.ts == nil {
			b.Field(1).AppendNull()
		} else {
			b.Field(1).(*array.TimestampBuilder).Append(arrow.Timestamp(*r.ts))
		}
		if r.v == nil {
			b.Field(2).AppendNull()
		} else {
			b.Field(2).(*array.Int64Builder).Append(*r.v)
		}
		if r.f == nil {
			b.Field(3).AppendNull()
		} else {
			b.Field(3).(*array.Float64Builder).Append(*r.f)
		}
	}
	return b.NewRecordBatch()
}

func groupName(key *string, start int64) string {
	k := "<null>"
	if key != nil {
		k = *key
	}
	return fmt.Sprintf("%s@%d", k, start)
}

// collect renders the fired rows, checking each fires once and only when
// the watermark passed its window's end, and that they come ordered by
// window start, then key bytes.
func collect(t *testing.T, rec arrow.RecordBatch, wm int64, fired map[string]string, firedAt map[string]int64, updates bool) {
	t.Helper()
	enc, err := newKeyEncoder(rec.Column(0).DataType())
	if err != nil {
		t.Fatal(err)
	}
	var prevKey []byte
	prevStart := int64(math.MinInt64)
	for i := range int(rec.NumRows()) {
		start := int64(rec.Column(1).(*array.Timestamp).Value(i))
		key := enc.append(nil, rec.Column(0), i)
		if i > 0 && (start < prevStart || start == prevStart && string(key) < string(prevKey)) {
			t.Errorf("row %d (start %d, key %x) after start %d, key %x: not in order", i, start, key, prevStart, prevKey)
		}
		prevStart, prevKey = start, key
	}
	cell := func(c, i int) string {
		col := rec.Column(c)
		if col.IsNull(i) {
			return "null"
		}
		return col.ValueStr(i)
	}
	for i := range int(rec.NumRows()) {
		var key *string
		if !rec.Column(0).IsNull(i) {
			k := rec.Column(0).ValueStr(i)
			key = &k
		}
		start := int64(rec.Column(1).(*array.Timestamp).Value(i))
		end := int64(rec.Column(2).(*array.Timestamp).Value(i))
		name := groupName(key, start)
		if end > wm {
			t.Errorf("%s fired at watermark %d before its end %d", name, wm, end)
		}
		if _, ok := fired[name]; ok && !updates {
			t.Errorf("%s fired twice (at %d and %d)", name, firedAt[name], wm)
		}
		var s string
		for c := 3; c < int(rec.NumCols()); c++ {
			s += rec.ColumnName(c) + "=" + cell(c, i) + " "
		}
		fired[name], firedAt[name] = s, wm
	}
}

// reference computes every window's aggregates row by row, from the rows
// open lets in, and the rows (by index) it let into none of their windows.
func reference(spec Spec, rows []testRow, open func(row int, start int64) bool, keyOf func(testRow) *string) (map[string]string, map[int]bool) {
	type group struct{ rows []testRow }
	groups := map[string]*group{}
	late := map[int]bool{}
	var order []string
	for i, r := range rows {
		if r.ts == nil {
			continue
		}
		sl := spec.Slide
		windows, kept := 0, 0
		for w := spec.LastStart(*r.ts); w > *r.ts-spec.Size; w -= sl {
			windows++
			if !open(i, w) {
				continue
			}
			kept++
			name := groupName(keyOf(r), w)
			g := groups[name]
			if g == nil {
				g = &group{}
				groups[name] = g
				order = append(order, name)
			}
			g.rows = append(g.rows, r)
		}
		if windows > 0 && kept == 0 {
			late[i] = true
		}
	}
	out := map[string]string{}
	for _, name := range order {
		out[name] = refAggs(groups[name].rows)
	}
	return out, late
}

// aggString renders the aggregates of TestTableRandom over the rows g,
// computed row by row.
func aggString(g []testRow) string {
	var nv, sum int64
	var mn, mx *int64
	var fsum float64
	var fmn, fmx *float64
	dv, dk := map[int64]bool{}, map[string]bool{}
	var first, last, kfirst *testRow
	for i := range g {
		r := &g[i]
		if r.v != nil {
			nv++
			sum += *r.v
			if mn == nil || *r.v < *mn {
				mn = r.v
			}
			if mx == nil || *r.v > *mx {
				mx = r.v
			}
			dv[*r.v] = true
			if first == nil || *r.ts < *first.ts {
				first = r
			}
			if last == nil || *r.ts >= *last.ts {
				last = r
			}
		}
		if r.f != nil {
			fsum += *r.f
			if fmn == nil || *r.f < *fmn {
				fmn = r.f
			}
			if fmx == nil || *r.f > *fmx {
				fmx = r.f
			}
		}
		if r.key != nil {
			dk[*r.key] = true
			if kfirst == nil || *r.ts < *kfirst.ts {
				kfirst = r
			}
		}
	}
	i64 := func(p *int64) string {
		if p == nil {
			return "null"
		}
		return strconv.FormatInt(*p, 10)
	}
	f64 := func(p *float64) string {
		if p == nil {
			return "null"
		}
		return strconv.FormatFloat(*p, 'g', -1, 64)
	}
	var sumP, avgS, firstS, lastS, fsumP, kfirstS = i64(nil), "null", "null", "null", f64(nil), "null"
	if nv > 0 {
		sumP = strconv.FormatInt(sum, 10)
		avgS = strconv.FormatFloat(float64(sum)/float64(nv), 'g', -1, 64)
		firstS, lastS = strconv.FormatInt(*first.v, 10), strconv.FormatInt(*last.v, 10)
	}
	if fmn != nil {
		fsumP = f64(&fsum)
	}
	if kfirst != nil {
		kfirstS = *kfirst.key
	}
	return fmt.Sprintf("n=%d nv=%d sum=%s min=%s max=%s avg=%s dv=%d dk=%d first=%s last=%s fsum=%s fmin=%s fmax=%s kfirst=%s ",
		len(g), nv, sumP, i64(mn), i64(mx), avgS, len(dv), len(dk), firstS, lastS, fsumP, f64(fmn), f64(fmx), kfirstS)
}

// mustGroup returns the group of a stored key.
func (t *Table) mustGroup(tb testing.TB, key []byte) int32 {
	tb.Helper()
	g, ok := t.group(string(key[keyGroupLen:]))
	if !ok {
		tb.Fatalf("no group %x", key)
	}
	return g
}

// FuzzRestore: a group's bytes from a damaged store give an error, never
// a panic, and a group restored from them encodes to bytes that read back
// to the same group.
func FuzzRestore(f *testing.F) {
	aggs := []Agg{{Kind: Count, Column: -1, Name: "n"}, {Kind: Sum, Column: 2, Name: "sum"}, {Kind: Avg, Column: 3, Name: "avg"}, {Kind: CountDistinct, Column: 0, Name: "dk"}, {Kind: Last, Column: 0, Name: "kl"}, {Kind: Min, Column: 3, Name: "fmin"}}
	cfg := Config{Spec: Tumbling(10), Schema: testSchema, Keys: []int{0}, MaxParallelism: testMaxP, Time: 1, Aggs: aggs}
	mem := memory.NewGoAllocator()
	seedTab, err := NewTable(cfg)
	if err != nil {
		f.Fatal(err)
	}
	k1, k2, ts, v, fl := "a", "b", int64(3), int64(7), 2.5
	rec := buildBatch(mem, []testRow{{key: &k1, ts: &ts, v: &v, f: &fl}, {key: &k2, ts: &ts}})
	if err := seedTab.Add(rec); err != nil {
		f.Fatal(err)
	}
	rec.Release()
	if err := seedTab.Checkpoint(func(k, v []byte) error { f.Add(k, v); return nil }, func([]byte) error { return nil }); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, key, value []byte) {
		tab, err := NewTable(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := tab.Restore(key, value); err != nil {
			return
		}
		// Its encoding reads back to the same state (the same encoding
		// again: the encoding is a function of the state).
		got := tab.encodeGroup(nil, tab.mustGroup(t, key))
		again, err := NewTable(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := again.Restore(key, got); err != nil {
			t.Fatalf("group %x: its own encoding %x: %v", key, got, err)
		}
		if again := again.encodeGroup(nil, again.mustGroup(t, key)); string(again) != string(got) {
			t.Fatalf("group %x: encoded %x, read back and encoded %x", key, got, again)
		}
	})
}
