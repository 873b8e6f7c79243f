package join

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// IntervalConfig configures an interval join: left row l joins right row
// r when their keys are equal and l.time+Lower <= r.time <= l.time+Upper.
//
// With Lower = math.MinInt64 and Upper = math.MaxInt64 the join is
// unbounded (a regular join: every pair with equal keys, rows never
// expire), and the sides may have no time column (Time < 0).
type IntervalConfig struct {
	Left, Right  Side
	Lower, Upper int64
}

// Interval is an inner interval join of two keyed streams. Add buffers a
// batch of one side and returns its pairs with the rows of the other side
// buffered so far; Expire drops the rows no future row can join.
//
// Each pair is emitted exactly once, by the Add of whichever of its two
// rows arrives second, whatever the order of the rows' times.
//
// Memory: Add retains the input batch (no copy) when some of its rows
// may still join, and indexes those rows by key hash; a batch is released
// when Expire has dropped all its rows, so a long-lived row keeps its
// whole batch alive. Close releases everything.
//
// Expiry is amortised: a row is dead as soon as the watermark passes it
// (probes skip it), but Expire compacts a side, a pass over its rows, only
// when about half of them are dead (the watermark passed the median time
// of the rows kept by the last compaction) or when as many rows were added
// since as it kept (at least compactMin). So a side holds at most about
// twice its live rows plus compactMin dead ones, and each row costs O(1)
// expiry work whatever the number of watermarks.
type Interval struct {
	cfg   IntervalConfig
	out   *arrow.Schema
	sides [2]*bufferedSide
	wm    int64

	hashes   []uint64
	ok       []bool
	timeless bool    // no time columns: every time is 0
	zeros    []int64 // the times of a timeless batch

	// Compaction of each side (see Expire): the side is compacted once
	// the watermark kills rows of time cut, or added reaches
	// max(kept, compactMin).
	cut   [2]int64
	added [2]int
	kept  [2]int

	pairs  [3][]int32 // scratch of Add: the pairs found
	sorted [3][]int32 // and grouped by the other side's batch
	ord    []int
}

// compactMin is the number of rows added since the last compaction of a
// side that always allows another.
const compactMin = 1024

// times returns the time column of rec (nil when timeless) and its
// values.
func (j *Interval) times(side *Side, rec arrow.RecordBatch) (arrow.Array, []int64) {
	if j.timeless {
		n := int(rec.NumRows())
		if len(j.zeros) < n {
			j.zeros = make([]int64, n)
		}
		return nil, j.zeros[:n]
	}
	tcol := rec.Column(side.Time)
	return tcol, timeValues(tcol)
}

// bufferedSide is the buffered rows of one side, indexed by key hash:
// entries chained per hash from head.
type bufferedSide struct {
	side *Side
	segs segments

	seg, row []int32
	time     []int64
	hash     []uint64
	next     []int32
	head     *hashIndex // nil: not indexed
}

func newBufferedSide(s *Side, indexed bool) *bufferedSide {
	b := &bufferedSide{side: s}
	if indexed {
		b.head = &hashIndex{}
	}
	return b
}

// grow makes room for n more entries.
func (b *bufferedSide) grow(n int) {
	b.seg = slices.Grow(b.seg, n)
	b.row = slices.Grow(b.row, n)
	b.time = slices.Grow(b.time, n)
	b.hash = slices.Grow(b.hash, n)
	if b.head != nil {
		b.next = slices.Grow(b.next, n)
		b.head.reserve(n)
	}
}

func (b *bufferedSide) insert(seg, row int32, t int64, h uint64) {
	e := int32(len(b.seg))
	b.seg = append(b.seg, seg)
	b.row = append(b.row, row)
	b.time = append(b.time, t)
	b.hash = append(b.hash, h)
	b.segs.live[seg]++
	if b.head == nil {
		return
	}
	b.next = append(b.next, b.head.swap(h, e))
}

// retain keeps the entries for which keep is true (in order), rebuilds
// the index and releases the batches left without a row.
func (b *bufferedSide) retain(keep func(e int) bool) {
	w := 0
	var dropped []int32
	for e := range b.seg {
		if !keep(e) {
			dropped = append(dropped, b.seg[e])
			continue
		}
		b.seg[w], b.row[w], b.time[w], b.hash[w] = b.seg[e], b.row[e], b.time[e], b.hash[e]
		w++
	}
	if len(dropped) == 0 {
		return
	}
	b.seg, b.row, b.time, b.hash = b.seg[:w], b.row[:w], b.time[:w], b.hash[:w]
	for _, s := range dropped {
		b.segs.drop(s)
	}
	if b.head == nil {
		return
	}
	b.next = b.next[:w]
	b.head.reset()
	for e := range w {
		b.next[e] = b.head.swap(b.hash[e], int32(e))
	}
}

func (b *bufferedSide) close() {
	b.segs.close()
	b.seg, b.row, b.time, b.hash, b.next = nil, nil, nil, nil, nil
	if b.head != nil {
		b.head = &hashIndex{}
	}
}

// NewInterval returns an empty interval join, or an error for a
// configuration it cannot join.
func NewInterval(cfg IntervalConfig) (*Interval, error) {
	if cfg.Lower > cfg.Upper {
		return nil, fmt.Errorf("join: interval [%d, %d] is empty", cfg.Lower, cfg.Upper)
	}
	unbounded := cfg.Lower == math.MinInt64 && cfg.Upper == math.MaxInt64
	timeless := unbounded && cfg.Left.Time < 0 && cfg.Right.Time < 0
	fields, err := checkSides(&cfg.Left, &cfg.Right, !timeless, false)
	if err != nil {
		return nil, err
	}
	j := &Interval{cfg: cfg, out: arrow.NewSchema(fields, nil), wm: math.MinInt64, timeless: timeless}
	j.cut = [2]int64{math.MinInt64, math.MinInt64}
	j.sides = [2]*bufferedSide{newBufferedSide(&j.cfg.Left, true), newBufferedSide(&j.cfg.Right, true)}
	return j, nil
}

// Schema is the schema of the batches Add returns.
func (j *Interval) Schema() *arrow.Schema { return j.out }

// Len is the number of rows of side w buffered that may still join (dead
// rows waiting for a compaction are not counted).
func (j *Interval) Len(w Which) int {
	s, n := j.sides[w], 0
	for _, t := range s.time {
		if !j.dead(w, t, j.wm) {
			n++
		}
	}
	return n
}

// dead reports whether a row of side w at time t can join no row at or
// after watermark wm.
func (j *Interval) dead(w Which, t, wm int64) bool {
	if w == Left {
		return satAdd(t, j.cfg.Upper) < wm
	}
	return satSub(t, j.cfg.Lower) < wm
}

// satSub is a-b, clamped to the int64 range.
func satSub(a, b int64) int64 {
	s := a - b
	if (s < a) != (b > 0) {
		if b < 0 {
			return math.MaxInt64
		}
		return math.MinInt64
	}
	return s
}

// satAdd is a+b, clamped to the int64 range.
func satAdd(a, b int64) int64 {
	s := a + b
	if (s > a) != (b > 0) {
		if b > 0 {
			return math.MaxInt64
		}
		return math.MinInt64
	}
	return s
}

// Add buffers rec, a batch of side w, and returns its pairs with the
// other side's buffered rows (nil when there is none), in no particular
// order. rec is borrowed; the result is handed over.
func (j *Interval) Add(mem memory.Allocator, w Which, rec arrow.RecordBatch) (arrow.RecordBatch, error) {
	me, other := j.sides[w], j.sides[1-w]
	if !rec.Schema().Equal(me.side.Schema) {
		return nil, fmt.Errorf("join: %s batch schema %s, want %s", w, rec.Schema(), me.side.Schema)
	}
	n := int(rec.NumRows())
	if n == 0 {
		return nil, nil
	}
	j.hashes = slices.Grow(j.hashes[:0], n)[:n]
	j.ok = slices.Grow(j.ok[:0], n)[:n]
	tcol, ts := j.times(me.side, rec)
	if err := hashBatch(rec, me.side.Keys, tcol, j.hashes, j.ok); err != nil {
		return nil, err
	}
	bk := newBatchKeys(rec, me.side.Keys)

	// Probe the other side: the other row's time must be in [lo, hi],
	// computed per row with saturation so that no bound wraps around.
	// The pairs, in buffers reused from call to call (takeCols and
	// gather copy the rows).
	mine, oseg, orow := j.pairs[0][:0], j.pairs[1][:0], j.pairs[2][:0]
	defer func() { j.pairs[0], j.pairs[1], j.pairs[2] = mine[:0], oseg[:0], orow[:0] }()
	if len(other.seg) > 0 {
		for i, h := range j.hashes {
			if !j.ok[i] {
				continue
			}
			e := other.head.get(h)
			if e < 0 {
				continue
			}
			var lo, hi int64
			if w == Left { // r.t in [l.t+lower, l.t+upper]
				lo, hi = satAdd(ts[i], j.cfg.Lower), satAdd(ts[i], j.cfg.Upper)
			} else { // l.t in [r.t-upper, r.t-lower]
				lo, hi = satSub(ts[i], j.cfg.Upper), satSub(ts[i], j.cfg.Lower)
			}
			for ; e >= 0; e = other.next[e] {
				if t := other.time[e]; t < lo || t > hi || j.dead(1-w, t, j.wm) {
					continue
				}
				s, r := other.seg[e], other.row[e]
				if !keysEqual(bk, int32(i), other.segs.keys[s], r) {
					continue
				}
				mine = append(mine, int32(i))
				oseg = append(oseg, s)
				orow = append(orow, r)
			}
		}
	}

	// Buffer the rows that may still join.
	me.grow(n)
	id := me.segs.add(rec, me.side.Keys)
	for i, h := range j.hashes {
		if j.ok[i] && !j.dead(w, ts[i], j.wm) {
			me.insert(id, int32(i), ts[i], h)
			j.added[w]++
		}
	}
	me.segs.releaseUnused(id)

	if len(mine) == 0 {
		return nil, nil
	}
	// Group by the other side's batch: one Take per buffered batch (no
	// sort when the pairs are grouped already, as with one batch).
	ms, os, or := mine, oseg, orow
	if !slices.IsSorted(oseg) {
		ord := slices.Grow(j.ord[:0], len(mine))[:len(mine)]
		j.ord = ord
		for i := range ord {
			ord[i] = i
		}
		slices.SortStableFunc(ord, func(a, b int) int { return cmp.Compare(oseg[a], oseg[b]) })
		n := len(ord)
		j.sorted[0] = slices.Grow(j.sorted[0][:0], n)[:n]
		j.sorted[1] = slices.Grow(j.sorted[1][:0], n)[:n]
		j.sorted[2] = slices.Grow(j.sorted[2][:0], n)[:n]
		ms, os, or = j.sorted[0], j.sorted[1], j.sorted[2]
		for k, p := range ord {
			ms[k], os[k], or[k] = mine[p], oseg[p], orow[p]
		}
	}
	mcols, err := takeCols(mem, rec, ms)
	if err != nil {
		return nil, err
	}
	ocols, err := gather(mem, other.segs.recs, os, or)
	if err != nil {
		releaseAll(mcols)
		return nil, err
	}
	if w == Left {
		return newBatch(j.out, append(mcols, ocols...), len(ms)), nil
	}
	return newBatch(j.out, append(ocols, mcols...), len(ms)), nil
}

// Expire drops the buffered rows that no row at or after watermark can
// join (left: time+Upper < watermark; right: time-Lower < watermark):
// from then on they join no row, and they are removed, and the batches
// left without a buffered row released, by the next compaction of their
// side (see [Interval]). Later Adds do not buffer rows already that old.
// A watermark below an earlier one is ignored.
func (j *Interval) Expire(watermark int64) {
	if watermark <= j.wm {
		return
	}
	j.wm = watermark
	for w := range j.sides {
		if len(j.sides[w].seg) > 0 && (j.dead(Which(w), j.cut[w], watermark) || j.added[w] >= max(j.kept[w], compactMin)) {
			j.compact(Which(w))
		}
	}
}

// compact removes the dead rows of side w, releases the batches left
// without a row and sets the side's next compaction: when the median time
// of its rows (sampled) is dead.
func (j *Interval) compact(w Which) {
	s := j.sides[w]
	s.retain(func(e int) bool { return !j.dead(w, s.time[e], j.wm) })
	j.added[w], j.kept[w] = 0, len(s.time)
	n := len(s.time)
	if n == 0 {
		j.cut[w] = math.MinInt64 // compact the rows added next at once
		return
	}
	// The rows are about in time order: 63 evenly spaced ones sample
	// their times.
	var sample [63]int64
	k := min(n, len(sample))
	for i := range k {
		sample[i] = s.time[i*n/k]
	}
	slices.Sort(sample[:k])
	j.cut[w] = sample[k/2]
}

// Close releases every buffered batch. The join is unusable after.
func (j *Interval) Close() {
	for _, s := range j.sides {
		s.close()
	}
}
