package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/meshflow/meshflow/cluster/checkpoint"
	"github.com/meshflow/meshflow/internal/logging"
	"github.com/meshflow/meshflow/internal/natsembed"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
	"github.com/meshflow/meshflow/messages/pb"
)

// ckptEnv is an embedded JetStream server with the checkpoint store, an
// object store for snapshots and an actor system to run coordinators in.
type ckptEnv struct {
	t     *testing.T
	ctx   context.Context
	url   string
	nc    *nats.Conn
	store *checkpoint.Store
	obs   jetstream.ObjectStore
	sys   *actor.ActorSystem
}

func newCkptEnv(t *testing.T) *ckptEnv {
	t.Helper()
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	js := natstest.JetStream(t, nc)
	ctx := testutil.Context(t, 2*time.Minute)
	store, err := checkpoint.OpenStore(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	obs, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "snapshots", Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return logging.Discard() }))
	return &ckptEnv{t: t, ctx: ctx, url: serverURL(srv), nc: nc, store: store, obs: obs, sys: sys}
}

// objectDeleter deletes the snapshot objects <job>/<id>/... of a
// checkpoint from an object store.
type objectDeleter struct{ obs jetstream.ObjectStore }

func (o objectDeleter) DeleteCheckpoint(ctx context.Context, job string, id uint64) error {
	infos, err := o.obs.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil
	}
	if err != nil {
		return err
	}
	prefix := fmt.Sprintf("%s/%d/", job, id)
	for _, info := range infos {
		if strings.HasPrefix(info.Name, prefix) {
			if err := o.obs.Delete(ctx, info.Name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
				return err
			}
		}
	}
	return nil
}

// testTasks are a job's tasks speaking the checkpoint protocol over NATS:
// on INJECT each task uploads a snapshot object and acks it with an
// alignment time of 100 µs, or declines with decline when it is set.
type testTasks struct {
	e       *ckptEnv
	job     string
	tasks   []string
	decline string
}

func (e *ckptEnv) startTasks(job string, tasks []string, decline string) {
	f := &testTasks{e: e, job: job, tasks: tasks, decline: decline}
	sub, err := e.nc.Subscribe(checkpoint.CommandSubject(job), f.onCommand)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := e.nc.Flush(); err != nil {
		e.t.Fatal(err)
	}
}

func (f *testTasks) onCommand(m *nats.Msg) {
	var cmd pb.CheckpointCommand
	if err := proto.Unmarshal(m.Data, &cmd); err != nil {
		f.e.t.Errorf("undecodable command: %v", err)
		return
	}
	if cmd.Kind != pb.CheckpointCommand_KIND_INJECT {
		return
	}
	for _, task := range f.tasks {
		op, idx, err := checkpoint.ParseTask(task)
		if err != nil {
			f.e.t.Error(err)
			return
		}
		ack := &pb.CheckpointAck{Job: f.job, Id: cmd.Id, Operator: op, Instance: int32(idx),
			AlignmentUs: 100, SyncUs: 10, AsyncUs: 1000}
		if f.decline != "" {
			ack.Error = f.decline
		} else {
			ack.Object = fmt.Sprintf("%s/%d/%s", f.job, cmd.Id, task)
			info, err := f.e.obs.PutBytes(f.e.ctx, ack.Object, []byte("state of "+ack.Object))
			if err != nil {
				f.e.t.Errorf("upload %s: %v", ack.Object, err)
				return
			}
			ack.Size = info.Size
		}
		data, err := proto.Marshal(ack)
		if err != nil {
			f.e.t.Error(err)
			return
		}
		if err := f.e.nc.Publish(checkpoint.AckSubject(f.job), data); err != nil {
			f.e.t.Error(err)
		}
	}
}

// startJob runs the coordinator of job with tasks answering it (none when
// tasks is nil: nobody acks), checkpointing every interval.
func (e *ckptEnv) startJob(job string, tasks []string, interval time.Duration, decline string) *checkpoint.Driver {
	e.t.Helper()
	if tasks != nil {
		e.startTasks(job, tasks, decline)
	}
	if tasks == nil {
		tasks = []string{"src/0"}
	}
	restored, err := e.store.Restored(e.ctx, job)
	if err != nil {
		e.t.Fatal(err)
	}
	cfg := checkpoint.DefaultConfig(job, tasks)
	cfg.Interval, cfg.Retained = interval, 2
	d, err := checkpoint.StartDriver(e.ctx, checkpoint.DriverConfig{
		NATS: e.nc, System: e.sys, Store: e.store, Deleter: objectDeleter{e.obs},
		Config: cfg, Restored: restored, Logger: testutil.TestLogger(e.t),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(d.Close)
	return d
}

// t0 is the trigger time of the checkpoints tests commit.
var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

// commitMeta commits checkpoint id of job, triggered id minutes after t0,
// taking 1.5 s, with a task per size.
func commitMeta(t *testing.T, store *checkpoint.Store, job string, id uint64, savepoint bool, sizes ...uint64) *pb.CheckpointMeta {
	t.Helper()
	start := t0.Add(time.Duration(id) * time.Minute)
	m := &pb.CheckpointMeta{Job: job, Id: id, Savepoint: savepoint,
		TriggerTimeUs: start.UnixMicro(), CompleteTimeUs: start.Add(1500 * time.Millisecond).UnixMicro(),
		DurationUs: 1_500_000, MaxAlignmentUs: 2500}
	for i, s := range sizes {
		m.Size += s
		m.Tasks = append(m.Tasks, &pb.TaskSnapshot{Operator: "op", Instance: int32(i), Size: s, AlignmentUs: 2500})
	}
	if err := store.SetAttempt(t.Context(), job, id); err != nil {
		t.Fatal(err)
	}
	if err := store.Commit(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	return m
}

// decodeLines decodes JSON lines.
func decodeLines[T any](t *testing.T, out string) []T {
	t.Helper()
	var got []T
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var v T
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("JSON output %q: %v", out, err)
		}
		got = append(got, v)
	}
	if strings.Count(out, "\n") != len(got) {
		t.Fatalf("JSON output %q: want one object per line", out)
	}
	return got
}

// TestCheckpointsList lists checkpoints committed through the store: a
// domain's job by its name and by the domain's name, a job without
// complete checkpoints, JSON output, unknown jobs and bad names.
func TestCheckpointsList(t *testing.T) {
	e := newCkptEnv(t)
	commitMeta(t, e.store, "shop.pipeline", 1, false, 100)
	commitMeta(t, e.store, "shop.pipeline", 2, true, 1000, 600, 2048)
	commitMeta(t, e.store, "shop.pipeline", 3, false, 3<<20, 1<<20)
	// A job that ran but never completed a checkpoint.
	if err := e.store.SetStatus(t.Context(), "orders", &pb.JobStatus{State: pb.JobState_JOB_STATE_STOPPED}); err != nil {
		t.Fatal(err)
	}
	table := `Job shop.pipeline
ID  KIND        TIME                      SIZE     DURATION  ALIGNMENT  TASKS  LATEST
1   checkpoint  2026-11-30T12:01:01.500Z  100 B    1.5s      2.5ms      1
2   savepoint   2026-11-30T12:02:01.500Z  3.6 KiB  1.5s      2.5ms      3
3   checkpoint  2026-11-30T12:03:01.500Z  4.0 MiB  1.5s      2.5ms      2      yes (a restart restores it)
`
	for _, tc := range []struct {
		name   string
		args   []string
		stdout string // exact, unless empty
		errs   []string
		usage  bool
	}{
		{name: "domain job", args: []string{"shop.pipeline"}, stdout: table},
		{name: "domain shorthand", args: []string{"shop"},
			stdout: strings.Replace(table, "Job shop.pipeline\n", "Job shop.pipeline (the pipeline of domain shop)\n", 1)},
		{name: "no complete checkpoint", args: []string{"orders"}, stdout: "Job orders\nNo complete checkpoint or savepoint.\n"},
		{name: "unknown job", args: []string{"nope"},
			errs: []string{`checkpoints: unknown job "nope": no checkpoint records for it nor for nope.pipeline (jobs with checkpoint records: orders, shop.pipeline)`}},
		{name: "unknown domain job", args: []string{"nope.pipeline"},
			errs: []string{`unknown job "nope.pipeline": no checkpoint records for it (`}},
		{name: "bad name", args: []string{"a.b.c"}, usage: true, errs: []string{`invalid job name "a.b.c"`}},
		{name: "wildcard", args: []string{"shop.*"}, usage: true, errs: []string{`invalid job name "shop.*"`}},
		{name: "two jobs", args: []string{"shop", "orders"}, usage: true, errs: []string{"wants one JOB, got 2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t.Context(), "", append([]string{"checkpoints", "list", "-s", e.url}, tc.args...)...)
			if tc.errs == nil && r.err != nil {
				t.Fatalf("list: %v", r.err)
			}
			for _, want := range tc.errs {
				if r.err == nil || !strings.Contains(r.err.Error(), want) {
					t.Fatalf("error %v, want one containing %q", r.err, want)
				}
			}
			if r.err != nil && IsUsageError(r.err) != tc.usage {
				t.Errorf("usage error %v, want %v", IsUsageError(r.err), tc.usage)
			}
			if tc.stdout != "" && r.stdout != tc.stdout {
				t.Errorf("stdout:\n%s\nwant:\n%s", r.stdout, tc.stdout)
			}
		})
	}

	t.Run("json", func(t *testing.T) {
		for _, name := range []string{"shop.pipeline", "shop"} {
			r := run(t.Context(), "", "checkpoints", "list", name, "-o", "json", "-s", e.url)
			if r.err != nil {
				t.Fatal(r.err)
			}
			got := decodeLines[listedCheckpointJSON](t, r.stdout)
			want := []listedCheckpointJSON{
				{checkpointJSON{Job: "shop.pipeline", ID: 1, Kind: "checkpoint", TriggerTime: "2026-11-30T12:01:00.000Z",
					CompleteTime: "2026-11-30T12:01:01.500Z", SizeBytes: 100, DurationUs: 1_500_000, MaxAlignmentUs: 2500, Tasks: 1}, false},
				{checkpointJSON{Job: "shop.pipeline", ID: 2, Kind: "savepoint", TriggerTime: "2026-11-30T12:02:00.000Z",
					CompleteTime: "2026-11-30T12:02:01.500Z", SizeBytes: 3648, DurationUs: 1_500_000, MaxAlignmentUs: 2500, Tasks: 3}, false},
				{checkpointJSON{Job: "shop.pipeline", ID: 3, Kind: "checkpoint", TriggerTime: "2026-11-30T12:03:00.000Z",
					CompleteTime: "2026-11-30T12:03:01.500Z", SizeBytes: 4 << 20, DurationUs: 1_500_000, MaxAlignmentUs: 2500, Tasks: 2}, true},
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s -o json:\n%+v\nwant\n%+v", name, got, want)
			}
		}
		// A job without complete checkpoints prints nothing.
		if r := run(t.Context(), "", "checkpoints", "list", "orders", "-o", "json", "-s", e.url); r.err != nil || r.stdout != "" {
			t.Errorf("orders -o json: %q, %v", r.stdout, r.err)
		}
	})

	t.Run("name before shorthand", func(t *testing.T) {
		// A pipeline named like a domain is listed as itself.
		commitMeta(t, e.store, "shop", 7, false, 1)
		r := run(t.Context(), "", "checkpoints", "list", "shop", "-o", "json", "-s", e.url)
		got := decodeLines[listedCheckpointJSON](t, r.stdout)
		if r.err != nil || len(got) != 1 || got[0].Job != "shop" || got[0].ID != 7 || !got[0].Latest {
			t.Fatalf("list shop: %+v, %v", got, r.err)
		}
	})
}

// TestCheckpointsListNoBucket: on a server where no job ever ran, a job
// is unknown, and listing it does not create the checkpoint bucket.
func TestCheckpointsListNoBucket(t *testing.T) {
	srv := natstest.RunJetStream(t)
	js := natstest.JetStream(t, natstest.Connect(t, srv))
	for _, args := range [][]string{
		{"checkpoints", "list", "orders"},
		{"checkpoints", "trigger", "orders"},
		{"savepoint", "orders.pipeline"},
	} {
		r := run(t.Context(), "", append(args, "-s", serverURL(srv))...)
		if r.err == nil || !strings.Contains(r.err.Error(), `unknown job "orders`) ||
			!strings.Contains(r.err.Error(), "no job has checkpoint records on this server") {
			t.Fatalf("%v: %v", args, r.err)
		}
	}
	if _, err := js.KeyValue(t.Context(), checkpoint.Bucket); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("bucket after the commands: %v, want it still absent", err)
	}
}

// TestCheckpointsListFromDriver lists what a running coordinator made:
// periodic checkpoints (the last two retained), a savepoint taken with the
// CLI, and the final checkpoint of its stop, marked latest.
func TestCheckpointsListFromDriver(t *testing.T) {
	e := newCkptEnv(t)
	const job = "shop.pipeline"
	tasks := []string{"src/0", "map/0", "map/1", "sink/0"}
	d := e.startJob(job, tasks, 20*time.Millisecond, "")
	r := run(t.Context(), "", "savepoint", "shop", "-o", "json", "-s", e.url)
	if r.err != nil {
		t.Fatal(r.err)
	}
	sp := decodeLines[checkpointJSON](t, r.stdout)[0]
	testutil.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		m, err := e.store.Latest(e.ctx, job)
		if err != nil || m.GetId() < sp.ID+3 {
			return fmt.Errorf("latest %d, %v", m.GetId(), err)
		}
		return nil
	})
	final, err := d.Stop(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	r = run(t.Context(), "", "checkpoints", "list", "shop", "-o", "json", "-s", e.url)
	if r.err != nil {
		t.Fatal(r.err)
	}
	got := decodeLines[listedCheckpointJSON](t, r.stdout)
	var ids []uint64
	for _, c := range got {
		ids = append(ids, c.ID)
		if c.Job != job || c.Tasks != len(tasks) || c.SizeBytes == 0 || c.MaxAlignmentUs != 100 || c.Latest != (c.ID == final.Id) ||
			(c.Kind == "savepoint") != (c.ID == sp.ID) {
			t.Errorf("listed %+v (savepoint %d, final %d)", c, sp.ID, final.Id)
		}
	}
	if want := []uint64{sp.ID, final.Id - 1, final.Id}; !slices.Equal(ids, want) {
		t.Fatalf("listed ids %v, want the savepoint and the last two checkpoints %v", ids, want)
	}
	r = run(t.Context(), "", "checkpoints", "list", job, "-s", e.url)
	if r.err != nil || !strings.Contains(r.stdout, fmt.Sprintf("\n%d ", sp.ID)) ||
		!strings.HasSuffix(r.stdout, "4      yes (a restart restores it)\n") {
		t.Fatalf("table: %v\n%s", r.err, r.stdout)
	}
}

// TestSavepointAndTrigger asks a running coordinator for savepoints and
// checkpoints, by the job's name and by its domain's, in both formats.
func TestSavepointAndTrigger(t *testing.T) {
	e := newCkptEnv(t)
	tasks := []string{"src/0", "map/0", "map/1", "sink/0"}
	// No periodic checkpoint: the ids are the commands'.
	e.startJob("shop.pipeline", tasks, time.Hour, "")
	e.startJob("payments", tasks[:1], time.Hour, "")
	// Each task's snapshot is "state of <job>/<id>/<task>".
	size := func(job string, id int, tasks ...string) int {
		n := 0
		for _, task := range tasks {
			n += len(fmt.Sprintf("state of %s/%d/%s", job, id, task))
		}
		return n
	}
	for _, tc := range []struct {
		name string
		args []string
		// table: the first line; json: the kind, job and id
		first     string
		job, kind string
		id        uint64
		size      int
		tasks     int
	}{
		// The first request finds the job by its coordinator: no record
		// is written before it.
		{name: "savepoint by domain, no records yet", args: []string{"savepoint", "shop"},
			first: "Savepoint 1 of job shop.pipeline (the pipeline of domain shop) complete"},
		{name: "savepoint by job", args: []string{"savepoint", "shop.pipeline"},
			first: "Savepoint 2 of job shop.pipeline complete"},
		{name: "trigger json", args: []string{"checkpoints", "trigger", "shop", "-o", "json"},
			job: "shop.pipeline", kind: "checkpoint", id: 3, size: size("shop.pipeline", 3, tasks...), tasks: 4},
		{name: "savepoint json", args: []string{"savepoint", "shop.pipeline", "-o", "json"},
			job: "shop.pipeline", kind: "savepoint", id: 4, size: size("shop.pipeline", 4, tasks...), tasks: 4},
		{name: "trigger a pipeline", args: []string{"checkpoints", "trigger", "payments"},
			first: "Checkpoint 1 of job payments complete"},
		{name: "savepoint of a pipeline json", args: []string{"savepoint", "payments", "-o", "json"},
			job: "payments", kind: "savepoint", id: 2, size: size("payments", 2, "src/0"), tasks: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t.Context(), "", append(tc.args, "-s", e.url)...)
			if r.err != nil {
				t.Fatalf("%v: %v", tc.args, r.err)
			}
			if tc.first != "" {
				lines := strings.Split(r.stdout, "\n")
				if len(lines) != 4 || lines[0] != tc.first ||
					!strings.HasPrefix(lines[1], "ID  KIND ") || !strings.HasSuffix(lines[1], "  ALIGNMENT  TASKS") {
					t.Fatalf("stdout:\n%s\nwant first line %q and a one-row table", r.stdout, tc.first)
				}
				return
			}
			got := decodeLines[checkpointJSON](t, r.stdout)
			if len(got) != 1 || strings.Contains(r.stdout, `"latest"`) {
				t.Fatalf("stdout %q: want one object", r.stdout)
			}
			c := got[0]
			if c.Job != tc.job || c.Kind != tc.kind || c.ID != tc.id || c.SizeBytes != uint64(tc.size) || c.Tasks != tc.tasks ||
				c.MaxAlignmentUs != 100 || c.DurationUs <= 0 {
				t.Fatalf("%+v, want job %s kind %s id %d size %d tasks %d alignment 100", c, tc.job, tc.kind, tc.id, tc.size, tc.tasks)
			}
			if _, err := time.Parse(time.RFC3339, c.CompleteTime); err != nil {
				t.Errorf("complete_time: %v", err)
			}
		})
	}
	// The table row of a savepoint.
	r := run(t.Context(), "", "savepoint", "shop", "-s", e.url)
	if r.err != nil {
		t.Fatal(r.err)
	}
	row := strings.Fields(strings.Split(r.stdout, "\n")[2])
	if len(row) != 8 || row[0] != "5" || row[1] != "savepoint" || row[6] != "100µs" || row[7] != "4" ||
		row[3]+" "+row[4] != formatBytes(uint64(size("shop.pipeline", 5, tasks...))) {
		t.Fatalf("row %q", row)
	}
	// Savepoints are kept, checkpoints beyond the last two are not.
	list, err := e.store.List(e.ctx, "shop.pipeline")
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, m := range list {
		kept = append(kept, fmt.Sprintf("%d %s", m.Id, kind(m)))
	}
	if want := []string{"1 savepoint", "2 savepoint", "3 checkpoint", "4 savepoint", "5 savepoint"}; !slices.Equal(kept, want) {
		t.Fatalf("kept %v, want %v", kept, want)
	}

	// Checkpoints taken on demand are deleted by retention like periodic
	// ones: of 3, 6 and 7 the last two are kept.
	for range 2 {
		if r := run(t.Context(), "", "checkpoints", "trigger", "shop", "-s", e.url); r.err != nil {
			t.Fatal(r.err)
		}
	}
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		list, err := e.store.List(e.ctx, "shop.pipeline")
		if err != nil {
			return err
		}
		var got []uint64
		for _, m := range list {
			got = append(got, m.Id)
		}
		if want := []uint64{1, 2, 4, 5, 6, 7}; !slices.Equal(got, want) {
			return fmt.Errorf("kept %v, want %v", got, want)
		}
		return nil
	})

	// A running pipeline named like the domain is itself, though only the
	// domain's job has records.
	e.startJob("shop", tasks[:1], time.Hour, "")
	r = run(t.Context(), "", "savepoint", "shop", "-s", e.url)
	if r.err != nil || !strings.HasPrefix(r.stdout, "Savepoint 1 of job shop complete\n") {
		t.Fatalf("savepoint of pipeline shop: %v\n%s", r.err, r.stdout)
	}
}

// TestSavepointNotRunning: a job nobody coordinates is reported in one
// line, as unknown or as not running according to its records, with a
// non-zero exit; so are a checkpoint that fails and one that does not
// complete in time.
func TestSavepointNotRunning(t *testing.T) {
	e := newCkptEnv(t)
	commitMeta(t, e.store, "shop.pipeline", 1, false, 10)
	stoppedAt := time.Date(2026, 11, 30, 13, 0, 0, 0, time.UTC)
	if err := e.store.SetStatus(t.Context(), "orders", &pb.JobStatus{State: pb.JobState_JOB_STATE_FAILED, Error: "sink down", TimeUs: stoppedAt.UnixMicro()}); err != nil {
		t.Fatal(err)
	}
	e.startJob("flaky", []string{"src/0"}, time.Hour, "disk full")
	e.startJob("stuck", nil, time.Hour, "")
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"known by domain", []string{"savepoint", "shop"}, ExitError,
			"meshflow: savepoint: job shop.pipeline (the pipeline of domain shop) is not running: no coordinator answers; its retained checkpoints: meshflow checkpoints list shop.pipeline"},
		{"known with status", []string{"checkpoints", "trigger", "orders"}, ExitError,
			"meshflow: checkpoints trigger: job orders is not running: no coordinator answers; last status: failed (sink down) at 2026-11-30T13:00:00.000Z; its retained checkpoints: meshflow checkpoints list orders"},
		{"unknown", []string{"savepoint", "nope"}, ExitError,
			`meshflow: savepoint: unknown job "nope": no coordinator runs it nor nope.pipeline and it has no checkpoint records (jobs with checkpoint records: orders, shop.pipeline)`},
		{"unknown domain job", []string{"checkpoints", "trigger", "nope.pipeline"}, ExitError,
			`meshflow: checkpoints trigger: unknown job "nope.pipeline": no coordinator runs it and it has no checkpoint records`},
		{"declined", []string{"savepoint", "flaky"}, ExitError,
			`meshflow: savepoint: job flaky: checkpoint: trigger failed: job "flaky": checkpoint: aborted: checkpoint 1 declined by src/0: disk full`},
		{"timeout", []string{"savepoint", "stuck", "--timeout", "300ms"}, ExitError,
			"meshflow: savepoint: job stuck: not complete within --timeout 300ms; it may still complete: meshflow checkpoints list stuck"},
		{"bad timeout", []string{"savepoint", "stuck", "--timeout", "0s"}, ExitUsage,
			"meshflow: invalid --timeout 0s: must be positive"},
		{"bad name", []string{"savepoint", "shop pipeline"}, ExitUsage, `meshflow: invalid job name "shop pipeline"`},
		{"no job", []string{"savepoint"}, ExitUsage, "meshflow: meshflow savepoint wants one JOB, got 0 arguments"},
		{"unknown list", []string{"checkpoints", "list", "nope"}, ExitError, `meshflow: checkpoints: unknown job "nope"`},
		{"unknown subcommand", []string{"checkpoints", "restore", "shop"}, ExitUsage, `meshflow: unknown command "restore" for "meshflow checkpoints"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := tc.args
			if args[0] != "checkpoints" || args[1] != "restore" {
				args = append(args, "-s", e.url)
			}
			code := Main(t.Context(), args, strings.NewReader(""), &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tc.code, stderr.String())
			}
			if !strings.HasPrefix(stderr.String(), tc.stderr) || strings.Count(stderr.String(), "\n") != 1 {
				t.Errorf("stderr %q, want one line starting %q", stderr.String(), tc.stderr)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q, want nothing", stdout.String())
			}
		})
	}
}

// TestCheckpointTimeoutFlag: savepoint and trigger wait 2 minutes for the
// checkpoint by default; list waits for the server as other commands do.
// All take the connection flags and --output.
func TestCheckpointTimeoutFlag(t *testing.T) {
	root := NewRootCmd(&Env{Getenv: func(string) string { return "" }})
	for cmd, want := range map[string]string{
		"savepoint": "2m0s", "checkpoints trigger": "2m0s", "checkpoints list": "5s",
	} {
		c, _, err := root.Find(strings.Fields(cmd))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Flags().Lookup("timeout").DefValue; got != want {
			t.Errorf("%s --timeout default %s, want %s", cmd, got, want)
		}
		for _, f := range []string{"server", "user", "password", "creds", "inbox-prefix", "output"} {
			if c.Flags().Lookup(f) == nil {
				t.Errorf("%s has no --%s", cmd, f)
			}
		}
	}
}

// TestCheckpointsBinary drives the meshflow binary against a real
// nats-server: it lists a job's checkpoints in both formats, and exits 1
// for an unknown job and 2 for a bad name, with one line on stderr.
func TestCheckpointsBinary(t *testing.T) {
	url := runNATSServer(t, "mf", "s3cret")
	nc, err := nats.Connect(url, nats.UserInfo("mf", "s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	store, err := checkpoint.OpenStore(t.Context(), js)
	if err != nil {
		t.Fatal(err)
	}
	commitMeta(t, store, "orders.pipeline", 4, true, 10, 20)
	commitMeta(t, store, "orders.pipeline", 5, false, 30)
	bin := filepath.Join(t.TempDir(), "meshflow")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/meshflow/meshflow/cmd/meshflow").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	auth := []string{"-s", url, "--user", "mf", "--password", "s3cret"}
	meshflow := func(args ...string) (stdout, stderr string, code int) {
		var out, errOut bytes.Buffer
		cmd := exec.Command(bin, append(args, auth...)...)
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return out.String(), errOut.String(), exit.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return out.String(), errOut.String(), 0
	}
	out, errOut, code := meshflow("checkpoints", "list", "orders")
	want := `Job orders.pipeline (the pipeline of domain orders)
ID  KIND        TIME                      SIZE  DURATION  ALIGNMENT  TASKS  LATEST
4   savepoint   2026-11-30T12:04:01.500Z  30 B  1.5s      2.5ms      2
5   checkpoint  2026-11-30T12:05:01.500Z  30 B  1.5s      2.5ms      1      yes (a restart restores it)
`
	if code != 0 || out != want {
		t.Fatalf("list: exit %d, stderr %q, stdout:\n%s\nwant:\n%s", code, errOut, out, want)
	}
	out, _, code = meshflow("checkpoints", "list", "orders.pipeline", "-o", "json")
	got := decodeLines[listedCheckpointJSON](t, out)
	if code != 0 || len(got) != 2 || got[0].Kind != "savepoint" || got[1].ID != 5 || !got[1].Latest {
		t.Fatalf("list -o json: exit %d, %+v", code, got)
	}
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"checkpoints", "list", "nope"}, ExitError,
			`meshflow: checkpoints: unknown job "nope": no checkpoint records for it nor for nope.pipeline (jobs with checkpoint records: orders.pipeline)`},
		{[]string{"savepoint", "nope"}, ExitError, `meshflow: savepoint: unknown job "nope"`},
		{[]string{"checkpoints", "list", "a.b.c"}, ExitUsage, `meshflow: invalid job name "a.b.c"`},
	} {
		out, errOut, code := meshflow(tc.args...)
		if code != tc.code || out != "" || !strings.HasPrefix(errOut, tc.stderr) || strings.Count(errOut, "\n") != 1 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d and one line starting %q", tc.args, code, out, errOut, tc.code, tc.stderr)
		}
	}
}

// TestCheckpointsListMatchesStore: list shows what checkpoint.Store holds
// complete, also when the latest checkpoint's record was deleted (the
// newest below it is the latest) and when a record above latest was
// written by a coordinator that stopped before moving latest (not
// complete, not shown); and it leaves the bucket's configuration alone.
func TestCheckpointsListMatchesStore(t *testing.T) {
	e := newCkptEnv(t)
	const job = "gaps"
	commitMeta(t, e.store, job, 1, true, 5)
	commitMeta(t, e.store, job, 2, false, 5)
	commitMeta(t, e.store, job, 3, false, 5)
	if err := e.store.Delete(t.Context(), job, 3); err != nil {
		t.Fatal(err)
	}
	js := natstest.JetStream(t, e.nc)
	kv, err := js.KeyValue(t.Context(), checkpoint.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := proto.Marshal(&pb.CheckpointMeta{Job: job, Id: 4})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(t.Context(), job+".meta.4", orphan); err != nil {
		t.Fatal(err)
	}
	// A configuration the CLI does not know of.
	kvStream, err := js.Stream(t.Context(), "KV_"+checkpoint.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	cfg := kvStream.CachedInfo().Config
	cfg.Description = "changed by the operator"
	if _, err := js.UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}

	r := run(t.Context(), "", "checkpoints", "list", job, "-o", "json", "-s", e.url)
	if r.err != nil {
		t.Fatal(r.err)
	}
	got := decodeLines[listedCheckpointJSON](t, r.stdout)
	want, err := e.store.List(t.Context(), job)
	if err != nil {
		t.Fatal(err)
	}
	latest, err := e.store.Latest(t.Context(), job)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || len(want) != 2 || latest.GetId() != 2 {
		t.Fatalf("listed %+v; the store holds %d complete, latest %d", got, len(want), latest.GetId())
	}
	for i, m := range want {
		if got[i] != listedCheckpoint(m, latest) {
			t.Errorf("listed %+v, the store holds %+v", got[i], listedCheckpoint(m, latest))
		}
	}
	info, err := kvStream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Description != cfg.Description {
		t.Errorf("the bucket's description is %q after list, was %q", info.Config.Description, cfg.Description)
	}
}

// TestCheckpointsDenied: a user the server refuses the bucket or the
// trigger subject gets one line saying so, at once rather than after
// --timeout (the test would wait out the minute otherwise).
func TestCheckpointsDenied(t *testing.T) {
	srv, err := natsembed.Start(t.Context(), natsembed.Config{
		StoreDir: t.TempDir(), Port: -1,
		Users: []natsembed.User{
			{Name: "admin", Password: "a", Publish: []string{">"}, Subscribe: []string{">"}},
			// May reach JetStream but not the trigger subjects.
			{Name: "kvonly", Password: "k", Publish: []string{"$JS.API.>"}, Subscribe: []string{"_INBOX.>"}},
			// May reach neither.
			{Name: "nobody", Password: "n", Publish: []string{"$JS.API.INFO"}, Subscribe: []string{"_INBOX.>"}},
			// May do anything, with replies under its own inbox prefix.
			{Name: "inboxed", Password: "i", Publish: []string{">"}, Subscribe: []string{"_INBOX_inboxed.>"}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	nc := natstest.Connect(t, srv, nats.UserInfo("admin", "a"))
	store, err := checkpoint.OpenStore(t.Context(), natstest.JetStream(t, nc))
	if err != nil {
		t.Fatal(err)
	}
	commitMeta(t, store, "orders.pipeline", 1, false, 10)
	for _, tc := range []struct {
		user string
		args []string
	}{
		{"nobody", []string{"checkpoints", "list", "orders"}},
		{"nobody", []string{"savepoint", "orders"}},
		{"kvonly", []string{"savepoint", "orders"}},
		{"kvonly", []string{"checkpoints", "trigger", "orders.pipeline"}},
	} {
		t.Run(tc.user+" "+strings.Join(tc.args, " "), func(t *testing.T) {
			r := run(t.Context(), "", append(tc.args, "-s", serverURL(srv), "--user", tc.user, "--password", tc.user[:1], "--timeout", "1m")...)
			if r.err == nil || !strings.Contains(r.err.Error(), "the server denies this user what the checkpoint commands need") ||
				!strings.Contains(r.err.Error(), "Permissions Violation") {
				t.Fatalf("error %v", r.err)
			}
		})
	}
	r := run(t.Context(), "", "savepoint", "orders", "-s", serverURL(srv), "--user", "inboxed", "--password", "i")
	if r.err == nil || !strings.Contains(r.err.Error(), "the server denies this user the inbox prefix _INBOX: set --inbox-prefix to the user's own") {
		t.Fatalf("inboxed without its prefix: %v", r.err)
	}
	r = run(t.Context(), "", "checkpoints", "list", "orders", "-s", serverURL(srv), "--user", "inboxed", "--password", "i", "--inbox-prefix", "_INBOX_inboxed")
	if r.err != nil || !strings.Contains(r.stdout, "yes (a restart restores it)") {
		t.Fatalf("inboxed list: %v\n%s", r.err, r.stdout)
	}
	// The user that may read the bucket lists it.
	if r := run(t.Context(), "", "checkpoints", "list", "orders", "-s", serverURL(srv), "--user", "kvonly", "--password", "k"); r.err != nil ||
		!strings.Contains(r.stdout, "yes (a restart restores it)") {
		t.Fatalf("kvonly list: %v\n%s", r.err, r.stdout)
	}
}
