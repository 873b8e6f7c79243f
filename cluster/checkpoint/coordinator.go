// Package checkpoint holds the checkpoint coordinator of a job: the
// protocol as a deterministic state machine (Coordinator), the checkpoint
// metadata kept in the JetStream KV bucket meshflow_checkpoints (Store), and
// the actor that drives the state machine with NATS, KV and a clock (Driver).
//
// The Coordinator is written like etcd raft: it has no goroutines, reads no
// clock and does no I/O. Everything that happens comes in as an Event
// (time included) and everything it wants done goes out as Actions, which
// the driver carries out in order and answers with further events
// (Persisted, Committed).
//
// One checkpoint is in flight at a time, through these phases:
//
//	PersistAttempt(id)  -> Persisted(id)          the attempt id is durable
//	Inject(id), ScheduleTimeout(id)               barriers flow, tasks ack
//	Commit(meta)        -> Committed(id)          every task acked
//	NotifyComplete(id), Reply, DeleteCheckpoint   retention
//
// A decline, a timeout, or a failed commit ends the checkpoint with
// Abort(id) and DeleteCheckpoint(id); a failed attempt write ends it before
// anything was injected.
//
// On-demand triggers (Trigger) are never refused for being early: when no
// checkpoint is in flight one starts at once, ignoring the interval and the
// minimum pause; when one is in flight the trigger is queued, and every
// queued trigger is answered by the next checkpoint, started as soon as the
// one in flight ends (a savepoint if any queued trigger asked for one).
// A trigger is therefore never answered with a checkpoint that started
// before it was asked for.
package checkpoint

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/meshflow/meshflow/messages/pb"
)

// Defaults of Config.
const (
	DefaultInterval = time.Second
	DefaultTimeout  = 10 * time.Minute
	DefaultRetained = 3
	// Unlimited, as Config.TolerableFailures, never fails the job because
	// checkpoints fail.
	Unlimited = -1
)

// Config configures the coordinator of one job.
type Config struct {
	// Job is the job's subject name ("<job>" or "<domain>.<job>").
	Job string
	// Tasks are the job's operator instances, "<operator>/<index>". A
	// checkpoint is complete when each of them acked it.
	Tasks []string
	// Interval between the triggers of periodic checkpoints (0: 1 s).
	Interval time.Duration
	// MinPause is the least time between the end of a checkpoint and the
	// start of the next periodic one.
	MinPause time.Duration
	// Timeout after which an injected checkpoint that is not fully acked is
	// aborted (0: 10 min).
	Timeout time.Duration
	// Retained is how many complete checkpoints are kept (0: 3); older ones
	// are deleted. Savepoints are never deleted.
	Retained int
	// TolerableFailures is how many checkpoints in a row may fail; the next
	// failure fails the job. Unlimited (-1) never fails it. The zero value
	// tolerates no failure: start from DefaultConfig.
	TolerableFailures int
}

// DefaultConfig returns the default configuration for job and tasks.
func DefaultConfig(job string, tasks []string) Config {
	return Config{
		Job: job, Tasks: tasks, Interval: DefaultInterval, Timeout: DefaultTimeout,
		Retained: DefaultRetained, TolerableFailures: Unlimited,
	}
}

// Validate reports what is wrong with c, if anything.
func (c Config) Validate() error {
	if c.Job == "" {
		return fmt.Errorf("%w: empty job name", ErrConfig)
	}
	if strings.ContainsAny(c.Job, " \t\r\n*>") || strings.HasPrefix(c.Job, ".") || strings.HasSuffix(c.Job, ".") {
		return fmt.Errorf("%w: job name %q cannot be used in a subject", ErrConfig, c.Job)
	}
	seen := make(map[string]bool, len(c.Tasks))
	for _, t := range c.Tasks {
		if _, _, err := ParseTask(t); err != nil {
			return fmt.Errorf("%w: %w", ErrConfig, err)
		}
		if seen[t] {
			return fmt.Errorf("%w: task %q listed twice", ErrConfig, t)
		}
		seen[t] = true
	}
	if c.Interval < 0 || c.MinPause < 0 || c.Timeout < 0 || c.Retained < 0 {
		return fmt.Errorf("%w: negative interval, pause, timeout or retention", ErrConfig)
	}
	if c.TolerableFailures < Unlimited {
		return fmt.Errorf("%w: tolerable failures %d below -1", ErrConfig, c.TolerableFailures)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Retained == 0 {
		c.Retained = DefaultRetained
	}
	return c
}

// TaskName returns the task name of an operator instance, "<operator>/<index>".
func TaskName(operator string, index int) string {
	return operator + "/" + strconv.Itoa(index)
}

// ParseTask splits a task name "<operator>/<index>".
func ParseTask(task string) (operator string, index int, err error) {
	i := strings.LastIndexByte(task, '/')
	if i <= 0 {
		return "", 0, fmt.Errorf("task %q: want <operator>/<index>", task)
	}
	n, err := strconv.Atoi(task[i+1:])
	if err != nil || n < 0 || n > 1<<31-1 {
		return "", 0, fmt.Errorf("task %q: want <operator>/<index>", task)
	}
	return task[:i], n, nil
}

// Restored is what a coordinator continues from, read from the store.
type Restored struct {
	// Attempt is the highest checkpoint id ever attempted.
	Attempt uint64
	// Latest is the newest complete checkpoint or savepoint (0: none).
	Latest uint64
	// Retained are the ids of the complete checkpoints that are not
	// savepoints and still kept; Savepoints the ids of the savepoints.
	Retained   []uint64
	Savepoints []uint64
}

// Event is an input of Coordinator.Step.
type Event interface{ event() }

// Tick is the passing of time; it starts periodic checkpoints.
type Tick struct{ Now time.Time }

// Trigger asks for a checkpoint now. Token is the caller's, given back in
// the Reply that answers it.
type Trigger struct {
	Now       time.Time
	Savepoint bool
	Token     uint64
}

// Persisted answers PersistAttempt: the attempt id was written (Err nil).
type Persisted struct {
	Now time.Time
	ID  uint64
	Err error
}

// Handle describes a task's uploaded snapshot.
type Handle struct {
	Object                 string
	Size                   uint64
	Alignment, Sync, Async time.Duration
	// Finished and Paused say whether the task's input had ended, or the
	// task was a source that had stopped reading, when it took the
	// checkpoint.
	Finished, Paused bool
}

// Ack is a task's acknowledgement of checkpoint ID.
type Ack struct {
	Now    time.Time
	ID     uint64
	Task   string
	Handle Handle
}

// Decline is a task's refusal of checkpoint ID: it failed while taking it.
type Decline struct {
	Now    time.Time
	ID     uint64
	Task   string
	Reason string
}

// TimeoutFired is the timer asked for by ScheduleTimeout.
type TimeoutFired struct {
	Now time.Time
	ID  uint64
}

// Committed answers Commit: the metadata of checkpoint ID was written
// (Err nil) or not.
type Committed struct {
	Now time.Time
	ID  uint64
	Err error
}

// Stop asks for a final checkpoint (a savepoint if Savepoint), answered by
// Reply(Token), then Stopped. It starts once the checkpoint in flight, if
// any, has ended, and also answers the triggers queued then; triggers
// after Stop get ErrStopping.
type Stop struct {
	Now       time.Time
	Savepoint bool
	Token     uint64
}

func (Tick) event()         {}
func (Trigger) event()      {}
func (Persisted) event()    {}
func (Ack) event()          {}
func (Decline) event()      {}
func (TimeoutFired) event() {}
func (Committed) event()    {}
func (Stop) event()         {}

// Action is an output of Coordinator.Step, to be carried out in order.
type Action interface{ action() }

// PersistAttempt asks for ID to be written as the highest id ever
// attempted; answer with Persisted. Nothing is injected before.
type PersistAttempt struct{ ID uint64 }

// Inject asks for checkpoint ID to be started on every node.
type Inject struct {
	ID        uint64
	Savepoint bool
	Timestamp time.Time
}

// ScheduleTimeout asks for TimeoutFired{ID} at At.
type ScheduleTimeout struct {
	ID uint64
	At time.Time
}

// Commit asks for Meta to be written to the store; answer with Committed.
type Commit struct{ Meta *pb.CheckpointMeta }

// NotifyComplete tells every task that checkpoint ID is complete.
type NotifyComplete struct{ ID uint64 }

// Abort tells every task that checkpoint ID is abandoned.
type Abort struct {
	ID     uint64
	Reason string
}

// DeleteCheckpoint asks for the snapshot objects and the metadata of
// checkpoint ID to be deleted (retention, or what an abandoned checkpoint
// left behind). Deleting what does not exist is not an error.
type DeleteCheckpoint struct{ ID uint64 }

// Reply answers the Trigger or Stop with Token: Meta when its checkpoint
// completed, else Err.
type Reply struct {
	Token uint64
	Meta  *pb.CheckpointMeta
	Err   error
}

// FailJob says the job must fail: too many checkpoints failed in a row.
type FailJob struct{ Reason string }

// Rejected reports an event that makes no sense (an ack from a task the job
// does not have, for a checkpoint never triggered, ...). It changed nothing.
type Rejected struct{ Reason string }

// Stopped says the coordinator is done: after Stop, its final checkpoint
// completed or failed. Every later event is answered with ErrStopped.
type Stopped struct{}

func (PersistAttempt) action()   {}
func (Inject) action()           {}
func (ScheduleTimeout) action()  {}
func (Commit) action()           {}
func (NotifyComplete) action()   {}
func (Abort) action()            {}
func (DeleteCheckpoint) action() {}
func (Reply) action()            {}
func (FailJob) action()          {}
func (Rejected) action()         {}
func (Stopped) action()          {}

type phase int

const (
	idle       phase = iota
	persisting       // PersistAttempt sent, waiting for Persisted
	injected         // waiting for acks
	committing       // Commit sent, waiting for Committed
)

func (p phase) String() string {
	return [...]string{"idle", "persisting", "injected", "committing"}[p]
}

// pending is the checkpoint in flight.
type pending struct {
	id        uint64
	savepoint bool
	trigger   time.Time
	complete  time.Time
	phase     phase
	acks      map[string]Handle
	tokens    []uint64
	final     bool // the final checkpoint of Stop
	meta      *pb.CheckpointMeta
}

// Coordinator is the checkpoint coordinator of one job, as a state machine.
// It is not safe for concurrent use.
type Coordinator struct {
	cfg   Config
	tasks map[string]bool

	next       uint64   // id of the next checkpoint
	latest     uint64   // newest complete checkpoint
	retained   []uint64 // complete checkpoints kept, oldest first
	savepoints []uint64

	inflight *pending
	orphans  []uint64 // to delete at the first step

	// queued on-demand triggers, served by the next checkpoint
	queued          []uint64
	queuedSavepoint bool

	nextDue  time.Time // next periodic trigger; zero until the first Tick
	lastEnd  time.Time // end of the last checkpoint, for MinPause
	failures int       // consecutive failed checkpoints

	stopping      bool
	stopToken     uint64
	stopSavepoint bool
	stopped       bool
	failed        string
}

// New returns a coordinator continuing from restored: its first checkpoint
// id is above every id restored names. cfg should be valid (Validate); its
// zero durations and retention take the defaults.
func New(cfg Config, restored Restored) *Coordinator {
	cfg = cfg.withDefaults()
	c := &Coordinator{cfg: cfg, tasks: make(map[string]bool, len(cfg.Tasks))}
	for _, t := range cfg.Tasks {
		c.tasks[t] = true
	}
	top := max(restored.Attempt, restored.Latest)
	for _, id := range restored.Retained {
		top = max(top, id)
	}
	for _, id := range restored.Savepoints {
		top = max(top, id)
	}
	c.next = top + 1
	// Ids above the latest complete checkpoint were in flight when the
	// previous coordinator went away: what they uploaded is garbage.
	for id := top; id > restored.Latest && len(c.orphans) < maxOrphans; id-- {
		if !slices.Contains(restored.Retained, id) && !slices.Contains(restored.Savepoints, id) {
			c.orphans = append(c.orphans, id)
		}
	}
	slices.Reverse(c.orphans)
	c.latest = restored.Latest
	c.retained = slices.Sorted(slices.Values(restored.Retained))
	c.savepoints = slices.Sorted(slices.Values(restored.Savepoints))
	return c
}

// Status is a summary of a coordinator's state.
type Status struct {
	// InFlight is the checkpoint in flight (0: none), Phase its phase.
	InFlight uint64
	Phase    string
	// Acked is how many tasks acked InFlight.
	Acked int
	// Next is the id the next checkpoint will take.
	Next       uint64
	Latest     uint64
	Retained   []uint64
	Savepoints []uint64
	Queued     int
	Failures   int
	Stopping   bool
	Stopped    bool
	Failed     string
}

// Status returns a summary of c's state.
func (c *Coordinator) Status() Status {
	s := Status{
		Phase: idle.String(), Next: c.next, Latest: c.latest,
		Retained: slices.Clone(c.retained), Savepoints: slices.Clone(c.savepoints),
		Queued: len(c.queued), Failures: c.failures, Stopping: c.stopping,
		Stopped: c.stopped, Failed: c.failed,
	}
	if p := c.inflight; p != nil {
		s.InFlight, s.Phase, s.Acked = p.id, p.phase.String(), len(p.acks)
	}
	return s
}

// maxOrphans bounds how many ids above the latest complete checkpoint a new
// coordinator deletes (the newest ones).
const maxOrphans = 16

// Step applies ev and returns what must be done, in order. The first step
// of a restored coordinator starts with DeleteCheckpoint for the ids above
// the latest complete checkpoint (at most 16, the newest): they were in
// flight when the previous coordinator went away.
func (c *Coordinator) Step(ev Event) []Action {
	var out []Action
	for _, id := range c.orphans {
		out = append(out, DeleteCheckpoint{ID: id})
	}
	c.orphans = nil
	switch e := ev.(type) {
	case Tick:
		out = append(out, c.tick(e)...)
	case Trigger:
		out = append(out, c.trigger(e)...)
	case Persisted:
		out = append(out, c.persisted(e)...)
	case Ack:
		out = append(out, c.ack(e)...)
	case Decline:
		out = append(out, c.decline(e)...)
	case TimeoutFired:
		out = append(out, c.timeout(e)...)
	case Committed:
		out = append(out, c.committed(e)...)
	case Stop:
		out = append(out, c.stop(e)...)
	default:
		out = append(out, Rejected{Reason: fmt.Sprintf("unknown event %T", ev)})
	}
	return out
}

func (c *Coordinator) done() error {
	switch {
	case c.stopped:
		return ErrStopped
	case c.failed != "":
		return fmt.Errorf("%w: %s", ErrJobFailed, c.failed)
	case c.stopping:
		return ErrStopping
	}
	return nil
}

func (c *Coordinator) tick(e Tick) []Action {
	if c.done() != nil || c.inflight != nil {
		return nil
	}
	if c.nextDue.IsZero() {
		c.nextDue = e.Now.Add(c.cfg.Interval)
	}
	if e.Now.Before(c.nextDue) || e.Now.Before(c.lastEnd.Add(c.cfg.MinPause)) {
		return nil
	}
	return c.start(e.Now, false, nil, false)
}

func (c *Coordinator) trigger(e Trigger) []Action {
	if err := c.done(); err != nil {
		return []Action{Reply{Token: e.Token, Err: err}}
	}
	if c.inflight != nil {
		c.queued = append(c.queued, e.Token)
		c.queuedSavepoint = c.queuedSavepoint || e.Savepoint
		return nil
	}
	return c.start(e.Now, e.Savepoint, []uint64{e.Token}, false)
}

func (c *Coordinator) stop(e Stop) []Action {
	if err := c.done(); err != nil {
		if c.failed != "" && !c.stopped {
			// A failed job has nothing left to checkpoint: it stops here.
			c.stopped = true
			return []Action{Reply{Token: e.Token, Err: err}, Stopped{}}
		}
		return []Action{Reply{Token: e.Token, Err: err}}
	}
	c.stopping, c.stopToken, c.stopSavepoint = true, e.Token, e.Savepoint
	if c.inflight != nil {
		return nil // the final checkpoint starts when this one ends
	}
	return c.startFinal(e.Now)
}

// start begins checkpoint c.next.
func (c *Coordinator) start(now time.Time, savepoint bool, tokens []uint64, final bool) []Action {
	id := c.next
	c.next++
	c.inflight = &pending{
		id: id, savepoint: savepoint, trigger: now, phase: persisting,
		acks: make(map[string]Handle, len(c.tasks)), tokens: tokens, final: final,
	}
	if !final {
		c.nextDue = now.Add(c.cfg.Interval)
	}
	return []Action{PersistAttempt{ID: id}}
}

func (c *Coordinator) startFinal(now time.Time) []Action {
	tokens := append(c.queued, c.stopToken)
	savepoint := c.stopSavepoint || c.queuedSavepoint
	c.queued, c.queuedSavepoint = nil, false
	return c.start(now, savepoint, tokens, true)
}

func (c *Coordinator) persisted(e Persisted) []Action {
	p := c.inflight
	if p == nil || p.id != e.ID || p.phase != persisting {
		return []Action{Rejected{Reason: fmt.Sprintf("persisted %d: no such attempt in progress", e.ID)}}
	}
	if e.Err != nil {
		return c.fail(e.Now, fmt.Sprintf("checkpoint %d: write attempt: %v", e.ID, e.Err), false)
	}
	p.phase = injected
	out := []Action{
		Inject{ID: p.id, Savepoint: p.savepoint, Timestamp: p.trigger},
		ScheduleTimeout{ID: p.id, At: e.Now.Add(c.cfg.Timeout)},
	}
	if len(c.tasks) == 0 {
		out = append(out, c.allAcked(e.Now)...)
	}
	return out
}

// isComplete reports whether id is a complete checkpoint still kept.
func (c *Coordinator) isComplete(id uint64) bool {
	return slices.Contains(c.retained, id) || slices.Contains(c.savepoints, id)
}

func (c *Coordinator) ack(e Ack) []Action {
	if !c.tasks[e.Task] {
		return []Action{Rejected{Reason: fmt.Sprintf("ack of checkpoint %d from unknown task %q", e.ID, e.Task)}}
	}
	p := c.inflight
	if p != nil && p.id == e.ID {
		if p.phase != injected {
			if p.phase == persisting {
				return []Action{Rejected{Reason: fmt.Sprintf("ack of checkpoint %d from %s before it was injected", e.ID, e.Task)}}
			}
			return nil // committing: every task acked already, a duplicate
		}
		if _, dup := p.acks[e.Task]; dup {
			return nil
		}
		p.acks[e.Task] = e.Handle
		if len(p.acks) < len(c.tasks) {
			return nil
		}
		return c.allAcked(e.Now)
	}
	if e.ID >= c.next {
		return []Action{Rejected{Reason: fmt.Sprintf("ack of checkpoint %d from %s: never triggered", e.ID, e.Task)}}
	}
	if c.isComplete(e.ID) {
		return nil // a duplicate ack of a complete checkpoint
	}
	// An ack of a checkpoint that was aborted, or is already deleted: what
	// it uploaded must go.
	return []Action{DeleteCheckpoint{ID: e.ID}}
}

func (c *Coordinator) allAcked(now time.Time) []Action {
	p := c.inflight
	p.phase, p.complete = committing, now
	meta := &pb.CheckpointMeta{
		Job: c.cfg.Job, Id: p.id, Savepoint: p.savepoint,
		TriggerTimeUs: p.trigger.UnixMicro(), CompleteTimeUs: now.UnixMicro(),
		DurationUs: now.Sub(p.trigger).Microseconds(),
	}
	for task, h := range p.acks {
		op, idx, _ := ParseTask(task)
		meta.Size += h.Size
		meta.MaxAlignmentUs = max(meta.MaxAlignmentUs, h.Alignment.Microseconds())
		meta.Tasks = append(meta.Tasks, &pb.TaskSnapshot{
			Operator: op, Instance: int32(idx), Object: h.Object, Size: h.Size,
			AlignmentUs: h.Alignment.Microseconds(), SyncUs: h.Sync.Microseconds(),
			AsyncUs: h.Async.Microseconds(), Finished: h.Finished, Paused: h.Paused,
		})
	}
	slices.SortFunc(meta.Tasks, func(a, b *pb.TaskSnapshot) int {
		if c := strings.Compare(a.Operator, b.Operator); c != 0 {
			return c
		}
		return int(a.Instance) - int(b.Instance)
	})
	p.meta = meta
	return []Action{Commit{Meta: proto.Clone(meta).(*pb.CheckpointMeta)}}
}

func (c *Coordinator) decline(e Decline) []Action {
	if !c.tasks[e.Task] {
		return []Action{Rejected{Reason: fmt.Sprintf("decline of checkpoint %d from unknown task %q", e.ID, e.Task)}}
	}
	p := c.inflight
	if p == nil || p.id != e.ID || p.phase != injected {
		if e.ID >= c.next {
			return []Action{Rejected{Reason: fmt.Sprintf("decline of checkpoint %d from %s: never triggered", e.ID, e.Task)}}
		}
		return nil // a checkpoint already ended
	}
	return c.fail(e.Now, fmt.Sprintf("checkpoint %d declined by %s: %s", e.ID, e.Task, e.Reason), true)
}

func (c *Coordinator) timeout(e TimeoutFired) []Action {
	p := c.inflight
	// While committing, the metadata write decides: aborting then could
	// delete a checkpoint the store already calls complete.
	if p == nil || p.id != e.ID || p.phase != injected {
		return nil
	}
	return c.fail(e.Now, fmt.Sprintf("checkpoint %d timed out after %v (%d of %d tasks acked)",
		e.ID, c.cfg.Timeout, len(p.acks), len(c.tasks)), true)
}

func (c *Coordinator) committed(e Committed) []Action {
	p := c.inflight
	if p == nil || p.id != e.ID || p.phase != committing {
		return []Action{Rejected{Reason: fmt.Sprintf("committed %d: no such commit in progress", e.ID)}}
	}
	if e.Err != nil {
		return c.fail(e.Now, fmt.Sprintf("checkpoint %d: commit: %v", e.ID, e.Err), true)
	}
	meta := p.meta
	c.inflight = nil
	c.lastEnd = e.Now
	c.failures = 0
	c.latest = p.id
	out := []Action{NotifyComplete{ID: p.id}}
	for _, t := range p.tokens {
		out = append(out, Reply{Token: t, Meta: proto.Clone(meta).(*pb.CheckpointMeta)})
	}
	if p.savepoint {
		c.savepoints = append(c.savepoints, p.id)
	} else {
		c.retained = append(c.retained, p.id)
	}
	for len(c.retained) > c.cfg.Retained {
		out = append(out, DeleteCheckpoint{ID: c.retained[0]})
		c.retained = c.retained[1:]
	}
	if p.final {
		c.stopped = true
		return append(out, Stopped{})
	}
	return append(out, c.afterEnd(e.Now)...)
}

// fail ends the checkpoint in flight as failed: aborted (when it was
// injected), its leftovers deleted, its triggers answered.
func (c *Coordinator) fail(now time.Time, reason string, injectedAlready bool) []Action {
	p := c.inflight
	c.inflight = nil
	c.lastEnd = now
	var out []Action
	if injectedAlready {
		out = append(out, Abort{ID: p.id, Reason: reason}, DeleteCheckpoint{ID: p.id})
	}
	err := fmt.Errorf("%w: %s", ErrAborted, reason)
	for _, t := range p.tokens {
		out = append(out, Reply{Token: t, Err: err})
	}
	if p.final {
		c.stopped = true
		return append(out, Stopped{})
	}
	c.failures++
	if c.cfg.TolerableFailures != Unlimited && c.failures > c.cfg.TolerableFailures {
		c.failed = fmt.Sprintf("%d checkpoints failed in a row, last: %s", c.failures, reason)
		out = append(out, FailJob{Reason: c.failed})
		jobErr := fmt.Errorf("%w: %s", ErrJobFailed, c.failed)
		for _, t := range c.queued {
			out = append(out, Reply{Token: t, Err: jobErr})
		}
		c.queued, c.queuedSavepoint = nil, false
		if c.stopping {
			c.stopped = true
			out = append(out, Reply{Token: c.stopToken, Err: jobErr}, Stopped{})
		}
		return out
	}
	return append(out, c.afterEnd(now)...)
}

// afterEnd starts what waited for the checkpoint that just ended.
func (c *Coordinator) afterEnd(now time.Time) []Action {
	if c.stopping {
		return c.startFinal(now)
	}
	if len(c.queued) > 0 {
		tokens, sp := c.queued, c.queuedSavepoint
		c.queued, c.queuedSavepoint = nil, false
		return c.start(now, sp, tokens, false)
	}
	return nil
}
