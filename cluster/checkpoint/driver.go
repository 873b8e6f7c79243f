package checkpoint

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

	"github.com/meshflow/meshflow/internal/logging"
	"github.com/meshflow/meshflow/messages/pb"
)

// Deleter deletes the snapshot objects of a checkpoint (every task's).
// Deleting what does not exist is not an error.
type Deleter interface {
	DeleteCheckpoint(ctx context.Context, job string, id uint64) error
}

// DriverConfig configures a Driver.
type DriverConfig struct {
	NATS    *nats.Conn
	System  *actor.ActorSystem
	Store   *Store
	Deleter Deleter
	// Config is the coordinator's configuration, Restored what it continues
	// from (Store.Restored).
	Config   Config
	Restored Restored
	Logger   *slog.Logger
	// IOTimeout bounds each store write and deletion (0: 10 s).
	IOTimeout time.Duration
}

// ErrClosed answers triggers of a driver that was closed.
var ErrClosed = errors.New("checkpoint: driver closed")

// Driver runs the Coordinator of one job: one actor owns the state machine;
// a ticker goroutine feeds it time, NATS subscriptions feed it acks and
// triggers, and an I/O goroutine carries out its store writes and
// deletions one at a time, in order, feeding their results back as events.
// The actor publishes commands itself (NATS buffers them) and does no
// store I/O.
type Driver struct {
	cfg     DriverConfig
	job     string
	log     *slog.Logger
	pid     *actor.PID
	ctx     context.Context // cancelled by Close
	cancel  context.CancelFunc
	wg      sync.WaitGroup // ticker and I/O goroutines
	subs    []*nats.Subscription
	io      ioQueue
	ioDrain chan struct{} // closed by Close: finish the queue, then exit
	failed  chan error    // FailJob, once
	stopped chan struct{} // closed when the actor has stopped

	closeOnce sync.Once
	started   bool // goroutines running
}

// StartDriver starts the coordinator of cfg.Config.Job. ctx bounds the
// start only; the driver runs until Stop or Close.
func StartDriver(ctx context.Context, cfg DriverConfig) (*Driver, error) {
	if cfg.NATS == nil || cfg.System == nil || cfg.Store == nil || cfg.Deleter == nil {
		return nil, fmt.Errorf("%w: driver needs NATS, System, Store and Deleter", ErrConfig)
	}
	if err := cfg.Config.Validate(); err != nil {
		return nil, err
	}
	cfg.Config = cfg.Config.withDefaults()
	if cfg.IOTimeout <= 0 {
		cfg.IOTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = logging.Discard()
	}
	dctx, cancel := context.WithCancel(context.Background())
	d := &Driver{
		cfg: cfg, job: cfg.Config.Job, log: cfg.Logger.With("job", cfg.Config.Job, "component", "checkpoint-coordinator"),
		ctx: dctx, cancel: cancel, failed: make(chan error, 1), stopped: make(chan struct{}),
		io: ioQueue{wake: make(chan struct{}, 1)}, ioDrain: make(chan struct{}),
	}
	a := &coordActor{
		d: d, c: New(cfg.Config, cfg.Restored),
		waiters: map[uint64]func(*pb.CheckpointMeta, error){}, timers: map[uint64]*time.Timer{},
	}
	pid, err := cfg.System.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return a }),
		"checkpoint-"+d.job)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("checkpoint: spawn coordinator of %q: %w", d.job, err)
	}
	d.pid = pid
	if err := d.subscribe(ctx); err != nil {
		d.Close()
		return nil, err
	}
	d.wg.Add(2)
	go d.runIO()
	go d.runTicker()
	d.started = true
	return d, nil
}

func (d *Driver) subscribe(ctx context.Context) error {
	ack, err := d.cfg.NATS.Subscribe(AckSubject(d.job), d.onAck)
	if err != nil {
		return fmt.Errorf("checkpoint: subscribe %s: %w", AckSubject(d.job), err)
	}
	d.subs = append(d.subs, ack)
	trig, err := d.cfg.NATS.Subscribe(TriggerSubject(d.job), d.onTrigger)
	if err != nil {
		return fmt.Errorf("checkpoint: subscribe %s: %w", TriggerSubject(d.job), err)
	}
	d.subs = append(d.subs, trig)
	if err := d.cfg.NATS.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("checkpoint: subscribe: %w", err)
	}
	return nil
}

// send delivers msg to the actor unless the driver is closing.
func (d *Driver) send(msg any) {
	if d.ctx.Err() == nil {
		d.cfg.System.Root.Send(d.pid, msg)
	}
}

func (d *Driver) onAck(m *nats.Msg) {
	var a pb.CheckpointAck
	if err := proto.Unmarshal(m.Data, &a); err != nil {
		d.log.Warn("undecodable checkpoint ack", "error", err)
		return
	}
	if a.Job != d.job {
		d.log.Warn("checkpoint ack of another job", "ack_job", a.Job)
		return
	}
	now, task := time.Now(), TaskName(a.Operator, int(a.Instance))
	if a.Error != "" {
		d.send(Decline{Now: now, ID: a.Id, Task: task, Reason: a.Error})
		return
	}
	d.send(Ack{Now: now, ID: a.Id, Task: task, Handle: Handle{
		Object: a.Object, Size: a.Size, Alignment: time.Duration(a.AlignmentUs) * time.Microsecond,
		Sync: time.Duration(a.SyncUs) * time.Microsecond, Async: time.Duration(a.AsyncUs) * time.Microsecond,
		Finished: a.Finished, Paused: a.Paused,
	}})
}

func (d *Driver) onTrigger(m *nats.Msg) {
	respond := func(meta *pb.CheckpointMeta, err error) {
		r := &pb.TriggerReply{Meta: meta}
		if err != nil {
			r.Error = err.Error()
		}
		data, merr := proto.Marshal(r)
		if merr == nil {
			merr = m.Respond(data)
		}
		if merr != nil {
			d.log.Warn("cannot answer a checkpoint trigger", "error", merr)
		}
	}
	var req pb.TriggerRequest
	if err := proto.Unmarshal(m.Data, &req); err != nil {
		respond(nil, fmt.Errorf("checkpoint: undecodable trigger request: %w", err))
		return
	}
	if req.Job != "" && req.Job != d.job {
		respond(nil, fmt.Errorf("checkpoint: trigger for job %q sent to job %q", req.Job, d.job))
		return
	}
	if d.ctx.Err() != nil {
		respond(nil, ErrClosed)
		return
	}
	d.send(request{savepoint: req.Savepoint, respond: respond})
}

// request is a Trigger (or, with stop, a Stop) with its answer.
type request struct {
	savepoint bool
	stop      bool
	respond   func(*pb.CheckpointMeta, error)
}

// tickPeriod is how often the ticker feeds time: a tenth of the interval,
// within [10 ms, 100 ms].
func tickPeriod(interval time.Duration) time.Duration {
	return min(max(interval/10, 10*time.Millisecond), 100*time.Millisecond)
}

func (d *Driver) runTicker() {
	defer d.wg.Done()
	t := time.NewTicker(tickPeriod(d.cfg.Config.Interval))
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case now := <-t.C:
			d.send(Tick{Now: now})
		}
	}
}

// ioQueue is the I/O goroutine's unbounded queue: the actor never waits
// for it.
type ioQueue struct {
	mu   sync.Mutex
	jobs []func(context.Context)
	wake chan struct{}
}

func (q *ioQueue) push(f func(context.Context)) {
	q.mu.Lock()
	q.jobs = append(q.jobs, f)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// runIO carries out the queued writes and deletions in order. On Close it
// finishes what is queued (each job bounded by IOTimeout), so that a
// deletion asked for by the last checkpoint is not lost.
func (d *Driver) runIO() {
	defer d.wg.Done()
	for {
		drain := false
		select {
		case <-d.ioDrain:
			drain = true
		case <-d.io.wake:
		}
		for {
			d.io.mu.Lock()
			jobs := d.io.jobs
			d.io.jobs = nil
			d.io.mu.Unlock()
			if len(jobs) == 0 {
				break
			}
			for _, f := range jobs {
				ctx, cancel := context.WithTimeout(context.Background(), d.cfg.IOTimeout)
				f(ctx)
				cancel()
			}
		}
		if drain {
			return
		}
	}
}

// Trigger takes a checkpoint (a savepoint if savepoint) now, or right
// after the one in flight, and returns its metadata once it is complete. It
// fails if the checkpoint is aborted, the driver stops or closes, or ctx
// ends (the checkpoint goes on).
func (d *Driver) Trigger(ctx context.Context, savepoint bool) (*pb.CheckpointMeta, error) {
	return d.request(ctx, request{savepoint: savepoint})
}

func (d *Driver) request(ctx context.Context, r request) (*pb.CheckpointMeta, error) {
	type result struct {
		meta *pb.CheckpointMeta
		err  error
	}
	ch := make(chan result, 1)
	r.respond = func(m *pb.CheckpointMeta, err error) { ch <- result{m, err} }
	if d.ctx.Err() != nil {
		return nil, ErrClosed
	}
	d.send(r)
	select {
	case res := <-ch:
		return res.meta, res.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-d.stopped:
		select {
		case res := <-ch:
			return res.meta, res.err
		default:
			return nil, ErrClosed
		}
	}
}

// Stop takes a final checkpoint (after the one in flight, if any), then
// closes the driver. It returns the final checkpoint's metadata, or why it
// could not complete (ctx ending included: the driver closes anyway).
func (d *Driver) Stop(ctx context.Context) (*pb.CheckpointMeta, error) {
	defer d.Close()
	return d.request(ctx, request{stop: true})
}

// Failed delivers the job's failure when too many checkpoints failed in a
// row.
func (d *Driver) Failed() <-chan error { return d.failed }

// Close stops the driver without a final checkpoint and waits for its
// goroutines and actor; store writes and deletions already asked for are
// carried out first. Waiting triggers get ErrClosed. A checkpoint in flight
// is left as it is: the next coordinator deletes it.
func (d *Driver) Close() {
	d.closeOnce.Do(func() {
		for _, s := range d.subs {
			if err := s.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
				d.log.Warn("unsubscribe", "subject", s.Subject, "error", err)
			}
		}
		d.cancel() // the ticker ends; nothing more reaches the actor
		if d.pid != nil {
			d.cfg.System.Root.Stop(d.pid)
			<-d.stopped
		}
		// The actor is gone, so the queue only shrinks now.
		close(d.ioDrain)
		if d.started {
			d.wg.Wait()
		}
	})
}

// coordActor owns the Coordinator: every event goes through its mailbox.
type coordActor struct {
	d         *Driver
	c         *Coordinator
	waiters   map[uint64]func(*pb.CheckpointMeta, error)
	nextToken uint64
	timers    map[uint64]*time.Timer
	done      bool               // the coordinator reported Stopped
	commit    *pb.CheckpointMeta // the last one asked for, for the log
}

func (a *coordActor) Receive(ctx actor.Context) {
	defer func() {
		// A bug in the state machine must not be hidden by a restart that
		// loses its state: the job fails.
		if r := recover(); r != nil {
			a.d.fail(fmt.Errorf("checkpoint: coordinator of %q panicked: %v", a.d.job, r))
			a.shutdown(fmt.Errorf("checkpoint: coordinator panicked: %v", r))
			ctx.Stop(ctx.Self())
		}
	}()
	switch m := ctx.Message().(type) {
	case Event:
		a.step(m)
	case request:
		if a.done {
			m.respond(nil, ErrStopped)
			return
		}
		a.nextToken++
		a.waiters[a.nextToken] = m.respond
		if m.stop {
			a.step(Stop{Now: time.Now(), Savepoint: m.savepoint, Token: a.nextToken})
		} else {
			a.step(Trigger{Now: time.Now(), Savepoint: m.savepoint, Token: a.nextToken})
		}
	case *actor.Stopping:
		a.shutdown(ErrClosed)
	case *actor.Stopped:
		close(a.d.stopped)
	}
}

// shutdown stops the timers and answers every waiter with err.
func (a *coordActor) shutdown(err error) {
	for id, t := range a.timers {
		t.Stop()
		delete(a.timers, id)
	}
	for tok, w := range a.waiters {
		w(nil, err)
		delete(a.waiters, tok)
	}
}

func (a *coordActor) step(ev Event) {
	if a.done {
		return
	}
	for _, act := range a.c.Step(ev) {
		a.do(act)
	}
}

func (a *coordActor) do(act Action) {
	d := a.d
	switch x := act.(type) {
	case PersistAttempt:
		d.io.push(func(ctx context.Context) {
			err := d.cfg.Store.SetAttempt(ctx, d.job, x.ID)
			d.send(Persisted{Now: time.Now(), ID: x.ID, Err: err})
		})
	case Inject:
		a.publish(&pb.CheckpointCommand{Kind: pb.CheckpointCommand_KIND_INJECT, Id: x.ID,
			Savepoint: x.Savepoint, TimestampUs: x.Timestamp.UnixMicro()})
	case ScheduleTimeout:
		id := x.ID
		if t := a.timers[id]; t != nil {
			t.Stop()
		}
		a.timers[id] = time.AfterFunc(time.Until(x.At), func() {
			d.send(TimeoutFired{Now: time.Now(), ID: id})
		})
	case Commit:
		meta := x.Meta
		a.commit = meta
		a.stopTimer(meta.Id)
		d.io.push(func(ctx context.Context) {
			err := d.cfg.Store.Commit(ctx, meta)
			d.send(Committed{Now: time.Now(), ID: meta.Id, Err: err})
		})
	case NotifyComplete:
		a.publish(&pb.CheckpointCommand{Kind: pb.CheckpointCommand_KIND_COMPLETE, Id: x.ID})
		if m := a.commit; m != nil && m.Id == x.ID {
			d.log.Info("checkpoint complete", "checkpoint_id", x.ID, "savepoint", m.Savepoint,
				"duration", time.Duration(m.DurationUs)*time.Microsecond, "bytes", m.Size,
				"max_alignment", time.Duration(m.MaxAlignmentUs)*time.Microsecond)
		}
	case Abort:
		a.stopTimer(x.ID)
		a.publish(&pb.CheckpointCommand{Kind: pb.CheckpointCommand_KIND_ABORT, Id: x.ID, Reason: x.Reason})
		d.log.Warn("checkpoint aborted", "checkpoint_id", x.ID, "reason", x.Reason)
	case DeleteCheckpoint:
		id := x.ID
		d.io.push(func(ctx context.Context) {
			// Metadata first: once it is gone the checkpoint is no longer
			// complete, whatever happens to its objects.
			err := d.cfg.Store.Delete(ctx, d.job, id)
			if err == nil {
				err = d.cfg.Deleter.DeleteCheckpoint(ctx, d.job, id)
			}
			if err != nil {
				d.log.Warn("cannot delete checkpoint", "checkpoint_id", id, "error", err)
			}
		})
	case Reply:
		if w := a.waiters[x.Token]; w != nil {
			delete(a.waiters, x.Token)
			w(x.Meta, x.Err)
		}
	case FailJob:
		d.fail(fmt.Errorf("%w: %s", ErrJobFailed, x.Reason))
	case Rejected:
		d.log.Warn("checkpoint event rejected", "reason", x.Reason)
	case Stopped:
		a.done = true
		a.shutdown(ErrStopped)
	}
}

func (a *coordActor) stopTimer(id uint64) {
	if t := a.timers[id]; t != nil {
		t.Stop()
		delete(a.timers, id)
	}
}

// publish sends a command to every node of the job. Publishing fails only
// on a closed connection; the error is logged, and a lost INJECT ends in
// the checkpoint's timeout.
func (a *coordActor) publish(cmd *pb.CheckpointCommand) {
	data, err := proto.Marshal(cmd)
	if err == nil {
		err = a.d.cfg.NATS.Publish(CommandSubject(a.d.job), data)
	}
	if err != nil {
		a.d.log.Warn("cannot publish checkpoint command", "kind", cmd.Kind.String(), "checkpoint_id", cmd.Id, "error", err)
	}
}

func (d *Driver) fail(err error) {
	select {
	case d.failed <- err:
	default:
	}
}
