package actors

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/asynkron/protoactor-go/actor"

	"github.com/meshflow/meshflow/internal/testutil"
)

// manualClock is a clock that moves only when told; timers scheduled on
// it fire, in time order, on the goroutine that advances it.
type manualClock struct {
	mu     sync.Mutex
	t      time.Time
	timers []*manualTimer
}

type manualTimer struct {
	at            time.Time
	f             func()
	stopped, done bool
}

func (c *manualClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *manualClock) afterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	mt := &manualTimer{at: c.t.Add(d), f: f}
	c.timers = append(c.timers, mt)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		live := !mt.stopped && !mt.done
		mt.stopped = true
		return live
	}
}

// scheduled returns the times of the timers neither fired nor stopped.
func (c *manualClock) scheduled() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []time.Time
	for _, mt := range c.timers {
		if !mt.stopped && !mt.done {
			out = append(out, mt.at)
		}
	}
	return out
}

func (c *manualClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	var due []*manualTimer
	for _, mt := range c.timers {
		if !mt.stopped && !mt.done && !mt.at.After(c.t) {
			mt.done = true
			due = append(due, mt)
		}
	}
	c.mu.Unlock()
	sort.SliceStable(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	for _, mt := range due {
		mt.f()
	}
}

// timerRecorder is an operator recording the timers it is given.
type timerRecorder struct{ fired []Timer }

func (r *timerRecorder) Open(context.Context, OperatorContext) error               { return nil }
func (r *timerRecorder) Process(context.Context, arrow.RecordBatch, Emitter) error { return nil }
func (r *timerRecorder) Close(context.Context) error                               { return nil }
func (r *timerRecorder) OnTimer(_ context.Context, t Timer, _ Emitter) error {
	r.fired = append(r.fired, t)
	return nil
}

// timerHarness is an instance whose actor is a real actor that passes on
// what it receives: the timer messages, and a marker that shows nothing
// else was sent before it.
type timerHarness struct {
	s     *instance
	rec   *timerRecorder
	msgs  chan any
	clock *manualClock
}

func newTimerHarness(t *testing.T, sys *actor.ActorSystem, clock *manualClock, gen uint64) *timerHarness {
	t.Helper()
	h := &timerHarness{rec: &timerRecorder{}, msgs: make(chan any, 64), clock: clock}
	pid := sys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		switch m := c.Message().(type) {
		case *timerMsg, string:
			h.msgs <- m
		}
	}))
	t.Cleanup(func() { sys.Root.Stop(pid) })
	h.s = &instance{part: &jobPart{node: &Node{system: sys}, ctx: context.Background()}, self: pid, gen: gen, op: h.rec}
	h.s.timers = newTimerService(h.s)
	if clock != nil {
		h.s.timers.now, h.s.timers.afterFunc = clock.now, clock.afterFunc
	}
	t.Cleanup(h.s.timers.reset)
	return h
}

func newTestActorSystem(t *testing.T) *actor.ActorSystem {
	t.Helper()
	log := testutil.TestLogger(t)
	return actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return log }))
}

// next returns the next message the actor received.
func (h *timerHarness) next(t *testing.T) any {
	t.Helper()
	select {
	case m := <-h.msgs:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
		return nil
	}
}

// expect checks that the actor receives exactly the processing-time
// timers tags (at times at), in order, and nothing else before a marker
// sent now.
func (h *timerHarness) expect(t *testing.T, gen uint64, want ...Timer) []*timerMsg {
	t.Helper()
	h.s.part.node.system.Root.Send(h.s.self, "marker")
	var got []*timerMsg
	for {
		m := h.next(t)
		if m == "marker" {
			break
		}
		tm := m.(*timerMsg)
		if tm.gen != gen {
			t.Fatalf("timer %+v posted for generation %d, want %d", tm.t, tm.gen, gen)
		}
		got = append(got, tm)
	}
	var times []Timer
	for _, m := range got {
		times = append(times, m.t)
	}
	if !slices.Equal(times, want) {
		t.Fatalf("actor received timers\n%+v\nwant\n%+v", times, want)
	}
	return got
}

func ptimer(at time.Time, tag string) Timer {
	return Timer{Kind: ProcessingTimeTimer, Time: at.UnixMicro(), Tag: tag}
}

func keys(kind TimerKind, ts ...any) []timerKey {
	var out []timerKey
	for i := 0; i < len(ts); i += 2 {
		var tm int64
		switch v := ts[i].(type) {
		case int:
			tm = int64(v)
		case int64:
			tm = v
		case time.Time:
			tm = v.UnixMicro()
		}
		out = append(out, timerKey{kind, tm, ts[i+1].(string)})
	}
	return out
}

// TestTimerSnapshotRestore registers timers, snapshots them with one
// processing-time timer fired but not handled, and restores them into a
// new instance later: due processing-time timers fire at once in time
// order, the others at their time, event-time timers with the watermark.
func TestTimerSnapshotRestore(t *testing.T) {
	sys := newTestActorSystem(t)
	t0 := time.Unix(1_700_000_000, 0)
	src := newTimerHarness(t, sys, &manualClock{t: t0}, 3)
	ts := src.s.timers
	ts.At(30, "e3")
	ts.At(10, "e1")
	ts.At(10, "e1")
	ts.At(20, "e2")
	ts.At(10, "e0")
	ts.After(5*time.Second, "p5")
	ts.After(time.Second, "p1")
	ts.After(3*time.Second, "p3b")
	ts.After(3*time.Second, "p3")
	ts.After(time.Second, "p1")
	src.clock.advance(time.Second)
	fired := src.expect(t, 3, ptimer(t0.Add(time.Second), "p1"))

	snap := ts.snapshot()
	events, procs, err := decodeTimers(snap)
	if err != nil {
		t.Fatal(err)
	}
	if want := keys(EventTimeTimer, 10, "e0", 10, "e1", 20, "e2", 30, "e3"); !slices.Equal(events, want) {
		t.Fatalf("event timers %v, want %v", events, want)
	}
	wantProcs := keys(ProcessingTimeTimer, t0.Add(time.Second), "p1", t0.Add(3*time.Second), "p3", t0.Add(3*time.Second), "p3b", t0.Add(5*time.Second), "p5")
	if !slices.Equal(procs, wantProcs) {
		t.Fatalf("processing timers %v, want %v (a fired timer stays until handled)", procs, wantProcs)
	}
	// Once the actor has handled p1, it leaves the snapshots.
	src.s.onProcessingTimer(nil, fired[0])
	if _, procs, _ := decodeTimers(ts.snapshot()); !slices.Equal(procs, wantProcs[1:]) {
		t.Fatalf("after handling p1: %v, want %v", procs, wantProcs[1:])
	}

	// Restored 4 s after t0: p1, p3 and p3b are due, p5 is 1 s away.
	dst := newTimerHarness(t, sys, &manualClock{t: t0.Add(4 * time.Second)}, 7)
	if err := dst.s.timers.restore(snap); err != nil {
		t.Fatal(err)
	}
	due := dst.expect(t, 7, ptimer(t0.Add(time.Second), "p1"), ptimer(t0.Add(3*time.Second), "p3"), ptimer(t0.Add(3*time.Second), "p3b"))
	if got := dst.clock.scheduled(); !slices.Equal(got, []time.Time{t0.Add(5 * time.Second)}) {
		t.Fatalf("scheduled %v, want p5 at t0+5s", got)
	}
	// Due timers fired but not handled are still in a snapshot.
	if !bytes.Equal(dst.s.timers.snapshot(), snap) {
		t.Fatal("snapshot after restore differs from the one restored")
	}
	dst.clock.advance(time.Second)
	due = append(due, dst.expect(t, 7, ptimer(t0.Add(5*time.Second), "p5"))...)
	for _, m := range due {
		dst.s.onProcessingTimer(nil, m)
	}
	if err := dst.s.timers.fireEventTimers(25); err != nil {
		t.Fatal(err)
	}
	var got []Timer
	for _, tm := range dst.rec.fired {
		got = append(got, Timer{Kind: tm.Kind, Time: tm.Time, Tag: tm.Tag})
	}
	// The handler saw the processing timers in order, then e0 and e1 (same
	// time, either order) and e2.
	want := []Timer{
		ptimer(t0.Add(time.Second), "p1"), ptimer(t0.Add(3*time.Second), "p3"), ptimer(t0.Add(3*time.Second), "p3b"), ptimer(t0.Add(5*time.Second), "p5"),
		{EventTimeTimer, 10, "e0"}, {EventTimeTimer, 10, "e1"}, {EventTimeTimer, 20, "e2"},
	}
	slices.SortStableFunc(got[4:6], func(a, b Timer) int { return strings.Compare(a.Tag, b.Tag) })
	if !slices.Equal(got, want) {
		t.Fatalf("OnTimer calls\n%v\nwant\n%v", got, want)
	}
	if events, procs, _ := decodeTimers(dst.s.timers.snapshot()); !slices.Equal(events, keys(EventTimeTimer, 30, "e3")) || len(procs) != 0 {
		t.Fatalf("left after firing: %v %v, want e3 only", events, procs)
	}
}

// TestTimerRestoreMerges: restore adds to the registered timers, and
// restoring the same timers twice registers them once.
func TestTimerRestoreMerges(t *testing.T) {
	sys := newTestActorSystem(t)
	t0 := time.Unix(1_700_000_000, 0)
	h := newTimerHarness(t, sys, &manualClock{t: t0}, 1)
	snap := encodeTimers(keys(EventTimeTimer, -5, "a", 7, "b"), keys(ProcessingTimeTimer, t0.Add(time.Minute), "m"))
	h.s.timers.At(7, "b")
	h.s.timers.At(8, "own")
	h.s.timers.After(time.Minute, "m")
	for range 2 {
		if err := h.s.timers.restore(snap); err != nil {
			t.Fatal(err)
		}
	}
	want := encodeTimers(keys(EventTimeTimer, -5, "a", 7, "b", 8, "own"), keys(ProcessingTimeTimer, t0.Add(time.Minute), "m"))
	if got := h.s.timers.snapshot(); !bytes.Equal(got, want) {
		t.Fatalf("snapshot %x, want %x", got, want)
	}
	if n := len(h.clock.scheduled()); n != 1 {
		t.Fatalf("%d Go timers scheduled, want 1", n)
	}
	// reset stops them: nothing fires afterwards.
	h.s.timers.reset()
	if n := len(h.clock.scheduled()); n != 0 {
		t.Fatalf("%d Go timers scheduled after reset", n)
	}
	h.clock.advance(time.Hour)
	h.expect(t, 1)
}

// TestTimerRestoreRejects: a bad snapshot, or processing-time timers
// before the actor started, register nothing.
func TestTimerRestoreRejects(t *testing.T) {
	sys := newTestActorSystem(t)
	h := newTimerHarness(t, sys, &manualClock{t: time.Unix(100, 0)}, 1)
	empty := h.s.timers.snapshot()
	good := encodeTimers(keys(EventTimeTimer, 1, "e"), keys(ProcessingTimeTimer, 5, "p"))
	if err := h.s.timers.restore(good[:len(good)-1]); !errors.Is(err, errTimerSnapshot) {
		t.Fatalf("restore of a truncated snapshot = %v", err)
	}
	h.s.self = nil
	if err := h.s.timers.restore(good); err == nil || !strings.Contains(err.Error(), "before the actor started") {
		t.Fatalf("restore before start = %v", err)
	}
	if got := h.s.timers.snapshot(); !bytes.Equal(got, empty) {
		t.Fatalf("timers registered by failed restores: %x", got)
	}
}

// TestTimerWallClock runs processing-time timers on the real clock: one
// registered with After, and one restored already due.
func TestTimerWallClock(t *testing.T) {
	sys := newTestActorSystem(t)
	h := newTimerHarness(t, sys, nil, 2)
	h.s.timers.After(time.Millisecond, "soon")
	m := h.next(t).(*timerMsg)
	if m.t.Tag != "soon" || m.t.Kind != ProcessingTimeTimer || m.gen != 2 {
		t.Fatalf("got %+v", m)
	}
	past := time.Now().Add(-time.Hour)
	if err := h.s.timers.restore(encodeTimers(nil, keys(ProcessingTimeTimer, past, "late"))); err != nil {
		t.Fatal(err)
	}
	h.expect(t, 2, ptimer(past, "late"))
}

func TestTimerSnapshotRoundTrip(t *testing.T) {
	tests := []struct {
		name          string
		events, procs []timerKey
		golden        []byte // when set, the exact encoding
	}{
		{name: "empty", golden: []byte{1, 0, 0}},
		{name: "one event timer", events: keys(EventTimeTimer, 5, "a"), golden: []byte{1, 1, 10, 1, 'a', 0}},
		{name: "one processing timer, negative time", procs: keys(ProcessingTimeTimer, -3, ""), golden: []byte{1, 0, 1, 5, 0}},
		{
			name:   "same time, tags in order; deltas",
			events: keys(EventTimeTimer, 100, "a", 100, "b", 101, ""),
			golden: []byte{1, 3, 0xc8, 0x01, 1, 'a', 0, 1, 'b', 1, 0, 0},
		},
		{name: "extremes", events: keys(EventTimeTimer, int64(math.MinInt64), "lo", int64(-1), "", int64(0), "", int64(math.MaxInt64), "hi")},
		{name: "binary and long tags", procs: keys(ProcessingTimeTimer, 1, "\x00\xff", 2, strings.Repeat("x", 300))},
		{
			name:   "both kinds, Unix microseconds",
			events: keys(EventTimeTimer, 1_700_000_000_000_000, "w"),
			procs:  keys(ProcessingTimeTimer, time.Unix(1_700_000_000, 0), "a", time.Unix(1_700_000_000, 1000), "b"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := encodeTimers(slices.Clone(tt.events), slices.Clone(tt.procs))
			if tt.golden != nil && !bytes.Equal(b, tt.golden) {
				t.Fatalf("encoding %v, want %v", b, tt.golden)
			}
			events, procs, err := decodeTimers(b)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(events, tt.events) || !slices.Equal(procs, tt.procs) {
				t.Fatalf("decoded %v %v, want %v %v", events, procs, tt.events, tt.procs)
			}
		})
	}
	// Unsorted input is sorted by the encoder.
	b := encodeTimers(keys(EventTimeTimer, 3, "b", 1, "z", 3, "a"), nil)
	if events, _, _ := decodeTimers(b); !slices.Equal(events, keys(EventTimeTimer, 1, "z", 3, "a", 3, "b")) {
		t.Fatalf("decoded %v", events)
	}
	// Compact: 1000 processing-time timers 1 ms apart with 8-byte tags take
	// 12 bytes each (2-byte delta, length, tag).
	var many []timerKey
	for i := range 1000 {
		many = append(many, timerKey{ProcessingTimeTimer, 1_700_000_000_000_000 + int64(i)*1000, "tag-" + string(rune('a'+i%26)) + "xyz"})
	}
	if n := len(encodeTimers(nil, many)); n > 1000*12+16 {
		t.Fatalf("1000 timers take %d bytes", n)
	}
}

// badTimerSnapshots are malformed snapshots, each with the error it gives.
var badTimerSnapshots = []struct {
	name string
	b    []byte
	want string
}{
	{"empty", nil, "empty"},
	{"unknown version", []byte{2, 0, 0}, "unknown version 2"},
	{"trailing byte", []byte{1, 0, 0, 0}, "1 bytes after the timers"},
	{"missing section", []byte{1, 0}, "truncated timer count"},
	{"lying count", []byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 2, 0}, "event-time timers in 2 bytes"},
	{"count above bytes/2", []byte{1, 3, 2, 0, 4, 0, 0}, "3 event-time timers in 5 bytes"},
	{"lying tag length", []byte{1, 1, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0}, "tag of"},
	{"tag past the end", []byte{1, 0, 1, 2, 5, 'a', 'b'}, "tag of 5 bytes"},
	{"varint overflow", []byte{1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0}, "overflows 64 bits"},
	{"non-minimal count", []byte{1, 0x80, 0x00, 0}, "not minimally encoded"},
	{"non-minimal time", []byte{1, 1, 0x82, 0x00, 0, 0}, "not minimally encoded"},
	{"duplicate timer", []byte{1, 2, 2, 1, 'a', 0, 1, 'a', 0}, "out of order"},
	{"tags out of order", []byte{1, 2, 2, 1, 'b', 0, 1, 'a', 0}, "out of order"},
	{"time past MaxInt64", append(append([]byte{1, 2}, binaryUvarint(zigzag(math.MaxInt64))...), 0, 1, 0, 0), "overflows"},
}

func binaryUvarint(v uint64) []byte {
	var b []byte
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func TestTimerSnapshotDecodeErrors(t *testing.T) {
	for _, tt := range badTimerSnapshots {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, _, err := decodeTimers(tt.b)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, errTimerSnapshot) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("decode = %v, want an error containing %q", err, tt.want)
			}
			// Lying lengths allocate nothing near what they claim.
			if n := after.TotalAlloc - before.TotalAlloc; n > 64<<10 {
				t.Fatalf("decode allocated %d bytes", n)
			}
		})
	}
	// Every strict prefix of a good snapshot is an error.
	good := encodeTimers(keys(EventTimeTimer, -7, "e", 9, "ee"), keys(ProcessingTimeTimer, 1_700_000_000_000_000, "tag", 1_700_000_000_000_001, ""))
	for i := range good {
		if _, _, err := decodeTimers(good[:i]); !errors.Is(err, errTimerSnapshot) {
			t.Fatalf("prefix of %d bytes: %v", i, err)
		}
	}
}

// FuzzTimerSnapshot: decoding never panics, takes at most len/2 timers
// and len bytes of tags, and whatever decodes is the canonical encoding
// of what it decodes to.
func FuzzTimerSnapshot(f *testing.F) {
	f.Add(encodeTimers(nil, nil))
	f.Add(encodeTimers(keys(EventTimeTimer, 5, "a", 5, "b", 1<<40, "c"), keys(ProcessingTimeTimer, -1, "", 1_700_000_000_000_000, "x")))
	f.Add(encodeTimers(keys(EventTimeTimer, int64(math.MinInt64), "", int64(math.MaxInt64), ""), nil))
	for _, tt := range badTimerSnapshots {
		f.Add(tt.b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		events, procs, err := decodeTimers(b)
		if err != nil {
			if !errors.Is(err, errTimerSnapshot) {
				t.Fatalf("error %v does not wrap errTimerSnapshot", err)
			}
			return
		}
		if n := len(events) + len(procs); n > len(b)/2 {
			t.Fatalf("%d timers from %d bytes", n, len(b))
		}
		tags := 0
		for _, k := range append(slices.Clone(events), procs...) {
			tags += len(k.tag)
		}
		if tags > len(b) {
			t.Fatalf("%d tag bytes from %d bytes", tags, len(b))
		}
		for _, k := range events {
			if k.kind != EventTimeTimer {
				t.Fatalf("event section holds %+v", k)
			}
		}
		for _, k := range procs {
			if k.kind != ProcessingTimeTimer {
				t.Fatalf("processing section holds %+v", k)
			}
		}
		if re := encodeTimers(events, procs); !bytes.Equal(re, b) {
			t.Fatalf("re-encoding %x gives %x", b, re)
		}
	})
}
