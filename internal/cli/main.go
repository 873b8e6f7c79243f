package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Exit codes returned by [Main].
const (
	ExitOK    = 0
	ExitError = 1 // the command failed
	ExitUsage = 2 // the command line was wrong
)

// Main runs the meshflow command line with args (without the program name)
// and returns the process exit code. It builds a fresh command tree, cancels
// the context on SIGINT or SIGTERM, and reports a failure as one line,
// "meshflow: <error>", on stderr.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	root := NewRootCmd(&Env{Stdin: stdin, Stdout: stdout, Stderr: stderr})
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(stderr, "meshflow: %s\n", oneLine(err.Error()))
	if IsUsageError(err) {
		return ExitUsage
	}
	return ExitError
}

// usageError marks an error in the command line rather than in its
// execution.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// IsUsageError reports whether err says the command line was wrong (an
// unknown flag or command, a missing or invalid argument).
func IsUsageError(err error) bool {
	var u usageError
	return errors.As(err, &u)
}

// oneLine joins the lines of a multi-line error message with "; ".
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return strings.TrimSpace(s)
	}
	var parts []string
	for _, l := range strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' }) {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}
