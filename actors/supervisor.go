package actors

import (
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// RestartPolicy says how an operator instance is restarted after a failure.
type RestartPolicy struct {
	// MaxFailures within Window make the job fail instead of restarting the
	// instance once more.
	MaxFailures int
	Window      time.Duration
	// InitialBackoff is the delay before the first restart; it doubles with
	// every failure within Window, up to MaxBackoff.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
}

// DefaultRestartPolicy restarts an instance up to 5 times within a minute,
// waiting 50 ms, 100 ms, 200 ms ... (at most 5 s) before each restart.
var DefaultRestartPolicy = RestartPolicy{
	MaxFailures:    5,
	Window:         time.Minute,
	InitialBackoff: 50 * time.Millisecond,
	MaxBackoff:     5 * time.Second,
}

func (p RestartPolicy) withDefaults() RestartPolicy {
	d := DefaultRestartPolicy
	if p.MaxFailures > 0 {
		d.MaxFailures = p.MaxFailures
	}
	if p.Window > 0 {
		d.Window = p.Window
	}
	if p.InitialBackoff > 0 {
		d.InitialBackoff = p.InitialBackoff
	}
	if p.MaxBackoff > 0 {
		d.MaxBackoff = p.MaxBackoff
	}
	return d
}

func (p RestartPolicy) backoff(failures int) time.Duration {
	d := p.InitialBackoff
	for i := 1; i < failures && d < p.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, p.MaxBackoff)
}

// instanceFailure is the panic value an instance actor raises to hand a
// failure to its supervisor.
type instanceFailure struct {
	id  InstanceID
	err error
	// recover says the instance must not be restarted alone: the job
	// recovers from its last checkpoint.
	recover bool
}

// supervisor is the strategy of a job actor for its instance children:
// restart with backoff, give up (and fail the job) after too many failures.
// Its pending restart timers are owned by it and stopped by stop.
type supervisor struct {
	policy RestartPolicy
	// giveUp is called once per instance that exceeded the policy.
	giveUp func(id InstanceID, failures int, err error)
	// failed is called on every failure before the decision.
	failed func(id InstanceID, failures int, err error, restartIn time.Duration)

	mu      sync.Mutex
	stopped bool
	timers  map[*time.Timer]struct{}
}

var _ actor.SupervisorStrategy = (*supervisor)(nil)

func (s *supervisor) HandleFailure(_ *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, rs *actor.RestartStatistics, reason any, _ any) {
	f, ok := reason.(*instanceFailure)
	if !ok {
		// A panic in the runtime itself, outside user code.
		f = &instanceFailure{err: &PanicError{Value: reason}}
	}
	rs.Fail()
	n := rs.NumberOfFailures(s.policy.Window)
	if n > s.policy.MaxFailures || f.recover {
		sup.StopChildren(child)
		s.giveUp(f.id, n, f.err)
		return
	}
	delay := s.policy.backoff(n)
	s.failed(f.id, n, f.err, delay)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	var t *time.Timer
	t = time.AfterFunc(delay, func() {
		s.mu.Lock()
		_, live := s.timers[t]
		delete(s.timers, t)
		s.mu.Unlock()
		if live {
			sup.RestartChildren(child)
		}
	})
	s.timers[t] = struct{}{}
}

// stop cancels the pending restarts.
func (s *supervisor) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	for t := range s.timers {
		t.Stop()
	}
	clear(s.timers)
}
