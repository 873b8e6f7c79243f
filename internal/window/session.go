package window

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Sessions holds the session windows of every key: the rows of a key
// closer than the gap to one another make a session [first, last+gap);
// a row within the gap of two sessions merges them. Add folds in a batch
// at a time, Fire emits the sessions the watermark has passed. A
// Sessions is used from one goroutine.
//
// Lateness: a row at time t is late when the watermark is at or past
// t+gap+AllowedLateness (its own session would be closed) and it falls
// in no session held when its batch came; late rows are left out and
// listed by Late. A row that merges into a held session updates it, and
// the session is emitted again. When rows merge sessions, the merged
// session takes the place of those it covers: it is emitted (once the
// watermark passes its end); the sessions it replaced are not emitted
// again, nor retracted.
type Sessions struct {
	cfg    Config
	gap    int64
	out    *arrow.Schema
	keyEnc []keyEncoder
	accs   []accumulator

	// Keys: by encoded key (intIdx for one int64 key column, non-null),
	// each with its sessions, sorted by start (they are disjoint, so by
	// end too).
	keyIdx   map[string]int32
	intIdx   map[int64]int32
	fastKey  bool
	keyBytes []string
	kgrp     []uint16 // per key: its key group
	sess     [][]int32
	freeKeys []int32

	// Per session (group): its key (-1: free), bounds, whether it changed
	// since Fire emitted it and since the last Checkpoint.
	gkey    []int32
	start   []int64
	end     []int64
	dirty   []bool
	changed []bool
	free    []int32
	live    int
	// removed are the store keys (key | start) forgotten since the last
	// Checkpoint: sessions closed, merged away or moved to an earlier
	// start.
	removed []string

	wm   int64
	late []int32

	// Scratch.
	kids    []int32
	newKeys []int32 // made since the last dropEmptyKeys
	slot    []int32 // per key: its place among the keys of the batch, or -1
	touched []int32 // the keys of the batch
	cnt     []int32
	rslot   []int32
	off     []int32
	pos     []int32
	order   []sessRow
	rows    []int32
	gids    []int32
	buf     []byte
	keys    []arrow.Array
	kh      keyHasher
	pend    []newRow // the keys new in the batch
	prow    []int32  // their rows
}

// newRow is a group (a key, for Sessions) made by the batch being added,
// and a row of it: its key group is that row's.
type newRow struct{ id, row int32 }

type sessRow struct {
	key int32
	row int32
	t   int64
}

// NewSessions returns an empty table of session windows of cfg.Gap ms
// (cfg.Spec is not used).
func NewSessions(cfg Config) (*Sessions, error) {
	if cfg.Gap <= 0 {
		return nil, fmt.Errorf("window: session gap %d ms: must be positive", cfg.Gap)
	}
	encs, accs, out, err := outputs(&cfg)
	if err != nil {
		return nil, err
	}
	s := &Sessions{cfg: cfg, gap: cfg.Gap, out: out, keyEnc: encs, accs: accs, keyIdx: map[string]int32{},
		intIdx: map[int64]int32{}, wm: math.MinInt64, kh: keyHasher{mem: memory.DefaultAllocator, maxP: cfg.MaxParallelism}}
	s.fastKey = len(cfg.Keys) == 1 && cfg.Schema.Field(cfg.Keys[0]).Type.ID() == arrow.INT64
	return s, nil
}

// Schema is the schema of the batches Fire returns.
func (s *Sessions) Schema() *arrow.Schema { return s.out }

// Len is the number of sessions held.
func (s *Sessions) Len() int { return s.live }

// Watermark is the highest watermark Fire was given.
func (s *Sessions) Watermark() int64 { return s.wm }

// SetWatermark sets the watermark lateness is judged by, without firing.
func (s *Sessions) SetWatermark(wm int64) { s.wm = max(s.wm, wm) }

// Late returns the rows of the batch last added that were late, in
// order; valid until the next Add.
func (s *Sessions) Late() []int32 { return s.late }

// plus is a+b, saturating at math.MaxInt64 (b >= 0).
func plus(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// Add folds the rows of rec into the sessions of their keys. Rows with a
// null time are skipped. rec is borrowed. The batch's rows are sorted by
// key and time (one pass resolving the key of each row, a counting sort
// by key, a sort by time only where a key's rows are out of order), cut
// into runs closer than the gap, each run placed once among its key's
// sessions, and the aggregates updated once per batch.
func (s *Sessions) Add(rec arrow.RecordBatch) error {
	if !rec.Schema().Equal(s.cfg.Schema) {
		return fmt.Errorf("window: batch schema %s, want %s", rec.Schema(), s.cfg.Schema)
	}
	tcol := rec.Column(s.cfg.Time)
	ts := timeValues(tcol)
	if err := s.resolveKeys(rec); err != nil {
		return err
	}
	s.groupRows(ts, tcol)
	s.late = s.late[:0]
	if s.wm != math.MinInt64 {
		// Late: its own session closed, and in no session held.
		keep := s.order[:0]
		for _, r := range s.order {
			if plus(plus(r.t, s.gap), s.cfg.AllowedLateness) <= s.wm && !s.held(r.key, r.t) {
				s.late = append(s.late, r.row)
				continue
			}
			keep = append(keep, r)
		}
		s.order = keep
		slices.Sort(s.late)
	}
	s.rows, s.gids = s.rows[:0], s.gids[:0]
	for p := 0; p < len(s.order); {
		k, first := s.order[p].key, s.order[p].t
		last, q := first, p+1
		for q < len(s.order) && s.order[q].key == k && s.order[q].t-last < s.gap {
			last = s.order[q].t
			q++
		}
		g := s.place(k, first, plus(last, s.gap))
		for _, r := range s.order[p:q] {
			s.rows = append(s.rows, r.row)
			s.gids = append(s.gids, g)
		}
		s.dirty[g], s.changed[g] = true, true
		p = q
	}
	s.dropEmptyKeys(s.newKeys)
	s.newKeys = s.newKeys[:0]
	updateAccs(&s.cfg, s.accs, rec, s.rows, s.gids, ts)
	return nil
}

// groupRows fills s.order with the rows of valid time, grouped by key (a
// counting sort over the keys of the batch, in the order they first
// come) and sorted by time within a key (rows of a key come mostly in
// time order: a check, and a sort only where they do not).
func (s *Sessions) groupRows(ts []int64, tcol arrow.Array) {
	nulls := tcol.NullN() > 0
	s.touched, s.cnt = s.touched[:0], s.cnt[:0]
	s.rslot = slices.Grow(s.rslot[:0], len(s.kids))[:len(s.kids)]
	n := 0
	for i, k := range s.kids {
		if nulls && tcol.IsNull(i) {
			s.rslot[i] = -1
			continue
		}
		sl := s.slot[k]
		if sl < 0 {
			sl = int32(len(s.touched))
			s.slot[k] = sl
			s.touched = append(s.touched, k)
			s.cnt = append(s.cnt, 0)
		}
		s.cnt[sl]++
		s.rslot[i] = sl
		n++
	}
	off := int32(0)
	for i, c := range s.cnt {
		s.cnt[i] = off
		off += c
	}
	s.order = slices.Grow(s.order[:0], n)[:n]
	for i, sl := range s.rslot {
		if sl < 0 {
			continue
		}
		s.order[s.cnt[sl]] = sessRow{key: s.touched[sl], row: int32(i), t: ts[i]}
		s.cnt[sl]++
	}
	lo := int32(0)
	for sl, k := range s.touched {
		s.slot[k] = -1
		seg := s.order[lo:s.cnt[sl]]
		lo = s.cnt[sl]
		for j := 1; j < len(seg); j++ {
			if seg[j].t < seg[j-1].t {
				slices.SortStableFunc(seg, func(a, b sessRow) int { return cmp.Compare(a.t, b.t) })
				break
			}
		}
	}
}

// resolveKeys sets s.kids[i] to the key id of row i, making keys new to
// the table, with their key groups (hashed for the whole batch, when it
// has new keys).
func (s *Sessions) resolveKeys(rec arrow.RecordBatch) error {
	n := int(rec.NumRows())
	s.kids = slices.Grow(s.kids[:0], n)[:n]
	if len(s.cfg.Keys) == 0 {
		k := s.keyID(nil, 0)
		for i := range s.kids {
			s.kids[i] = k
		}
		return nil
	}
	s.keys = s.keys[:0]
	for _, k := range s.cfg.Keys {
		s.keys = append(s.keys, rec.Column(k))
	}
	s.pend = s.pend[:0]
	// made returns the id of key b of row i, noting it when new.
	made := func(b []byte, i int) int32 {
		before := len(s.newKeys)
		k := s.keyID(b, 0)
		if len(s.newKeys) > before {
			s.pend = append(s.pend, newRow{k, int32(i)})
		}
		return k
	}
	if s.fastKey {
		col := s.keys[0].(*array.Int64)
		vals := col.Int64Values()
		nulls := col.NullN() > 0
		for i, v := range vals {
			if nulls && col.IsNull(i) {
				s.kids[i] = made([]byte{0}, i)
				continue
			}
			k, ok := s.intIdx[v]
			if !ok {
				k = made(binary.LittleEndian.AppendUint64([]byte{1}, uint64(v)), i)
			}
			s.kids[i] = k
		}
	} else {
		s.buf, s.off, s.pos = encodeKeys(s.keys, n, s.buf, s.off, s.pos)
		for i := range n {
			b := s.buf[s.off[i]:s.off[i+1]]
			k, ok := s.keyIdx[string(b)]
			if !ok {
				k = made(b, i)
			}
			s.kids[i] = k
		}
	}
	if len(s.pend) == 0 {
		return nil
	}
	s.prow = s.prow[:0]
	for _, p := range s.pend {
		s.prow = append(s.prow, p.row)
	}
	kgs, err := s.kh.of(s.keys, n, s.prow)
	if err != nil {
		return err
	}
	for i, p := range s.pend {
		s.kgrp[p.id] = kgs[i]
	}
	return nil
}

// keyID returns the id of the encoded key b, making it if new, in key
// group kg.
func (s *Sessions) keyID(b []byte, kg uint16) int32 {
	fast := s.fastKey && len(b) == 9 && b[0] == 1
	if fast {
		if k, ok := s.intIdx[int64(binary.LittleEndian.Uint64(b[1:]))]; ok {
			return k
		}
	} else if k, ok := s.keyIdx[string(b)]; ok {
		return k
	}
	var k int32
	if n := len(s.freeKeys); n > 0 {
		k = s.freeKeys[n-1]
		s.freeKeys = s.freeKeys[:n-1]
		s.keyBytes[k], s.kgrp[k] = string(b), kg
	} else {
		k = int32(len(s.keyBytes))
		s.keyBytes = append(s.keyBytes, string(b))
		s.kgrp = append(s.kgrp, kg)
		s.sess = append(s.sess, nil)
		s.slot = append(s.slot, -1)
	}
	if fast {
		s.intIdx[int64(binary.LittleEndian.Uint64(b[1:]))] = k
	} else {
		s.keyIdx[string(b)] = k
	}
	s.newKeys = append(s.newKeys, k)
	return k
}

// dropEmptyKeys forgets the keys among cands left without sessions
// (their rows all late, or their sessions all closed).
func (s *Sessions) dropEmptyKeys(cands []int32) {
	for _, k := range cands {
		ss := s.sess[k]
		if len(ss) > 0 || s.keyBytes[k] == "\xff" {
			continue
		}
		b := s.keyBytes[k]
		if s.fastKey && len(b) == 9 && b[0] == 1 {
			delete(s.intIdx, int64(binary.LittleEndian.Uint64([]byte(b[1:]))))
		} else {
			delete(s.keyIdx, b)
		}
		s.keyBytes[k] = "\xff" // free: no key encodes to it
		s.sess[k] = ss[:0]
		s.freeKeys = append(s.freeKeys, k)
	}
}

// held reports whether a row at t of key k falls in a session held.
func (s *Sessions) held(k int32, t int64) bool {
	ss := s.sess[k]
	i := sort.Search(len(ss), func(i int) bool { return s.end[ss[i]] > t })
	return i < len(ss) && s.start[ss[i]] < plus(t, s.gap)
}

// place returns the session of key k that takes rows spanning [a, e):
// a new one, or the first held session overlapping it, into which the
// others overlapping it are merged.
func (s *Sessions) place(k int32, a, e int64) int32 {
	ss := s.sess[k]
	i := sort.Search(len(ss), func(i int) bool { return s.end[ss[i]] > a })
	j := i
	for j < len(ss) && s.start[ss[j]] < e {
		j++
	}
	if i == j {
		g := s.newGroup(k, a, e)
		s.sess[k] = slices.Insert(ss, i, g)
		return g
	}
	g := ss[i]
	if a < s.start[g] {
		s.removed = append(s.removed, s.storeKey(g))
		s.start[g] = a
	}
	s.end[g] = max(s.end[g], e)
	for _, h := range ss[i+1 : j] {
		for _, acc := range s.accs {
			acc.merge(g, h)
		}
		s.end[g] = max(s.end[g], s.end[h])
		s.removed = append(s.removed, s.storeKey(h))
		s.freeGroup(h)
	}
	s.sess[k] = slices.Delete(ss, i+1, j)
	return g
}

// storeKey is the key session g is stored under: its key group
// (big-endian uint16), its encoded key, its start (little-endian).
func (s *Sessions) storeKey(g int32) string {
	k := s.gkey[g]
	b := make([]byte, 0, keyGroupLen+len(s.keyBytes[k])+8)
	b = binary.BigEndian.AppendUint16(b, s.kgrp[k])
	b = append(b, s.keyBytes[k]...)
	return string(binary.LittleEndian.AppendUint64(b, uint64(s.start[g])))
}

func (s *Sessions) newGroup(k int32, start, end int64) int32 {
	var g int32
	if n := len(s.free); n > 0 {
		g = s.free[n-1]
		s.free = s.free[:n-1]
		s.gkey[g], s.start[g], s.end[g] = k, start, end
	} else {
		g = int32(len(s.gkey))
		s.gkey = append(s.gkey, k)
		s.start = append(s.start, start)
		s.end = append(s.end, end)
		s.dirty = append(s.dirty, false)
		s.changed = append(s.changed, false)
		for _, acc := range s.accs {
			acc.grow(len(s.gkey))
		}
	}
	s.live++
	return g
}

func (s *Sessions) freeGroup(g int32) {
	for _, acc := range s.accs {
		acc.reset(g)
	}
	s.gkey[g], s.dirty[g], s.changed[g] = -1, false, false
	s.free = append(s.free, g)
	s.live--
}

// Fire returns the sessions whose end is at or before watermark and that
// changed since they were last emitted (ordered by start, then key
// bytes), and forgets those closed for good (end plus the allowed
// lateness at or before watermark); nil when there is nothing to emit.
// The batch is handed over to the caller.
func (s *Sessions) Fire(mem memory.Allocator, watermark int64) (arrow.RecordBatch, error) {
	s.wm = max(s.wm, watermark)
	var due []int32
	closed := false
	for g, k := range s.gkey {
		if k < 0 || s.end[g] > s.wm {
			continue
		}
		if s.dirty[g] {
			due = append(due, int32(g))
		}
		closed = closed || plus(s.end[g], s.cfg.AllowedLateness) <= s.wm
	}
	var out arrow.RecordBatch
	if len(due) > 0 {
		slices.SortFunc(due, func(a, b int32) int {
			if c := cmp.Compare(s.start[a], s.start[b]); c != 0 {
				return c
			}
			return cmp.Compare(s.keyBytes[s.gkey[a]], s.keyBytes[s.gkey[b]])
		})
		var err error
		out, err = emit(mem, s.out, s.keyEnc, s.accs, due, func(g int32) []byte { return []byte(s.keyBytes[s.gkey[g]]) },
			func(g int32) (int64, int64) { return s.start[g], s.end[g] }, nil)
		if err != nil {
			return nil, err
		}
		for _, g := range due {
			s.dirty[g], s.changed[g] = false, true
		}
	}
	if closed {
		// The closed sessions of a key are the first ones.
		var emptied []int32
		for k, ss := range s.sess {
			n := 0
			for n < len(ss) && plus(s.end[ss[n]], s.cfg.AllowedLateness) <= s.wm {
				s.removed = append(s.removed, s.storeKey(ss[n]))
				s.freeGroup(ss[n])
				n++
			}
			if n > 0 {
				s.sess[k] = slices.Delete(ss, 0, n)
				emptied = append(emptied, int32(k))
			}
		}
		s.dropEmptyKeys(emptied)
	}
	return out, nil
}

// Checkpoint hands over what changed since the last Checkpoint, like
// Table.Checkpoint: del for the sessions forgotten or moved, then put
// for every session added or updated. Keys are the key group of the
// session's key (as in Table.Checkpoint), the encoded key columns and
// the session's start; values its state (see encodeGroup).
func (s *Sessions) Checkpoint(put func(key, value []byte) error, del func(key []byte) error) error {
	for _, k := range s.removed {
		if err := del([]byte(k)); err != nil {
			return err
		}
	}
	s.removed = s.removed[:0]
	var buf []byte
	for g, k := range s.gkey {
		if k < 0 || !s.changed[g] {
			continue
		}
		buf = s.encodeGroup(buf[:0], int32(g))
		if err := put([]byte(s.storeKey(int32(g))), buf); err != nil {
			return err
		}
		s.changed[g] = false
	}
	return nil
}

// encodeGroup: dirty (1 byte) | end - start (uvarint) | each
// accumulator's state.
func (s *Sessions) encodeGroup(dst []byte, g int32) []byte {
	dst = appendBool(dst, s.dirty[g])
	dst = binary.AppendUvarint(dst, uint64(s.end[g]-s.start[g]))
	for _, acc := range s.accs {
		dst = acc.encode(dst, g)
	}
	return dst
}

// Restore adds one session written by Checkpoint.
func (s *Sessions) Restore(key, value []byte) error {
	kg, ik, err := splitStoreKey(key)
	if err != nil {
		return fmt.Errorf("window: restore: session: %w", err)
	}
	if int(kg) >= s.cfg.MaxParallelism {
		return fmt.Errorf("window: restore: session %x: key group %d of %d", key, kg, s.cfg.MaxParallelism)
	}
	kb, start := ik[:len(ik)-8], int64(binary.LittleEndian.Uint64(ik[len(ik)-8:]))
	if string(kb) == "\xff" {
		return fmt.Errorf("window: restore: session key %x", key)
	}
	dirty, rest, err := readBool(value)
	if err != nil {
		return fmt.Errorf("window: restore session %x: %w", key, err)
	}
	span, n := binary.Uvarint(rest)
	if n <= 0 || span == 0 || span > math.MaxInt64 || start > math.MaxInt64-int64(span) {
		return fmt.Errorf("window: restore session %x: bad span", key)
	}
	end := start + int64(span)
	rest = rest[n:]
	k := s.keyID(kb, kg)
	if s.kgrp[k] != kg {
		s.dropEmptyKeys([]int32{k})
		s.newKeys = s.newKeys[:0]
		return fmt.Errorf("window: restore session %x: key group %d, another session of its key has %d", key, kg, s.kgrp[k])
	}
	ss := s.sess[k]
	i := sort.Search(len(ss), func(i int) bool { return s.end[ss[i]] > start })
	if i < len(ss) && s.start[ss[i]] < end {
		s.dropEmptyKeys([]int32{k})
		s.newKeys = s.newKeys[:0]
		return fmt.Errorf("window: restore session %x: overlaps another", key)
	}
	g := s.newGroup(k, start, end)
	for _, acc := range s.accs {
		if rest, err = acc.decode(rest, g); err != nil {
			break
		}
	}
	if err == nil && len(rest) != 0 {
		err = fmt.Errorf("%d bytes left over", len(rest))
	}
	if err != nil {
		s.freeGroup(g)
		s.dropEmptyKeys([]int32{k})
		s.newKeys = s.newKeys[:0]
		return fmt.Errorf("window: restore session %x: %w", key, err)
	}
	s.sess[k] = slices.Insert(ss, i, g)
	s.dirty[g] = dirty
	s.newKeys = s.newKeys[:0]
	return nil
}
