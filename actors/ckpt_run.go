package actors

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/meshflow/meshflow/cluster/checkpoint"
	"github.com/meshflow/meshflow/messages/pb"
	"github.com/meshflow/meshflow/persistence"
	"github.com/meshflow/meshflow/persistence/snapshotstore"
)

// task is the instance's name in checkpoints: <operator>/<index>.
func (id InstanceID) task() string { return fmt.Sprintf("%s/%d", id.Operator, id.Index) }

// coordinatorNode is the node that runs the job's checkpoint coordinator:
// the one running the first instance of the first operator.
func coordinatorNode(g *JobGraph, p Placement) string {
	return p[InstanceID{g.Vertices[0].Name, 0}]
}

// checkpointStores opens (once) the node's checkpoint metadata store and
// snapshot store.
func (n *Node) checkpointStores(ctx context.Context) (*checkpoint.Store, *snapshotstore.Store, error) {
	n.ckMu.Lock()
	defer n.ckMu.Unlock()
	if n.ckMeta != nil {
		return n.ckMeta, n.ckSnaps, nil
	}
	js, err := jetstream.New(n.cfg.NATS)
	if err != nil {
		return nil, nil, fmt.Errorf("actors: checkpoints: %w", err)
	}
	meta, err := checkpoint.OpenStore(ctx, js)
	if err != nil {
		return nil, nil, fmt.Errorf("actors: checkpoints: %w", err)
	}
	snaps, err := snapshotstore.Open(ctx, js, "")
	if err != nil {
		return nil, nil, fmt.Errorf("actors: checkpoints: %w", err)
	}
	n.ckMeta, n.ckSnaps = meta, snaps
	return meta, snaps, nil
}

// runCheckpointed waits for the end of a job part with checkpoints: when
// every local instance has finished, a last checkpoint covers their
// output; when ctx is done, the sources stop reading and a final
// checkpoint is taken before the part stops.
func (p *jobPart) runCheckpointed(ctx context.Context) error {
	c := p.ck
	var driver *checkpoint.Driver
	if coordinatorNode(p.g, p.placement) == p.node.cfg.ID {
		// A stop requested while the coordinator starts still takes the
		// final checkpoint: the start does not end with ctx.
		d, err := p.startCoordinator(context.WithoutCancel(ctx))
		if err != nil {
			return err
		}
		driver = d
		defer d.Close()
	}
	var driverFailed <-chan error
	if driver != nil {
		driverFailed = driver.Failed()
	}
	select {
	case <-p.done:
		// Every local instance has finished: one more checkpoint covers
		// what they produced last.
		wctx, cancel := p.untilFailed(ctx, p.node.cfg.DrainTimeout)
		defer cancel()
		if err := p.finalCheckpoint(wctx, driver); err != nil {
			select {
			case <-p.failed:
				return p.failure()
			default:
			}
			return fmt.Errorf("actors: job %q: last checkpoint: %w", p.g.Name, err)
		}
		p.endAfterCheckpoint()
		p.log.Info("job finished")
		return nil
	case <-p.failed:
		return p.failure()
	case err := <-driverFailed:
		return fmt.Errorf("actors: job %q: %w", p.g.Name, err)
	case <-ctx.Done():
	}
	p.log.Info("stopping job with a final checkpoint")
	for _, s := range p.shells {
		if s.v.NewSource != nil {
			p.node.system.Root.Send(p.pid(s.id), &pauseSourceMsg{})
		}
	}
	wctx, cancel := p.untilFailed(context.WithoutCancel(ctx), p.node.cfg.DrainTimeout)
	defer cancel()
	err := c.waitFor(wctx, func() bool {
		for _, s := range p.shells {
			if s.v.NewSource != nil && !c.paused[s.id] {
				return false
			}
		}
		return true
	})
	if err == nil {
		err = p.finalCheckpoint(wctx, driver)
	}
	if err != nil {
		select {
		case <-p.failed:
			return p.failure()
		default:
		}
		return fmt.Errorf("actors: job %q: %w: %w (%w)", p.g.Name, errStopped, err, ctx.Err())
	}
	p.endAfterCheckpoint()
	p.log.Info("job stopped after its final checkpoint")
	return ctx.Err()
}

// untilFailed returns a context done after d or as soon as the part
// fails: a final checkpoint cannot complete then, so there is nothing to
// wait for. stop releases it.
func (p *jobPart) untilFailed(ctx context.Context, d time.Duration) (_ context.Context, stop func()) {
	ctx, cancel := context.WithTimeout(ctx, d)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-p.failed:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() { cancel(); wg.Wait() }
}

// finalCheckpoint ends the part once a checkpoint covers everything the
// job produces: every source, on every node, had finished or stopped
// reading when it took it. The coordinating node triggers checkpoints until
// one does and announces it (FINISHED); every node, this one included,
// waits until its own instances processed that checkpoint's completion
// (its sinks published what it covers, its sources acknowledged).
func (p *jobPart) finalCheckpoint(ctx context.Context, driver *checkpoint.Driver) error {
	c := p.ck
	if driver != nil {
		for {
			meta, err := driver.Trigger(ctx, false)
			if err != nil {
				return err
			}
			if p.jobFinishedOrPaused(meta) {
				b, err := proto.Marshal(&pb.CheckpointCommand{Kind: pb.CheckpointCommand_KIND_FINISHED, Id: meta.Id})
				if err == nil {
					err = p.node.cfg.NATS.Publish(checkpoint.CommandSubject(p.g.SubjectName()), b)
				}
				if err != nil {
					return fmt.Errorf("announce the last checkpoint: %w", err)
				}
				break
			}
			// Sources elsewhere still run: try again an interval later.
			t := time.NewTimer(c.cfg.Interval)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		}
	}
	return c.waitFor(ctx, func() bool { return c.finished != 0 && c.allCompleted(c.finished) })
}

// jobFinishedOrPaused reports whether checkpoint meta covers the whole
// job's output: every source had finished or stopped reading when it took
// the checkpoint, so its barrier came after all their output.
func (p *jobPart) jobFinishedOrPaused(meta *pb.CheckpointMeta) bool {
	for _, t := range meta.Tasks {
		v := p.g.Vertex(t.Operator)
		if v != nil && v.NewSource != nil && !t.Finished && !t.Paused {
			return false
		}
	}
	return true
}

func (p *jobPart) startCoordinator(ctx context.Context) (*checkpoint.Driver, error) {
	store, snaps, err := p.node.checkpointStores(ctx)
	if err != nil {
		return nil, err
	}
	job := p.g.SubjectName()
	restored, err := store.Restored(ctx, job)
	if err != nil {
		return nil, fmt.Errorf("actors: job %q: coordinator: %w", p.g.Name, err)
	}
	var tasks []string
	for _, v := range p.g.Vertices {
		for i := 0; i < v.Parallelism; i++ {
			tasks = append(tasks, InstanceID{v.Name, i}.task())
		}
	}
	cfg := p.ck.cfg
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	d, err := checkpoint.StartDriver(sctx, checkpoint.DriverConfig{
		NATS:    p.node.cfg.NATS,
		System:  p.node.system,
		Store:   store,
		Deleter: snaps,
		Logger:  p.log,
		Config: checkpoint.Config{
			Job:               job,
			Tasks:             tasks,
			Interval:          cfg.Interval,
			MinPause:          cfg.MinPause,
			Timeout:           cfg.Timeout,
			Retained:          cfg.Retain,
			TolerableFailures: cfg.TolerableFailures,
		},
		Restored: restored,
	})
	if err != nil {
		return nil, fmt.Errorf("actors: job %q: coordinator: %w", p.g.Name, err)
	}
	return d, nil
}

// Forwarders from instances to the part's checkpoint work.

func (p *jobPart) upload(id InstanceID, ckpt uint64, meta []byte, snap persistence.Snapshot, alignment, sync time.Duration, finished, paused bool) {
	p.ck.upload(id, ckpt, meta, snap, alignment, sync, finished, paused)
}

func (p *jobPart) decline(ckpt uint64, id InstanceID, err error) {
	p.ck.decline(ckpt, id, err)
}

func (p *jobPart) instanceCompleted(id InstanceID, ckpt uint64) {
	p.ck.instanceCompleted(id, ckpt)
}

func (p *jobPart) sourcePaused(id InstanceID) { p.ck.sourcePaused(id) }

// setJobStatus records the job's state in the checkpoint store, where any
// node or client reads it whenever it looks (a failure is not a message
// that a late subscriber misses). A failure to record it is logged: the
// job's own outcome does not depend on it.
func (n *Node) setJobStatus(g *JobGraph, state pb.JobState, err error, restored uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	store, _, serr := n.checkpointStores(ctx)
	if serr == nil {
		st := &pb.JobStatus{State: state, Node: n.cfg.ID, TimeUs: time.Now().UnixMicro(), RestoredFrom: restored}
		if err != nil {
			st.Error = err.Error()
		}
		serr = store.SetStatus(ctx, g.SubjectName(), st)
	}
	if serr != nil {
		n.log.Warn("cannot record the job's status", "job", g.SubjectName(), "state", state, "error", serr)
	}
}

// runRecovering runs a job with checkpoints on node n, recovering it from
// its last complete checkpoint after every failure its recovery policy
// allows.
func (n *Node) runRecovering(ctx context.Context, g *JobGraph, pl Placement) error {
	cfg := g.Checkpoint.withDefaults()
	pol := cfg.Recovery
	var recent []time.Time
	coordinating := coordinatorNode(g, pl) == n.cfg.ID
	for first := true; ; first = false {
		part := newJobPart(n, g, pl)
		part.checkpointing = true
		part.first = first
		part.ck = newJobCheckpoints(part, cfg)
		part.onStarted = func(restored uint64) {
			if coordinating {
				n.setJobStatus(g, pb.JobState_JOB_STATE_RUNNING, nil, restored)
			}
		}
		err := n.runPart(ctx, part)
		switch {
		case err == nil || (ctx.Err() != nil && errors.Is(err, ctx.Err())):
			if coordinating {
				n.setJobStatus(g, pb.JobState_JOB_STATE_STOPPED, nil, part.restored)
			}
			return err
		case ctx.Err() != nil || errors.Is(err, errFatal):
			n.setJobStatus(g, pb.JobState_JOB_STATE_FAILED, err, part.restored)
			return err
		}
		now := time.Now()
		kept := recent[:0]
		for _, t := range recent {
			if now.Sub(t) < pol.Window {
				kept = append(kept, t)
			}
		}
		recent = kept
		if pol.MaxRecoveries >= 0 && len(recent) >= pol.MaxRecoveries {
			err = fmt.Errorf("actors: job %q: gave up after %d recoveries within %v: %w", g.Name, len(recent), pol.Window, err)
			n.setJobStatus(g, pb.JobState_JOB_STATE_FAILED, err, part.restored)
			return err
		}
		n.setJobStatus(g, pb.JobState_JOB_STATE_RESTARTING, err, part.restored)
		recent = append(recent, now)
		delay := pol.InitialBackoff
		for i := 1; i < len(recent) && delay < pol.MaxBackoff; i++ {
			delay *= 2
		}
		delay = min(delay, pol.MaxBackoff)
		n.log.Warn("job failed; recovering from its last checkpoint", "job", g.SubjectName(), "error", err, "recovery", len(recent), "in", delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		}
	}
}
