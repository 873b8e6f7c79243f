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
}

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
and row counts are printed every --every. Other producers can publish too:
  nats pub mesh.orders.in.checkout '{"order_id":1,"customer_id":"c-1","amount":12.5,"currency":"EUR","placed_at":"2026-11-01T12:00:00Z"}'
and 'meshflow tail mesh.analytics.big_orders', 'meshflow tail
mesh.orders._dlq' and 'meshflow domains describe orders' show the rest.

--example bids runs examples/bids on Nexmark bids and prints its results as
they come; the generator publishes to --input.

Ctrl-C stops the generator, drains the pipelines and stops the node.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDev(cmd.Context(), env, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dataDir, "data-dir", ".meshflow", "directory for the NATS store and the state store")
	f.StringVar(&o.listen, "listen", "127.0.0.1:4222", "host:port the embedded NATS server listens on for clients (\"\" to not listen)")
	f.IntVar(&o.rate, "rate", 2000, "events per second published by the generator")
	f.BoolVar(&o.generator, "generator", true, "run the built-in bid generator")
	f.StringVarP(&o.output, "output", "o", "table", "how results are printed: table or json")
	f.IntVar(&o.parallelism, "parallelism", 4, "instances of the keyed operator")
	f.StringVar(&o.input, "input", "bids.in", "subject the pipeline reads bids from")
	f.StringVar(&o.resultSubj, "results", "bids.top", "subject the pipeline publishes results to")
	f.StringVar(&o.example, "example", "mesh", "what to run: mesh (three domains) or bids (one pipeline)")
	f.DurationVar(&o.every, "every", 2*time.Second, "with --example mesh: how often the domains' status is printed")
	return cmd
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
	cfg := natsembed.Config{
		Name:     "meshflow-dev",
		StoreDir: filepath.Join(o.dataDir, "nats"),
		Logger:   env.Logger,
	}
	// With the example mesh every domain is its own NATS user; the node
	// has a user of its own, and clients without credentials (nats pub,
	// meshflow inject/tail/domains) act as producers.
	var nodeOpts []nats.Option
	var domainPW map[string]string
	if o.example == "mesh" {
		nodePW := rand.Text()
		cfg.Users = []natsembed.User{{Name: "node", Password: nodePW, Publish: []string{">"}, Subscribe: []string{">"}},
			domains.ProducerUser("producer", rand.Text())}
		cfg.NoAuthUser = "producer"
		domainPW = map[string]string{}
		for _, d := range mesh.Domains() {
			domainPW[d.Name] = rand.Text()
			cfg.Users = append(cfg.Users, d.User(domainPW[d.Name]))
		}
		nodeOpts = append(nodeOpts, nats.UserInfo("node", nodePW))
	}
	if o.listen == "" {
		cfg.DontListen = true
	} else {
		host, port, err := net.SplitHostPort(o.listen)
		if err != nil {
			return usageErrorf("invalid --listen %q: %v", o.listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 0 || p > 65535 {
			return usageErrorf("invalid --listen %q: bad port", o.listen)
		}
		cfg.Host, cfg.Port = host, p
	}
	srv, err := natsembed.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, srv.Shutdown(context.WithoutCancel(ctx))) }()
	if url := srv.ClientURL(); url != "" {
		env.Logger.Info("embedded NATS server ready", "url", url, "data_dir", o.dataDir)
	}
	nc, err := srv.Connect(append(nodeOpts, nats.Name("meshflow-dev"))...)
	if err != nil {
		return err
	}
	defer nc.Close()
	store, err := badgerstore.Open(ctx, badgerstore.Options{Dir: filepath.Join(o.dataDir, "state"), Logger: env.Logger})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, store.Close()) }()

	if o.example == "mesh" {
		connect := func(d *domains.Domain) (*nats.Conn, error) {
			return srv.Connect(nats.UserInfo(d.Name, domainPW[d.Name]), nats.Name("meshflow-"+d.Name),
				nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
					env.Logger.Error("domain NATS error", "domain", d.Name, "error", err)
				}))
		}
		return runDevMesh(ctx, env, o, nc, store, connect)
	}
	p := bids.Pipeline(bids.Config{
		Input:       o.input,
		Output:      o.resultSubj,
		Print:       env.Stdout,
		Format:      format,
		Parallelism: o.parallelism,
	})

	genCtx, stopGen := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var genErr error
	if o.generator {
		js, err := jetstream.New(nc)
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
	runErr := meshflow.Run(ctx, p, meshflow.WithNATS(nc), meshflow.WithState(store), meshflow.WithLogger(env.Logger))
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
