package domains

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/actors/natsio"
	"github.com/meshflow/meshflow/messages"
)

// Headers of a row refused at a domain boundary, besides
// natsio.HeaderError (the rules it broke).
const (
	HeaderDomain  = "Meshflow-Domain"
	HeaderPort    = "Meshflow-Port"
	HeaderVersion = "Meshflow-Contract-Version"
)

// Counts are the live counters of one port boundary.
type Counts struct {
	RowsIn, RowsOut, DeadLettered atomic.Int64
}

// Boundary is the operator at a domain's port: it checks every batch
// against the port's contract, passes the rows that keep it on, and
// publishes each row that does not — as a JSON object, with the rules it
// broke — to the domain's dead-letter stream, waiting for the stream's
// acknowledgement before the batch counts as processed. Nothing is dropped
// silently. A batch whose schema differs from the contract is dead-lettered
// whole.
//
// Dead letters carry message ids derived from the input batch, so a batch
// processed again after a restart is not dead-lettered twice.
type Boundary struct {
	Domain   string
	Port     string
	Contract Contract
	NATS     *nats.Conn
	Counts   *Counts
	// AckTimeout bounds the wait for the dead-letter stream. Default 30 s.
	AckTimeout time.Duration

	js      jetstream.JetStream
	subject string
	mem     memory.Allocator
	id      string
	job, op string
	enc     *messages.JSONRowEncoder
	encFor  *arrow.Schema
	futures []jetstream.PubAckFuture
}

var _ actors.Operator = (*Boundary)(nil)

// Open implements actors.Operator.
func (b *Boundary) Open(ctx context.Context, oc actors.OperatorContext) error {
	if b.Counts == nil {
		b.Counts = &Counts{}
	}
	if b.AckTimeout == 0 {
		b.AckTimeout = 30 * time.Second
	}
	b.mem = oc.Allocator()
	b.job, b.op = oc.Job(), oc.Operator()
	b.id = fmt.Sprintf("%s.%s.%s.%d.", oc.Job(), oc.Operator(), b.Port, oc.Instance())
	b.subject = DeadLetterSubject(b.Domain)
	js, err := jetstream.New(b.NATS)
	if err != nil {
		return fmt.Errorf("boundary %s.%s: %w", b.Domain, b.Port, err)
	}
	b.js = js
	if _, err := natsio.EnsureStream(ctx, js, StreamName(b.subject), []string{b.subject}); err != nil {
		return fmt.Errorf("boundary %s.%s: %w", b.Domain, b.Port, err)
	}
	return nil
}

// Close implements actors.Operator.
func (b *Boundary) Close(context.Context) error { return nil }

// Process implements actors.Operator.
func (b *Boundary) Process(ctx context.Context, in arrow.RecordBatch, out actors.Emitter) error {
	n := in.NumRows()
	good, bad, err := b.Contract.Check(ctx, b.mem, in)
	if err != nil {
		// The whole batch breaks the contract's schema.
		bad = make([]Violation, n)
		for i := range bad {
			bad[i] = Violation{Row: i, Rules: err.Error()}
		}
	}
	if len(bad) > 0 {
		if err := b.deadLetter(ctx, in, bad); err != nil {
			if good != nil {
				good.Release()
			}
			return err
		}
	}
	b.Counts.RowsIn.Add(n)
	b.Counts.DeadLettered.Add(int64(len(bad)))
	if good != nil {
		b.Counts.RowsOut.Add(good.NumRows())
		out.Emit(good)
	}
	return nil
}

func (b *Boundary) deadLetter(ctx context.Context, in arrow.RecordBatch, bad []Violation) error {
	if b.enc == nil || b.encFor != in.Schema() {
		enc, err := messages.NewJSONRowEncoder(in.Schema())
		if err != nil {
			return fmt.Errorf("boundary %s.%s: dead letter: %w", b.Domain, b.Port, err)
		}
		b.enc, b.encFor = enc, in.Schema()
	}
	prefix := b.id + strconv.FormatUint(actors.InputSeq(ctx), 10) + "."
	version := strconv.Itoa(b.Contract.Version)
	b.futures = b.futures[:0]
	for _, v := range bad {
		m := nats.NewMsg(b.subject)
		m.Data = b.enc.AppendRow(nil, in, v.Row)
		m.Header.Set(natsio.HeaderError, "contract broken: "+v.Rules)
		m.Header.Set(HeaderDomain, b.Domain)
		m.Header.Set(HeaderPort, b.Port)
		m.Header.Set(HeaderVersion, version)
		m.Header.Set(natsio.HeaderJob, b.job)
		m.Header.Set(natsio.HeaderOperator, b.op)
		f, err := b.js.PublishMsgAsync(m, jetstream.WithMsgID(prefix+strconv.Itoa(v.Row)), jetstream.WithStallWait(b.AckTimeout))
		if err != nil {
			return fmt.Errorf("boundary %s.%s: dead letter: %w", b.Domain, b.Port, err)
		}
		b.futures = append(b.futures, f)
	}
	timer := time.NewTimer(b.AckTimeout)
	defer timer.Stop()
	for _, f := range b.futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("boundary %s.%s: dead letter: %w", b.Domain, b.Port, err)
		case <-timer.C:
			return fmt.Errorf("boundary %s.%s: dead letter not acknowledged within %v", b.Domain, b.Port, b.AckTimeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
