package actors

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/meshflow/meshflow/cluster/checkpoint"
	"github.com/meshflow/meshflow/messages/pb"
	"github.com/meshflow/meshflow/persistence"
	"github.com/meshflow/meshflow/persistence/snapshotstore"
)

// pauseSourceMsg stops a source reading without ending its stream (the
// job stops with a final checkpoint).
type pauseSourceMsg struct{}

// jobCheckpoints is a job part's share of the job's checkpoints: restoring
// the local instances, passing the coordinator's commands to them, uploading
// their snapshots and acknowledging them, and, on the node that runs it,
// the coordinator.
type jobCheckpoints struct {
	p   *jobPart
	cfg CheckpointConfig

	uploadCtx    context.Context
	cancelUpload context.CancelFunc
	uploads      sync.WaitGroup

	driver *checkpoint.Driver // on the coordinating node only

	mu sync.Mutex
	// completedBy is the highest checkpoint each local instance processed
	// the completion of.
	completedBy map[InstanceID]uint64
	// finishedBy marks the local instances whose acks said they finished.
	paused   map[InstanceID]bool
	injected uint64 // highest INJECT seen
	// finished is the checkpoint the coordinator declared to cover
	// everything the job produces (FINISHED), 0 until then.
	finished uint64
	changed  chan struct{}
}

func newJobCheckpoints(p *jobPart, cfg CheckpointConfig) *jobCheckpoints {
	ctx, cancel := context.WithCancel(context.Background())
	return &jobCheckpoints{
		p: p, cfg: cfg,
		uploadCtx: ctx, cancelUpload: cancel,
		completedBy: map[InstanceID]uint64{},
		paused:      map[InstanceID]bool{},
		changed:     make(chan struct{}),
	}
}

// notify wakes the waiters on the progress; callers hold c.mu.
func (c *jobCheckpoints) notify() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// waitFor blocks until cond holds (checked under c.mu) or ctx is done.
func (c *jobCheckpoints) waitFor(ctx context.Context, cond func() bool) error {
	for {
		c.mu.Lock()
		ok, ch := cond(), c.changed
		c.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// allCompleted reports whether every local instance processed the
// completion of checkpoint id or a later one; callers hold c.mu.
func (c *jobCheckpoints) allCompleted(id uint64) bool {
	for _, s := range c.p.shells {
		if c.completedBy[s.id] < id {
			return false
		}
	}
	return true
}

// restore replaces the state of every local instance with its state in
// the checkpoint the run starts from (the one configured for the first
// run, else the latest complete one), or clears it when there is none.
func (c *jobCheckpoints) restore(ctx context.Context, first bool) error {
	p := c.p
	n := p.node
	store, snaps, err := n.checkpointStores(ctx)
	if err != nil {
		return err
	}
	job := p.g.SubjectName()
	var meta *pb.CheckpointMeta
	if first && c.cfg.Restore != 0 {
		meta, err = store.Get(ctx, job, c.cfg.Restore)
		if err != nil {
			return fmt.Errorf("%w: restore job %q from checkpoint %d: %w", errFatal, job, c.cfg.Restore, err)
		}
	} else {
		meta, err = store.Latest(ctx, job)
		if err != nil {
			return fmt.Errorf("restore job %q: %w", job, err)
		}
	}
	if meta == nil {
		p.restored = 0
		for _, s := range p.shells {
			if err := s.restoreState(ctx, nil); err != nil {
				return fmt.Errorf("clear the state of %s: %w", s.id, err)
			}
		}
		return nil
	}
	tasks := map[InstanceID]*pb.TaskSnapshot{}
	for _, t := range meta.Tasks {
		tasks[InstanceID{t.Operator, int(t.Instance)}] = t
	}
	// The checkpoint must hold exactly the job's instances: a change of
	// operators or parallelism cannot be restored (yet).
	want := 0
	for _, v := range p.g.Vertices {
		for i := 0; i < v.Parallelism; i++ {
			if tasks[InstanceID{v.Name, i}] == nil {
				return fmt.Errorf("%w: checkpoint %d of job %q has no state for %s: the job's operators or parallelism changed", errFatal, meta.Id, job, InstanceID{v.Name, i})
			}
			want++
		}
	}
	if len(tasks) != want {
		return fmt.Errorf("%w: checkpoint %d of job %q has state for %d instances, the job has %d: the job's operators or parallelism changed", errFatal, meta.Id, job, len(tasks), want)
	}
	for _, s := range p.shells {
		t := tasks[s.id]
		r, err := snaps.Read(ctx, t.Object)
		if err == nil {
			err = s.restoreState(ctx, r.Entries)
		}
		if err != nil {
			return fmt.Errorf("restore %s from checkpoint %d: %w", s.id, meta.Id, err)
		}
		s.ck.restoreMeta = bytes.Clone(r.Meta())
		s.ck.taken = meta.Id
		s.ck.completed = meta.Id
	}
	p.restored = meta.Id
	p.log.Info("job restored", "checkpoint", meta.Id, "savepoint", meta.Savepoint)
	return nil
}

// command handles a coordinator command (a NATS callback).
func (c *jobCheckpoints) command(m *nats.Msg) {
	var cmd pb.CheckpointCommand
	if err := proto.Unmarshal(m.Data, &cmd); err != nil {
		c.p.fail(fmt.Errorf("checkpoint command on %s: %w", m.Subject, err))
		return
	}
	var msg any
	switch cmd.Kind {
	case pb.CheckpointCommand_KIND_INJECT:
		c.mu.Lock()
		c.injected = max(c.injected, cmd.Id)
		c.notify()
		c.mu.Unlock()
		msg = &triggerMsg{id: cmd.Id, ts: cmd.TimestampUs}
	case pb.CheckpointCommand_KIND_COMPLETE:
		msg = &completeMsg{id: cmd.Id}
	case pb.CheckpointCommand_KIND_ABORT:
		msg = &abortMsg{id: cmd.Id}
	case pb.CheckpointCommand_KIND_FINISHED:
		c.mu.Lock()
		c.finished = max(c.finished, cmd.Id)
		c.notify()
		c.mu.Unlock()
		return
	default:
		return
	}
	for _, s := range c.p.shells {
		if pid := c.p.pid(s.id); pid != nil {
			c.p.node.system.Root.Send(pid, msg)
		}
	}
}

// upload stores an instance's snapshot in the background and acknowledges
// it to the coordinator.
func (c *jobCheckpoints) upload(id InstanceID, ckpt uint64, meta []byte, snap persistence.Snapshot, alignment, sync time.Duration, finished, paused bool) {
	p := c.p
	c.uploads.Add(1)
	go func() {
		defer c.uploads.Done()
		defer snap.Close()
		start := time.Now()
		ack := &pb.CheckpointAck{
			Job: p.g.SubjectName(), Id: ckpt, Operator: id.Operator, Instance: int32(id.Index),
			AlignmentUs: alignment.Microseconds(), SyncUs: sync.Microseconds(), Finished: finished, Paused: paused,
		}
		_, snaps, err := p.node.checkpointStores(c.uploadCtx)
		if err == nil {
			var h snapshotstore.Handle
			h, err = snaps.Put(c.uploadCtx, p.g.SubjectName(), ckpt, id.String(), meta, snap)
			ack.Object, ack.Size = h.Object, uint64(h.Size)
		}
		ack.AsyncUs = time.Since(start).Microseconds()
		if err != nil {
			if c.uploadCtx.Err() != nil {
				return // the job part is going away
			}
			ack.Error = err.Error()
			p.log.Warn("checkpoint snapshot failed", "checkpoint", ckpt, "operator", id.Operator, "instance", id.Index, "error", err)
		}
		c.sendAck(ack)
	}()
}

// decline tells the coordinator an instance cannot take checkpoint id.
func (c *jobCheckpoints) decline(id uint64, task InstanceID, err error) {
	c.sendAck(&pb.CheckpointAck{Job: c.p.g.SubjectName(), Id: id, Operator: task.Operator, Instance: int32(task.Index), Error: err.Error()})
}

func (c *jobCheckpoints) sendAck(ack *pb.CheckpointAck) {
	b, err := proto.Marshal(ack)
	if err == nil {
		err = c.p.node.cfg.NATS.Publish(checkpoint.AckSubject(c.p.g.SubjectName()), b)
	}
	if err != nil {
		c.p.log.Warn("cannot acknowledge checkpoint", "checkpoint", ack.Id, "error", err)
	}
}

func (c *jobCheckpoints) instanceCompleted(id InstanceID, ckpt uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ckpt > c.completedBy[id] {
		c.completedBy[id] = ckpt
		c.notify()
	}
}

func (c *jobCheckpoints) sourcePaused(id InstanceID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.paused[id] = true
	c.notify()
}

// stop ends the checkpoint work of the part: no upload outlives it.
func (c *jobCheckpoints) stop() {
	c.cancelUpload()
	c.uploads.Wait()
}

// errStopped is the error of a final checkpoint that could not complete.
var errStopped = errors.New("actors: the final checkpoint did not complete")
