package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/meshflow/meshflow/cluster/checkpoint"
	"github.com/meshflow/meshflow/messages"
	"github.com/meshflow/meshflow/messages/pb"
)

// jobPart is one node's share of a job: the local instances, the job actor
// supervising them and the NATS subscriptions of their cross-node channels.
type jobPart struct {
	node      *Node
	g         *JobGraph
	placement Placement
	log       *slog.Logger
	multiNode bool

	// checkpointing is true when the job takes checkpoints; restored is
	// the id of the checkpoint this run was restored from (0: none).
	checkpointing bool
	restored      uint64
	ck            *jobCheckpoints
	first         bool // the first run of the job on this node
	// onStarted, when set, is called once the part runs (after restore).
	onStarted func(restored uint64)

	// ctx is handed to user code; cancelled on hard stop and at the end.
	ctx    context.Context
	cancel context.CancelFunc
	// closing, set (under mu) when the part ends after its last
	// checkpoint, is the context operators are closed with then: not
	// cancelled with ctx, bounded by the drain timeout, so that they
	// finish what that checkpoint's completion started (a sink publishing
	// its output). closeErrs are their Close failures then.
	closing     context.Context
	stopClosing context.CancelFunc
	closeErrs   []error

	shells  []*instance
	byID    map[InstanceID]*instance
	sup     *supervisor
	jobPID  *actor.PID
	spawned chan error
	stopped chan struct{}

	pidMu sync.RWMutex
	pids  map[InstanceID]*actor.PID

	mu        sync.Mutex
	remaining int
	done      chan struct{}
	failed    chan struct{}
	err       error

	subs []*nats.Subscription
	// cbMu and cbClosed fence the subscription callbacks off at
	// unsubscribe.
	cbMu     sync.RWMutex
	cbClosed bool

	// inflight holds the data messages and read results sent to instance
	// actors and not yet received. A stopped actor's mailbox is dropped
	// without its messages being delivered anywhere, so teardown releases
	// the batches of whatever is left here; messages sent to an actor
	// already gone reach the dead-letter handler, which does the same.
	inflightMu sync.Mutex
	inflight   map[any]struct{}
}

// track records m as in a mailbox and returns it.
func (p *jobPart) track(m any) any {
	p.inflightMu.Lock()
	if p.inflight == nil {
		p.inflight = make(map[any]struct{})
	}
	p.inflight[m] = struct{}{}
	p.inflightMu.Unlock()
	return m
}

// untrack claims m for the caller; false when someone else claimed it.
func (p *jobPart) untrack(m any) bool {
	p.inflightMu.Lock()
	defer p.inflightMu.Unlock()
	if _, ok := p.inflight[m]; !ok {
		return false
	}
	delete(p.inflight, m)
	return true
}

// releaseInflight releases the batches of undelivered messages.
func (p *jobPart) releaseInflight() {
	p.inflightMu.Lock()
	left := p.inflight
	p.inflight = nil
	p.inflightMu.Unlock()
	for m := range left {
		releaseMsg(m)
	}
}

// releaseMsg releases the batch carried by a data message or read result.
func releaseMsg(m any) {
	switch m := m.(type) {
	case *dataMsg:
		m.env.Release()
	case *readResult:
		if m.rec != nil {
			m.rec.Release()
		}
	}
}

func newJobPart(n *Node, g *JobGraph, p Placement) *jobPart {
	part := &jobPart{
		node:      n,
		g:         g,
		placement: p,
		log:       n.log.With("job", g.SubjectName()),
		multiNode: len(p.Nodes()) > 1,
		byID:      map[InstanceID]*instance{},
		pids:      map[InstanceID]*actor.PID{},
		spawned:   make(chan error, 1),
		stopped:   make(chan struct{}),
		done:      make(chan struct{}),
		failed:    make(chan struct{}),
	}
	policy := n.cfg.Restart
	if g.Restart != nil {
		policy = g.Restart.withDefaults()
	}
	part.sup = &supervisor{
		policy: policy,
		timers: map[*time.Timer]struct{}{},
		giveUp: func(id InstanceID, failures int, err error) {
			part.fail(&OperatorError{Job: g.Name, Operator: id.Operator, Instance: id.Index, Failures: failures, Err: err})
		},
		failed: func(id InstanceID, failures int, err error, restartIn time.Duration) {
			if s := part.byID[id]; s != nil {
				s.stats.failures.Add(1)
			}
			part.log.Warn("operator instance failed; restarting",
				"operator", id.Operator, "instance", id.Index, "failures", failures,
				"restart_in", restartIn, "error", err)
		},
	}
	return part
}

func (p *jobPart) run(ctx context.Context) (err error) {
	p.ctx, p.cancel = context.WithCancel(context.WithoutCancel(ctx))
	defer p.cancel()
	defer func() {
		// After teardown: the operators are closed.
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.stopClosing != nil {
			p.stopClosing()
		}
		if len(p.closeErrs) > 0 {
			err = errors.Join(err, fmt.Errorf("actors: job %q: close: %w", p.g.Name, errors.Join(p.closeErrs...)))
		}
	}()

	// Under mu: Node.Stats reads the shells from other goroutines.
	p.mu.Lock()
	for _, v := range p.g.Vertices {
		for i := 0; i < v.Parallelism; i++ {
			id := InstanceID{v.Name, i}
			if p.placement[id] == p.node.cfg.ID {
				s := newInstance(p, v, i)
				p.shells = append(p.shells, s)
				p.byID[id] = s
			}
		}
	}
	p.mu.Unlock()
	p.remaining = len(p.shells)
	if p.remaining == 0 {
		return nil
	}
	if p.checkpointing {
		defer p.ck.stop()
		if err := p.ck.restore(ctx, p.first); err != nil {
			return err
		}
	}
	if err := p.subscribe(); err != nil {
		p.unsubscribe()
		return err
	}
	defer p.unsubscribe()

	props := actor.PropsFromProducer(func() actor.Actor { return &jobActor{p: p} },
		actor.WithSupervisor(p.sup))
	pid, err := p.node.system.Root.SpawnNamed(props, "job-"+p.g.SubjectName())
	if err != nil {
		return fmt.Errorf("actors: start job %q: %w", p.g.Name, err)
	}
	p.jobPID = pid
	defer p.teardown()
	if err := <-p.spawned; err != nil {
		return err
	}

	var wg sync.WaitGroup
	tickCtx, stopTicks := context.WithCancel(context.Background())
	defer func() { stopTicks(); wg.Wait() }()
	if p.hasRemoteInputs() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.tick(tickCtx)
		}()
	}
	p.log.Info("job started", "instances", len(p.shells))
	if p.onStarted != nil {
		p.onStarted(p.restored)
	}
	if p.checkpointing {
		return p.runCheckpointed(ctx)
	}

	select {
	case <-p.done:
		p.log.Info("job finished")
		return nil
	case <-p.failed:
		return p.failure()
	case <-ctx.Done():
	}
	// Graceful stop: sources stop reading, everything in flight drains.
	p.log.Info("draining job")
	for _, s := range p.shells {
		if s.v.NewSource != nil {
			p.node.system.Root.Send(p.pid(s.id), &stopSourceMsg{})
		}
	}
	drain := time.NewTimer(p.node.cfg.DrainTimeout)
	defer drain.Stop()
	select {
	case <-p.done:
		p.log.Info("job drained")
		return ctx.Err()
	case <-p.failed:
		return p.failure()
	case <-drain.C:
		return fmt.Errorf("actors: job %q: drain timed out after %v: %w", p.g.Name, p.node.cfg.DrainTimeout, ctx.Err())
	}
}

// endAfterCheckpoint marks the part as ending after its last checkpoint:
// operators are closed with a context of their own (see closing).
func (p *jobPart) endAfterCheckpoint() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing == nil {
		p.closing, p.stopClosing = context.WithTimeout(context.Background(), p.node.cfg.DrainTimeout)
	}
}

// closeContext returns the context to close an operator with, and whether
// the part ends after its last checkpoint.
func (p *jobPart) closeContext() (context.Context, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing != nil {
		return p.closing, true
	}
	return p.ctx, false
}

// closeFailed records an operator's Close failure at the end of the part.
func (p *jobPart) closeFailed(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closeErrs = append(p.closeErrs, err)
}

func (p *jobPart) failure() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// teardown stops the job actor (its children first) and waits for it.
func (p *jobPart) teardown() {
	p.cancel()
	p.sup.stop()
	p.node.system.Root.Stop(p.jobPID)
	// Operators closing after the last checkpoint may take the drain
	// timeout.
	wait := 30 * time.Second
	if p.closing != nil {
		wait += p.node.cfg.DrainTimeout
	}
	select {
	case <-p.stopped:
	case <-time.After(wait):
		p.log.Error("job actor did not stop in time", "waited", wait)
		p.node.stuck.Store(true)
	}
	for _, s := range p.shells {
		s.releaseQueued()
	}
	p.releaseInflight()
}

func (p *jobPart) pid(id InstanceID) *actor.PID {
	p.pidMu.RLock()
	defer p.pidMu.RUnlock()
	return p.pids[id]
}

func (p *jobPart) instanceDone(id InstanceID) {
	if p.ck != nil {
		p.ck.sourcePaused(id) // a finished instance produces nothing more either
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.remaining--
	if p.remaining == 0 {
		close(p.done)
	}
}

// fail records the job's first failure and ends Run. On a job spanning
// several nodes the failure is reported to the other nodes too.
func (p *jobPart) fail(err error) {
	p.mu.Lock()
	if p.err != nil {
		p.mu.Unlock()
		return
	}
	p.err = err
	close(p.failed)
	p.mu.Unlock()
	p.log.Error("job failed", "error", err)
	if p.multiNode && !errors.Is(err, ErrRemoteFailure) {
		f := &pb.JobFailure{Job: p.g.Name, Error: err.Error(), Node: p.node.cfg.ID}
		var oe *OperatorError
		if errors.As(err, &oe) {
			f.Operator, f.Instance = oe.Operator, int32(oe.Instance)
		}
		if b, merr := proto.Marshal(f); merr == nil {
			if perr := p.node.cfg.NATS.Publish(FailureSubject(p.g.SubjectName()), b); perr != nil {
				p.log.Error("cannot report job failure to other nodes", "error", perr)
			}
		}
	}
}

func (p *jobPart) hasRemoteInputs() bool {
	for _, s := range p.shells {
		for _, c := range s.ins {
			if c.remote {
				return true
			}
		}
	}
	return false
}

// subscribe opens the subscriptions of every cross-node channel touching a
// local instance, and of the job's failure subject.
func (p *jobPart) subscribe() error {
	nc := p.node.cfg.NATS
	w := p.node.cfg.Window
	add := func(subject string, cb nats.MsgHandler, pendingMsgs, pendingBytes int) error {
		sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
			// Callbacks never run past unsubscribe, so nothing they
			// allocate outlives the job.
			p.cbMu.RLock()
			defer p.cbMu.RUnlock()
			if p.cbClosed {
				return
			}
			cb(m)
		})
		if err != nil {
			return fmt.Errorf("actors: subscribe %s: %w", subject, err)
		}
		if err := sub.SetPendingLimits(pendingMsgs, pendingBytes); err != nil {
			_ = sub.Unsubscribe()
			return fmt.Errorf("actors: subscribe %s: %w", subject, err)
		}
		p.subs = append(p.subs, sub)
		p.node.trackSub(sub, p)
		return nil
	}
	for _, s := range p.shells {
		for _, c := range s.ins {
			if !c.remote {
				continue
			}
			c := c
			s := s
			var next uint64 = 1
			subject := DataSubject(p.g.SubjectName(), c.from.Operator, s.id.Operator, c.from.Index, s.id.Index)
			mem := p.node.cfg.Allocator
			// Credits bound what is in flight to the window: anything
			// beyond 4x that is a protocol violation, reported loudly.
			err := add(subject, func(m *nats.Msg) {
				seq, env, err := messages.DecodeFrame(mem, m.Data)
				if err != nil {
					p.fail(fmt.Errorf("channel %s: %w", subject, err))
					return
				}
				if seq != next {
					env.Release()
					p.fail(fmt.Errorf("%w: channel %s: expected frame %d, got %d", ErrSequenceGap, subject, next, seq))
					return
				}
				next++
				p.node.system.Root.Send(p.pid(s.id), p.track(&dataMsg{key: c.key, env: env, part: p}))
			}, 4*w+16, (4*w+16)*p.node.cfg.MaxPayload)
			if err != nil {
				return err
			}
		}
		for _, e := range s.outs {
			for _, oc := range e.targets {
				if oc == nil || !oc.remote {
					continue
				}
				oc := oc
				s := s
				subject := CreditSubject(p.g.SubjectName(), s.id.Operator, oc.to.Operator, s.id.Index, oc.to.Index)
				err := add(subject, func(m *nats.Msg) {
					var cr pb.Credit
					if err := proto.Unmarshal(m.Data, &cr); err != nil {
						p.fail(fmt.Errorf("channel %s: bad credit message: %w", subject, err))
						return
					}
					if pid := p.pid(s.id); pid != nil {
						p.node.system.Root.Send(pid, &creditMsg{key: oc.key, limit: cr.AckedSeq + uint64(cr.Credits)})
					}
				}, 1<<16, 64<<20)
				if err != nil {
					return err
				}
			}
		}
	}
	if p.checkpointing {
		if err := add(checkpoint.CommandSubject(p.g.SubjectName()), p.ck.command, 1<<16, 64<<20); err != nil {
			return err
		}
	}
	if err := p.subscribeStatus(); err != nil {
		return err
	}
	if p.multiNode {
		self := p.node.cfg.ID
		err := add(FailureSubject(p.g.SubjectName()), func(m *nats.Msg) {
			var f pb.JobFailure
			if err := proto.Unmarshal(m.Data, &f); err != nil {
				p.fail(fmt.Errorf("%w: undecodable failure report: %v", ErrRemoteFailure, err))
				return
			}
			if f.Node == self {
				return
			}
			p.fail(fmt.Errorf("%w: node %s: %s", ErrRemoteFailure, f.Node, f.Error))
		}, 1<<10, 1<<20)
		if err != nil {
			return err
		}
	}
	// The server knows every subscription before the job starts, so no
	// credit or failure report sent after that is missed.
	fctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	if err := nc.FlushWithContext(fctx); err != nil {
		return fmt.Errorf("actors: subscribe: %w", err)
	}
	return nil
}

func (p *jobPart) unsubscribe() {
	p.cbMu.Lock() // waits for callbacks in progress
	p.cbClosed = true
	p.cbMu.Unlock()
	for _, s := range p.subs {
		_ = s.Unsubscribe()
		p.node.trackSub(s, nil)
	}
	p.subs = nil
}

// tick asks instances with NATS inputs to repeat their credit grants, so a
// grant lost before the sender subscribed is recovered.
func (p *jobPart) tick(ctx context.Context) {
	t := time.NewTicker(p.node.cfg.GrantInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, s := range p.shells {
				if s.hasRemoteInputs {
					p.node.system.Root.Send(p.pid(s.id), &tickMsg{})
				}
			}
		}
	}
}

// InstanceStats are the counters of one operator instance.
type InstanceStats struct {
	ID         InstanceID
	BatchesIn  int64
	RowsIn     int64
	BatchesOut int64
	RowsOut    int64
	Failures   int64
	// Watermark is the instance's event-time watermark: for an operator
	// the minimum over its active inputs (wmtrack.go), for a source the
	// last it derived; MinWatermark before any, MaxWatermark at the end.
	Watermark messages.Watermark
	// Idle: the instance told its outputs it is idle (a source that read
	// nothing for its IdleTimeout, an operator whose open inputs are all
	// idle) and has sent nothing since.
	Idle bool
}

func (p *jobPart) stats() []InstanceStats {
	p.mu.Lock()
	shells := p.shells
	p.mu.Unlock()
	out := make([]InstanceStats, 0, len(shells))
	for _, s := range shells {
		out = append(out, InstanceStats{
			ID:         s.id,
			BatchesIn:  s.stats.batchesIn.Load(),
			RowsIn:     s.stats.rowsIn.Load(),
			BatchesOut: s.stats.batchesOut.Load(),
			RowsOut:    s.stats.rowsOut.Load(),
			Failures:   s.stats.failures.Load(),
			Watermark:  messages.Watermark(s.stats.wm.Load()),
			Idle:       s.stats.idle.Load(),
		})
	}
	return out
}

// jobActor supervises the local instances of a job.
type jobActor struct{ p *jobPart }

func (a *jobActor) Receive(c actor.Context) {
	p := a.p
	switch c.Message().(type) {
	case *actor.Started:
		for _, s := range p.shells {
			s := s
			props := actor.PropsFromProducer(func() actor.Actor { return &instanceActor{s: s} })
			pid, err := c.SpawnNamed(props, fmt.Sprintf("%s-%d", s.id.Operator, s.id.Index))
			if err != nil {
				p.spawned <- fmt.Errorf("actors: start %s: %w", s.id, err)
				return
			}
			p.pidMu.Lock()
			p.pids[s.id] = pid
			p.pidMu.Unlock()
		}
		for _, s := range p.shells {
			c.Send(p.pid(s.id), &startMsg{})
		}
		p.spawned <- nil
	case *actor.Stopped:
		close(p.stopped)
	}
}
