package join

import (
	"fmt"
	"math"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/kernels"
	"github.com/meshflow/meshflow/internal/window"
)

// WindowConfig configures a window join: rows of the two sides in the
// same window of Spec (tumbling or sliding) with equal keys join.
type WindowConfig struct {
	Spec        window.Spec
	Left, Right Side
}

// Window is an inner window join of two keyed streams. Add buffers a
// batch of either side; Fire joins the windows the watermark has passed
// (end <= watermark), emits their pairs and drops their rows. A pair of
// rows sharing several sliding windows is emitted once per window.
//
// Output: the left columns, the right columns, then window_start and
// window_end (millisecond timestamps, UTC); those two names must not be
// output names of the sides.
//
// Memory: Add retains the input batch (no copy) when some of its rows
// fall into a window not yet fired, and records a (batch, row, window)
// reference per row and window; a batch is released when every window
// holding one of its rows has fired. Close releases everything.
type Window struct {
	cfg   WindowConfig
	out   *arrow.Schema
	sides [2]*bufferedSide
	wm    int64

	hashes []uint64
	ok     []bool
	rows   []int32
	starts []int64
}

// NewWindow returns an empty window join, or an error for a
// configuration it cannot join.
func NewWindow(cfg WindowConfig) (*Window, error) {
	if err := cfg.Spec.Validate(); err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	fields, err := checkSides(&cfg.Left, &cfg.Right, true, false)
	if err != nil {
		return nil, err
	}
	ts := &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}
	for _, f := range fields {
		if f.Name == "window_start" || f.Name == "window_end" {
			return nil, fmt.Errorf("join: output field %q clashes with the window bounds", f.Name)
		}
	}
	fields = append(fields, arrow.Field{Name: "window_start", Type: ts}, arrow.Field{Name: "window_end", Type: ts})
	j := &Window{cfg: cfg, out: arrow.NewSchema(fields, nil), wm: math.MinInt64}
	j.sides = [2]*bufferedSide{newBufferedSide(&j.cfg.Left, false), newBufferedSide(&j.cfg.Right, false)}
	return j, nil
}

// Schema is the schema of the batches Fire returns.
func (j *Window) Schema() *arrow.Schema { return j.out }

// Len is the number of (row, window) references of side w held.
func (j *Window) Len(w Which) int { return len(j.sides[w].seg) }

// Add buffers the rows of rec, a batch of side w, in their windows. Rows
// with a null key or time, and rows whose windows have all fired already
// (late rows), are dropped. rec is borrowed.
func (j *Window) Add(w Which, rec arrow.RecordBatch) error {
	me := j.sides[w]
	if !rec.Schema().Equal(me.side.Schema) {
		return fmt.Errorf("join: %s batch schema %s, want %s", w, rec.Schema(), me.side.Schema)
	}
	n := int(rec.NumRows())
	if n == 0 {
		return nil
	}
	j.hashes = slices.Grow(j.hashes[:0], n)[:n]
	j.ok = slices.Grow(j.ok[:0], n)[:n]
	tcol := rec.Column(me.side.Time)
	if err := hashBatch(rec, me.side.Keys, tcol, j.hashes, j.ok); err != nil {
		return err
	}
	var valid func(int) bool
	if slices.Contains(j.ok, false) {
		valid = func(i int) bool { return j.ok[i] }
	}
	var err error
	j.rows, j.starts, err = j.cfg.Spec.Assign(timeValues(tcol), valid, j.rows[:0], j.starts[:0])
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	me.grow(len(j.rows))
	id := me.segs.add(rec, me.side.Keys)
	for p, r := range j.rows {
		if s := j.starts[p]; !j.passed(s, j.wm) { // not fired yet
			me.insert(id, r, s, j.hashes[r])
		}
	}
	me.segs.releaseUnused(id)
	return nil
}

// Fire joins every window whose end is at or before watermark, returns
// the pairs (ordered by window start, then by the left rows' arrival;
// nil when there is none) and drops the windows' rows. The batch is
// handed over to the caller. A watermark below an earlier one fires
// nothing.
func (j *Window) Fire(mem memory.Allocator, watermark int64) (arrow.RecordBatch, error) {
	if watermark <= j.wm {
		return nil, nil
	}
	j.wm = watermark
	due := func(start int64) bool { return j.passed(start, watermark) }
	l, r := j.sides[Left], j.sides[Right]

	// Index the due right rows by (key hash, window start).
	var head hashIndex
	next := make([]int32, len(r.seg))
	for e, s := range r.time {
		if due(s) {
			next[e] = head.swap(kernels.HashCombine(r.hash[e], uint64(s)), int32(e))
		}
	}
	// Probe with the due left rows, window by window.
	var lefts []int32
	for e, s := range l.time {
		if due(s) {
			lefts = append(lefts, int32(e))
		}
	}
	slices.SortStableFunc(lefts, func(a, b int32) int {
		if l.time[a] < l.time[b] {
			return -1
		}
		if l.time[a] > l.time[b] {
			return 1
		}
		return 0
	})
	var lseg, lrow, rseg, rrow []int32
	var starts []int64
	if head.live > 0 {
		for _, e := range lefts {
			s := l.time[e]
			f := head.get(kernels.HashCombine(l.hash[e], uint64(s)))
			ls, lr := l.seg[e], l.row[e]
			// The chain is newest first: collect, then emit in arrival order.
			k := len(rseg)
			for ; f >= 0; f = next[f] {
				if r.time[f] != s || r.hash[f] != l.hash[e] || !keysEqual(l.segs.keys[ls], lr, r.segs.keys[r.seg[f]], r.row[f]) {
					continue
				}
				rseg = append(rseg, r.seg[f])
				rrow = append(rrow, r.row[f])
			}
			slices.Reverse(rseg[k:])
			slices.Reverse(rrow[k:])
			for range len(rseg) - k {
				lseg = append(lseg, ls)
				lrow = append(lrow, lr)
				starts = append(starts, s)
			}
		}
	}
	var out arrow.RecordBatch
	if len(lseg) > 0 {
		var err error
		if out, err = j.emit(mem, lseg, lrow, rseg, rrow, starts); err != nil {
			return nil, err
		}
	}
	for _, s := range j.sides {
		s.retain(func(e int) bool { return !due(s.time[e]) })
	}
	return out, nil
}

// passed reports whether watermark wm is at or past the end of the
// window starting at start.
func (j *Window) passed(start, wm int64) bool {
	size := j.cfg.Spec.Size
	return wm >= math.MinInt64+size && start <= wm-size
}

func (j *Window) emit(mem memory.Allocator, lseg, lrow, rseg, rrow []int32, starts []int64) (arrow.RecordBatch, error) {
	lcols, err := gather(mem, j.sides[Left].segs.recs, lseg, lrow)
	if err != nil {
		return nil, err
	}
	rcols, err := gather(mem, j.sides[Right].segs.recs, rseg, rrow)
	if err != nil {
		releaseAll(lcols)
		return nil, err
	}
	ts := j.out.Field(j.out.NumFields() - 1).Type.(*arrow.TimestampType)
	sb, eb := array.NewTimestampBuilder(mem, ts), array.NewTimestampBuilder(mem, ts)
	defer sb.Release()
	defer eb.Release()
	sb.Reserve(len(starts))
	eb.Reserve(len(starts))
	for _, s := range starts {
		sb.UnsafeAppend(arrow.Timestamp(s))
		eb.UnsafeAppend(arrow.Timestamp(s + j.cfg.Spec.Size))
	}
	cols := append(append(lcols, rcols...), sb.NewArray(), eb.NewArray())
	return newBatch(j.out, cols, len(starts)), nil
}

// Close releases every buffered batch. The join is unusable after.
func (j *Window) Close() {
	for _, s := range j.sides {
		s.close()
	}
}
