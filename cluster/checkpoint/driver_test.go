package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/meshflow/meshflow/internal/logging"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
	"github.com/meshflow/meshflow/messages/pb"
)

// driverEnv is an embedded JetStream server with the checkpoint store, an
// object store for snapshots, and an actor system.
type driverEnv struct {
	t     testing.TB
	ctx   context.Context
	nc    *nats.Conn
	store *Store
	obs   jetstream.ObjectStore
	sys   *actor.ActorSystem
}

func newDriverEnv(t testing.TB) *driverEnv {
	t.Helper()
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	js := natstest.JetStream(t, nc)
	ctx := testutil.Context(t, time.Minute)
	store, err := OpenStore(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	obs, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "snapshots", Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return logging.Discard() }))
	return &driverEnv{t: t, ctx: ctx, nc: nc, store: store, obs: obs, sys: sys}
}

// objectDeleter deletes a checkpoint's objects, <job>/<id>/..., from an
// object store, as the snapshot store does.
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

// checkpointIDs returns the ids that have objects in the object store.
func (e *driverEnv) checkpointIDs(job string) ([]uint64, error) {
	infos, err := e.obs.List(e.ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	seen := map[uint64]bool{}
	for _, info := range infos {
		var id uint64
		if _, err := fmt.Sscanf(strings.TrimPrefix(info.Name, job+"/"), "%d/", &id); err != nil {
			return nil, fmt.Errorf("object %q: %w", info.Name, err)
		}
		seen[id] = true
	}
	out := make([]uint64, 0, len(seen))
	for id := range seen {
		out = append(out, id)
	}
	slices.Sort(out)
	return out, nil
}

// taskBehavior says what a fake task does on INJECT id: ack (""), decline
// (a reason), or hold its ack until the checkpoint is aborted ("late").
type taskBehavior func(id uint64, task string) string

// fakeTasks is a job's task set speaking the real protocol over NATS: on
// INJECT each task uploads its snapshot object and acks.
type fakeTasks struct {
	e      *driverEnv
	job    string
	tasks  []string
	behave taskBehavior
	// noUpload: ack without uploading an object (benchmarks)
	noUpload bool

	mu        sync.Mutex
	completed []uint64
	aborted   []uint64
	held      map[uint64][]*pb.CheckpointAck
}

func (e *driverEnv) startTasks(job string, tasks []string, behave taskBehavior) *fakeTasks {
	return e.startFakeTasks(&fakeTasks{job: job, tasks: tasks, behave: behave})
}

func (e *driverEnv) startFakeTasks(f *fakeTasks) *fakeTasks {
	f.e, f.held = e, map[uint64][]*pb.CheckpointAck{}
	job := f.job
	sub, err := e.nc.Subscribe(CommandSubject(job), f.onCommand)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := e.nc.Flush(); err != nil {
		e.t.Fatal(err)
	}
	return f
}

func (f *fakeTasks) onCommand(m *nats.Msg) {
	var cmd pb.CheckpointCommand
	if err := proto.Unmarshal(m.Data, &cmd); err != nil {
		f.e.t.Errorf("undecodable command: %v", err)
		return
	}
	switch cmd.Kind {
	case pb.CheckpointCommand_KIND_INJECT:
		for _, task := range f.tasks {
			op, idx, _ := ParseTask(task)
			ack := &pb.CheckpointAck{Job: f.job, Id: cmd.Id, Operator: op, Instance: int32(idx),
				AlignmentUs: 100, SyncUs: 10, AsyncUs: 1000}
			b := ""
			if f.behave != nil {
				b = f.behave(cmd.Id, task)
			}
			if b != "" && b != "late" {
				ack.Error = b
				f.publish(ack)
				continue
			}
			ack.Object = fmt.Sprintf("%s/%d/%s", f.job, cmd.Id, task)
			if !f.noUpload {
				info, err := f.e.obs.PutBytes(f.e.ctx, ack.Object, []byte("state of "+ack.Object))
				if err != nil {
					f.e.t.Errorf("upload %s: %v", ack.Object, err)
					return
				}
				ack.Size = info.Size
			}
			if b == "late" {
				f.mu.Lock()
				f.held[cmd.Id] = append(f.held[cmd.Id], ack)
				f.mu.Unlock()
				continue
			}
			f.publish(ack)
		}
	case pb.CheckpointCommand_KIND_COMPLETE:
		f.mu.Lock()
		f.completed = append(f.completed, cmd.Id)
		f.mu.Unlock()
	case pb.CheckpointCommand_KIND_ABORT:
		f.mu.Lock()
		f.aborted = append(f.aborted, cmd.Id)
		held := f.held[cmd.Id]
		delete(f.held, cmd.Id)
		f.mu.Unlock()
		for _, ack := range held {
			f.publish(ack)
		}
	}
}

func (f *fakeTasks) publish(ack *pb.CheckpointAck) {
	data, err := proto.Marshal(ack)
	if err != nil {
		f.e.t.Error(err)
		return
	}
	if err := f.e.nc.Publish(AckSubject(f.job), data); err != nil {
		f.e.t.Error(err)
	}
}

func (f *fakeTasks) seen() (completed, aborted []uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.completed), slices.Clone(f.aborted)
}

func (e *driverEnv) startDriver(cfg Config) *Driver {
	e.t.Helper()
	restored, err := e.store.Restored(e.ctx, cfg.Job)
	if err != nil {
		e.t.Fatal(err)
	}
	d, err := StartDriver(e.ctx, DriverConfig{
		NATS: e.nc, System: e.sys, Store: e.store, Deleter: objectDeleter{e.obs},
		Config: cfg, Restored: restored, Logger: testutil.TestLogger(e.t),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(d.Close)
	return d
}

func TestDriverPeriodicRetentionAndStop(t *testing.T) {
	e := newDriverEnv(t)
	const job = "shop.orders"
	tasks := []string{"src/0", "map/0", "map/1", "sink/0"}
	f := e.startTasks(job, tasks, nil)
	cfg := DefaultConfig(job, tasks)
	cfg.Interval, cfg.Retained = 20*time.Millisecond, 2
	d := e.startDriver(cfg)

	testutil.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		m, err := e.store.Latest(e.ctx, job)
		if err != nil || m.GetId() < 5 {
			return fmt.Errorf("latest %v, %v", m.GetId(), err)
		}
		return nil
	})
	final, err := d.Stop(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if final.Id <= 5 || len(final.Tasks) != len(tasks) || final.Size == 0 || final.MaxAlignmentUs != 100 {
		t.Fatalf("final checkpoint %v", final)
	}
	latest, err := e.store.Latest(e.ctx, job)
	if err != nil || !proto.Equal(latest, final) {
		t.Fatalf("latest %v, %v; want the final checkpoint %v", latest, err, final)
	}
	list, err := e.store.List(e.ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	want := []uint64{final.Id - 1, final.Id}
	if !slices.Equal(ids(list), want) {
		t.Fatalf("kept %v, want %v", ids(list), want)
	}
	// Stop returns once deletions are done: only the kept checkpoints
	// have objects.
	if got, err := e.checkpointIDs(job); err != nil || !slices.Equal(got, want) {
		t.Fatalf("objects of checkpoints %v, %v; want %v", got, err, want)
	}
	completed, aborted := f.seen()
	if len(aborted) != 0 || len(completed) == 0 || completed[len(completed)-1] != final.Id || !sort.SliceIsSorted(completed, func(i, j int) bool { return completed[i] < completed[j] }) {
		t.Fatalf("tasks saw complete %v, abort %v", completed, aborted)
	}
	if _, err := d.Trigger(e.ctx, false); !errors.Is(err, ErrClosed) {
		t.Fatalf("trigger after stop: %v, want ErrClosed", err)
	}
}

func TestDriverTriggerOverNATS(t *testing.T) {
	e := newDriverEnv(t)
	const job = "orders"
	tasks := []string{"src/0", "sink/0"}
	e.startTasks(job, tasks, nil)
	cfg := DefaultConfig(job, tasks)
	cfg.Interval = time.Hour
	d := e.startDriver(cfg)

	sp, err := d.Trigger(e.ctx, true)
	if err != nil || !sp.Savepoint || sp.Id != 1 {
		t.Fatalf("savepoint %v, %v", sp, err)
	}
	request := func(req *pb.TriggerRequest) *pb.TriggerReply {
		data, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := e.nc.RequestWithContext(e.ctx, TriggerSubject(job), data)
		if err != nil {
			t.Fatal(err)
		}
		var reply pb.TriggerReply
		if err := proto.Unmarshal(msg.Data, &reply); err != nil {
			t.Fatal(err)
		}
		return &reply
	}
	r := request(&pb.TriggerRequest{Job: job})
	if r.Error != "" || r.Meta.GetId() != 2 || r.Meta.Savepoint {
		t.Fatalf("trigger over NATS: %v", r)
	}
	if m, err := RequestCheckpoint(e.ctx, e.nc, job, true); err != nil || m.Id != 3 || !m.Savepoint {
		t.Fatalf("RequestCheckpoint: %v, %v", m, err)
	}
	if _, err := RequestCheckpoint(e.ctx, e.nc, "nosuchjob", false); !errors.Is(err, ErrNoCoordinator) {
		t.Fatalf("RequestCheckpoint of a job without coordinator: %v", err)
	}
	if r := request(&pb.TriggerRequest{Job: "other"}); !strings.Contains(r.Error, "other") {
		t.Fatalf("trigger of another job: %v", r)
	}
	// Several triggers at once are all answered; none gets a checkpoint
	// that started before it asked.
	var wg sync.WaitGroup
	metas := make([]*pb.CheckpointMeta, 4)
	errs := make([]error, 4)
	for i := range metas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			metas[i], errs[i] = d.Trigger(e.ctx, false)
		}()
	}
	wg.Wait()
	for i := range metas {
		if errs[i] != nil || metas[i].Id <= 3 {
			t.Fatalf("concurrent trigger %d: %v, %v", i, metas[i], errs[i])
		}
	}
	list, err := e.store.List(e.ctx, job)
	if err != nil || list[0].Id != 1 || !list[0].Savepoint {
		t.Fatalf("the savepoint is not kept: %v, %v", ids(list), err)
	}
}

func TestDriverDeclineFailsJob(t *testing.T) {
	e := newDriverEnv(t)
	const job = "orders"
	tasks := []string{"src/0", "map/0", "sink/0"}
	e.startTasks(job, tasks, func(id uint64, task string) string {
		if task == "map/0" {
			return "snapshot: disk full"
		}
		return ""
	})
	cfg := DefaultConfig(job, tasks)
	cfg.Interval, cfg.TolerableFailures = time.Hour, 0
	d := e.startDriver(cfg)

	_, err := d.Trigger(e.ctx, false)
	if !errors.Is(err, ErrAborted) || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("trigger: %v, want the decline", err)
	}
	select {
	case err := <-d.Failed():
		if !errors.Is(err, ErrJobFailed) {
			t.Fatalf("failure %v, want ErrJobFailed", err)
		}
	case <-e.ctx.Done():
		t.Fatal("the job did not fail")
	}
	// What the other tasks uploaded is deleted.
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		got, err := e.checkpointIDs(job)
		if err != nil || len(got) != 0 {
			return fmt.Errorf("objects of checkpoints %v, %v", got, err)
		}
		return nil
	})
	if _, err := d.Trigger(e.ctx, false); !errors.Is(err, ErrJobFailed) {
		t.Fatalf("trigger after failure: %v", err)
	}
	if _, err := RequestCheckpoint(e.ctx, e.nc, job, false); !errors.Is(err, ErrTriggerFailed) || !strings.Contains(err.Error(), "job failed") {
		t.Fatalf("RequestCheckpoint after failure: %v", err)
	}
}

func TestDriverTimeoutAndLateAcks(t *testing.T) {
	e := newDriverEnv(t)
	const job = "orders"
	tasks := []string{"src/0", "sink/0"}
	f := e.startTasks(job, tasks, func(id uint64, task string) string {
		if id == 1 && task == "sink/0" {
			return "late" // acks only once told the checkpoint is aborted
		}
		return ""
	})
	cfg := DefaultConfig(job, tasks)
	// Long enough for checkpoint 2 to complete on a loaded machine.
	cfg.Interval, cfg.Timeout = time.Hour, time.Second
	d := e.startDriver(cfg)

	if _, err := d.Trigger(e.ctx, false); !errors.Is(err, ErrAborted) || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("trigger: %v, want a timeout", err)
	}
	m, err := d.Trigger(e.ctx, false)
	if err != nil || m.Id != 2 {
		t.Fatalf("next trigger: %v, %v", m, err)
	}
	// The late ack of checkpoint 1 was ignored and its upload deleted.
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		got, err := e.checkpointIDs(job)
		if err != nil || !slices.Equal(got, []uint64{2}) {
			return fmt.Errorf("objects of checkpoints %v, %v", got, err)
		}
		return nil
	})
	if _, aborted := f.seen(); !slices.Equal(aborted, []uint64{1}) {
		t.Fatalf("aborted %v", aborted)
	}
}

func TestDriverRestartContinuesIDs(t *testing.T) {
	e := newDriverEnv(t)
	const job = "orders"
	tasks := []string{"src/0", "sink/0"}
	var silent sync.Map
	e.startTasks(job, tasks, func(id uint64, task string) string {
		if _, ok := silent.Load(id); ok {
			return "late"
		}
		return ""
	})
	cfg := DefaultConfig(job, tasks)
	cfg.Interval = time.Hour
	d1 := e.startDriver(cfg)
	for range 2 {
		if _, err := d1.Trigger(e.ctx, false); err != nil {
			t.Fatal(err)
		}
	}
	// Checkpoint 3 is in flight (its tasks uploaded, not acked) when the
	// coordinator goes away.
	silent.Store(uint64(3), true)
	ctx, cancel := context.WithTimeout(e.ctx, 200*time.Millisecond)
	if _, err := d1.Trigger(ctx, false); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("trigger of 3: %v", err)
	}
	cancel()
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		got, err := e.checkpointIDs(job)
		if err != nil || !slices.Equal(got, []uint64{1, 2, 3}) {
			return fmt.Errorf("objects of checkpoints %v, %v", got, err)
		}
		return nil
	})
	d1.Close()

	d2 := e.startDriver(cfg)
	m, err := d2.Trigger(e.ctx, false)
	if err != nil || m.Id != 4 {
		t.Fatalf("first checkpoint after restart: %v, %v; want id 4", m, err)
	}
	// The new coordinator deleted what checkpoint 3 left.
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		got, err := e.checkpointIDs(job)
		if err != nil || !slices.Equal(got, []uint64{1, 2, 4}) {
			return fmt.Errorf("objects of checkpoints %v, %v", got, err)
		}
		return nil
	})
}

func TestDriverStopFails(t *testing.T) {
	e := newDriverEnv(t)
	const job = "orders"
	tasks := []string{"src/0"}
	e.startTasks(job, tasks, func(uint64, string) string { return "late" })
	cfg := DefaultConfig(job, tasks)
	cfg.Interval, cfg.Timeout = time.Hour, 100*time.Millisecond
	d := e.startDriver(cfg)
	if _, err := d.Stop(e.ctx); !errors.Is(err, ErrAborted) {
		t.Fatalf("stop: %v, want ErrAborted", err)
	}
	if m, err := e.store.Latest(e.ctx, job); m != nil || err != nil {
		t.Fatalf("latest %v, %v; want none", m, err)
	}
}

func TestDriverRejectsBadConfig(t *testing.T) {
	e := newDriverEnv(t)
	for name, cfg := range map[string]DriverConfig{
		"no store": {NATS: e.nc, System: e.sys, Deleter: objectDeleter{e.obs}, Config: DefaultConfig("j", []string{"a/0"})},
		"bad task": {NATS: e.nc, System: e.sys, Store: e.store, Deleter: objectDeleter{e.obs}, Config: DefaultConfig("j", []string{"a"})},
		"bad job":  {NATS: e.nc, System: e.sys, Store: e.store, Deleter: objectDeleter{e.obs}, Config: DefaultConfig("a.*", []string{"a/0"})},
	} {
		if _, err := StartDriver(e.ctx, cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
}

// TestDriverBadInput: undecodable or misaddressed messages are refused or
// ignored, and checkpoints go on.
func TestDriverBadInput(t *testing.T) {
	e := newDriverEnv(t)
	const job = "orders"
	tasks := []string{"src/0"}
	e.startTasks(job, tasks, nil)
	cfg := DefaultConfig(job, tasks)
	cfg.Interval = time.Hour
	d := e.startDriver(cfg)

	msg, err := e.nc.RequestWithContext(e.ctx, TriggerSubject(job), []byte{0xff, 0xff})
	if err != nil {
		t.Fatal(err)
	}
	var reply pb.TriggerReply
	if err := proto.Unmarshal(msg.Data, &reply); err != nil || !strings.Contains(reply.Error, "undecodable") {
		t.Fatalf("reply to garbage: %v, %v", &reply, err)
	}
	for _, data := range [][]byte{
		{0xff, 0xff},
		mustMarshal(t, &pb.CheckpointAck{Job: "other", Id: 1, Operator: "src"}),
		mustMarshal(t, &pb.CheckpointAck{Job: job, Id: 1, Operator: "ghost"}),
		mustMarshal(t, &pb.CheckpointAck{Job: job, Id: 99, Operator: "src"}),
	} {
		if err := e.nc.Publish(AckSubject(job), data); err != nil {
			t.Fatal(err)
		}
	}
	if m, err := d.Trigger(e.ctx, false); err != nil || m.Id != 1 {
		t.Fatalf("trigger after bad input: %v, %v", m, err)
	}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	data, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
