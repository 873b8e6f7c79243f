package meshflow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/cluster"
	"github.com/meshflow/meshflow/internal/logging"
	"github.com/meshflow/meshflow/internal/natsembed"
	"github.com/meshflow/meshflow/persistence"
	"github.com/meshflow/meshflow/persistence/badgerstore"
)

// RunOption configures [Run].
type RunOption func(*runConfig)

type runConfig struct {
	nc        *nats.Conn
	logger    *slog.Logger
	dataDir   string
	mem       memory.Allocator
	restart   actors.RestartPolicy
	state     persistence.Store
	actorLogs bool
	window    int

	domainConnect DomainConnect
	retention     retentionDefaults

	checkpoints *actors.CheckpointConfig // nil: off
	restore     map[string]uint64        // by job (subject name)
}

// WithNATS runs the pipeline over an existing connection (to an embedded
// server or a NATS cluster) instead of starting an embedded server.
func WithNATS(nc *nats.Conn) RunOption { return func(c *runConfig) { c.nc = nc } }

// WithLogger sends the engine's logs (NATS, Badger and actor logs
// included) to l. Default: discard.
func WithLogger(l *slog.Logger) RunOption { return func(c *runConfig) { c.logger = l } }

// WithDataDir sets where the embedded NATS server and the state store keep
// their data (default ./.meshflow). Without WithNATS, Run starts an
// embedded server there.
func WithDataDir(dir string) RunOption { return func(c *runConfig) { c.dataDir = dir } }

// WithAllocator sets the Arrow allocator of the engine's batches.
func WithAllocator(mem memory.Allocator) RunOption { return func(c *runConfig) { c.mem = mem } }

// WithRestartPolicy sets how failing operator instances are restarted.
func WithRestartPolicy(p actors.RestartPolicy) RunOption {
	return func(c *runConfig) { c.restart = p }
}

// WithState gives operators namespaces of store instead of the default
// (Badger under the data directory with an embedded server, memory
// otherwise).
func WithState(store persistence.Store) RunOption { return func(c *runConfig) { c.state = store } }

// WithActorLogs passes the actor system's informational logs through.
func WithActorLogs() RunOption { return func(c *runConfig) { c.actorLogs = true } }

// WithWindow sets how many envelopes may be in flight on one channel
// between two operator instances (default 8): the engine's backpressure.
func WithWindow(n int) RunOption { return func(c *runConfig) { c.window = n } }

// RestartPolicy says how failing operator instances are restarted.
type RestartPolicy = actors.RestartPolicy

// CheckpointConfig configures a job's checkpoints: interval, timeout,
// retention, the checkpoint or savepoint to start from and the recovery
// policy. See docs/checkpoints.md.
type CheckpointConfig = actors.CheckpointConfig

// RecoveryPolicy says how often a job restarts from its last checkpoint
// after a failure before it fails.
type RecoveryPolicy = actors.RecoveryPolicy

// WithCheckpoints sets how jobs take checkpoints. Checkpoints are on by
// default, every second, with the defaults of [CheckpointConfig].
func WithCheckpoints(c CheckpointConfig) RunOption {
	return func(rc *runConfig) { rc.checkpoints = &c }
}

// WithRestore starts job from checkpoint or savepoint id instead of its
// latest checkpoint. job is the pipeline's name, or "<domain>.pipeline" for
// a domain's job in a mesh (as `meshflow checkpoints list` shows it).
func WithRestore(job string, id uint64) RunOption {
	return func(rc *runConfig) {
		if rc.restore == nil {
			rc.restore = map[string]uint64{}
		}
		rc.restore[job] = id
	}
}

// WithoutCheckpoints turns checkpoints off: sources acknowledge their input
// once the job has taken it, sinks publish at once, and a crash may lose
// or repeat what was in flight (see docs/delivery.md).
func WithoutCheckpoints() RunOption { return func(rc *runConfig) { rc.checkpoints = nil } }

type runEnv struct {
	nc *nats.Conn
}

// Run validates p and runs it on one node until its sources end and
// everything is delivered (nil), an operator keeps failing (an error naming
// it), or ctx is done: then the sources stop, in-flight data drains and Run
// returns ctx's error.
func Run(ctx context.Context, p *Pipeline, opts ...RunOption) (err error) {
	cfg := newRunConfig(opts)
	if err := p.Validate(); err != nil {
		return fmt.Errorf("meshflow: pipeline %q: %w", p.name, err)
	}
	closeEnv, err := cfg.open(ctx, "meshflow-"+p.name)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := closeEnv(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	return runOn(ctx, p, cfg)
}

func newRunConfig(opts []RunOption) runConfig {
	cfg := runConfig{dataDir: ".meshflow", checkpoints: &actors.CheckpointConfig{}}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.logger == nil {
		cfg.logger = logging.Discard()
	}
	return cfg
}

// open starts the embedded NATS server and the Badger store when no
// connection was given, and returns what closes them.
func (cfg *runConfig) open(ctx context.Context, connName string) (closeEnv func() error, err error) {
	var closers []func() error
	closeEnv = func() error {
		var errs []error
		for i := len(closers) - 1; i >= 0; i-- {
			errs = append(errs, closers[i]())
		}
		return errors.Join(errs...)
	}
	if cfg.nc != nil {
		return closeEnv, nil
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, closeEnv())
		}
	}()
	srv, err := natsembed.Start(ctx, natsembed.Config{
		Name:       "meshflow",
		StoreDir:   filepath.Join(cfg.dataDir, "nats"),
		DontListen: true,
		Logger:     cfg.logger,
	})
	if err != nil {
		return nil, fmt.Errorf("meshflow: %w", err)
	}
	closers = append(closers, func() error { return srv.Shutdown(context.WithoutCancel(ctx)) })
	nc, err := srv.Connect(nats.Name(connName))
	if err != nil {
		return nil, fmt.Errorf("meshflow: %w", err)
	}
	closers = append(closers, func() error { nc.Close(); return nil })
	cfg.nc = nc
	if cfg.state == nil {
		store, err := badgerstore.Open(ctx, badgerstore.Options{Dir: filepath.Join(cfg.dataDir, "state"), Logger: cfg.logger})
		if err != nil {
			return nil, fmt.Errorf("meshflow: %w", err)
		}
		closers = append(closers, store.Close)
		cfg.state = store
	}
	return closeEnv, nil
}

// checkpointConfig is a copy of the checkpoint configuration for one job.
func (cfg *runConfig) checkpointConfig(job string) *actors.CheckpointConfig {
	if cfg.checkpoints == nil {
		return nil
	}
	c := *cfg.checkpoints
	if id, ok := cfg.restore[job]; ok {
		c.Restore = id
	}
	return &c
}

func (cfg *runConfig) newNode() (*actors.Node, error) {
	node, err := actors.NewNode(actors.NodeConfig{
		ID:        "local",
		NATS:      cfg.nc,
		Logger:    cfg.logger,
		ActorLogs: cfg.actorLogs,
		Allocator: cfg.mem,
		State:     cfg.state,
		Restart:   cfg.restart,
		Window:    cfg.window,
	})
	if err != nil {
		return nil, fmt.Errorf("meshflow: %w", err)
	}
	return node, nil
}

func runOn(ctx context.Context, p *Pipeline, cfg runConfig) error {
	node, err := cfg.newNode()
	if err != nil {
		return err
	}
	defer node.Close()
	g, err := p.graph(&runEnv{nc: cfg.nc})
	if err != nil {
		return fmt.Errorf("meshflow: %w", err)
	}
	g.Checkpoint = cfg.checkpointConfig(g.SubjectName())
	pl, err := cluster.SingleNode{}.Place(g, []string{node.ID()})
	if err != nil {
		return fmt.Errorf("meshflow: %w", err)
	}
	return node.Run(ctx, g, pl)
}
