// Package natsio holds the operators that connect a job to NATS JetStream:
// a source decoding producer events (JSON or Arrow IPC) into batches of a
// declared schema, and a sink publishing batches as JSON rows or Arrow IPC.
//
// Events that cannot be decoded are published, with the reason, to a
// dead-letter subject before their message is acknowledged: nothing is
// dropped silently.
package natsio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
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
	// Linger is how long a batch may wait for more rows once it has one.
	// Default 100 ms.
	Linger time.Duration
	// DeadLetter is the subject for events that cannot be decoded. Default
	// "<first subject without wildcards>.dlq". A stream is created for it
	// when none covers it.
	DeadLetter string
	// Bounded makes the source end (end-of-stream) once it has read
	// everything in the stream: for tests and batch-style runs.
	Bounded bool
	// AckWait is how long JetStream waits for an acknowledgement before
	// redelivering. Default 30 s.
	AckWait time.Duration
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
	if c.BatchSize < 0 || c.Linger < 0 {
		errs = append(errs, errors.New("natsio: batch size and linger must not be negative"))
	}
	return errors.Join(errs...)
}

func (c SourceConfig) withDefaults(job, op string) SourceConfig {
	if c.Format == 0 {
		c.Format = JSON
	}
	if c.BatchSize == 0 {
		c.BatchSize = 8192
	}
	if c.Linger == 0 {
		c.Linger = 100 * time.Millisecond
	}
	if c.Consumer == "" {
		c.Consumer = job + "-" + op
	}
	if c.DeadLetter == "" {
		c.DeadLetter = literalPrefix(c.Subjects[0]) + ".dlq"
	}
	if c.Stream == "" {
		c.Stream = streamName(c.Subjects[0])
	}
	if c.AckWait == 0 {
		c.AckWait = 30 * time.Second
	}
	return c
}

// Source reads a JetStream stream through a durable pull consumer shared by
// all instances of the source operator.
type Source struct {
	cfg SourceConfig
	nc  *nats.Conn

	job, op string
	mem     memory.Allocator
	js      jetstream.JetStream
	cons    jetstream.Consumer
	dec     *messages.JSONDecoder

	// msgs whose rows are in the batch being built; handed over with it.
	building []jetstream.Msg
	// msgs of batches handed to the runtime, acknowledged on Commit.
	handed []jetstream.Msg
	// ready holds decoded Arrow IPC batches not yet returned.
	ready []arrow.RecordBatch
}

// NewSource returns a source reading through nc. cfg must be valid.
func NewSource(nc *nats.Conn, cfg SourceConfig) *Source {
	return &Source{cfg: cfg, nc: nc}
}

var _ actors.Committer = (*Source)(nil)

// Open creates (or binds to) the stream, the dead-letter stream and the
// durable consumer.
func (s *Source) Open(ctx context.Context, oc actors.OperatorContext) error {
	s.job, s.op, s.mem = oc.Job(), oc.Operator(), oc.Allocator()
	s.cfg = s.cfg.withDefaults(s.job, s.op)
	js, err := jetstream.New(s.nc)
	if err != nil {
		return fmt.Errorf("natsio: %w", err)
	}
	s.js = js
	stream, err := EnsureStream(ctx, js, s.cfg.Stream, s.cfg.Subjects)
	if err != nil {
		return err
	}
	if _, err := EnsureStream(ctx, js, streamName(s.cfg.DeadLetter), []string{s.cfg.DeadLetter}); err != nil {
		return err
	}
	cc := jetstream.ConsumerConfig{
		Durable:       s.cfg.Consumer,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.cfg.AckWait,
		MaxAckPending: 4*s.cfg.BatchSize + 1024,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if len(s.cfg.Subjects) == 1 {
		cc.FilterSubject = s.cfg.Subjects[0]
	} else {
		cc.FilterSubjects = s.cfg.Subjects
	}
	s.cons, err = js.CreateOrUpdateConsumer(ctx, stream, cc)
	if err != nil {
		return fmt.Errorf("natsio: consumer %s on stream %s: %w", s.cfg.Consumer, stream, err)
	}
	if s.cfg.Format == JSON {
		s.dec, err = messages.NewJSONDecoder(s.mem, s.cfg.Schema)
		if err != nil {
			return fmt.Errorf("natsio: %w", err)
		}
	}
	return nil
}

// Read returns the next batch: up to BatchSize rows, or fewer once Linger
// has passed since the batch's first row.
func (s *Source) Read(ctx context.Context) (arrow.RecordBatch, error) {
	if len(s.ready) > 0 {
		return s.popReady(), nil
	}
	var first time.Time
	for {
		rows := s.rows()
		if rows >= s.cfg.BatchSize || (rows > 0 && time.Since(first) >= s.cfg.Linger) {
			return s.cut(), nil
		}
		if len(s.ready) > 0 {
			return s.popReady(), nil
		}
		wait := time.Second
		if rows > 0 {
			wait = max(s.cfg.Linger-time.Since(first), time.Millisecond)
		}
		n := min(s.cfg.BatchSize-rows, 4096)
		fctx, cancel := context.WithTimeout(ctx, wait)
		batch, err := s.cons.Fetch(max(n, 1), jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("natsio: fetch: %w", err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			if first.IsZero() {
				first = time.Now()
			}
			if err := s.decode(ctx, m); err != nil {
				cancel()
				return nil, err
			}
		}
		cancel()
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("natsio: fetch: %w", err)
		}
		if got == 0 && s.rows() == 0 && len(s.ready) == 0 && s.cfg.Bounded {
			done, err := s.caughtUp(ctx)
			if err != nil {
				return nil, err
			}
			if done {
				return nil, io.EOF
			}
		}
	}
}

func (s *Source) rows() int {
	if s.dec == nil {
		return 0
	}
	return s.dec.Len()
}

// cut hands over the JSON batch being built.
func (s *Source) cut() arrow.RecordBatch {
	s.handed = append(s.handed, s.building...)
	s.building = s.building[:0]
	return s.dec.NewBatch()
}

func (s *Source) popReady() arrow.RecordBatch {
	rec := s.ready[0]
	s.ready[0] = nil
	s.ready = s.ready[1:]
	if len(s.ready) == 0 {
		s.handed = append(s.handed, s.building...)
		s.building = s.building[:0]
	}
	return rec
}

// caughtUp reports whether the consumer has nothing left to deliver and
// nothing unacknowledged.
func (s *Source) caughtUp(ctx context.Context) (bool, error) {
	info, err := s.cons.Info(ctx)
	if err != nil {
		return false, fmt.Errorf("natsio: consumer info: %w", err)
	}
	return info.NumPending == 0 && info.NumAckPending == len(s.handed)+len(s.building), nil
}

func (s *Source) decode(ctx context.Context, m jetstream.Msg) error {
	s.building = append(s.building, m)
	switch s.cfg.Format {
	case ArrowIPC:
		recs, schema, err := messages.DecodeIPC(s.mem, m.Data())
		if err == nil {
			err = messages.CheckSchema(s.cfg.Schema, schema)
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
			return s.deadLetter(ctx, m, m.Data(), err)
		}
		s.ready = append(s.ready, conformed...)
	default:
		var dlqErr error
		s.dec.AppendLines(m.Data(), func(line []byte, err error) {
			if dlqErr == nil {
				dlqErr = s.deadLetter(ctx, m, line, err)
			}
		})
		return dlqErr
	}
	return nil
}

// deadLetter publishes a bad event with its reason and waits for the
// stream's acknowledgement.
func (s *Source) deadLetter(ctx context.Context, m jetstream.Msg, payload []byte, reason error) error {
	out := nats.NewMsg(s.cfg.DeadLetter)
	out.Data = append([]byte(nil), payload...)
	out.Header.Set(HeaderError, reason.Error())
	out.Header.Set(HeaderSourceSubject, m.Subject())
	if md, err := m.Metadata(); err == nil {
		out.Header.Set(HeaderSourceSeq, strconv.FormatUint(md.Sequence.Stream, 10))
	}
	out.Header.Set(HeaderJob, s.job)
	out.Header.Set(HeaderOperator, s.op)
	if _, err := s.js.PublishMsg(ctx, out); err != nil {
		return fmt.Errorf("natsio: dead-letter to %s: %w", s.cfg.DeadLetter, err)
	}
	return nil
}

// Commit acknowledges the messages of every batch handed over so far.
func (s *Source) Commit(ctx context.Context) error {
	for i, m := range s.handed {
		if err := m.Ack(); err != nil {
			s.handed = s.handed[i:]
			return fmt.Errorf("natsio: ack: %w", err)
		}
	}
	clear(s.handed)
	s.handed = s.handed[:0]
	return nil
}

// Close negatively acknowledges what was read but not committed, so
// JetStream redelivers it at once, and releases the batch being built.
func (s *Source) Close(ctx context.Context) error {
	var errs []error
	for _, m := range append(s.handed, s.building...) {
		if err := m.Nak(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			errs = append(errs, err)
		}
	}
	s.handed, s.building = nil, nil
	for _, r := range s.ready {
		r.Release()
	}
	s.ready = nil
	if s.dec != nil {
		s.dec.Release()
		s.dec = nil
	}
	if len(errs) > 0 {
		return fmt.Errorf("natsio: nak on close: %w", errors.Join(errs...))
	}
	return nil
}
