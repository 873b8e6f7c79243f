package actors

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/asynkron/protoactor-go/actor"

	"github.com/meshflow/meshflow/messages"
)

type reader struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	demand chan struct{}
}

func (s *instance) startReader() {
	if s.reader != nil || s.finished || s.draining {
		return
	}
	ctx, cancel := context.WithCancel(s.part.ctx)
	r := &reader{cancel: cancel, demand: make(chan struct{}, 1)}
	s.reader = r
	s.reading = false
	gen, src, pid, root := s.gen, s.src, s.self, s.part.node.system.Root
	s.startIdleTimers()
	if d := s.v.IdleTimeout; d > 0 {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			watchIdle(ctx, d, func() { root.Send(pid, &idleCheckMsg{gen: gen}) })
		}()
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-r.demand:
			}
			var rec arrow.RecordBatch
			var pos []uint64
			var base uint64
			var ranged bool
			partition, parts := -1, 0
			err := s.call(func() error {
				var err error
				rec, err = src.Read(ctx)
				if rec == nil || err != nil {
					return err
				}
				if r, ok := src.(PositionRanger); ok {
					base, ranged = r.PositionBase()
				}
				if p, ok := src.(Positioner); ok && !ranged {
					pos = p.Positions()
				}
				if p, ok := src.(Partitioned); ok {
					partition, parts = p.Partition(), p.Partitions()
				}
				return nil
			})
			if ctx.Err() != nil && err != nil && !errors.Is(err, io.EOF) {
				return
			}
			root.Send(pid, s.part.track(&readResult{gen: gen, rec: rec, pos: pos, base: base, ranged: ranged, partition: partition, parts: parts, err: err, part: s.part}))
			if err != nil {
				return
			}
		}
	}()
}

func (s *instance) stopReader() {
	if s.reader == nil {
		return
	}
	s.reader.cancel()
	s.reader.wg.Wait()
	s.reader = nil
	s.reading = false
}

// demand lets the reader read one more batch, unless the outputs are
// backed up: then it waits for them to drain.
func (s *instance) demand() {
	if s.reader == nil || s.reading {
		return
	}
	if s.blocked() {
		s.wantDemand = true
		return
	}
	s.wantDemand = false
	s.reading = true
	s.reader.demand <- struct{}{}
}

func (s *instance) onRead(c actor.Context, m *readResult) {
	if m.gen != s.gen || s.finished {
		if m.rec != nil {
			m.rec.Release()
		}
		return
	}
	s.reading = false
	switch {
	case errors.Is(m.err, io.EOF):
		if m.rec != nil {
			m.rec.Release()
		}
		s.finishSource(c)
		return
	case m.err != nil:
		if m.rec != nil {
			m.rec.Release()
		}
		s.fail(fmt.Errorf("read: %w", m.err))
	case m.rec == nil:
		s.demand()
		return
	}
	s.seq++
	s.stats.batchesIn.Add(1)
	s.stats.rowsIn.Add(m.rec.NumRows())
	wm, hasWM := s.eventTimeWatermark(m.rec)
	if m.parts > 0 {
		wm, hasWM = s.partitionWatermark(m, wm, hasWM)
	}
	rows := int(m.rec.NumRows())
	var lin *messages.Lineage
	switch {
	case m.ranged:
		lin = &messages.Lineage{Origin: s.id.Operator, Base: m.base}
	case m.pos == nil:
		lin = s.unplacedLineage(rows)
	case len(m.pos) != rows:
		m.rec.Release()
		s.fail(fmt.Errorf("read: source gave %d positions for %d rows", len(m.pos), rows))
	default:
		lin = &messages.Lineage{Origin: s.id.Operator, Pos: m.pos}
	}
	if rows > 0 {
		s.idl.lastData = s.timers.now()
		s.emitted = append(s.emitted, m.rec)
		s.emittedLin = append(s.emittedLin, lin)
	} else {
		m.rec.Release()
	}
	s.dispatch(c)
	if hasWM {
		s.setWatermark(c, wm)
	}
	if cm, ok := s.src.(Committer); ok {
		if err := s.call(func() error { return cm.Commit(s.part.ctx) }); err != nil {
			s.fail(fmt.Errorf("commit: %w", err))
		}
	}
	s.demand()
}

func (s *instance) onStopSource(c actor.Context) {
	if s.src == nil || s.finished || s.draining {
		return
	}
	s.draining = true
	s.stopReader()
	// Results the reader sent before it stopped are queued ahead of this.
	c.Send(s.self, &drainedMsg{gen: s.gen})
}

// onPauseSource stops a source reading for good, without ending its
// stream: the job is stopping with a final checkpoint, which the source
// takes (and then acknowledges its input) when the trigger comes.
func (s *instance) onPauseSource() {
	if s.src == nil || s.finished || s.draining {
		return
	}
	s.draining = true
	s.stopReader()
	s.part.sourcePaused(s.id)
}

// finishSource ends a source: commit, close, final watermark, end-of-stream.
func (s *instance) finishSource(c actor.Context) {
	if s.finished {
		return
	}
	s.stopReader()
	if cm, ok := s.src.(Committer); ok {
		if err := s.call(func() error { return cm.Commit(s.part.ctx) }); err != nil {
			s.fail(fmt.Errorf("commit: %w", err))
		}
	}
	s.finished = true
	if !s.part.checkpointing {
		// With checkpoints, the source stays open until the job ends: it
		// acknowledges its input when a checkpoint covering it completes.
		s.opened = false
		if err := s.call(func() error { return s.src.Close(s.part.ctx) }); err != nil {
			s.part.fail(&OperatorError{Job: s.part.g.Name, Operator: s.id.Operator, Instance: s.id.Index, Failures: 1, Err: fmt.Errorf("close: %w", err)})
			return
		}
	}
	s.setWatermark(c, messages.MaxWatermark)
	s.broadcast(c, messages.EndOfStream())
	s.afterFlush(c)
}

// OperatorContext implementation.
