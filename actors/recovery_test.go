package actors_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/actors/operators"
	"github.com/meshflow/meshflow/cluster"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
	"github.com/meshflow/meshflow/messages"
	"github.com/meshflow/meshflow/persistence"
)

// txResult is what transactional recorders committed: values by how many
// times they were committed, and the (instance, checkpoint) epochs
// committed, so that an epoch committed again after a restore counts once
// (as a real sink finds what it already published).
type txResult struct {
	mu     sync.Mutex
	vals   map[int64]int
	epochs map[string]bool
}

// txRecorder is a transactional test sink: rows are staged in memory,
// written to the Store at PrepareCheckpoint and committed to the result at
// CheckpointComplete, or when the job is restored from a checkpoint that
// holds them.
type txRecorder struct {
	res    *txResult
	st     persistence.Store
	inst   int
	staged []int64
}

func (r *txRecorder) Open(ctx context.Context, oc actors.OperatorContext) error {
	r.st, r.inst = oc.State(), oc.Instance()
	if id := oc.RestoredCheckpoint(); id > 0 {
		return r.commit(ctx, id)
	}
	return nil
}

func (r *txRecorder) Close(context.Context) error { return nil }

func (r *txRecorder) Process(_ context.Context, in arrow.RecordBatch, _ actors.Emitter) error {
	r.staged = append(r.staged, in.Column(1).(*array.Int64).Int64Values()...)
	return nil
}

func (r *txRecorder) PrepareCheckpoint(ctx context.Context, id uint64) error {
	var v []byte
	for _, x := range r.staged {
		v = binary.AppendVarint(v, x)
	}
	r.staged = nil
	var b persistence.Batch
	b.Put(binary.BigEndian.AppendUint64(nil, id), v)
	return r.st.Apply(ctx, &b)
}

func (r *txRecorder) CheckpointComplete(ctx context.Context, id uint64) error {
	return r.commit(ctx, id)
}

// commit moves every epoch staged up to id into the result.
func (r *txRecorder) commit(ctx context.Context, id uint64) error {
	var done persistence.Batch
	err := r.st.Scan(ctx, nil, func(k, v []byte) error {
		epoch := binary.BigEndian.Uint64(k)
		if epoch > id {
			return nil
		}
		r.res.mu.Lock()
		defer r.res.mu.Unlock()
		key := strconv.Itoa(r.inst) + "/" + strconv.FormatUint(epoch, 10)
		if !r.res.epochs[key] {
			r.res.epochs[key] = true
			for len(v) > 0 {
				x, n := binary.Varint(v)
				if n <= 0 {
					return fmt.Errorf("bad staged epoch %d", epoch)
				}
				r.res.vals[x]++
				v = v[n:]
			}
		}
		done.Delete(k)
		return nil
	})
	if err != nil {
		return err
	}
	return r.st.Apply(ctx, &done)
}

// TestSequenceGapRecovers: with checkpoints, a frame out of sequence on a
// NATS channel no longer fails the job: both nodes recover from the last
// complete checkpoint, the source rewinds, and every row reaches the
// transactional sink exactly once.
func TestSequenceGapRecovers(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	ncA := natstest.Connect(t, srv)
	ncB := natstest.Connect(t, srv)
	evil := natstest.Connect(t, srv)
	const batches, rows = 400, 50
	recs := numBatches(mem, batches, rows)
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	res := &txResult{vals: map[int64]int{}, epochs: map[string]bool{}}
	g := &actors.JobGraph{
		Name: "gap-ckpt",
		Checkpoint: &actors.CheckpointConfig{Interval: 10 * time.Millisecond,
			Recovery: actors.RecoveryPolicy{MaxRecoveries: 5, InitialBackoff: 10 * time.Millisecond}},
		Vertices: []*actors.Vertex{
			{Name: "src", Parallelism: 1, NewSource: func() actors.Source { return &slowBatches{Batches: operators.Batches{Recs: recs}} }},
			{Name: "sink", Parallelism: 1, NewOperator: func() actors.Operator { return &txRecorder{res: res} }},
		},
		Edges: []actors.Edge{{From: "src", To: "sink", Partitioning: actors.Forward}},
	}
	pl, err := cluster.Pinned{Operators: map[string]string{"sink": "b"}, Default: "a"}.Place(g, []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	nodeA := newNode(t, "a", ncA, mem)
	nodeB := newNode(t, "b", ncB, mem)
	ctx := testutil.Context(t, time.Minute)
	errs := make(chan error, 2)
	go func() { errs <- nodeB.Run(ctx, g, pl) }()
	go func() { errs <- nodeA.Run(ctx, g, pl) }()
	// Once some rows are committed, forge a frame far ahead on the channel.
	testutil.CheckFor(t, 30*time.Second, time.Millisecond, func() error {
		res.mu.Lock()
		defer res.mu.Unlock()
		if len(res.vals) < rows*10 {
			return fmt.Errorf("%d rows committed", len(res.vals))
		}
		return nil
	})
	forged, err := messages.EncodeFrame(1_000_000, messages.WatermarkEnvelope(42))
	if err != nil {
		t.Fatal(err)
	}
	if err := evil.Publish(actors.DataSubject("gap-ckpt", "src", "sink", 0, 0), forged); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for v := int64(0); v < batches*rows; v++ {
		if n := res.vals[v]; n != 1 {
			t.Fatalf("value %d committed %d times", v, n)
		}
	}
	if len(res.vals) != batches*rows {
		t.Fatalf("%d distinct values committed, want %d", len(res.vals), batches*rows)
	}
}

// slowBatches is a Batches source pausing between reads, so that a job
// runs long enough to take several checkpoints.
type slowBatches struct{ operators.Batches }

func (s *slowBatches) Read(ctx context.Context) (arrow.RecordBatch, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(200 * time.Microsecond):
	}
	return s.Batches.Read(ctx)
}
