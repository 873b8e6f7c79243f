package join

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// State of the joins for checkpoints. A join's state is the rows each side
// buffers and its watermark: Buffered gathers a side's rows into one
// batch, to be written with the watermark at a checkpoint barrier, and a
// join restored from a checkpoint is a new join given the watermark
// (SetWatermark) and then the rows (Restore). What it emits afterwards is
// what the original would have.

// buffered gathers the distinct rows a side buffers, in the order they
// were buffered (a row held in several windows once); nil when none.
func (b *bufferedSide) buffered(mem memory.Allocator) (arrow.RecordBatch, error) {
	type ref struct{ seg, row int32 }
	seen := make(map[ref]bool, len(b.seg))
	var seg, row []int32
	for e := range b.seg {
		r := ref{b.seg[e], b.row[e]}
		if seen[r] {
			continue
		}
		seen[r] = true
		seg, row = append(seg, r.seg), append(row, r.row)
	}
	if len(seg) == 0 {
		return nil, nil
	}
	cols, err := gather(mem, b.segs.recs, seg, row)
	if err != nil {
		return nil, err
	}
	return newBatch(b.side.Schema, cols, len(seg)), nil
}

// Buffered returns the rows side w buffers, for a checkpoint (nil when
// none). The batch is handed over.
func (j *Interval) Buffered(mem memory.Allocator, w Which) (arrow.RecordBatch, error) {
	if len(j.sides[w].seg) > 0 {
		j.compact(w) // the dead rows are left out
	}
	return j.sides[w].buffered(mem)
}

// Watermark is the highest watermark Expire was given (math.MinInt64
// before any).
func (j *Interval) Watermark() int64 { return j.wm }

// SetWatermark is Expire: for a join restored from a checkpoint taken at
// watermark wm, before Restore.
func (j *Interval) SetWatermark(wm int64) { j.Expire(wm) }

// Restore buffers rec, rows of side w a checkpoint held, without joining
// them (they joined when they first came). rec is borrowed.
func (j *Interval) Restore(w Which, rec arrow.RecordBatch) error {
	me := j.sides[w]
	n := int(rec.NumRows())
	if n == 0 {
		return nil
	}
	if !rec.Schema().Equal(me.side.Schema) {
		return fmt.Errorf("join: %s batch schema %s, want %s", w, rec.Schema(), me.side.Schema)
	}
	j.hashes = grow(j.hashes, n)
	j.ok = grow(j.ok, n)
	tcol, ts := j.times(me.side, rec)
	if err := hashBatch(rec, me.side.Keys, tcol, j.hashes, j.ok); err != nil {
		return err
	}
	me.grow(n)
	id := me.segs.add(rec, me.side.Keys)
	for i, h := range j.hashes {
		if j.ok[i] && !j.dead(w, ts[i], j.wm) {
			me.insert(id, int32(i), ts[i], h)
			j.added[w]++
		}
	}
	me.segs.releaseUnused(id)
	return nil
}

// Buffered returns the rows side w buffers, each once whatever the number
// of its windows, for a checkpoint (nil when none). The batch is handed
// over.
func (j *Window) Buffered(mem memory.Allocator, w Which) (arrow.RecordBatch, error) {
	return j.sides[w].buffered(mem)
}

// Watermark is the highest watermark Fire was given (math.MinInt64 before
// any).
func (j *Window) Watermark() int64 { return j.wm }

// SetWatermark sets the watermark without firing: for a join restored
// from a checkpoint taken at watermark wm, before Restore (so that the
// windows fired before the checkpoint take no row again).
func (j *Window) SetWatermark(wm int64) { j.wm = max(j.wm, wm) }

// Restore buffers rec, rows of side w a checkpoint held, in their windows
// not fired yet. rec is borrowed.
func (j *Window) Restore(w Which, rec arrow.RecordBatch) error { return j.Add(w, rec) }

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// Buffered returns the table's rows, the latest of each key (in no
// particular order), for a checkpoint (nil when the table is empty). The
// batch is handed over. A table restored from a checkpoint is a new
// Lookup given this batch with [Lookup.Restore].
func (j *Lookup) Buffered(mem memory.Allocator) (arrow.RecordBatch, error) {
	var seg, row []int32
	for e, s := range j.eSeg {
		if s >= 0 {
			seg, row = append(seg, s), append(row, j.eRow[e])
		}
	}
	if len(seg) == 0 {
		return nil, nil
	}
	cols, err := gather(mem, j.segs.recs, seg, row)
	if err != nil {
		return nil, err
	}
	return newBatch(j.cfg.Table.Schema, cols, len(seg)), nil
}

// Restore upserts rec, the rows a checkpoint of the table held (see
// [Lookup.Buffered]). rec is borrowed.
func (j *Lookup) Restore(mem memory.Allocator, rec arrow.RecordBatch) error {
	return j.Upsert(mem, rec)
}
