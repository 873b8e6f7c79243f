package actors

import (
	"context"
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/meshflow/meshflow/messages"
)

func (s *instance) onData(c actor.Context, m *dataMsg) {
	ch := s.inByKey[m.key]
	if ch == nil {
		m.env.Release()
		s.fail(fmt.Errorf("envelope on unknown channel %v", m.key))
	}
	if ch.barrier != 0 && m.env.Kind != messages.KindEndOfStream {
		ch.held = append(ch.held, m.env)
		return
	}
	switch m.env.Kind {
	case messages.KindBatch:
		s.processBatch(c, ch, m)
	case messages.KindWatermark:
		if m.env.Watermark > ch.wm {
			ch.wm = m.env.Watermark
		}
		s.processed(c, ch)
		s.advanceWatermark(c)
	case messages.KindBarrier:
		s.processed(c, ch)
		ch.barrier = m.env.Barrier.ID
		s.align(c, m.env.Barrier)
	case messages.KindEndOfStream:
		ch.eos = true
		for _, e := range ch.held {
			e.Release()
		}
		ch.held = nil
		ch.barrier = 0
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
	s.inLin, s.inRows, s.emitN = lin, int(rows), 0
	err := s.call(func() error { return s.op.Process(ctx, m.env.Batch, s) })
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

// align forwards barrier b once every open input has delivered it, then
// processes what was held behind it.
func (s *instance) align(c actor.Context, b messages.Barrier) {
	for _, ch := range s.ins {
		if !ch.eos && ch.barrier != b.ID {
			return
		}
	}
	s.broadcast(c, messages.BarrierEnvelope(b))
	var held []struct {
		key chanKey
		env messages.Envelope
	}
	for _, ch := range s.ins {
		ch.barrier = 0
		for _, e := range ch.held {
			held = append(held, struct {
				key chanKey
				env messages.Envelope
			}{ch.key, e})
		}
		ch.held = nil
	}
	for _, h := range held {
		s.onData(c, &dataMsg{key: h.key, env: h.env})
	}
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
	if ch := s.pendingBarrier(); ch {
		return
	}
	s.finished = true
	s.setWatermark(c, messages.MaxWatermark)
	if f, ok := s.op.(Finisher); ok {
		if err := s.call(func() error { return f.Finish(s.part.ctx, s) }); err != nil {
			s.releaseEmitted()
			s.finished = false
			s.fail(fmt.Errorf("finish: %w", err))
		}
		s.dispatch(c)
	}
	s.opened = false
	if err := s.call(func() error { return s.op.Close(s.part.ctx) }); err != nil {
		s.part.fail(&OperatorError{Job: s.part.g.Name, Operator: s.id.Operator, Instance: s.id.Index, Failures: 1, Err: fmt.Errorf("close: %w", err)})
		return
	}
	s.broadcast(c, messages.EndOfStream())
	s.afterFlush(c)
}

func (s *instance) pendingBarrier() bool {
	for _, ch := range s.ins {
		if ch.barrier != 0 {
			return true
		}
	}
	return false
}

// Sources.
