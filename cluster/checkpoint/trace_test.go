package checkpoint

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshflow/meshflow/messages/pb"
)

// Trace tests replay testdata/*.trace through a Coordinator. A trace is a
// list of blocks separated by blank lines; '#' lines between blocks are
// comments. A block is one command, a line "----", and the actions the
// command produced, one per line:
//
//	ack 1.2s id=1 task=src/0 size=10
//	----
//	commit id=1 ...
//
// Times are offsets from t0. Run with -rewrite to regenerate the expected
// actions after a deliberate change, then read the diff.
var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of testdata/*.trace")

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestTraces(t *testing.T) {
	files, err := filepath.Glob("testdata/*.trace")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no trace files")
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".trace"), func(t *testing.T) { runTrace(t, f) })
	}
}

type block struct {
	comments []string // lines before the command
	line     int
	cmd      string
	want     []string
}

// parseTrace reads the blocks of a trace file.
func parseTrace(path string, data string) ([]block, []string, error) {
	lines := strings.Split(strings.TrimRight(data, "\n"), "\n")
	var blocks []block
	var pending []string
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		trimmed := strings.TrimSpace(l)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			pending = append(pending, l)
			continue
		}
		b := block{comments: pending, line: i + 1, cmd: trimmed}
		pending = nil
		if i+1 >= len(lines) || strings.TrimSpace(lines[i+1]) != "----" {
			return nil, nil, fmt.Errorf("%s:%d: command %q not followed by ----", path, i+1, trimmed)
		}
		i += 2
		for ; i < len(lines) && strings.TrimSpace(lines[i]) != ""; i++ {
			b.want = append(b.want, strings.TrimSpace(lines[i]))
		}
		i-- // the blank line (if any) separates: keep it
		blocks = append(blocks, b)
	}
	return blocks, pending, nil
}

func runTrace(t *testing.T, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blocks, tail, err := parseTrace(path, string(data))
	if err != nil {
		t.Fatal(err)
	}
	r := &traceRunner{}
	var out strings.Builder
	for _, b := range blocks {
		got, err := r.run(b.cmd)
		if err != nil {
			t.Fatalf("%s:%d: %v", path, b.line, err)
		}
		if len(got) == 0 {
			got = []string{"(no actions)"}
		}
		for _, c := range b.comments {
			out.WriteString(c + "\n")
		}
		out.WriteString(b.cmd + "\n----\n" + strings.Join(got, "\n") + "\n")
		if !*rewrite && !slices.Equal(got, b.want) {
			t.Errorf("%s:%d: %s\n--- want\n%s\n--- got\n%s", path, b.line, b.cmd,
				strings.Join(b.want, "\n"), strings.Join(got, "\n"))
		}
	}
	for _, c := range tail {
		out.WriteString(c + "\n")
	}
	if *rewrite {
		if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// traceRunner holds a coordinator and a model of the store its actions
// write, so that "restart" rebuilds Restored as Store.Restored would.
type traceRunner struct {
	cfg Config
	c   *Coordinator

	attempt   uint64
	latest    uint64
	committed map[uint64]bool // id -> savepoint
	commits   map[uint64]bool // Commit asked: id -> savepoint
}

func (r *traceRunner) run(cmd string) ([]string, error) {
	name, args, err := splitArgs(cmd)
	if err != nil {
		return nil, err
	}
	if name == "new" {
		return r.newCoordinator(args)
	}
	if r.c == nil {
		return nil, errors.New("no coordinator: start with new")
	}
	var ev Event
	switch name {
	case "restart":
		restored := Restored{Attempt: r.attempt, Latest: r.latest}
		for id, sp := range r.committed {
			if sp {
				restored.Savepoints = append(restored.Savepoints, id)
			} else {
				restored.Retained = append(restored.Retained, id)
			}
		}
		r.c = New(r.cfg, restored)
		return []string{fmtStatus(r.c.Status())}, args.done()
	case "status":
		return []string{fmtStatus(r.c.Status())}, args.done()
	case "tick":
		ev = Tick{Now: args.time()}
	case "trigger":
		ev = Trigger{Now: args.time(), Token: args.uint("token"), Savepoint: args.flag("savepoint")}
	case "stop":
		ev = Stop{Now: args.time(), Token: args.uint("token"), Savepoint: args.flag("savepoint")}
	case "persisted":
		ev = Persisted{Now: args.time(), ID: args.uint("id"), Err: args.errArg()}
	case "committed":
		ev = Committed{Now: args.time(), ID: args.uint("id"), Err: args.errArg()}
	case "timeout":
		ev = TimeoutFired{Now: args.time(), ID: args.uint("id")}
	case "ack":
		a := Ack{Now: args.time(), ID: args.uint("id"), Task: args.str("task")}
		a.Handle = Handle{
			Object: args.opt("object", fmt.Sprintf("%s/%d/%s", r.cfg.Job, a.ID, a.Task)),
			Size:   args.optUint("size"), Alignment: args.optDur("align"),
			Sync: args.optDur("sync"), Async: args.optDur("async"),
		}
		ev = a
	case "decline":
		ev = Decline{Now: args.time(), ID: args.uint("id"), Task: args.str("task"), Reason: args.str("reason")}
	default:
		return nil, fmt.Errorf("unknown command %q", name)
	}
	if err := args.done(); err != nil {
		return nil, err
	}
	actions := r.c.Step(ev)
	r.model(ev, actions)
	out := make([]string, len(actions))
	for i, a := range actions {
		out[i] = fmtAction(a)
	}
	return out, nil
}

func (r *traceRunner) newCoordinator(args *traceArgs) ([]string, error) {
	cfg := DefaultConfig(args.str("job"), strings.Split(args.str("tasks"), ","))
	if v, ok := args.kv["interval"]; ok {
		cfg.Interval = args.dur("interval", v)
	}
	if v, ok := args.kv["min-pause"]; ok {
		cfg.MinPause = args.dur("min-pause", v)
	}
	if v, ok := args.kv["timeout"]; ok {
		cfg.Timeout = args.dur("timeout", v)
	}
	if _, ok := args.kv["retained"]; ok {
		cfg.Retained = int(args.uint("retained"))
	}
	if v, ok := args.kv["tolerable"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			args.fail(fmt.Errorf("tolerable: %w", err))
		}
		cfg.TolerableFailures = n
		delete(args.kv, "tolerable")
	}
	restored := Restored{Attempt: args.optUint("attempt"), Latest: args.optUint("latest"),
		Retained: args.ids("retained-ids"), Savepoints: args.ids("savepoints")}
	if err := args.done(); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r.cfg, r.c = cfg, New(cfg, restored)
	r.attempt, r.latest = restored.Attempt, restored.Latest
	r.committed, r.commits = map[uint64]bool{}, map[uint64]bool{}
	for _, id := range restored.Retained {
		r.committed[id] = false
	}
	for _, id := range restored.Savepoints {
		r.committed[id] = true
	}
	return []string{fmtStatus(r.c.Status())}, nil
}

// model applies to the store model what the driver would write.
func (r *traceRunner) model(ev Event, actions []Action) {
	switch e := ev.(type) {
	case Persisted:
		if e.Err == nil {
			r.attempt = max(r.attempt, e.ID)
		}
	case Committed:
		if sp, ok := r.commits[e.ID]; ok && e.Err == nil {
			r.committed[e.ID] = sp
			r.latest = e.ID
		}
	}
	for _, a := range actions {
		switch a := a.(type) {
		case Commit:
			r.commits[a.Meta.Id] = a.Meta.Savepoint
		case DeleteCheckpoint:
			delete(r.committed, a.ID)
		}
	}
}

func fmtStatus(s Status) string {
	return fmt.Sprintf("status in-flight=%d phase=%s acked=%d next=%d latest=%d retained=%s savepoints=%s queued=%d failures=%d%s%s%s",
		s.InFlight, s.Phase, s.Acked, s.Next, s.Latest, fmtIDs(s.Retained), fmtIDs(s.Savepoints),
		s.Queued, s.Failures, cond(s.Stopping, " stopping"), cond(s.Stopped, " stopped"),
		cond(s.Failed != "", " failed"))
}

func cond(b bool, s string) string {
	if b {
		return s
	}
	return ""
}

func fmtIDs(ids []uint64) string {
	if len(ids) == 0 {
		return "-"
	}
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.FormatUint(id, 10)
	}
	return strings.Join(s, ",")
}

func since(t time.Time) time.Duration { return t.Sub(t0) }

func fmtAction(a Action) string {
	switch a := a.(type) {
	case PersistAttempt:
		return fmt.Sprintf("persist-attempt id=%d", a.ID)
	case Inject:
		return fmt.Sprintf("inject id=%d ts=%v%s", a.ID, since(a.Timestamp), cond(a.Savepoint, " savepoint"))
	case ScheduleTimeout:
		return fmt.Sprintf("schedule-timeout id=%d at=%v", a.ID, since(a.At))
	case Commit:
		return "commit " + fmtMeta(a.Meta)
	case NotifyComplete:
		return fmt.Sprintf("notify-complete id=%d", a.ID)
	case Abort:
		return fmt.Sprintf("abort id=%d reason=%q", a.ID, a.Reason)
	case DeleteCheckpoint:
		return fmt.Sprintf("delete id=%d", a.ID)
	case Reply:
		if a.Err != nil {
			return fmt.Sprintf("reply token=%d err=%q", a.Token, a.Err.Error())
		}
		return fmt.Sprintf("reply token=%d id=%d%s", a.Token, a.Meta.Id, cond(a.Meta.Savepoint, " savepoint"))
	case FailJob:
		return fmt.Sprintf("fail-job reason=%q", a.Reason)
	case Rejected:
		return fmt.Sprintf("rejected reason=%q", a.Reason)
	case Stopped:
		return "stopped"
	}
	return fmt.Sprintf("unknown action %T", a)
}

func fmtMeta(m *pb.CheckpointMeta) string {
	tasks := make([]string, len(m.Tasks))
	for i, ts := range m.Tasks {
		tasks[i] = fmt.Sprintf("%s/%d:%s:%d", ts.Operator, ts.Instance, ts.Object, ts.Size)
	}
	us := func(v int64) time.Duration { return time.Duration(v) * time.Microsecond }
	return fmt.Sprintf("job=%s id=%d%s trigger=%v complete=%v duration=%v size=%d max-align=%v tasks=%s",
		m.Job, m.Id, cond(m.Savepoint, " savepoint"), since(time.UnixMicro(m.TriggerTimeUs)),
		since(time.UnixMicro(m.CompleteTimeUs)), us(m.DurationUs), m.Size, us(m.MaxAlignmentUs),
		strings.Join(tasks, ","))
}

// traceArgs are a command's arguments: a leading time, key=value pairs
// (values may be double-quoted) and bare flags.
type traceArgs struct {
	pos   []string
	kv    map[string]string
	flags map[string]bool
	err   error
}

func splitArgs(cmd string) (string, *traceArgs, error) {
	var fields []string
	var cur strings.Builder
	inQuote, started := false, false
	for i := 0; i < len(cmd); i++ {
		ch := cmd[i]
		switch {
		case ch == '"':
			inQuote = !inQuote
			started = true
		case ch == '\\' && inQuote && i+1 < len(cmd):
			i++
			cur.WriteByte(cmd[i])
		case ch == ' ' && !inQuote:
			if started {
				fields = append(fields, cur.String())
				cur.Reset()
				started = false
			}
		default:
			cur.WriteByte(ch)
			started = true
		}
	}
	if inQuote {
		return "", nil, fmt.Errorf("unterminated quote in %q", cmd)
	}
	if started {
		fields = append(fields, cur.String())
	}
	a := &traceArgs{kv: map[string]string{}, flags: map[string]bool{}}
	for _, f := range fields[1:] {
		if k, v, ok := strings.Cut(f, "="); ok {
			a.kv[k] = v
		} else if _, err := time.ParseDuration(f); err == nil && len(a.pos) == 0 {
			a.pos = append(a.pos, f)
		} else {
			a.flags[f] = true
		}
	}
	return fields[0], a, nil
}

func (a *traceArgs) fail(err error) {
	if a.err == nil {
		a.err = err
	}
}

func (a *traceArgs) done() error {
	if a.err != nil {
		return a.err
	}
	for k := range a.kv {
		return fmt.Errorf("unknown argument %q", k)
	}
	for f := range a.flags {
		return fmt.Errorf("unknown flag %q", f)
	}
	return nil
}

func (a *traceArgs) time() time.Time {
	if len(a.pos) == 0 {
		a.fail(errors.New("missing time"))
		return t0
	}
	return t0.Add(a.dur("time", a.pos[0]))
}

func (a *traceArgs) dur(name, v string) time.Duration {
	delete(a.kv, name)
	d, err := time.ParseDuration(v)
	if err != nil {
		a.fail(fmt.Errorf("%s: %w", name, err))
	}
	return d
}

func (a *traceArgs) str(k string) string {
	v, ok := a.kv[k]
	if !ok {
		a.fail(fmt.Errorf("missing %s=", k))
	}
	delete(a.kv, k)
	return v
}

func (a *traceArgs) opt(k, def string) string {
	if v, ok := a.kv[k]; ok {
		delete(a.kv, k)
		return v
	}
	return def
}

func (a *traceArgs) uint(k string) uint64 {
	n, err := strconv.ParseUint(a.str(k), 10, 64)
	if err != nil {
		a.fail(fmt.Errorf("%s: %w", k, err))
	}
	return n
}

func (a *traceArgs) optUint(k string) uint64 {
	if _, ok := a.kv[k]; !ok {
		return 0
	}
	return a.uint(k)
}

func (a *traceArgs) optDur(k string) time.Duration {
	v, ok := a.kv[k]
	if !ok {
		return 0
	}
	return a.dur(k, v)
}

func (a *traceArgs) ids(k string) []uint64 {
	v, ok := a.kv[k]
	if !ok {
		return nil
	}
	delete(a.kv, k)
	var ids []uint64
	for _, s := range strings.Split(v, ",") {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			a.fail(fmt.Errorf("%s: %w", k, err))
		}
		ids = append(ids, n)
	}
	return ids
}

func (a *traceArgs) flag(f string) bool {
	ok := a.flags[f]
	delete(a.flags, f)
	return ok
}

func (a *traceArgs) errArg() error {
	v, ok := a.kv["err"]
	if !ok {
		return nil
	}
	delete(a.kv, "err")
	return errors.New(v)
}
