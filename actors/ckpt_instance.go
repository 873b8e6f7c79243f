package actors

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/meshflow/meshflow/messages"
	"github.com/meshflow/meshflow/persistence"
)

// Checkpoint messages from the job part to its instances.
type (
	// triggerMsg starts checkpoint id: sources take it between two reads,
	// finished instances at once, the others when its barrier has come on
	// every open input (or when their inputs end first).
	triggerMsg struct {
		id uint64
		ts int64
	}
	// completeMsg says checkpoint id is complete.
	completeMsg struct{ id uint64 }
	// abortMsg says checkpoint id will never complete.
	abortMsg struct{ id uint64 }
	// betweenReadsMsg runs f at a source once its reader has stopped and
	// every batch it read before is processed; then reading goes on.
	betweenReadsMsg struct {
		gen uint64
		f   func(c actor.Context)
	}
)

// instanceCheckpoints is an instance's part in the job's checkpoints.
type instanceCheckpoints struct {
	// taken is the highest checkpoint id this instance snapshotted.
	taken uint64
	// completed is the highest id CheckpointComplete was called for.
	completed uint64
	// pending is a checkpoint triggered whose barriers have not all come;
	// an instance whose inputs end first takes it then.
	pending   uint64
	pendingTS int64
	// restoreMeta is the runtime state restored from the checkpoint, for
	// the first open of this run.
	restoreMeta []byte
	// between counts the calls a source has queued to run between two
	// reads (see betweenReads).
	between int
}

// runtimeMeta is the runtime's own state of an instance in a snapshot:
// watermarks and timers. It is JSON: small, and its decoder needs no
// care beyond what encoding/json gives.
type runtimeMeta struct {
	Watermark    int64   `json:"wm"`
	OutWatermark int64   `json:"out_wm"`
	Inputs       []int64 `json:"inputs,omitempty"`
	Timers       []byte  `json:"timers,omitempty"`
	// Partitions: a Partitioned source's watermark per partition
	// (partitions.go).
	Partitions []int64 `json:"parts,omitempty"`
}

func (s *instance) encodeRuntimeMeta() ([]byte, error) {
	m := runtimeMeta{Watermark: int64(s.wm), OutWatermark: int64(s.outWM), Timers: s.timers.snapshot(), Partitions: s.partitionsMeta()}
	for _, ch := range s.ins {
		m.Inputs = append(m.Inputs, int64(ch.wm))
	}
	return json.Marshal(m)
}

// applyRuntimeMeta restores watermarks and timers from a snapshot; timers
// must have been reset before.
func (s *instance) applyRuntimeMeta(b []byte) error {
	var m runtimeMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("runtime state: %w", err)
	}
	if len(m.Inputs) != 0 && len(m.Inputs) != len(s.ins) {
		return fmt.Errorf("runtime state: %d input watermarks for %d inputs", len(m.Inputs), len(s.ins))
	}
	s.wm, s.outWM = messages.Watermark(m.Watermark), messages.Watermark(m.OutWatermark)
	s.stats.wm.Store(m.Watermark)
	for i, wm := range m.Inputs {
		s.ins[i].wm = messages.Watermark(wm)
	}
	s.restorePartitions(m.Partitions)
	if err := s.timers.restore(m.Timers); err != nil {
		return fmt.Errorf("runtime state: %w", err)
	}
	return nil
}

// hooks returns the checkpoint hooks of the instance's source or operator.
func (s *instance) hooks() (CheckpointHandler, CheckpointListener) {
	var u any = s.op
	if s.src != nil {
		u = s.src
	}
	h, _ := u.(CheckpointHandler)
	l, _ := u.(CheckpointListener)
	return h, l
}

// volatile reports whether the instance keeps state a restart of it alone
// would lose: then its failures recover the whole job (with checkpoints
// on) instead of restarting it alone.
func (s *instance) volatile() bool {
	if s.v.NewSource != nil {
		return true
	}
	h, l := s.hooks()
	return h != nil || l != nil || len(s.flushers) > 0
}

func (s *instance) onTrigger(c actor.Context, m *triggerMsg) {
	if m.id <= s.ck.taken {
		return
	}
	switch {
	case s.finished && s.src == nil:
		s.takeCheckpoint(c, messages.Barrier{ID: m.id, TimestampUs: m.ts}, 0)
	case s.src != nil:
		// The checkpoint falls between two reads.
		s.betweenReads(c, func(c actor.Context) {
			s.takeCheckpoint(c, messages.Barrier{ID: m.id, TimestampUs: m.ts}, 0)
		})
	case m.id > s.ck.pending:
		s.ck.pending, s.ck.pendingTS = m.id, m.ts
	}
}

// betweenReads runs f at a source when no Read runs (a Source's methods
// are never called concurrently): it stops the reader (Read gives up on its
// context and keeps what it holds), lets the batches it already sent go
// first, runs f, and starts reading again.
// Calls queue up behind one another in order.
func (s *instance) betweenReads(c actor.Context, f func(c actor.Context)) {
	if s.reader == nil && s.ck.between == 0 {
		f(c)
		return
	}
	s.stopReader()
	s.ck.between++
	c.Send(s.self, &betweenReadsMsg{gen: s.gen, f: f})
}

func (s *instance) onBetweenReads(c actor.Context, m *betweenReadsMsg) {
	if m.gen != s.gen {
		return
	}
	s.ck.between--
	m.f(c)
	if s.ck.between == 0 && !s.finished && !s.draining && s.started && s.reader == nil {
		s.startReader()
		s.demand()
	}
}

// takeCheckpoint snapshots the instance for checkpoint b.ID: the
// operator's PrepareCheckpoint, a point-in-time view of its Store and the
// runtime's own state; the barrier goes on downstream at once and the
// snapshot is uploaded while the instance goes on.
func (s *instance) takeCheckpoint(c actor.Context, b messages.Barrier, alignment time.Duration) {
	if b.ID <= s.ck.taken {
		return
	}
	s.ck.taken = b.ID
	if s.ck.pending <= b.ID {
		s.ck.pending = 0
	}
	start := time.Now()
	if h, _ := s.hooks(); (h != nil || len(s.flushers) > 0) && s.opened {
		err := s.callState(func() error {
			if h != nil {
				if err := h.PrepareCheckpoint(s.part.ctx, b.ID); err != nil {
					return err
				}
			}
			return s.flushState(s.part.ctx)
		})
		if err != nil {
			s.releaseEmitted()
			s.part.decline(b.ID, s.id, err)
			s.fail(fmt.Errorf("checkpoint %d: %w", b.ID, err))
		}
		s.dispatch(c)
	}
	meta, err := s.encodeRuntimeMeta()
	var snap persistence.Snapshot
	if err == nil {
		snap, err = s.openSnapshot()
	}
	if err != nil {
		s.part.decline(b.ID, s.id, err)
		s.fail(fmt.Errorf("checkpoint %d: snapshot: %w", b.ID, err))
	}
	if !s.finished {
		s.broadcast(c, messages.BarrierEnvelope(b))
	}
	s.part.upload(s.id, b.ID, meta, snap, alignment, time.Since(start), s.finished, s.src != nil && s.draining)
}

// takePendingAtFinish takes a triggered checkpoint whose barriers can no
// longer come because every input ended.
func (s *instance) takePendingAtFinish(c actor.Context) {
	if s.ck.pending > s.ck.taken {
		s.takeCheckpoint(c, messages.Barrier{ID: s.ck.pending, TimestampUs: s.ck.pendingTS}, 0)
	}
}

func (s *instance) onComplete(c actor.Context, m *completeMsg) {
	if m.id <= s.ck.completed || s.ck.taken == 0 {
		s.part.instanceCompleted(s.id, m.id)
		return
	}
	if s.src != nil && (s.reader != nil || s.ck.between > 0) {
		s.betweenReads(c, func(c actor.Context) { s.onComplete(c, m) })
		return
	}
	s.ck.completed = m.id
	if _, l := s.hooks(); l != nil && s.opened {
		if err := s.callState(func() error { return l.CheckpointComplete(s.part.ctx, m.id) }); err != nil {
			s.releaseEmitted()
			s.fail(fmt.Errorf("checkpoint %d complete: %w", m.id, err))
		}
		s.dispatch(c)
		s.afterFlush(c)
	}
	s.part.instanceCompleted(s.id, m.id)
}

func (s *instance) onAbort(c actor.Context, m *abortMsg) {
	if s.ck.pending != 0 && s.ck.pending <= m.id {
		s.ck.pending = 0
	}
	s.abortAlignment(c, m.id)
}

// errFatal marks failures a recovery cannot fix: the job fails at once.
var errFatal = errors.New("actors: unrecoverable")
