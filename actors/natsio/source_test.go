package natsio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/internal/logging"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
	"github.com/meshflow/meshflow/persistence"
)

// testOC is the OperatorContext of a source or sink driven directly by a
// test. With ckpt, the job takes checkpoints, the instance's State is
// store, and restored is the checkpoint the run was restored from.
type testOC struct {
	mem      memory.Allocator
	op       string
	par      int
	store    persistence.Store
	ckpt     bool
	restored uint64
}

func (testOC) Job() string { return "job" }
func (c testOC) Operator() string {
	if c.op == "" {
		return "src"
	}
	return c.op
}
func (testOC) Instance() int                       { return 0 }
func (c testOC) Parallelism() int                  { return max(c.par, 1) }
func (testOC) Logger() *slog.Logger                { return logging.Discard() }
func (c testOC) Allocator() memory.Allocator       { return c.mem }
func (c testOC) State() persistence.Store          { return c.store }
func (testOC) Timers() actors.TimerService         { return nil }
func (c testOC) Checkpointing() bool               { return c.ckpt }
func (c testOC) RestoredCheckpoint() uint64        { return c.restored }
func (testOC) KeyGroups() (int, int)               { return 0, actors.DefaultMaxParallelism }
func (testOC) MaxParallelism() int                 { return actors.DefaultMaxParallelism }
func (testOC) KeyedState() persistence.Store       { return nil }
func (testOC) RegisterFlusher(actors.StateFlusher) {}

func checked(t *testing.T) *memory.CheckedAllocator {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	t.Cleanup(func() { mem.AssertSize(t, 0) })
	return mem
}

var idSchema = arrow.NewSchema([]arrow.Field{{Name: "id", Type: arrow.PrimitiveTypes.Int64}}, nil)

type fixture struct {
	t   *testing.T
	ctx context.Context
	nc  *nats.Conn
	js  jetstream.JetStream
	mem *memory.CheckedAllocator
}

func newFixture(t *testing.T) *fixture {
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	f := &fixture{t: t, ctx: testutil.Context(t, 2*time.Minute), nc: nc, js: natstest.JetStream(t, nc), mem: checked(t)}
	if _, err := EnsureStream(f.ctx, f.js, "IN", []string{"in"}); err != nil {
		t.Fatal(err)
	}
	return f
}

// publish stores each payload on "in" and returns their stream sequences.
func (f *fixture) publish(payloads ...[]byte) []uint64 {
	f.t.Helper()
	seqs := make([]uint64, len(payloads))
	for i, p := range payloads {
		ack, err := f.js.Publish(f.ctx, "in", p)
		if err != nil {
			f.t.Fatal(err)
		}
		seqs[i] = ack.Sequence
	}
	return seqs
}

// open opens a source on "in", closed when the test ends.
func (f *fixture) open(cfg SourceConfig) *Source {
	f.t.Helper()
	cfg.Subjects = []string{"in"}
	if cfg.Schema == nil {
		cfg.Schema = idSchema
	}
	if err := cfg.Validate(); err != nil {
		f.t.Fatal(err)
	}
	s := NewSource(f.nc, cfg)
	if err := s.Open(f.ctx, testOC{mem: f.mem}); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// read reads one batch and its positions, then commits.
func (f *fixture) read(s *Source) (ids []int64, pos []uint64, err error) {
	f.t.Helper()
	rec, err := s.Read(f.ctx)
	if err != nil {
		return nil, nil, err
	}
	defer rec.Release()
	pos = s.Positions()
	if int64(len(pos)) != rec.NumRows() {
		f.t.Fatalf("%d positions for %d rows", len(pos), rec.NumRows())
	}
	if rec.NumRows() > 0 {
		ids = slices.Clone(rec.Column(0).(*array.Int64).Int64Values())
	}
	if err := s.Commit(f.ctx); err != nil {
		f.t.Fatal(err)
	}
	return ids, pos, nil
}

// readAll reads until end of input (bounded sources); sizes are the rows
// of each batch.
func (f *fixture) readAll(s *Source) (ids []int64, pos []uint64, sizes []int) {
	f.t.Helper()
	for {
		got, p, err := f.read(s)
		if errors.Is(err, io.EOF) {
			return ids, pos, sizes
		}
		if err != nil {
			f.t.Fatal(err)
		}
		ids, pos, sizes = append(ids, got...), append(pos, p...), append(sizes, len(got))
	}
}

func (f *fixture) consumerInfo(name string) *jetstream.ConsumerInfo {
	f.t.Helper()
	c, err := f.js.Consumer(f.ctx, "IN", name)
	if err != nil {
		f.t.Fatal(err)
	}
	info, err := c.Info(f.ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	return info
}

// deadLetters returns every message stored on subject.
func (f *fixture) deadLetters(subject string) []*jetstream.RawStreamMsg {
	f.t.Helper()
	name, err := f.js.StreamNameBySubject(f.ctx, subject)
	if err != nil {
		f.t.Fatal(err)
	}
	st, err := f.js.Stream(f.ctx, name)
	if err != nil {
		f.t.Fatal(err)
	}
	info, err := st.Info(f.ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(f.ctx, seq)
		if err != nil {
			f.t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func events[T int | int64](ids ...T) []byte {
	var b strings.Builder
	for _, id := range ids {
		fmt.Fprintf(&b, "{\"id\":%d}\n", id)
	}
	return []byte(b.String())
}

// TestSourceTrickle: a lone event is handed over at once, in a batch of
// one row, while the stream stays open and the batch size is large.
func TestSourceTrickle(t *testing.T) {
	f := newFixture(t)
	s := f.open(SourceConfig{BatchSize: 8192})
	for i := range 3 {
		seq := f.publish(events(i))[0]
		ids, pos, err := f.read(s)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids, []int64{int64(i)}) || !slices.Equal(pos, []uint64{Position(seq, 0)}) {
			t.Fatalf("event %d: batch ids %v positions %v, want [%d] [%d]", i, ids, pos, i, Position(seq, 0))
		}
	}
}

// TestSourceLinger: with a linger, events published while a batch waits
// join it; without one (the default), the batch holds what was waiting.
func TestSourceLinger(t *testing.T) {
	f := newFixture(t)
	s := f.open(SourceConfig{Linger: time.Hour, BatchSize: 3})
	f.publish(events(1), events(2))
	done := make(chan []int64, 1)
	go func() {
		ids, _, err := f.read(s)
		if err != nil {
			t.Error(err)
		}
		done <- ids
	}()
	f.publish(events(3))
	if ids := <-done; !slices.Equal(ids, []int64{1, 2, 3}) {
		t.Fatalf("batch %v, want the three events cut by the batch size", ids)
	}
}

// TestSourceBatchFull: events waiting in the prefetch buffer fill whole
// batches: BatchSize rows, or just past it when the last message holds
// several rows. Small Arrow IPC messages are concatenated; large ones (at
// least BatchSize/8 rows) are handed over as they are.
func TestSourceBatchFull(t *testing.T) {
	for _, c := range []struct {
		format       Format
		perMsg, size int
		asIs         bool
	}{
		{JSON, 1, 64, false}, {JSON, 7, 64, false},
		{ArrowIPC, 1, 64, false}, {ArrowIPC, 10, 128, false}, {ArrowIPC, 10, 64, true},
	} {
		t.Run(fmt.Sprint(c.format, c.perMsg, "/", c.size), func(t *testing.T) {
			f := newFixture(t)
			const msgs = 300
			payloads := make([][]byte, msgs)
			for i := range payloads {
				ids := make([]int64, c.perMsg)
				for j := range ids {
					ids[j] = int64(i*c.perMsg + j)
				}
				if c.format == ArrowIPC {
					payloads[i] = ipcMessage(t, f.mem, ids)
				} else {
					payloads[i] = events(ids...)
				}
			}
			f.publish(payloads...)
			s := f.open(SourceConfig{Format: c.format, BatchSize: c.size, Prefetch: msgs, Bounded: true})
			testutil.CheckFor(t, 30*time.Second, 5*time.Millisecond, func() error {
				s.q.mu.Lock()
				defer s.q.mu.Unlock()
				if len(s.q.msgs) != msgs {
					return fmt.Errorf("%d messages prefetched, want %d", len(s.q.msgs), msgs)
				}
				return nil
			})
			ids, pos, sizes := f.readAll(s)
			for i, id := range ids {
				if id != int64(i) {
					t.Fatalf("row %d is %d", i, id)
				}
			}
			if len(ids) != msgs*c.perMsg || len(pos) != len(ids) {
				t.Fatalf("%d rows, %d positions, want %d", len(ids), len(pos), msgs*c.perMsg)
			}
			for i, n := range sizes[:len(sizes)-1] {
				if c.asIs && n != c.perMsg || !c.asIs && (n < c.size || n >= c.size+c.perMsg) {
					t.Fatalf("batch %d of %v has %d rows", i, sizes, n)
				}
			}
		})
	}
}

// TestSourcePositions: every row's position is its message's stream
// sequence and its index in the message, for JSON lines (bad lines
// counted) and for Arrow IPC messages of several batches.
func TestSourcePositions(t *testing.T) {
	t.Run("json", func(t *testing.T) {
		f := newFixture(t)
		seqs := f.publish(
			[]byte("{\"id\":1}\n{\"id\":\"x\"}\n{\"id\":3}\n"),
			[]byte(`{"id":4}`),
			[]byte("{\"id\":5}\n\n{\"id\":6}"),
		)
		s := f.open(SourceConfig{Bounded: true})
		ids, pos, _ := f.readAll(s)
		want := []uint64{Position(seqs[0], 0), Position(seqs[0], 2), Position(seqs[1], 0), Position(seqs[2], 0), Position(seqs[2], 1)}
		if !slices.Equal(ids, []int64{1, 3, 4, 5, 6}) || !slices.Equal(pos, want) {
			t.Fatalf("ids %v positions %v, want [1 3 4 5 6] %v", ids, pos, want)
		}
		dl := f.deadLetters("in.dlq")
		if len(dl) != 1 {
			t.Fatalf("%d dead letters, want 1", len(dl))
		}
		h := dl[0].Header
		if got, want := h.Get(jetstream.MsgIDHeader), DeadLetterID("job", "src", Position(seqs[0], 1)); got != want {
			t.Errorf("dead letter id %q, want %q", got, want)
		}
		if h.Get(HeaderSourceSeq) != fmt.Sprint(seqs[0]) || h.Get(HeaderSourceSubject) != "in" ||
			h.Get(HeaderErrorClass) != ClassDecode || h.Get(HeaderJob) != "job" || h.Get(HeaderOperator) != "src" ||
			!strings.Contains(h.Get(HeaderError), "id") || string(dl[0].Data) != `{"id":"x"}` {
			t.Errorf("dead letter %q headers %v", dl[0].Data, h)
		}
	})
	// Batch size 8: every decoded batch is handed over as it is; default:
	// they are concatenated.
	for _, size := range []int{0, 8} {
		t.Run(fmt.Sprint("arrow/", size), func(t *testing.T) {
			f := newFixture(t)
			msg := ipcMessage(t, f.mem, []int64{1, 2, 3}, []int64{4, 5})
			seqs := f.publish(msg, ipcMessage(t, f.mem, []int64{6}))
			s := f.open(SourceConfig{Format: ArrowIPC, Bounded: true, BatchSize: size})
			ids, pos, sizes := f.readAll(s)
			want := []uint64{Position(seqs[0], 0), Position(seqs[0], 1), Position(seqs[0], 2), Position(seqs[0], 3), Position(seqs[0], 4), Position(seqs[1], 0)}
			if !slices.Equal(ids, []int64{1, 2, 3, 4, 5, 6}) || !slices.Equal(pos, want) {
				t.Fatalf("ids %v positions %v, want [1..6] %v", ids, pos, want)
			}
			if size == 8 && !slices.Equal(sizes, []int{3, 2, 1}) {
				t.Fatalf("batches of %v rows, want [3 2 1]", sizes)
			}
		})
	}
}

func TestPositionRoundTrip(t *testing.T) {
	for _, c := range []struct {
		seq  uint64
		line int
	}{{1, 0}, {7, 5}, {1 << 39, MaxLines - 1}} {
		seq, line := SplitPosition(Position(c.seq, c.line))
		if seq != c.seq || line != c.line {
			t.Errorf("SplitPosition(Position(%d, %d)) = %d, %d", c.seq, c.line, seq, line)
		}
	}
	if Position(2, 0) <= Position(1, MaxLines-1) {
		t.Error("positions do not increase with the sequence")
	}
}

// ipcMessage encodes one Arrow IPC stream holding a batch per id list.
func ipcMessage(t *testing.T, mem memory.Allocator, batches ...[]int64) []byte {
	t.Helper()
	var recs []arrow.RecordBatch
	for _, ids := range batches {
		b := array.NewRecordBuilder(mem, idSchema)
		b.Field(0).(*array.Int64Builder).AppendValues(ids, nil)
		recs = append(recs, b.NewRecordBatch())
		b.Release()
	}
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(idSchema), ipc.WithAllocator(mem))
	for _, r := range recs {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestSourceTooManyLines: a message with more events or rows than
// MaxLines is dead-lettered whole, as oversize; the rows before and after
// it flow.
func TestSourceTooManyLines(t *testing.T) {
	old := maxLines
	maxLines = 4
	t.Cleanup(func() { maxLines = old })
	for _, c := range []struct {
		format Format
		big    func(*fixture) []byte
	}{
		{JSON, func(*fixture) []byte { return events(10, 11, 12, 13, 14) }},
		{ArrowIPC, func(f *fixture) []byte { return ipcMessage(t, f.mem, []int64{10, 11, 12}, []int64{13, 14}) }},
	} {
		t.Run(c.format.String(), func(t *testing.T) {
			f := newFixture(t)
			enc := func(id int) []byte {
				if c.format == ArrowIPC {
					return ipcMessage(t, f.mem, []int64{int64(id)})
				}
				return events(id)
			}
			seqs := f.publish(enc(1), c.big(f), enc(2))
			s := f.open(SourceConfig{Format: c.format, Bounded: true})
			ids, _, _ := f.readAll(s)
			if !slices.Equal(ids, []int64{1, 2}) {
				t.Fatalf("ids %v, want [1 2]", ids)
			}
			dl := f.deadLetters("in.dlq")
			if len(dl) != 1 || dl[0].Header.Get(HeaderErrorClass) != ClassOversize ||
				!strings.Contains(dl[0].Header.Get(HeaderError), "more than the 4") ||
				dl[0].Header.Get(HeaderSourceSeq) != fmt.Sprint(seqs[1]) {
				t.Fatalf("dead letters %v", dl)
			}
			if counts := s.DeadLetterCounts(); counts[ClassOversize] != 1 {
				t.Errorf("counts %v", counts)
			}
		})
	}
}

// TestSourceBoundedEnds: a bounded source returns io.EOF once the stream
// is read, also when it is empty or holds only bad events (whose message
// is then acknowledged).
func TestSourceBoundedEnds(t *testing.T) {
	for _, c := range []struct {
		name     string
		payloads [][]byte
		rows     int
	}{
		{"empty", nil, 0},
		{"bad only", [][]byte{[]byte("nope")}, 0},
		{"rows", [][]byte{events(1, 2), events(3)}, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			f.publish(c.payloads...)
			s := f.open(SourceConfig{Bounded: true})
			start := time.Now()
			ids, _, _ := f.readAll(s)
			t.Logf("ended %v after opening", time.Since(start))
			if len(ids) != c.rows {
				t.Fatalf("%d rows, want %d", len(ids), c.rows)
			}
			if info := f.consumerInfo("job-src"); info.NumAckPending != 0 || info.NumPending != 0 {
				t.Fatalf("consumer: %d ack pending, %d pending", info.NumAckPending, info.NumPending)
			}
		})
	}
}

// TestSourceCloseNaksPrefetched: closing a source naks what it read but
// did not commit, and what it prefetched, so a new source gets them at
// once (AckWait is an hour).
func TestSourceCloseNaksPrefetched(t *testing.T) {
	f := newFixture(t)
	const n = 100
	payloads := make([][]byte, n)
	for i := range payloads {
		payloads[i] = events(i)
	}
	f.publish(payloads...)
	s := f.open(SourceConfig{BatchSize: 10, Prefetch: 200, AckWait: time.Hour})
	first, _, err := f.read(s)
	if err != nil {
		t.Fatal(err)
	}
	// A batch read and not committed.
	rec, err := s.Read(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	rec.Release()
	testutil.CheckFor(t, 30*time.Second, 5*time.Millisecond, func() error {
		if info := f.consumerInfo("job-src"); info.NumAckPending != n-len(first) {
			return fmt.Errorf("%d messages delivered and not acknowledged, want %d", info.NumAckPending, n-len(first))
		}
		return nil
	})
	if err := s.Close(f.ctx); err != nil {
		t.Fatal(err)
	}
	s2 := f.open(SourceConfig{BatchSize: 10, AckWait: time.Hour})
	var ids []int64
	for len(ids) < n-len(first) {
		got, _, err := f.read(s2)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, got...)
	}
	ids = append(ids, first...)
	slices.Sort(ids)
	for i, id := range ids {
		if id != int64(i) {
			t.Fatalf("ids after restart %v", ids)
		}
	}
}

// TestSourcePoison: each event that cannot be decoded, between good ones
// in the same message and in messages of their own, is dead-lettered with
// a reason while every good event flows.
func TestSourcePoison(t *testing.T) {
	f := newFixture(t)
	max := int(f.nc.MaxPayload())
	nearMax := append([]byte(`{"id":`), strings.Repeat("9", max-200)...)
	deep := []byte(`{"id":` + strings.Repeat("[", 1_000_000))
	cases := []struct {
		name, class, reason string
		payload             []byte
		truncated           bool
		// alone: only in a message of its own (too large to share one,
		// or a blank line, which is no event within a message).
		alone bool
	}{
		{"undecodable just under max payload", ClassDecode, "", nearMax, true, true},
		{"1M-deep nesting", ClassDecode, "nested deeper", deep, false, false},
		{"NaN literal", ClassDecode, "", []byte(`{"id":NaN}`), false, false},
		{"Infinity literal", ClassDecode, "", []byte(`{"id":-Infinity}`), false, false},
		{"not an object", ClassDecode, "", []byte(`[1,2]`), false, false},
		{"empty", ClassDecode, "empty", []byte("  "), false, true},
		{"escape", ClassDecode, "", []byte(`{"id":"\b"}`), false, false},
	}
	var payloads [][]byte
	id := 0
	good := func() []byte { id++; return events(id) }
	for _, c := range cases {
		// Alone, and between good events in one message.
		payloads = append(payloads, good(), c.payload)
		if !c.alone {
			payloads = append(payloads, slices.Concat(good(), c.payload, []byte("\n"), good()))
		}
	}
	payloads = append(payloads, good())
	f.publish(payloads...)
	s := f.open(SourceConfig{Bounded: true})
	ids, _, _ := f.readAll(s)
	if len(ids) != id {
		t.Fatalf("%d good events arrived, want %d: %v", len(ids), id, ids)
	}
	dl := f.deadLetters("in.dlq")
	i := 0
	for _, c := range cases {
		n := 2
		if c.alone {
			n = 1
		}
		for range n {
			if i >= len(dl) {
				t.Fatalf("%s: missing dead letter", c.name)
			}
			h := dl[i].Header
			if h.Get(HeaderErrorClass) != c.class || h.Get(HeaderError) == "" || !strings.Contains(h.Get(HeaderError), c.reason) {
				t.Errorf("%s: dead letter class %q reason %q", c.name, h.Get(HeaderErrorClass), h.Get(HeaderError))
			}
			if got := h.Get(HeaderTruncated) == "true"; got != c.truncated {
				t.Errorf("%s: truncated %v, want %v", c.name, got, c.truncated)
			}
			if !c.truncated && !strings.Contains(string(c.payload), strings.TrimSpace(string(dl[i].Data))) {
				t.Errorf("%s: dead letter holds %.40q", c.name, dl[i].Data)
			}
			i++
		}
	}
	if i != len(dl) {
		t.Fatalf("%d dead letters, want %d", len(dl), i)
	}
	if counts := s.DeadLetterCounts(); counts[ClassDecode] != int64(i) {
		t.Errorf("counts %v, want %d decode", counts, i)
	}
}

func TestAckSeqPending(t *testing.T) {
	for _, c := range []struct {
		reply        string
		seq, pending uint64
		ok           bool
	}{
		{"$JS.ACK.IN.cons.1.42.7.1700000000.3", 42, 3, true},
		{"$JS.ACK._.hash.IN.cons.1.42.7.1700000000.3.tok", 42, 3, true},
		{"$JS.ACK.dom.hash.IN.cons.2.43.8.1700000000.0", 43, 0, true},
		{"$JS.ACK.IN.cons.1.x.7.1700000000.3", 0, 0, false},
		{"_INBOX.abc", 0, 0, false},
		{"$JS.ACK.IN.cons.1.42", 0, 0, false},
	} {
		seq, pending, ok := ackSeqPending(c.reply)
		if seq != c.seq || pending != c.pending || ok != c.ok {
			t.Errorf("ackSeqPending(%q) = %d, %d, %v; want %d, %d, %v", c.reply, seq, pending, ok, c.seq, c.pending, c.ok)
		}
	}
}

// TestSourceDefaults: the documented defaults, and a consumer whose
// MaxAckPending holds a full batch and a full prefetch buffer per instance.
func TestSourceDefaults(t *testing.T) {
	f := newFixture(t)
	s := f.open(SourceConfig{})
	c := s.cfg
	maxPayload := int(f.nc.MaxPayload())
	if c.BatchSize != 8192 || c.BatchBytes != 8<<20 || c.Linger != 0 || c.Prefetch != 8192 ||
		c.PrefetchBytes != min(max(2*maxPayload, 4<<20), 48<<20) || c.AckWait != 30*time.Second ||
		c.DeadLetter != "in.dlq" || c.Consumer != "job-src" || c.Format != JSON {
		t.Fatalf("defaults %+v", c)
	}
	if got := f.consumerInfo("job-src").Config.MaxAckPending; got != c.BatchSize+c.Prefetch {
		t.Fatalf("MaxAckPending %d, want %d", got, c.BatchSize+c.Prefetch)
	}
	if got := (SourceConfig{Subjects: []string{"x"}, PrefetchBytes: 1}).withDefaults("j", "o", 8<<20).PrefetchBytes; got < 8<<20 {
		t.Fatalf("PrefetchBytes %d cannot carry a max-size message", got)
	}
}

// TestSourcePrefetchBounded: however large the messages, what a source
// pulls ahead stays within its bounds in bytes: its own buffer of
// PrefetchBytes plus the client's pull requests of PrefetchBytes.
func TestSourcePrefetchBounded(t *testing.T) {
	f := newFixture(t)
	const size, n = 512 << 10, 64 // 32 MiB in all
	payload := []byte(`{"id":1,"pad":"` + strings.Repeat("x", size) + `"}`)
	for range n {
		f.publish(payload)
	}
	// The least a source allows: one max-size message.
	limit := int(f.nc.MaxPayload()) + 64<<10
	s := f.open(SourceConfig{PrefetchBytes: 1})
	if s.cfg.PrefetchBytes != limit {
		t.Fatalf("PrefetchBytes %d, want %d", s.cfg.PrefetchBytes, limit)
	}
	testutil.CheckFor(t, 30*time.Second, 5*time.Millisecond, func() error {
		s.q.mu.Lock()
		defer s.q.mu.Unlock()
		if s.q.bytes+size+128 <= limit {
			return fmt.Errorf("prefetch buffer holds %d bytes, not yet full", s.q.bytes)
		}
		return nil
	})
	if err := f.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Buffer, the message the pulling goroutine holds, and at most
	// PrefetchBytes requested.
	bound := (limit+limit)/size + 1
	if got := f.consumerInfo("job-src").NumAckPending; got > bound || got >= n {
		t.Fatalf("%d messages of %d bytes delivered ahead, bound %d", got, size, bound)
	}
}

// TestSourceCommitWaitsForDeadLetters: when a dead letter cannot be
// stored, Commit fails and the message holding the bad event is not
// acknowledged.
func TestSourceCommitWaitsForDeadLetters(t *testing.T) {
	f := newFixture(t)
	if _, err := f.js.CreateOrUpdateStream(f.ctx, jetstream.StreamConfig{Name: "DLQ_FULL", Subjects: []string{"in.dlq"},
		MaxMsgs: 1, Discard: jetstream.DiscardNew}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.js.Publish(f.ctx, "in.dlq", []byte("taken")); err != nil {
		t.Fatal(err)
	}
	f.publish([]byte("{\"id\":1}\nbad"))
	s := f.open(SourceConfig{})
	rec, err := s.Read(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	rec.Release()
	if err := s.Commit(f.ctx); err == nil || !strings.Contains(err.Error(), "maximum messages exceeded") {
		t.Fatalf("Commit = %v, want the dead letter's refusal", err)
	}
	if info := f.consumerInfo("job-src"); info.AckFloor.Stream != 0 || info.NumAckPending != 1 {
		t.Fatalf("message acknowledged: ack floor %d, %d pending", info.AckFloor.Stream, info.NumAckPending)
	}
}

// TestSourceDeadLetterStreamMaxMsgSize: a dead-letter stream with a max
// message size below the server's max payload gets dead letters truncated
// to fit it.
func TestSourceDeadLetterStreamMaxMsgSize(t *testing.T) {
	f := newFixture(t)
	if _, err := f.js.CreateOrUpdateStream(f.ctx, jetstream.StreamConfig{Name: "SMALL_DLQ", Subjects: []string{"in.dlq"},
		MaxMsgSize: 4096}); err != nil {
		t.Fatal(err)
	}
	f.publish([]byte(strings.Repeat("z", 20_000)), events(1))
	s := f.open(SourceConfig{Bounded: true})
	if ids, _, _ := f.readAll(s); !slices.Equal(ids, []int64{1}) {
		t.Fatalf("ids %v", ids)
	}
	dl := f.deadLetters("in.dlq")
	if len(dl) != 1 || dl[0].Header.Get(HeaderTruncated) != "true" || dl[0].Header.Get(HeaderOriginalSize) != "20000" || len(dl[0].Data) > 4096 {
		t.Fatalf("dead letters %v", dl)
	}
}

// TestSourceBatchBytes: a batch is cut once its messages reach BatchBytes.
func TestSourceBatchBytes(t *testing.T) {
	f := newFixture(t)
	const msgs = 100
	payloads := make([][]byte, msgs)
	for i := range payloads {
		payloads[i] = fmt.Appendf(nil, `{"id":%d,"pad":"%s"}`, i, strings.Repeat("p", 34-len(fmt.Sprint(i))))
		if len(payloads[i]) != 50 {
			t.Fatalf("payload of %d bytes", len(payloads[i]))
		}
	}
	f.publish(payloads...)
	s := f.open(SourceConfig{BatchBytes: 500, Prefetch: msgs, Bounded: true})
	testutil.CheckFor(t, 30*time.Second, 5*time.Millisecond, func() error {
		s.q.mu.Lock()
		defer s.q.mu.Unlock()
		if len(s.q.msgs) != msgs {
			return fmt.Errorf("%d messages prefetched, want %d", len(s.q.msgs), msgs)
		}
		return nil
	})
	ids, _, sizes := f.readAll(s)
	if len(ids) != msgs || len(sizes) != msgs/10 || slices.ContainsFunc(sizes, func(n int) bool { return n != 10 }) {
		t.Fatalf("%d rows in batches of %v, want batches of 10", len(ids), sizes)
	}
}
