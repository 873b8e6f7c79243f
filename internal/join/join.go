// Package join holds the columnar machinery of stream joins: an interval
// join and a window join of two keyed streams, and a lookup join of a
// stream against a table holding the latest row per key.
//
// All joins are inner joins unless said otherwise (the lookup join also
// has a left-outer mode). Keys are one or more int64 or string columns;
// a row with a null in any key column never joins. Times are int64
// milliseconds since the Unix epoch, read from an int64 or millisecond
// timestamp column; a row with a null time never joins (but in an
// unbounded interval join without time columns, the regular join). A watermark W
// promises that no row with a time below W will arrive any more.
//
// Output rows are the left (or probe) columns followed by the right (or
// table) columns. A field keeps its name unless the other side has a
// field of the same name; then both are prefixed with their side's
// prefix ("left_" and "right_" unless configured). A name that still
// clashes is a configuration error.
//
// Memory: input batches are borrowed; the joins retain (Retain) the
// batches they buffer instead of copying rows, and hold on to a batch
// while at least one of its rows may still join (see each type's doc);
// emitted batches are handed over to the caller, who releases them.
// Close releases everything. Each value is used from one goroutine.
//
// Hot paths are batch-wide: key columns are hashed once per batch with
// kernels.HashColumns, matches are found through a hash index into
// (batch, row) references and emitted by gathering with kernels.Take.
package join

import (
	"fmt"
	"slices"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/kernels"
)

// Side describes one input of a join.
type Side struct {
	// Schema of the side's batches.
	Schema *arrow.Schema
	// Keys are the indexes of the key columns (int64 or string), matched
	// pairwise with the other side's.
	Keys []int
	// Time is the index of the event-time column (int64 or millisecond
	// timestamp); ignored by the lookup table.
	Time int
	// Prefix is put in front of the side's field names that clash with
	// the other side's; empty: "left_" or "right_".
	Prefix string
}

// Which side of a two-input join a batch belongs to.
type Which uint8

const (
	Left Which = iota
	Right
)

func (w Which) String() string {
	if w == Left {
		return "left"
	}
	return "right"
}

func isTime(dt arrow.DataType) bool {
	if dt.ID() == arrow.INT64 {
		return true
	}
	ts, ok := dt.(*arrow.TimestampType)
	return ok && ts.Unit == arrow.Millisecond
}

func timeValues(a arrow.Array) []int64 {
	switch c := a.(type) {
	case *array.Int64:
		return c.Int64Values()
	case *array.Timestamp:
		v := c.TimestampValues()
		return unsafe.Slice((*int64)(unsafe.Pointer(unsafe.SliceData(v))), len(v))
	}
	return nil
}

// checkSides validates the two sides' keys (and time columns when
// withTime) and returns the output fields, left then right; outer makes
// the right side's fields nullable.
func checkSides(l, r *Side, withTime, outer bool) ([]arrow.Field, error) {
	if len(l.Keys) == 0 || len(l.Keys) != len(r.Keys) {
		return nil, fmt.Errorf("join: %d left and %d right key columns: want the same, at least one", len(l.Keys), len(r.Keys))
	}
	for i := range l.Keys {
		for _, s := range []struct {
			side *Side
			name string
		}{{l, "left"}, {r, "right"}} {
			k := s.side.Keys[i]
			if k < 0 || k >= s.side.Schema.NumFields() {
				return nil, fmt.Errorf("join: %s key column %d of %d", s.name, k, s.side.Schema.NumFields())
			}
			if id := s.side.Schema.Field(k).Type.ID(); id != arrow.INT64 && id != arrow.STRING {
				return nil, fmt.Errorf("join: %s key %s: type %s not supported (int64, string)", s.name, s.side.Schema.Field(k).Name, s.side.Schema.Field(k).Type)
			}
		}
		if !arrow.TypeEqual(l.Schema.Field(l.Keys[i]).Type, r.Schema.Field(r.Keys[i]).Type) {
			return nil, fmt.Errorf("join: key %d: left %s, right %s: want the same type", i, l.Schema.Field(l.Keys[i]).Type, r.Schema.Field(r.Keys[i]).Type)
		}
	}
	if withTime {
		for _, s := range []*Side{l, r} {
			if s.Time < 0 || s.Time >= s.Schema.NumFields() || !isTime(s.Schema.Field(s.Time).Type) {
				return nil, fmt.Errorf("join: time column %d: want an int64 or millisecond timestamp column", s.Time)
			}
		}
	}
	return outputFields(l, r, outer)
}

// outputFields applies the naming rule of the package doc.
func outputFields(l, r *Side, outer bool) ([]arrow.Field, error) {
	lp, rp := l.Prefix, r.Prefix
	if lp == "" {
		lp = "left_"
	}
	if rp == "" {
		rp = "right_"
	}
	names := func(s *arrow.Schema) map[string]bool {
		m := map[string]bool{}
		for _, f := range s.Fields() {
			m[f.Name] = true
		}
		return m
	}
	ln, rn := names(l.Schema), names(r.Schema)
	var out []arrow.Field
	seen := map[string]bool{}
	add := func(f arrow.Field, other map[string]bool, prefix string, nullable bool) error {
		if other[f.Name] {
			f.Name = prefix + f.Name
		}
		if seen[f.Name] {
			return fmt.Errorf("join: output field %q twice: set the prefixes", f.Name)
		}
		seen[f.Name] = true
		f.Nullable = f.Nullable || nullable
		out = append(out, f)
		return nil
	}
	for _, f := range l.Schema.Fields() {
		if err := add(f, rn, lp, false); err != nil {
			return nil, err
		}
	}
	for _, f := range r.Schema.Fields() {
		if err := add(f, ln, rp, outer); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// keyCol is one key column of a batch, for equality checks.
type keyCol struct {
	i64 []int64
	str *array.String
}

// batchKeys are the key columns of a buffered batch.
type batchKeys []keyCol

func newBatchKeys(rec arrow.RecordBatch, keys []int) batchKeys {
	bk := make(batchKeys, len(keys))
	for i, k := range keys {
		switch c := rec.Column(k).(type) {
		case *array.Int64:
			bk[i].i64 = c.Int64Values()
		case *array.String:
			bk[i].str = c
		}
	}
	return bk
}

// keysEqual compares row a of ka with row b of kb (types checked at
// construction).
func keysEqual(ka batchKeys, a int32, kb batchKeys, b int32) bool {
	for i := range ka {
		if ka[i].i64 != nil {
			if ka[i].i64[a] != kb[i].i64[b] {
				return false
			}
		} else if ka[i].str.Value(int(a)) != kb[i].str.Value(int(b)) {
			return false
		}
	}
	return true
}

// hashBatch hashes the key columns of rec into hashes and sets ok[i] when
// row i has no null key (and, when tcol is not nil, no null time).
func hashBatch(rec arrow.RecordBatch, keys []int, tcol arrow.Array, hashes []uint64, ok []bool) error {
	cols := make([]arrow.Array, len(keys))
	for i, k := range keys {
		cols[i] = rec.Column(k)
	}
	if err := kernels.HashColumns(cols, hashes); err != nil {
		return fmt.Errorf("join: hash keys: %w", err)
	}
	for i := range ok {
		ok[i] = true
	}
	if tcol != nil {
		cols = append(cols, tcol)
	}
	for _, c := range cols {
		if c.NullN() == 0 {
			continue
		}
		bm, off := c.NullBitmapBytes(), c.Data().Offset()
		for i := range ok {
			ok[i] = ok[i] && bitutil.BitIsSet(bm, off+i)
		}
	}
	return nil
}

// segments are the batches a join buffers, with the number of their
// rows still referenced; a batch is released when that drops to zero.
type segments struct {
	recs []arrow.RecordBatch // nil: released, slot free
	keys []batchKeys
	live []int32
	free []int32
}

func (s *segments) add(rec arrow.RecordBatch, keys []int) int32 {
	rec.Retain()
	var id int32
	if n := len(s.free); n > 0 {
		id = s.free[n-1]
		s.free = s.free[:n-1]
		s.recs[id], s.keys[id], s.live[id] = rec, newBatchKeys(rec, keys), 0
	} else {
		id = int32(len(s.recs))
		s.recs = append(s.recs, rec)
		s.keys = append(s.keys, newBatchKeys(rec, keys))
		s.live = append(s.live, 0)
	}
	return id
}

// drop unreferences one row of segment id, releasing it at zero.
func (s *segments) drop(id int32) {
	s.live[id]--
	if s.live[id] == 0 {
		s.recs[id].Release()
		s.recs[id], s.keys[id] = nil, nil
		s.free = append(s.free, id)
	}
}

// releaseUnused releases a just-added segment none of whose rows was kept.
func (s *segments) releaseUnused(id int32) {
	if s.live[id] == 0 {
		s.live[id] = 1
		s.drop(id)
	}
}

func (s *segments) close() {
	for i, r := range s.recs {
		if r != nil {
			r.Release()
			s.recs[i] = nil
		}
	}
	s.recs, s.keys, s.live, s.free = nil, nil, nil, nil
}

// rows retained in buffered batches (live or not).
func (s *segments) retainedRows() int64 {
	var n int64
	for _, r := range s.recs {
		if r != nil {
			n += r.NumRows()
		}
	}
	return n
}

// gather returns the columns of rows (seg[i], row[i]) of segs in the
// order given: one kernels.Take per segment involved, then, when the
// references are not grouped by segment already, one more Take to put
// the rows in order.
func gather(mem memory.Allocator, segs []arrow.RecordBatch, seg, row []int32) ([]arrow.Array, error) {
	n := len(seg)
	if n == 0 {
		return nil, fmt.Errorf("join: gather of no rows")
	}
	single, sorted := true, true
	for i := 1; i < n; i++ {
		if seg[i] != seg[0] {
			single = false
		}
		if seg[i] < seg[i-1] {
			sorted = false
		}
	}
	if single {
		return takeCols(mem, segs[seg[0]], row)
	}
	var perm []int32
	if !sorted {
		perm = make([]int32, n)
		for i := range perm {
			perm[i] = int32(i)
		}
		slices.SortStableFunc(perm, func(a, b int32) int { return int(seg[a]) - int(seg[b]) })
	}
	at := func(j int) int32 {
		if perm == nil {
			return int32(j)
		}
		return perm[j]
	}
	var pieces [][]arrow.Array
	defer func() {
		for _, p := range pieces {
			releaseAll(p)
		}
	}()
	idx := make([]int32, 0, n)
	for j := 0; j < n; {
		s := seg[at(j)]
		idx = idx[:0]
		for ; j < n && seg[at(j)] == s; j++ {
			idx = append(idx, row[at(j)])
		}
		cols, err := takeCols(mem, segs[s], idx)
		if err != nil {
			return nil, err
		}
		pieces = append(pieces, cols)
	}
	ncols := len(pieces[0])
	out := make([]arrow.Array, ncols)
	part := make([]arrow.Array, len(pieces))
	for c := range ncols {
		for p := range pieces {
			part[p] = pieces[p][c]
		}
		a, err := array.Concatenate(part, mem)
		if err != nil {
			releaseAll(out)
			return nil, fmt.Errorf("join: concatenate: %w", err)
		}
		out[c] = a
	}
	if perm == nil {
		return out, nil
	}
	inv := make([]int32, n)
	for j, p := range perm {
		inv[p] = int32(j)
	}
	defer releaseAll(out)
	res := make([]arrow.Array, ncols)
	for c := range ncols {
		a, err := kernels.TakeArray(mem, out[c], inv)
		if err != nil {
			releaseAll(res)
			return nil, fmt.Errorf("join: gather: %w", err)
		}
		res[c] = a
	}
	return res, nil
}

func takeCols(mem memory.Allocator, rec arrow.RecordBatch, idx []int32) ([]arrow.Array, error) {
	t, err := kernels.Take(mem, rec, idx)
	if err != nil {
		return nil, fmt.Errorf("join: gather: %w", err)
	}
	defer t.Release()
	cols := make([]arrow.Array, t.NumCols())
	for i, c := range t.Columns() {
		c.Retain()
		cols[i] = c
	}
	return cols, nil
}

func releaseAll(cols []arrow.Array) {
	for i, c := range cols {
		if c != nil {
			c.Release()
			cols[i] = nil
		}
	}
}

// newBatch assembles the output batch over cols (which it takes over).
func newBatch(schema *arrow.Schema, cols []arrow.Array, n int) arrow.RecordBatch {
	rec := array.NewRecordBatch(schema, cols, int64(n))
	releaseAll(cols)
	return rec
}
