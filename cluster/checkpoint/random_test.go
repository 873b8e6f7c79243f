package checkpoint

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRandomized drives coordinators with random events (acks in any
// order, duplicates, late acks, declines, timeouts, failed writes,
// restarts, stops) and checks the protocol's invariants after every step.
// The seed is printed; MESHFLOW_SEED=<seed> replays a run.
func TestRandomized(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("MESHFLOW_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("MESHFLOW_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with MESHFLOW_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	total := map[string]int{}
	for run := range 200 {
		s := newSim(rng)
		for step := range 400 {
			if err := s.step(); err != nil {
				t.Fatalf("seed %d run %d step %d: %v\nconfig %+v\nlast events:\n%s",
					seed, run, step, err, s.cfg, s.history())
			}
		}
		for k, v := range s.counts {
			total[k] += v
		}
	}
	t.Logf("actions seen: %v", total)
	// The runs must reach every kind of outcome, or they check little.
	for _, k := range []string{"NotifyComplete", "Abort", "DeleteCheckpoint", "FailJob", "Stopped", "restart", "Rejected"} {
		if total[k] == 0 {
			t.Errorf("no %s in any run", k)
		}
	}
}

type sim struct {
	rng *rand.Rand
	cfg Config
	c   *Coordinator
	now time.Time
	log []any // recent events, actions ("-> " prefixed) and restarts

	// store model, as the driver keeps it
	attempt   uint64
	latest    uint64
	kept      map[uint64]bool // complete and not deleted: id -> savepoint
	completed int
	plain     []uint64 // complete non-savepoint ids, in completion order

	// protocol model of the current coordinator
	lastPersist uint64 // highest id asked for in this run (for late acks)
	lastInject  uint64
	inflight    uint64 // 0: none
	persistOK   map[uint64]bool
	injected    map[uint64]bool
	acked       map[uint64]map[string]bool
	commitAsked uint64
	commitSP    bool
	committedOK map[uint64]bool
	timeouts    map[uint64]time.Time
	tokens      map[uint64]bool // outstanding
	nextToken   uint64
	stopped     bool
	failed      bool
	counts      map[string]int
}

func newSim(rng *rand.Rand) *sim {
	n := 1 + rng.IntN(5)
	tasks := make([]string, n)
	for i := range tasks {
		tasks[i] = TaskName([]string{"src", "map", "sink"}[rng.IntN(3)], i)
	}
	cfg := DefaultConfig("job", tasks)
	cfg.MinPause = time.Duration(rng.IntN(3)) * time.Second
	cfg.Timeout = time.Duration(2+rng.IntN(8)) * time.Second
	cfg.Retained = 1 + rng.IntN(4)
	cfg.TolerableFailures = []int{Unlimited, Unlimited, 0, 1, 3}[rng.IntN(5)]
	s := &sim{rng: rng, cfg: cfg, now: t0, kept: map[uint64]bool{}, counts: map[string]int{}}
	s.restart()
	return s
}

func (s *sim) restart() {
	if s.inflight != 0 && !s.persistOK[s.inflight] && s.rng.IntN(2) == 0 {
		// The attempt write landed but its answer was lost in the crash.
		s.attempt = max(s.attempt, s.inflight)
	}
	r := Restored{Attempt: s.attempt, Latest: s.latest}
	for id, sp := range s.kept {
		if sp {
			r.Savepoints = append(r.Savepoints, id)
		} else {
			r.Retained = append(r.Retained, id)
		}
	}
	s.c = New(s.cfg, r)
	s.inflight, s.commitAsked = 0, 0
	s.persistOK, s.injected = map[uint64]bool{}, map[uint64]bool{}
	s.acked, s.committedOK = map[uint64]map[string]bool{}, map[uint64]bool{}
	s.timeouts, s.tokens = map[uint64]time.Time{}, map[uint64]bool{}
	s.stopped, s.failed = false, false
	s.record("restart")
	s.counts["restart"]++
}

func (s *sim) record(v any) {
	if len(s.log) >= 200 {
		s.log = append(s.log[:0], s.log[100:]...)
	}
	s.log = append(s.log, v)
}

func (s *sim) history() string {
	from := max(0, len(s.log)-30)
	var b strings.Builder
	for _, l := range s.log[from:] {
		switch l := l.(type) {
		case Action:
			fmt.Fprintf(&b, "      -> %#v\n", l)
		case Event:
			fmt.Fprintf(&b, "  %#v\n", l)
		default:
			fmt.Fprintf(&b, "  %v\n", l)
		}
	}
	return b.String()
}

// step feeds one random event and checks the actions it produced.
func (s *sim) step() error {
	if s.stopped || (s.failed && s.rng.IntN(10) == 0) || s.rng.IntN(200) == 0 {
		s.restart()
		return nil
	}
	s.now = s.now.Add(time.Duration(s.rng.IntN(700)) * time.Millisecond)
	ev := s.randomEvent()
	s.record(ev)
	// What the event itself tells the model.
	switch e := ev.(type) {
	case Persisted:
		if e.Err == nil {
			s.attempt = max(s.attempt, e.ID)
			s.persistOK[e.ID] = true
		} else if e.ID == s.inflight {
			s.inflight = 0
		}
	case Committed:
		if e.Err == nil && e.ID == s.commitAsked {
			s.committedOK[e.ID] = true
			s.kept[e.ID] = s.commitSP // the store now has it
		}
		s.commitAsked = 0
	case Ack:
		if s.injected[e.ID] && slices.Contains(s.cfg.Tasks, e.Task) {
			if s.acked[e.ID] == nil {
				s.acked[e.ID] = map[string]bool{}
			}
			s.acked[e.ID][e.Task] = true
		}
	case Trigger:
		s.tokens[e.Token] = true
	case Stop:
		s.tokens[e.Token] = true
	}
	for _, a := range s.c.Step(ev) {
		s.record(a)
		s.counts[actionName(a)]++
		if err := s.check(a); err != nil {
			return err
		}
	}
	return s.checkRetention()
}

func (s *sim) randomEvent() Event {
	id := s.inflight
	switch r := s.rng.IntN(100); {
	case r < 20:
		return Tick{Now: s.now}
	case r < 25:
		s.nextToken++
		return Trigger{Now: s.now, Savepoint: s.rng.IntN(3) == 0, Token: s.nextToken}
	case r < 26:
		s.nextToken++
		return Stop{Now: s.now, Savepoint: s.rng.IntN(3) == 0, Token: s.nextToken}
	case r < 40 && id != 0 && !s.persistOK[id] && !s.injected[id]:
		var err error
		if s.rng.IntN(10) == 0 {
			err = errors.New("kv down")
		}
		return Persisted{Now: s.now, ID: id, Err: err}
	case r < 75 && id != 0 && s.injected[id]:
		task := s.cfg.Tasks[s.rng.IntN(len(s.cfg.Tasks))]
		if s.rng.IntN(60) == 0 {
			return Decline{Now: s.now, ID: id, Task: task, Reason: "boom"}
		}
		return Ack{Now: s.now, ID: id, Task: task, Handle: Handle{Object: "o", Size: 1}}
	case r < 85 && s.commitAsked != 0:
		var err error
		if s.rng.IntN(10) == 0 {
			err = errors.New("cas lost")
		}
		return Committed{Now: s.now, ID: s.commitAsked, Err: err}
	case r < 90:
		for tid, at := range s.timeouts {
			if !s.now.Before(at) {
				delete(s.timeouts, tid)
				return TimeoutFired{Now: s.now, ID: tid}
			}
		}
	case r < 95 && s.lastPersist > 0:
		// a late or duplicate ack of any id ever used, or an unknown task
		old := 1 + s.rng.Uint64N(s.lastPersist)
		task := s.cfg.Tasks[s.rng.IntN(len(s.cfg.Tasks))]
		if s.rng.IntN(10) == 0 {
			task = "ghost/0"
		}
		return Ack{Now: s.now, ID: old, Task: task}
	}
	return Tick{Now: s.now}
}

func (s *sim) check(a Action) error {
	switch a := a.(type) {
	case PersistAttempt:
		if s.inflight != 0 {
			return fmt.Errorf("attempt %d while %d in flight", a.ID, s.inflight)
		}
		if a.ID <= s.attempt {
			return fmt.Errorf("attempt %d reuses an id (store attempt %d)", a.ID, s.attempt)
		}
		s.lastPersist, s.inflight = max(s.lastPersist, a.ID), a.ID
	case Inject:
		if !s.persistOK[a.ID] || a.ID != s.inflight {
			return fmt.Errorf("inject %d before its attempt was persisted", a.ID)
		}
		if a.ID <= s.lastInject {
			return fmt.Errorf("inject %d not above %d", a.ID, s.lastInject)
		}
		s.lastInject = a.ID
		s.injected[a.ID] = true
	case ScheduleTimeout:
		s.timeouts[a.ID] = a.At
	case Commit:
		if a.Meta.Id != s.inflight {
			return fmt.Errorf("commit %d while %d in flight", a.Meta.Id, s.inflight)
		}
		if len(s.acked[a.Meta.Id]) != len(s.cfg.Tasks) || len(a.Meta.Tasks) != len(s.cfg.Tasks) {
			return fmt.Errorf("commit %d with %d of %d tasks acked", a.Meta.Id, len(s.acked[a.Meta.Id]), len(s.cfg.Tasks))
		}
		s.commitAsked, s.commitSP = a.Meta.Id, a.Meta.Savepoint
	case NotifyComplete:
		if !s.committedOK[a.ID] || a.ID != s.inflight {
			return fmt.Errorf("complete %d before its commit succeeded", a.ID)
		}
		s.latest, s.inflight = a.ID, 0
		s.completed++
		if !s.kept[a.ID] {
			s.plain = append(s.plain, a.ID)
		}
	case Abort:
		if a.ID != s.inflight || !s.injected[a.ID] {
			return fmt.Errorf("abort %d while %d in flight", a.ID, s.inflight)
		}
		if s.committedOK[a.ID] {
			return fmt.Errorf("abort %d after its commit succeeded", a.ID)
		}
		s.inflight = 0
	case DeleteCheckpoint:
		if sp, ok := s.kept[a.ID]; ok && sp {
			return fmt.Errorf("delete of savepoint %d", a.ID)
		}
		if a.ID == s.inflight && !s.injected[a.ID] {
			return fmt.Errorf("delete of %d in flight", a.ID)
		}
		delete(s.kept, a.ID)
	case Reply:
		if !s.tokens[a.Token] {
			return fmt.Errorf("reply to token %d: not outstanding", a.Token)
		}
		delete(s.tokens, a.Token)
	case FailJob:
		if s.cfg.TolerableFailures == Unlimited {
			return fmt.Errorf("job failed with unlimited tolerable failures")
		}
		s.failed, s.inflight = true, 0
	case Stopped:
		if len(s.tokens) != 0 {
			return fmt.Errorf("stopped with %d triggers unanswered", len(s.tokens))
		}
		s.stopped = true
	case Rejected:
	default:
		return fmt.Errorf("unexpected action %T", a)
	}
	return nil
}

// checkRetention: the kept checkpoints are the newest K complete ones plus
// every savepoint, and the coordinator agrees.
func (s *sim) checkRetention() error {
	var plain []uint64
	for id, sp := range s.kept {
		if !sp {
			plain = append(plain, id)
		}
	}
	slices.Sort(plain)
	want := s.plain[max(0, len(s.plain)-s.cfg.Retained):]
	if !slices.Equal(plain, want) {
		return fmt.Errorf("kept checkpoints %v, want the newest %d of %v", plain, s.cfg.Retained, s.plain)
	}
	st := s.c.Status()
	if !slices.Equal(st.Retained, want) {
		return fmt.Errorf("coordinator retains %v, want %v", st.Retained, want)
	}
	return nil
}

func actionName(a Action) string {
	return strings.TrimPrefix(reflect.TypeOf(a).String(), "checkpoint.")
}
