// Package natsio holds the operators that connect a job to NATS JetStream:
// a source decoding producer events (JSON or Arrow IPC) into batches of a
// declared schema, and a sink publishing batches as JSON rows or Arrow IPC.
//
// Events that cannot be decoded are published, with the reason, to a
// dead-letter subject before their message is acknowledged: nothing is
// dropped silently.
//
// In a job with checkpoints (actors.OperatorContext.Checkpointing) the
// source, the sink and their dead letters are transactional: the source
// acknowledges its input and the sink and dead letters publish their
// output only when the checkpoint covering them completes, and a run
// restored from a checkpoint rewinds the source to the position it
// recorded and publishes exactly what the checkpoint staged and the
// target stream lacks (see docs/delivery.md).
package natsio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/messages"
)

// Format is the encoding of the messages a source reads or a sink writes.
type Format uint8

const (
	// JSON is one JSON object per message for sinks; for sources a message
	// may hold one object or several newline-delimited ones.
	JSON Format = iota + 1
	// ArrowIPC is an Arrow IPC stream per message.
	ArrowIPC
)

func (f Format) String() string {
	switch f {
	case JSON:
		return "json"
	case ArrowIPC:
		return "arrow"
	default:
		return fmt.Sprintf("format(%d)", uint8(f))
	}
}

// ParseFormat parses "json" or "arrow".
func ParseFormat(s string) (Format, error) {
	switch strings.ToLower(s) {
	case "json":
		return JSON, nil
	case "arrow", "arrow-ipc", "ipc":
		return ArrowIPC, nil
	}
	return 0, fmt.Errorf("natsio: unknown format %q (want json or arrow)", s)
}

// Headers set on dead-lettered messages.
const (
	HeaderError         = "Meshflow-Error"
	HeaderSourceSubject = "Meshflow-Source-Subject"
	HeaderSourceSeq     = "Meshflow-Source-Sequence"
	HeaderJob           = "Meshflow-Job"
	HeaderOperator      = "Meshflow-Operator"
)

// SourceConfig configures a JetStream source.
//
// The defaults serve a trickle and a burst alike: messages are pulled ahead
// continuously (up to Prefetch messages and PrefetchBytes bytes), and a
// batch is handed over as soon as it is full (BatchSize rows or BatchBytes
// bytes) or nothing more is waiting, so a lone event goes out at once and
// a burst, which keeps the prefetch buffer non-empty, fills whole batches.
type SourceConfig struct {
	// Subjects the source reads. Required.
	Subjects []string
	// Stream holding the subjects. When no stream covers the first subject,
	// one is created with this name (default: derived from the subject).
	Stream string
	// Consumer is the durable consumer name shared by the source's
	// instances. Default: "<job>-<operator>".
	Consumer string
	// Schema of the batches. Required.
	Schema *arrow.Schema
	// Format of the events. Default JSON.
	Format Format
	// BatchSize is the most rows per batch. Default 8192.
	BatchSize int
	// BatchBytes cuts a batch once the messages it holds reach this many
	// payload bytes. Default 8 MiB.
	BatchBytes int
	// Linger is how long a batch may wait for more rows, counted from its
	// first row, when no more messages are waiting. Default 0: a batch is
	// cut as soon as nothing more is waiting. Whatever its value, a batch
	// is cut once it is full.
	Linger time.Duration
	// Prefetch is the most messages pulled ahead of Read. Default
	// BatchSize. The consumer's MaxAckPending is set to
	// Parallelism × (BatchSize + Prefetch), so a full batch and a full
	// prefetch buffer fit in it.
	Prefetch int
	// PrefetchBytes is the most bytes pulled ahead of Read (the pull
	// requests' max_bytes, and the source's own buffer). Default: twice the
	// server's max payload, at least 4 MiB and at most 48 MiB, and never
	// less than one max-size message.
	PrefetchBytes int
	// DeadLetter is the subject for events that cannot be decoded. Default
	// "<first subject without wildcards>.dlq". A stream is created for it
	// when none covers it.
	DeadLetter string
	// DeadLetterTally, when set, counts the source's dead letters by class
	// (shared with the other operators of a port, for status).
	DeadLetterTally *Tally
	// Bounded makes the source end (end-of-stream) once it has read
	// everything in the stream: for tests and batch-style runs.
	Bounded bool
	// AckWait is how long JetStream waits for an acknowledgement before
	// redelivering. Default 30 s; with checkpoints 5 min, since input is
	// acknowledged only when the checkpoint covering it completes (a
	// restarted source rewinds its consumer at once, so a long AckWait
	// never delays recovery).
	AckWait time.Duration
	// MaxAckPending is the consumer's bound on messages delivered and not
	// acknowledged. Default: Parallelism × (BatchSize + Prefetch); with
	// checkpoints, where messages stay unacknowledged until the checkpoint
	// covering them completes, [CheckpointMaxAckPending] (and at least
	// 2 × (BatchSize + Prefetch)): a source reading more than that in one
	// checkpoint interval waits for the checkpoint to complete.
	MaxAckPending int
}

// Validate checks the configuration.
func (c *SourceConfig) Validate() error {
	var errs []error
	if len(c.Subjects) == 0 {
		errs = append(errs, errors.New("natsio: source needs at least one subject"))
	}
	if c.Schema == nil {
		errs = append(errs, errors.New("natsio: source needs a schema"))
	} else if c.Format != ArrowIPC {
		if _, err := messages.NewJSONDecoder(memory.DefaultAllocator, c.Schema); err != nil {
			errs = append(errs, fmt.Errorf("natsio: source schema: %w", err))
		}
	}
	if c.BatchSize < 0 || c.BatchBytes < 0 || c.Linger < 0 || c.Prefetch < 0 || c.PrefetchBytes < 0 || c.AckWait < 0 || c.MaxAckPending < 0 {
		errs = append(errs, errors.New("natsio: batch size, batch bytes, linger, prefetch, ack wait and max ack pending must not be negative"))
	}
	return errors.Join(errs...)
}

func (c SourceConfig) withDefaults(job, op string, maxPayload int) SourceConfig {
	if c.Format == 0 {
		c.Format = JSON
	}
	if c.BatchSize == 0 {
		c.BatchSize = 8192
	}
	if c.BatchBytes == 0 {
		c.BatchBytes = 8 << 20
	}
	if c.Prefetch == 0 {
		c.Prefetch = c.BatchSize
	}
	if c.PrefetchBytes == 0 {
		c.PrefetchBytes = min(max(2*maxPayload, 4<<20), 48<<20)
	}
	// A pull request must be able to carry one message of max size.
	c.PrefetchBytes = max(c.PrefetchBytes, maxPayload+64<<10)
	if c.Consumer == "" {
		c.Consumer = job + "-" + op
	}
	if c.DeadLetter == "" {
		c.DeadLetter = literalPrefix(c.Subjects[0]) + ".dlq"
	}
	if c.Stream == "" {
		c.Stream = StreamName(c.Subjects[0])
	}
	if c.AckWait == 0 {
		c.AckWait = 30 * time.Second
	}
	return c
}

// MaxLines is the most events (JSON) or rows (Arrow IPC) one message may
// hold: a row's position keeps its index within the message in 24 bits
// (see [Position]). A larger message is dead-lettered whole.
const MaxLines = 1 << 24

// maxLines is MaxLines, lowered by tests.
var maxLines = MaxLines

// Position is the position of the line-th event (JSON: the index of the
// event in its message, counting bad ones; Arrow IPC: the index of the row
// in its message) of the message at stream sequence streamSeq. Positions
// are the same every time the stream is read, and increase with the
// stream sequence and the line.
func Position(streamSeq uint64, line int) uint64 {
	return streamSeq<<24 | uint64(line)&(MaxLines-1)
}

// SplitPosition returns the stream sequence and line of a [Position].
func SplitPosition(pos uint64) (streamSeq uint64, line int) {
	return pos >> 24, int(pos & (MaxLines - 1))
}

// Source reads a JetStream stream through a durable pull consumer shared by
// all instances of the source operator.
//
// Messages are pulled continuously by a goroutine the source owns (started
// in Open, stopped in Close) into a buffer bounded in messages and bytes;
// Read decodes from that buffer. Messages are acknowledged only by Commit,
// after the dead letters of their bad events are stored; Close negatively
// acknowledges every message read or prefetched but not committed, so
// JetStream redelivers them at once.
type Source struct {
	cfg SourceConfig
	nc  *nats.Conn

	job, op string
	mem     memory.Allocator
	js      jetstream.JetStream
	cons    jetstream.Consumer
	iter    jetstream.MessagesContext
	q       *prefetch
	pumpWG  sync.WaitGroup
	dec     *messages.JSONDecoder
	dl      *DeadLetters

	// local holds messages taken from q and not yet decoded.
	local []jetstream.Msg
	// building holds the messages whose rows are in the batch being built;
	// handed over with it.
	building []jetstream.Msg
	// pos are the positions of the rows of the batch being built.
	pos []uint64
	// bytes is the payload size of the messages in building.
	bytes int
	// handed holds the messages of batches handed over, acked by Commit.
	handed []jetstream.Msg
	// ready holds the decoded Arrow IPC batches of the batch being built,
	// readyRows their rows.
	ready     []readyBatch
	readyRows int
	// out holds Arrow IPC batches cut and not yet returned.
	out []outBatch
	// lastPos are the positions of the batch the last Read returned; when
	// lastRanged, they are lastBase + row index instead.
	lastPos    []uint64
	lastBase   uint64
	lastRanged bool
	lastRows   int
	// lastPending is the consumer's pending count after the last message
	// read (-1: none read yet).
	lastPending int64
	bads        []badEvent

	// ck is the checkpoint state; nil without checkpoints.
	ck *sourceCkpt
}

// readyBatch is a decoded Arrow IPC batch whose rows are lines line,
// line+1, … of the message at stream sequence seq.
type readyBatch struct {
	rec  arrow.RecordBatch
	seq  uint64
	line int
}

type badEvent struct {
	line  int
	event []byte
	err   error
}

// NewSource returns a source reading through nc. cfg must be valid.
func NewSource(nc *nats.Conn, cfg SourceConfig) *Source {
	return &Source{cfg: cfg, nc: nc, lastPending: -1}
}

var (
	_ actors.Committer  = (*Source)(nil)
	_ actors.Positioner = (*Source)(nil)
)

// Open creates (or binds to) the stream, the dead-letter stream and the
// durable consumer, and starts pulling.
func (s *Source) Open(ctx context.Context, oc actors.OperatorContext) error {
	s.job, s.op, s.mem = oc.Job(), oc.Operator(), oc.Allocator()
	if oc.Checkpointing() && s.cfg.AckWait == 0 {
		s.cfg.AckWait = CheckpointAckWait
	}
	s.cfg = s.cfg.withDefaults(s.job, s.op, int(s.nc.MaxPayload()))
	js, err := jetstream.New(s.nc)
	if err != nil {
		return fmt.Errorf("natsio: %w", err)
	}
	s.js = js
	stream, err := EnsureStream(ctx, js, s.cfg.Stream, s.cfg.Subjects)
	if err != nil {
		return err
	}
	dlStream, err := EnsureStream(ctx, js, StreamName(s.cfg.DeadLetter), []string{s.cfg.DeadLetter})
	if err != nil {
		return err
	}
	dls, err := js.Stream(ctx, dlStream)
	if err != nil {
		return fmt.Errorf("natsio: dead-letter stream %s: %w", dlStream, err)
	}
	par := max(oc.Parallelism(), 1)
	dlc := DeadLettersConfig{
		Subject: s.cfg.DeadLetter, Job: s.job, Operator: s.op,
		MaxMsgSize: int(dls.CachedInfo().Config.MaxMsgSize),
		Tally:      s.cfg.DeadLetterTally,
	}
	if oc.Checkpointing() {
		if err := s.openCkpt(oc, &dlc); err != nil {
			return err
		}
	}
	s.dl, err = NewDeadLetters(s.nc, dlc)
	if err != nil {
		return err
	}
	cc := jetstream.ConsumerConfig{
		Durable:       s.cfg.Consumer,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.cfg.AckWait,
		MaxAckPending: par * (s.cfg.BatchSize + s.cfg.Prefetch),
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if s.cfg.MaxAckPending > 0 {
		cc.MaxAckPending = s.cfg.MaxAckPending
	}
	// With checkpoints the consumer's state is kept in the server's
	// memory: its position is in the checkpoints, and Open rewinds it
	// there (see restoreCkpt). This spares the server writing the state
	// of every message held until a checkpoint completes, about ten times
	// a second. A consumer lost with a server restart is created again
	// by the recovery that follows.
	cc.MemoryStorage = s.ck != nil
	if len(s.cfg.Subjects) == 1 {
		cc.FilterSubject = s.cfg.Subjects[0]
	} else {
		cc.FilterSubjects = s.cfg.Subjects
	}
	floor, err := s.replaceOtherStorage(ctx, stream, cc.MemoryStorage)
	if err != nil {
		return err
	}
	s.cons, err = js.CreateOrUpdateConsumer(ctx, stream, cc)
	if err != nil {
		return fmt.Errorf("natsio: consumer %s on stream %s: %w", s.cfg.Consumer, stream, err)
	}
	if s.ck != nil {
		if err := s.restoreCkpt(ctx, oc, stream, floor); err != nil {
			return err
		}
	} else if floor > 0 {
		if _, err := js.ResetConsumerToSequence(ctx, stream, s.cfg.Consumer, floor+1); err != nil {
			return fmt.Errorf("natsio: consumer %s: start after its former ack floor %d: %w", s.cfg.Consumer, floor, err)
		}
	}
	if s.cfg.Format == JSON {
		s.dec, err = messages.NewJSONDecoder(s.mem, s.cfg.Schema)
		if err != nil {
			return fmt.Errorf("natsio: %w", err)
		}
	}
	s.iter, err = s.cons.Messages(
		jetstream.PullMaxBytes(s.cfg.PrefetchBytes),
		jetstream.PullExpiry(30*time.Second),
		jetstream.PullHeartbeat(5*time.Second),
		jetstream.WithMessagesErrOnMissingHeartbeat(false),
	)
	if err != nil {
		return fmt.Errorf("natsio: consumer %s: %w", s.cfg.Consumer, err)
	}
	s.q = newPrefetch(s.cfg.Prefetch, s.cfg.PrefetchBytes)
	s.pumpWG.Add(1)
	go s.pump(s.iter, s.q)
	return nil
}

// replaceOtherStorage deletes the durable consumer when it exists with
// the other storage (a job that ran with checkpoints and now runs
// without, or the other way round: the server cannot change a consumer's
// storage) and returns its ack floor, for the new consumer to start
// after it; 0 when there was nothing to replace.
func (s *Source) replaceOtherStorage(ctx context.Context, stream string, memory bool) (uint64, error) {
	c, err := s.js.Consumer(ctx, stream, s.cfg.Consumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("natsio: consumer %s on stream %s: %w", s.cfg.Consumer, stream, err)
	}
	info := c.CachedInfo()
	if info.Config.MemoryStorage == memory {
		return 0, nil
	}
	if err := s.js.DeleteConsumer(ctx, stream, s.cfg.Consumer); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0, fmt.Errorf("natsio: replace consumer %s on stream %s (storage changes with checkpoints): %w", s.cfg.Consumer, stream, err)
	}
	return info.AckFloor.Stream, nil
}

// consumerCheckEvery is how long an unbounded source waits for input
// before it checks that its consumer still exists.
var consumerCheckEvery = 5 * time.Second

// pump moves pulled messages into q until the iterator ends.
func (s *Source) pump(it jetstream.MessagesContext, q *prefetch) {
	defer s.pumpWG.Done()
	for {
		m, err := it.Next()
		if err != nil {
			q.end(err)
			return
		}
		q.push(m)
	}
}

// Read returns the next batch: the rows of the messages waiting, until it
// has BatchSize rows or its messages BatchBytes bytes, or earlier once
// nothing more is waiting and Linger has passed since its first row. A
// message is never split, so its rows may take a batch past BatchSize; the
// batches of several Arrow IPC messages are concatenated into one. A batch
// may have no rows when every event of its messages was dead-lettered:
// committing it acknowledges them.
func (s *Source) Read(ctx context.Context) (arrow.RecordBatch, error) {
	if len(s.out) > 0 {
		return s.popOut(), nil
	}
	var first time.Time
	var linger, pollTimer, idleTimer *time.Timer
	defer func() {
		for _, t := range []*time.Timer{linger, pollTimer, idleTimer} {
			if t != nil {
				t.Stop()
			}
		}
	}()
	poll, polled, yielded := time.Millisecond, false, false
	for {
		for len(s.local) > 0 && !s.full() {
			m := s.local[0]
			if s.ck != nil && s.ck.redelivered(m) {
				s.local[0] = nil
				s.local = s.local[1:]
				continue
			}
			if s.dec != nil && len(m.Data()) >= maxLines && len(s.building) > 0 {
				// It may hold more events than a message may: give it a
				// batch of its own, so it can be dead-lettered whole.
				return s.cut()
			}
			s.local[0] = nil
			s.local = s.local[1:]
			if first.IsZero() {
				first = time.Now()
			}
			if err := s.decode(ctx, m); err != nil {
				return nil, err
			}
		}
		if s.full() {
			return s.cut()
		}
		if len(s.local) == 0 {
			var err error
			s.local, err = s.q.take(s.local)
			if len(s.local) == 0 && err == nil && len(s.building) > 0 && !yielded {
				// Before cutting a partial batch, let the pulling
				// goroutine move what the client has already received.
				yielded = true
				runtime.Gosched()
				s.local, err = s.q.take(s.local)
			}
			if len(s.local) > 0 {
				yielded = false
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("natsio: consumer %s: %w", s.cfg.Consumer, err)
			}
		}
		// Nothing is waiting.
		var wake <-chan time.Time
		if len(s.building) > 0 {
			left := s.cfg.Linger - time.Since(first)
			if left <= 0 {
				return s.cut()
			}
			if linger == nil {
				linger = time.NewTimer(left)
			}
			wake = linger.C
		} else if s.cfg.Bounded {
			// The last message read said nothing was left, or messages
			// stopped coming: ask the consumer.
			if s.lastPending <= 0 || polled {
				done, err := s.caughtUp(ctx)
				if err != nil {
					return nil, err
				}
				if done {
					return nil, io.EOF
				}
			}
			if pollTimer == nil {
				pollTimer = time.NewTimer(poll)
			} else {
				pollTimer.Reset(poll)
			}
			poll, polled = min(2*poll, 100*time.Millisecond), false
			wake = pollTimer.C
		} else {
			// Waiting for input: make sure, now and then, that the
			// consumer still exists. A server restart loses a consumer
			// kept in memory (with checkpoints), and the client would
			// otherwise wait for it forever.
			if idleTimer == nil {
				idleTimer = time.NewTimer(consumerCheckEvery)
			}
			wake = idleTimer.C
		}
		select {
		case <-s.q.notify:
		case <-wake:
			if len(s.building) > 0 {
				return s.cut()
			}
			if idleTimer != nil && wake == idleTimer.C {
				if _, err := s.cons.Info(ctx); errors.Is(err, jetstream.ErrConsumerNotFound) {
					return nil, fmt.Errorf("natsio: consumer %s is gone (deleted, or lost with a server restart): %w", s.cfg.Consumer, err)
				}
				idleTimer.Reset(consumerCheckEvery)
				continue
			}
			polled = true
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (s *Source) full() bool {
	rows := s.readyRows
	if s.dec != nil {
		rows = s.dec.Len()
	}
	return s.bytes >= s.cfg.BatchBytes || rows >= s.cfg.BatchSize
}

// Positions returns the positions of the rows of the batch the last Read
// returned (see [Position]), and hands the slice over.
func (s *Source) Positions() []uint64 {
	p := s.lastPos
	if s.lastRanged {
		p = make([]uint64, s.lastRows)
		for i := range p {
			p[i] = s.lastBase + uint64(i)
		}
		s.lastRanged = false
	}
	s.lastPos = nil
	return p
}

// PositionBase implements actors.PositionRanger: the rows of an Arrow IPC
// batch handed over as decoded from one message have consecutive
// positions, given without a slice.
func (s *Source) PositionBase() (uint64, bool) {
	ok := s.lastRanged
	s.lastRanged = false
	return s.lastBase, ok
}

// cut hands over the batch being built, with the messages behind it. It
// may have no rows when every event of its messages was dead-lettered.
//
// Arrow IPC batches are handed over as they were decoded when they are
// large (at least BatchSize/8 rows): copying them costs more than passing
// more batches. Runs of smaller ones are concatenated, so small messages do
// not make small batches. Batches beyond the first wait in s.out, and the
// messages are handed over with the last of them.
func (s *Source) cut() (arrow.RecordBatch, error) {
	s.bytes = 0
	if s.dec != nil {
		s.handOver()
		s.lastPos, s.pos, s.lastRanged = s.pos, nil, false
		return s.dec.NewBatch(), nil
	}
	ready := s.ready
	s.ready, s.readyRows = s.ready[:0], 0
	defer func() {
		for _, r := range ready {
			r.rec.Release()
		}
		clear(ready)
	}()
	if len(ready) == 0 {
		s.handOver()
		s.lastPos, s.lastRanged = nil, false
		cols := emptyColumns(s.mem, s.cfg.Schema)
		rec := array.NewRecordBatch(s.cfg.Schema, cols, 0)
		for _, c := range cols {
			c.Release()
		}
		return rec, nil
	}
	large := max(s.cfg.BatchSize/8, 1)
	for len(ready) > 0 {
		n := 1
		if int(ready[0].rec.NumRows()) < large {
			for n < len(ready) && int(ready[n].rec.NumRows()) < large {
				n++
			}
		}
		if s.ck != nil {
			// A message is never split across batches: a checkpoint
			// between two of them records a whole message as read.
			for n < len(ready) && ready[n].seq == ready[n-1].seq {
				n++
			}
		}
		rec, err := s.concat(ready[:n])
		if err != nil {
			for _, o := range s.out {
				o.rec.Release()
			}
			s.out = s.out[:0]
			return nil, err
		}
		o := outBatch{rec: rec, base: Position(ready[0].seq, ready[0].line), ranged: true}
		if n > 1 {
			o = outBatch{rec: rec, pos: readyPositions(ready[:n])}
		}
		if n < len(ready) {
			o.upTo = ready[n].seq - 1
		}
		s.out = append(s.out, o)
		for _, r := range ready[:n] {
			r.rec.Release()
		}
		clear(ready[:n])
		ready = ready[n:]
	}
	return s.popOut(), nil
}

// outBatch is a batch cut and not yet returned.
type outBatch struct {
	rec    arrow.RecordBatch
	pos    []uint64
	base   uint64 // with ranged: row i is at base+i
	ranged bool
	// upTo: once this batch is returned, with checkpoints, every message
	// of a stream sequence up to upTo is handed over (0: the last batch
	// hands over all).
	upTo uint64
}

// popOut returns the next batch cut; with the last one, the messages
// behind them are handed over.
func (s *Source) popOut() arrow.RecordBatch {
	o := s.out[0]
	s.out[0] = outBatch{}
	s.out = s.out[1:]
	if len(s.out) == 0 {
		s.handOver()
	} else if s.ck != nil && o.upTo > 0 {
		s.ck.handOverUpTo(s, o.upTo)
	}
	s.lastPos, s.lastBase, s.lastRanged, s.lastRows = o.pos, o.base, o.ranged, int(o.rec.NumRows())
	return o.rec
}

// handOver moves the messages of the batch built to those Commit acks.
func (s *Source) handOver() {
	if s.ck != nil {
		s.ck.handOverUpTo(s, ^uint64(0))
		return
	}
	s.handed = append(s.handed, s.building...)
	clear(s.building)
	s.building = s.building[:0]
}

// concat returns the rows of ready as one batch (a new reference).
func (s *Source) concat(ready []readyBatch) (arrow.RecordBatch, error) {
	if len(ready) == 1 {
		ready[0].rec.Retain()
		return ready[0].rec, nil
	}
	cols := make([]arrow.Array, s.cfg.Schema.NumFields())
	parts := make([]arrow.Array, len(ready))
	rows := int64(0)
	for _, r := range ready {
		rows += r.rec.NumRows()
	}
	for i := range cols {
		for j, r := range ready {
			parts[j] = r.rec.Column(i)
		}
		c, err := array.Concatenate(parts, s.mem)
		if err != nil {
			for _, c := range cols[:i] {
				c.Release()
			}
			return nil, fmt.Errorf("natsio: concatenate batches: %w", err)
		}
		cols[i] = c
	}
	rec := array.NewRecordBatch(s.cfg.Schema, cols, rows)
	for _, c := range cols {
		c.Release()
	}
	return rec, nil
}

// readyPositions lists the positions of the rows of ready.
func readyPositions(ready []readyBatch) []uint64 {
	rows := 0
	for _, r := range ready {
		rows += int(r.rec.NumRows())
	}
	pos := make([]uint64, rows)
	k := 0
	for _, r := range ready {
		base := Position(r.seq, r.line)
		n := int(r.rec.NumRows())
		for i := range pos[k : k+n] {
			pos[k+i] = base + uint64(i)
		}
		k += n
	}
	return pos
}

func emptyColumns(mem memory.Allocator, schema *arrow.Schema) []arrow.Array {
	cols := make([]arrow.Array, schema.NumFields())
	for i, f := range schema.Fields() {
		cols[i] = array.MakeArrayOfNull(mem, f.Type, 0)
	}
	return cols
}

// caughtUp reports whether the consumer has nothing left to deliver and
// nothing unacknowledged.
func (s *Source) caughtUp(ctx context.Context) (bool, error) {
	info, err := s.cons.Info(ctx)
	if err != nil {
		return false, fmt.Errorf("natsio: consumer info: %w", err)
	}
	if s.ck != nil {
		// Messages handed over wait for a checkpoint to be acknowledged.
		return info.NumPending == 0 && info.NumAckPending <= s.ck.held, nil
	}
	return info.NumPending == 0 && info.NumAckPending == 0, nil
}

func (s *Source) decode(ctx context.Context, m jetstream.Msg) error {
	s.building = append(s.building, m)
	data := m.Data()
	s.bytes += len(data)
	seq, pending, ok := ackSeqPending(m.Reply())
	if !ok {
		if md, err := m.Metadata(); err == nil {
			seq, pending = md.Sequence.Stream, md.NumPending
		}
	}
	s.lastPending = int64(pending)
	switch s.cfg.Format {
	case ArrowIPC:
		return s.decodeIPC(ctx, m, seq, data)
	default:
		return s.decodeJSON(ctx, m, seq, data)
	}
}

// ackSeqPending reads the stream sequence and the consumer's pending count
// from a JetStream ack subject without allocating (jetstream.Msg.Metadata
// allocates):
//
//	$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>
//	$JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>[.<token>]
func ackSeqPending(reply string) (seq, pending uint64, ok bool) {
	const prefix = "$JS.ACK."
	if !strings.HasPrefix(reply, prefix) {
		return 0, 0, false
	}
	n := strings.Count(reply, ".") + 1
	seqAt, pendingAt := 5, 8
	switch {
	case n == 9:
	case n >= 11:
		seqAt, pendingAt = 7, 10
	default:
		return 0, 0, false
	}
	rest := reply
	for i := 0; i <= pendingAt; i++ {
		tok, after, _ := strings.Cut(rest, ".")
		rest = after
		if i != seqAt && i != pendingAt {
			continue
		}
		v, err := strconv.ParseUint(tok, 10, 64)
		if err != nil {
			return 0, 0, false
		}
		if i == seqAt {
			seq = v
		} else {
			pending = v
		}
	}
	return seq, pending, true
}

func (s *Source) decodeIPC(ctx context.Context, m jetstream.Msg, seq uint64, data []byte) error {
	recs, schema, err := messages.DecodeIPC(s.mem, data)
	class := ClassDecode
	if err == nil {
		class = ClassSchema
		err = messages.CheckSchema(s.cfg.Schema, schema)
	}
	rows := 0
	for _, r := range recs {
		rows += int(r.NumRows())
	}
	if err == nil && rows > maxLines {
		class = ClassOversize
		err = fmt.Errorf("message holds %d rows, more than the %d a message may hold", rows, maxLines)
	}
	conformed := make([]arrow.RecordBatch, 0, len(recs))
	for _, r := range recs {
		if err == nil {
			var c arrow.RecordBatch
			if c, err = messages.Conform(s.cfg.Schema, r); err == nil {
				conformed = append(conformed, c)
			}
		}
		r.Release()
	}
	if err != nil {
		for _, c := range conformed {
			c.Release()
		}
		return s.deadLetter(ctx, m, seq, 0, data, err, class)
	}
	line := 0
	for _, c := range conformed {
		n := int(c.NumRows())
		s.ready = append(s.ready, readyBatch{rec: c, seq: seq, line: line})
		line += n
		s.readyRows += n
	}
	return nil
}

func (s *Source) decodeJSON(ctx context.Context, m jetstream.Msg, seq uint64, data []byte) error {
	before := s.dec.Len()
	s.bads = s.bads[:0]
	s.dec.AppendLines(data, func(event []byte, err error) {
		s.bads = append(s.bads, badEvent{line: s.dec.Len() - before + len(s.bads), event: event, err: err})
	})
	good := s.dec.Len() - before
	if events := good + len(s.bads); events > maxLines {
		// Read gives such a message a batch of its own, so the staged
		// rows are all its own.
		s.dec.Release()
		clear(s.bads)
		return s.deadLetter(ctx, m, seq, 0, data,
			fmt.Errorf("message holds %d events, more than the %d a message may hold", events, maxLines), ClassOversize)
	}
	if s.pos == nil {
		s.pos = make([]uint64, 0, s.cfg.BatchSize)
	}
	line, b := 0, 0
	for range good {
		for b < len(s.bads) && s.bads[b].line == line {
			line++
			b++
		}
		s.pos = append(s.pos, Position(seq, line))
		line++
	}
	for _, bad := range s.bads {
		if err := s.deadLetter(ctx, m, seq, bad.line, bad.event, bad.err, ClassDecode); err != nil {
			return err
		}
	}
	clear(s.bads)
	return nil
}

// deadLetter queues a bad event, with its reason, for the dead-letter
// subject; Commit waits until it is stored.
func (s *Source) deadLetter(ctx context.Context, m jetstream.Msg, seq uint64, line int, payload []byte, reason error, class string) error {
	if s.ck != nil {
		// Staged when its message is handed over: a checkpoint before
		// that records the message as unread.
		s.ck.deferred = append(s.ck.deferred, deferredDL{seq: seq, dl: DeadLetter{
			ID: DeadLetterID(s.job, s.op, Position(seq, line)), Payload: payload, Reason: reason.Error(),
			Class: class, SourceSubject: m.Subject(), SourceSeq: seq,
		}})
		return nil
	}
	return s.dl.Add(ctx, DeadLetter{
		ID:            DeadLetterID(s.job, s.op, Position(seq, line)),
		Payload:       payload,
		Reason:        reason.Error(),
		Class:         class,
		SourceSubject: m.Subject(),
		SourceSeq:     seq,
	})
}

// DeadLetterCounts returns the events this source dead-lettered, by class.
func (s *Source) DeadLetterCounts() map[string]int64 {
	if s.dl == nil {
		return map[string]int64{}
	}
	return s.dl.Counts()
}

// Commit waits until the dead letters of the batches handed over so far are
// stored, then acknowledges their messages. With checkpoints it does
// nothing: messages are acknowledged by [Source.CheckpointComplete].
func (s *Source) Commit(ctx context.Context) error {
	if s.ck != nil || len(s.handed) == 0 {
		return nil
	}
	if err := s.dl.Wait(ctx); err != nil {
		return err
	}
	for i, m := range s.handed {
		var err error
		if s.cfg.Bounded && i == len(s.handed)-1 && s.lastPending == 0 {
			// The stream is read to its end: the source will ask the
			// consumer whether it is done, so the consumer must have
			// seen these acknowledgements.
			err = m.DoubleAck(ctx)
		} else {
			err = m.Ack()
		}
		if err != nil {
			s.handed = s.handed[i:]
			return fmt.Errorf("natsio: ack: %w", err)
		}
	}
	clear(s.handed)
	s.handed = s.handed[:0]
	return nil
}

// Close stops pulling, then negatively acknowledges every message read or
// prefetched but not committed, so JetStream redelivers them at once, and
// releases what was decoded and not handed over. With checkpoints, the
// messages handed over and not covered by a completed checkpoint are left
// unacknowledged: the next run rewinds the consumer to the last
// checkpoint.
func (s *Source) Close(ctx context.Context) error {
	var errs []error
	if s.iter != nil {
		// Drain: the server is told to stop, and what it already sent
		// still arrives, to be naked below.
		s.q.close()
		s.iter.Drain()
		done := make(chan struct{})
		go func() { s.pumpWG.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			s.iter.Stop()
			<-done
		}
		s.iter = nil
		left, _ := s.q.take(nil)
		s.local = append(s.local, left...)
	}
	for _, list := range [][]jetstream.Msg{s.handed, s.building, s.local} {
		for _, m := range list {
			if err := m.Nak(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
				errs = append(errs, err)
			}
		}
	}
	s.handed, s.building, s.local = nil, nil, nil
	for _, r := range s.ready {
		r.rec.Release()
	}
	s.ready, s.readyRows = nil, 0
	for _, o := range s.out {
		o.rec.Release()
	}
	s.out = nil
	if s.dec != nil {
		s.dec.Release()
		s.dec = nil
	}
	if s.dl != nil {
		// Dead letters already sent are kept or repeated; their ids make a
		// repeat harmless. Waiting briefly avoids needless repeats.
		if err := s.dl.Flush(ctx); err != nil && ctx.Err() == nil {
			errs = append(errs, err)
		}
		s.dl.Close()
	}
	if len(errs) > 0 {
		return fmt.Errorf("natsio: close source: %w", errors.Join(errs...))
	}
	return nil
}

// prefetch is the buffer between the pulling goroutine and Read, bounded
// in messages and bytes.
type prefetch struct {
	mu       sync.Mutex
	room     sync.Cond
	msgs     []jetstream.Msg
	bytes    int
	maxMsgs  int
	maxBytes int
	closing  bool
	ended    bool
	err      error
	// notify has a value when messages were added or the pull ended.
	notify chan struct{}
}

func newPrefetch(maxMsgs, maxBytes int) *prefetch {
	q := &prefetch{maxMsgs: maxMsgs, maxBytes: maxBytes, notify: make(chan struct{}, 1)}
	q.room.L = &q.mu
	return q
}

func msgSize(m jetstream.Msg) int { return len(m.Data()) + 128 }

// push adds m, waiting while the buffer is full (unless closing).
func (q *prefetch) push(m jetstream.Msg) {
	q.mu.Lock()
	for !q.closing && len(q.msgs) > 0 && (len(q.msgs) >= q.maxMsgs || q.bytes+msgSize(m) > q.maxBytes) {
		q.room.Wait()
	}
	q.msgs = append(q.msgs, m)
	q.bytes += msgSize(m)
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// end records that the pull ended; err is reported unless the source is
// closing.
func (q *prefetch) end(err error) {
	q.mu.Lock()
	q.ended = true
	if !q.closing {
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) && !errors.Is(err, jetstream.ErrConnectionClosed) {
			err = errors.New("pull ended")
		}
		q.err = err
	}
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// take appends every buffered message to dst; err is set once the pull
// has ended and nothing is left.
func (q *prefetch) take(dst []jetstream.Msg) ([]jetstream.Msg, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	dst = append(dst, q.msgs...)
	clear(q.msgs)
	q.msgs = q.msgs[:0]
	q.bytes = 0
	q.room.Signal()
	if len(dst) == 0 && q.ended {
		if q.err != nil {
			return dst, q.err
		}
		return dst, errors.New("pull ended")
	}
	return dst, nil
}

// close lets push go on without bounds, for the messages still arriving.
func (q *prefetch) close() {
	q.mu.Lock()
	q.closing = true
	q.room.Broadcast()
	q.mu.Unlock()
}
