package actors

import (
	"context"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/meshflow/meshflow/messages"
)

// idleState is an instance's side of input idleness (wmtrack.go): whether
// it told its outputs it is idle, and, for sources, when it last read data.
type idleState struct {
	out      bool           // the idle marker was sent and nothing since
	lastData time.Time      // sources: the last batch with rows, or the start
	parts    []srcPartition // Partitioned sources (partitions.go)
}

// advanceWatermark recomputes the input watermark (the minimum over the
// active inputs) and, when it moved, fires event-time timers, calls the
// operator's hook and forwards the watermark. When every open input is idle
// the instance is idle too: it forwards the idle marker once.
func (s *instance) advanceWatermark(c actor.Context) {
	ins := make([]*wmInput, len(s.ins))
	for i, ch := range s.ins {
		ins[i] = &ch.wmInput
	}
	wm, ok, allIdle := combineWatermarks(ins)
	if allIdle {
		s.goIdle(c)
		return
	}
	if ok {
		s.setWatermark(c, wm)
	}
}

// goIdle tells the outputs this instance holds back no watermark, until it
// sends a batch or a watermark again.
func (s *instance) goIdle(c actor.Context) {
	if s.idl.out || s.finished {
		return
	}
	s.setIdle(true)
	s.broadcast(c, messages.IdleEnvelope())
}

// setIdle records whether the outputs were told this instance is idle.
func (s *instance) setIdle(idle bool) {
	if s.idl.out != idle {
		s.idl.out = idle
		s.stats.idle.Store(idle)
	}
}

func (s *instance) setWatermark(c actor.Context, wm messages.Watermark) {
	if wm <= s.wm {
		return
	}
	s.wm = wm
	s.stats.wm.Store(int64(wm))
	if s.op != nil {
		if err := s.timers.fireEventTimers(wm); err != nil {
			s.fail(err)
		}
		if h, ok := s.op.(WatermarkHandler); ok {
			if err := s.callState(func() error { return h.OnWatermark(s.part.ctx, wm, s) }); err != nil {
				s.releaseEmitted()
				s.fail(fmt.Errorf("watermark %d: %w", wm, err))
			}
		}
		s.dispatch(c)
	}
	if wm > s.outWM {
		s.outWM = wm
		s.setIdle(false)
		s.broadcast(c, messages.WatermarkEnvelope(wm))
	}
}

// startIdleTimers starts a source's idle timers, its own and its restored
// partitions', when it first starts reading. Restarting the reader (after
// a checkpoint taken between two reads, after a restart of the instance)
// keeps them running: a quiet source goes idle whatever its checkpoint
// interval.
func (s *instance) startIdleTimers() {
	now := s.timers.now()
	if s.idl.lastData.IsZero() {
		s.idl.lastData = now
	}
	for i := range s.idl.parts {
		if s.idl.parts[i].lastData.IsZero() {
			s.idl.parts[i].lastData = now
		}
	}
}

// idleCheckMsg asks a source instance whether it has been idle for its
// vertex's IdleTimeout.
type idleCheckMsg struct{ gen uint64 }

// watchIdle calls check at once and then every quarter of the idle timeout
// d until ctx ends, so an idle source is noticed at most d/4 after the
// timeout. The reader, which owns it, restarts at every checkpoint: the
// check at once keeps checkpoints more frequent than d/4 from starving it.
func watchIdle(ctx context.Context, d time.Duration, check func()) {
	t := time.NewTicker(max(d/4, time.Millisecond))
	defer t.Stop()
	check()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			check()
		}
	}
}

// onIdleCheck sends the idle marker from a source that has read no data
// for its IdleTimeout. A batch with rows makes it active again (dispatch).
func (s *instance) onIdleCheck(c actor.Context, m *idleCheckMsg) {
	if m.gen != s.gen || s.src == nil || s.finished || s.idl.out {
		return
	}
	if s.blocked() {
		// Backpressure holds the source back: it is not reading because
		// its outputs are full, not because its input has nothing. Time
		// spent so does not count towards idleness (at the granularity
		// of the checks), so a slow consumer never makes a source's rows
		// late.
		now := s.timers.now()
		s.idl.lastData = now
		for i := range s.idl.parts {
			if !s.idl.parts[i].idle {
				s.idl.parts[i].lastData = now
			}
		}
		return
	}
	if len(s.idl.parts) > 0 {
		s.partitionsIdleCheck(c)
		return
	}
	if s.timers.now().Sub(s.idl.lastData) >= s.v.IdleTimeout {
		s.goIdle(c)
	}
}
