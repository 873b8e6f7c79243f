package natsio

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/persistence"
)

// Defaults of a source in a job with checkpoints (see [SourceConfig]).
const (
	// CheckpointAckWait is the default AckWait with checkpoints: a message
	// is acknowledged when the checkpoint covering it completes, seconds
	// or minutes after it was read, and a redelivery before that is only
	// dropped. A restarted source rewinds its consumer in Open, so AckWait
	// never delays recovery.
	CheckpointAckWait = 5 * time.Minute
	// CheckpointMaxAckPending is the default MaxAckPending with
	// checkpoints: the messages one checkpoint interval may read before
	// the source waits for the checkpoint to complete.
	CheckpointMaxAckPending = 1 << 18
)

// sourcePositionKey holds, in the source's Store namespace, the stream
// sequence to read next as of the last PrepareCheckpoint.
var sourcePositionKey = []byte("position")

// sourceStreamKey records which stream the position is in.
var sourceStreamKey = []byte("stream")

// ackPayload acknowledges a JetStream message.
var ackPayload = []byte("+ACK")

// sourceCkpt is a source's state in a job with checkpoints.
//
// Messages are handed over with the batches Read returns (never before
// every row of a message is returned) and acknowledged only when a
// checkpoint taken after their hand-over completes. The position recorded
// at each checkpoint is the stream sequence after the last message handed
// over: everything below was handed over, nothing above.
type sourceCkpt struct {
	store persistence.Store
	// stream identifies the stream read (name and creation time): a
	// position is a sequence of that stream only.
	stream []byte
	// maxSeq is the highest stream sequence taken from the consumer; a
	// message at or below it is a redelivery of one the source holds or
	// handed over.
	maxSeq uint64
	// handedSeq: every message up to it is handed over.
	handedSeq uint64
	// unacked are the reply subjects of the messages handed over (and of
	// redeliveries dropped) since the last PrepareCheckpoint.
	unacked []string
	// unackedN counts the messages among unacked (redeliveries aside).
	unackedN int
	// pending are the acknowledgements waiting for their checkpoint.
	pending []ckptAcks
	// held counts the messages handed over and not acknowledged.
	held int
	// deferred are dead letters of messages not handed over yet.
	deferred []deferredDL
}

type ckptAcks struct {
	id      uint64
	replies []string
	n       int
}

type deferredDL struct {
	seq uint64
	dl  DeadLetter
}

var (
	_ actors.CheckpointHandler  = (*Source)(nil)
	_ actors.CheckpointListener = (*Source)(nil)
)

// openCkpt checks that the source can take part in checkpoints and sets
// up its state and transactional dead letters.
func (s *Source) openCkpt(oc actors.OperatorContext, dlc *DeadLettersConfig) error {
	if p := oc.Parallelism(); p > 1 {
		return fmt.Errorf("natsio: source %s: with checkpoints a JetStream source reads through its consumer %s with one instance, not %d: set its parallelism to 1",
			s.op, s.cfg.Consumer, p)
	}
	state := oc.State()
	if state == nil {
		return fmt.Errorf("natsio: source %s: checkpoints need the instance's State", s.op)
	}
	if s.cfg.MaxAckPending == 0 {
		s.cfg.MaxAckPending = max(CheckpointMaxAckPending, 2*(s.cfg.BatchSize+s.cfg.Prefetch))
	}
	s.ck = &sourceCkpt{store: state.Namespace("natsio.source")}
	dlc.Store, dlc.Instance = state.Namespace("natsio.source.dlq"), oc.Instance()
	return nil
}

// restoreCkpt rewinds the durable consumer: to the position recorded by
// the checkpoint the job was restored from, or, with none, to its ack
// floor + 1 (floor + 1 when the consumer was just created in place of one
// with that ack floor), so that what a previous run read and did not
// acknowledge comes back at once rather than after AckWait. Then it
// publishes the dead letters that checkpoint staged and a previous run
// may not have published.
func (s *Source) restoreCkpt(ctx context.Context, oc actors.OperatorContext, stream string, floor uint64) error {
	st, err := s.js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("natsio: source %s: stream %s: %w", s.op, stream, err)
	}
	s.ck.stream = fmt.Appendf(nil, "%s@%d", stream, st.CachedInfo().Created.UnixNano())
	var pos uint64
	if oc.RestoredCheckpoint() > 0 {
		was, err := s.ck.store.Get(ctx, sourceStreamKey)
		if err != nil && !errors.Is(err, persistence.ErrNotFound) {
			return fmt.Errorf("natsio: source %s: read position: %w", s.op, err)
		}
		if err == nil && string(was) != string(s.ck.stream) {
			return fmt.Errorf("natsio: source %s: checkpoint %d recorded a position in stream %s, but the source now reads %s: "+
				"a position is only valid in the stream it was taken in (run the job under another name to start afresh)",
				s.op, oc.RestoredCheckpoint(), was, s.ck.stream)
		}
		v, err := s.ck.store.Get(ctx, sourcePositionKey)
		switch {
		case err == nil && len(v) == 8:
			pos = binary.BigEndian.Uint64(v)
		case err == nil:
			return fmt.Errorf("natsio: source %s: checkpoint %d: position of %d bytes", s.op, oc.RestoredCheckpoint(), len(v))
		case errors.Is(err, persistence.ErrNotFound):
			// The checkpoint has no position for this source (it was
			// added to the job since): start from the ack floor.
			oc.Logger().Info("no position in the restored checkpoint; reading from the consumer's ack floor",
				"checkpoint_id", oc.RestoredCheckpoint())
		default:
			return fmt.Errorf("natsio: source %s: read position: %w", s.op, err)
		}
	}
	if pos == 0 && floor > 0 {
		pos = floor + 1
	}
	var resp *jetstream.ConsumerResetResponse
	if pos > 0 {
		resp, err = s.js.ResetConsumerToSequence(ctx, stream, s.cfg.Consumer, pos)
	} else {
		resp, err = s.js.ResetConsumer(ctx, stream, s.cfg.Consumer)
	}
	if err != nil {
		return fmt.Errorf("natsio: source %s: rewind consumer %s to %d: %w", s.op, s.cfg.Consumer, pos, err)
	}
	start := max(resp.ResetSeq, 1)
	s.ck.maxSeq, s.ck.handedSeq = start-1, start-1
	if _, err := s.dl.Recover(ctx); err != nil {
		return fmt.Errorf("natsio: source %s: %w", s.op, err)
	}
	return nil
}

// redelivered reports whether m is a redelivery of a message the source
// holds or handed over; its acknowledgement then waits with the next
// checkpoint's.
func (c *sourceCkpt) redelivered(m jetstream.Msg) bool {
	seq := msgSeq(m)
	if seq > c.maxSeq {
		c.maxSeq = seq
		return false
	}
	c.unacked = append(c.unacked, m.Reply())
	return true
}

func msgSeq(m jetstream.Msg) uint64 {
	seq, _, ok := ackSeqPending(m.Reply())
	if !ok {
		if md, err := m.Metadata(); err == nil {
			seq = md.Sequence.Stream
		}
	}
	return seq
}

// handOverUpTo hands over the messages being built up to stream sequence
// upTo: their acknowledgements wait for the next checkpoint, and the dead
// letters of their bad events are staged for it.
func (c *sourceCkpt) handOverUpTo(s *Source, upTo uint64) {
	n := 0
	for n < len(s.building) {
		seq := msgSeq(s.building[n])
		if seq > upTo {
			break
		}
		c.unacked = append(c.unacked, s.building[n].Reply())
		c.handedSeq = max(c.handedSeq, seq)
		n++
	}
	c.unackedN += n
	c.held += n
	d := 0
	for d < len(c.deferred) && c.deferred[d].seq <= c.handedSeq {
		s.dl.stage(c.deferred[d].dl)
		d++
	}
	clear(c.deferred[:d])
	c.deferred = append(c.deferred[:0], c.deferred[d:]...)
	clear(s.building[:n])
	s.building = append(s.building[:0], s.building[n:]...)
}

// PrepareCheckpoint records the position after the last message handed
// over into the Store, stages the dead letters of the messages handed over
// for checkpoint id, and sets their acknowledgements aside until id
// completes. Without checkpoints it does nothing.
func (s *Source) PrepareCheckpoint(ctx context.Context, id uint64) error {
	c := s.ck
	if c == nil {
		return nil
	}
	if err := s.dl.Prepare(ctx, id); err != nil {
		return fmt.Errorf("natsio: source %s: %w", s.op, err)
	}
	var b persistence.Batch
	b.Put(sourcePositionKey, binary.BigEndian.AppendUint64(nil, c.handedSeq+1))
	b.Put(sourceStreamKey, c.stream)
	if err := c.store.Apply(ctx, &b); err != nil {
		return fmt.Errorf("natsio: source %s: record position: %w", s.op, err)
	}
	if len(c.unacked) > 0 {
		c.pending = append(c.pending, ckptAcks{id: id, replies: c.unacked, n: c.unackedN})
		c.unacked, c.unackedN = nil, 0
	}
	return nil
}

// CheckpointComplete publishes the dead letters staged up to checkpoint
// id, then acknowledges every message handed over before the checkpoints
// up to id were prepared. Without checkpoints it does nothing.
func (s *Source) CheckpointComplete(ctx context.Context, id uint64) error {
	c := s.ck
	if c == nil {
		return nil
	}
	if err := s.dl.Commit(ctx, id); err != nil {
		return fmt.Errorf("natsio: source %s: %w", s.op, err)
	}
	n := 0
	for n < len(c.pending) && c.pending[n].id <= id {
		for _, r := range c.pending[n].replies {
			if err := s.nc.Publish(r, ackPayload); err != nil {
				return fmt.Errorf("natsio: source %s: ack: %w", s.op, err)
			}
		}
		c.held -= c.pending[n].n
		n++
	}
	if n == 0 {
		return nil
	}
	clear(c.pending[:n])
	c.pending = append(c.pending[:0], c.pending[n:]...)
	fctx, cancel := ctx, context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok {
		fctx, cancel = context.WithTimeout(ctx, 10*time.Second)
	}
	defer cancel()
	if err := s.nc.FlushWithContext(fctx); err != nil {
		return fmt.Errorf("natsio: source %s: ack: %w", s.op, err)
	}
	return nil
}
