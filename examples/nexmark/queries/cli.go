package queries

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/internal/nexmark"
)

// Exit codes of [Main].
const (
	ExitOK    = 0
	ExitError = 1 // the run failed
	ExitUsage = 2 // the command line was wrong, or asks for a query Meshflow cannot run
)

type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// Main runs the nexmark command line with args (without the program name)
// and returns the exit code. It cancels its context on SIGINT or SIGTERM
// and reports a failure as one line, "nexmark: <error>", on stderr.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(stderr, "nexmark: %s\n", oneLine(err.Error()))
	var u usageError
	if errors.As(err, &u) {
		return ExitUsage
	}
	return ExitError
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "nexmark",
		Short:         "Generate Nexmark events and run Nexmark queries on Meshflow",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newGen(stdout), newRun(stdout, stderr))
	return root
}

func newGen(stdout io.Writer) *cobra.Command {
	var events, seed int64
	var rate float64
	cmd := &cobra.Command{
		Use:   "gen --events N [--seed S]",
		Short: "Write N Nexmark events (people, auctions, bids) as JSON lines on stdout",
		Long: `Write the first N events of the Nexmark stream of the given seed as JSON
lines: one event a line, "type" person, auction or bid, the fields of the
type in snake_case, date_time and expires as integer milliseconds. Event
times start at 2024-01-01T00:00:00Z and advance at --rate events a second.
The same flags always write the same file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if events < 0 || !cmd.Flags().Changed("events") {
				return usagef("gen needs --events N, N >= 0")
			}
			if rate <= 0 {
				return usagef("invalid --rate %v: must be positive", rate)
			}
			g := nexmark.NewGenerator(nexmark.Config{Seed: seed, EventsPerSecond: rate})
			w := bufio.NewWriterSize(stdout, 1<<20)
			var line []byte
			for i := int64(0); i < events; i++ {
				if i%4096 == 0 {
					if err := cmd.Context().Err(); err != nil {
						return err
					}
				}
				line = append(g.NextEventJSON(line[:0]), '\n')
				if _, err := w.Write(line); err != nil {
					return fmt.Errorf("write: %w", err)
				}
			}
			if err := w.Flush(); err != nil {
				return fmt.Errorf("write: %w", err)
			}
			return nil
		},
	}
	cmd.Flags().Int64VarP(&events, "events", "n", -1, "number of events (required)")
	cmd.Flags().Int64Var(&seed, "seed", 0, "random seed")
	cmd.Flags().Float64Var(&rate, "rate", 10_000, "event-time rate, events per second")
	return cmd
}

type runFlags struct {
	query, input, subject, outSubject string
	bounded, verbose                  bool
	server, user, password, creds     string
	timeout                           time.Duration
}

func newRun(stdout, stderr io.Writer) *cobra.Command {
	f := &runFlags{}
	cmd := &cobra.Command{
		Use:   "run --query q0|q1|q2|q3|q4|q5|q6|q7|q8 (--input FILE | --subject SUBJ)",
		Short: "Run a Nexmark query on events from a file or a JetStream subject",
		Long: `Run Nexmark query q0 to q8 on the events of --input
FILE (JSON lines as nexmark gen writes them; the run ends once the file is
read, every window flushed) or of the JetStream subject --subject (until
interrupted, or with --bounded until the stream is read). Results are JSON
lines on stdout, or JSON messages on the JetStream subject
--output-subject.

q4 to q8 use event time (date_time): an event more than
` + MaxOutOfOrderness.String() + ` behind the newest one read is late, and left out of the results.
q4 and q6 close an auction when the watermark passes its expires (in order
of expires, then id) and see the bids up to ` + MaxAuctionDuration.String() + ` after its start.

With --subject the job takes checkpoints on the NATS server, and a run
starts from the last checkpoint of the previous run of the same query on
that server.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return f.run(cmd.Context(), stdout, stderr) },
	}
	fs := cmd.Flags()
	fs.StringVarP(&f.query, "query", "q", "", "query: q0 to q8 (required)")
	fs.StringVarP(&f.input, "input", "i", "", "file of events, one JSON line each")
	fs.StringVar(&f.subject, "subject", "", "JetStream subject of the events")
	fs.BoolVar(&f.bounded, "bounded", false, "with --subject: end once the stream's events are read")
	fs.StringVar(&f.outSubject, "output-subject", "", "publish results to this JetStream subject instead of stdout")
	server := os.Getenv("NATS_URL")
	if server == "" {
		server = nats.DefaultURL
	}
	fs.StringVarP(&f.server, "server", "s", server, "NATS server URLs, comma separated; $NATS_URL sets the default")
	fs.StringVar(&f.user, "user", "", "username or token")
	fs.StringVar(&f.password, "password", "", "password")
	fs.StringVar(&f.creds, "creds", "", "user credentials file")
	fs.DurationVar(&f.timeout, "timeout", 5*time.Second, "time to wait for the NATS server when connecting")
	fs.BoolVarP(&f.verbose, "verbose", "v", false, "log the engine's warnings and lifecycle on stderr")
	return cmd
}

func (f *runFlags) run(ctx context.Context, stdout, stderr io.Writer) error {
	if f.query == "" {
		return usagef("run needs --query (%s)", supportedList())
	}
	if (f.input == "") == (f.subject == "") {
		return usagef("run needs exactly one of --input FILE and --subject SUBJ")
	}
	if f.bounded && f.subject == "" {
		return usagef("--bounded goes with --subject")
	}
	if f.password != "" && f.user == "" {
		return usagef("--password needs --user")
	}
	if f.timeout <= 0 {
		return usagef("invalid --timeout %v: must be positive", f.timeout)
	}
	// The sink is built before the query so that a refused query fails
	// before anything connects.
	if _, err := Build(f.query, meshflow.FromJSON(nexmark.EventSchema), meshflow.Print(io.Discard, meshflow.JSONLines)); err != nil {
		return usageError{err}
	}
	logger := slog.New(slog.DiscardHandler)
	if f.verbose {
		logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	opts := []meshflow.RunOption{meshflow.WithLogger(logger)}

	var src meshflow.Source
	if f.input != "" {
		file, err := os.Open(f.input)
		if err != nil {
			return err
		}
		file.Close()
		src = FromFile(f.input)
		// A bounded run: no checkpoints, and the first failure fails it.
		opts = append(opts, meshflow.WithoutCheckpoints(),
			meshflow.WithRestartPolicy(meshflow.RestartPolicy{MaxFailures: 1}))
	} else {
		src = meshflow.FromJetStream(meshflow.JetStreamSource{
			Subjects: []string{f.subject},
			Schema:   nexmark.EventSchema,
			Consumer: Name(f.query),
			Bounded:  f.bounded,
		})
	}
	var sink meshflow.Sink = meshflow.Print(stdout, meshflow.JSONLines)
	if f.outSubject != "" {
		sink = meshflow.ToJetStream(meshflow.JetStreamSink{Subject: f.outSubject})
	}
	p, err := Build(f.query, src, sink)
	if err != nil {
		return usageError{err}
	}

	if f.subject != "" || f.outSubject != "" {
		nc, err := f.connect(ctx, logger)
		if err != nil {
			return err
		}
		defer nc.Close()
		opts = append(opts, meshflow.WithNATS(nc))
	} else {
		// The embedded node keeps its server's store in a directory of its
		// own, removed at the end.
		dir, err := os.MkdirTemp("", "nexmark-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		opts = append(opts, meshflow.WithDataDir(dir))
	}
	err = meshflow.Run(ctx, p, opts...)
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil // interrupted: the sources stopped and what was read is delivered
	}
	return err
}

func (f *runFlags) connect(ctx context.Context, logger *slog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{nats.Name("nexmark"), nats.Timeout(f.timeout),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { logger.Warn("nats error", "err", err) })}
	if f.creds != "" {
		opts = append(opts, nats.UserCredentials(f.creds))
	}
	switch {
	case f.user != "" && f.password != "":
		opts = append(opts, nats.UserInfo(f.user, f.password))
	case f.user != "":
		opts = append(opts, nats.Token(f.user))
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	nc, err := nats.Connect(f.server, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", f.server, err)
	}
	return nc, nil
}
