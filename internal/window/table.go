package window

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// AggKind is an aggregate function.
type AggKind uint8

const (
	// Count counts the rows (Column < 0) or the non-null values of Column.
	Count AggKind = iota
	// Sum adds the non-null values; null when there are none.
	Sum
	// Min and Max keep the least and the greatest non-null value.
	Min
	Max
	// Avg is the float64 mean of the non-null values.
	Avg
	// CountDistinct counts the distinct non-null values, exactly.
	CountDistinct
	// First and Last keep the value of the row with the earliest and the
	// latest event time (ties: the row added first, and last); null values
	// are skipped.
	First
	Last
	// User is a user-defined aggregate, made by Agg.User.
	User
)

var aggNames = [...]string{"count", "sum", "min", "max", "avg", "count_distinct", "first", "last", "user"}

func (k AggKind) String() string {
	if int(k) < len(aggNames) {
		return aggNames[k]
	}
	return fmt.Sprintf("AggKind(%d)", k)
}

// Agg is one aggregate of a Table: Kind over the input column Column
// (-1: none, for Count of rows), output as a column named Name. A User
// aggregate reads the columns Columns and is made by User, given their
// types, once per table.
type Agg struct {
	Kind    AggKind
	Column  int
	Name    string
	Columns []int
	User    func(in []arrow.DataType) (UDAF, error)
}

// Config configures a Table.
type Config struct {
	Spec Spec
	// Schema of the input batches.
	Schema *arrow.Schema
	// Keys are the indexes of the key columns (none: one global group per
	// window); Time the index of the event-time column (int64 or
	// timestamp, milliseconds).
	Keys []int
	Time int
	Aggs []Agg
	// AllowedLateness (ms) keeps a window for that long after the
	// watermark passed its end: a row arriving meanwhile updates it, and
	// the next Fire emits it again with the updated aggregates. A row all
	// of whose windows are past that is late: Add leaves it out and Late
	// lists it.
	AllowedLateness int64
	// Gap (ms) is the gap of session windows (NewSessions; Spec is then
	// not used).
	Gap int64
	// MaxParallelism is the number of key groups, in [1, 65536]: every
	// key Checkpoint writes starts with the key group of its key (see
	// Table.Checkpoint).
	MaxParallelism int
}

// Table holds the aggregates of every (key, window) with rows and not yet
// fired. Add folds a batch in; Fire emits and forgets the windows the
// watermark has passed. A Table is used from one goroutine.
type Table struct {
	cfg    Config
	out    *arrow.Schema
	keyEnc []keyEncoder

	// index finds a group by its index key; wins[start].fast instead
	// when the key is one int64 column (fastKey) and not null.
	index   map[string]int32
	fastKey bool
	// wins holds the groups of each window start, so that Fire visits
	// only the windows due; cache is a direct-mapped cache of its
	// entries for the batch's (row, window) pairs (reset when windows
	// are forgotten).
	wins  map[int64]*winGroups
	cache [8]winCache
	// keyIdx and slots cache each key's groups of its recent windows
	// (sliding windows of a fast table, see slot); freeSlots are the
	// slot rings of forgotten keys.
	keyIdx    map[int64]int32
	slots     []slot
	freeSlots []int32
	slideMs   int64
	slotMask  uint64
	// Per group: its index key (encoded key | window start), key group,
	// window start, whether it changed since Fire last emitted it.
	gkey  []string
	kgrp  []uint16
	start []int64
	dirty []bool
	// changed marks the groups added or updated since the last
	// Checkpoint; removed are the groups forgotten since.
	changed []bool
	// stored marks the groups a Checkpoint wrote (or Restore read): only
	// those are deleted from the store when forgotten.
	stored  []bool
	removed []removedGroup
	free    []int32
	live    int

	// wm is the highest watermark Fire was given.
	wm int64
	// late are the rows of the last Add that were late.
	late []int32

	accs []accumulator

	// Scratch, reused across batches.
	rows     []int32
	starts   []int64
	gids     []int32
	buf      []byte
	keys     []arrow.Array
	kbuf     []byte  // the encoded keys of the batch's rows
	koff     []int32 // row i's key is kbuf[koff[i]:koff[i+1]]
	kpos     []int32
	kh       keyHasher
	pend     []newRow // the groups new in the batch
	prow     []int32  // their rows
	due      []int32
	sortBuf  []fastSort
	fastKeys []int64
}

// NewTable returns an empty table, or an error for a configuration it
// cannot aggregate (a column type it has no aggregate for, say).
func NewTable(cfg Config) (*Table, error) {
	if err := cfg.Spec.Validate(); err != nil {
		return nil, err
	}
	encs, accs, out, err := outputs(&cfg)
	if err != nil {
		return nil, err
	}
	t := &Table{cfg: cfg, index: map[string]int32{}, wins: map[int64]*winGroups{}, wm: math.MinInt64, keyEnc: encs, accs: accs, out: out}
	t.kh = keyHasher{mem: memory.DefaultAllocator, maxP: cfg.MaxParallelism}
	t.fastKey = len(cfg.Keys) == 1 && cfg.Schema.Field(cfg.Keys[0]).Type.ID() == arrow.INT64
	return t, nil
}

// removedGroup is a group forgotten: its key group and index key.
type removedGroup struct {
	kg  uint16
	key string
}

// fastWin is the index key of a group whose key is one non-null int64.
type fastWin struct{ key, start int64 }

// winGroups are the groups of one window start: all of them, in the
// order they were made, and those of fast keys by key.
type winGroups struct {
	groups []int32
	fast   map[int64]int32
}

// winCache is an entry of Table.cache.
type winCache struct {
	start int64
	w     *winGroups
}

// win returns the groups of the window starting at start, made if new.
func (t *Table) win(start int64) *winGroups {
	c := &t.cache[(uint64(start)*0x9E3779B97F4A7C15)>>61]
	if c.w != nil && c.start == start {
		return c.w
	}
	w := t.wins[start]
	if w == nil {
		w = &winGroups{fast: map[int64]int32{}}
		t.wins[start] = w
	}
	c.start, c.w = start, w
	return w
}

// fastOf returns the fastWin of the index key key, if it has one.
func (t *Table) fastOf(key string) (fastWin, bool) {
	if !t.fastKey || len(key) != 17 || key[0] != 1 {
		return fastWin{}, false
	}
	return fastWin{int64(le64(key[1:9])), int64(le64(key[9:]))}, true
}

func le64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// group returns the group of the index key key.
func (t *Table) group(key string) (int32, bool) {
	if fw, ok := t.fastOf(key); ok {
		w := t.wins[fw.start]
		if w == nil {
			return 0, false
		}
		g, ok := w.fast[fw.key]
		return g, ok
	}
	g, ok := t.index[key]
	return g, ok
}

func isTime(dt arrow.DataType) bool {
	if dt.ID() == arrow.INT64 {
		return true
	}
	ts, ok := dt.(*arrow.TimestampType)
	return ok && ts.Unit == arrow.Millisecond
}

// Schema is the schema of the batches Fire returns: the key columns,
// window_start, window_end, then one column per aggregate.
func (t *Table) Schema() *arrow.Schema { return t.out }

// Len is the number of (key, window) groups held.
func (t *Table) Len() int { return t.live }

// Add folds the rows of rec into the aggregates of their windows. Rows
// with a null time belong to no window and are skipped. rec is borrowed.
func (t *Table) Add(rec arrow.RecordBatch) error {
	if !rec.Schema().Equal(t.cfg.Schema) {
		return fmt.Errorf("window: batch schema %s, want %s", rec.Schema(), t.cfg.Schema)
	}
	tcol := rec.Column(t.cfg.Time)
	ts := timeValues(tcol)
	var valid func(int) bool
	if tcol.NullN() > 0 {
		valid = tcol.IsValid
	}
	var err error
	t.rows, t.starts, err = t.cfg.Spec.Assign(ts, valid, t.rows[:0], t.starts[:0])
	if err != nil {
		return err
	}
	t.dropClosed()
	t.gids = slices.Grow(t.gids[:0], len(t.rows))[:len(t.rows)]
	if len(t.rows) == 0 {
		return nil
	}
	n := int(rec.NumRows())
	t.keys = t.keys[:0]
	for _, k := range t.cfg.Keys {
		t.keys = append(t.keys, rec.Column(k))
	}
	// One map lookup per (row, window): by (key, start) for one int64 key
	// column, else by the key's bytes (encoded a column at a time) and
	// start. Then, when the batch made groups, the key group of every
	// row, a column at a time.
	t.pend = t.pend[:0]
	if t.fastKey {
		t.addFast()
	} else {
		t.kbuf, t.koff, t.kpos = encodeKeys(t.keys, n, t.kbuf, t.koff, t.kpos)
		for p, row := range t.rows {
			t.gids[p] = t.groupOf(t.kbuf[t.koff[row]:t.koff[row+1]], row, t.starts[p])
		}
	}
	if len(t.pend) > 0 {
		t.prow = t.prow[:0]
		for _, p := range t.pend {
			t.prow = append(t.prow, p.row)
		}
		kgs, err := t.kh.of(t.keys, n, t.prow)
		if err != nil {
			return err
		}
		for i, p := range t.pend {
			t.kgrp[p.id] = kgs[i]
		}
	}
	for _, g := range t.gids {
		t.dirty[g], t.changed[g] = true, true
	}
	updateAccs(&t.cfg, t.accs, rec, t.rows, t.gids, ts)
	return nil
}

// addFast sets t.gids for a batch keyed by one int64 column.
func (t *Table) addFast() {
	col := t.keys[0].(*array.Int64)
	vals := col.Int64Values()
	nulls := col.NullN() > 0
	slots := t.slotsOn()
	lastRow := int32(-1)
	var base int
	for p, row := range t.rows {
		if nulls && col.IsNull(int(row)) {
			t.gids[p] = t.groupOf([]byte{0}, row, t.starts[p])
			continue
		}
		start := t.starts[p]
		var e *slot
		if slots {
			// A row's windows are consecutive pairs: its key's slots are
			// looked up once.
			if row != lastRow {
				base, lastRow = t.keySlots(vals[row]), row
			}
			e = &t.slots[base+int(uint64(start/t.slideMs)&t.slotMask)]
			if e.g1 != 0 && e.start == start {
				t.gids[p] = e.g1 - 1
				continue
			}
		}
		g, ok := t.win(start).fast[vals[row]]
		if !ok {
			b := append(t.buf[:0], 1)
			b = binary.LittleEndian.AppendUint64(b, uint64(vals[row]))
			b = binary.LittleEndian.AppendUint64(b, uint64(start))
			t.buf = b
			g = t.newGroup(string(b), 0, start)
			t.pend = append(t.pend, newRow{g, row})
		}
		if e != nil {
			e.start, e.g1 = start, g+1
		}
		t.gids[p] = g
	}
}

// slot caches, for a key of a fast table with sliding windows, the group
// of one of its recent windows: the window starting at start, group
// g1-1 (g1 == 0: empty). A key's slots are a ring indexed by start/slide.
// A group is freed only when its window closes, and no row reaches a
// closed window again, so an entry whose start matches is its group.
type slot struct {
	start int64
	g1    int32
}

// slotsOn reports whether the table caches groups per key: one int64
// key and sliding windows (a row in several windows).
func (t *Table) slotsOn() bool {
	sl := t.cfg.Spec.slide()
	if !t.fastKey || sl >= t.cfg.Spec.Size {
		return false
	}
	if t.slotMask == 0 {
		per := (t.cfg.Spec.Size + sl - 1) / sl
		r := uint64(1)
		for r < uint64(per)+1 {
			r <<= 1
		}
		t.slideMs, t.slotMask, t.keyIdx = sl, r-1, map[int64]int32{}
	}
	return true
}

// keySlots returns the index of the first slot of key, made if new.
func (t *Table) keySlots(key int64) int {
	r := int(t.slotMask + 1)
	idx, ok := t.keyIdx[key]
	if !ok {
		if n := len(t.freeSlots); n > 0 {
			idx = t.freeSlots[n-1]
			t.freeSlots = t.freeSlots[:n-1]
			clear(t.slots[int(idx)*r : int(idx+1)*r])
		} else {
			idx = int32(len(t.slots) / r)
			t.slots = append(t.slots, make([]slot, r)...)
		}
		t.keyIdx[key] = idx
	}
	return int(idx) * r
}

// dropSlots forgets the slots of key when all its windows are closed.
func (t *Table) dropSlots(key int64) {
	idx, ok := t.keyIdx[key]
	if !ok {
		return
	}
	r := int(t.slotMask + 1)
	for _, e := range t.slots[int(idx)*r : int(idx+1)*r] {
		if e.g1 != 0 && !t.closed(e.start) {
			return
		}
	}
	delete(t.keyIdx, key)
	t.freeSlots = append(t.freeSlots, idx)
}

// groupOf returns the group of the encoded key of row and window start,
// making it if new: a key index holds (not a fastWin).
func (t *Table) groupOf(key []byte, row int32, start int64) int32 {
	b := binary.LittleEndian.AppendUint64(append(t.buf[:0], key...), uint64(start))
	t.buf = b
	g, ok := t.index[string(b)]
	if !ok {
		g = t.newGroup(string(b), 0, start)
		t.pend = append(t.pend, newRow{g, row})
	}
	return g
}

// closed reports whether the window starting at start takes no more
// rows: the watermark passed its end plus the allowed lateness.
func (t *Table) closed(start int64) bool {
	end := start + t.cfg.Spec.Size + t.cfg.AllowedLateness
	return end <= t.wm && t.wm != math.MinInt64
}

// dropClosed removes the (row, window) pairs of closed windows from
// t.rows and t.starts, and records in t.late the rows left with none.
func (t *Table) dropClosed() {
	t.late = t.late[:0]
	n := 0
	for p, row := range t.rows {
		if !t.closed(t.starts[p]) {
			t.rows[n], t.starts[n] = row, t.starts[p]
			n++
			continue
		}
		// A row's pairs are consecutive: it is late when none is kept.
		last := p+1 == len(t.rows) || t.rows[p+1] != row
		if last && (n == 0 || t.rows[n-1] != row) {
			t.late = append(t.late, row)
		}
	}
	t.rows, t.starts = t.rows[:n], t.starts[:n]
}

// Watermark is the highest watermark Fire was given (math.MinInt64
// before any).
func (t *Table) Watermark() int64 { return t.wm }

// SetWatermark sets the watermark the table judges lateness by, without
// firing: for a table restored from a checkpoint taken at watermark wm.
// The next Fire emits what is due.
func (t *Table) SetWatermark(wm int64) { t.wm = max(t.wm, wm) }

// Late returns the rows of the batch last added that were late: every
// window holding them was closed. They are valid until the next Add.
func (t *Table) Late() []int32 { return t.late }

func (t *Table) newGroup(key string, kg uint16, start int64) int32 {
	var g int32
	if n := len(t.free); n > 0 {
		g = t.free[n-1]
		t.free = t.free[:n-1]
		t.gkey[g], t.kgrp[g], t.start[g], t.stored[g] = key, kg, start, false
		for _, acc := range t.accs {
			acc.reset(g)
		}
	} else {
		g = int32(len(t.gkey))
		t.gkey = append(t.gkey, key)
		t.kgrp = append(t.kgrp, kg)
		t.start = append(t.start, start)
		t.dirty = append(t.dirty, false)
		t.changed = append(t.changed, false)
		t.stored = append(t.stored, false)
		for _, acc := range t.accs {
			acc.grow(len(t.gkey))
		}
	}
	w := t.win(start)
	w.groups = append(w.groups, g)
	if fw, ok := t.fastOf(key); ok {
		w.fast[fw.key] = g
	} else {
		t.index[key] = g
	}
	t.live++
	return g
}

// Fire returns the aggregates of every window whose end is at or before
// watermark and that changed since it was last emitted (ordered by window
// start, then key bytes), and forgets the windows closed for good (end
// plus the allowed lateness at or before watermark); nil when there is
// nothing to emit. A window updated by late rows within the allowed
// lateness is emitted again, whole. The batch is handed over to the
// caller.
func (t *Table) Fire(mem memory.Allocator, watermark int64) (arrow.RecordBatch, error) {
	t.wm = max(t.wm, watermark)
	size := t.cfg.Spec.Size
	// The windows due, oldest first.
	var starts []int64
	for start := range t.wins {
		if start <= t.wm-size {
			starts = append(starts, start)
		}
	}
	if len(starts) == 0 {
		return nil, nil
	}
	slices.Sort(starts)
	due := t.due[:0]
	allFast := true
	for _, start := range starts {
		from := len(due)
		fast := true
		for _, g := range t.wins[start].groups {
			if t.dirty[g] {
				due = append(due, g)
				fast = fast && t.fastKey && len(t.gkey[g]) == 17 && t.gkey[g][0] == 1
			}
		}
		// By key bytes within the window: for one non-null int64 key, the
		// order of its little-endian bytes is that of the byte-reversed
		// value.
		allFast = allFast && fast
		if fast {
			t.sortFast(due[from:])
		} else {
			slices.SortFunc(due[from:], func(a, b int32) int { return cmp.Compare(t.gkey[a], t.gkey[b]) })
		}
	}
	t.due = due
	var out arrow.RecordBatch
	if len(due) > 0 {
		var fastKeys []int64
		if allFast {
			t.fastKeys = t.fastKeys[:0]
			for _, g := range due {
				t.fastKeys = append(t.fastKeys, int64(le64(t.gkey[g][1:9])))
			}
			fastKeys = t.fastKeys
		}
		var err error
		out, err = emit(mem, t.out, t.keyEnc, t.accs, due, func(g int32) []byte { return unsafe.Slice(unsafe.StringData(t.gkey[g]), len(t.gkey[g])) },
			func(g int32) (int64, int64) { return t.start[g], t.start[g] + size }, fastKeys)
		if err != nil {
			return nil, err
		}
		for _, g := range due {
			t.dirty[g], t.changed[g] = false, true
		}
	}
	forgot := false
	for _, start := range starts {
		if !t.closed(start) {
			continue
		}
		for _, g := range t.wins[start].groups {
			if fw, ok := t.fastOf(t.gkey[g]); !ok {
				delete(t.index, t.gkey[g])
			} else if t.keyIdx != nil {
				t.dropSlots(fw.key)
			}
			if t.stored[g] {
				t.removed = append(t.removed, removedGroup{t.kgrp[g], t.gkey[g]})
			}
			t.gkey[g], t.changed[g] = "", false
			t.free = append(t.free, g)
			t.live--
		}
		delete(t.wins, start)
		forgot = true
	}
	if forgot {
		t.cache = [8]winCache{}
	}
	return out, nil
}

// sortFast sorts groups of one window whose keys are one non-null int64
// by their index keys' bytes.
func (t *Table) sortFast(gs []int32) {
	if len(gs) < 2 {
		return
	}
	t.sortBuf = t.sortBuf[:0]
	for _, g := range gs {
		t.sortBuf = append(t.sortBuf, fastSort{bits.ReverseBytes64(le64(t.gkey[g][1:9])), g})
	}
	slices.SortFunc(t.sortBuf, func(a, b fastSort) int { return cmp.Compare(a.k, b.k) })
	for i, e := range t.sortBuf {
		gs[i] = e.g
	}
}

// fastSort is a group and its sort key.
type fastSort struct {
	k uint64
	g int32
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

// keyEncoder writes a key column's value of a row into a group's index
// key, and reads it back into a builder.
type keyEncoder interface {
	append(dst []byte, col arrow.Array, row int) []byte
	appendValue(b array.Builder, src []byte) ([]byte, error)
}

func newKeyEncoder(dt arrow.DataType) (keyEncoder, error) {
	switch dt.ID() {
	case arrow.INT64:
		return int64Key{}, nil
	case arrow.STRING:
		return stringKey{}, nil
	}
	return nil, fmt.Errorf("key type %s not supported (int64, string)", dt)
}

type int64Key struct{}

func (int64Key) append(dst []byte, col arrow.Array, row int) []byte {
	if col.IsNull(row) {
		return append(dst, 0)
	}
	dst = append(dst, 1)
	return binary.LittleEndian.AppendUint64(dst, uint64(col.(*array.Int64).Value(row)))
}

func (int64Key) appendValue(b array.Builder, src []byte) ([]byte, error) {
	if len(src) < 1 {
		return nil, errTruncated
	}
	if src[0] == 0 {
		b.AppendNull()
		return src[1:], nil
	}
	if len(src) < 9 {
		return nil, errTruncated
	}
	b.(*array.Int64Builder).Append(int64(binary.LittleEndian.Uint64(src[1:])))
	return src[9:], nil
}

type stringKey struct{}

func (stringKey) append(dst []byte, col arrow.Array, row int) []byte {
	if col.IsNull(row) {
		return append(dst, 0)
	}
	v := col.(*array.String).Value(row)
	dst = append(dst, 1)
	dst = binary.AppendUvarint(dst, uint64(len(v)))
	return append(dst, v...)
}

func (stringKey) appendValue(b array.Builder, src []byte) ([]byte, error) {
	if len(src) < 1 {
		return nil, errTruncated
	}
	if src[0] == 0 {
		b.AppendNull()
		return src[1:], nil
	}
	n, k := binary.Uvarint(src[1:])
	if k <= 0 || uint64(len(src)-1-k) < n {
		return nil, errTruncated
	}
	b.(*array.StringBuilder).Append(string(src[1+k : 1+k+int(n)]))
	return src[1+k+int(n):], nil
}
