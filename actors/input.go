package actors

import (
	"context"
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/meshflow/meshflow/messages"
)

// onData takes an envelope that arrived on an input: the aligner decides
// when it is processed (at once, or after the alignment of a barrier).
func (s *instance) onData(c actor.Context, m *dataMsg) {
	ch := s.inByKey[m.key]
	if ch == nil {
		m.env.Release()
		s.fail(fmt.Errorf("envelope on unknown channel %v", m.key))
	}
	if err := s.al.offer(ch.idx, m.env); err != nil {
		m.env.Release()
		s.fail(fmt.Errorf("channel %v: %w", m.key, err))
	}
	s.runAligner(c)
}

// runAligner carries out the aligner's steps: envelopes to process, and
// checkpoints to take when a barrier is aligned.
func (s *instance) runAligner(c actor.Context) {
	for {
		ev, ok := s.al.next()
		if !ok {
			return
		}
		switch ev.kind {
		case alignDeliver:
			ch := s.ins[ev.in]
			s.deliver(c, ch, &dataMsg{key: ch.key, env: ev.env, part: s.part})
		case alignAligned:
			s.takeCheckpoint(c, ev.barrier, ev.took)
			// An end-of-stream that completed the alignment came first;
			// the instance may be done now.
			s.maybeFinish(c)
		}
	}
}

// deliver processes one envelope of input ch.
func (s *instance) deliver(c actor.Context, ch *inChan, m *dataMsg) {
	switch m.env.Kind {
	case messages.KindBatch:
		rejoin := ch.idle
		ch.onData()
		s.processBatch(c, ch, m)
		if rejoin {
			// The input counts again, with its own watermark: with every
			// other input idle, the watermark moves to it (wmtrack.go).
			s.advanceWatermark(c)
		}
	case messages.KindWatermark:
		if m.env.IsIdle() {
			ch.onIdle()
		} else {
			ch.onWatermark(m.env.Watermark)
		}
		s.processed(c, ch)
		s.advanceWatermark(c)
	case messages.KindBarrier:
		// The aligner acts on barriers; here it only counts as input.
		s.processed(c, ch)
	case messages.KindEndOfStream:
		ch.onEnd()
		s.advanceWatermark(c)
		s.maybeFinish(c)
	default:
		m.env.Release()
		s.fail(fmt.Errorf("unknown envelope kind %v", m.env.Kind))
	}
}

func (s *instance) processBatch(c actor.Context, ch *inChan, m *dataMsg) {
	if m.seq == 0 {
		s.seq++
		m.seq = s.seq
	}
	rows := m.env.Rows()
	lin := m.env.Lineage
	if lin == nil {
		lin = s.unplacedLineage(int(rows))
		m.env.Lineage = lin
	}
	ctx := context.WithValue(s.part.ctx, inputSeqKey{}, m.seq)
	ctx = context.WithValue(ctx, inputLineageKey{}, lin)
	ctx = context.WithValue(ctx, inputFromKey{}, ch.from.Operator)
	s.inLin, s.inRows, s.emitN = lin, int(rows), 0
	err := s.callState(func() error { return s.op.Process(ctx, m.env.Batch, s) })
	s.inLin = nil
	if err != nil {
		s.releaseEmitted()
		s.retry = m
		s.fail(fmt.Errorf("process batch %d: %w", m.seq, err))
	}
	m.env.Release()
	s.stats.batchesIn.Add(1)
	s.stats.rowsIn.Add(rows)
	s.dispatch(c)
	s.processed(c, ch)
}

// abortAlignment gives up aligning checkpoint id (or an older one) and
// processes what was held.
func (s *instance) abortAlignment(c actor.Context, id uint64) {
	s.al.abort(id)
	s.runAligner(c)
}

func (s *instance) maybeFinish(c actor.Context) {
	if s.finished {
		return
	}
	for _, ch := range s.ins {
		if !ch.eos {
			return
		}
	}
	if _, aligning := s.al.aligning(); aligning {
		return
	}
	s.finished = true
	s.setWatermark(c, messages.MaxWatermark)
	if f, ok := s.op.(Finisher); ok {
		if err := s.callState(func() error { return f.Finish(s.part.ctx, s) }); err != nil {
			s.releaseEmitted()
			s.finished = false
			s.fail(fmt.Errorf("finish: %w", err))
		}
		s.dispatch(c)
	}
	if s.part.checkpointing {
		// The operator stays open: the checkpoint covering its last
		// output is still to come (a sink commits it then).
		s.takePendingAtFinish(c)
	} else {
		s.opened = false
		if err := s.call(func() error { return s.op.Close(s.part.ctx) }); err != nil {
			s.part.fail(&OperatorError{Job: s.part.g.Name, Operator: s.id.Operator, Instance: s.id.Index, Failures: 1, Err: fmt.Errorf("close: %w", err)})
			return
		}
	}
	s.broadcast(c, messages.EndOfStream())
	s.afterFlush(c)
}

// Sources.
