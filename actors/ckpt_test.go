package actors

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go"

	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
	"github.com/meshflow/meshflow/persistence"
	"github.com/meshflow/meshflow/persistence/badgerstore"
)

// Checkpoint tests needing what the public API does not offer (the node's
// drain timeout). The root package's checkpoint_test.go holds the others.

var ckSchema = arrow.NewSchema([]arrow.Field{{Name: "v", Type: arrow.PrimitiveTypes.Int64}}, nil)

// ckGate releases a ckSource's batches as the test says.
type ckGate struct {
	mu       sync.Mutex
	released int
	changed  chan struct{}
}

func (g *ckGate) release(n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if n > g.released {
		g.released = n
		close(g.changed)
		g.changed = make(chan struct{})
	}
}

// ckSource emits the batches its gate released, ends after the last, and
// records the next batch to read at checkpoints.
type ckSource struct {
	recs []arrow.RecordBatch
	g    *ckGate
	st   persistence.Store
	next int
}

func (s *ckSource) Open(ctx context.Context, oc OperatorContext) error {
	s.st = oc.State()
	if oc.RestoredCheckpoint() == 0 {
		return nil
	}
	v, err := s.st.Get(ctx, []byte("next"))
	if err != nil {
		return err
	}
	n, _ := binary.Uvarint(v)
	s.next = int(n)
	return nil
}

func (s *ckSource) Read(ctx context.Context) (arrow.RecordBatch, error) {
	for {
		s.g.mu.Lock()
		released, ch := s.g.released, s.g.changed
		s.g.mu.Unlock()
		switch {
		case s.next >= len(s.recs):
			return nil, io.EOF
		case s.next < released:
			r := s.recs[s.next]
			s.next++
			r.Retain()
			return r, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (s *ckSource) PrepareCheckpoint(ctx context.Context, _ uint64) error {
	var b persistence.Batch
	b.Put([]byte("next"), binary.AppendUvarint(nil, uint64(s.next)))
	return s.st.Apply(ctx, &b)
}

func (s *ckSource) Close(context.Context) error { return nil }

// ckSink stages the values of each epoch in its Store and commits them
// (to epochs, by checkpoint id) on completion, or at restore for what the
// restored checkpoint staged. While block is set, commits (or, with
// blockPrepare, checkpoints) wait for ctx.
type ckSink struct {
	mu           *sync.Mutex
	epochs       map[uint64][]int64
	block        *atomic.Bool
	blockPrepare bool
	processed    *atomic.Int64

	st  persistence.Store
	buf []int64
}

func (s *ckSink) Open(ctx context.Context, oc OperatorContext) error {
	s.st = oc.State()
	if id := oc.RestoredCheckpoint(); id != 0 {
		return s.commit(ctx, id)
	}
	return nil
}

func (s *ckSink) Close(context.Context) error { return nil }

func (s *ckSink) Process(_ context.Context, in arrow.RecordBatch, _ Emitter) error {
	s.buf = append(s.buf, in.Column(0).(*array.Int64).Int64Values()...)
	s.processed.Add(in.NumRows())
	return nil
}

func (s *ckSink) PrepareCheckpoint(ctx context.Context, id uint64) error {
	if s.blockPrepare && s.block.Load() {
		<-ctx.Done()
		return ctx.Err()
	}
	var enc []byte
	for _, v := range s.buf {
		enc = binary.AppendVarint(enc, v)
	}
	var b persistence.Batch
	b.Put(fmt.Appendf(nil, "stage/%020d", id), enc)
	s.buf = s.buf[:0]
	return s.st.Apply(ctx, &b)
}

func (s *ckSink) CheckpointComplete(ctx context.Context, id uint64) error {
	if !s.blockPrepare && s.block.Load() {
		<-ctx.Done()
		return ctx.Err()
	}
	return s.commit(ctx, id)
}

func (s *ckSink) commit(ctx context.Context, upTo uint64) error {
	var del persistence.Batch
	err := s.st.Scan(ctx, []byte("stage/"), func(k, v []byte) error {
		id, err := strconv.ParseUint(strings.TrimPrefix(string(k), "stage/"), 10, 64)
		if err != nil || id > upTo {
			return err
		}
		var vals []int64
		for len(v) > 0 {
			x, n := binary.Varint(v)
			if n <= 0 {
				return fmt.Errorf("staged epoch %d: bad encoding", id)
			}
			vals, v = append(vals, x), v[n:]
		}
		s.mu.Lock()
		s.epochs[id] = vals
		s.mu.Unlock()
		del.Delete(k)
		return nil
	})
	if err != nil || del.Len() == 0 {
		return err
	}
	return s.st.Apply(ctx, &del)
}

// ckEnv starts what a checkpoint test runs on: a checked allocator
// (asserted empty when the test ends), an embedded NATS server with a
// connection, and a Badger store.
func ckEnv(t *testing.T) (*memory.CheckedAllocator, *nats.Conn, *badgerstore.Store) {
	t.Helper()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	t.Cleanup(func() { mem.AssertSize(t, 0) })
	nc := natstest.Connect(t, natstest.RunJetStream(t))
	st, err := badgerstore.Open(context.Background(), badgerstore.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return mem, nc, st
}

// ckBatches builds n batches of size rows of ckSchema holding 0, 1, 2...,
// released when the test ends.
func ckBatches(t *testing.T, mem memory.Allocator, n, size int) []arrow.RecordBatch {
	b := array.NewRecordBuilder(mem, ckSchema)
	defer b.Release()
	recs := make([]arrow.RecordBatch, n)
	for i := range recs {
		for j := range size {
			b.Field(0).(*array.Int64Builder).Append(int64(i*size + j))
		}
		recs[i] = b.NewRecordBatch()
	}
	t.Cleanup(func() {
		for _, r := range recs {
			r.Release()
		}
	})
	return recs
}

// TestStopWhenFinalCheckpointBlocks: a stop whose final checkpoint cannot
// complete (a sink's commit, or its part of the checkpoint, blocks) gives
// up after the drain timeout with an error saying so; the restart, from
// the last complete checkpoint, loses and repeats nothing.
func TestStopWhenFinalCheckpointBlocks(t *testing.T) {
	for _, tc := range []struct {
		name         string
		blockPrepare bool
	}{
		{"commit-blocks", false},
		{"prepare-blocks", true},
	} {
		t.Run(tc.name, func(t *testing.T) { testStopWhenFinalCheckpointBlocks(t, tc.name, tc.blockPrepare) })
	}
}

func testStopWhenFinalCheckpointBlocks(t *testing.T, name string, blockPrepare bool) {
	mem, nc, st := ckEnv(t)
	const batches, size = 12, 10
	recs := ckBatches(t, mem, batches, size)

	g := &ckGate{changed: make(chan struct{})}
	var mu sync.Mutex
	epochs := map[uint64][]int64{}
	var block atomic.Bool
	var processed atomic.Int64
	graph := &JobGraph{
		Name: "ckpt-blocked-" + name,
		Vertices: []*Vertex{
			{Name: "src", Parallelism: 1, NewSource: func() Source { return &ckSource{recs: recs, g: g} }},
			{Name: "sink", Parallelism: 1, NewOperator: func() Operator {
				return &ckSink{mu: &mu, epochs: epochs, block: &block, blockPrepare: blockPrepare, processed: &processed}
			}},
		},
		Edges: []Edge{{From: "src", To: "sink", Partitioning: Forward}},
		Checkpoint: &CheckpointConfig{
			Interval: 100 * time.Millisecond,
			Recovery: RecoveryPolicy{MaxRecoveries: 3, Window: time.Minute, InitialBackoff: 5 * time.Millisecond},
		},
	}
	pl := Placement{{"src", 0}: "local", {"sink", 0}: "local"}
	const drain = 500 * time.Millisecond
	run := func(ctx context.Context) error {
		n, err := NewNode(NodeConfig{ID: "local", NATS: nc, Allocator: mem, State: st, Logger: testutil.TestLogger(t), DrainTimeout: drain})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		return n.Run(ctx, graph, pl)
	}

	g.release(batches / 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	// A periodic checkpoint commits the first half; then a quarter more
	// is processed, which only the final checkpoint would cover.
	testutil.CheckFor(t, 30*time.Second, 5*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, vals := range epochs {
			n += len(vals)
		}
		if n < batches/2*size {
			return fmt.Errorf("%d rows committed", n)
		}
		return nil
	})
	g.release(batches * 3 / 4)
	testutil.CheckFor(t, 30*time.Second, 5*time.Millisecond, func() error {
		if n := processed.Load(); n < batches*3/4*size {
			return fmt.Errorf("%d rows at the sink", n)
		}
		return nil
	})
	block.Store(true)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, errStopped) || !errors.Is(err, context.Canceled) {
			t.Fatalf("Run returned %v, want a final checkpoint that did not complete", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Run did not return after the stop")
	}

	block.Store(false)
	g.release(batches)
	if err := run(testutil.Context(t, time.Minute)); err != nil {
		t.Fatalf("restart: %v", err)
	}
	seen := map[int64]int{}
	for _, vals := range epochs {
		for _, v := range vals {
			seen[v]++
		}
	}
	for v := int64(0); v < batches*size; v++ {
		if seen[v] != 1 {
			t.Errorf("value %d committed %d times, want once", v, seen[v])
		}
	}
	if len(seen) != batches*size {
		t.Errorf("%d values committed, want %d", len(seen), batches*size)
	}
}

// bgSink commits in the background, as the JetStream sink does: its
// CheckpointComplete hands the rows of the checkpoints up to id to a
// goroutine that "publishes" them (into published) a little later, and
// Close waits for that goroutine until ctx is done, then returns closeErr.
type bgSink struct {
	mu        *sync.Mutex
	published *[]int64
	closeErr  error

	buf    []int64
	staged map[uint64][]int64
	wg     sync.WaitGroup
}

func (s *bgSink) Open(context.Context, OperatorContext) error {
	s.staged = map[uint64][]int64{}
	return nil
}

func (s *bgSink) Process(_ context.Context, in arrow.RecordBatch, _ Emitter) error {
	s.buf = append(s.buf, in.Column(0).(*array.Int64).Int64Values()...)
	return nil
}

func (s *bgSink) PrepareCheckpoint(_ context.Context, id uint64) error {
	s.staged[id], s.buf = s.buf, nil
	return nil
}

func (s *bgSink) CheckpointComplete(_ context.Context, id uint64) error {
	var rows []int64
	for k, v := range s.staged {
		if k <= id {
			rows = append(rows, v...)
			delete(s.staged, k)
		}
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		time.Sleep(50 * time.Millisecond) // a publish taking a while
		s.mu.Lock()
		*s.published = append(*s.published, rows...)
		s.mu.Unlock()
	}()
	return nil
}

func (s *bgSink) Close(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		<-done
		return fmt.Errorf("close: %w", ctx.Err())
	}
	return s.closeErr
}

// TestCloseAfterLastCheckpoint: a job that ends (its input ended, or it
// was stopped) after its last checkpoint closes its operators with a
// context of their own, not cancelled with the job's: a sink finishing in
// Close what that checkpoint's completion started publishes everything
// before Run returns. A Close that fails then fails the job, which
// recovers from that checkpoint (where a transactional sink's Open
// publishes what is missing) and, here where Close always fails, returns
// the error once its recoveries are spent.
func TestCloseAfterLastCheckpoint(t *testing.T) {
	for _, tc := range []struct {
		name     string
		stop     bool // stop the job rather than let its input end
		closeErr error
	}{
		{name: "input-ends"},
		{name: "stopped", stop: true},
		{name: "close-fails", closeErr: errors.New("publish refused")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem, nc, st := ckEnv(t)
			const batches, size = 8, 10
			recs := ckBatches(t, mem, batches, size)
			g := &ckGate{changed: make(chan struct{})}
			var mu sync.Mutex
			var published []int64
			graph := &JobGraph{
				Name: "ckpt-close-" + tc.name,
				Vertices: []*Vertex{
					{Name: "src", Parallelism: 1, NewSource: func() Source { return &ckSource{recs: recs, g: g} }},
					{Name: "sink", Parallelism: 1, NewOperator: func() Operator {
						return &bgSink{mu: &mu, published: &published, closeErr: tc.closeErr}
					}},
				},
				Edges:      []Edge{{From: "src", To: "sink", Partitioning: Forward}},
				Checkpoint: &CheckpointConfig{Interval: time.Hour}, // only the last one
			}
			n, err := NewNode(NodeConfig{ID: "local", NATS: nc, Allocator: mem, State: st, Logger: testutil.TestLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			ctx, cancel := context.WithCancel(testutil.Context(t, time.Minute))
			defer cancel()
			want := batches * size
			if tc.stop {
				// Half the input, then a stop.
				want /= 2
				g.release(batches / 2)
				var wg sync.WaitGroup
				defer wg.Wait()
				wg.Add(1)
				go func() {
					defer wg.Done()
					for ctx.Err() == nil {
						for _, is := range n.Stats(graph.Name) {
							if is.ID.Operator == "sink" && is.RowsIn >= int64(want) {
								cancel()
							}
						}
						time.Sleep(time.Millisecond)
					}
				}()
			} else {
				g.release(batches)
			}
			err = n.Run(ctx, graph, Placement{{"src", 0}: "local", {"sink", 0}: "local"})
			switch {
			case tc.closeErr != nil:
				if !errors.Is(err, tc.closeErr) {
					t.Fatalf("Run returned %v, want the close error", err)
				}
			case tc.stop:
				if !errors.Is(err, context.Canceled) || errors.Is(err, errStopped) {
					t.Fatalf("Run returned %v, want a stop after the final checkpoint", err)
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if len(published) != want {
				t.Fatalf("Run returned with %d rows published, want %d", len(published), want)
			}
		})
	}
}
