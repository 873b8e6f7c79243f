package domains

import (
	"context"
	"fmt"
	"strconv"
	"strings"
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

// Counts are the live counters of one port: rows in and out of its
// boundary, and every dead letter of the port by class (its source's,
// boundary's and sink's).
type Counts struct {
	RowsIn, RowsOut atomic.Int64
	DeadLettered    natsio.Tally
}

// Boundary is the operator at a domain's port: it checks every batch
// against the port's contract, passes the rows that keep it on, and
// publishes each row that does not — as a JSON object, with the rules it
// broke — to the domain's dead-letter stream, waiting for the stream's
// acknowledgement before the batch counts as processed. Nothing is dropped
// silently. A batch whose schema differs from the contract is dead-lettered
// whole.
//
// Dead letters carry message ids derived from their rows' input positions
// (see messages.Lineage), so a row processed again after a restart is not
// dead-lettered twice, and name the subject and stream sequence of the
// event a row came from when it came straight from a port's source.
type Boundary struct {
	Domain   string
	Port     string
	Contract Contract
	NATS     *nats.Conn
	Counts   *Counts
	// Sources maps the names of the job's JetStream sources to the subjects
	// they read, to name the event behind a dead letter.
	Sources map[string]string
	// AckTimeout bounds the wait for the dead-letter stream. Default 30 s.
	AckTimeout time.Duration

	subject string
	mem     memory.Allocator
	prefix  string
	enc     *messages.JSONRowEncoder
	encFor  *arrow.Schema
	dlq     *natsio.DeadLetters
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
	b.prefix = oc.Job() + "." + oc.Operator() + ".dlq."
	b.subject = DeadLetterSubject(b.Domain)
	js, err := jetstream.New(b.NATS)
	if err != nil {
		return fmt.Errorf("boundary %s.%s: %w", b.Domain, b.Port, err)
	}
	if _, err := natsio.EnsureStream(ctx, js, StreamName(b.subject), []string{b.subject}); err != nil {
		return fmt.Errorf("boundary %s.%s: %w", b.Domain, b.Port, err)
	}
	dcfg := natsio.DeadLettersConfig{Subject: b.subject,
		Job: oc.Job(), Operator: oc.Operator(), AckTimeout: b.AckTimeout, Tally: &b.Counts.DeadLettered}
	if oc.Checkpointing() {
		// Dead letters are staged and published when the checkpoint
		// covering them completes: exactly once, like the data products.
		dcfg.Store = oc.State().Namespace("dlq")
		dcfg.Instance = oc.Instance()
	}
	b.dlq, err = natsio.NewDeadLetters(b.NATS, dcfg)
	if err != nil {
		return fmt.Errorf("boundary %s.%s: %w", b.Domain, b.Port, err)
	}
	if b.dlq.Transactional() && oc.RestoredCheckpoint() > 0 {
		if _, err := b.dlq.Recover(ctx); err != nil {
			return fmt.Errorf("boundary %s.%s: %w", b.Domain, b.Port, err)
		}
	}
	return nil
}

// PrepareCheckpoint implements actors.CheckpointHandler: the dead letters
// staged since the last checkpoint go to the Store.
func (b *Boundary) PrepareCheckpoint(ctx context.Context, id uint64) error {
	if b.dlq == nil || !b.dlq.Transactional() {
		return nil
	}
	return b.dlq.Prepare(ctx, id)
}

// CheckpointComplete implements actors.CheckpointListener: the dead letters
// checkpoint id covers are published, in the background (see Close).
func (b *Boundary) CheckpointComplete(ctx context.Context, id uint64) error {
	if b.dlq == nil || !b.dlq.Transactional() {
		return nil
	}
	return b.dlq.Commit(ctx, id)
}

// Close implements actors.Operator: with checkpoints, it waits until ctx
// is done for the dead letters CheckpointComplete started publishing.
func (b *Boundary) Close(ctx context.Context) error {
	if b.dlq == nil {
		return nil
	}
	var err error
	if b.dlq.Transactional() {
		err = b.dlq.Flush(ctx)
	}
	b.dlq.Close()
	if err != nil {
		return fmt.Errorf("boundary %s.%s: %w", b.Domain, b.Port, err)
	}
	return nil
}

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
		mark := b.dlq.Mark()
		if err := b.deadLetter(ctx, in, bad); err != nil {
			b.dlq.Rollback(mark) // a retried batch stages its dead letters once
			if good != nil {
				good.Release()
			}
			return err
		}
	}
	b.Counts.RowsIn.Add(n)
	if good == nil {
		return nil
	}
	b.Counts.RowsOut.Add(good.NumRows())
	if len(bad) == 0 {
		actors.EmitSameRows(out, good)
		return nil
	}
	rows := make([]int32, 0, good.NumRows())
	next := 0
	for i := 0; i < int(n); i++ {
		if next < len(bad) && bad[next].Row == i {
			next++
			continue
		}
		rows = append(rows, int32(i))
	}
	actors.EmitTaken(out, good, rows)
	return nil
}

func (b *Boundary) deadLetter(ctx context.Context, in arrow.RecordBatch, bad []Violation) error {
	if b.encFor != in.Schema() {
		// Columns JSON rows cannot hold (lists, structs, maps) are
		// dead-lettered as one-row Arrow IPC streams instead.
		b.enc, _ = messages.NewJSONRowEncoder(in.Schema())
		b.encFor = in.Schema()
	}
	lin := actors.InputLineage(ctx)
	if lin == nil {
		lin = &messages.Lineage{Origin: "seq" + strconv.FormatUint(actors.InputSeq(ctx), 36)}
	}
	srcSubject := b.Sources[strings.SplitN(lin.Origin, "/", 2)[0]]
	version := strconv.Itoa(b.Contract.Version)
	var buf []byte
	next := 0
	err := lin.RowIDs(b.prefix, int(in.NumRows()), func(row int, id []byte) error {
		if next == len(bad) || bad[next].Row != row {
			return nil
		}
		v := bad[next]
		next++
		h := nats.Header{}
		if b.enc != nil {
			buf = b.enc.AppendRow(buf[:0], in, v.Row)
		} else {
			one := in.NewSlice(int64(v.Row), int64(v.Row)+1)
			data, err := messages.EncodeIPC(one)
			one.Release()
			if err != nil {
				return err
			}
			buf = data
			h.Set("Content-Type", "application/vnd.apache.arrow.stream")
		}
		h.Set(HeaderDomain, b.Domain)
		h.Set(HeaderPort, b.Port)
		h.Set(HeaderVersion, version)
		dl := natsio.DeadLetter{ID: string(id), Payload: buf, Reason: "contract broken: " + v.Rules,
			Class: natsio.ClassContract, Header: h}
		if srcSubject != "" {
			dl.SourceSubject = srcSubject
			dl.SourceSeq, _ = natsio.SplitPosition(lin.At(row))
		}
		return b.dlq.Add(ctx, dl)
	})
	if err == nil && !b.dlq.Transactional() {
		err = b.dlq.Wait(ctx)
	}
	if err != nil {
		return fmt.Errorf("boundary %s.%s: dead letter: %w", b.Domain, b.Port, err)
	}
	return nil
}
