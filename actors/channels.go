package actors

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/meshflow/meshflow/messages"
	"github.com/meshflow/meshflow/messages/pb"
)

// chanKey names a channel from the point of view of one side: the edge
// index in the graph and the instance index of the other side... except
// that both sides address a channel by (edge, sender index) for inputs and
// (edge, receiver index) for outputs, so each side can build the key the
// other expects.
type chanKey struct{ edge, peer int }

type inChan struct {
	key       chanKey // (edge, sender index)
	from      InstanceID
	remote    bool
	subject   string // credit subject, remote channels
	processed uint64
	granted   uint64
	lastTick  uint64
	wmInput       // watermark, end-of-stream, idle (wmtrack.go)
	idx       int // index in instance.ins (and in the aligner)
}

type outChan struct {
	key     chanKey // (edge, receiver index)
	rkey    chanKey // the receiver's key for this channel: (edge, sender index)
	to      InstanceID
	remote  bool
	subject string // data subject, remote channels
	enc     *messages.FrameEncoder
	sent    uint64
	limit   uint64
	queue   []messages.Envelope
}

type outEdge struct {
	idx     int
	edge    Edge
	targets []*outChan // by receiver index; nil where not connected
	rr      int
	schema  *arrow.Schema
	keyCols []int
}

// processed counts an envelope of ch as done and returns its credit, unless
// an output is backed up: then the credit is owed until the outputs drain,
// which is what slows the sender down.
func (s *instance) processed(c actor.Context, ch *inChan) {
	ch.processed++
	if s.blocked() {
		s.owe = true
		return
	}
	s.grant(c, ch)
}

func (s *instance) grant(c actor.Context, ch *inChan) {
	limit := ch.processed + s.window
	if limit <= ch.granted && !(ch.remote && ch.granted == 0) {
		return
	}
	ch.granted = max(limit, ch.granted)
	s.sendCredit(c, ch)
}

func (s *instance) sendCredit(c actor.Context, ch *inChan) {
	if !ch.remote {
		if pid := s.part.pid(ch.from); pid != nil {
			c.Send(pid, &creditMsg{key: chanKey{ch.key.edge, s.id.Index}, limit: ch.granted})
		}
		return
	}
	b, err := proto.Marshal(&pb.Credit{AckedSeq: ch.processed, Credits: uint32(ch.granted - ch.processed)})
	if err == nil {
		err = s.part.node.cfg.NATS.Publish(ch.subject, b)
	}
	if err != nil {
		s.fail(fmt.Errorf("send credit on %s: %w", ch.subject, err))
	}
}

func (s *instance) onTick() {
	for _, ch := range s.ins {
		if !ch.remote || ch.eos {
			continue
		}
		if ch.processed == ch.lastTick && ch.granted > 0 {
			b, err := proto.Marshal(&pb.Credit{AckedSeq: ch.processed, Credits: uint32(ch.granted - ch.processed)})
			if err == nil {
				err = s.part.node.cfg.NATS.Publish(ch.subject, b)
			}
			if err != nil {
				s.log.Warn("repeat credit failed", "subject", ch.subject, "error", err)
			}
		}
		ch.lastTick = ch.processed
	}
}

func (s *instance) blocked() bool {
	for _, e := range s.outs {
		for _, oc := range e.targets {
			if oc != nil && len(oc.queue) > 0 {
				return true
			}
		}
	}
	return false
}

func (s *instance) onCredit(c actor.Context, m *creditMsg) {
	oc := s.outByKey[m.key]
	if oc == nil {
		s.fail(fmt.Errorf("credit on unknown channel %v", m.key))
	}
	if m.limit > oc.limit {
		oc.limit = m.limit
	}
	s.flush(c, oc)
	s.afterFlush(c)
}

// afterFlush runs what waits for the outputs to drain: owed credits, source
// demand, and the report that a finished instance is done.
func (s *instance) afterFlush(c actor.Context) {
	if s.blocked() {
		return
	}
	if s.owe {
		s.owe = false
		for _, ch := range s.ins {
			if !ch.eos {
				s.grant(c, ch)
			}
		}
	}
	if s.wantDemand {
		s.demand()
	}
	if s.finished && !s.doneReported {
		s.doneReported = true
		s.part.instanceDone(s.id)
	}
}

// broadcast sends a control envelope on every output channel.
func (s *instance) broadcast(c actor.Context, env messages.Envelope) {
	for _, e := range s.outs {
		for _, oc := range e.targets {
			if oc != nil {
				s.enqueue(c, oc, env)
			}
		}
	}
}

func (s *instance) enqueue(c actor.Context, oc *outChan, env messages.Envelope) {
	if oc.remote && env.Kind == messages.KindBatch {
		parts, err := messages.SplitBatch(env.Batch, s.part.node.cfg.MaxPayload)
		env.Release()
		if err != nil {
			s.fail(fmt.Errorf("channel %s: %w", oc.subject, err))
		}
		lo := 0
		for _, p := range parts {
			hi := lo + int(p.NumRows())
			var pl *messages.Lineage
			if env.Lineage != nil {
				pl = env.Lineage.Slice(lo, hi)
			}
			oc.queue = append(oc.queue, messages.LineageEnvelope(p, pl))
			lo = hi
		}
	} else {
		oc.queue = append(oc.queue, env)
	}
	s.flush(c, oc)
}

func (s *instance) flushAll(c actor.Context) {
	for _, e := range s.outs {
		for _, oc := range e.targets {
			if oc != nil {
				s.flush(c, oc)
			}
		}
	}
}

// flush sends what the channel's credit allows.
func (s *instance) flush(c actor.Context, oc *outChan) {
	n := 0
	for n < len(oc.queue) && oc.sent < oc.limit {
		env := oc.queue[n]
		if oc.remote {
			data, err := oc.enc.Encode(oc.sent+1, env)
			if err == nil {
				err = s.part.node.cfg.NATS.Publish(oc.subject, data)
			}
			if err != nil {
				oc.queue = oc.queue[n:]
				s.fail(fmt.Errorf("send on %s: %w", oc.subject, err))
			}
			env.Release()
		} else {
			pid := s.part.pid(oc.to)
			if pid == nil {
				break
			}
			c.Send(pid, s.part.track(&dataMsg{key: oc.rkey, env: env, part: s.part}))
		}
		oc.queue[n] = messages.Envelope{}
		oc.sent++
		n++
	}
	if n > 0 {
		rest := copy(oc.queue, oc.queue[n:])
		clear(oc.queue[rest:])
		oc.queue = oc.queue[:rest]
	}
}

// releaseQueued releases what is still queued when the job ends.
func (s *instance) releaseQueued() {
	for _, e := range s.outs {
		for _, oc := range e.targets {
			if oc == nil {
				continue
			}
			for i := range oc.queue {
				oc.queue[i].Release()
			}
			oc.queue = nil
		}
	}
	for _, env := range s.al.drain() {
		env.Release()
	}
	if s.retry != nil {
		s.retry.env.Release()
		s.retry = nil
	}
}
