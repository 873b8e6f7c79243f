package actors

import (
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/meshflow/meshflow/messages"
)

// advanceWatermark recomputes the input watermark (the minimum over the
// open inputs) and, when it moved, fires event-time timers, calls the
// operator's hook and forwards the watermark.
func (s *instance) advanceWatermark(c actor.Context) {
	wm := messages.MaxWatermark
	for _, ch := range s.ins {
		if !ch.eos && ch.wm < wm {
			wm = ch.wm
		}
	}
	s.setWatermark(c, wm)
}

func (s *instance) setWatermark(c actor.Context, wm messages.Watermark) {
	if wm <= s.wm {
		return
	}
	s.wm = wm
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
		s.broadcast(c, messages.WatermarkEnvelope(wm))
	}
}
