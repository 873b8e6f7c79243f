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
	// sourceCheckpointMsg takes checkpoint id at a source once its reader
	// has stopped and every batch it read before is processed.
	sourceCheckpointMsg struct {
		gen uint64
		id  uint64
		ts  int64
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
}

// runtimeMeta is the runtime's own state of an instance in a snapshot:
// watermarks and timers. It is JSON: small, and its decoder needs no
// care beyond what encoding/json gives.
type runtimeMeta struct {
	Watermark    int64   `json:"wm"`
	OutWatermark int64   `json:"out_wm"`
	Inputs       []int64 `json:"inputs,omitempty"`
	Timers       []byte  `json:"timers,omitempty"`
}

func (s *instance) encodeRuntimeMeta() ([]byte, error) {
	m := runtimeMeta{Watermark: int64(s.wm), OutWatermark: int64(s.outWM), Timers: s.timers.snapshot()}
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
	for i, wm := range m.Inputs {
		s.ins[i].wm = messages.Watermark(wm)
	}
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
	return h != nil || l != nil
}

func (s *instance) onTrigger(c actor.Context, m *triggerMsg) {
	if m.id <= s.ck.taken {
		return
	}
	switch {
	case s.finished || (s.src != nil && s.reader == nil):
		s.takeCheckpoint(c, messages.Barrier{ID: m.id, TimestampUs: m.ts}, 0)
	case s.src != nil:
		// The checkpoint must fall between two reads: stop the reader
		// (Read gives up on its context and keeps what it holds), let
		// the batches it already sent go first, then take it.
		s.stopReader()
		c.Send(s.self, &sourceCheckpointMsg{gen: s.gen, id: m.id, ts: m.ts})
	case m.id > s.ck.pending:
		s.ck.pending, s.ck.pendingTS = m.id, m.ts
	}
}

func (s *instance) onSourceCheckpoint(c actor.Context, m *sourceCheckpointMsg) {
	if m.gen != s.gen {
		return
	}
	s.takeCheckpoint(c, messages.Barrier{ID: m.id, TimestampUs: m.ts}, 0)
	if !s.finished && !s.draining && s.started {
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
	if h, _ := s.hooks(); h != nil && s.opened {
		err := s.callState(func() error { return h.PrepareCheckpoint(s.part.ctx, b.ID) })
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
		snap, err = persistence.OpenSnapshot(s.state)
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
	s.ck.completed = m.id
	if _, l := s.hooks(); l != nil && s.opened {
		// A source's methods never run while its Read does.
		reading := s.src != nil && s.reader != nil
		s.stopReader()
		if err := s.callState(func() error { return l.CheckpointComplete(s.part.ctx, m.id) }); err != nil {
			s.releaseEmitted()
			s.fail(fmt.Errorf("checkpoint %d complete: %w", m.id, err))
		}
		if reading {
			// Read again once the batches it already sent are handled.
			c.Send(s.self, &startMsg{})
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
