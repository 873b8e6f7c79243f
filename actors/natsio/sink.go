package natsio

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/messages"
)

// SinkConfig configures a JetStream sink.
type SinkConfig struct {
	// Subject the sink publishes to. Required.
	Subject string
	// Stream to create when no stream covers Subject (default: derived from
	// the subject).
	Stream string
	// Format of the messages: JSON (one row per message, the default) or
	// ArrowIPC (one Arrow IPC stream per batch, split to fit the server's
	// max payload).
	Format Format
	// MaxPending bounds the publishes awaiting the stream's acknowledgement.
	// Default 4096.
	MaxPending int
	// MaxPendingBytes bounds the bytes of the publishes awaiting the
	// stream's acknowledgement. Default 16 MiB (and at least twice the
	// server's max payload).
	MaxPendingBytes int
	// AckTimeout bounds the wait for one acknowledgement; a publish not
	// acknowledged in time is sent again (its message id makes the stream
	// keep one copy). Default 10 s.
	AckTimeout time.Duration
	// DeadLetter is the subject for rows too large to publish. Default
	// "<subject>.dlq". A stream is created for it when none covers it.
	DeadLetter string
	// DeadLetterTally, when set, counts the sink's dead letters by class
	// (shared with the other operators of a port, for status).
	DeadLetterTally *Tally
}

// Validate checks the configuration.
func (c *SinkConfig) Validate() error {
	var errs []error
	if c.Subject == "" {
		errs = append(errs, errors.New("natsio: sink needs a subject"))
	}
	if c.MaxPending < 0 || c.MaxPendingBytes < 0 || c.AckTimeout < 0 {
		errs = append(errs, errors.New("natsio: sink limits must not be negative"))
	}
	return errors.Join(errs...)
}

// publishAttempts is how many times a publish is sent before its batch
// fails; every attempt carries the same message id.
const publishAttempts = 4

// jsErrCodeMessageSizeExceedsMaximum is the JetStream API error of a
// message larger than its stream's max message size.
const jsErrCodeMessageSizeExceedsMaximum jetstream.ErrorCode = 10054

// msgIDOverhead bounds what the headers of a sink message add to its data:
// the header preamble and the Nats-Msg-Id line around the id.
const msgIDOverhead = 64

// Sink publishes batches to a JetStream subject.
//
// Publishing is pipelined: the messages of a batch go out asynchronously,
// at most MaxPending messages and MaxPendingBytes bytes awaiting the
// stream's acknowledgement, and Process returns once every message of its
// batch is acknowledged, so a batch counts as processed only when what it
// produced is durable.
//
// Every message carries a Nats-Msg-Id derived from the input positions of
// its rows (see [actors.Positioner] and messages.Lineage): a row read and
// published again after a restart gets the id it had, and the stream
// keeps one copy within its duplicate window; a new row never gets an old
// id. JSON messages (one row each) are identified by the row's position;
// Arrow IPC messages by the positions of their first and last rows.
//
// A row too large for the subject (more than the server's max payload, or
// the stream's max message size) is dead-lettered with its size and hash,
// not a failure: the other rows of its batch are published.
type Sink struct {
	cfg SinkConfig
	nc  *nats.Conn

	prefix string
	js     jetstream.JetStream
	dlq    *DeadLetters
	enc    *messages.JSONRowEncoder
	schema *arrow.Schema
	arena  []byte
	queue  []pendingPub
	head   int
	bytes  int

	published, duplicates atomic.Int64
	lastSeq               atomic.Uint64

	// tx stages the messages for checkpoints (OperatorContext.Checkpointing);
	// nil: messages are published in Process.
	tx *txPublisher
	// limit is the largest message the subject takes.
	limit int
}

var (
	_ actors.CheckpointHandler  = (*Sink)(nil)
	_ actors.CheckpointListener = (*Sink)(nil)
)

// pendingPub is a publish awaiting its acknowledgement. data is the
// sink's own copy, kept to send it again.
type pendingPub struct {
	f        jetstream.PubAckFuture
	data     []byte
	id       string
	row      int // first input row
	attempts int
}

// NewSink returns a sink publishing through nc. cfg must be valid.
func NewSink(nc *nats.Conn, cfg SinkConfig) *Sink {
	if cfg.Format == 0 {
		cfg.Format = JSON
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 4096
	}
	if cfg.MaxPendingBytes <= 0 {
		cfg.MaxPendingBytes = 16 << 20
	}
	cfg.MaxPendingBytes = max(cfg.MaxPendingBytes, 2*int(nc.MaxPayload()))
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 10 * time.Second
	}
	if cfg.Stream == "" {
		cfg.Stream = StreamName(cfg.Subject)
	}
	if cfg.DeadLetter == "" {
		cfg.DeadLetter = cfg.Subject + ".dlq"
	}
	return &Sink{cfg: cfg, nc: nc}
}

// SinkStats says what a sink published.
type SinkStats struct {
	// Published counts the messages the stream acknowledged as new;
	// Duplicates those it recognised by their message id and did not
	// store again; DeadLettered the rows too large to publish.
	Published, Duplicates, DeadLettered int64
	// LastSequence is the stream sequence of the last message stored.
	LastSequence uint64
}

// Stats returns what the sink has published so far.
func (s *Sink) Stats() SinkStats {
	st := SinkStats{Published: s.published.Load(), Duplicates: s.duplicates.Load(), LastSequence: s.lastSeq.Load()}
	if s.tx != nil {
		st.Published += s.tx.published.Load()
		st.Duplicates += s.tx.duplicates.Load()
		st.LastSequence = max(st.LastSequence, s.tx.lastSeq.Load())
	}
	if s.dlq != nil {
		for _, n := range s.dlq.Counts() {
			st.DeadLettered += n
		}
	}
	return st
}

// Open makes sure streams capture the subject and the dead-letter subject.
//
// With checkpoints (OperatorContext.Checkpointing), it first publishes
// what the checkpoint the job was restored from staged and a previous run
// may not have published (see [Sink.CheckpointComplete]).
func (s *Sink) Open(ctx context.Context, oc actors.OperatorContext) error {
	s.prefix = oc.Job() + "." + oc.Operator() + "."
	s.limit = int(s.nc.MaxPayload())
	js, err := jetstream.New(s.nc, jetstream.WithPublishAsyncMaxPending(s.cfg.MaxPending+1))
	if err != nil {
		return fmt.Errorf("natsio: %w", err)
	}
	s.js = js
	stream, err := EnsureStream(ctx, js, s.cfg.Stream, []string{s.cfg.Subject})
	if err != nil {
		return err
	}
	if _, err = EnsureStream(ctx, js, StreamName(s.cfg.DeadLetter), []string{s.cfg.DeadLetter}); err != nil {
		return err
	}
	dlc := DeadLettersConfig{Subject: s.cfg.DeadLetter, Job: oc.Job(), Operator: oc.Operator(),
		Tally: s.cfg.DeadLetterTally}
	if !oc.Checkpointing() {
		s.dlq, err = NewDeadLetters(s.nc, dlc)
		return err
	}
	state := oc.State()
	if state == nil {
		return fmt.Errorf("natsio: sink %s: checkpoints need the instance's State", s.cfg.Subject)
	}
	info, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("natsio: sink %s: stream %s: %w", s.cfg.Subject, stream, err)
	}
	if mms := int(info.CachedInfo().Config.MaxMsgSize); mms > 0 && mms < s.limit {
		// Staged messages are published later: one the stream would
		// refuse for its size is dead-lettered now.
		s.limit = mms
	}
	dlc.Store, dlc.Instance = state.Namespace("natsio.sink.dlq"), oc.Instance()
	if s.dlq, err = NewDeadLetters(s.nc, dlc); err != nil {
		return err
	}
	s.tx, err = newTxPublisher(txConfig{
		js: js, subject: s.cfg.Subject, stream: stream, store: state.Namespace("natsio.sink"),
		prefix:     s.prefix + strconv.Itoa(oc.Instance()) + ".",
		maxPending: s.cfg.MaxPending, maxPendingBytes: s.cfg.MaxPendingBytes, ackTimeout: s.cfg.AckTimeout,
	})
	if err != nil {
		return err
	}
	if _, err := s.dlq.Recover(ctx); err != nil {
		return fmt.Errorf("natsio: sink %s: %w", s.cfg.Subject, err)
	}
	if _, err := s.tx.recover(ctx); err != nil {
		return fmt.Errorf("natsio: sink %s: %w", s.cfg.Subject, err)
	}
	return nil
}

// PrepareCheckpoint writes the messages staged since the last checkpoint
// (and their dead letters) into the instance's Store as checkpoint id's.
func (s *Sink) PrepareCheckpoint(ctx context.Context, id uint64) error {
	if s.tx == nil {
		return nil
	}
	if err := s.dlq.Prepare(ctx, id); err != nil {
		return fmt.Errorf("natsio: sink %s: %w", s.cfg.Subject, err)
	}
	if err := s.tx.prepare(ctx, id); err != nil {
		return fmt.Errorf("natsio: sink %s: %w", s.cfg.Subject, err)
	}
	return nil
}

// CheckpointComplete starts publishing the messages (and dead letters)
// prepared for every checkpoint up to id, each with the message id
// "<job>.<operator>.<instance>.<checkpoint>.<k>", and returns at once: a
// goroutine of the sink publishes them, in checkpoint order, while
// Process stages the next checkpoint's. Published messages are deleted
// from the Store at the next PrepareCheckpoint. A publish that fails fails
// the next Process, PrepareCheckpoint or CheckpointComplete (the job then
// recovers); a commit cut short by a crash is finished by the next run's
// Open, which publishes only what the stream lacks. Close waits for the
// commits in flight.
func (s *Sink) CheckpointComplete(ctx context.Context, id uint64) error {
	if s.tx == nil {
		return nil
	}
	if err := s.dlq.Commit(ctx, id); err != nil {
		return fmt.Errorf("natsio: sink %s: %w", s.cfg.Subject, err)
	}
	if err := s.tx.commit(ctx, id); err != nil {
		return fmt.Errorf("natsio: sink %s: %w", s.cfg.Subject, err)
	}
	return nil
}

// flushCommits waits for the commits CheckpointComplete started.
func (s *Sink) flushCommits(ctx context.Context) error {
	return errors.Join(s.dlq.Flush(ctx), s.tx.flush(ctx))
}

// Process publishes in and returns once the stream has acknowledged every
// message of it. With checkpoints, it encodes in and stages its messages,
// published when the next checkpoint completes.
func (s *Sink) Process(ctx context.Context, in arrow.RecordBatch, _ actors.Emitter) error {
	lin := actors.InputLineage(ctx)
	if lin == nil {
		// Outside the runtime: positions unique to the batch's sequence.
		lin = &messages.Lineage{Origin: "seq" + strconv.FormatUint(actors.InputSeq(ctx), 36)}
	}
	s.arena = s.arena[:0]
	var txMark, dlMark int
	if s.tx != nil {
		// A commit that failed in the background fails the job now.
		if err := errors.Join(s.tx.failure(), s.dlq.tx.failure()); err != nil {
			return fmt.Errorf("natsio: sink %s: %w", s.cfg.Subject, err)
		}
		txMark, dlMark = s.tx.mark(), s.dlq.Mark()
	}
	var err error
	switch s.cfg.Format {
	case ArrowIPC:
		err = s.publishIPC(ctx, in, lin)
	default:
		err = s.publishJSON(ctx, in, lin)
	}
	if err == nil {
		err = s.drain(ctx, 0, 0)
	}
	if err == nil {
		err = s.dlq.Wait(ctx)
	}
	if err != nil {
		s.abandon()
		if s.tx != nil {
			s.tx.rollback(txMark)
			s.dlq.Rollback(dlMark)
		}
		return fmt.Errorf("natsio: sink %s: %w", s.cfg.Subject, err)
	}
	return nil
}

func (s *Sink) publishJSON(ctx context.Context, in arrow.RecordBatch, lin *messages.Lineage) error {
	if s.enc == nil || s.schema != in.Schema() {
		enc, err := messages.NewJSONRowEncoder(in.Schema())
		if err != nil {
			return err
		}
		s.enc, s.schema = enc, in.Schema()
	}
	limit := s.limit
	if s.tx != nil {
		// Staged messages get their ids when committed.
		for row := range int(in.NumRows()) {
			start := len(s.arena)
			s.arena = s.enc.AppendRow(s.arena, in, row)
			data := s.arena[start:]
			if len(data)+len(s.prefix)+48+msgIDOverhead > limit {
				if err := s.oversize(ctx, data, row, lin, fmt.Sprintf("row of %d bytes is above the %d-byte limit of %s", len(data), limit, s.cfg.Subject)); err != nil {
					return err
				}
				continue
			}
			s.tx.stage(nil, data)
		}
		return nil
	}
	return lin.RowIDs(s.prefix, int(in.NumRows()), func(row int, id []byte) error {
		// The arena is not reused before every publish of the batch is
		// acknowledged: a publish sent again sends the same bytes.
		start := len(s.arena)
		s.arena = s.enc.AppendRow(s.arena, in, row)
		data := s.arena[start:len(s.arena):len(s.arena)]
		if len(data)+len(id)+msgIDOverhead > limit {
			return s.oversize(ctx, data, row, lin, fmt.Sprintf("row of %d bytes is above the %d-byte max payload of %s", len(data), limit, s.cfg.Subject))
		}
		return s.publish(ctx, data, string(id), row)
	})
}

func (s *Sink) publishIPC(ctx context.Context, in arrow.RecordBatch, lin *messages.Lineage) error {
	limit := s.limit
	parts, starts, oversize, err := messages.SplitBatchAt(in, limit-1024)
	if err != nil {
		return err
	}
	defer func() {
		for _, p := range parts {
			p.Release()
		}
	}()
	for _, row := range oversize {
		one := in.NewSlice(int64(row), int64(row)+1)
		data, err := messages.EncodeIPC(one)
		one.Release()
		if err != nil {
			return err
		}
		if err := s.oversize(ctx, data, row, lin, fmt.Sprintf("row takes %d bytes as Arrow IPC, above the %d-byte max payload of %s", len(data), limit, s.cfg.Subject)); err != nil {
			return err
		}
	}
	for i, p := range parts {
		data, err := messages.EncodeIPC(p)
		if err != nil {
			return err
		}
		first, n := starts[i], int(p.NumRows())
		id := s.prefix + lin.Origin + ":" + strconv.FormatUint(lin.At(first), 36) + "-" +
			strconv.FormatUint(lin.At(first+n-1), 36) + "." + strconv.Itoa(n)
		if err := s.publish(ctx, data, id, first); err != nil {
			return err
		}
	}
	return nil
}

// oversize dead-letters one row too large for the subject.
func (s *Sink) oversize(ctx context.Context, data []byte, row int, lin *messages.Lineage, reason string) error {
	return s.dlq.Add(ctx, DeadLetter{
		ID:      s.prefix + "dlq." + lin.Origin + ":" + strconv.FormatUint(lin.At(row), 36) + "." + strconv.Itoa(row),
		Payload: data,
		Reason:  reason,
		Class:   ClassOversize,
	})
}

// publish sends data asynchronously, first waiting for acknowledgements
// while the pending messages or bytes are at their bounds. With
// checkpoints it stages data.
func (s *Sink) publish(ctx context.Context, data []byte, id string, row int) error {
	if s.tx != nil {
		s.tx.stage(nil, data)
		return nil
	}
	if err := s.drain(ctx, s.cfg.MaxPending-1, s.cfg.MaxPendingBytes-len(data)); err != nil {
		return err
	}
	p := pendingPub{data: data, id: id, row: row}
	if err := s.send(&p); err != nil {
		return err
	}
	s.queue = append(s.queue, p)
	s.bytes += len(data)
	return nil
}

func (s *Sink) send(p *pendingPub) error {
	p.attempts++
	// No client-side retries: the sink sends again itself, with the same
	// id, and dead-letters what the stream refuses for its size.
	f, err := s.js.PublishAsync(s.cfg.Subject, p.data, jetstream.WithMsgID(p.id),
		jetstream.WithStallWait(s.cfg.AckTimeout), jetstream.WithRetryAttempts(0))
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	p.f = f
	return nil
}

// drain waits for acknowledgements, oldest first, until at most maxMsgs
// publishes and maxBytes bytes are pending. A publish that fails or is not
// acknowledged in time is sent again; one the stream refuses for its size
// is dead-lettered.
func (s *Sink) drain(ctx context.Context, maxMsgs, maxBytes int) error {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for len(s.queue)-s.head > max(maxMsgs, 0) || (s.bytes > max(maxBytes, 0) && len(s.queue) > s.head) {
		p := &s.queue[s.head]
		if timer == nil {
			timer = time.NewTimer(s.cfg.AckTimeout)
		} else {
			timer.Reset(s.cfg.AckTimeout)
		}
		select {
		case ack := <-p.f.Ok():
			if ack.Duplicate {
				s.duplicates.Add(1)
			} else {
				s.published.Add(1)
				s.lastSeq.Store(ack.Sequence)
			}
		case err := <-p.f.Err():
			if tooLarge(err) {
				if err := s.dlq.Add(ctx, DeadLetter{ID: p.id + ".dlq", Payload: p.data, Class: ClassOversize,
					Reason: fmt.Sprintf("the stream refused %d bytes: %v", len(p.data), err)}); err != nil {
					return err
				}
				break
			}
			if p.attempts >= publishAttempts {
				return fmt.Errorf("publish row %d (id %s), %d attempts: %w", p.row, p.id, p.attempts, err)
			}
			if err := s.send(p); err != nil {
				return err
			}
			continue
		case <-timer.C:
			if p.attempts >= publishAttempts {
				return fmt.Errorf("publish row %d (id %s): no acknowledgement in %d attempts of %v", p.row, p.id, p.attempts, s.cfg.AckTimeout)
			}
			if err := s.send(p); err != nil {
				return err
			}
			continue
		case <-ctx.Done():
			return ctx.Err()
		}
		s.bytes -= len(p.data)
		*p = pendingPub{}
		s.head++
	}
	if s.head == len(s.queue) {
		s.queue, s.head = s.queue[:0], 0
	}
	return nil
}

// abandon forgets the pending publishes of a failed batch: the batch is
// processed again, and its messages keep their ids.
func (s *Sink) abandon() {
	clear(s.queue)
	s.queue, s.head, s.bytes = s.queue[:0], 0, 0
}

// tooLarge reports whether err says a message is too large for the server
// or the stream.
func tooLarge(err error) bool {
	if errors.Is(err, nats.ErrMaxPayload) {
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrCodeMessageSizeExceedsMaximum {
		return true
	}
	return strings.Contains(err.Error(), "maximum payload") || strings.Contains(err.Error(), "message size exceeds maximum")
}

// Close has nothing to flush without checkpoints: Process returns only
// once its batch is acknowledged. With checkpoints, it waits until ctx is
// done for the commits CheckpointComplete started, then stops publishing;
// what is staged and not published is left to the Store: a restored run
// publishes what its checkpoint holds, and the input of the rest is read
// again.
func (s *Sink) Close(ctx context.Context) error {
	if s.tx == nil {
		return nil
	}
	err := s.flushCommits(ctx)
	s.tx.close()
	s.dlq.Close()
	if err != nil {
		return fmt.Errorf("natsio: sink %s: %w", s.cfg.Subject, err)
	}
	return nil
}
