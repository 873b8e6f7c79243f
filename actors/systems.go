package actors

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/meshflow/meshflow/internal/logging"
)

// An actor system costs about 3 ms of allocation to create (its process
// registry is 1024 maps of 32 shards), more than the rest of starting and
// stopping a small in-process job. A closed node whose jobs all stopped
// leaves its system, empty of actors, to the next node of the process.
// A system serves one node at a time; its actor names stay the node's.

// maxIdleSystems is the number of idle systems kept for reuse.
const maxIdleSystems = 4

var idleSystems struct {
	mu   sync.Mutex
	free []*nodeSystem
}

// nodeSystem is an actor system and the handler its log goes to, which
// follows the node using the system.
type nodeSystem struct {
	sys *actor.ActorSystem
	log *swapHandler
}

// acquireSystem returns an idle system, or a new one, logging to log.
func acquireSystem(log *slog.Logger, verbose bool) *nodeSystem {
	idleSystems.mu.Lock()
	var s *nodeSystem
	if n := len(idleSystems.free); n > 0 {
		s = idleSystems.free[n-1]
		idleSystems.free = idleSystems.free[:n-1]
	}
	idleSystems.mu.Unlock()
	if s == nil {
		s = &nodeSystem{log: &swapHandler{cur: new(atomic.Pointer[slog.Handler])}}
		s.log.set(log, verbose)
		s.sys = actor.NewActorSystem(actor.WithLoggerFactory(func(sys *actor.ActorSystem) *slog.Logger {
			return slog.New(s.log)
		}))
		return s
	}
	s.log.set(log, verbose)
	return s
}

// releaseSystem keeps s for the next node when it may be reused (its
// actors all stopped), else shuts it down.
func releaseSystem(s *nodeSystem, reusable bool) {
	if reusable {
		s.log.set(nil, false)
		idleSystems.mu.Lock()
		if len(idleSystems.free) < maxIdleSystems {
			idleSystems.free = append(idleSystems.free, s)
			idleSystems.mu.Unlock()
			return
		}
		idleSystems.mu.Unlock()
	}
	s.sys.Shutdown()
}

// swapHandler is a slog.Handler passing records on to the handler of the
// node now using the system (none while idle: records are dropped).
type swapHandler struct {
	cur *atomic.Pointer[slog.Handler]
	// The WithAttrs and WithGroup calls made on it, in order, applied to
	// the current handler.
	with []func(slog.Handler) slog.Handler
}

func (h *swapHandler) set(l *slog.Logger, verbose bool) {
	if l == nil {
		h.cur.Store(nil)
		return
	}
	// The factory's filtering: warnings and errors only unless verbose.
	lh := logging.ProtoactorLoggerFactory(l, verbose)(nil).Handler()
	h.cur.Store(&lh)
}

func (h *swapHandler) Enabled(ctx context.Context, l slog.Level) bool {
	if p := h.cur.Load(); p != nil {
		return (*p).Enabled(ctx, l)
	}
	return false
}

func (h *swapHandler) Handle(ctx context.Context, r slog.Record) error {
	p := h.cur.Load()
	if p == nil {
		return nil
	}
	out := *p
	for _, w := range h.with {
		out = w(out)
	}
	return out.Handle(ctx, r)
}

func (h *swapHandler) then(w func(slog.Handler) slog.Handler) slog.Handler {
	return &swapHandler{cur: h.cur, with: append(h.with[:len(h.with):len(h.with)], w)}
}

func (h *swapHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return h.then(func(o slog.Handler) slog.Handler { return o.WithAttrs(attrs) })
}

func (h *swapHandler) WithGroup(name string) slog.Handler {
	return h.then(func(o slog.Handler) slog.Handler { return o.WithGroup(name) })
}
