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

// Partition watermarks in checkpoints
//
// A Partitioned source's per-partition watermarks are part of its
// snapshot (runtimeMeta.Partitions), so that after a restore its watermark
// is the one an uninterrupted run would have: a partition that lagged
// still holds it back, and a partition that had gone further is not
// pulled back by rows it reads again (its rows after the restored position
// may be older than its watermark by up to the out-of-orderness bound).
// Restarting them from the start instead would never raise the watermark
// above what it was (the instance's own is restored and never goes back),
// only hold it lower for longer.
//
// Idleness restarts fresh: after a restore every partition is active, its
// idle timer starting when the source starts reading, and goes idle again
// only when it reads nothing for the idle timeout. The restored source may
// well have data for it now.

// partitionsMeta returns the partition watermarks to snapshot.
func (s *instance) partitionsMeta() []int64 {
	if len(s.idl.parts) == 0 {
		return nil
	}
	out := make([]int64, len(s.idl.parts))
	for i, p := range s.idl.parts {
		out[i] = int64(p.wm)
	}
	return out
}

// restorePartitions restores the partition watermarks of a snapshot, each
// partition active. A source that reads more partitions after the restore
// starts the new ones at MinWatermark, one that reads fewer drops the rest
// (partitionWatermark).
func (s *instance) restorePartitions(wms []int64) {
	s.idl.parts = s.idl.parts[:0]
	for _, wm := range wms {
		// lastData is set when the source starts reading.
		s.idl.parts = append(s.idl.parts, srcPartition{wmInput: wmInput{wm: messages.Watermark(wm)}})
	}
}
