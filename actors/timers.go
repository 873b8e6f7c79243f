package actors

import (
	"cmp"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/asynkron/protoactor-go/actor"

	"github.com/meshflow/meshflow/messages"
)

type timerKey struct {
	kind TimerKind
	time int64
	tag  string
}

type timerHeap []timerKey

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].time < h[j].time }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(timerKey)) }
func (h *timerHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// wallTimer is a registered processing-time timer: scheduled until its
// time comes, then fired: its message is on the way to the actor, and it
// stays registered (and in snapshots) until the actor has handled it.
type wallTimer struct {
	stop  func() bool // nil once fired
	fired bool
}

// timerService holds one instance's timers. Event-time timers live in a
// heap fired by the watermark; processing-time timers are Go timers that
// post a message to the actor. Everything but the Go timer callbacks runs on
// the actor's goroutine.
type timerService struct {
	s      *instance
	events timerHeap
	set    map[timerKey]bool

	// The clock: time.Now and time.AfterFunc (tests drive their own).
	now       func() time.Time
	afterFunc func(d time.Duration, f func()) (stop func() bool)

	mu   sync.Mutex // guards wall
	wall map[timerKey]*wallTimer
}

func newTimerService(s *instance) *timerService {
	return &timerService{
		s:   s,
		set: map[timerKey]bool{},
		now: time.Now,
		afterFunc: func(d time.Duration, f func()) func() bool {
			return time.AfterFunc(d, f).Stop
		},
		wall: map[timerKey]*wallTimer{},
	}
}

func (t *timerService) At(at messages.Watermark, tag string) {
	k := timerKey{EventTimeTimer, int64(at), tag}
	if t.set[k] {
		return
	}
	t.set[k] = true
	heap.Push(&t.events, k)
}

func (t *timerService) After(d time.Duration, tag string) {
	at := t.now().Add(d)
	k := timerKey{ProcessingTimeTimer, at.UnixMicro(), tag}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.scheduleLocked(k, d)
}

// scheduleLocked registers processing-time timer k to fire after d,
// unless it is registered already. t.mu is held.
func (t *timerService) scheduleLocked(k timerKey, d time.Duration) {
	if t.wall[k] != nil {
		return
	}
	w := &wallTimer{}
	t.wall[k] = w
	gen, pid, root := t.s.gen, t.s.self, t.s.part.node.system.Root
	// The callback takes t.mu, so it cannot run before w.stop is set.
	w.stop = t.afterFunc(d, func() {
		t.mu.Lock()
		live := t.wall[k] == w && !w.fired
		if live {
			w.fired, w.stop = true, nil
		}
		t.mu.Unlock()
		if live {
			root.Send(pid, &timerMsg{gen: gen, t: Timer{Kind: ProcessingTimeTimer, Time: k.time, Tag: k.tag}})
		}
	})
}

func (t *timerService) Watermark() messages.Watermark { return t.s.wm }

// reset drops every timer (a restarted operator registers its own again).
func (t *timerService) reset() {
	t.events = t.events[:0]
	clear(t.set)
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, w := range t.wall {
		if w.stop != nil {
			w.stop()
		}
	}
	clear(t.wall)
}

// fireEventTimers calls OnTimer for every event-time timer at or below wm,
// in time order.
func (t *timerService) fireEventTimers(wm messages.Watermark) error {
	s := t.s
	h, ok := s.op.(TimerHandler)
	for len(t.events) > 0 && t.events[0].time <= int64(wm) {
		k := heap.Pop(&t.events).(timerKey)
		delete(t.set, k)
		if !ok {
			continue
		}
		tm := Timer{Kind: EventTimeTimer, Time: k.time, Tag: k.tag}
		if err := s.callState(func() error { return h.OnTimer(s.part.ctx, tm, s) }); err != nil {
			s.releaseEmitted()
			return fmt.Errorf("event timer %d %q: %w", k.time, k.tag, err)
		}
	}
	return nil
}

func (s *instance) onProcessingTimer(c actor.Context, m *timerMsg) {
	if m.gen != s.gen {
		return
	}
	// Handled from here on: the timer leaves the snapshots.
	k := timerKey{ProcessingTimeTimer, m.t.Time, m.t.Tag}
	t := s.timers
	t.mu.Lock()
	if w := t.wall[k]; w != nil && w.fired {
		delete(t.wall, k)
	}
	t.mu.Unlock()
	if s.op == nil || s.finished {
		return
	}
	h, ok := s.op.(TimerHandler)
	if !ok {
		return
	}
	if err := s.callState(func() error { return h.OnTimer(s.part.ctx, m.t, s) }); err != nil {
		s.releaseEmitted()
		s.fail(fmt.Errorf("processing timer %q: %w", m.t.Tag, err))
	}
	s.dispatch(c)
}

// Timer snapshots
//
// snapshot encodes the registered timers; restore registers them again,
// in a later run. A processing-time timer whose message was posted but not
// yet handled by the actor is still registered, so a snapshot taken in
// between keeps it.
//
// Encoding (version 1), every integer an unsigned varint of minimal
// length:
//
//	version = 0x01
//	section = count | timer*           event-time timers, then processing-time
//	timer   = time | len(tag) | tag
//
// Timers are sorted by (time, tag), strictly. The first time of a section
// is zigzag-encoded; each next one is the difference from the previous
// (non-negative). Times are microseconds: event time, or Unix time for
// processing-time timers. The decoder accepts only this canonical form,
// and allocates no more than a small multiple of its input's length, so
// counts and lengths read from a damaged snapshot cannot exhaust memory.

const timerSnapshotVersion = 1

var errTimerSnapshot = errors.New("actors: malformed timer snapshot")

// snapshot returns the registered timers, encoded.
func (t *timerService) snapshot() []byte {
	events := slices.Clone(t.events)
	t.mu.Lock()
	procs := slices.Collect(maps.Keys(t.wall))
	t.mu.Unlock()
	return encodeTimers(events, procs)
}

// restore registers the timers of snapshot b, in addition to those
// registered already. Processing-time timers whose time has passed fire
// at once, in time order; the others fire at their time. Event-time
// timers fire when the watermark next advances to or past them. restore
// runs on the actor's goroutine once the actor has started. On error
// nothing is registered.
func (t *timerService) restore(b []byte) error {
	events, procs, err := decodeTimers(b)
	if err != nil {
		return err
	}
	if len(procs) > 0 && t.s.self == nil {
		return errors.New("actors: restore of processing-time timers before the actor started")
	}
	for _, k := range events {
		t.At(messages.Watermark(k.time), k.tag)
	}
	now := t.now()
	var due []timerKey
	t.mu.Lock()
	for _, k := range procs { // in time order
		if t.wall[k] != nil {
			continue
		}
		if d := time.UnixMicro(k.time).Sub(now); d > 0 {
			t.scheduleLocked(k, d)
			continue
		}
		t.wall[k] = &wallTimer{fired: true}
		due = append(due, k)
	}
	t.mu.Unlock()
	root := t.s.part.node.system.Root
	for _, k := range due {
		root.Send(t.s.self, &timerMsg{gen: t.s.gen, t: Timer{Kind: ProcessingTimeTimer, Time: k.time, Tag: k.tag}})
	}
	return nil
}

func cmpTimerKey(a, b timerKey) int {
	if c := cmp.Compare(a.time, b.time); c != 0 {
		return c
	}
	return strings.Compare(a.tag, b.tag)
}

// encodeTimers encodes event-time and processing-time timers, sorting
// (and so modifying) both slices.
func encodeTimers(events, procs []timerKey) []byte {
	slices.SortFunc(events, cmpTimerKey)
	slices.SortFunc(procs, cmpTimerKey)
	n := 1 + 2*binary.MaxVarintLen64
	for _, ks := range [][]timerKey{events, procs} {
		for _, k := range ks {
			n += 2*binary.MaxVarintLen64 + len(k.tag)
		}
	}
	b := make([]byte, 0, n)
	b = append(b, timerSnapshotVersion)
	for _, ks := range [][]timerKey{events, procs} {
		b = binary.AppendUvarint(b, uint64(len(ks)))
		for i, k := range ks {
			if i == 0 {
				b = binary.AppendUvarint(b, zigzag(k.time))
			} else {
				b = binary.AppendUvarint(b, uint64(k.time)-uint64(ks[i-1].time))
			}
			b = binary.AppendUvarint(b, uint64(len(k.tag)))
			b = append(b, k.tag...)
		}
	}
	return b
}

func zigzag(v int64) uint64   { return uint64(v<<1) ^ uint64(v>>63) }
func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

// decodeTimers decodes a snapshot of encodeTimers. Errors wrap
// errTimerSnapshot.
func decodeTimers(b []byte) (events, procs []timerKey, err error) {
	if len(b) == 0 {
		return nil, nil, fmt.Errorf("%w: empty", errTimerSnapshot)
	}
	if b[0] != timerSnapshotVersion {
		return nil, nil, fmt.Errorf("%w: unknown version %d", errTimerSnapshot, b[0])
	}
	d := timerDecoder{b: b, off: 1}
	if events, err = d.section(EventTimeTimer); err != nil {
		return nil, nil, err
	}
	if procs, err = d.section(ProcessingTimeTimer); err != nil {
		return nil, nil, err
	}
	if d.off != len(b) {
		return nil, nil, fmt.Errorf("%w: %d bytes after the timers", errTimerSnapshot, len(b)-d.off)
	}
	return events, procs, nil
}

func kindName(k TimerKind) string {
	if k == EventTimeTimer {
		return "event-time"
	}
	return "processing-time"
}

type timerDecoder struct {
	b   []byte
	off int
}

func (d *timerDecoder) uvarint(what string) (uint64, error) {
	v, n := binary.Uvarint(d.b[d.off:])
	switch {
	case n == 0:
		return 0, fmt.Errorf("%w: truncated %s at byte %d", errTimerSnapshot, what, d.off)
	case n < 0:
		return 0, fmt.Errorf("%w: %s at byte %d overflows 64 bits", errTimerSnapshot, what, d.off)
	case n > 1 && d.b[d.off+n-1] == 0:
		return 0, fmt.Errorf("%w: %s at byte %d is not minimally encoded", errTimerSnapshot, what, d.off)
	}
	d.off += n
	return v, nil
}

// section reads one section. A timer takes at least 2 bytes (time and tag
// length), which bounds the count before anything is allocated.
func (d *timerDecoder) section(kind TimerKind) ([]timerKey, error) {
	n, err := d.uvarint("timer count")
	if err != nil {
		return nil, err
	}
	if left := uint64(len(d.b) - d.off); n > left/2 {
		return nil, fmt.Errorf("%w: %d %s timers in %d bytes", errTimerSnapshot, n, kindName(kind), left)
	}
	if n == 0 {
		return nil, nil
	}
	ks := make([]timerKey, 0, n)
	for i := range n {
		at := d.off
		v, err := d.uvarint("timer time")
		if err != nil {
			return nil, err
		}
		var tm int64
		if i == 0 {
			tm = unzigzag(v)
		} else {
			prev := ks[i-1].time
			// prev+v must not pass MaxInt64: compare in the unsigned order
			// that maps MinInt64..MaxInt64 onto 0..MaxUint64.
			if v > math.MaxUint64-(uint64(prev)^1<<63) {
				return nil, fmt.Errorf("%w: timer time at byte %d overflows", errTimerSnapshot, at)
			}
			tm = int64(uint64(prev) + v)
		}
		l, err := d.uvarint("tag length")
		if err != nil {
			return nil, err
		}
		if l > uint64(len(d.b)-d.off) {
			return nil, fmt.Errorf("%w: tag of %d bytes at byte %d, %d left", errTimerSnapshot, l, d.off, len(d.b)-d.off)
		}
		k := timerKey{kind: kind, time: tm, tag: string(d.b[d.off : d.off+int(l)])}
		d.off += int(l)
		if i > 0 && cmpTimerKey(ks[i-1], k) >= 0 {
			return nil, fmt.Errorf("%w: %s timers out of order at byte %d", errTimerSnapshot, kindName(kind), at)
		}
		ks = append(ks, k)
	}
	return ks, nil
}

// eventTimeWatermark derives a watermark from a source batch, if the source
// declares an event-time column.
func (s *instance) eventTimeWatermark(rec arrow.RecordBatch) (messages.Watermark, bool) {
	et := s.v.EventTime
	if et == nil {
		return 0, false
	}
	idx := rec.Schema().FieldIndices(et.Column)
	if len(idx) != 1 {
		return 0, false
	}
	col, ok := rec.Column(idx[0]).(*array.Timestamp)
	if !ok || col.Len() == 0 {
		return 0, false
	}
	unit := col.DataType().(*arrow.TimestampType).Unit
	vals := col.TimestampValues()
	maxTS := int64(-1 << 63)
	if col.NullN() == 0 {
		for _, v := range vals {
			if int64(v) > maxTS {
				maxTS = int64(v)
			}
		}
	} else {
		for i, v := range vals {
			if col.IsValid(i) && int64(v) > maxTS {
				maxTS = int64(v)
			}
		}
	}
	if maxTS == -1<<63 {
		return 0, false
	}
	us := toMicros(maxTS, unit)
	return messages.Watermark(us - et.MaxOutOfOrderness.Microseconds() - 1), true
}

func toMicros(v int64, unit arrow.TimeUnit) int64 {
	switch unit {
	case arrow.Second:
		return v * 1_000_000
	case arrow.Millisecond:
		return v * 1_000
	case arrow.Nanosecond:
		return v / 1_000
	default:
		return v
	}
}
