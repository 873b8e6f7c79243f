package actors

import (
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/meshflow/meshflow/messages"
)

// srcPartition is the watermark state of one partition of a Partitioned
// source: the same rules as an operator's inputs (wmtrack.go), with the
// partition's own idle timer.
type srcPartition struct {
	wmInput
	lastData time.Time
}

// partitionWatermark records batch m of a Partitioned source, whose own
// watermark (from its rows) is wm when hasWM, and returns the source's
// watermark: the minimum over its active partitions. ok is false when no
// partition is active (they are all idle) or none has a watermark yet.
func (s *instance) partitionWatermark(m *readResult, wm messages.Watermark, hasWM bool) (messages.Watermark, bool) {
	if m.partition < 0 || m.partition >= m.parts {
		m.rec.Release()
		s.fail(fmt.Errorf("read: source gave partition %d of %d", m.partition, m.parts))
	}
	now := s.timers.now()
	for len(s.idl.parts) < m.parts {
		s.idl.parts = append(s.idl.parts, srcPartition{wmInput: wmInput{wm: messages.MinWatermark}, lastData: now})
	}
	s.idl.parts = s.idl.parts[:m.parts]
	p := &s.idl.parts[m.partition]
	if m.rec.NumRows() > 0 {
		p.onData()
		p.lastData = now
	}
	if hasWM {
		p.onWatermark(wm)
	}
	return s.partitionsMin()
}

func (s *instance) partitionsMin() (messages.Watermark, bool) {
	ins := make([]*wmInput, len(s.idl.parts))
	for i := range s.idl.parts {
		ins[i] = &s.idl.parts[i].wmInput
	}
	wm, ok, _ := combineWatermarks(ins)
	return wm, ok && wm != messages.MinWatermark
}

// partitionsIdleCheck marks idle the partitions that have read nothing for
// the idle timeout: the watermark may advance without them, and when all
// are idle the source is.
func (s *instance) partitionsIdleCheck(c actor.Context) {
	now := s.timers.now()
	all := true
	for i := range s.idl.parts {
		p := &s.idl.parts[i]
		if now.Sub(p.lastData) >= s.v.IdleTimeout {
			p.onIdle()
		}
		all = all && p.idle
	}
	if all {
		s.goIdle(c)
		return
	}
	if wm, ok := s.partitionsMin(); ok {
		s.setWatermark(c, wm)
	}
}
