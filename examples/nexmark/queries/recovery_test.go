package queries_test

import (
	"bytes"
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
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/examples/nexmark/internal/reference"
	"github.com/meshflow/meshflow/examples/nexmark/queries"
	"github.com/meshflow/meshflow/internal/nexmark"
	"github.com/meshflow/meshflow/internal/testutil"
	"github.com/meshflow/meshflow/messages"
	"github.com/meshflow/meshflow/persistence"
)

// TestClosingRecovery runs q4, q5, q6 and q7 with checkpoints every 100 ms on
// generated events put out of order by up to 2 s, fed a batch of 100
// events every 30 ms by a source that checkpoints its position. The sink
// stages its rows per checkpoint and commits them when the checkpoint
// completes; it refuses two completions once some rows are committed and
// before the source has read everything, so the job recovers from its
// last checkpoint mid-stream (joins, windows, keyed state, timers and
// the watermarks of q5's and q7's candidates restored, the source
// rewound). The committed rows, as a multiset, equal the
// reference: each once.
func TestClosingRecovery(t *testing.T) {
	g := nexmark.NewGenerator(nexmark.Config{Seed: 21, EventsPerSecond: 50})
	evs := make([]nexmark.Event, 4000)
	for i := range evs {
		evs[i] = g.NextEvent()
	}
	for _, q := range []string{"q4", "q5", "q6", "q7"} {
		t.Run(q, func(t *testing.T) {
			want := reference.Results(q, evs)
			if len(want) == 0 {
				t.Fatalf("%s: the reference has no rows: the test would prove nothing", q)
			}
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			recs := decodeBatches(t, mem, reference.Disorder(evs, 2*time.Second, 21), 100)
			defer func() {
				for _, r := range recs {
					r.Release()
				}
			}()
			ctx := testutil.Context(t, time.Minute)
			gate := &releaseGate{changed: make(chan struct{})}
			var restored atomic.Int64
			src := meshflow.FromSource(nexmark.EventSchema, func() actors.Source {
				return &positionSource{recs: recs, gate: gate, restored: &restored}
			})
			out := &committed{}
			refusals := &atomic.Int64{}
			refusals.Store(2)
			sink := meshflow.ToOperator(func() meshflow.Operator {
				return &stagingSink{out: out, refusals: refusals, midStream: func() bool { return gate.get() < len(recs) }}
			})
			p, err := queries.Build(q, src, sink)
			if err != nil {
				t.Fatal(err)
			}
			// The feeder releases a batch every 30 ms, and the last one only
			// once the sink refused both completions (mid-stream, however
			// slow the machine); it stops with the test.
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 1; i <= len(recs); i++ {
					for i == len(recs) && refusals.Load() > 0 {
						select {
						case <-time.After(10 * time.Millisecond):
						case <-stop:
							return
						}
					}
					gate.release(i)
					select {
					case <-time.After(30 * time.Millisecond):
					case <-stop:
						return
					}
				}
			}()
			defer func() { close(stop); wg.Wait() }()
			err = meshflow.Run(ctx, p, meshflow.WithAllocator(mem), meshflow.WithDataDir(t.TempDir()),
				meshflow.WithLogger(testutil.TestLogger(t)),
				meshflow.WithCheckpoints(meshflow.CheckpointConfig{
					Interval: 100 * time.Millisecond,
					Recovery: meshflow.RecoveryPolicy{MaxRecoveries: 10, Window: time.Minute,
						InitialBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond},
				}))
			if err != nil {
				t.Fatal(err)
			}
			if n := refusals.Load(); n > 0 {
				t.Fatalf("the job ended before the sink refused %d more completions", n)
			}
			if restored.Load() == 0 {
				t.Fatal("no source was restored from a checkpoint: the job never recovered")
			}
			diff, err := reference.Diff(out.bytes(), want)
			if err != nil {
				t.Fatal(err)
			}
			if diff != "" {
				t.Fatalf("%s: %s", q, diff)
			}
			t.Logf("%s: %d rows, %d source restores", q, len(want), restored.Load())
		})
	}
}

// decodeBatches decodes the events into batches of nexmark.EventSchema of
// n rows.
func decodeBatches(t *testing.T, mem memory.Allocator, evs []nexmark.Event, n int) []arrow.RecordBatch {
	t.Helper()
	dec, err := messages.NewJSONDecoder(mem, nexmark.EventSchema)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Release()
	var recs []arrow.RecordBatch
	var line []byte
	for i := range evs {
		line = nexmark.AppendEventJSON(line[:0], &evs[i])
		if err := dec.Append(line); err != nil {
			t.Fatal(err)
		}
		if dec.Len() == n || i == len(evs)-1 {
			recs = append(recs, dec.NewBatch())
		}
	}
	return recs
}

// releaseGate says how many batches the source may read.
type releaseGate struct {
	mu       sync.Mutex
	released int
	changed  chan struct{}
}

func (g *releaseGate) release(n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if n > g.released {
		g.released = n
		close(g.changed)
		g.changed = make(chan struct{})
	}
}

func (g *releaseGate) get() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.released
}

// positionSource reads the released batches in order and checkpoints the
// number of the next one; restored counts the opens from a checkpoint.
type positionSource struct {
	recs     []arrow.RecordBatch
	gate     *releaseGate
	restored *atomic.Int64

	st   persistence.Store
	next int
}

var _ actors.CheckpointHandler = (*positionSource)(nil)

func (s *positionSource) Open(ctx context.Context, oc actors.OperatorContext) error {
	s.st = oc.State()
	if oc.RestoredCheckpoint() == 0 {
		return nil
	}
	s.restored.Add(1)
	v, err := s.st.Get(ctx, []byte("next"))
	if errors.Is(err, persistence.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	n, l := binary.Uvarint(v)
	if l <= 0 {
		return fmt.Errorf("bad position %x", v)
	}
	s.next = int(n)
	return nil
}

func (s *positionSource) Read(ctx context.Context) (arrow.RecordBatch, error) {
	for {
		s.gate.mu.Lock()
		released, ch := s.gate.released, s.gate.changed
		s.gate.mu.Unlock()
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

func (s *positionSource) PrepareCheckpoint(ctx context.Context, _ uint64) error {
	var b persistence.Batch
	b.Put([]byte("next"), binary.AppendUvarint(nil, uint64(s.next)))
	return s.st.Apply(ctx, &b)
}

func (s *positionSource) Close(context.Context) error { return nil }

// committed holds the rows the sink committed, as JSON lines.
type committed struct {
	mu  sync.Mutex
	buf bytes.Buffer
	n   int
}

func (c *committed) add(lines string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.WriteString(lines)
	c.n += strings.Count(lines, "\n")
}

func (c *committed) rows() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func (c *committed) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.buf.Bytes())
}

// stagingSink writes its rows as JSON lines into its state at each
// checkpoint and commits them (to out) when the checkpoint completes, or
// when a recovery restores a later checkpoint. It refuses a completion
// (an error: the job recovers) while refusals is positive, once rows are
// committed and while midStream says the input is not all read.
type stagingSink struct {
	out       *committed
	refusals  *atomic.Int64
	midStream func() bool

	st  persistence.Store
	enc *messages.JSONRowEncoder
	buf []byte
}

func (s *stagingSink) Open(ctx context.Context, oc meshflow.OperatorContext) error {
	s.st = oc.State()
	if id := oc.RestoredCheckpoint(); id != 0 {
		return s.commit(ctx, id)
	}
	return nil
}

func (s *stagingSink) Close(context.Context) error { return nil }

func (s *stagingSink) Process(_ context.Context, in arrow.RecordBatch, _ meshflow.Emitter) error {
	if s.enc == nil {
		var err error
		if s.enc, err = messages.NewJSONRowEncoder(in.Schema()); err != nil {
			return err
		}
	}
	for i := range int(in.NumRows()) {
		s.buf = append(s.enc.AppendRow(s.buf, in, i), '\n')
	}
	return nil
}

func (s *stagingSink) PrepareCheckpoint(ctx context.Context, id uint64) error {
	var b persistence.Batch
	b.Put(fmt.Appendf(nil, "stage/%020d", id), s.buf)
	s.buf = s.buf[:0]
	return s.st.Apply(ctx, &b)
}

func (s *stagingSink) CheckpointComplete(ctx context.Context, id uint64) error {
	if s.out.rows() > 0 && s.midStream() && s.refusals.Load() > 0 {
		s.refusals.Add(-1)
		return errors.New("commit refused (test)")
	}
	return s.commit(ctx, id)
}

// commit moves the rows staged up to checkpoint upTo to out.
func (s *stagingSink) commit(ctx context.Context, upTo uint64) error {
	var del persistence.Batch
	err := s.st.Scan(ctx, []byte("stage/"), func(k, v []byte) error {
		id, err := strconv.ParseUint(strings.TrimPrefix(string(k), "stage/"), 10, 64)
		if err != nil || id > upTo {
			return err
		}
		s.out.add(string(v))
		del.Delete(k)
		return nil
	})
	if err != nil || del.Len() == 0 {
		return err
	}
	return s.st.Apply(ctx, &del)
}
