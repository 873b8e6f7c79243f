package actors

import (
	"container/heap"
	"fmt"
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

// timerService holds one instance's timers. Event-time timers live in a
// heap fired by the watermark; processing-time timers are Go timers that
// post a message to the actor. Everything but the Go timer callbacks runs on
// the actor's goroutine.
type timerService struct {
	s      *instance
	events timerHeap
	set    map[timerKey]bool

	mu   sync.Mutex // guards wall
	wall map[timerKey]*time.Timer
}

func newTimerService(s *instance) *timerService {
	return &timerService{s: s, set: map[timerKey]bool{}, wall: map[timerKey]*time.Timer{}}
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
	at := time.Now().Add(d)
	k := timerKey{ProcessingTimeTimer, at.UnixMicro(), tag}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.wall[k] != nil {
		return
	}
	gen, pid, root := t.s.gen, t.s.self, t.s.part.node.system.Root
	t.wall[k] = time.AfterFunc(d, func() {
		t.mu.Lock()
		_, live := t.wall[k]
		delete(t.wall, k)
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
	for _, tm := range t.wall {
		tm.Stop()
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
		if err := s.call(func() error { return h.OnTimer(s.part.ctx, tm, s) }); err != nil {
			s.releaseEmitted()
			return fmt.Errorf("event timer %d %q: %w", k.time, k.tag, err)
		}
	}
	return nil
}

func (s *instance) onProcessingTimer(c actor.Context, m *timerMsg) {
	if m.gen != s.gen || s.op == nil || s.finished {
		return
	}
	h, ok := s.op.(TimerHandler)
	if !ok {
		return
	}
	if err := s.call(func() error { return h.OnTimer(s.part.ctx, m.t, s) }); err != nil {
		s.releaseEmitted()
		s.fail(fmt.Errorf("processing timer %q: %w", m.t.Tag, err))
	}
	s.dispatch(c)
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
