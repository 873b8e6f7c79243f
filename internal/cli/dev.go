package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/domains"
	"github.com/meshflow/meshflow/examples/bids"
	"github.com/meshflow/meshflow/examples/mesh"
	"github.com/meshflow/meshflow/internal/natsembed"
	"github.com/meshflow/meshflow/internal/nexmark"
	"github.com/meshflow/meshflow/persistence/badgerstore"
)

type devOptions struct {
	dataDir     string
	listen      string
	rate        int
	generator   bool
	output      string
	parallelism int
	input       string
	resultSubj  string
	example     string
	every       time.Duration
	nats        *natsFlags

	checkpointEvery time.Duration
	noCheckpoints   bool
	restore         []string // JOB=ID
	dupWindow       time.Duration
	streamMaxBytes  int64
}

// retention is the limits of the streams dev makes: devRetention with the
// flags' overrides.
func (o devOptions) retention() domains.Retention {
	r := devRetention
	if o.dupWindow > 0 {
		r.DuplicateWindow = o.dupWindow
	}
	if o.streamMaxBytes != 0 {
		r.MaxBytes = o.streamMaxBytes
	}
	return r
}

// runOptions are the options of the checkpoint flags.
func (o devOptions) runOptions() ([]meshflow.RunOption, error) {
	if o.noCheckpoints {
		if len(o.restore) > 0 {
			return nil, usageErrorf("--restore needs checkpoints: drop --no-checkpoints")
		}
		return []meshflow.RunOption{meshflow.WithoutCheckpoints()}, nil
	}
	if o.checkpointEvery < 100*time.Millisecond || o.checkpointEvery > time.Hour {
		return nil, usageErrorf("invalid --checkpoint-interval %v: want 100ms to 1h", o.checkpointEvery)
	}
	opts := []meshflow.RunOption{meshflow.WithCheckpoints(meshflow.CheckpointConfig{Interval: o.checkpointEvery})}
	for _, r := range o.restore {
		job, idText, ok := strings.Cut(r, "=")
		id, err := strconv.ParseUint(idText, 10, 64)
		if !ok || job == "" || err != nil || id == 0 {
			return nil, usageErrorf("invalid --restore %q: want JOB=ID, e.g. orders.pipeline=12 (see meshflow checkpoints list JOB)", r)
		}
		if !strings.Contains(job, ".") && o.example == "mesh" {
			job += ".pipeline" // a domain's name stands for its job
		}
		opts = append(opts, meshflow.WithRestore(job, id))
	}
	return opts, nil
}

// producerUser is the NATS user of clients that connect to the embedded
// server of `meshflow dev` without credentials.
const producerUser = "producer"

// newDevCmd builds `meshflow dev`: an embedded node running the bundled
// example pipeline, fed by a built-in bid generator.
func newDevCmd(env *Env) *cobra.Command {
	o := devOptions{}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a node with an embedded NATS server and the example mesh",
		Long: `Start a single Meshflow node with an embedded NATS server (JetStream on)
and a Badger state store under --data-dir, and run a bundled example.

--example mesh (the default) runs examples/mesh: the domains orders,
payments and analytics, where analytics consumes the data products of the
other two. A built-in generator publishes checkout events and payment
transactions (about one in fifty breaking a contract); the domains' status
and row counts are printed every --every.

--example bids runs examples/bids on Nexmark bids and prints its results as
they come; the generator publishes to --input.

On the embedded server every domain (or the bids pipeline) is its own NATS
user, and clients connecting without credentials are the producers: they
may publish to the input ports (mesh.<domain>.in.<port>, or --input), read
the data products, results and dead letters, and ask for the catalog; they
receive replies under the inbox prefix _INBOX_producer. For example:
  nats pub mesh.orders.in.checkout '{"order_id":1,"customer_id":"c-1","amount":12.5,"currency":"EUR","placed_at":"2026-11-01T12:00:00Z"}'
  meshflow tail mesh.analytics.big_orders --inbox-prefix _INBOX_producer
  meshflow domains describe orders --inbox-prefix _INBOX_producer
  nats --inbox-prefix _INBOX_producer kv get MESHFLOW_CONTRACTS orders.placed

--server runs the example on an existing NATS server (JetStream on)
instead, connecting as --user/--password or --creds; that server's own
accounts and permissions apply.

Ctrl-C stops the generator, drains the pipelines and stops the node; it
is honoured at every stage of startup.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("listen") && o.nats.server != "" {
				return usageErrorf("--listen is for the embedded server; --server runs on an existing one")
			}
			return runDev(cmd.Context(), env, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dataDir, "data-dir", ".meshflow", "directory for the NATS store and the state store")
	f.StringVar(&o.listen, "listen", "127.0.0.1:4222", "host:port the embedded NATS server listens on for clients (port 0: any free port; \"\" to not listen)")
	f.IntVar(&o.rate, "rate", 2000, "events per second published by the generator")
	f.BoolVar(&o.generator, "generator", true, "run the built-in bid generator")
	f.StringVarP(&o.output, "output", "o", "table", "how results are printed: table or json")
	f.IntVar(&o.parallelism, "parallelism", 4, "instances of the keyed operator")
	f.StringVar(&o.input, "input", "bids.in", "subject the pipeline reads bids from")
	f.StringVar(&o.resultSubj, "results", "bids.top", "subject the pipeline publishes results to")
	f.StringVar(&o.example, "example", "mesh", "what to run: mesh (three domains) or bids (one pipeline)")
	f.DurationVar(&o.every, "every", 2*time.Second, "with --example mesh: how often the domains' status is printed")
	f.DurationVar(&o.checkpointEvery, "checkpoint-interval", time.Second, "how often every job takes a checkpoint (100ms to 1h)")
	f.BoolVar(&o.noCheckpoints, "no-checkpoints", false, "run without checkpoints: at-least-once, a crash may lose or repeat events")
	f.StringArrayVar(&o.restore, "restore", nil, "start JOB from checkpoint or savepoint ID instead of its latest checkpoint, as JOB=ID (a domain name stands for its job); repeatable")
	f.DurationVar(&o.dupWindow, "duplicate-window", 0, "how long the streams dev makes remember message ids (default 45s)")
	f.Int64Var(&o.streamMaxBytes, "stream-max-bytes", 0, "size limit of each stream dev makes, in bytes (default 30 MiB; -1: unlimited)")
	// No $NATS_URL default: dev runs on an existing server only when told.
	o.nats = addNATSFlagsFor(cmd, env, "", "run on this existing NATS server (URLs, comma separated) instead of an embedded one")
	return cmd
}

// devConns are the NATS connections of a dev run: the node's, the one the
// generator publishes with, and how each domain connects.
type devConns struct {
	node, producer *nats.Conn
	domain         meshflow.DomainConnect
}

func runDev(ctx context.Context, env *Env, o devOptions) (err error) {
	var format meshflow.PrintFormat
	switch o.output {
	case "table":
		format = meshflow.Table
	case "json":
		format = meshflow.JSONLines
	default:
		return usageErrorf("invalid --output %q: want table or json", o.output)
	}
	if o.rate <= 0 && o.generator {
		return usageErrorf("invalid --rate %d: must be positive", o.rate)
	}
	if o.example != "mesh" && o.example != "bids" {
		return usageErrorf("invalid --example %q: want mesh or bids", o.example)
	}
	if o.every <= 0 {
		return usageErrorf("invalid --every %v: must be positive", o.every)
	}
	if o.parallelism < 1 {
		return usageErrorf("invalid --parallelism %d: must be at least 1", o.parallelism)
	}
	if err := o.retention().Validate(); err != nil {
		return usageErrorf("invalid stream limits: %v", err)
	}
	runOpts, err := o.runOptions()
	if err != nil {
		return err
	}
	for _, s := range []struct{ flag, subject string }{{"--input", o.input}, {"--results", o.resultSubj}} {
		if !literalSubject(s.subject) {
			return usageErrorf("invalid %s %q: want a subject without wildcards", s.flag, s.subject)
		}
	}
	bidsCfg := bids.Config{
		Input:       o.input,
		Output:      o.resultSubj,
		Print:       env.Stdout,
		Format:      format,
		Parallelism: o.parallelism,
	}
	var conns devConns
	if o.nats.server != "" {
		nc, err := connect(ctx, o.nats)
		if err != nil {
			return devStopped(err)
		}
		defer nc.Close()
		env.Logger.Info("connected to NATS", "url", nc.ConnectedUrlRedacted(), "data_dir", o.dataDir)
		conns = devConns{node: nc, producer: nc}
	} else {
		srv, c, err := startDevServer(ctx, env, o, bidsCfg)
		if err != nil {
			return devStopped(err)
		}
		defer func() { err = errors.Join(err, srv.Shutdown(context.WithoutCancel(ctx))) }()
		defer c.node.Close()
		defer c.producer.Close()
		conns = c
	}
	if err := ctx.Err(); err != nil {
		return devStopped(err)
	}
	store, err := badgerstore.Open(ctx, badgerstore.Options{Dir: filepath.Join(o.dataDir, "state"), Logger: env.Logger})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, store.Close()) }()
	if err := ctx.Err(); err != nil {
		return devStopped(err)
	}

	if o.example == "mesh" {
		return runDevMesh(ctx, env, o, conns, store, runOpts)
	}
	p := bids.Pipeline(bidsCfg)
	if err := boundDevStreams(ctx, conns.node, o.retention(), o.input, o.input+".dlq", o.resultSubj); err != nil {
		return err
	}
	defer limitDevMemory(env)()

	genCtx, stopGen := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var genErr error
	if o.generator {
		js, err := jetstream.New(conns.producer)
		if err != nil {
			stopGen()
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			genErr = generate(genCtx, js, o.input, o.rate)
		}()
	}
	env.Logger.Info("running the example pipeline", "input", o.input, "results", o.resultSubj)
	runErr := meshflow.Run(ctx, p, append([]meshflow.RunOption{meshflow.WithNATS(conns.node), meshflow.WithState(store), meshflow.WithLogger(env.Logger)}, runOpts...)...)
	stopGen()
	wg.Wait()
	if errors.Is(runErr, context.Canceled) && ctx.Err() != nil {
		runErr = nil // Ctrl-C: drained and stopped cleanly
	}
	if errors.Is(genErr, context.Canceled) {
		genErr = nil
	}
	return errors.Join(runErr, genErr)
}

// devStopped is what dev returns when ctx ended during startup: nothing
// for Ctrl-C, the error otherwise.
func devStopped(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// startDevServer starts the embedded server with the example's users and
// opens the node's and the generator's connections: with --example mesh a
// node user, a user per domain and the producers; with --example bids the
// pipeline's user and the producers. Clients without credentials are the
// producers.
func startDevServer(ctx context.Context, env *Env, o devOptions, bidsCfg bids.Config) (*natsembed.Server, devConns, error) {
	cfg := natsembed.Config{
		Name:       "meshflow-dev",
		StoreDir:   filepath.Join(o.dataDir, "nats"),
		Logger:     env.Logger,
		NoAuthUser: producerUser,
	}
	if o.listen == "" {
		cfg.DontListen = true
	} else {
		host, port, err := net.SplitHostPort(o.listen)
		if err != nil {
			return nil, devConns{}, usageErrorf("invalid --listen %q: %v", o.listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 0 || p > 65535 {
			return nil, devConns{}, usageErrorf("invalid --listen %q: bad port", o.listen)
		}
		if p == 0 {
			p = -1 // any free port
		}
		cfg.Host, cfg.Port = host, p
	}
	nodeUser, nodePW := bids.Name, rand.Text()
	producerPW := rand.Text()
	domainPW := map[string]string{}
	if o.example == "mesh" {
		nodeUser = "node"
		var decls []*domains.Domain
		for _, d := range mesh.Domains() {
			decls = append(decls, &d.Domain)
			domainPW[d.Name] = rand.Text()
			cfg.Users = append(cfg.Users, d.User(domainPW[d.Name]))
		}
		cfg.Users = append(cfg.Users,
			natsembed.User{Name: nodeUser, Password: nodePW, Publish: []string{">"}, Subscribe: []string{">"}},
			domains.ProducerUser(producerUser, producerPW, decls))
	} else {
		pipeline, producers := bids.Users(bidsCfg, nodePW, producerUser, producerPW)
		cfg.Users = append(cfg.Users, pipeline, producers)
	}
	srv, err := natsembed.Start(ctx, cfg)
	if err != nil {
		return nil, devConns{}, err
	}
	fail := func(err error) (*natsembed.Server, devConns, error) {
		return nil, devConns{}, errors.Join(err, srv.Shutdown(context.WithoutCancel(ctx)))
	}
	if url := srv.ClientURL(); url != "" {
		env.Logger.Info("embedded NATS server ready", "url", url, "data_dir", o.dataDir,
			"producers", "no credentials, inbox prefix "+domains.InboxPrefix(producerUser))
	}
	errorHandler := func(who string) nats.Option {
		return nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			env.Logger.Error("NATS error", "user", who, "error", err)
		})
	}
	node, err := srv.Connect(nats.UserInfo(nodeUser, nodePW), nats.CustomInboxPrefix(domains.InboxPrefix(nodeUser)),
		nats.Name("meshflow-dev"), errorHandler(nodeUser))
	if err != nil {
		return fail(err)
	}
	producer, err := srv.Connect(nats.UserInfo(producerUser, producerPW), nats.CustomInboxPrefix(domains.InboxPrefix(producerUser)),
		nats.Name("meshflow-dev-generator"), errorHandler(producerUser))
	if err != nil {
		node.Close()
		return fail(err)
	}
	c := devConns{node: node, producer: producer}
	if o.example == "mesh" {
		c.domain = func(d *domains.Domain) (*nats.Conn, error) {
			return srv.Connect(nats.UserInfo(d.Name, domainPW[d.Name]), nats.CustomInboxPrefix(domains.InboxPrefix(d.Name)),
				nats.Name("meshflow-"+d.Name), errorHandler(d.Name))
		}
	}
	return srv, c, nil
}

// literalSubject reports whether s is a valid subject without wildcards.
func literalSubject(s string) bool {
	if s == "" {
		return false
	}
	for _, t := range strings.Split(s, ".") {
		if t == "" || t == "*" || t == ">" || strings.ContainsAny(t, " \t\r\n") {
			return false
		}
	}
	return true
}

// generate publishes Nexmark bids as JSON to subject at rate events per
// second until ctx is done. The stream is created by the pipeline's source;
// publishing waits for it.
func generate(ctx context.Context, js jetstream.JetStream, subject string, rate int) error {
	// Event time advances with the wall clock: bids are 46 of 50 events.
	g := nexmark.NewGenerator(nexmark.Config{BaseTime: time.Now().UTC(), EventsPerSecond: float64(rate) * 50 / 46})
	var buf []byte
	return publishLoop(ctx, js, rate, []string{subject}, func(publish func(subject string, data []byte) error) error {
		buf = g.NextBidJSON(buf[:0])
		// The message is kept for retries until acknowledged: hand over
		// a copy, not the reused buffer.
		return publish(subject, bytes.Clone(buf))
	})
}

// publishLoop waits until streams capture subjects, then calls next rate
// times a second (in ticks of 50 ms) until ctx is done, waiting for the
// acknowledgements of each tick.
func publishLoop(ctx context.Context, js jetstream.JetStream, rate int, subjects []string, next func(publish func(subject string, data []byte) error) error) error {
	const tick = 50 * time.Millisecond
	perTick := max(1, rate*int(tick)/int(time.Second))
	t := time.NewTicker(tick)
	defer t.Stop()
	for _, s := range subjects {
		for {
			if _, err := js.StreamNameBySubject(ctx, s); err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-t.C:
			}
		}
	}
	publish := func(subject string, data []byte) error {
		if _, err := js.PublishAsync(subject, data, jetstream.WithStallWait(10*time.Second)); err != nil {
			return fmt.Errorf("generator: publish to %s: %w", subject, err)
		}
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		for range perTick {
			if err := next(publish); err != nil {
				return err
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
