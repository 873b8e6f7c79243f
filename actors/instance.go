package actors

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/asynkron/protoactor-go/actor"

	"github.com/meshflow/meshflow/messages"
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
		// from a Partitioned source: the batch's partition, of parts
		partition, parts int
		err              error
		part             *jobPart
	}
	tickMsg       struct{}
	stopSourceMsg struct{}
	drainedMsg    struct{ gen uint64 }
	timerMsg      struct {
		gen uint64
		t   Timer
	}
)

type instanceStats struct {
	batchesIn, rowsIn, batchesOut, rowsOut, failures atomic.Int64
	wm                                               atomic.Int64 // instance.wm, for Node.Stats
	idle                                             atomic.Bool  // idleState.out
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
	state  persistence.Store // the instance's namespace
	keyed  persistence.Store // the operator's keyed state namespace
	// What the operator sees: views of state and keyed through the
	// overlay (when there is one); keyedView rejects writes to key groups
	// the instance does not own.
	stateView persistence.Store
	keyedView persistence.Store
	// flushers hold state in memory in front of the stores (see
	// StateFlusher); registered by the operator's Open.
	flushers []StateFlusher

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
	idl     idleState
	owe     bool
	emitted []arrow.RecordBatch
	timers  *timerService
	// overlay holds an operator's state writes during one call, so a
	// failed call leaves nothing behind (nil for sources).
	overlay *persistence.Overlay
	ck      instanceCheckpoints
	al      *aligner

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
	keyedNS := KeyedNamespace(p.g.SubjectName(), v.Name)
	root := p.node.cfg.State
	if root == nil {
		root = memstore.New()
	}
	s.state, s.keyed = root.Namespace(ns), root.Namespace(keyedNS)
	s.stateView, s.keyedView = s.state, s.keyed
	if v.NewSource == nil {
		// One overlay over both namespaces: a call's writes to its state
		// and to keyed state are committed together.
		s.overlay = persistence.NewOverlay(root)
		s.stateView, s.keyedView = s.overlay.Namespace(ns), s.overlay.Namespace(keyedNS)
	}
	lo, hi := s.keyGroups()
	s.keyedView = &keyedStore{s: s.keyedView, lo: lo, hi: hi}
	s.timers = newTimerService(s)
	s.stats.wm.Store(int64(messages.MinWatermark))
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
			c := &inChan{key: chanKey{ei, i}, from: from, wmInput: wmInput{wm: messages.MinWatermark}, idx: len(s.ins)}
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
	s.al = newAligner(len(s.ins), time.Now)
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
	case *idleCheckMsg:
		s.onIdleCheck(c, m)
	case *stopSourceMsg:
		s.onStopSource(c)
	case *drainedMsg:
		if m.gen == s.gen {
			s.finishSource(c)
		}
	case *pauseSourceMsg:
		s.onPauseSource()
	case *triggerMsg:
		s.onTrigger(c, m)
	case *betweenReadsMsg:
		s.onBetweenReads(c, m)
	case *completeMsg:
		s.onComplete(c, m)
	case *abortMsg:
		s.onAbort(c, m)
	}
}

// fail hands err to the supervisor: the actor is restarted or, after too
// many failures, the job fails.
//
// With checkpoints on, an instance that keeps state a restart of it alone
// would lose (see [CheckpointHandler]) is not restarted: the job recovers
// from its last checkpoint.
//
// An instance that registered a [StateFlusher] is not restarted alone
// either: with checkpoints on the job recovers, with checkpoints off it
// fails, since a restart would silently lose the state in memory.
func (s *instance) fail(err error) {
	whole := s.part.checkpointing && s.volatile()
	if len(s.flushers) > 0 {
		whole = true
	}
	panic(&instanceFailure{id: s.id, err: err, recover: whole})
}

// callState runs operator code that may write state. Its writes reach the
// Store when it succeeds and are dropped when it fails, so a retried batch
// never writes twice.
func (s *instance) callState(f func() error) error {
	err := s.call(f)
	if s.overlay == nil {
		return err
	}
	if err != nil {
		s.overlay.Discard()
		return err
	}
	if err := s.overlay.Commit(s.part.ctx); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
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
		s.deliver(c, s.inByKey[m.key], m)
	}
	s.runAligner(c)
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
	if m := s.ck.restoreMeta; m != nil {
		s.ck.restoreMeta = nil
		if err := s.applyRuntimeMeta(m); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	if s.v.NewSource != nil {
		s.src = s.v.NewSource()
		if err := s.call(func() error { return s.src.Open(s.part.ctx, s) }); err != nil {
			return fmt.Errorf("open: %w", err)
		}
	} else {
		s.op = s.v.NewOperator()
		s.flushers = nil
		if err := s.callState(func() error { return s.op.Open(s.part.ctx, s) }); err != nil {
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
	ctx, ending := s.part.ctx, false
	if final {
		ctx, ending = s.part.closeContext()
	}
	var err error
	if s.src != nil {
		err = s.call(func() error { return s.src.Close(ctx) })
	} else if s.op != nil {
		err = s.call(func() error { return s.op.Close(ctx) })
	}
	switch {
	case err == nil:
	case ending:
		// The job ends after its last checkpoint: what Close could not
		// finish (a sink's last publish) is the job's error.
		s.part.closeFailed(fmt.Errorf("%s: %w", s.id.task(), err))
	default:
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

func (s *instance) Job() string                 { return s.part.g.Name }
func (s *instance) Operator() string            { return s.id.Operator }
func (s *instance) Instance() int               { return s.id.Index }
func (s *instance) Parallelism() int            { return s.v.Parallelism }
func (s *instance) Logger() *slog.Logger        { return s.log }
func (s *instance) Allocator() memory.Allocator { return s.mem }
func (s *instance) State() persistence.Store    { return s.stateView }
func (s *instance) Timers() TimerService        { return s.timers }
func (s *instance) Checkpointing() bool         { return s.part.checkpointing }
func (s *instance) RestoredCheckpoint() uint64  { return s.part.restored }
