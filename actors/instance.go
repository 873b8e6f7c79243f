package actors

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/asynkron/protoactor-go/actor"
	"github.com/zeebo/xxh3"
	"google.golang.org/protobuf/proto"

	"github.com/meshflow/meshflow/internal/kernels"
	"github.com/meshflow/meshflow/messages"
	"github.com/meshflow/meshflow/messages/pb"
	"github.com/meshflow/meshflow/persistence"
	"github.com/meshflow/meshflow/persistence/memstore"
)

// Messages between the actors of a job (in-process only).
type (
	startMsg struct{}
	// dataMsg carries one envelope on a channel. seq is the instance's input
	// sequence number, assigned when first processed.
	dataMsg struct {
		key  chanKey
		env  messages.Envelope
		seq  uint64
		part *jobPart // tracks the message while it is in a mailbox
	}
	// creditMsg says the sender may send frames up to limit on channel key.
	creditMsg struct {
		key   chanKey
		limit uint64
	}
	readResult struct {
		gen uint64
		rec arrow.RecordBatch
		pos []uint64 // from a Positioner source
		// from a PositionRanger: row i at base+i
		base   uint64
		ranged bool
		err    error
		part   *jobPart
	}
	tickMsg       struct{}
	stopSourceMsg struct{}
	drainedMsg    struct{ gen uint64 }
	timerMsg      struct {
		gen uint64
		t   Timer
	}
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
	wm        messages.Watermark
	eos       bool
	barrier   uint64              // barrier this channel is aligned on, 0 if none
	held      []messages.Envelope // envelopes behind the barrier
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

type instanceStats struct {
	batchesIn, rowsIn, batchesOut, rowsOut, failures atomic.Int64
}

// instance is the runtime state of one operator instance. It outlives the
// actor incarnations: on restart only the user operator is rebuilt.
type instance struct {
	part   *jobPart
	v      *Vertex
	id     InstanceID
	log    *slog.Logger
	mem    memory.Allocator
	window uint64
	state  persistence.Store

	ins             []*inChan
	inByKey         map[chanKey]*inChan
	outs            []*outEdge
	outByKey        map[chanKey]*outChan
	hasRemoteInputs bool

	self    *actor.PID
	gen     uint64
	started bool
	op      Operator
	src     Source
	opened  bool
	retry   *dataMsg
	seq     uint64
	wm      messages.Watermark
	outWM   messages.Watermark
	owe     bool
	emitted []arrow.RecordBatch
	timers  *timerService

	// Lineage (see messages.Lineage): of the input being processed, of
	// each emitted batch, and the count of batches emitted for that input.
	inLin      *messages.Lineage
	inRows     int
	emittedLin []*messages.Lineage
	emitN      int
	// unplaced counts the batches emitted with no input to derive their
	// lineage from (timers, watermarks, finish), and the rows read from a
	// source that gives no positions.
	unplaced uint64
	run      string // random, unique to this run of the instance

	finished     bool
	doneReported bool

	// Sources only.
	reader     *reader
	reading    bool
	wantDemand bool
	draining   bool

	stats instanceStats
}

func newInstance(p *jobPart, v *Vertex, idx int) *instance {
	id := InstanceID{v.Name, idx}
	s := &instance{
		part:     p,
		v:        v,
		id:       id,
		log:      p.log.With("operator", v.Name, "instance", idx),
		mem:      p.node.cfg.Allocator,
		window:   uint64(p.node.cfg.Window),
		inByKey:  map[chanKey]*inChan{},
		outByKey: map[chanKey]*outChan{},
		wm:       messages.MinWatermark,
		outWM:    messages.MinWatermark,
	}
	ns := fmt.Sprintf("%s/%s/%d", p.g.SubjectName(), v.Name, idx)
	if p.node.cfg.State != nil {
		s.state = p.node.cfg.State.Namespace(ns)
	} else {
		s.state = memstore.New()
	}
	s.timers = newTimerService(s)
	var r [8]byte
	_, _ = rand.Read(r[:]) // never fails (crypto/rand)
	s.run = strconv.FormatUint(binary.LittleEndian.Uint64(r[:]), 36)
	self := p.node.cfg.ID
	g := p.g
	for _, ei := range g.InEdges(v.Name) {
		e := g.Edges[ei]
		up := g.Vertex(e.From)
		for i := 0; i < up.Parallelism; i++ {
			if e.Partitioning == Forward && i != idx {
				continue
			}
			from := InstanceID{e.From, i}
			c := &inChan{key: chanKey{ei, i}, from: from, wm: messages.MinWatermark}
			if p.placement[from] != self {
				c.remote = true
				c.subject = CreditSubject(g.SubjectName(), e.From, v.Name, i, idx)
				s.hasRemoteInputs = true
			} else {
				c.granted = s.window
			}
			s.ins = append(s.ins, c)
			s.inByKey[c.key] = c
		}
	}
	for _, ei := range g.OutEdges(v.Name) {
		e := g.Edges[ei]
		down := g.Vertex(e.To)
		oe := &outEdge{idx: ei, edge: e, targets: make([]*outChan, down.Parallelism)}
		for j := 0; j < down.Parallelism; j++ {
			if e.Partitioning == Forward && j != idx {
				continue
			}
			to := InstanceID{e.To, j}
			oc := &outChan{key: chanKey{ei, j}, rkey: chanKey{ei, idx}, to: to}
			if p.placement[to] != self {
				oc.remote = true
				oc.subject = DataSubject(g.SubjectName(), v.Name, e.To, idx, j)
				oc.enc = &messages.FrameEncoder{}
			} else {
				oc.limit = s.window
			}
			oe.targets[j] = oc
			s.outByKey[oc.key] = oc
		}
		s.outs = append(s.outs, oe)
	}
	return s
}

// instanceActor is one incarnation of an instance.
type instanceActor struct{ s *instance }

func (a *instanceActor) Receive(c actor.Context) {
	s := a.s
	switch m := c.Message().(type) {
	case *actor.Started:
		s.onStarted(c)
	case *actor.Restarting:
		s.shutdown(false)
	case *actor.Stopping:
		s.shutdown(true)
	case *startMsg:
		s.onStart(c)
	case *dataMsg:
		if !m.part.untrack(m) {
			return // claimed by teardown
		}
		s.onData(c, m)
	case *creditMsg:
		s.onCredit(c, m)
	case *readResult:
		if !m.part.untrack(m) {
			return
		}
		s.onRead(c, m)
	case *timerMsg:
		s.onProcessingTimer(c, m)
	case *tickMsg:
		s.onTick()
	case *stopSourceMsg:
		s.onStopSource(c)
	case *drainedMsg:
		if m.gen == s.gen {
			s.finishSource(c)
		}
	}
}

// fail hands err to the supervisor: the actor is restarted or, after too
// many failures, the job fails.
func (s *instance) fail(err error) {
	panic(&instanceFailure{id: s.id, err: err})
}

// call runs user code, turning a panic into a *PanicError.
func (s *instance) call(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	return f()
}

func (s *instance) onStarted(c actor.Context) {
	s.self = c.Self()
	s.gen++
	if s.finished {
		return
	}
	if err := s.open(); err != nil {
		s.fail(err)
	}
	// A restart goes on where the failed incarnation stopped. Data may
	// reach an operator before its start message, so a failed batch is
	// retried whether or not the instance was started.
	if m := s.retry; m != nil {
		s.retry = nil
		s.onData(c, m)
	}
	if !s.started {
		return
	}
	s.flushAll(c)
	if s.src != nil {
		s.startReader()
		s.demand()
	}
	if s.src == nil {
		s.maybeFinish(c)
	}
	s.afterFlush(c)
}

func (s *instance) open() error {
	s.timers.reset()
	if s.v.NewSource != nil {
		s.src = s.v.NewSource()
		if err := s.call(func() error { return s.src.Open(s.part.ctx, s) }); err != nil {
			return fmt.Errorf("open: %w", err)
		}
	} else {
		s.op = s.v.NewOperator()
		if err := s.call(func() error { return s.op.Open(s.part.ctx, s) }); err != nil {
			return fmt.Errorf("open: %w", err)
		}
	}
	s.opened = true
	return nil
}

// shutdown closes the user operator of this incarnation. final is true when
// the actor stops for good.
func (s *instance) shutdown(final bool) {
	s.stopReader()
	s.timers.reset()
	s.releaseEmitted()
	if !s.opened {
		return
	}
	s.opened = false
	var err error
	if s.src != nil {
		err = s.call(func() error { return s.src.Close(s.part.ctx) })
	} else if s.op != nil {
		err = s.call(func() error { return s.op.Close(s.part.ctx) })
	}
	if err != nil {
		// The instance is already failing or stopping; the close error
		// cannot change the outcome, so it is reported here.
		s.log.Warn("close failed", "error", err, "final", final)
	}
}

func (s *instance) onStart(c actor.Context) {
	s.started = true
	if s.src != nil {
		s.startReader()
		s.demand()
		return
	}
	for _, ch := range s.ins {
		if ch.remote {
			s.grant(c, ch)
		}
	}
}

// Emit implements Emitter for the operator's calls: the rows of rec get a
// lineage of their own, derived from the input batch as a whole.
func (s *instance) Emit(rec arrow.RecordBatch) { s.emitLineage(rec, rowMap{}) }

// emitLineage implements lineageEmitter.
func (s *instance) emitLineage(rec arrow.RecordBatch, how rowMap) {
	if rec == nil {
		return
	}
	if rec.NumRows() == 0 {
		rec.Release()
		return
	}
	s.emitN++
	s.emitted = append(s.emitted, rec)
	s.emittedLin = append(s.emittedLin, s.lineageOf(int(rec.NumRows()), how))
}

func (s *instance) releaseEmitted() {
	for _, r := range s.emitted {
		r.Release()
	}
	s.emitted = s.emitted[:0]
	clear(s.emittedLin)
	s.emittedLin = s.emittedLin[:0]
}

func (s *instance) onData(c actor.Context, m *dataMsg) {
	ch := s.inByKey[m.key]
	if ch == nil {
		m.env.Release()
		s.fail(fmt.Errorf("envelope on unknown channel %v", m.key))
	}
	if ch.barrier != 0 && m.env.Kind != messages.KindEndOfStream {
		ch.held = append(ch.held, m.env)
		return
	}
	switch m.env.Kind {
	case messages.KindBatch:
		s.processBatch(c, ch, m)
	case messages.KindWatermark:
		if m.env.Watermark > ch.wm {
			ch.wm = m.env.Watermark
		}
		s.processed(c, ch)
		s.advanceWatermark(c)
	case messages.KindBarrier:
		s.processed(c, ch)
		ch.barrier = m.env.Barrier.ID
		s.align(c, m.env.Barrier)
	case messages.KindEndOfStream:
		ch.eos = true
		for _, e := range ch.held {
			e.Release()
		}
		ch.held = nil
		ch.barrier = 0
		s.advanceWatermark(c)
		s.maybeFinish(c)
	default:
		m.env.Release()
		s.fail(fmt.Errorf("unknown envelope kind %v", m.env.Kind))
	}
}

func (s *instance) processBatch(c actor.Context, ch *inChan, m *dataMsg) {
	if m.seq == 0 {
		s.seq++
		m.seq = s.seq
	}
	rows := m.env.Rows()
	lin := m.env.Lineage
	if lin == nil {
		lin = s.unplacedLineage(int(rows))
		m.env.Lineage = lin
	}
	ctx := context.WithValue(s.part.ctx, inputSeqKey{}, m.seq)
	ctx = context.WithValue(ctx, inputLineageKey{}, lin)
	s.inLin, s.inRows, s.emitN = lin, int(rows), 0
	err := s.call(func() error { return s.op.Process(ctx, m.env.Batch, s) })
	s.inLin = nil
	if err != nil {
		s.releaseEmitted()
		s.retry = m
		s.fail(fmt.Errorf("process batch %d: %w", m.seq, err))
	}
	m.env.Release()
	s.stats.batchesIn.Add(1)
	s.stats.rowsIn.Add(rows)
	s.dispatch(c)
	s.processed(c, ch)
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

// dispatch routes the batches emitted by the last call to the outputs.
func (s *instance) dispatch(c actor.Context) {
	if len(s.emitted) == 0 {
		return
	}
	for i, rec := range s.emitted {
		s.stats.batchesOut.Add(1)
		s.stats.rowsOut.Add(rec.NumRows())
		lin := s.emittedLin[i]
		for _, e := range s.outs {
			el := lin
			if len(s.outs) > 1 {
				el = lin.Branch(strconv.Itoa(e.idx))
			}
			if err := s.route(c, e, rec, el); err != nil {
				for _, r := range s.emitted[i:] {
					r.Release()
				}
				s.emitted = s.emitted[:0]
				s.fail(err)
			}
		}
		rec.Release()
	}
	s.emitted = s.emitted[:0]
	clear(s.emittedLin)
	s.emittedLin = s.emittedLin[:0]
}

// route sends rec (borrowed), whose rows have lineage lin, over one output
// edge.
func (s *instance) route(c actor.Context, e *outEdge, rec arrow.RecordBatch, lin *messages.Lineage) error {
	switch e.edge.Partitioning {
	case Forward:
		rec.Retain()
		s.enqueue(c, e.targets[s.id.Index], messages.LineageEnvelope(rec, lin))
	case Rebalance:
		n := len(e.targets)
		e.rr = (e.rr + 1) % n
		rec.Retain()
		s.enqueue(c, e.targets[e.rr], messages.LineageEnvelope(rec, lin))
	case Broadcast:
		for j, oc := range e.targets {
			rec.Retain()
			s.enqueue(c, oc, messages.LineageEnvelope(rec, lin.Branch("b"+strconv.Itoa(j))))
		}
	case Hash:
		if e.schema != rec.Schema() {
			cols := make([]int, len(e.edge.KeyColumns))
			for i, name := range e.edge.KeyColumns {
				idx := rec.Schema().FieldIndices(name)
				if len(idx) != 1 {
					return fmt.Errorf("key column %q: not in the batch schema %s", name, rec.Schema())
				}
				cols[i] = idx[0]
			}
			e.schema, e.keyCols = rec.Schema(), cols
		}
		parts, rows, err := kernels.PartitionRows(s.mem, rec, e.keyCols, s.part.g.maxParallelism(), len(e.targets))
		if err != nil {
			return fmt.Errorf("partition by %v: %w", e.edge.KeyColumns, err)
		}
		for j, p := range parts {
			if p == nil {
				continue
			}
			pl := lin
			if rows[j] != nil {
				pl = lin.Take(rows[j])
			}
			s.enqueue(c, e.targets[j], messages.LineageEnvelope(p, pl))
		}
	}
	return nil
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
	for _, ch := range s.ins {
		for i := range ch.held {
			ch.held[i].Release()
		}
		ch.held = nil
	}
	if s.retry != nil {
		s.retry.env.Release()
		s.retry = nil
	}
}

// advanceWatermark recomputes the input watermark (the minimum over the
// open inputs) and, when it moved, fires event-time timers, calls the
// operator's hook and forwards the watermark.
func (s *instance) advanceWatermark(c actor.Context) {
	wm := messages.MaxWatermark
	for _, ch := range s.ins {
		if !ch.eos && ch.wm < wm {
			wm = ch.wm
		}
	}
	s.setWatermark(c, wm)
}

func (s *instance) setWatermark(c actor.Context, wm messages.Watermark) {
	if wm <= s.wm {
		return
	}
	s.wm = wm
	if s.op != nil {
		if err := s.timers.fireEventTimers(wm); err != nil {
			s.fail(err)
		}
		if h, ok := s.op.(WatermarkHandler); ok {
			if err := s.call(func() error { return h.OnWatermark(s.part.ctx, wm, s) }); err != nil {
				s.releaseEmitted()
				s.fail(fmt.Errorf("watermark %d: %w", wm, err))
			}
		}
		s.dispatch(c)
	}
	if wm > s.outWM {
		s.outWM = wm
		s.broadcast(c, messages.WatermarkEnvelope(wm))
	}
}

// align forwards barrier b once every open input has delivered it, then
// processes what was held behind it.
func (s *instance) align(c actor.Context, b messages.Barrier) {
	for _, ch := range s.ins {
		if !ch.eos && ch.barrier != b.ID {
			return
		}
	}
	s.broadcast(c, messages.BarrierEnvelope(b))
	var held []struct {
		key chanKey
		env messages.Envelope
	}
	for _, ch := range s.ins {
		ch.barrier = 0
		for _, e := range ch.held {
			held = append(held, struct {
				key chanKey
				env messages.Envelope
			}{ch.key, e})
		}
		ch.held = nil
	}
	for _, h := range held {
		s.onData(c, &dataMsg{key: h.key, env: h.env})
	}
}

func (s *instance) maybeFinish(c actor.Context) {
	if s.finished {
		return
	}
	for _, ch := range s.ins {
		if !ch.eos {
			return
		}
	}
	if ch := s.pendingBarrier(); ch {
		return
	}
	s.finished = true
	s.setWatermark(c, messages.MaxWatermark)
	if f, ok := s.op.(Finisher); ok {
		if err := s.call(func() error { return f.Finish(s.part.ctx, s) }); err != nil {
			s.releaseEmitted()
			s.finished = false
			s.fail(fmt.Errorf("finish: %w", err))
		}
		s.dispatch(c)
	}
	s.opened = false
	if err := s.call(func() error { return s.op.Close(s.part.ctx) }); err != nil {
		s.part.fail(&OperatorError{Job: s.part.g.Name, Operator: s.id.Operator, Instance: s.id.Index, Failures: 1, Err: fmt.Errorf("close: %w", err)})
		return
	}
	s.broadcast(c, messages.EndOfStream())
	s.afterFlush(c)
}

func (s *instance) pendingBarrier() bool {
	for _, ch := range s.ins {
		if ch.barrier != 0 {
			return true
		}
	}
	return false
}

// Sources.

type reader struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	demand chan struct{}
}

func (s *instance) startReader() {
	if s.reader != nil || s.finished || s.draining {
		return
	}
	ctx, cancel := context.WithCancel(s.part.ctx)
	r := &reader{cancel: cancel, demand: make(chan struct{}, 1)}
	s.reader = r
	s.reading = false
	gen, src, pid, root := s.gen, s.src, s.self, s.part.node.system.Root
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-r.demand:
			}
			var rec arrow.RecordBatch
			var pos []uint64
			var base uint64
			var ranged bool
			err := s.call(func() error {
				var err error
				rec, err = src.Read(ctx)
				if rec == nil || err != nil {
					return err
				}
				if r, ok := src.(PositionRanger); ok {
					base, ranged = r.PositionBase()
				}
				if p, ok := src.(Positioner); ok && !ranged {
					pos = p.Positions()
				}
				return nil
			})
			if ctx.Err() != nil && err != nil && !errors.Is(err, io.EOF) {
				return
			}
			root.Send(pid, s.part.track(&readResult{gen: gen, rec: rec, pos: pos, base: base, ranged: ranged, err: err, part: s.part}))
			if err != nil {
				return
			}
		}
	}()
}

func (s *instance) stopReader() {
	if s.reader == nil {
		return
	}
	s.reader.cancel()
	s.reader.wg.Wait()
	s.reader = nil
	s.reading = false
}

// demand lets the reader read one more batch, unless the outputs are
// backed up: then it waits for them to drain.
func (s *instance) demand() {
	if s.reader == nil || s.reading {
		return
	}
	if s.blocked() {
		s.wantDemand = true
		return
	}
	s.wantDemand = false
	s.reading = true
	s.reader.demand <- struct{}{}
}

func (s *instance) onRead(c actor.Context, m *readResult) {
	if m.gen != s.gen || s.finished {
		if m.rec != nil {
			m.rec.Release()
		}
		return
	}
	s.reading = false
	switch {
	case errors.Is(m.err, io.EOF):
		if m.rec != nil {
			m.rec.Release()
		}
		s.finishSource(c)
		return
	case m.err != nil:
		if m.rec != nil {
			m.rec.Release()
		}
		s.fail(fmt.Errorf("read: %w", m.err))
	case m.rec == nil:
		s.demand()
		return
	}
	s.seq++
	s.stats.batchesIn.Add(1)
	s.stats.rowsIn.Add(m.rec.NumRows())
	wm, hasWM := s.eventTimeWatermark(m.rec)
	rows := int(m.rec.NumRows())
	var lin *messages.Lineage
	switch {
	case m.ranged:
		lin = &messages.Lineage{Origin: s.id.Operator, Base: m.base}
	case m.pos == nil:
		lin = s.unplacedLineage(rows)
	case len(m.pos) != rows:
		m.rec.Release()
		s.fail(fmt.Errorf("read: source gave %d positions for %d rows", len(m.pos), rows))
	default:
		lin = &messages.Lineage{Origin: s.id.Operator, Pos: m.pos}
	}
	if rows > 0 {
		s.emitted = append(s.emitted, m.rec)
		s.emittedLin = append(s.emittedLin, lin)
	} else {
		m.rec.Release()
	}
	s.dispatch(c)
	if hasWM {
		s.setWatermark(c, wm)
	}
	if cm, ok := s.src.(Committer); ok {
		if err := s.call(func() error { return cm.Commit(s.part.ctx) }); err != nil {
			s.fail(fmt.Errorf("commit: %w", err))
		}
	}
	s.demand()
}

func (s *instance) onStopSource(c actor.Context) {
	if s.src == nil || s.finished || s.draining {
		return
	}
	s.draining = true
	s.stopReader()
	// Results the reader sent before it stopped are queued ahead of this.
	c.Send(s.self, &drainedMsg{gen: s.gen})
}

// finishSource ends a source: commit, close, final watermark, end-of-stream.
func (s *instance) finishSource(c actor.Context) {
	if s.finished {
		return
	}
	s.stopReader()
	if cm, ok := s.src.(Committer); ok {
		if err := s.call(func() error { return cm.Commit(s.part.ctx) }); err != nil {
			s.fail(fmt.Errorf("commit: %w", err))
		}
	}
	s.finished = true
	s.opened = false
	if err := s.call(func() error { return s.src.Close(s.part.ctx) }); err != nil {
		s.part.fail(&OperatorError{Job: s.part.g.Name, Operator: s.id.Operator, Instance: s.id.Index, Failures: 1, Err: fmt.Errorf("close: %w", err)})
		return
	}
	s.setWatermark(c, messages.MaxWatermark)
	s.broadcast(c, messages.EndOfStream())
	s.afterFlush(c)
}

// OperatorContext implementation.

func (s *instance) Job() string                 { return s.part.g.Name }
func (s *instance) Operator() string            { return s.id.Operator }
func (s *instance) Instance() int               { return s.id.Index }
func (s *instance) Parallelism() int            { return s.v.Parallelism }
func (s *instance) Logger() *slog.Logger        { return s.log }
func (s *instance) Allocator() memory.Allocator { return s.mem }
func (s *instance) State() persistence.Store    { return s.state }
func (s *instance) Timers() TimerService        { return s.timers }
func (s *instance) Checkpointing() bool         { return s.part.checkpointing }
func (s *instance) RestoredCheckpoint() uint64  { return s.part.restored }

// lineageOf returns the lineage of a batch of n rows emitted for the input
// being processed, as how derives them from the input's rows. An emit that
// does not say how (plain Emit), or says it wrongly, gets an origin of its
// own, derived from the input's origin, first and last positions and the
// emit's index: the same input batch processed again gives the same
// lineage, as long as the operator emits the same batches.
func (s *instance) lineageOf(n int, how rowMap) *messages.Lineage {
	in := s.inLin
	if in == nil {
		// Emitted from a timer, a watermark or Finish.
		return s.unplacedLineage(n)
	}
	switch {
	case how.same && n == s.inRows:
		return in
	case how.mask != nil && how.mask.Len() == s.inRows:
		if pos := selectPositions(in, how.mask, n); len(pos) == n {
			return &messages.Lineage{Origin: in.Origin, Pos: pos}
		}
	case how.rows != nil && len(how.rows) == n:
		ok := true
		for _, r := range how.rows {
			if r < 0 || int(r) >= s.inRows {
				ok = false
				break
			}
		}
		if ok {
			return in.Take(how.rows)
		}
	}
	var h [40]byte
	first, last := uint64(0), uint64(0)
	if s.inRows > 0 {
		first, last = in.At(0), in.At(s.inRows-1)
	}
	binary.LittleEndian.PutUint64(h[0:], first)
	binary.LittleEndian.PutUint64(h[8:], last)
	binary.LittleEndian.PutUint64(h[16:], uint64(s.inRows))
	binary.LittleEndian.PutUint64(h[24:], uint64(s.emitN))
	binary.LittleEndian.PutUint64(h[32:], in.Base)
	d := xxh3.HashString128(in.Origin + "\x00" + string(h[:]))
	return &messages.Lineage{Origin: s.id.Operator + "#" + strconv.FormatUint(d.Hi^d.Lo, 36)}
}

// unplacedLineage returns a lineage unique to this run for n rows that have
// no input position: rows of a source that gives none, and batches emitted
// with no input (timers, watermarks, Finish).
func (s *instance) unplacedLineage(n int) *messages.Lineage {
	l := &messages.Lineage{Origin: s.unplacedOrigin(), Base: s.unplaced}
	s.unplaced += uint64(n)
	return l
}

func (s *instance) unplacedOrigin() string { return s.id.Operator + "~" + s.run }

// selectPositions returns the positions of the rows of in where mask is
// true (and not null), a 64-row word at a time.
func selectPositions(in *messages.Lineage, mask *array.Boolean, n int) []uint64 {
	pos := make([]uint64, 0, n)
	data := mask.Data()
	off, length := data.Offset(), mask.Len()
	if length == 0 || data.Buffers()[1] == nil {
		return pos
	}
	vals := data.Buffers()[1].Bytes()
	var valid []byte
	if mask.NullN() > 0 && data.Buffers()[0] != nil {
		valid = data.Buffers()[0].Bytes()
	}
	base, src := in.Base, in.Pos
	at := func(i int) uint64 {
		if src == nil {
			return base + uint64(i)
		}
		return src[i]
	}
	for i := 0; i < length; {
		if (off+i)%8 == 0 && i+64 <= length {
			b := (off + i) / 8
			w := binary.LittleEndian.Uint64(vals[b:])
			if valid != nil {
				w &= binary.LittleEndian.Uint64(valid[b:])
			}
			for w != 0 {
				pos = append(pos, at(i+bits.TrailingZeros64(w)))
				w &= w - 1
			}
			i += 64
			continue
		}
		if bitutil.BitIsSet(vals, off+i) && (valid == nil || bitutil.BitIsSet(valid, off+i)) {
			pos = append(pos, at(i))
		}
		i++
	}
	return pos
}
