package natsio

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow/persistence"
)

// Headers set on dead letters besides [HeaderError], [HeaderSourceSubject],
// [HeaderSourceSeq], [HeaderJob] and [HeaderOperator].
const (
	// HeaderErrorClass is the kind of failure: one of the Class constants.
	HeaderErrorClass = "Meshflow-Error-Class"
	// HeaderTruncated is "true" on a dead letter whose payload was cut to
	// fit the server's max payload.
	HeaderTruncated = "Meshflow-Truncated"
	// HeaderOriginalSize is the size in bytes of a truncated payload.
	HeaderOriginalSize = "Meshflow-Original-Size"
	// HeaderOriginalSHA256 is the hex SHA-256 of a truncated payload.
	HeaderOriginalSHA256 = "Meshflow-Original-SHA256"
)

// Dead-letter classes, the values of [HeaderErrorClass].
const (
	// ClassDecode: the event is not valid JSON or Arrow IPC, or a value
	// does not fit its column.
	ClassDecode = "decode"
	// ClassSchema: an Arrow IPC message whose schema is not the declared
	// one, or nulls in a non-nullable column.
	ClassSchema = "schema"
	// ClassContract: a row breaking a data contract's rules.
	ClassContract = "contract"
	// ClassOversize: too large to process (for example a message with
	// more than [MaxLines] events or rows) or to publish.
	ClassOversize = "oversize"
)

// maxHeaderValue bounds each header value of a dead letter, so that headers
// alone can never exceed the server's max payload.
const maxHeaderValue = 1024

// DeadLetter is one event sent aside with the reason it could not flow.
type DeadLetter struct {
	// ID makes the dead letter idempotent: it is the message's
	// Nats-Msg-Id, so the same bad event read again (after a restart)
	// within the stream's duplicate window is stored once. Derive it from
	// the event's position with [DeadLetterID].
	ID string
	// Payload is the bad event. It is copied before Add returns.
	Payload []byte
	// Reason is the error, stored in [HeaderError].
	Reason string
	// Class is one of the Class constants, stored in [HeaderErrorClass].
	Class string
	// SourceSubject and SourceSeq locate the event in its input stream
	// (SourceSeq 0: unknown).
	SourceSubject string
	SourceSeq     uint64
	// Header holds extra headers; it is not modified.
	Header nats.Header
}

// DeadLetterID is the id of the dead letter of the event at position pos
// (see [Position]) read by operator op of job: "<job>.<op>.dlq.<pos>".
func DeadLetterID(job, op string, pos uint64) string {
	return job + "." + op + ".dlq." + strconv.FormatUint(pos, 10)
}

// DeadLettersConfig configures [NewDeadLetters].
type DeadLettersConfig struct {
	// Subject the dead letters are published to. Required; a stream must
	// capture it.
	Subject string
	// Job and Operator fill [HeaderJob] and [HeaderOperator].
	Job, Operator string
	// MaxPending bounds the dead letters awaiting the stream's
	// acknowledgement. Default 256.
	MaxPending int
	// MaxPendingBytes bounds their payload bytes. Default 8 MiB (at least
	// one message always goes out).
	MaxPendingBytes int
	// MaxMsgSize is the dead-letter stream's max message size, when it has
	// one smaller than the server's max payload. 0: none.
	MaxMsgSize int
	// Tally, when set, counts the dead letters by class besides the
	// publisher's own counts: owners of one port share it.
	Tally *Tally
	// AckTimeout bounds the wait for one dead letter's acknowledgement.
	// Default 30 s.
	AckTimeout time.Duration
	// Store, when set, makes the dead letters transactional, for a job
	// with checkpoints: Add stages them in memory, [DeadLetters.Prepare]
	// writes them into Store (a namespace of the owner's State, used by
	// nothing else), and [DeadLetters.Commit] publishes them once the
	// checkpoint is complete, each exactly once across any failure. Their
	// message ids are "<job>.<op>.<instance>.dlq.<checkpoint>.<k>".
	Store persistence.Store
	// Instance is the owner's instance index, part of the transactional
	// message ids.
	Instance int
}

// DeadLetters publishes dead letters asynchronously, pipelined, with
// bounded outstanding messages and bytes. Add queues a dead letter; Wait
// returns once every dead letter added so far is stored, so an owner
// acknowledges its input only after the input's dead letters are safe.
//
// A dead letter larger than the server's max payload (payload plus headers)
// is stored truncated, with [HeaderTruncated], [HeaderOriginalSize] and
// [HeaderOriginalSHA256]: a dead letter is never refused for its size.
//
// Add and Wait must not be called concurrently; Counts may be called from
// any goroutine.
type DeadLetters struct {
	cfg        DeadLettersConfig
	js         jetstream.JetStream
	maxPayload int

	pending      []pendingDL
	pendingBytes int
	// failed is the first publish failure: once set, Add and Wait return
	// it, for the owner to fail and read its input again.
	failed error

	mu     sync.Mutex
	counts map[string]int64

	// tx stages the dead letters when cfg.Store is set.
	tx *txPublisher
}

type pendingDL struct {
	f    jetstream.PubAckFuture
	size int
}

// NewDeadLetters returns a publisher of dead letters on nc. It has its own
// JetStream context, so its window of asynchronous publishes is not shared.
func NewDeadLetters(nc *nats.Conn, cfg DeadLettersConfig) (*DeadLetters, error) {
	if cfg.Subject == "" {
		return nil, errors.New("natsio: dead letters need a subject")
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 256
	}
	if cfg.MaxPendingBytes <= 0 {
		cfg.MaxPendingBytes = 8 << 20
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 30 * time.Second
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(cfg.MaxPending+1))
	if err != nil {
		return nil, fmt.Errorf("natsio: dead letters: %w", err)
	}
	maxPayload := int(nc.MaxPayload())
	if cfg.MaxMsgSize > 0 && cfg.MaxMsgSize < maxPayload {
		maxPayload = cfg.MaxMsgSize
	}
	d := &DeadLetters{cfg: cfg, js: js, maxPayload: maxPayload, counts: map[string]int64{}}
	if cfg.Store != nil {
		d.tx, err = newTxPublisher(txConfig{
			js: js, subject: cfg.Subject, store: cfg.Store,
			prefix:     cfg.Job + "." + cfg.Operator + "." + strconv.Itoa(cfg.Instance) + ".dlq.",
			maxPending: cfg.MaxPending, maxPendingBytes: cfg.MaxPendingBytes, ackTimeout: cfg.AckTimeout,
		})
		if err != nil {
			return nil, err
		}
	}
	return d, nil
}

// Transactional reports whether the dead letters are staged for
// checkpoints (DeadLettersConfig.Store set).
func (d *DeadLetters) Transactional() bool { return d.tx != nil }

var errNotTransactional = errors.New("natsio: dead letters are not transactional (DeadLettersConfig.Store is not set)")

// Prepare writes the dead letters added since the last Prepare into the
// Store, as checkpoint id's. Transactional dead letters only.
func (d *DeadLetters) Prepare(ctx context.Context, id uint64) error {
	if d.tx == nil {
		return errNotTransactional
	}
	return d.tx.prepare(ctx, id)
}

// Commit starts publishing the dead letters prepared for every checkpoint
// up to id (including those of aborted checkpoints), in the background,
// and returns at once: Flush waits for them. Call it when checkpoint id is
// complete. A publish that fails is returned by the next Prepare, Commit
// or Flush; the dead letters stay in the Store for a restored run's
// Recover. Transactional dead letters only.
func (d *DeadLetters) Commit(ctx context.Context, id uint64) error {
	if d.tx == nil {
		return errNotTransactional
	}
	return d.tx.commit(ctx, id)
}

// Flush waits until the stream has stored every dead letter Commit
// started publishing, or the first failure, or the end of ctx. Without a
// Store it waits for the dead letters added (see Wait).
func (d *DeadLetters) Flush(ctx context.Context) error {
	if d.tx == nil {
		return d.Wait(ctx)
	}
	return d.tx.flush(ctx)
}

// Recover publishes the dead letters a previous run prepared and may not
// have published, found in the Store after a restore from a checkpoint:
// those already in the stream (found by their ids, after the stream's last
// sequence at Prepare) are not published again, whatever the stream's
// duplicate window. Call it in the owner's Open, before anything else is
// added. It returns how many it published. Transactional dead letters
// only.
func (d *DeadLetters) Recover(ctx context.Context) (int, error) {
	if d.tx == nil {
		return 0, errNotTransactional
	}
	return d.tx.recover(ctx)
}

// Mark returns a mark of the dead letters added so far and not prepared;
// Rollback(mark) drops those added after it (the dead letters of a call
// that failed and will be retried). Transactional dead letters only (0
// otherwise).
func (d *DeadLetters) Mark() int {
	if d.tx == nil {
		return 0
	}
	return d.tx.mark()
}

// Rollback drops the transactional dead letters added after mark (see
// Mark). Their counts stay: Counts says what was added.
func (d *DeadLetters) Rollback(mark int) {
	if d.tx != nil {
		d.tx.rollback(mark)
	}
}

// Subject is where the dead letters go.
func (d *DeadLetters) Subject() string { return d.cfg.Subject }

// Add publishes dl without waiting for its acknowledgement, first waiting
// for older ones while MaxPending or MaxPendingBytes are reached. An error
// means dl may not be stored: the owner must not acknowledge its input.
//
// Transactional dead letters are staged instead (dl.ID is replaced by the
// checkpoint-based id), for Prepare and Commit; Add then never fails.
func (d *DeadLetters) Add(ctx context.Context, dl DeadLetter) error {
	if d.failed != nil {
		return d.failed
	}
	if d.tx != nil {
		d.stage(dl)
		return nil
	}
	msg := d.message(dl)
	size := len(msg.Data)
	for len(d.pending) > 0 && (len(d.pending) >= d.cfg.MaxPending || d.pendingBytes+size > d.cfg.MaxPendingBytes) {
		if err := d.awaitOldest(ctx); err != nil {
			return err
		}
	}
	opts := []jetstream.PublishOpt{jetstream.WithStallWait(d.cfg.AckTimeout)}
	if dl.ID != "" {
		opts = append(opts, jetstream.WithMsgID(dl.ID))
	}
	f, err := d.js.PublishMsgAsync(msg, opts...)
	if err != nil {
		return fmt.Errorf("natsio: dead-letter to %s: %w", d.cfg.Subject, err)
	}
	d.pending = append(d.pending, pendingDL{f: f, size: size})
	d.pendingBytes += size
	d.count(dl.Class)
	return nil
}

func (d *DeadLetters) count(class string) {
	if class == "" {
		class = ClassDecode
	}
	d.mu.Lock()
	d.counts[class]++
	d.mu.Unlock()
	if d.cfg.Tally != nil {
		d.cfg.Tally.Add(class, 1)
	}
}

// stage stages dl (transactional dead letters).
func (d *DeadLetters) stage(dl DeadLetter) {
	// Room for the id the commit gives it.
	dl.ID = strings.Repeat("x", len(d.tx.cfg.prefix)+2*20+1)
	msg := d.message(dl)
	msg.Header.Del(jetstream.MsgIDHeader)
	d.tx.stage(msg.Header, msg.Data)
	d.count(dl.Class)
}

// Wait returns once every dead letter added is acknowledged by the stream,
// or the first failure. After a failure, Add and Wait keep returning it.
// Transactional dead letters are not published before Commit: Wait has
// nothing to wait for.
func (d *DeadLetters) Wait(ctx context.Context) error {
	if d.failed != nil {
		return d.failed
	}
	for len(d.pending) > 0 {
		if err := d.awaitOldest(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Close stops publishing and releases the subscription that receives
// acknowledgements; dead letters not yet acknowledged (see Wait and Flush)
// are no longer followed: transactional ones stay in the Store for a
// restored run. It is safe to call more than once.
func (d *DeadLetters) Close() {
	if d.tx != nil {
		d.tx.close()
	}
	d.js.CleanupPublisher()
	d.pending, d.pendingBytes = nil, 0
}

// Pending is the number of dead letters awaiting acknowledgement.
func (d *DeadLetters) Pending() int { return len(d.pending) }

// Counts returns the dead letters added so far, by class.
func (d *DeadLetters) Counts() map[string]int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.counts)
}

func (d *DeadLetters) awaitOldest(ctx context.Context) error {
	p := d.pending[0]
	timer := time.NewTimer(d.cfg.AckTimeout)
	defer timer.Stop()
	select {
	case <-p.f.Ok():
	case err := <-p.f.Err():
		// The owner fails and reads its input again; the message ids
		// make repeated dead letters harmless.
		d.failed = fmt.Errorf("natsio: dead-letter to %s: %w", d.cfg.Subject, err)
		return d.failed
	case <-timer.C:
		d.failed = fmt.Errorf("natsio: dead-letter to %s: no acknowledgement within %v", d.cfg.Subject, d.cfg.AckTimeout)
		return d.failed
	case <-ctx.Done():
		return ctx.Err()
	}
	d.pending[0] = pendingDL{}
	d.pending = d.pending[1:]
	d.pendingBytes -= p.size
	return nil
}

// message builds the NATS message of dl, truncated to fit max payload.
func (d *DeadLetters) message(dl DeadLetter) *nats.Msg {
	msg := nats.NewMsg(d.cfg.Subject)
	for k, vs := range dl.Header {
		for _, v := range vs {
			msg.Header.Add(k, clip(v))
		}
	}
	class := dl.Class
	if class == "" {
		class = ClassDecode
	}
	msg.Header.Set(HeaderError, clip(dl.Reason))
	msg.Header.Set(HeaderErrorClass, clip(class))
	if dl.SourceSubject != "" {
		msg.Header.Set(HeaderSourceSubject, clip(dl.SourceSubject))
	}
	if dl.SourceSeq != 0 {
		msg.Header.Set(HeaderSourceSeq, strconv.FormatUint(dl.SourceSeq, 10))
	}
	if d.cfg.Job != "" {
		msg.Header.Set(HeaderJob, clip(d.cfg.Job))
	}
	if d.cfg.Operator != "" {
		msg.Header.Set(HeaderOperator, clip(d.cfg.Operator))
	}
	if dl.ID != "" {
		msg.Header.Set(jetstream.MsgIDHeader, clip(dl.ID))
	}
	const slack = 64 // in case the client encodes headers a little longer
	if headerSize(msg.Header)+len(dl.Payload)+slack <= d.maxPayload {
		msg.Data = append([]byte(nil), dl.Payload...)
		return msg
	}
	sum := sha256.Sum256(dl.Payload)
	msg.Header.Set(HeaderTruncated, "true")
	msg.Header.Set(HeaderOriginalSize, strconv.Itoa(len(dl.Payload)))
	msg.Header.Set(HeaderOriginalSHA256, hex.EncodeToString(sum[:]))
	room := min(d.maxPayload-headerSize(msg.Header)-slack, len(dl.Payload))
	msg.Data = append([]byte(nil), dl.Payload[:max(room, 0)]...)
	return msg
}

// clip bounds a header value and keeps it on one line.
func clip(v string) string {
	for i := 0; i < len(v); i++ {
		if v[i] == '\r' || v[i] == '\n' {
			b := []byte(v)
			for j := i; j < len(b); j++ {
				if b[j] == '\r' || b[j] == '\n' {
					b[j] = ' '
				}
			}
			v = string(b)
			break
		}
	}
	if len(v) <= maxHeaderValue {
		return v
	}
	cut := maxHeaderValue - 3
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut--
	}
	return v[:cut] + "..."
}

// headerSize is the encoded size of h ("NATS/1.0\r\n", "k: v\r\n"…, "\r\n").
func headerSize(h nats.Header) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + 2 + len(v) + 2
		}
	}
	return n
}
