package join

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

func intervalCfg(lower, upper int64) IntervalConfig {
	return IntervalConfig{
		Left:  Side{Schema: leftSchema, Keys: []int{0}, Time: 1},
		Right: Side{Schema: rightSchema, Keys: []int{0}, Time: 1},
		Lower: lower, Upper: upper,
	}
}

func TestIntervalSchema(t *testing.T) {
	j, err := NewInterval(intervalCfg(0, 1))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range j.Schema().Fields() {
		names = append(names, f.Name)
	}
	want := []string{"left_key", "ts", "left_id", "right_key", "t", "right_id", "name"}
	if !slices.Equal(names, want) {
		t.Fatalf("fields %v, want %v", names, want)
	}
	for _, bad := range []IntervalConfig{
		func() IntervalConfig { c := intervalCfg(2, 1); return c }(),
		func() IntervalConfig { c := intervalCfg(0, 1); c.Left.Keys = []int{2, 0}; return c }(),
		func() IntervalConfig { c := intervalCfg(0, 1); c.Right.Keys = []int{1}; return c }(),
		func() IntervalConfig { c := intervalCfg(0, 1); c.Left.Time = 0; return c }(),
		func() IntervalConfig { c := intervalCfg(0, 1); c.Left.Prefix = "x"; c.Right.Prefix = "x"; return c }(),
		func() IntervalConfig { c := intervalCfg(0, 1); c.Left.Keys = nil; c.Right.Keys = nil; return c }(),
	} {
		if _, err := NewInterval(bad); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

// TestIntervalCases: the edges of the interval, null keys and times,
// empty batches, either arrival order.
func TestIntervalCases(t *testing.T) {
	k := sp("a")
	for _, tc := range []struct {
		name         string
		lower, upper int64
		left, right  []row
		want         []string
	}{
		{"inside", -5, 10, []row{{k, ip(100), 1}}, []row{{k, ip(103), 2}}, []string{"1-2"}},
		{"lower edge", -5, 10, []row{{k, ip(100), 1}}, []row{{k, ip(95), 2}, {k, ip(94), 3}}, []string{"1-2"}},
		{"upper edge", -5, 10, []row{{k, ip(100), 1}}, []row{{k, ip(110), 2}, {k, ip(111), 3}}, []string{"1-2"}},
		{"point", 0, 0, []row{{k, ip(7), 1}}, []row{{k, ip(7), 2}, {k, ip(8), 3}, {k, ip(6), 4}}, []string{"1-2"}},
		{"keys differ", 0, 10, []row{{k, ip(0), 1}}, []row{{sp("b"), ip(0), 2}}, nil},
		{"null keys never join", 0, 10, []row{{nil, ip(0), 1}, {k, ip(0), 3}}, []row{{nil, ip(0), 2}}, nil},
		{"null times never join", 0, 10, []row{{k, nil, 1}}, []row{{k, nil, 2}, {k, ip(0), 3}}, nil},
		{"empty left", 0, 10, nil, []row{{k, ip(0), 2}}, nil},
		{"many", -1, 1, []row{{k, ip(0), 1}, {k, ip(1), 2}, {sp("b"), ip(1), 5}},
			[]row{{k, ip(1), 3}, {k, ip(2), 4}, {sp("b"), ip(0), 6}}, []string{"1-3", "2-3", "2-4", "5-6"}},
	} {
		for _, leftFirst := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/leftfirst=%v", tc.name, leftFirst), func(t *testing.T) {
				mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
				defer mem.AssertSize(t, 0)
				j, err := NewInterval(intervalCfg(tc.lower, tc.upper))
				if err != nil {
					t.Fatal(err)
				}
				defer j.Close()
				l, r := build(mem, leftSchema, tc.left), build(mem, rightSchema, tc.right)
				defer l.Release()
				defer r.Release()
				order := []struct {
					w   Which
					rec arrow.RecordBatch
				}{{Left, l}, {Right, r}}
				if !leftFirst {
					order[0], order[1] = order[1], order[0]
				}
				var got []string
				for _, o := range order {
					out, err := j.Add(mem, o.w, o.rec)
					if err != nil {
						t.Fatal(err)
					}
					got = append(got, pairsOf(t, out, "left_id", "right_id")...)
					if out != nil {
						out.Release()
					}
				}
				sameSet(t, got, tc.want)
			})
		}
	}
}

// TestIntervalExpire: Expire drops exactly the rows that can no longer
// join and releases their batches.
func TestIntervalExpire(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	j, err := NewInterval(intervalCfg(-5, 10))
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	k := sp("a")
	l := build(mem, leftSchema, []row{{k, ip(100), 1}, {k, ip(200), 2}})
	r := build(mem, rightSchema, []row{{k, ip(100), 3}, {k, ip(200), 4}})
	for _, a := range []struct {
		w   Which
		rec arrow.RecordBatch
	}{{Left, l}, {Right, r}} {
		out, err := j.Add(mem, a.w, a.rec)
		if err != nil {
			t.Fatal(err)
		}
		if out != nil {
			out.Release()
		}
		a.rec.Release()
	}
	// Left 100 joins right times up to 110: alive at 110, dead at 111.
	// Right 100 joins left times up to 105: alive at 105, dead at 106.
	for _, c := range []struct {
		wm          int64
		left, right int
	}{{105, 2, 2}, {106, 2, 1}, {110, 2, 1}, {111, 1, 1}, {1000, 0, 0}} {
		j.Expire(c.wm)
		if j.Len(Left) != c.left || j.Len(Right) != c.right {
			t.Fatalf("after %d: %d left, %d right rows; want %d, %d", c.wm, j.Len(Left), j.Len(Right), c.left, c.right)
		}
	}
	if n := j.sides[Left].segs.retainedRows() + j.sides[Right].segs.retainedRows(); n != 0 {
		t.Fatalf("%d rows retained after everything expired", n)
	}
	// A row already too old when it arrives still joins the rows held,
	// but is not buffered.
	late := build(mem, leftSchema, []row{{k, ip(50), 5}})
	defer late.Release()
	out, err := j.Add(mem, Left, late)
	if err != nil || out != nil || j.Len(Left) != 0 {
		t.Fatalf("late row: %v, %v, %d buffered", out, err, j.Len(Left))
	}
}

// randomRows makes n rows with ids from first, keys k0..k(keys-1) or
// null, times in [0, span) or null, in roughly increasing time order
// shuffled locally.
func randomRows(r *rand.Rand, n int, first int64, keys, span int) []row {
	rows := make([]row, n)
	for i := range rows {
		rows[i].id = first + int64(i)
		if r.IntN(30) != 0 {
			rows[i].key = sp("k" + strconv.Itoa(r.IntN(keys)))
		}
		if r.IntN(50) != 0 {
			rows[i].ts = ip(int64(r.IntN(span)))
		}
	}
	return rows
}

type tagged struct {
	row
	w Which
}

// arrivals interleaves the two sides' rows roughly in time order,
// shuffled locally (out of order), and returns them.
func arrivals(r *rand.Rand, left, right []row) []tagged {
	var all []tagged
	for _, x := range left {
		all = append(all, tagged{x, Left})
	}
	for _, x := range right {
		all = append(all, tagged{x, Right})
	}
	tOr := func(x tagged) int64 {
		if x.ts == nil {
			return 0
		}
		return *x.ts
	}
	slices.SortFunc(all, func(a, b tagged) int { return int(tOr(a)/200 - tOr(b)/200) })
	for i := range all {
		j := i + r.IntN(min(40, len(all)-i))
		all[i], all[j] = all[j], all[i]
	}
	return all
}

// lowWatermark is a random watermark at or below the earliest time still
// to come.
func lowWatermark(r *rand.Rand, prev int64, rest []tagged) int64 {
	low := int64(math.MaxInt64)
	for _, x := range rest {
		if x.ts != nil {
			low = min(low, *x.ts)
		}
	}
	if low == math.MaxInt64 {
		return low
	}
	return max(prev, low-int64(r.IntN(50)))
}

// feed adds the arrivals in random single-side batches, calling tick
// (with the watermark) at random points and at the end with MaxInt64.
func feed(t *testing.T, r *rand.Rand, mem memory.Allocator, all []tagged,
	add func(Which, arrow.RecordBatch) arrow.RecordBatch, tick func(int64) arrow.RecordBatch, got func(arrow.RecordBatch)) {
	wm := int64(math.MinInt64)
	for i := 0; i < len(all); {
		w := all[i].w
		var batch []row
		for n := r.IntN(60); i < len(all) && all[i].w == w && len(batch) <= n; i++ {
			batch = append(batch, all[i].row)
		}
		schema := leftSchema
		if w == Right {
			schema = rightSchema
		}
		if r.IntN(10) == 0 { // empty batches too
			rec := build(mem, schema, nil)
			got(add(w, rec))
			rec.Release()
		}
		rec := build(mem, schema, batch)
		got(add(w, rec))
		rec.Release()
		if r.IntN(4) == 0 {
			wm = lowWatermark(r, wm, all[i:])
			got(tick(wm))
		}
	}
	got(tick(math.MaxInt64))
}

// TestIntervalRandom: shuffled, out-of-order rows of both sides in random
// batches, expired at random watermarks (never past a row still to come):
// the pairs are exactly those of a nested-loop reference, each once, and
// nothing is held after the last watermark.
func TestIntervalRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 2))
	for _, iv := range [][2]int64{{-20, 30}, {0, 0}, {10, 50}, {-60, -10}} {
		t.Run(fmt.Sprint(iv), func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			j, err := NewInterval(intervalCfg(iv[0], iv[1]))
			if err != nil {
				t.Fatal(err)
			}
			defer j.Close()
			left := randomRows(r, 800, 0, 15, 3000)
			right := randomRows(r, 800, 10000, 15, 3000)
			var got []string
			feed(t, r, mem, arrivals(r, left, right),
				func(w Which, rec arrow.RecordBatch) arrow.RecordBatch {
					out, err := j.Add(mem, w, rec)
					if err != nil {
						t.Fatal(err)
					}
					return out
				},
				func(wm int64) arrow.RecordBatch { j.Expire(wm); return nil },
				func(out arrow.RecordBatch) {
					if out != nil {
						got = append(got, pairsOf(t, out, "left_id", "right_id")...)
						out.Release()
					}
				})
			var want []string
			for _, l := range left {
				for _, rr := range right {
					if l.key != nil && rr.key != nil && *l.key == *rr.key && l.ts != nil && rr.ts != nil &&
						*rr.ts >= *l.ts+iv[0] && *rr.ts <= *l.ts+iv[1] {
						want = append(want, fmt.Sprintf("%d-%d", l.id, rr.id))
					}
				}
			}
			if len(want) == 0 {
				t.Fatal("the reference has no pairs: the test would prove nothing")
			}
			sameSet(t, got, want)
			if j.Len(Left)+j.Len(Right) != 0 {
				t.Fatalf("%d, %d rows held after the last watermark", j.Len(Left), j.Len(Right))
			}
		})
	}
}

// TestIntervalExtremeTimes: times and bounds near the ends of the int64
// range expire without wrapping around.
func TestIntervalExtremeTimes(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	j, err := NewInterval(intervalCfg(math.MinInt64, math.MaxInt64))
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	l := build(mem, leftSchema, []row{{sp("a"), ip(math.MaxInt64 - 1), 1}, {sp("a"), ip(0), 3}})
	r := build(mem, rightSchema, []row{{sp("a"), ip(math.MinInt64 + 1), 2}, {sp("a"), ip(5), 4}})
	defer l.Release()
	defer r.Release()
	var got []string
	for _, a := range []struct {
		w   Which
		rec arrow.RecordBatch
	}{{Left, l}, {Right, r}} {
		out, err := j.Add(mem, a.w, a.rec)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, pairsOf(t, out, "left_id", "right_id")...)
		if out != nil {
			out.Release()
		}
	}
	// Every difference of times fits the interval but MinInt64+1 -
	// (MaxInt64-1), below MinInt64.
	sameSet(t, got, []string{"1-4", "3-2", "3-4"})
	// The right row at MinInt64+1 joins left rows up to time
	// (MinInt64+1) - MinInt64 = 1; every other row joins rows up to
	// MaxInt64 (saturated).
	for _, c := range []struct {
		wm          int64
		left, right int
	}{{1, 2, 2}, {2, 2, 1}, {math.MaxInt64, 2, 1}} {
		j.Expire(c.wm)
		if j.Len(Left) != c.left || j.Len(Right) != c.right {
			t.Fatalf("after %d: %d, %d held, want %d, %d", c.wm, j.Len(Left), j.Len(Right), c.left, c.right)
		}
	}
}

// TestSlicedInput: batches that are slices of larger ones (non-zero
// offsets in every buffer) join like copies.
func TestSlicedInput(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	k := sp("a")
	lfull := build(mem, leftSchema, []row{{sp("x"), ip(0), 9}, {nil, nil, 8}, {k, ip(10), 1}, {nil, ip(10), 3}, {k, ip(11), 4}})
	rfull := build(mem, rightSchema, []row{{nil, nil, 7}, {k, ip(10), 2}, {sp("b"), ip(10), 5}})
	defer lfull.Release()
	defer rfull.Release()
	l, r := lfull.NewSlice(2, 5), rfull.NewSlice(1, 3)
	defer l.Release()
	defer r.Release()

	j, err := NewInterval(intervalCfg(-1, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	var got []string
	for _, a := range []struct {
		w   Which
		rec arrow.RecordBatch
	}{{Right, r}, {Left, l}} {
		out, err := j.Add(mem, a.w, a.rec)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, pairsOf(t, out, "left_id", "right_id")...)
		if out != nil {
			out.Release()
		}
	}
	sameSet(t, got, []string{"1-2", "4-2"})

	lk, err := NewLookup(mem, LookupConfig{
		Probe: Side{Schema: leftSchema, Keys: []int{0}},
		Table: Side{Schema: rightSchema, Keys: []int{0}}, Delete: -1, Outer: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Close()
	if err := lk.Upsert(mem, r); err != nil {
		t.Fatal(err)
	}
	out, err := lk.Probe(mem, l)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Release()
	if got, want := pairsOf(t, out, "left_id", "right_id"), []string{"1-2", "3-", "4-2"}; !slices.Equal(got, want) {
		t.Fatalf("lookup: got %v, want %v", got, want)
	}
}

// TestIntervalUnbounded: the unbounded interval without time columns (the
// regular join) pairs every left and right row with equal keys, null
// times included, each pair once whatever the arrival order; null keys
// never join; watermarks drop nothing.
func TestIntervalUnbounded(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 9))
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	cfg := intervalCfg(math.MinInt64, math.MaxInt64)
	cfg.Left.Time, cfg.Right.Time = -1, -1
	j, err := NewInterval(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	left := randomRows(r, 400, 0, 20, 3000)
	right := randomRows(r, 400, 10000, 20, 3000)
	var got []string
	feed(t, r, mem, arrivals(r, left, right),
		func(w Which, rec arrow.RecordBatch) arrow.RecordBatch {
			out, err := j.Add(mem, w, rec)
			if err != nil {
				t.Fatal(err)
			}
			return out
		},
		func(wm int64) arrow.RecordBatch { j.Expire(wm); return nil },
		func(out arrow.RecordBatch) {
			if out != nil {
				got = append(got, pairsOf(t, out, "left_id", "right_id")...)
				out.Release()
			}
		})
	var want []string
	nulls := 0
	for _, l := range left {
		for _, rr := range right {
			if l.key != nil && rr.key != nil && *l.key == *rr.key {
				want = append(want, fmt.Sprintf("%d-%d", l.id, rr.id))
				if l.ts == nil || rr.ts == nil {
					nulls++
				}
			}
		}
	}
	if len(want) == 0 || nulls == 0 {
		t.Fatal("the reference has no pairs, or none with a null time: the test would prove less")
	}
	sameSet(t, got, want)
	var nkeys int
	for _, l := range left {
		if l.key != nil {
			nkeys++
		}
	}
	if j.Len(Left) != nkeys {
		t.Fatalf("%d left rows held, want %d", j.Len(Left), nkeys)
	}
	// A bounded interval still needs time columns.
	cfg = intervalCfg(0, 10)
	cfg.Left.Time = -1
	if _, err := NewInterval(cfg); err == nil {
		t.Fatal("a bounded interval without a time column: no error")
	}
}

// TestIntervalLazyExpiry: a row the watermark killed joins no row even
// while it waits for its side's compaction, and a side fed and expired
// batch after batch never holds more than about twice its live rows plus
// compactMin, and releases every batch once all rows are dead.
func TestIntervalLazyExpiry(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	t.Run("dead rows do not join", func(t *testing.T) {
		j, err := NewInterval(intervalCfg(-5, 10))
		if err != nil {
			t.Fatal(err)
		}
		defer j.Close()
		var rows []row
		for i := range int64(100) {
			rows = append(rows, row{sp(fmt.Sprint("k", i)), ip(i), i})
		}
		l := build(mem, leftSchema, rows)
		defer l.Release()
		if out, err := j.Add(mem, Left, l); err != nil || out != nil {
			t.Fatalf("add: %v, %v", out, err)
		}
		j.Expire(50) // compacts (first watermark): left rows below 40 go
		j.Expire(60) // kills 40..49, below the median: no compaction
		if got := j.Len(Left); got != 50 {
			t.Fatalf("%d live left rows, want 50", got)
		}
		if held := len(j.sides[Left].seg); held != 60 {
			t.Fatalf("%d left rows held, want 60 (the test needs rows dead and not compacted)", held)
		}
		// Right 45 would join left 42 (42-5 <= 45 <= 42+10), but left 42
		// is dead; right 55 joins left 50 and 55.
		r := build(mem, rightSchema, []row{{sp("k42"), ip(45), 1000}, {sp("k50"), ip(55), 1001}, {sp("k55"), ip(55), 1002}})
		defer r.Release()
		out, err := j.Add(mem, Right, r)
		if err != nil {
			t.Fatal(err)
		}
		if out == nil {
			t.Fatal("no pairs")
		}
		defer out.Release()
		got := pairsOf(t, out, "left_id", "right_id")
		slices.Sort(got)
		if want := []string{"50-1001", "55-1002"}; !slices.Equal(got, want) {
			t.Fatalf("pairs %v, want %v", got, want)
		}
	})
	t.Run("bounded and released", func(t *testing.T) {
		j, err := NewInterval(intervalCfg(0, 1000))
		if err != nil {
			t.Fatal(err)
		}
		defer j.Close()
		const batch = 100
		ts := int64(0)
		for b := range 300 {
			var rows []row
			for i := range batch {
				rows = append(rows, row{sp(fmt.Sprint("k", i%7)), ip(ts), int64(b*batch + i)})
				ts++
			}
			l := build(mem, leftSchema, rows)
			out, err := j.Add(mem, Left, l)
			l.Release()
			if err != nil {
				t.Fatal(err)
			}
			if out != nil {
				out.Release()
			}
			j.Expire(ts - 500) // rows before ts-1500 are dead
			live, held := j.Len(Left), len(j.sides[Left].seg)
			if live != int(min(ts, 1500)) {
				t.Fatalf("batch %d: %d live rows, want %d", b, live, min(ts, 1500))
			}
			if held > 2*live+compactMin+batch {
				t.Fatalf("batch %d: %d rows held for %d live", b, held, live)
			}
		}
		j.Expire(math.MaxInt64)
		if n := j.sides[Left].segs.retainedRows(); n != 0 || j.Len(Left) != 0 {
			t.Fatalf("%d rows retained after everything expired", n)
		}
	})
}
