package natsio

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow/persistence"
)

// txPublisher publishes messages to one subject exactly once across any
// failure, for sinks and dead letters of a job with checkpoints.
//
// Messages are staged in memory during an epoch (the input between two
// checkpoint barriers). prepare seals the epoch under the checkpoint's id
// and writes it into the instance's Store, with L, the target stream's
// last sequence at that moment: everything the epoch's commit publishes
// lands after L. commit, called once the checkpoint is complete, publishes
// every sealed epoch up to that id, each message with the id
// "<prefix><epoch>.<k>" (k: its index in the epoch), in the background:
// the caller goes on staging the next epoch while the committer goroutine
// publishes, in epoch order, and waits for every acknowledgement. The
// next prepare waits for that commit to be over, and deletes the epochs
// published in the same write as the one it seals. recover, run
// when an instance is restored with sealed epochs in its Store (the
// commit may have been cut short), reads the target stream from L+1 for
// the ids of those epochs and publishes only the missing messages: this
// holds whatever the stream's duplicate window is; the message ids are
// only a fast path for a retry within the window.
//
// An epoch prepared for a checkpoint that was aborted stays sealed, and is
// committed by the next checkpoint that completes.
//
// A txPublisher is used from one goroutine, its owner; its counters may be
// read from any. The committer goroutine it starts at the first commit
// owns the publishing state below (queue, head, bytes, sent, cut); close
// stops it.
type txPublisher struct {
	cfg txConfig

	open   txEpoch
	sealed []*txEpoch

	// mu guards the hand-over between the owner and the committer.
	mu sync.Mutex
	// todo are the epochs handed to the committer, oldest first; done
	// those it published, for the owner to delete from the Store.
	todo, done []*txEpoch
	// cerr is the committer's failure; it stops at the first.
	cerr error
	// cutAt is failAfterAcks as of the last hand-over.
	cutAt int
	// wake tells the committer of a hand-over; progress tells flush of a
	// published epoch or a failure. Both hold at most one signal.
	wake, progress chan struct{}
	stopCommitter  context.CancelFunc
	committerDone  chan struct{}

	published, duplicates atomic.Int64
	lastSeq               atomic.Uint64

	// queue[head:] are the publishes awaiting acknowledgement.
	queue []txPending
	head  int
	bytes int

	// failAfterAcks, when positive, makes the publisher send that many
	// messages after the next commit hands epochs over, wait for their
	// acknowledgements and fail: tests cut a commit short with it, as a
	// process dying midway. Set by the owner; cut and sent are the
	// committer's (or recover's) copy and count.
	failAfterAcks int
	cut, sent     int
	idBuf         []byte
}

// txConfig configures a txPublisher.
type txConfig struct {
	js      jetstream.JetStream
	subject string
	// stream holds subject; looked up when empty.
	stream string
	// store is the namespace of the staged epochs.
	store persistence.Store
	// prefix starts every message id: "<job>.<op>.<instance>.".
	prefix          string
	maxPending      int
	maxPendingBytes int
	ackTimeout      time.Duration
	// chunkBytes bounds each staged value (a message larger than it gets a
	// chunk of its own). Default 512 KiB.
	chunkBytes int
}

// txEpoch is the staged messages of one epoch, encoded one after the
// other (see appendStaged); offs[k] is where message k starts.
type txEpoch struct {
	id     uint64
	last   uint64 // L: the target stream's last sequence at prepare
	buf    []byte
	offs   []int
	chunks int // values in the Store, once written
}

// txPending is a publish awaiting its acknowledgement.
type txPending struct {
	f        jetstream.PubAckFuture
	msg      *nats.Msg
	id       string
	attempts int
}

// Keys of a txPublisher's namespace: the staged epochs,
// "e" | be64(epoch) | "c" | be32(chunk) for the chunks and
// "e" | be64(epoch) | "m" for the epoch's meta (L, messages, chunks),
// written last in the same Apply.
const (
	txEpochTag = 'e'
	txChunkTag = 'c'
	txMetaTag  = 'm'
)

var errTxCut = errors.New("natsio: commit cut short (test)")

func newTxPublisher(cfg txConfig) (*txPublisher, error) {
	if cfg.store == nil {
		return nil, errors.New("natsio: a transactional publisher needs a Store (the instance's State)")
	}
	if cfg.maxPending <= 0 {
		cfg.maxPending = 4096
	}
	if cfg.maxPendingBytes <= 0 {
		cfg.maxPendingBytes = 16 << 20
	}
	if cfg.ackTimeout <= 0 {
		cfg.ackTimeout = 10 * time.Second
	}
	if cfg.chunkBytes <= 0 {
		cfg.chunkBytes = 512 << 10
	}
	return &txPublisher{cfg: cfg}, nil
}

// stage adds a message to the open epoch; hdr and data are copied.
func (t *txPublisher) stage(hdr nats.Header, data []byte) {
	t.open.offs = append(t.open.offs, len(t.open.buf))
	t.open.buf = appendStaged(t.open.buf, hdr, data)
}

// mark returns the number of messages staged in the open epoch, for
// rollback.
func (t *txPublisher) mark() int { return len(t.open.offs) }

// rollback drops the messages staged in the open epoch after mark (those
// of a call that failed and will be retried).
func (t *txPublisher) rollback(mark int) {
	if mark < 0 || mark >= len(t.open.offs) {
		return
	}
	t.open.buf = t.open.buf[:t.open.offs[mark]]
	t.open.offs = t.open.offs[:mark]
}

// staged is the number of messages staged and not yet committed.
func (t *txPublisher) staged() int {
	n := len(t.open.offs)
	for _, e := range t.sealed {
		n += len(e.offs)
	}
	return n
}

func (t *txPublisher) streamName(ctx context.Context) (string, error) {
	if t.cfg.stream == "" {
		name, err := t.cfg.js.StreamNameBySubject(ctx, t.cfg.subject)
		if err != nil {
			return "", fmt.Errorf("natsio: stream of %s: %w", t.cfg.subject, err)
		}
		t.cfg.stream = name
	}
	return t.cfg.stream, nil
}

// prepare seals the open epoch as checkpoint id and writes it, with the
// target stream's last sequence, into the Store in one Apply, which also
// deletes the epochs the committer published since. An empty epoch writes
// nothing but those deletions. It returns the committer's failure, if any.
func (t *txPublisher) prepare(ctx context.Context, id uint64) error {
	// The previous checkpoints' commit must be over: it bounds the
	// messages held to two checkpoints' (one publishing while the next is
	// staged), slows the job down to what the stream takes, and keeps
	// what is published out of the snapshot.
	if err := t.wait(ctx); err != nil {
		return err
	}
	if n := len(t.sealed); n > 0 && t.sealed[n-1].id >= id {
		return fmt.Errorf("natsio: prepare checkpoint %d after %d", id, t.sealed[n-1].id)
	}
	if len(t.open.offs) == 0 {
		return t.forgetDone(ctx)
	}
	stream, err := t.streamName(ctx)
	if err != nil {
		return err
	}
	s, err := t.cfg.js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("natsio: prepare checkpoint %d: stream %s: %w", id, stream, err)
	}
	// Stream returns fresh info: what lands after this point lands after L.
	e := &txEpoch{id: id, last: s.CachedInfo().State.LastSeq, buf: t.open.buf, offs: t.open.offs}
	if err := t.write(ctx, e); err != nil {
		return err
	}
	t.sealed = append(t.sealed, e)
	t.open = txEpoch{}
	return nil
}

// write stores e in one Apply: its messages in values of at most
// chunkBytes (a larger message takes one of its own), then its meta; the
// same Apply deletes the epochs published since the last one.
func (t *txPublisher) write(ctx context.Context, e *txEpoch) error {
	var b persistence.Batch
	done := t.takeDone()
	for _, d := range done {
		t.deleteEpoch(&b, d)
	}
	chunks := 0
	for from := 0; from < len(e.offs); {
		start, to := e.offs[from], from+1
		for to < len(e.offs) && t.end(e, to)-start <= t.cfg.chunkBytes {
			to++
		}
		b.Put(txChunkKey(e.id, chunks), e.buf[start:t.end(e, to-1)])
		chunks++
		from = to
	}
	meta := binary.AppendUvarint(nil, e.last)
	meta = binary.AppendUvarint(meta, uint64(len(e.offs)))
	meta = binary.AppendUvarint(meta, uint64(chunks))
	b.Put(txMetaKey(e.id), meta)
	if err := t.cfg.store.Apply(ctx, &b); err != nil {
		t.giveBackDone(done)
		return fmt.Errorf("natsio: stage checkpoint %d: %w", e.id, err)
	}
	e.chunks = chunks
	return nil
}

// end is where message k of e ends.
func (t *txPublisher) end(e *txEpoch, k int) int {
	if k+1 < len(e.offs) {
		return e.offs[k+1]
	}
	return len(e.buf)
}

// commit hands every sealed epoch up to id over to the committer, which
// publishes them in the background, and returns at once. Its failure is
// returned by the next prepare, commit or flush, and by failure.
func (t *txPublisher) commit(ctx context.Context, id uint64) error {
	n := 0
	for n < len(t.sealed) && t.sealed[n].id <= id {
		n++
	}
	t.mu.Lock()
	err := t.cerr
	if err == nil && n > 0 {
		t.todo = append(t.todo, t.sealed[:n]...)
		t.cutAt = t.failAfterAcks
		if t.committerDone == nil {
			t.startCommitter()
		}
	}
	t.mu.Unlock()
	if err != nil {
		return err
	}
	if n > 0 {
		clear(t.sealed[:n])
		t.sealed = t.sealed[n:]
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// startCommitter starts the committer goroutine; t.mu is held.
func (t *txPublisher) startCommitter() {
	ctx, cancel := context.WithCancel(context.Background())
	t.stopCommitter, t.committerDone = cancel, make(chan struct{})
	t.wake, t.progress = make(chan struct{}, 1), make(chan struct{}, 1)
	go t.runCommitter(ctx, t.committerDone)
}

// runCommitter publishes the epochs handed over, oldest first, until ctx
// is done or a publish fails.
func (t *txPublisher) runCommitter(ctx context.Context, done chan struct{}) {
	defer close(done)
	signal := func() {
		select {
		case t.progress <- struct{}{}:
		default:
		}
	}
	for {
		t.mu.Lock()
		var e *txEpoch
		if len(t.todo) > 0 {
			e = t.todo[0]
			if t.cutAt != 0 {
				t.cut, t.sent, t.cutAt = t.cutAt, 0, 0
			}
		}
		t.mu.Unlock()
		if e == nil {
			select {
			case <-t.wake:
				continue
			case <-ctx.Done():
				return
			}
		}
		err := t.publishEpoch(ctx, e, nil)
		t.mu.Lock()
		if err != nil {
			t.cerr = err
		} else {
			t.todo[0] = nil
			t.todo = t.todo[1:]
			t.done = append(t.done, e)
		}
		t.mu.Unlock()
		signal()
		if err != nil {
			return
		}
	}
}

// failure returns the committer's failure, if any.
func (t *txPublisher) failure() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cerr
}

// flush waits until the committer has published every epoch handed over,
// or failed, or ctx is done, and deletes the published epochs from the
// Store.
func (t *txPublisher) flush(ctx context.Context) error {
	if err := t.wait(ctx); err != nil {
		return err
	}
	return t.forgetDone(ctx)
}

// wait waits until the committer has published every epoch handed over,
// or failed, or ctx is done.
func (t *txPublisher) wait(ctx context.Context) error {
	for {
		t.mu.Lock()
		pending, err, progress := len(t.todo), t.cerr, t.progress
		t.mu.Unlock()
		if err != nil {
			return err
		}
		if pending == 0 {
			return nil
		}
		select {
		case <-progress:
		case <-ctx.Done():
			return fmt.Errorf("natsio: publish to %s: %d checkpoints' messages unpublished: %w", t.cfg.subject, pending, ctx.Err())
		}
	}
}

// close stops the committer and waits for it. What it did not publish
// stays in the Store, for the next run's recover. It may be called more
// than once.
func (t *txPublisher) close() {
	t.mu.Lock()
	stop, done := t.stopCommitter, t.committerDone
	t.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

// takeDone takes the epochs the committer published.
func (t *txPublisher) takeDone() []*txEpoch {
	t.mu.Lock()
	defer t.mu.Unlock()
	d := t.done
	t.done = nil
	return d
}

// giveBackDone returns epochs takeDone took and could not delete.
func (t *txPublisher) giveBackDone(d []*txEpoch) {
	if len(d) == 0 {
		return
	}
	t.mu.Lock()
	t.done = append(d, t.done...)
	t.mu.Unlock()
}

// forgetDone deletes the epochs the committer published from the Store.
func (t *txPublisher) forgetDone(ctx context.Context) error {
	done := t.takeDone()
	if len(done) == 0 {
		return nil
	}
	var b persistence.Batch
	for _, e := range done {
		t.deleteEpoch(&b, e)
	}
	if err := t.cfg.store.Apply(ctx, &b); err != nil {
		t.giveBackDone(done)
		return fmt.Errorf("natsio: forget committed epochs: %w", err)
	}
	return nil
}

// deleteEpoch adds the deletion of a written epoch to b.
func (t *txPublisher) deleteEpoch(b *persistence.Batch, e *txEpoch) {
	b.Delete(txMetaKey(e.id))
	for c := range e.chunks {
		b.Delete(txChunkKey(e.id, c))
	}
}

// forget deletes an epoch from the Store, whatever chunks it has.
func (t *txPublisher) forget(ctx context.Context, e *txEpoch) error {
	var b persistence.Batch
	b.Delete(txMetaKey(e.id))
	err := t.cfg.store.Scan(ctx, txChunkPrefix(e.id), func(k, _ []byte) error {
		b.Delete(k)
		return nil
	})
	if err == nil {
		err = t.cfg.store.Apply(ctx, &b)
	}
	if err != nil {
		return fmt.Errorf("natsio: forget committed epoch %d: %w", e.id, err)
	}
	return nil
}

// publishEpoch publishes the messages of e whose index is not in skip,
// pipelined, and returns once every one is acknowledged.
func (t *txPublisher) publishEpoch(ctx context.Context, e *txEpoch, skip map[int]bool) error {
	defer t.abandon()
	for k := range e.offs {
		if skip[k] {
			continue
		}
		hdr, data, err := decodeStaged(e.buf[e.offs[k]:t.end(e, k)])
		if err != nil {
			return fmt.Errorf("natsio: staged message %d of epoch %d: %w", k, e.id, err)
		}
		msg := &nats.Msg{Subject: t.cfg.subject, Header: hdr, Data: data}
		if err := t.drain(ctx, t.cfg.maxPending-1, t.cfg.maxPendingBytes-len(data)); err != nil {
			return err
		}
		if t.cut > 0 && t.sent >= t.cut {
			if err := t.drain(ctx, 0, 0); err != nil {
				return err
			}
			return errTxCut
		}
		t.sent++
		p := txPending{msg: msg, id: t.msgID(e.id, k)}
		if err := t.send(&p); err != nil {
			return err
		}
		if t.head > 0 && len(t.queue) == cap(t.queue) {
			// Reuse the room of the publishes acknowledged.
			n := copy(t.queue, t.queue[t.head:])
			clear(t.queue[n:])
			t.queue, t.head = t.queue[:n], 0
		}
		t.queue = append(t.queue, p)
		t.bytes += len(data)
	}
	return t.drain(ctx, 0, 0)
}

func (t *txPublisher) msgID(epoch uint64, k int) string {
	t.idBuf = append(t.idBuf[:0], t.cfg.prefix...)
	t.idBuf = strconv.AppendUint(t.idBuf, epoch, 10)
	t.idBuf = append(t.idBuf, '.')
	t.idBuf = strconv.AppendInt(t.idBuf, int64(k), 10)
	return string(t.idBuf)
}

func (t *txPublisher) send(p *txPending) error {
	p.attempts++
	if p.msg.Header == nil {
		p.msg.Header = nats.Header{}
	}
	f, err := t.cfg.js.PublishMsgAsync(p.msg, jetstream.WithMsgID(p.id),
		jetstream.WithStallWait(t.cfg.ackTimeout), jetstream.WithRetryAttempts(0))
	if err != nil {
		return fmt.Errorf("natsio: publish %s: %w", p.id, err)
	}
	p.f = f
	return nil
}

// drain waits for acknowledgements, oldest first, until at most maxMsgs
// publishes and maxBytes bytes are pending; a publish that fails or is not
// acknowledged in time is sent again with its id, up to publishAttempts
// times.
func (t *txPublisher) drain(ctx context.Context, maxMsgs, maxBytes int) error {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for len(t.queue)-t.head > max(maxMsgs, 0) || (t.bytes > max(maxBytes, 0) && len(t.queue) > t.head) {
		p := &t.queue[t.head]
		if timer == nil {
			timer = time.NewTimer(t.cfg.ackTimeout)
		} else {
			timer.Reset(t.cfg.ackTimeout)
		}
		select {
		case ack := <-p.f.Ok():
			if ack.Duplicate {
				t.duplicates.Add(1)
			} else {
				t.published.Add(1)
				t.lastSeq.Store(ack.Sequence)
			}
		case err := <-p.f.Err():
			if p.attempts >= publishAttempts {
				return fmt.Errorf("natsio: publish %s to %s, %d attempts: %w", p.id, t.cfg.subject, p.attempts, err)
			}
			if err := t.send(p); err != nil {
				return err
			}
			continue
		case <-timer.C:
			if p.attempts >= publishAttempts {
				return fmt.Errorf("natsio: publish %s to %s: no acknowledgement in %d attempts of %v", p.id, t.cfg.subject, p.attempts, t.cfg.ackTimeout)
			}
			if err := t.send(p); err != nil {
				return err
			}
			continue
		case <-ctx.Done():
			return ctx.Err()
		}
		t.bytes -= len(p.msg.Data)
		*p = txPending{}
		t.head++
	}
	if t.head == len(t.queue) {
		t.queue, t.head = t.queue[:0], 0
	}
	return nil
}

// abandon forgets pending publishes (after a failure: the epoch stays
// staged and is published again with the same ids).
func (t *txPublisher) abandon() {
	clear(t.queue)
	t.queue, t.head, t.bytes = t.queue[:0], 0, 0
}

// recover publishes what a previous run sealed, and may not have
// committed: it reads the Store's sealed epochs, scans the target stream
// after the lowest L for the message ids of those epochs, publishes the
// messages not found and deletes the epochs. It returns the number of
// messages it published. It runs before the first commit, on the owner's
// goroutine (no committer runs yet).
func (t *txPublisher) recover(ctx context.Context) (int, error) {
	epochs, err := t.load(ctx)
	if err != nil || len(epochs) == 0 {
		return 0, err
	}
	from := epochs[0].last
	for _, e := range epochs {
		from = min(from, e.last)
	}
	found, err := t.scan(ctx, from+1, epochs)
	if err != nil {
		return 0, err
	}
	// No committer runs yet: recover publishes on the owner's goroutine.
	t.cut, t.sent = t.failAfterAcks, 0
	n := 0
	for _, e := range epochs {
		before := t.published.Load() + t.duplicates.Load()
		err := t.publishEpoch(ctx, e, found[e.id])
		n += int(t.published.Load() + t.duplicates.Load() - before)
		if err != nil {
			return n, err
		}
		if err := t.forget(ctx, e); err != nil {
			return n, err
		}
	}
	return n, nil
}

// load reads the sealed epochs from the Store, oldest first. Chunks
// without a meta (an Apply cut short) are deleted.
func (t *txPublisher) load(ctx context.Context) ([]*txEpoch, error) {
	type raw struct {
		meta   []byte
		chunks [][]byte
	}
	byID := map[uint64]*raw{}
	var ids []uint64
	err := t.cfg.store.Scan(ctx, []byte{txEpochTag}, func(k, v []byte) error {
		if len(k) < 10 {
			return fmt.Errorf("natsio: staged key %x malformed", k)
		}
		id := binary.BigEndian.Uint64(k[1:9])
		r := byID[id]
		if r == nil {
			r = &raw{}
			byID[id] = r
			ids = append(ids, id)
		}
		switch k[9] {
		case txMetaTag:
			r.meta = slices.Clone(v)
		case txChunkTag:
			r.chunks = append(r.chunks, slices.Clone(v))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("natsio: read staged epochs: %w", err)
	}
	var out []*txEpoch
	for _, id := range ids {
		r := byID[id]
		e := &txEpoch{id: id}
		if r.meta == nil {
			if err := t.forget(ctx, e); err != nil {
				return nil, err
			}
			continue
		}
		last, n1 := binary.Uvarint(r.meta)
		count, n2 := binary.Uvarint(r.meta[max(n1, 0):])
		nchunks, n3 := binary.Uvarint(r.meta[max(n1, 0)+max(n2, 0):])
		if n1 <= 0 || n2 <= 0 || n3 <= 0 || int(nchunks) != len(r.chunks) {
			return nil, fmt.Errorf("natsio: staged epoch %d: meta malformed or %d chunks of %d", id, len(r.chunks), nchunks)
		}
		e.last, e.chunks = last, int(nchunks)
		for _, c := range r.chunks {
			for p := 0; p < len(c); {
				size, err := stagedSize(c[p:])
				if err != nil {
					return nil, fmt.Errorf("natsio: staged epoch %d: %w", id, err)
				}
				e.offs = append(e.offs, len(e.buf)+p)
				p += size
			}
			e.buf = append(e.buf, c...)
		}
		if len(e.offs) != int(count) {
			return nil, fmt.Errorf("natsio: staged epoch %d holds %d messages, meta says %d", id, len(e.offs), count)
		}
		out = append(out, e)
	}
	return out, nil
}

// scan reads the target stream's messages on the subject from sequence
// from up to its last sequence now, and returns, per epoch, the indexes of
// its messages found there.
//
// It gets one message at a time (the next one on the subject at or after a
// sequence: a direct get when the stream allows it): the only API a
// domain's user may use on its own streams without reaching consumers it
// must not touch. The range is what was published after the epoch was
// prepared, about one checkpoint interval of output.
func (t *txPublisher) scan(ctx context.Context, from uint64, epochs []*txEpoch) (map[uint64]map[int]bool, error) {
	found := map[uint64]map[int]bool{}
	want := map[uint64]bool{}
	for _, e := range epochs {
		want[e.id] = true
	}
	stream, err := t.streamName(ctx)
	if err != nil {
		return nil, err
	}
	s, err := t.cfg.js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("natsio: recover: stream %s: %w", stream, err)
	}
	end := s.CachedInfo().State.LastSeq
	for seq := from; seq <= end; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(t.cfg.subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("natsio: recover: read %s at %d: %w", stream, seq, err)
		}
		if m.Sequence > end {
			break // published after the scan began
		}
		if epoch, k, ok := t.parseID(m.Header.Get(jetstream.MsgIDHeader)); ok && want[epoch] {
			if found[epoch] == nil {
				found[epoch] = map[int]bool{}
			}
			found[epoch][k] = true
		}
		seq = m.Sequence + 1
	}
	return found, nil
}

// parseID splits a message id "<prefix><epoch>.<k>" of this publisher.
func (t *txPublisher) parseID(id string) (epoch uint64, k int, ok bool) {
	rest, ok := strings.CutPrefix(id, t.cfg.prefix)
	if !ok {
		return 0, 0, false
	}
	es, ks, ok := strings.Cut(rest, ".")
	if !ok {
		return 0, 0, false
	}
	epoch, err1 := strconv.ParseUint(es, 10, 64)
	k, err2 := strconv.Atoi(ks)
	return epoch, k, err1 == nil && err2 == nil
}

func txChunkPrefix(epoch uint64) []byte {
	k := make([]byte, 0, 14)
	k = append(k, txEpochTag)
	k = binary.BigEndian.AppendUint64(k, epoch)
	return append(k, txChunkTag)
}

func txChunkKey(epoch uint64, chunk int) []byte {
	return binary.BigEndian.AppendUint32(txChunkPrefix(epoch), uint32(chunk))
}

func txMetaKey(epoch uint64) []byte {
	k := make([]byte, 0, 10)
	k = append(k, txEpochTag)
	k = binary.BigEndian.AppendUint64(k, epoch)
	return append(k, txMetaTag)
}

// appendStaged encodes a message: uvarint(total) | uvarint(header
// entries) | (uvarint(len) key uvarint(len) value)* | data, where total
// is the size of everything after it.
func appendStaged(dst []byte, hdr nats.Header, data []byte) []byte {
	n := 0
	var body []byte
	for k, vs := range hdr {
		for _, v := range vs {
			n++
			body = binary.AppendUvarint(body, uint64(len(k)))
			body = append(body, k...)
			body = binary.AppendUvarint(body, uint64(len(v)))
			body = append(body, v...)
		}
	}
	head := binary.AppendUvarint(nil, uint64(n))
	total := len(head) + len(body) + len(data)
	dst = binary.AppendUvarint(dst, uint64(total))
	dst = append(dst, head...)
	dst = append(dst, body...)
	return append(dst, data...)
}

// stagedSize is the encoded size of the staged message at the start of b.
func stagedSize(b []byte) (int, error) {
	total, n := binary.Uvarint(b)
	if n <= 0 || uint64(len(b)-n) < total {
		return 0, errors.New("staged message truncated")
	}
	return n + int(total), nil
}

// decodeStaged decodes one staged message; data aliases b.
func decodeStaged(b []byte) (nats.Header, []byte, error) {
	size, err := stagedSize(b)
	if err != nil {
		return nil, nil, err
	}
	_, p := binary.Uvarint(b)
	b = b[p:size]
	count, n := binary.Uvarint(b)
	if n <= 0 {
		return nil, nil, errors.New("staged header malformed")
	}
	b = b[n:]
	hdr := nats.Header{}
	for range count {
		var kv [2]string
		for i := range kv {
			l, n := binary.Uvarint(b)
			if n <= 0 || uint64(len(b)-n) < l {
				return nil, nil, errors.New("staged header malformed")
			}
			kv[i] = string(b[n : n+int(l)])
			b = b[n+int(l):]
		}
		hdr[kv[0]] = append(hdr[kv[0]], kv[1])
	}
	return hdr, b, nil
}
