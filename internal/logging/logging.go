// Package logging routes the logs of Meshflow's dependencies — the embedded
// NATS server, Badger and Proto.Actor — onto one *slog.Logger passed in
// explicitly, so a node has one format, one level switch and the same
// attributes everywhere.
package logging

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/dgraph-io/badger/v4"
	"github.com/nats-io/nats-server/v2/server"
)

// Discard returns a logger that drops everything.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// NATSServerLogger adapts l to the embedded NATS server's logger. Fatalf
// logs at error level and does not exit the process.
func NATSServerLogger(l *slog.Logger) server.Logger {
	return natsLogger{l.With("lib", "nats-server")}
}

type natsLogger struct{ l *slog.Logger }

func (n natsLogger) Noticef(format string, v ...any) { n.l.Info(fmt.Sprintf(format, v...)) }
func (n natsLogger) Warnf(format string, v ...any)   { n.l.Warn(fmt.Sprintf(format, v...)) }
func (n natsLogger) Fatalf(format string, v ...any) {
	n.l.Error(fmt.Sprintf(format, v...), "fatal", true)
}
func (n natsLogger) Errorf(format string, v ...any) { n.l.Error(fmt.Sprintf(format, v...)) }
func (n natsLogger) Debugf(format string, v ...any) {
	if n.l.Enabled(context.Background(), slog.LevelDebug) {
		n.l.Debug(fmt.Sprintf(format, v...))
	}
}
func (n natsLogger) Tracef(format string, v ...any) {
	if n.l.Enabled(context.Background(), slog.LevelDebug-4) {
		n.l.Log(context.Background(), slog.LevelDebug-4, fmt.Sprintf(format, v...))
	}
}

// BadgerLogger adapts l to Badger's logger; Badger's informational chatter
// goes to debug level.
func BadgerLogger(l *slog.Logger) badger.Logger { return badgerLogger{l.With("lib", "badger")} }

type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(format string, v ...any)   { b.l.Error(trim(fmt.Sprintf(format, v...))) }
func (b badgerLogger) Warningf(format string, v ...any) { b.l.Warn(trim(fmt.Sprintf(format, v...))) }
func (b badgerLogger) Infof(format string, v ...any)    { b.debug(format, v...) }
func (b badgerLogger) Debugf(format string, v ...any)   { b.debug(format, v...) }
func (b badgerLogger) debug(format string, v ...any) {
	if b.l.Enabled(context.Background(), slog.LevelDebug) {
		b.l.Debug(trim(fmt.Sprintf(format, v...)))
	}
}

func trim(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == ' ') {
		s = s[:len(s)-1]
	}
	return s
}

// ProtoactorLoggerFactory returns the logger factory for an actor system:
// its logs go to l with lib=protoactor. Unless verbose, only warnings and
// errors pass (Proto.Actor logs every recovered panic and dead letter at
// info level; Meshflow reports those itself).
func ProtoactorLoggerFactory(l *slog.Logger, verbose bool) func(*actor.ActorSystem) *slog.Logger {
	return func(*actor.ActorSystem) *slog.Logger {
		h := l.Handler()
		if !verbose {
			h = minLevel{h, slog.LevelWarn}
		}
		return slog.New(h).With("lib", "protoactor")
	}
}

// minLevel drops records below level.
type minLevel struct {
	slog.Handler
	level slog.Level
}

func (m minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= m.level && m.Handler.Enabled(ctx, l)
}
func (m minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{m.Handler.WithAttrs(as), m.level}
}
func (m minLevel) WithGroup(name string) slog.Handler {
	return minLevel{m.Handler.WithGroup(name), m.level}
}
