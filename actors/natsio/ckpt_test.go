package natsio

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/internal/natsembed"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
	"github.com/meshflow/meshflow/messages"
	"github.com/meshflow/meshflow/persistence"
	"github.com/meshflow/meshflow/persistence/memstore"
)

// ckptNamespaces are the namespaces the sink and the source keep in their
// instance's State.
var ckptNamespaces = []string{"natsio.sink", "natsio.sink.dlq", "natsio.source", "natsio.source.dlq"}

// copyState returns a copy of an instance's State: what a checkpoint
// taken at that moment holds.
func copyState(t *testing.T, ctx context.Context, from persistence.Store) persistence.Store {
	t.Helper()
	to := memstore.New()
	t.Cleanup(func() { _ = to.Close() })
	for _, ns := range ckptNamespaces {
		var b persistence.Batch
		err := from.Namespace(ns).Scan(ctx, nil, func(k, v []byte) error {
			b.Put(k, v)
			return nil
		})
		if err == nil {
			err = to.Namespace(ns).Apply(ctx, &b)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return to
}

// outlastWindow returns once the ids published to the stream of subject
// before the call are out of its duplicate window: a probe id published
// now is accepted again.
func outlastWindow(t *testing.T, ctx context.Context, js jetstream.JetStream, subject string) {
	t.Helper()
	if _, err := js.Publish(ctx, subject, nil, jetstream.WithMsgID("probe")); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		ack, err := js.Publish(ctx, subject, nil, jetstream.WithMsgID("probe"))
		if err != nil {
			return err
		}
		if ack.Duplicate {
			return errors.New("probe still in the duplicate window")
		}
		return nil
	})
}

// subjectMsgs returns every message stored on subject in stream.
func subjectMsgs(t *testing.T, ctx context.Context, js jetstream.JetStream, stream, subject string) []jetstream.Msg {
	t.Helper()
	c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	if c.CachedInfo().NumPending == 0 {
		return out
	}
	for {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
		md, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		if md.NumPending == 0 {
			return out
		}
	}
}

// countValues counts the values of "v" in JSON messages.
func countValues(t *testing.T, msgs []jetstream.Msg) map[int64]int {
	t.Helper()
	got := map[int64]int{}
	for _, m := range msgs {
		var row struct{ V int64 }
		if err := json.Unmarshal(m.Data(), &row); err != nil {
			t.Fatalf("message %q: %v", m.Data(), err)
		}
		got[row.V]++
	}
	return got
}

func checkOnce(t *testing.T, what string, got map[int64]int, want []int64) {
	t.Helper()
	var bad []string
	for _, v := range want {
		if got[v] != 1 {
			bad = append(bad, fmt.Sprintf("%d×%d", v, got[v]))
		}
	}
	if len(got) != len(want) {
		bad = append(bad, fmt.Sprintf("%d distinct values, want %d", len(got), len(want)))
	}
	if len(bad) > 0 {
		t.Fatalf("%s: not exactly once: %s", what, strings.Join(bad, ", "))
	}
}

var vsSchema = arrow.NewSchema([]arrow.Field{
	{Name: "v", Type: arrow.PrimitiveTypes.Int64},
	{Name: "s", Type: arrow.BinaryTypes.String},
}, nil)

// vsBatch is a batch of rows (v, s); rows of big are 600 bytes long.
func vsBatch(mem memory.Allocator, vals []int64, big func(int64) bool) arrow.RecordBatch {
	b := array.NewRecordBuilder(mem, vsSchema)
	defer b.Release()
	for _, v := range vals {
		b.Field(0).(*array.Int64Builder).Append(v)
		s := "r" + strconv.FormatInt(v, 10)
		if big != nil && big(v) {
			s = strings.Repeat("x", 600)
		}
		b.Field(1).(*array.StringBuilder).Append(s)
	}
	return b.NewRecordBatch()
}

// Crash points around checkpoint 2 (checkpoint 1 is complete and
// committed).
type crashAt int

const (
	beforePrepare  crashAt = iota + 1 // rows processed, checkpoint 2 not prepared
	afterPrepare                      // prepared, never completed: restore from 1
	afterComplete                     // complete, CheckpointComplete never called: restore from 2
	midCommit                         // the commit publishes k messages, then the process dies
	afterCommit                       // committed: restore from 2
	abortedNoCrash                    // checkpoint 2 aborted; 3 completes; no crash
)

// TestSinkExactlyOnceAcrossCrashes drives a sink with checkpoints through
// three epochs (100 rows and 2 oversize rows each, dead-lettered), a
// crash at every step of checkpoint 2, and a restore from the last
// complete checkpoint (the State copied at its PrepareCheckpoint), with
// a duplicate window outlasted before the restart and one that is not:
// the target stream and the dead-letter stream hold every message exactly
// once, and the restored sink republishes exactly what the commit had
// not published.
func TestSinkExactlyOnceAcrossCrashes(t *testing.T) {
	cases := []struct {
		name string
		at   crashAt
		// cut: messages the sink's commit gets acknowledged before dying;
		// dlCut: the same for its dead letters (committed first).
		cut, dlCut int
		// wantRows, wantDL: what the restored sink publishes in Open.
		wantRows, wantDL int64
	}{
		{name: "before prepare", at: beforePrepare},
		{name: "after prepare", at: afterPrepare},
		{name: "after complete, before commit", at: afterComplete, wantRows: 100, wantDL: 2},
		{name: "mid commit of rows", at: midCommit, cut: 37, wantRows: 63},
		// Rows and dead letters are published independently: the rows'
		// commit finished.
		{name: "mid commit of dead letters", at: midCommit, dlCut: 1, wantDL: 1},
		{name: "mid commit of both", at: midCommit, cut: 50, dlCut: 1, wantRows: 50, wantDL: 1},
		{name: "after commit", at: afterCommit},
		{name: "aborted checkpoint", at: abortedNoCrash},
	}
	windows := []struct {
		name    string
		window  time.Duration
		outlast bool
	}{
		// 100 ms is the smallest duplicate window the server accepts.
		{name: "window outlasted", window: 100 * time.Millisecond, outlast: true},
		{name: "within window", window: 2 * time.Minute},
	}
	for _, w := range windows {
		for _, tc := range cases {
			t.Run(w.name+"/"+tc.name, func(t *testing.T) {
				srv := natstest.RunJetStream(t)
				admin := natstest.Connect(t, srv)
				js := natstest.JetStream(t, admin)
				ctx := testutil.Context(t, time.Minute)
				mem := checked(t)
				for _, sc := range []jetstream.StreamConfig{
					{Name: "OUT", Subjects: []string{"out", "probe.out"}, Duplicates: w.window, MaxMsgSize: 512},
					{Name: "OUTDLQ", Subjects: []string{"out.dlq", "probe.dlq"}, Duplicates: w.window},
				} {
					if _, err := js.CreateStream(ctx, sc); err != nil {
						t.Fatal(err)
					}
				}
				big := func(v int64) bool { return v >= 1000 }
				epoch := func(i int64) [][]int64 {
					return [][]int64{
						append(seqVals(i*100, i*100+50), 1000+2*i),
						append(seqVals(i*100+50, i*100+100), 1000+2*i+1),
					}
				}
				open := func(store persistence.Store, restored uint64) (*Sink, *nats.Conn) {
					nc := natstest.Connect(t, srv)
					s := NewSink(nc, SinkConfig{Subject: "out", DeadLetter: "out.dlq"})
					if err := s.Open(ctx, testOC{mem: mem, op: "out", store: store, ckpt: true, restored: restored}); err != nil {
						t.Fatal(err)
					}
					return s, nc
				}
				process := func(s *Sink, batches [][]int64) {
					for _, vals := range batches {
						rec := vsBatch(mem, vals, big)
						err := s.Process(ctx, rec, nil)
						rec.Release()
						if err != nil {
							t.Fatal(err)
						}
					}
				}
				must := func(err error) {
					t.Helper()
					if err != nil {
						t.Fatal(err)
					}
				}

				state := memstore.New()
				s1, nc1 := open(state, 0)
				process(s1, epoch(0))
				if n := len(subjectMsgs(t, ctx, js, "OUT", "out")); n != 0 {
					t.Fatalf("%d messages published before any checkpoint", n)
				}
				must(s1.PrepareCheckpoint(ctx, 1))
				snap1 := copyState(t, ctx, state)
				must(complete(ctx, s1, 1))
				if st := s1.Stats(); st.Published != 100 || st.DeadLettered != 2 {
					t.Fatalf("after checkpoint 1: %+v", st)
				}
				process(s1, epoch(1))

				var snap2 persistence.Store
				if tc.at != beforePrepare {
					must(s1.PrepareCheckpoint(ctx, 2))
					snap2 = copyState(t, ctx, state)
				}
				switch tc.at {
				case midCommit:
					s1.tx.failAfterAcks, s1.dlq.tx.failAfterAcks = tc.cut, tc.dlCut
					if err := complete(ctx, s1, 2); !errors.Is(err, errTxCut) {
						t.Fatalf("commit cut short: %v", err)
					}
				case afterCommit:
					must(complete(ctx, s1, 2))
				case abortedNoCrash:
					process(s1, epoch(2))
					must(s1.PrepareCheckpoint(ctx, 3))
					must(complete(ctx, s1, 3))
				}

				if tc.at != abortedNoCrash {
					nc1.Close() // the process dies: nothing more leaves it
					if w.outlast {
						outlastWindow(t, ctx, js, "probe.out")
						outlastWindow(t, ctx, js, "probe.dlq")
					}
					from, restored := snap1, uint64(1)
					if tc.at >= afterComplete {
						from, restored = snap2, 2
					}
					s2, _ := open(copyState(t, ctx, from), restored)
					st := s2.Stats()
					if st.Published != tc.wantRows || s2.dlq.tx.published.Load() != tc.wantDL || st.Duplicates != 0 {
						t.Fatalf("restored sink published %d rows, %d dead letters, %d duplicates; want %d, %d, 0",
							st.Published, s2.dlq.tx.published.Load(), st.Duplicates, tc.wantRows, tc.wantDL)
					}
					if restored == 1 {
						// The input after checkpoint 1 is read again.
						process(s2, epoch(1))
					}
					process(s2, epoch(2))
					must(s2.PrepareCheckpoint(ctx, 3))
					must(complete(ctx, s2, 3))
				}

				checkOnce(t, "rows", countValues(t, subjectMsgs(t, ctx, js, "OUT", "out")), seqVals(0, 300))
				dls := subjectMsgs(t, ctx, js, "OUTDLQ", "out.dlq")
				checkOnce(t, "dead letters", countValues(t, dls), seqVals(1000, 1006))
				for _, m := range dls {
					if c := m.Headers().Get(HeaderErrorClass); c != ClassOversize {
						t.Fatalf("dead letter class %q", c)
					}
					if id := m.Headers().Get(jetstream.MsgIDHeader); !strings.HasPrefix(id, "job.out.0.dlq.") {
						t.Fatalf("dead letter id %q", id)
					}
				}
			})
		}
	}
}

// recordedPosition is the source position a checkpoint holds.
func recordedPosition(t *testing.T, ctx context.Context, state persistence.Store) uint64 {
	t.Helper()
	v, err := state.Namespace("natsio.source").Get(ctx, sourcePositionKey)
	if err != nil || len(v) != 8 {
		t.Fatalf("position: %x, %v", v, err)
	}
	return binary.BigEndian.Uint64(v)
}

func seqVals(lo, hi int64) []int64 {
	out := make([]int64, 0, hi-lo)
	for v := lo; v < hi; v++ {
		out = append(out, v)
	}
	return out
}

// srcRig drives JetStream sources with checkpoints over stream IN.
type srcRig struct {
	t   *testing.T
	ctx context.Context
	srv interface {
		Connect(...nats.Option) (*nats.Conn, error)
	}
	js  jetstream.JetStream
	mem *memory.CheckedAllocator
	cfg SourceConfig
}

func newSrcRig(t *testing.T, dupWindow time.Duration, cfg SourceConfig) *srcRig {
	srv := natstest.RunJetStream(t)
	admin := natstest.Connect(t, srv)
	r := &srcRig{t: t, ctx: testutil.Context(t, 2*time.Minute), srv: srv, js: natstest.JetStream(t, admin), mem: checked(t)}
	for _, sc := range []jetstream.StreamConfig{
		{Name: "IN", Subjects: []string{"in"}},
		{Name: "INDLQ", Subjects: []string{"in.dlq", "probe.dlq"}, Duplicates: dupWindow},
	} {
		if _, err := r.js.CreateStream(r.ctx, sc); err != nil {
			t.Fatal(err)
		}
	}
	cfg.Subjects, cfg.Schema, cfg.DeadLetter = []string{"in"}, idSchema, "in.dlq"
	r.cfg = cfg
	return r
}

func (r *srcRig) publish(payloads ...[]byte) {
	r.t.Helper()
	for _, p := range payloads {
		if _, err := r.js.Publish(r.ctx, "in", p); err != nil {
			r.t.Fatal(err)
		}
	}
}

// open opens a source with checkpoints on its own connection (closing it
// is the crash of the process).
func (r *srcRig) open(store persistence.Store, restored uint64) (*Source, *nats.Conn) {
	r.t.Helper()
	nc, err := r.srv.Connect()
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(nc.Close)
	s := NewSource(nc, r.cfg)
	if err := s.Open(r.ctx, testOC{mem: r.mem, store: store, ckpt: true, restored: restored}); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s, nc
}

// read reads one batch, hands it over (Commit) and returns its ids.
func (r *srcRig) read(s *Source) ([]int64, error) {
	r.t.Helper()
	rec, err := s.Read(r.ctx)
	if err != nil {
		return nil, err
	}
	defer rec.Release()
	s.Positions()
	ids := slices.Clone(rec.Column(0).(*array.Int64).Int64Values())
	if err := s.Commit(r.ctx); err != nil {
		r.t.Fatal(err)
	}
	return ids, nil
}

// readAtLeast reads batches until it has n rows.
func (r *srcRig) readAtLeast(s *Source, n int) []int64 {
	r.t.Helper()
	var ids []int64
	for len(ids) < n {
		got, err := r.read(s)
		if err != nil {
			r.t.Fatal(err)
		}
		ids = append(ids, got...)
	}
	return ids
}

func (r *srcRig) readToEnd(s *Source) []int64 {
	r.t.Helper()
	var ids []int64
	for {
		got, err := r.read(s)
		if errors.Is(err, io.EOF) {
			return ids
		}
		if err != nil {
			r.t.Fatal(err)
		}
		ids = append(ids, got...)
	}
}

func (r *srcRig) consumer() *jetstream.ConsumerInfo {
	r.t.Helper()
	c, err := r.js.Consumer(r.ctx, "IN", "job-src")
	if err != nil {
		r.t.Fatal(err)
	}
	info, err := c.Info(r.ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	return info
}

// waitAcked waits until the consumer's ack floor is floor and nothing
// else is acknowledged above it... and returns its info.
func (r *srcRig) waitAckFloor(floor uint64) *jetstream.ConsumerInfo {
	r.t.Helper()
	var info *jetstream.ConsumerInfo
	testutil.CheckFor(r.t, 10*time.Second, 5*time.Millisecond, func() error {
		info = r.consumer()
		if info.AckFloor.Stream != floor {
			return fmt.Errorf("ack floor %d, want %d", info.AckFloor.Stream, floor)
		}
		return nil
	})
	return info
}

// TestSourceExactlyOnceAcrossCrashes reads 60 messages (every 7th a bad
// event, dead-lettered) through a source with checkpoints, crashes it at
// every step of checkpoint 2 and restores a new source from the last
// complete checkpoint (or none): the rows handed over before the restored
// checkpoint plus those the restored source reads are every good event
// exactly once, the restored source starting exactly at the recorded
// position, and the dead-letter stream holds every bad event exactly
// once with a duplicate window outlasted before the restart.
func TestSourceExactlyOnceAcrossCrashes(t *testing.T) {
	cases := []struct {
		name string
		at   crashAt
		// noCheckpoint: the crash comes before checkpoint 1.
		noCheckpoint bool
		dlCut        int
	}{
		{name: "before any checkpoint", noCheckpoint: true},
		{name: "before prepare", at: beforePrepare},
		{name: "after prepare", at: afterPrepare},
		{name: "after complete, before commit", at: afterComplete},
		{name: "mid commit of dead letters", at: midCommit, dlCut: 1},
		{name: "after commit", at: afterCommit},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// AckWait of an hour: nothing comes back unless the source
			// rewinds its consumer.
			r := newSrcRig(t, 100*time.Millisecond, SourceConfig{BatchSize: 10, Bounded: true, AckWait: time.Hour})
			var good []int64
			for i := int64(1); i <= 60; i++ {
				if i%7 == 0 {
					r.publish([]byte(fmt.Sprintf("{\"id\":%d,", i)))
				} else {
					r.publish(events(i))
					good = append(good, i)
				}
			}
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			state := memstore.New()
			s1, nc1 := r.open(state, 0)
			out1 := r.readAtLeast(s1, 18)
			var kept []int64 // rows the restored job's checkpoint covers
			from, restored, pos := persistence.Store(memstore.New()), uint64(0), uint64(1)
			if !tc.noCheckpoint {
				must(s1.PrepareCheckpoint(r.ctx, 1))
				snap1 := copyState(t, r.ctx, state)
				pos1 := recordedPosition(t, r.ctx, snap1)
				if last := uint64(out1[len(out1)-1]); pos1 <= last {
					t.Fatalf("position %d recorded after handing over %d", pos1, last)
				}
				if info := r.consumer(); info.AckFloor.Stream != 0 {
					t.Fatalf("ack floor %d before checkpoint 1 completes", info.AckFloor.Stream)
				}
				must(complete(r.ctx, s1, 1))
				r.waitAckFloor(pos1 - 1)
				out2 := r.readAtLeast(s1, 18)
				kept, from, restored, pos = out1, snap1, 1, pos1
				if tc.at != beforePrepare {
					must(s1.PrepareCheckpoint(r.ctx, 2))
					snap2 := copyState(t, r.ctx, state)
					if tc.at >= afterComplete {
						kept, from, restored, pos = append(out1, out2...), snap2, 2, recordedPosition(t, r.ctx, snap2)
					}
				}
				switch tc.at {
				case midCommit:
					s1.dl.tx.failAfterAcks = tc.dlCut
					if err := complete(r.ctx, s1, 2); !errors.Is(err, errTxCut) {
						t.Fatalf("commit cut short: %v", err)
					}
				case afterCommit:
					must(complete(r.ctx, s1, 2))
				}
			}
			nc1.Close()
			outlastWindow(t, r.ctx, r.js, "probe.dlq")

			s2, _ := r.open(copyState(t, r.ctx, from), restored)
			out3 := r.readToEnd(s2)
			// Exactly from the recorded position: the first good event at
			// or after it.
			next := int64(pos)
			if next%7 == 0 {
				next++
			}
			if pos > 60 {
				// Everything was read before the crash (a loaded machine
				// makes bigger batches): nothing is left to read.
				if len(out3) != 0 {
					t.Fatalf("restored source at position %d, past the end, read %v", pos, out3)
				}
			} else if len(out3) == 0 || out3[0] != next {
				t.Fatalf("restored source starts with %v, want %d (position %d)", out3[:min(len(out3), 1)], next, pos)
			}
			if got := append(slices.Clone(kept), out3...); !slices.Equal(got, good) {
				t.Fatalf("rows across the crash:\n got %v\nwant %v", got, good)
			}
			must(s2.PrepareCheckpoint(r.ctx, 3))
			must(complete(r.ctx, s2, 3))
			info := r.waitAckFloor(60)
			if info.NumAckPending != 0 || info.NumPending != 0 {
				t.Fatalf("after the last checkpoint: %d ack pending, %d pending", info.NumAckPending, info.NumPending)
			}
			dls := map[int64]int{}
			var bad []int64
			for _, m := range subjectMsgs(t, r.ctx, r.js, "INDLQ", "in.dlq") {
				seq, _ := strconv.ParseInt(m.Headers().Get(HeaderSourceSeq), 10, 64)
				dls[seq]++
			}
			for i := int64(7); i <= 60; i += 7 {
				bad = append(bad, i)
			}
			checkOnce(t, "dead letters", dls, bad)
		})
	}
}

// TestSourceCheckpointAcks: with checkpoints, handing batches over (Commit)
// and preparing a checkpoint acknowledge nothing; completing checkpoint id
// acknowledges exactly the messages handed over before it was prepared;
// Close acknowledges nothing more.
func TestSourceCheckpointAcks(t *testing.T) {
	r := newSrcRig(t, time.Minute, SourceConfig{BatchSize: 10, AckWait: time.Hour})
	for i := int64(1); i <= 30; i++ {
		r.publish(events(i))
	}
	s, nc := r.open(memstore.New(), 0)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	ids := r.readAtLeast(s, 10)
	must(s.PrepareCheckpoint(r.ctx, 1))
	must(nc.Flush())
	if info := r.consumer(); info.AckFloor.Stream != 0 || info.NumAckPending < len(ids) {
		t.Fatalf("handed over and prepared: ack floor %d, %d ack pending", info.AckFloor.Stream, info.NumAckPending)
	}
	more := r.readAtLeast(s, 10)
	must(complete(r.ctx, s, 1))
	r.waitAckFloor(uint64(ids[len(ids)-1]))
	must(nc.Flush())
	if info := r.consumer(); info.AckFloor.Stream != uint64(ids[len(ids)-1]) {
		t.Fatalf("checkpoint 1 acknowledged up to %d, want %d", info.AckFloor.Stream, ids[len(ids)-1])
	}
	must(s.PrepareCheckpoint(r.ctx, 2))
	must(complete(r.ctx, s, 2))
	r.waitAckFloor(uint64(more[len(more)-1]))
	r.readAtLeast(s, 1) // handed over, no checkpoint
	must(s.Close(r.ctx))
	must(nc.Flush())
	if info := r.consumer(); info.AckFloor.Stream != uint64(more[len(more)-1]) {
		t.Fatalf("after Close: ack floor %d, want %d", info.AckFloor.Stream, more[len(more)-1])
	}
}

// TestSourceCheckpointDropsRedeliveries: messages redelivered (AckWait
// passed before their checkpoint completed) are not handed over again,
// and are acknowledged with the next checkpoint.
func TestSourceCheckpointDropsRedeliveries(t *testing.T) {
	r := newSrcRig(t, time.Minute, SourceConfig{BatchSize: 10, AckWait: 200 * time.Millisecond})
	for i := int64(1); i <= 20; i++ {
		r.publish(events(i))
	}
	s, _ := r.open(memstore.New(), 0)
	got := r.readAtLeast(s, 20)
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := r.consumer().NumRedelivered; n < 20 {
			return fmt.Errorf("%d redelivered", n)
		}
		return nil
	})
	for i := int64(21); i <= 25; i++ {
		r.publish(events(i))
	}
	got = append(got, r.readAtLeast(s, 5)...)
	if !slices.Equal(got, seqVals(1, 26)) {
		t.Fatalf("read %v, want 1..25 once each", got)
	}
	if err := s.PrepareCheckpoint(r.ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := complete(r.ctx, s, 1); err != nil {
		t.Fatal(err)
	}
	info := r.waitAckFloor(25)
	if info.NumAckPending != 0 {
		t.Fatalf("%d ack pending after the checkpoint", info.NumAckPending)
	}
}

// TestSourceCheckpointRefusals: a source with checkpoints refuses a
// parallelism above 1 and a missing State, with clear errors.
func TestSourceCheckpointRefusals(t *testing.T) {
	r := newSrcRig(t, time.Minute, SourceConfig{})
	nc, err := r.srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	for _, tc := range []struct {
		oc   testOC
		want string
	}{
		{oc: testOC{mem: r.mem, par: 2, store: memstore.New(), ckpt: true}, want: "set its parallelism to 1"},
		{oc: testOC{mem: r.mem, ckpt: true}, want: "checkpoints need the instance's State"},
	} {
		s := NewSource(nc, r.cfg)
		err := s.Open(r.ctx, tc.oc)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("Open: %v, want an error saying %q", err, tc.want)
		}
	}
}

// TestSourceCheckpointArrowIPC: with checkpoints, an Arrow IPC message is
// never split across batches, and a checkpoint taken while the batches of
// later messages are decoded and waiting records only the messages whose
// rows were returned, without the dead letter of a bad message decoded
// among them: the restored source reads the next message whole, and the
// bad message is dead-lettered once.
func TestSourceCheckpointArrowIPC(t *testing.T) {
	// Record batches of 130 rows are large (BatchSize/8 = 125): without
	// checkpoints each would be a batch of its own.
	r := newSrcRig(t, time.Minute, SourceConfig{Format: ArrowIPC, BatchSize: 1000, Bounded: true, AckWait: time.Hour})
	var want [][]int64
	for k := int64(1); k <= 6; k++ {
		a, b := seqVals(k*1000, k*1000+130), seqVals(k*1000+130, k*1000+260)
		r.publish(ipcMessage(t, r.mem, a, b))
		want = append(want, append(a, b...))
		if k == 2 {
			r.publish([]byte("not arrow")) // stream sequence 3
		}
	}
	state := memstore.New()
	s1, nc1 := r.open(state, 0)
	testutil.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
		s1.q.mu.Lock()
		defer s1.q.mu.Unlock()
		if n := len(s1.q.msgs); n < 7 {
			return fmt.Errorf("%d messages prefetched", n)
		}
		return nil
	})
	first, err := r.read(s1)
	if err != nil {
		t.Fatal(err)
	}
	if len(s1.out) != 3 {
		t.Fatalf("%d batches waiting after the first, want 3 (one per message decoded)", len(s1.out))
	}
	if !slices.Equal(first, want[0]) {
		t.Fatalf("first batch: %d rows from %d, want message 1 whole", len(first), first[0])
	}
	if err := s1.PrepareCheckpoint(r.ctx, 1); err != nil {
		t.Fatal(err)
	}
	snap := copyState(t, r.ctx, state)
	if pos := recordedPosition(t, r.ctx, snap); pos != 2 {
		t.Fatalf("recorded position %d, want 2", pos)
	}
	staged := 0
	if err := snap.Namespace("natsio.source.dlq").Scan(r.ctx, nil, func(_, _ []byte) error { staged++; return nil }); err != nil {
		t.Fatal(err)
	}
	if staged != 0 {
		t.Fatalf("checkpoint 1 holds %d dead-letter keys; the bad message is after its position", staged)
	}
	second, err := r.read(s1)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(second, want[1]) {
		t.Fatalf("second batch: %d rows from %d, want message 2 whole", len(second), second[0])
	}
	nc1.Close()
	s2, _ := r.open(snap, 1)
	if got := r.readToEnd(s2); !slices.Equal(got, slices.Concat(want[1:]...)) {
		t.Fatalf("restored source read %d rows, want messages 2..6 (%d rows)", len(got), len(slices.Concat(want[1:]...)))
	}
	if err := s2.PrepareCheckpoint(r.ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := complete(r.ctx, s2, 2); err != nil {
		t.Fatal(err)
	}
	dls := map[int64]int{}
	for _, m := range subjectMsgs(t, r.ctx, r.js, "INDLQ", "in.dlq") {
		seq, _ := strconv.ParseInt(m.Headers().Get(HeaderSourceSeq), 10, 64)
		dls[seq]++
	}
	checkOnce(t, "dead letters", dls, []int64{3})
}

// TestSinkCheckpointArrowIPC: a sink writing Arrow IPC with checkpoints,
// its commit cut short after one message and the duplicate window
// outlasted, publishes every row exactly once after a restore.
func TestSinkCheckpointArrowIPC(t *testing.T) {
	srv := natstest.RunJetStream(t)
	js := natstest.JetStream(t, natstest.Connect(t, srv))
	ctx := testutil.Context(t, time.Minute)
	mem := checked(t)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "IPC", Subjects: []string{"ipc", "probe.ipc"}, Duplicates: 100 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	open := func(store persistence.Store, restored uint64) (*Sink, *nats.Conn) {
		nc := natstest.Connect(t, srv)
		s := NewSink(nc, SinkConfig{Subject: "ipc", Format: ArrowIPC})
		if err := s.Open(ctx, testOC{mem: mem, op: "out", store: store, ckpt: true, restored: restored}); err != nil {
			t.Fatal(err)
		}
		return s, nc
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	process := func(s *Sink, lo, hi int64) {
		for v := lo; v < hi; v += 50 {
			rec := vsBatch(mem, seqVals(v, v+50), nil)
			err := s.Process(ctx, rec, nil)
			rec.Release()
			must(err)
		}
	}
	state := memstore.New()
	s1, nc1 := open(state, 0)
	process(s1, 0, 100)
	must(s1.PrepareCheckpoint(ctx, 1))
	must(complete(ctx, s1, 1))
	process(s1, 100, 200)
	must(s1.PrepareCheckpoint(ctx, 2))
	snap := copyState(t, ctx, state)
	s1.tx.failAfterAcks = 1
	if err := complete(ctx, s1, 2); !errors.Is(err, errTxCut) {
		t.Fatalf("commit cut short: %v", err)
	}
	nc1.Close()
	outlastWindow(t, ctx, js, "probe.ipc")
	s2, _ := open(snap, 2)
	if st := s2.Stats(); st.Published != 1 {
		t.Fatalf("restored sink published %d messages, want the 1 missing", st.Published)
	}
	got := map[int64]int{}
	for _, m := range subjectMsgs(t, ctx, js, "IPC", "ipc") {
		recs, _, err := messages.DecodeIPC(mem, m.Data())
		must(err)
		for _, r := range recs {
			for _, v := range r.Column(0).(*array.Int64).Int64Values() {
				got[v]++
			}
			r.Release()
		}
	}
	checkOnce(t, "rows", got, seqVals(0, 200))
}

// TestSourceCheckpointDefaults: with checkpoints the consumer's AckWait
// is CheckpointAckWait and its MaxAckPending CheckpointMaxAckPending,
// unless configured.
func TestSourceCheckpointDefaults(t *testing.T) {
	for _, tc := range []struct {
		cfg     SourceConfig
		wait    time.Duration
		pending int
	}{
		{cfg: SourceConfig{}, wait: CheckpointAckWait, pending: CheckpointMaxAckPending},
		{cfg: SourceConfig{AckWait: time.Minute, MaxAckPending: 50000}, wait: time.Minute, pending: 50000},
	} {
		r := newSrcRig(t, time.Minute, tc.cfg)
		r.open(memstore.New(), 0)
		c := r.consumer().Config
		if c.AckWait != tc.wait || c.MaxAckPending != tc.pending {
			t.Fatalf("config %+v: AckWait %v, MaxAckPending %d; want %v, %d", tc.cfg, c.AckWait, c.MaxAckPending, tc.wait, tc.pending)
		}
	}
}

// TestTxStagedRoundTrip: staged messages, headers and data, are written in
// values of at most chunkBytes (a larger message takes one of its own) and
// read back intact; an epoch without its meta (a write cut short) is
// ignored and deleted.
func TestTxStagedRoundTrip(t *testing.T) {
	ctx := testutil.Context(t, time.Minute)
	store := memstore.New()
	tp, err := newTxPublisher(txConfig{store: store, stream: "S", subject: "s", chunkBytes: 256})
	if err != nil {
		t.Fatal(err)
	}
	type msg struct {
		hdr  nats.Header
		data []byte
	}
	var want []msg
	for i := range 40 {
		m := msg{data: []byte(strings.Repeat(string(rune('a'+i%26)), i*i%300))}
		if i%3 == 0 {
			m.hdr = nats.Header{"A": {"1", strconv.Itoa(i)}, "Meshflow-Error": {strings.Repeat("e", i)}}
		}
		want = append(want, m)
		tp.stage(m.hdr, m.data)
	}
	mark := tp.mark()
	tp.stage(nil, []byte("rolled back"))
	tp.rollback(mark)
	// What prepare writes, without a stream to ask for L.
	e := &txEpoch{id: 7, last: 41, buf: tp.open.buf, offs: tp.open.offs}
	if err := tp.write(ctx, e); err != nil {
		t.Fatal(err)
	}
	chunks := 0
	err = store.Scan(ctx, txChunkPrefix(7), func(_, v []byte) error {
		chunks++
		if size, _ := stagedSize(v); len(v) > 256 && size != len(v) {
			return fmt.Errorf("chunk of %d bytes holds several messages", len(v))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if chunks < 10 {
		t.Fatalf("%d chunks of at most 256 bytes for %d bytes", chunks, len(e.buf))
	}
	// An epoch whose Apply was cut short: chunks, no meta.
	var torn persistence.Batch
	torn.Put(txChunkKey(9, 0), e.buf[:e.offs[1]])
	if err := store.Apply(ctx, &torn); err != nil {
		t.Fatal(err)
	}
	epochs, err := tp.load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Get(ctx, txChunkKey(9, 0)); !errors.Is(err, persistence.ErrNotFound) {
		t.Fatalf("torn epoch left in the Store: %v", err)
	}
	if len(epochs) != 1 || epochs[0].id != 7 || epochs[0].last != 41 || len(epochs[0].offs) != len(want) {
		t.Fatalf("loaded %d epochs", len(epochs))
	}
	for k, w := range want {
		hdr, data, err := decodeStaged(epochs[0].buf[epochs[0].offs[k]:tp.end(epochs[0], k)])
		if err != nil {
			t.Fatal(err)
		}
		if string(data) != string(w.data) || len(hdr) != len(w.hdr) {
			t.Fatalf("message %d: %q %v, want %q %v", k, data, hdr, w.data, w.hdr)
		}
		for key, vs := range w.hdr {
			if !slices.Equal(hdr[key], vs) {
				t.Fatalf("message %d header %s: %v, want %v", k, key, hdr[key], vs)
			}
		}
	}
}

// complete completes checkpoint id on a sink or a source and waits for
// what that publishes in the background.
func complete(ctx context.Context, l actors.CheckpointListener, id uint64) error {
	if err := l.CheckpointComplete(ctx, id); err != nil {
		return err
	}
	switch x := l.(type) {
	case *Sink:
		return x.flushCommits(ctx)
	case *Source:
		return x.dl.Flush(ctx)
	}
	return nil
}

// TestSinkCommitsInBackground: CheckpointComplete hands the checkpoint's
// messages to the sink's committer and returns; Process goes on staging
// the next checkpoint's meanwhile; Close waits for the commit; a commit
// that fails fails the next Process, and what it did not publish is
// published by a run restored from a checkpoint holding it.
func TestSinkCommitsInBackground(t *testing.T) {
	srv := natstest.RunJetStream(t)
	admin := natstest.Connect(t, srv)
	js := natstest.JetStream(t, admin)
	ctx := testutil.Context(t, time.Minute)
	mem := checked(t)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OUT", Subjects: []string{"out"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OUTDLQ", Subjects: []string{"out.dlq"}}); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	open := func(store persistence.Store, restored uint64) *Sink {
		s := NewSink(natstest.Connect(t, srv), SinkConfig{Subject: "out", DeadLetter: "out.dlq"})
		must(s.Open(ctx, testOC{mem: mem, op: "out", store: store, ckpt: true, restored: restored}))
		return s
	}
	process := func(s *Sink, lo, hi int64) error {
		rec := vsBatch(mem, seqVals(lo, hi), func(int64) bool { return false })
		defer rec.Release()
		return s.Process(ctx, rec, nil)
	}
	published := func() int { return len(subjectMsgs(t, ctx, js, "OUT", "out")) }

	state := memstore.New()
	s := open(state, 0)
	must(process(s, 0, 1000))
	must(s.PrepareCheckpoint(ctx, 1))
	must(s.CheckpointComplete(ctx, 1))
	must(process(s, 1000, 2000)) // staged while checkpoint 1's rows are published
	must(s.PrepareCheckpoint(ctx, 2))
	must(s.CheckpointComplete(ctx, 2))
	must(s.Close(ctx))
	if n := published(); n != 2000 {
		t.Fatalf("Close returned with %d rows published, want 2000", n)
	}
	// The published epochs were deleted from the Store by the next
	// PrepareCheckpoint and by Close.
	if err := state.Scan(ctx, nil, func(k, _ []byte) error { return fmt.Errorf("key %q left in the Store", k) }); err != nil {
		t.Fatal(err)
	}

	// A commit that fails: the next Process fails; a run restored from
	// checkpoint 3 publishes what it did not.
	s = open(state, 2)
	must(process(s, 2000, 3000))
	must(s.PrepareCheckpoint(ctx, 3))
	snap := copyState(t, ctx, state)
	s.tx.failAfterAcks = 400
	must(s.CheckpointComplete(ctx, 3))
	testutil.CheckFor(t, 30*time.Second, 5*time.Millisecond, func() error {
		if err := process(s, 3000, 3001); !errors.Is(err, errTxCut) {
			return fmt.Errorf("Process after a failed commit: %v", err)
		}
		return nil
	})
	if err := s.Close(ctx); !errors.Is(err, errTxCut) {
		t.Fatalf("Close after a failed commit: %v", err)
	}
	if n := published(); n != 2400 {
		t.Fatalf("%d rows published, want 2400", n)
	}
	s = open(snap, 3)
	if st := s.Stats(); st.Published != 600 || st.Duplicates != 0 {
		t.Fatalf("restored sink: %+v, want the 600 rows missing", st)
	}
	must(s.Close(ctx))
	checkOnce(t, "rows", countValues(t, subjectMsgs(t, ctx, js, "OUT", "out")), seqVals(0, 3000))
}

// TestSourceCheckpointConsumerStorage: with checkpoints the durable
// consumer's state is in the server's memory; a consumer made the other
// way (a job that ran without checkpoints) is replaced in place and the
// new one starts after the old one's ack floor, and back again.
func TestSourceCheckpointConsumerStorage(t *testing.T) {
	r := newSrcRig(t, time.Minute, SourceConfig{BatchSize: 10, Bounded: true})
	for i := int64(1); i <= 60; i++ {
		r.publish(events(i))
	}
	open := func(ckpt bool) *Source {
		nc, err := r.srv.Connect()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		s := NewSource(nc, r.cfg)
		if err := s.Open(r.ctx, testOC{mem: r.mem, store: memstore.New(), ckpt: ckpt}); err != nil {
			t.Fatal(err)
		}
		return s
	}
	check := func(memory bool) {
		t.Helper()
		if info := r.consumer(); info.Config.MemoryStorage != memory {
			t.Fatalf("consumer memory storage %v, want %v", info.Config.MemoryStorage, memory)
		}
	}

	// Without checkpoints: read and acknowledge the first 20 or so.
	s := open(false)
	check(false)
	plain := r.readAtLeast(s, 20)
	if err := s.Close(r.ctx); err != nil {
		t.Fatal(err)
	}
	floor := r.waitAckFloor(uint64(plain[len(plain)-1])).AckFloor.Stream

	// With checkpoints: replaced, starting after the ack floor; complete a
	// checkpoint covering about 20 more.
	s = open(true)
	check(true)
	withCk := r.readAtLeast(s, 20)
	if withCk[0] != int64(floor)+1 {
		t.Fatalf("the replaced consumer starts at %d, want %d (after the ack floor)", withCk[0], floor+1)
	}
	if err := s.PrepareCheckpoint(r.ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := complete(r.ctx, s, 1); err != nil {
		t.Fatal(err)
	}
	floor = r.waitAckFloor(uint64(withCk[len(withCk)-1])).AckFloor.Stream
	if err := s.Close(r.ctx); err != nil {
		t.Fatal(err)
	}

	// Without checkpoints again: replaced, starting after what the
	// checkpoint acknowledged; reads to the end.
	s = open(false)
	check(false)
	rest := r.readToEnd(s)
	if err := s.Close(r.ctx); err != nil {
		t.Fatal(err)
	}
	if len(rest) == 0 || rest[0] != int64(floor)+1 {
		t.Fatalf("the consumer replaced again starts with %v, want %d", rest[:min(len(rest), 1)], floor+1)
	}
	if got := append(append(plain, withCk...), rest...); !slices.Equal(got, seqVals(1, 61)) {
		t.Fatalf("read across the replacements: %v", got)
	}
}

// TestSourceCheckpointServerRestart: a server restart loses a checkpointed
// source's consumer (its state is in memory); the source does not wait
// for it forever: Read fails, and the recovery that follows (Open again,
// from the last checkpoint) creates it and reads on from the position.
func TestSourceCheckpointServerRestart(t *testing.T) {
	for _, bounded := range []bool{false, true} {
		t.Run(fmt.Sprintf("bounded=%v", bounded), func(t *testing.T) { testSourceCheckpointServerRestart(t, bounded) })
	}
}

func testSourceCheckpointServerRestart(t *testing.T, bounded bool) {
	defer func(d time.Duration) { consumerCheckEvery = d }(consumerCheckEvery)
	consumerCheckEvery = 200 * time.Millisecond
	ctx := testutil.Context(t, 2*time.Minute)
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	start := func() *natsembed.Server {
		srv, err := natsembed.Start(ctx, natsembed.Config{Name: "restart", StoreDir: dir, Host: "127.0.0.1", Port: port})
		if err != nil {
			t.Fatal(err)
		}
		return srv
	}
	srv := start()
	defer func() { _ = srv.Shutdown(context.Background()) }()
	mem := checked(t)
	js := natstest.JetStream(t, natstest.Connect(t, srv))
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "IN", Subjects: []string{"in"}}); err != nil {
		t.Fatal(err)
	}
	for i := int64(1); i <= 60; i++ {
		if _, err := js.Publish(ctx, "in", events(i)); err != nil {
			t.Fatal(err)
		}
	}
	cfg := SourceConfig{Subjects: []string{"in"}, Schema: idSchema, DeadLetter: "in.dlq", BatchSize: 10, Bounded: bounded}
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	state := memstore.New()
	read := func(s *Source, rctx context.Context) ([]int64, error) {
		rec, err := s.Read(rctx)
		if err != nil {
			return nil, err
		}
		defer rec.Release()
		return slices.Clone(rec.Column(0).(*array.Int64).Int64Values()), nil
	}
	s := NewSource(nc, cfg)
	if err := s.Open(ctx, testOC{mem: mem, store: state, ckpt: true}); err != nil {
		t.Fatal(err)
	}
	var got []int64
	for len(got) < 20 {
		ids, err := read(s, ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ids...)
	}
	if err := s.PrepareCheckpoint(ctx, 1); err != nil {
		t.Fatal(err)
	}
	snap := copyState(t, ctx, state)
	if err := complete(ctx, s, 1); err != nil {
		t.Fatal(err)
	}

	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	srv = start()
	// Read fails within a bounded time rather than waiting forever.
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		_, err := read(s, rctx)
		if err == nil {
			continue // what was prefetched before the restart
		}
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatal("Read still waits 30 s after the server restart lost the consumer")
		}
		t.Logf("Read after the restart: %v", err)
		break
	}
	_ = s.Close(ctx)

	// The recovery: from checkpoint 1, on from its position.
	s = NewSource(nc, cfg)
	if err := s.Open(ctx, testOC{mem: mem, store: snap, ckpt: true, restored: 1}); err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	var rest []int64
	for len(got)+len(rest) < 60 {
		ids, err := read(s, ctx)
		if err != nil {
			t.Fatal(err)
		}
		rest = append(rest, ids...)
	}
	if all := append(got, rest...); !slices.Equal(all, seqVals(1, 61)) {
		t.Fatalf("read across the restart: %v", all)
	}
}
