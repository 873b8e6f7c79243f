// Package cli implements the meshflow command line: the command tree, its
// flags and the mapping of errors to exit codes.
//
// Every command is built by a constructor that takes the shared [Env]; there
// is no package state, so a test can build and run as many independent trees
// as it likes:
//
//	env := &cli.Env{Stdin: in, Stdout: &out, Stderr: &errOut}
//	root := cli.NewRootCmd(env)
//	root.SetArgs([]string{"inject", "--subject", "bids.in", "--file", "bids.json"})
//	err := root.ExecuteContext(ctx)
//
// [Main] wraps this for cmd/meshflow: it installs signal handling and turns
// the error into a one-line message and an exit code.
package cli

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// Env is what commands share: their standard streams, the environment and
// the logger.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer

	// Getenv reads environment variables (os.Getenv when nil).
	Getenv func(string) string

	// Logger logs to Stderr. The root command builds it from --log-level
	// and --log-format before any subcommand runs.
	Logger *slog.Logger
}

func (e *Env) getenv(key string) string {
	if e.Getenv == nil {
		return os.Getenv(key)
	}
	return e.Getenv(key)
}

func (e *Env) fill() {
	if e.Stdin == nil {
		e.Stdin = strings.NewReader("")
	}
	if e.Stdout == nil {
		e.Stdout = io.Discard
	}
	if e.Stderr == nil {
		e.Stderr = io.Discard
	}
	if e.Logger == nil {
		e.Logger = slog.New(slog.DiscardHandler)
	}
}

// NewRootCmd builds the meshflow command tree around env.
//
// The root's PersistentPreRunE builds env.Logger; a subcommand must not
// define its own PersistentPreRun(E), which cobra would run instead.
func NewRootCmd(env *Env) *cobra.Command {
	env.fill()
	var logLevel, logFormat string
	root := &cobra.Command{
		Use:   "meshflow",
		Short: "Meshflow: a distributed stateful stream processor",
		Long: `Meshflow runs stateful stream-processing pipelines over NATS and Arrow.

The inject and tail commands move events in and out of NATS subjects, for
feeding a pipeline and watching what it produces.`,
		Version:       version(),
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          noArgs,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(env.Stderr, logLevel, logFormat)
			if err != nil {
				return err
			}
			env.Logger = logger
			return nil
		},
		// Without subcommand the root prints its help.
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetIn(env.Stdin)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.SetVersionTemplate("{{.Name}} {{.Version}}\n")

	pf := root.PersistentFlags()
	pf.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	pf.StringVar(&logFormat, "log-format", "text", "log format: text or json")

	// Every subcommand is built here from its constructor.
	for _, newCmd := range []func(*Env) *cobra.Command{
		newDevCmd,
		newInjectCmd,
		newTailCmd,
		newDomainsCmd,
		newSavepointCmd, newCheckpointsCmd,
		newStatusCmd,
		newVersionCmd,
	} {
		root.AddCommand(newCmd(env))
	}
	return root
}

// newLogger builds the logger selected by --log-level and --log-format.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	switch strings.ToLower(level) {
	case "debug":
		lvl = slog.LevelDebug
	case "info":
		lvl = slog.LevelInfo
	case "warn", "warning":
		lvl = slog.LevelWarn
	case "error":
		lvl = slog.LevelError
	default:
		return nil, usageErrorf("invalid --log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, usageErrorf("invalid --log-format %q: want text or json", format)
	}
}

// noArgs rejects positional arguments, naming an unknown subcommand.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		if cmd.HasSubCommands() {
			return usageErrorf("unknown command %q for %q", args[0], cmd.CommandPath())
		}
		return usageErrorf("%s takes no arguments, got %q", cmd.CommandPath(), args[0])
	}
	return nil
}

// exactArgs is cobra.ExactArgs returning a usage error.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErrorf("%s wants %s, got %d arguments", cmd.CommandPath(), what, len(args))
		}
		return nil
	}
}

func newVersionCmd(env *Env) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of meshflow",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "meshflow %s\n", version())
			return err
		},
	}
}

// version describes the running binary from its build information.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+dirty"
			}
		}
	}
	out := v + " " + bi.GoVersion
	if rev != "" {
		out += " " + rev[:min(len(rev), 12)] + modified
	}
	return out
}
