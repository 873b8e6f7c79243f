package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"
	"github.com/nats-io/nats.go"

	"github.com/meshflow/meshflow/cluster/checkpoint"
	"github.com/meshflow/meshflow/internal/logging"
	"github.com/meshflow/meshflow/internal/recycle"
	"github.com/meshflow/meshflow/persistence"
	"github.com/meshflow/meshflow/persistence/snapshotstore"
)

// NodeConfig configures a [Node].
type NodeConfig struct {
	// ID names the node in placements. Required.
	ID string
	// NATS is the node's connection; it carries every cross-node channel.
	// Required. The node installs its own error handler on it (chaining the
	// one already set).
	NATS *nats.Conn
	// Logger receives the node's logs, Proto.Actor's included. Default:
	// discard.
	Logger *slog.Logger
	// ActorLogs passes Proto.Actor's own informational logs through
	// (otherwise only its warnings and errors).
	ActorLogs bool
	// Allocator for the batches built by the runtime and operators.
	// Default: the process's recycling allocator of Go memory (package
	// recycle), shared by the nodes, so the buffers of the batches a sink
	// releases are reused for the next ones instead of being allocated
	// and zeroed afresh.
	Allocator memory.Allocator
	// State is the node's state store; each instance gets a namespace of it.
	// Optional: without it instances get an in-memory store.
	State persistence.Store
	// Window is the number of envelopes a sender may have in flight on one
	// channel before the receiver returns credit. Default 8.
	Window int
	// MaxPayload caps the size of a frame on a NATS channel; larger batches
	// are split. Default: the connection's max payload.
	MaxPayload int
	// Restart is the restart policy of operator instances.
	Restart RestartPolicy
	// DrainTimeout bounds the graceful drain when a job's context is
	// cancelled; after it the job is stopped hard. Default 30 s.
	DrainTimeout time.Duration
	// GrantInterval is how often an idle receiver repeats its credit grant on
	// a NATS channel (lost grants are recovered this way). Default 200 ms.
	GrantInterval time.Duration
}

// Node runs the instances placed on it of any number of jobs.
type Node struct {
	cfg    NodeConfig
	log    *slog.Logger
	system *actor.ActorSystem
	sys    *nodeSystem
	// stuck is set when a job's actors did not stop in time: the system is
	// then not reused.
	stuck atomic.Bool

	mu    sync.Mutex
	parts map[string]*jobPart // by job name
	subs  map[*nats.Subscription]*jobPart

	deadLetters *eventstream.Subscription

	// The checkpoint stores, opened by the first job with checkpoints.
	ckMu    sync.Mutex
	ckMeta  *checkpoint.Store
	ckSnaps *snapshotstore.Store
}

// defaultAllocator is the allocator of the nodes given none: one for the
// process, so its pools stay warm from one job to the next.
var defaultAllocator = recycle.New()

// NewNode returns a node. It starts no goroutine of its own.
func NewNode(cfg NodeConfig) (*Node, error) {
	if cfg.ID == "" {
		return nil, errors.New("actors: node ID is required")
	}
	if cfg.NATS == nil {
		return nil, errors.New("actors: node NATS connection is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = logging.Discard()
	}
	if cfg.Allocator == nil {
		cfg.Allocator = defaultAllocator
	}
	if cfg.Window <= 0 {
		cfg.Window = 8
	}
	if cfg.MaxPayload <= 0 {
		cfg.MaxPayload = int(cfg.NATS.MaxPayload())
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.GrantInterval <= 0 {
		cfg.GrantInterval = 200 * time.Millisecond
	}
	cfg.Restart = cfg.Restart.withDefaults()
	log := cfg.Logger.With("node", cfg.ID)
	n := &Node{
		cfg:   cfg,
		log:   log,
		parts: map[string]*jobPart{},
		subs:  map[*nats.Subscription]*jobPart{},
	}
	n.sys = acquireSystem(log, cfg.ActorLogs)
	n.system = n.sys.sys
	// Messages left in the mailbox of a stopped instance, or sent to it
	// after it stopped, end here: release the batches they carry.
	n.deadLetters = n.system.EventStream.Subscribe(func(evt any) {
		dl, ok := evt.(*actor.DeadLetterEvent)
		if !ok {
			return
		}
		switch m := dl.Message.(type) {
		case *dataMsg:
			if m.part.untrack(m) {
				releaseMsg(m)
			}
		case *readResult:
			if m.part.untrack(m) {
				releaseMsg(m)
			}
		}
	})
	prev := cfg.NATS.ErrorHandler()
	cfg.NATS.SetErrorHandler(func(c *nats.Conn, sub *nats.Subscription, err error) {
		if sub != nil {
			n.mu.Lock()
			p := n.subs[sub]
			n.mu.Unlock()
			if p != nil {
				if errors.Is(err, nats.ErrSlowConsumer) {
					dropped, _ := sub.Dropped()
					err = fmt.Errorf("%w: subject %s dropped %d messages: %v", ErrSlowConsumer, sub.Subject, dropped, err)
				}
				p.fail(fmt.Errorf("node %s: %w", n.cfg.ID, err))
				return
			}
		}
		if prev != nil {
			prev(c, sub, err)
		}
	})
	return n, nil
}

// ID is the node's id.
func (n *Node) ID() string { return n.cfg.ID }

// Run runs this node's part of job g under placement p until every local
// instance has finished (nil), the job fails (its error), or ctx is done.
// When ctx is done the local sources stop reading, everything in flight is
// drained and Run returns ctx's error; after the drain timeout the job is
// stopped hard.
func (n *Node) Run(ctx context.Context, g *JobGraph, p Placement) error {
	if err := g.Validate(); err != nil {
		return err
	}
	for _, v := range g.Vertices {
		for i := 0; i < v.Parallelism; i++ {
			if _, ok := p[InstanceID{v.Name, i}]; !ok {
				return fmt.Errorf("%w: %s", ErrNotPlaced, InstanceID{v.Name, i})
			}
		}
	}
	if g.Checkpoint != nil {
		if len(g.Vertices) == 0 {
			return fmt.Errorf("%w: no operators", ErrInvalidGraph)
		}
		return n.runRecovering(ctx, g, p)
	}
	return n.runPart(ctx, newJobPart(n, g, p))
}

// runPart runs one job part, registered as the job's part on the node.
func (n *Node) runPart(ctx context.Context, part *jobPart) error {
	key := part.g.SubjectName()
	n.mu.Lock()
	if n.parts[key] != nil {
		n.mu.Unlock()
		return fmt.Errorf("actors: job %q already runs on node %s", key, n.cfg.ID)
	}
	n.parts[key] = part
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		delete(n.parts, key)
		n.mu.Unlock()
	}()
	return part.run(ctx)
}

// Stats returns the counters of the local instances of job (its subject
// name: "<domain>.<job>" for a domain's job), or nil when the job does not
// run here.
func (n *Node) Stats(job string) []InstanceStats {
	n.mu.Lock()
	p := n.parts[job]
	n.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.stats()
}

// Close releases the node's actor system. Jobs still running are not
// stopped: cancel their contexts first.
func (n *Node) Close() {
	n.system.EventStream.Unsubscribe(n.deadLetters)
	n.mu.Lock()
	idle := len(n.parts) == 0
	n.mu.Unlock()
	releaseSystem(n.sys, idle && !n.stuck.Load())
}

func (n *Node) trackSub(s *nats.Subscription, p *jobPart) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p == nil {
		delete(n.subs, s)
	} else {
		n.subs[s] = p
	}
}
