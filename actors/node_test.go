package actors_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/actors/operators"
	"github.com/meshflow/meshflow/cluster"
	"github.com/meshflow/meshflow/cluster/checkpoint"
	"github.com/meshflow/meshflow/internal/expr"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
	"github.com/meshflow/meshflow/messages"
)

var numSchema = arrow.NewSchema([]arrow.Field{
	{Name: "k", Type: arrow.PrimitiveTypes.Int64},
	{Name: "v", Type: arrow.PrimitiveTypes.Int64},
}, nil)

func numBatches(mem memory.Allocator, count, size int) []arrow.RecordBatch {
	b := array.NewRecordBuilder(mem, numSchema)
	defer b.Release()
	out := make([]arrow.RecordBatch, count)
	for i := range out {
		for j := 0; j < size; j++ {
			n := int64(i*size + j)
			b.Field(0).(*array.Int64Builder).Append(n % 97)
			b.Field(1).(*array.Int64Builder).Append(n)
		}
		out[i] = b.NewRecordBatch()
	}
	return out
}

// recorder is a sink recording (instance, v) and checking that every key
// reaches one instance only.
type recorder struct {
	mu      *sync.Mutex
	vals    map[int64]int
	keyInst map[int64]int
	bad     *atomic.Int64
	inst    int
}

func (r *recorder) Open(_ context.Context, oc actors.OperatorContext) error {
	r.inst = oc.Instance()
	return nil
}
func (r *recorder) Close(context.Context) error { return nil }
func (r *recorder) Process(_ context.Context, in arrow.RecordBatch, _ actors.Emitter) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	ks := in.Column(0).(*array.Int64).Int64Values()
	for i, v := range in.Column(1).(*array.Int64).Int64Values() {
		r.vals[v]++
		if prev, ok := r.keyInst[ks[i]]; ok && prev != r.inst {
			r.bad.Add(1)
		}
		r.keyInst[ks[i]] = r.inst
	}
	return nil
}

// TestTwoNodesOverNATS runs source and filter on node "a" and a keyed sink
// of 3 instances on node "b": the keyed edge crosses NATS, every row
// arrives once, keys stay on one instance, and frames really travel over
// the documented subjects.
func TestTwoNodesOverNATS(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	ncA := natstest.Connect(t, srv)
	ncB := natstest.Connect(t, srv)
	spy := natstest.Connect(t, srv)

	recs := numBatches(mem, 50, 1000)
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	var frames atomic.Int64
	sub, err := spy.Subscribe(actors.JobSubjects("hop"), func(m *nats.Msg) {
		if len(m.Data) > 2 && string(m.Data[:2]) == "MF" {
			frames.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	rec := &recorder{mu: &sync.Mutex{}, vals: map[int64]int{}, keyInst: map[int64]int{}, bad: &atomic.Int64{}}
	g := hopGraph("hop", recs, rec)
	pl, err := cluster.Pinned{Operators: map[string]string{"sink": "b"}, Default: "a"}.Place(g, []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	nodeA := newNode(t, "a", ncA, mem)
	nodeB := newNode(t, "b", ncB, mem)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	errs := make(chan error, 2)
	go func() { errs <- nodeB.Run(ctx, g, pl) }()
	go func() { errs <- nodeA.Run(ctx, g, pl) }()
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for i := int64(0); i < 50_000; i++ {
		if rec.vals[i] != 1 {
			t.Fatalf("value %d arrived %d times", i, rec.vals[i])
		}
	}
	if rec.bad.Load() != 0 {
		t.Errorf("%d rows reached another instance than their key's", rec.bad.Load())
	}
	if frames.Load() < 50 {
		t.Errorf("saw %d frames on NATS, want at least one per batch", frames.Load())
	}
}

func newNode(t *testing.T, id string, nc *nats.Conn, mem memory.Allocator) *actors.Node {
	t.Helper()
	n, err := actors.NewNode(actors.NodeConfig{ID: id, NATS: nc, Allocator: mem, Logger: testutil.TestLogger(t), GrantInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n
}

// endless is a source that never ends on its own.
type endless struct{ mem memory.Allocator }

func (e *endless) Open(context.Context, actors.OperatorContext) error { return nil }
func (e *endless) Close(context.Context) error                        { return nil }
func (e *endless) Read(ctx context.Context) (arrow.RecordBatch, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(time.Millisecond):
	}
	return numBatches(e.mem, 1, 10)[0], nil
}

// TestSequenceGapFailsJob: a frame out of sequence on a NATS channel is a
// loud job failure, never silent loss.
func TestSequenceGapFailsJob(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	srv := natstest.RunJetStream(t)
	ncB := natstest.Connect(t, srv)
	evil := natstest.Connect(t, srv)
	g := &actors.JobGraph{
		Name: "gap",
		Vertices: []*actors.Vertex{
			{Name: "src", Parallelism: 1, NewSource: func() actors.Source { return &endless{mem: mem} }},
			{Name: "sink", Parallelism: 1, NewOperator: func() actors.Operator { return &operators.Union{} }},
		},
		Edges: []actors.Edge{{From: "src", To: "sink", Partitioning: actors.Forward}},
	}
	// Only node b runs: the source's node is never started, so the only
	// frame on the channel is the forged one.
	pl, _ := cluster.Pinned{Operators: map[string]string{"sink": "b"}, Default: "a"}.Place(g, []string{"a", "b"})
	nodeB := newNode(t, "b", ncB, mem)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- nodeB.Run(ctx, g, pl) }()

	forged, err := messages.EncodeFrame(7, messages.WatermarkEnvelope(42))
	if err != nil {
		t.Fatal(err)
	}
	subject := actors.DataSubject("gap", "src", "sink", 0, 0)
	// Wait for node b to listen (its credit grants show up), then forge.
	grants, err := evil.SubscribeSync(actors.CreditSubject("gap", "src", "sink", 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := grants.NextMsg(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := evil.Publish(subject, forged); err != nil {
		t.Fatal(err)
	}
	err = <-done
	if !errors.Is(err, actors.ErrSequenceGap) {
		t.Fatalf("Run returned %v, want a sequence gap failure", err)
	}
	mem.AssertSize(t, 0)
}

// TestSlowConsumerFailsJob: a NATS slow-consumer report on a subscription
// of a job fails the job on that node, and through the failure subject on
// the other node too.
func TestSlowConsumerFailsJob(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	ncA := natstest.Connect(t, srv)
	ncB := natstest.Connect(t, srv)
	g := &actors.JobGraph{
		Name: "slow",
		Vertices: []*actors.Vertex{
			{Name: "src", Parallelism: 1, NewSource: func() actors.Source { return &endless{mem: mem} }},
			{Name: "sink", Parallelism: 1, NewOperator: func() actors.Operator { return &operators.Union{} }},
		},
		Edges: []actors.Edge{{From: "src", To: "sink", Partitioning: actors.Forward}},
	}
	pl, err := cluster.Pinned{Operators: map[string]string{"sink": "b"}, Default: "a"}.Place(g, []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	nodeA := newNode(t, "a", ncA, mem)
	nodeB := newNode(t, "b", ncB, mem)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errA, errB := make(chan error, 1), make(chan error, 1)
	go func() { errB <- nodeB.Run(ctx, g, pl) }()
	go func() { errA <- nodeA.Run(ctx, g, pl) }()
	// Both nodes listen before b reports: a failure published before a
	// node subscribes to the job's failure subject does not reach it.
	testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if !actors.Subscribed(nodeA, "slow") || !actors.Subscribed(nodeB, "slow") {
			return errors.New("nodes not subscribed yet")
		}
		return nil
	})
	testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if !actors.ReportSubscriptionError(nodeB, "slow", nats.ErrSlowConsumer) {
			return errors.New("node b has no subscription yet")
		}
		return nil
	})
	if err := <-errB; !errors.Is(err, actors.ErrSlowConsumer) {
		t.Fatalf("node b: %v, want ErrSlowConsumer", err)
	}
	if err := <-errA; !errors.Is(err, actors.ErrRemoteFailure) {
		t.Fatalf("node a: %v, want ErrRemoteFailure", err)
	}
}

// TestTwoNodesCheckpointed: a job spread over two nodes takes checkpoints
// with one coordinator (on the node of its first operator): the
// checkpoints hold a snapshot of every instance of both nodes, the job's
// last checkpoint comes after every instance finished, and every row
// arrives once.
func TestTwoNodesCheckpointed(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	ncA := natstest.Connect(t, srv)
	ncB := natstest.Connect(t, srv)
	recs := numBatches(mem, 200, 250)
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	rec := &recorder{mu: &sync.Mutex{}, vals: map[int64]int{}, keyInst: map[int64]int{}, bad: &atomic.Int64{}}
	g := hopGraph("hop-ckpt", recs, rec)
	g.Checkpoint = &actors.CheckpointConfig{Interval: 20 * time.Millisecond}
	pl, err := cluster.Pinned{Operators: map[string]string{"sink": "b"}, Default: "a"}.Place(g, []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	nodeA := newNode(t, "a", ncA, mem)
	nodeB := newNode(t, "b", ncB, mem)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	errs := make(chan error, 2)
	go func() { errs <- nodeB.Run(ctx, g, pl) }()
	go func() { errs <- nodeA.Run(ctx, g, pl) }()
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for i := int64(0); i < 50_000; i++ {
		if rec.vals[i] != 1 {
			t.Fatalf("value %d arrived %d times", i, rec.vals[i])
		}
	}
	store, err := checkpoint.OpenStore(ctx, natstest.JetStream(t, ncA))
	if err != nil {
		t.Fatal(err)
	}
	last, err := store.Latest(ctx, "hop-ckpt")
	if err != nil || last == nil {
		t.Fatalf("latest checkpoint: %v %v", last, err)
	}
	var tasks []string
	for _, ts := range last.Tasks {
		tasks = append(tasks, fmt.Sprintf("%s/%d", ts.Operator, ts.Instance))
		if !ts.Finished {
			t.Errorf("the last checkpoint has %s/%d unfinished", ts.Operator, ts.Instance)
		}
	}
	if got := strings.Join(tasks, " "); got != "odd/0 odd/1 sink/0 sink/1 sink/2 src/0" {
		t.Errorf("the last checkpoint covers %s", got)
	}
}

// hopGraph is source and filter feeding a keyed recorder of 3 instances,
// the job the two-node tests place across nodes.
func hopGraph(name string, recs []arrow.RecordBatch, rec *recorder) *actors.JobGraph {
	return &actors.JobGraph{
		Name: name,
		Vertices: []*actors.Vertex{
			{Name: "src", Parallelism: 1, NewSource: func() actors.Source { return &operators.Batches{Recs: recs} }},
			{Name: "odd", Parallelism: 2, NewOperator: func() actors.Operator {
				return operators.NewFilter(expr.Col("v").Ge(0))
			}},
			{Name: "sink", Parallelism: 3, NewOperator: func() actors.Operator {
				r := *rec
				return &r
			}},
		},
		Edges: []actors.Edge{
			{From: "src", To: "odd", Partitioning: actors.Rebalance},
			{From: "odd", To: "sink", Partitioning: actors.Hash, KeyColumns: []string{"k"}},
		},
	}
}
