package natsio

import (
	"context"
	"errors"
	"fmt"
	"strconv"
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
	// MaxPending bounds the asynchronous publishes awaiting acknowledgement.
	// Default 4096.
	MaxPending int
	// AckTimeout bounds the wait for the stream's acknowledgements of one
	// batch. Default 30 s.
	AckTimeout time.Duration
}

// Validate checks the configuration.
func (c *SinkConfig) Validate() error {
	if c.Subject == "" {
		return errors.New("natsio: sink needs a subject")
	}
	return nil
}

// Sink publishes batches to a JetStream subject. Every message carries a
// Nats-Msg-Id derived from (job, operator, instance, input sequence, part),
// so a batch processed again after a restart is deduplicated by the stream.
type Sink struct {
	cfg SinkConfig
	nc  *nats.Conn

	job, op  string
	instance int
	js       jetstream.JetStream
	enc      *messages.JSONRowEncoder
	schema   *arrow.Schema
	buf      []byte
	futures  []jetstream.PubAckFuture
}

// NewSink returns a sink publishing through nc. cfg must be valid.
func NewSink(nc *nats.Conn, cfg SinkConfig) *Sink {
	if cfg.Format == 0 {
		cfg.Format = JSON
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 4096
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 30 * time.Second
	}
	if cfg.Stream == "" {
		cfg.Stream = streamName(cfg.Subject)
	}
	return &Sink{cfg: cfg, nc: nc}
}

// Open makes sure a stream captures the subject.
func (s *Sink) Open(ctx context.Context, oc actors.OperatorContext) error {
	s.job, s.op, s.instance = oc.Job(), oc.Operator(), oc.Instance()
	js, err := jetstream.New(s.nc, jetstream.WithPublishAsyncMaxPending(s.cfg.MaxPending))
	if err != nil {
		return fmt.Errorf("natsio: %w", err)
	}
	s.js = js
	_, err = EnsureStream(ctx, js, s.cfg.Stream, []string{s.cfg.Subject})
	return err
}

// Process publishes in and waits until the stream has acknowledged every
// message of it.
func (s *Sink) Process(ctx context.Context, in arrow.RecordBatch, _ actors.Emitter) error {
	seq := actors.InputSeq(ctx)
	idPrefix := s.job + "." + s.op + "." + strconv.Itoa(s.instance) + "." + strconv.FormatUint(seq, 10) + "."
	s.futures = s.futures[:0]
	switch s.cfg.Format {
	case ArrowIPC:
		parts, err := messages.SplitBatch(in, int(s.nc.MaxPayload())-1024)
		if err != nil {
			return fmt.Errorf("natsio: sink %s: %w", s.cfg.Subject, err)
		}
		for i, p := range parts {
			data, err := messages.EncodeIPC(p)
			p.Release()
			if err != nil {
				for _, q := range parts[i+1:] {
					q.Release()
				}
				return fmt.Errorf("natsio: sink %s: %w", s.cfg.Subject, err)
			}
			if err := s.publish(data, idPrefix+strconv.Itoa(i)); err != nil {
				for _, q := range parts[i+1:] {
					q.Release()
				}
				return err
			}
		}
	default:
		if s.enc == nil || s.schema != in.Schema() {
			enc, err := messages.NewJSONRowEncoder(in.Schema())
			if err != nil {
				return fmt.Errorf("natsio: sink %s: %w", s.cfg.Subject, err)
			}
			s.enc, s.schema = enc, in.Schema()
		}
		n := int(in.NumRows())
		for row := 0; row < n; row++ {
			s.buf = s.enc.AppendRow(s.buf[:0], in, row)
			// The client copies the payload into its write buffer; with
			// retries off (see publish) it keeps no reference to it.
			if err := s.publish(s.buf, idPrefix+strconv.Itoa(row)); err != nil {
				return err
			}
		}
	}
	return s.await(ctx)
}

func (s *Sink) publish(data []byte, id string) error {
	// No client-side retries: a retry would resend data, which the caller
	// reuses. A failed publish fails the batch, which the runtime retries
	// whole; the message ids make the stream drop what it already has.
	f, err := s.js.PublishAsync(s.cfg.Subject, data, jetstream.WithMsgID(id),
		jetstream.WithStallWait(s.cfg.AckTimeout), jetstream.WithRetryAttempts(0))
	if err != nil {
		return fmt.Errorf("natsio: publish to %s: %w", s.cfg.Subject, err)
	}
	s.futures = append(s.futures, f)
	return nil
}

func (s *Sink) await(ctx context.Context) error {
	timer := time.NewTimer(s.cfg.AckTimeout)
	defer timer.Stop()
	for _, f := range s.futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("natsio: publish to %s: %w", s.cfg.Subject, err)
		case <-timer.C:
			return fmt.Errorf("natsio: publish to %s: no acknowledgement within %v", s.cfg.Subject, s.cfg.AckTimeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	clear(s.futures)
	s.futures = s.futures[:0]
	return nil
}

// Close has nothing to flush: Process returns only once its batch is
// acknowledged.
func (s *Sink) Close(context.Context) error { return nil }
