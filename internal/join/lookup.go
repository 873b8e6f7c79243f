package join

import (
	"fmt"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// LookupConfig configures a lookup join of a probe stream against a table
// kept from a table stream.
type LookupConfig struct {
	// Probe is the streamed side (its Time is not used); Table the side
	// whose latest row per key the table keeps.
	Probe, Table Side
	// Delete is the index of a boolean column of the table stream: a row
	// with true there deletes its key instead of upserting it. Negative:
	// no deletes.
	Delete int
	// Outer makes Probe a left-outer join: probe rows without a match are
	// emitted once, with nulls in the table columns.
	Outer bool
}

// Lookup keeps the latest row per key of a table stream (in arrival
// order: a later row replaces an earlier one, whatever their times) and
// joins probe batches against it. Rows of the table stream with a null in
// a key column are ignored.
//
// Memory: Upsert retains the input batch (no copy) while it holds the
// latest row of some key. When the retained batches hold more than twice
// as many rows as the table has keys (and more than a few thousand), the
// live rows are copied into one new batch and the old ones released, so
// the memory held stays proportional to the number of keys. Close
// releases everything.
type Lookup struct {
	cfg LookupConfig
	out *arrow.Schema

	segs    segments
	nullSeg int32 // a one-row all-null table batch (outer), or -1

	head             hashIndex
	eSeg, eRow, next []int32
	hash             []uint64
	freeE            []int32
	live             int

	hashes     []uint64
	ok         []bool
	compactMin int64
}

// minCompact is the number of retained rows below which a Lookup does
// not compact.
const minCompact = 4096

// NewLookup returns an empty lookup table, or an error for a
// configuration it cannot join.
func NewLookup(mem memory.Allocator, cfg LookupConfig) (*Lookup, error) {
	fields, err := checkSides(&cfg.Probe, &cfg.Table, false, cfg.Outer)
	if err != nil {
		return nil, err
	}
	if d := cfg.Delete; d >= cfg.Table.Schema.NumFields() || (d >= 0 && cfg.Table.Schema.Field(d).Type.ID() != arrow.BOOL) {
		return nil, fmt.Errorf("join: delete column %d: want a boolean column of the table", d)
	}
	j := &Lookup{cfg: cfg, out: arrow.NewSchema(fields, nil), nullSeg: -1, compactMin: minCompact}
	if cfg.Outer {
		s := cfg.Table.Schema
		cols := make([]arrow.Array, s.NumFields())
		for i, f := range s.Fields() {
			cols[i] = array.MakeArrayOfNull(mem, f.Type, 1)
		}
		rec := newBatch(s, cols, 1)
		j.nullSeg = j.segs.add(rec, cfg.Table.Keys)
		j.segs.live[j.nullSeg] = 1
		rec.Release()
	}
	return j, nil
}

// Schema is the schema of the batches Probe returns.
func (j *Lookup) Schema() *arrow.Schema { return j.out }

// Len is the number of keys in the table.
func (j *Lookup) Len() int { return j.live }

// find returns the entry whose key equals row i of keys (hash h), and the
// entry before it in its chain (-1: none).
func (j *Lookup) find(h uint64, keys batchKeys, i int32) (e, prev int32) {
	e, prev = j.head.get(h), -1
	for ; e >= 0; prev, e = e, j.next[e] {
		if j.hash[e] == h && keysEqual(keys, i, j.segs.keys[j.eSeg[e]], j.eRow[e]) {
			return e, prev
		}
	}
	return -1, -1
}

// Upsert applies the rows of rec, a batch of the table stream, in order.
// rec is borrowed.
func (j *Lookup) Upsert(mem memory.Allocator, rec arrow.RecordBatch) error {
	side := &j.cfg.Table
	if !rec.Schema().Equal(side.Schema) {
		return fmt.Errorf("join: table batch schema %s, want %s", rec.Schema(), side.Schema)
	}
	n := int(rec.NumRows())
	if n == 0 {
		return nil
	}
	j.hashes = slices.Grow(j.hashes[:0], n)[:n]
	j.ok = slices.Grow(j.ok[:0], n)[:n]
	if err := hashBatch(rec, side.Keys, nil, j.hashes, j.ok); err != nil {
		return err
	}
	var del *array.Boolean
	if j.cfg.Delete >= 0 {
		del = rec.Column(j.cfg.Delete).(*array.Boolean)
	}
	id := j.segs.add(rec, side.Keys)
	j.segs.live[id] = 1 // held until the end of the batch
	keys := j.segs.keys[id]
	for i, h := range j.hashes {
		if !j.ok[i] {
			continue
		}
		e, prev := j.find(h, keys, int32(i))
		if del != nil && del.IsValid(i) && del.Value(i) {
			if e >= 0 {
				j.remove(e, prev)
			}
			continue
		}
		j.segs.live[id]++
		if e >= 0 {
			j.segs.drop(j.eSeg[e])
			j.eSeg[e], j.eRow[e] = id, int32(i)
			continue
		}
		j.insert(h, id, int32(i))
	}
	j.segs.drop(id)
	if r := j.segs.retainedRows(); r > j.compactMin && r > 2*int64(j.live)+1 {
		return j.compact(mem)
	}
	return nil
}

func (j *Lookup) insert(h uint64, seg, row int32) {
	var e int32
	if n := len(j.freeE); n > 0 {
		e = j.freeE[n-1]
		j.freeE = j.freeE[:n-1]
		j.eSeg[e], j.eRow[e], j.hash[e] = seg, row, h
	} else {
		e = int32(len(j.eSeg))
		j.eSeg = append(j.eSeg, seg)
		j.eRow = append(j.eRow, row)
		j.hash = append(j.hash, h)
		j.next = append(j.next, -1)
	}
	j.next[e] = j.head.swap(h, e)
	j.live++
}

func (j *Lookup) remove(e, prev int32) {
	if prev >= 0 {
		j.next[prev] = j.next[e]
	} else {
		j.head.set(j.hash[e], j.next[e])
	}
	j.segs.drop(j.eSeg[e])
	j.eSeg[e] = -1
	j.freeE = append(j.freeE, e)
	j.live--
}

// compact copies the live rows into one batch and releases the others.
func (j *Lookup) compact(mem memory.Allocator) error {
	var es, seg, row []int32
	for e, s := range j.eSeg {
		if s >= 0 {
			es = append(es, int32(e))
			seg = append(seg, s)
			row = append(row, j.eRow[e])
		}
	}
	if len(es) == 0 {
		return nil
	}
	cols, err := gather(mem, j.segs.recs, seg, row)
	if err != nil {
		return err
	}
	rec := newBatch(j.cfg.Table.Schema, cols, len(es))
	id := j.segs.add(rec, j.cfg.Table.Keys)
	rec.Release()
	for k, e := range es {
		j.segs.live[id]++
		j.segs.drop(j.eSeg[e])
		j.eSeg[e], j.eRow[e] = id, int32(k)
	}
	return nil
}

// Probe joins rec, a probe batch, against the table: every probe row with
// a key in the table is paired with that key's latest row; with Outer,
// the other probe rows are emitted with nulls in the table columns (probe
// rows with a null key too). Output rows follow the probe rows' order;
// nil when there is none. rec is borrowed; the result is handed over.
func (j *Lookup) Probe(mem memory.Allocator, rec arrow.RecordBatch) (arrow.RecordBatch, error) {
	side := &j.cfg.Probe
	if !rec.Schema().Equal(side.Schema) {
		return nil, fmt.Errorf("join: probe batch schema %s, want %s", rec.Schema(), side.Schema)
	}
	n := int(rec.NumRows())
	if n == 0 {
		return nil, nil
	}
	j.hashes = slices.Grow(j.hashes[:0], n)[:n]
	j.ok = slices.Grow(j.ok[:0], n)[:n]
	if err := hashBatch(rec, side.Keys, nil, j.hashes, j.ok); err != nil {
		return nil, err
	}
	keys := newBatchKeys(rec, side.Keys)
	var pidx, tseg, trow []int32
	for i, h := range j.hashes {
		e := int32(-1)
		if j.ok[i] && j.live > 0 {
			e, _ = j.find(h, keys, int32(i))
		}
		switch {
		case e >= 0:
			pidx = append(pidx, int32(i))
			tseg = append(tseg, j.eSeg[e])
			trow = append(trow, j.eRow[e])
		case j.cfg.Outer:
			tseg = append(tseg, j.nullSeg)
			trow = append(trow, 0)
		}
	}
	if len(tseg) == 0 {
		return nil, nil
	}
	var pcols []arrow.Array
	if j.cfg.Outer { // every probe row, in order: the probe columns as they are
		for _, c := range rec.Columns() {
			c.Retain()
			pcols = append(pcols, c)
		}
	} else {
		var err error
		if pcols, err = takeCols(mem, rec, pidx); err != nil {
			return nil, err
		}
	}
	tcols, err := gather(mem, j.segs.recs, tseg, trow)
	if err != nil {
		releaseAll(pcols)
		return nil, err
	}
	return newBatch(j.out, append(pcols, tcols...), len(tseg)), nil
}

// Close releases every batch held. The table is unusable after.
func (j *Lookup) Close() {
	j.segs.close()
	j.head = hashIndex{}
	j.eSeg, j.eRow, j.next, j.hash, j.freeE, j.live = nil, nil, nil, nil, nil, 0
}
