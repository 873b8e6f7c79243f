package actors

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/messages"
)

var alignSchema = arrow.NewSchema([]arrow.Field{{Name: "tag", Type: arrow.PrimitiveTypes.Int64}}, nil)

// tagBatch returns a one-row batch holding tag.
func tagBatch(mem memory.Allocator, tag int64) arrow.RecordBatch {
	b := array.NewRecordBuilder(mem, alignSchema)
	defer b.Release()
	b.Field(0).(*array.Int64Builder).Append(tag)
	return b.NewRecordBatch()
}

func batchTag(rec arrow.RecordBatch) int64 { return rec.Column(0).(*array.Int64).Value(0) }

// fakeClock advances only when told.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// parseEnv reads "bT" (batch tagged T), "wX" (watermark X), "BN" (barrier
// N) or "E" (end-of-stream).
func parseEnv(t *testing.T, mem memory.Allocator, s string) messages.Envelope {
	t.Helper()
	if s == "E" {
		return messages.EndOfStream()
	}
	if s == "X" {
		return messages.Envelope{Kind: 99}
	}
	n, err := strconv.ParseInt(s[1:], 10, 64)
	if err != nil {
		t.Fatalf("bad envelope %q", s)
	}
	switch s[0] {
	case 'b':
		return messages.BatchEnvelope(tagBatch(mem, n))
	case 'w':
		return messages.WatermarkEnvelope(messages.Watermark(n))
	case 'B':
		return messages.BarrierEnvelope(messages.Barrier{ID: uint64(n), TimestampUs: n * 100})
	}
	t.Fatalf("bad envelope %q", s)
	return messages.Envelope{}
}

func formatEnv(in int, env messages.Envelope) string {
	switch env.Kind {
	case messages.KindBatch:
		return fmt.Sprintf("%d:b%d", in, batchTag(env.Batch))
	case messages.KindWatermark:
		return fmt.Sprintf("%d:w%d", in, env.Watermark)
	case messages.KindBarrier:
		return fmt.Sprintf("%d:B%d", in, env.Barrier.ID)
	case messages.KindEndOfStream:
		return fmt.Sprintf("%d:E", in)
	}
	return fmt.Sprintf("%d:%v", in, env.Kind)
}

// steps returns the aligner's pending steps as text, releasing batches:
// "i:bT", "i:wX", "i:BN", "i:E" for deliveries and "AN@Dms" for aligned.
func steps(t *testing.T, a *aligner) []string {
	t.Helper()
	var out []string
	for ev, ok := a.next(); ok; ev, ok = a.next() {
		switch ev.kind {
		case alignDeliver:
			out = append(out, formatEnv(ev.in, ev.env))
			ev.env.Release()
		case alignAligned:
			if ev.barrier.TimestampUs != int64(ev.barrier.ID)*100 {
				t.Errorf("aligned barrier %d lost its timestamp: %+v", ev.barrier.ID, ev.barrier)
			}
			out = append(out, fmt.Sprintf("A%d@%dms", ev.barrier.ID, ev.took.Milliseconds()))
		default:
			t.Fatalf("unknown step kind %d", ev.kind)
		}
	}
	return out
}

// TestAligner runs scripts of offers and aborts. Each line is one action
// ("i:ENV" offers ENV on input i, "abort:N" aborts N), "=>", and the steps
// it yields. The clock advances 1 ms before each action.
func TestAligner(t *testing.T) {
	tests := []struct {
		name   string
		n      int
		script []string
		// state after the script
		open     int
		aligning uint64
		dropped  uint64
	}{
		{
			name: "one input passes everything and aligns at once",
			n:    1,
			script: []string{
				"0:b1 => 0:b1",
				"0:w5 => 0:w5",
				"0:B1 => 0:B1 A1@0ms",
				"0:b2 => 0:b2",
				"0:B2 => 0:B2 A2@0ms",
				"0:E => 0:E",
			},
		},
		{
			name: "barrier blocks its input until every input delivered it",
			n:    2,
			script: []string{
				"0:b1 => 0:b1",
				"0:B1 => 0:B1",
				"0:b2 =>",
				"0:w7 =>",
				"1:b3 => 1:b3",
				"1:w4 => 1:w4",
				"0:b4 =>",
				"1:B1 => 1:B1 A1@6ms 0:b2 0:w7 0:b4",
				"0:b5 => 0:b5",
				"1:b6 => 1:b6",
			},
			open: 2,
		},
		{
			name: "held barrier starts the next alignment and what is behind it stays held",
			n:    2,
			script: []string{
				"0:B1 => 0:B1",
				"0:b1 =>",
				"0:B2 =>",
				"0:b2 =>",
				"1:b3 => 1:b3",
				"1:B1 => 1:B1 A1@5ms 0:b1 0:B2",
				"1:b4 => 1:b4",
				"0:b5 =>",
				"1:B2 => 1:B2 A2@3ms 0:b2 0:b5",
			},
			open: 2,
		},
		{
			name: "held barriers on every input complete alignments back to back",
			n:    2,
			script: []string{
				"0:B1 => 0:B1",
				"0:B2 =>",
				"0:b1 =>",
				"1:B1 => 1:B1 A1@3ms 0:B2",
				"1:B2 => 1:B2 A2@1ms 0:b1",
			},
			open: 2,
		},
		{
			name: "three inputs: releases stop at the next barrier of each input",
			n:    3,
			script: []string{
				"0:B1 => 0:B1",
				"0:b1 =>",
				"0:B2 =>",
				"0:b2 =>",
				"1:B1 => 1:B1",
				"1:B2 =>",
				"1:b3 =>",
				"2:b4 => 2:b4",
				"2:B1 => 2:B1 A1@8ms 0:b1 0:B2 1:B2",
				"2:b5 => 2:b5",
				"2:B2 => 2:B2 A2@2ms 0:b2 1:b3",
			},
			open: 3,
		},
		{
			name: "end-of-stream on the unblocked input completes the alignment",
			n:    2,
			script: []string{
				"0:B1 => 0:B1",
				"0:b1 =>",
				"1:b2 => 1:b2",
				"1:E => 1:E A1@3ms 0:b1",
				"0:b3 => 0:b3",
				"0:B2 => 0:B2 A2@0ms",
			},
			open: 1,
		},
		{
			name: "end-of-stream on the blocked input is held and delivered after aligned",
			n:    2,
			script: []string{
				"0:b1 => 0:b1",
				"0:B1 => 0:B1",
				"0:b2 =>",
				"0:E =>",
				"1:b3 => 1:b3",
				"1:B1 => 1:B1 A1@4ms 0:b2 0:E",
				"1:B2 => 1:B2 A2@0ms",
				"1:E => 1:E",
			},
		},
		{
			name: "end-of-stream held on one input, the other ends: aligned, then the held end",
			n:    2,
			script: []string{
				"0:B1 => 0:B1",
				"0:E =>",
				"1:b1 => 1:b1",
				"1:E => 1:E A1@3ms 0:E",
			},
		},
		{
			name: "last input ending with no alignment in progress",
			n:    2,
			script: []string{
				"0:E => 0:E",
				"1:b1 => 1:b1",
				"1:B1 => 1:B1 A1@0ms",
				"1:E => 1:E",
			},
		},
		{
			name: "an ended input is not waited for",
			n:    3,
			script: []string{
				"1:E => 1:E",
				"0:B1 => 0:B1",
				"0:b1 =>",
				"2:B1 => 2:B1 A1@2ms 0:b1",
			},
			open: 2,
		},
		{
			name: "barrier at or below the last completed id is dropped",
			n:    2,
			script: []string{
				"0:B2 => 0:B2",
				"1:B2 => 1:B2 A2@1ms",
				"0:B1 => 0:B1",
				"1:B2 => 1:B2",
				"0:b1 => 0:b1",
				"1:b2 => 1:b2",
			},
			open:    2,
			dropped: 2,
		},
		{
			name: "barrier on the same input twice: the second is held, then dropped",
			n:    2,
			script: []string{
				"0:B1 => 0:B1",
				"0:B1 =>",
				"0:b1 =>",
				"1:B1 => 1:B1 A1@3ms 0:B1 0:b1",
			},
			open:    2,
			dropped: 1,
		},
		{
			name: "barrier below the alignment in progress is dropped and does not block",
			n:    2,
			script: []string{
				"0:B3 => 0:B3",
				"1:B2 => 1:B2",
				"1:b1 => 1:b1",
				"1:B3 => 1:B3 A3@3ms",
			},
			open:    2,
			dropped: 1,
		},
		{
			name: "later barrier on an unblocked input cancels the alignment in progress",
			n:    2,
			script: []string{
				"0:B1 => 0:B1",
				"0:b1 =>",
				"0:B2 =>",
				"0:b2 =>",
				"1:B2 => 1:B2 0:b1 0:B2 A2@0ms 0:b2",
				"1:B1 => 1:B1",
				"0:B1 => 0:B1",
			},
			open:    2,
			dropped: 2,
		},
		{
			name: "later barrier cancels and starts its own alignment",
			n:    3,
			script: []string{
				"0:B1 => 0:B1",
				"0:b1 =>",
				"1:B1 => 1:B1",
				"1:b2 =>",
				"2:B2 => 2:B2 0:b1 1:b2",
				"0:b3 => 0:b3",
				"0:B2 => 0:B2",
				"1:B2 => 1:B2 A2@3ms",
			},
			open:    3,
			dropped: 0,
		},
		{
			name: "abort of the alignment in progress releases what it held",
			n:    2,
			script: []string{
				"0:B1 => 0:B1",
				"0:b1 =>",
				"0:E =>",
				"abort:1 => 0:b1 0:E",
				"1:B1 => 1:B1",
				"1:b2 => 1:b2",
			},
			open:    1,
			dropped: 1,
		},
		{
			name: "abort of an older id leaves the alignment in progress",
			n:    2,
			script: []string{
				"0:B2 => 0:B2",
				"0:b1 =>",
				"abort:1 =>",
				"1:B2 => 1:B2 A2@3ms 0:b1",
			},
			open: 2,
		},
		{
			name: "abort before the barrier arrives: the barrier is dropped",
			n:    2,
			script: []string{
				"abort:3 =>",
				"0:B3 => 0:B3",
				"0:b1 => 0:b1",
				"0:B4 => 0:B4",
				"1:B4 => 1:B4 A4@1ms",
			},
			open:    2,
			dropped: 1,
		},
		{
			name: "abort releases a held barrier that starts the next alignment",
			n:    2,
			script: []string{
				"0:B1 => 0:B1",
				"0:b1 =>",
				"0:B2 =>",
				"0:b2 =>",
				"abort:1 => 0:b1 0:B2",
				"1:B2 => 1:B2 A2@1ms 0:b2",
			},
			open: 2,
		},
		{
			name: "aligning state and open inputs while an alignment waits",
			n:    3,
			script: []string{
				"2:E => 2:E",
				"0:B5 => 0:B5",
			},
			open:     2,
			aligning: 5,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			clock := &fakeClock{t: time.Unix(1000, 0)}
			a := newAligner(tt.n, clock.now)
			defer func() {
				steps(t, a)
				for _, e := range a.drain() {
					e.Release()
				}
			}()
			for i, line := range tt.script {
				action, want, ok := strings.Cut(line, "=>")
				if !ok {
					t.Fatalf("line %d: no =>: %q", i, line)
				}
				action = strings.TrimSpace(action)
				clock.t = clock.t.Add(time.Millisecond)
				if id, ok := strings.CutPrefix(action, "abort:"); ok {
					n, _ := strconv.ParseUint(id, 10, 64)
					a.abort(n)
				} else {
					in, env, _ := strings.Cut(action, ":")
					idx, _ := strconv.Atoi(in)
					if err := a.offer(idx, parseEnv(t, mem, env)); err != nil {
						t.Fatalf("line %d %q: %v", i, line, err)
					}
				}
				if got := strings.Join(steps(t, a), " "); got != strings.TrimSpace(want) {
					t.Fatalf("line %d %q:\n got %q\nwant %q", i, action, got, strings.TrimSpace(want))
				}
			}
			if got := a.open(); got != tt.open {
				t.Errorf("open() = %d, want %d", got, tt.open)
			}
			id, ok := a.aligning()
			if id != tt.aligning || ok != (tt.aligning != 0) {
				t.Errorf("aligning() = %d, %v; want %d", id, ok, tt.aligning)
			}
			if got := a.droppedBarriers(); got != tt.dropped {
				t.Errorf("droppedBarriers() = %d, want %d", got, tt.dropped)
			}
		})
	}
}

func TestAlignerRejects(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	clock := &fakeClock{}
	tests := []struct {
		name  string
		setup []string // offers that succeed
		in    int
		env   string
		want  string
	}{
		{"input out of range", nil, 2, "b1", "input 2 of 2"},
		{"negative input", nil, -1, "b1", "input -1 of 2"},
		{"unknown kind", nil, 0, "X", "unknown envelope kind"},
		{"batch after end-of-stream", []string{"0:E"}, 0, "b1", "after end-of-stream on input 0"},
		{"end-of-stream twice", []string{"0:E"}, 0, "E", "after end-of-stream"},
		{"after a held end-of-stream", []string{"0:B1", "0:E"}, 0, "w1", "after end-of-stream on input 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAligner(2, clock.now)
			for _, s := range tt.setup {
				in, env, _ := strings.Cut(s, ":")
				idx, _ := strconv.Atoi(in)
				if err := a.offer(idx, parseEnv(t, mem, env)); err != nil {
					t.Fatal(err)
				}
			}
			env := parseEnv(t, mem, tt.env)
			err := a.offer(tt.in, env)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("offer = %v, want an error containing %q", err, tt.want)
			}
			// The rejected envelope is still the caller's.
			env.Release()
			steps(t, a)
			for _, e := range a.drain() {
				e.Release()
			}
		})
	}
}

// TestAlignerDrain: drain hands back pending and held envelopes, leaving
// nothing behind.
func TestAlignerDrain(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	a := newAligner(2, (&fakeClock{}).now)
	for _, s := range []string{"1:b1", "0:B1", "0:b2", "0:b3", "0:E"} {
		in, env, _ := strings.Cut(s, ":")
		idx, _ := strconv.Atoi(in)
		if err := a.offer(idx, parseEnv(t, mem, env)); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for _, e := range a.drain() {
		got = append(got, formatEnv(-1, e))
		e.Release()
	}
	if want := []string{"-1:b1", "-1:B1", "-1:b2", "-1:b3", "-1:E"}; !slices.Equal(got, want) {
		t.Fatalf("drain = %q, want %q", got, want)
	}
	if _, ok := a.aligning(); ok {
		t.Fatal("aligning after drain")
	}
	if _, ok := a.next(); ok {
		t.Fatal("steps left after drain")
	}
}

// alignSeed returns the seed of the randomized tests: MESHFLOW_SEED, or a
// random one. It is logged so that a failure can be replayed.
func alignSeed(t *testing.T) uint64 {
	t.Helper()
	seed := rand.Uint64()
	if s := os.Getenv("MESHFLOW_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("MESHFLOW_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with MESHFLOW_SEED=%d)", seed, seed)
	return seed
}

// item is an envelope of a randomized run, identified by input and index.
type item struct {
	kind    messages.Kind
	barrier uint64
}

// alignModel is the reference for runs where every input carries its
// barriers in order and nothing is aborted: input i may deliver its next
// envelope while it has delivered fewer than `want` barriers, and
// alignment `want` completes when every input has delivered it or ended.
type alignModel struct {
	streams   [][]item
	offered   []int // per input
	delivered []int
	barriers  []int // barriers delivered per input
	ended     []bool
	want      int // next barrier to align
	aligned   int
}

func (m *alignModel) settle() {
	for progress := true; progress; {
		progress = false
		for i := range m.streams {
			for m.delivered[i] < m.offered[i] && m.barriers[i] < m.want {
				it := m.streams[i][m.delivered[i]]
				m.delivered[i]++
				progress = true
				switch it.kind {
				case messages.KindBarrier:
					m.barriers[i]++
				case messages.KindEndOfStream:
					m.ended[i] = true
				}
			}
		}
		done := false
		for i := range m.streams {
			if m.barriers[i] >= m.want {
				done = true // someone started it
			}
		}
		for i := range m.streams {
			if !m.ended[i] && m.barriers[i] < m.want {
				done = false
			}
		}
		if done {
			m.aligned = m.want
			m.want++
			progress = true
		}
	}
}

// TestAlignerRandom offers random interleavings of inputs carrying
// batches, watermarks, barriers 1..k_i in order and end-of-stream, and
// checks every step against alignModel and the alignment invariants.
func TestAlignerRandom(t *testing.T) {
	seed := alignSeed(t)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for run := range 3000 {
		if !randomAlignRun(t, r, run, false) {
			return
		}
	}
}

// TestAlignerRandomAborts is TestAlignerRandom with inputs skipping
// barriers (upstream abandoned them) and aborts at random moments: no
// model, but the invariants must hold and everything must come out.
func TestAlignerRandomAborts(t *testing.T) {
	seed := alignSeed(t)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for run := range 3000 {
		if !randomAlignRun(t, r, run, true) {
			return
		}
	}
}

type delivered struct {
	in, idx int
}

func randomAlignRun(t *testing.T, r *rand.Rand, run int, chaos bool) bool {
	t.Helper()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	n := 1 + r.IntN(4)
	k := r.IntN(6)
	streams := make([][]item, n)
	maxK := 0
	for i := range streams {
		var bs []uint64
		if chaos {
			for id := 1; id <= k; id++ {
				if r.IntN(4) != 0 {
					bs = append(bs, uint64(id))
				}
			}
		} else {
			ki := r.IntN(k + 1)
			for id := 1; id <= ki; id++ {
				bs = append(bs, uint64(id))
			}
		}
		if len(bs) > 0 {
			maxK = max(maxK, int(bs[len(bs)-1]))
		}
		var s []item
		for _, id := range append(bs, 0) {
			for range r.IntN(4) {
				if r.IntN(3) == 0 {
					s = append(s, item{kind: messages.KindWatermark})
				} else {
					s = append(s, item{kind: messages.KindBatch})
				}
			}
			if id != 0 {
				s = append(s, item{kind: messages.KindBarrier, barrier: id})
			}
		}
		streams[i] = append(s, item{kind: messages.KindEndOfStream})
	}
	describe := func() string {
		var b strings.Builder
		for i, s := range streams {
			fmt.Fprintf(&b, "\n  input %d:", i)
			for _, it := range s {
				switch it.kind {
				case messages.KindBarrier:
					fmt.Fprintf(&b, " B%d", it.barrier)
				default:
					fmt.Fprintf(&b, " %v", it.kind)
				}
			}
		}
		return b.String()
	}
	fail := func(format string, args ...any) bool {
		t.Errorf("run %d: %s\nstreams:%s", run, fmt.Sprintf(format, args...), describe())
		return false
	}

	a := newAligner(n, (&fakeClock{}).now)
	model := &alignModel{
		streams: streams, offered: make([]int, n), delivered: make([]int, n),
		barriers: make([]int, n), ended: make([]bool, n), want: 1,
	}
	offered := make([]int, n)
	got := make([][]int, n) // indexes delivered, per input
	var log []any           // delivered or aligned id (uint64)
	var aligned []uint64

	pull := func() bool {
		for ev, ok := a.next(); ok; ev, ok = a.next() {
			switch ev.kind {
			case alignDeliver:
				idx := len(got[ev.in])
				if idx >= offered[ev.in] {
					return fail("input %d: delivered %d envelopes, only %d offered", ev.in, idx+1, offered[ev.in])
				}
				it := streams[ev.in][idx]
				ok := ev.env.Kind == it.kind && (it.kind != messages.KindBarrier || ev.env.Barrier.ID == it.barrier)
				if it.kind == messages.KindBatch {
					ok = ok && batchTag(ev.env.Batch) == int64(ev.in<<16|idx)
				}
				if it.kind == messages.KindWatermark {
					ok = ok && ev.env.Watermark == messages.Watermark(ev.in<<16|idx)
				}
				if !ok {
					return fail("input %d: envelope %d delivered out of order: %s", ev.in, idx, formatEnv(ev.in, ev.env))
				}
				ev.env.Release()
				got[ev.in] = append(got[ev.in], idx)
				log = append(log, delivered{ev.in, idx})
			case alignAligned:
				id := ev.barrier.ID
				if len(aligned) > 0 && id <= aligned[len(aligned)-1] {
					return fail("aligned %d after %d", id, aligned[len(aligned)-1])
				}
				// Every input has ended, or delivered barrier id last.
				for i := range streams {
					d := got[i]
					if len(d) == 0 {
						return fail("aligned %d before input %d delivered anything", id, i)
					}
					last := streams[i][d[len(d)-1]]
					if last.kind != messages.KindEndOfStream && (last.kind != messages.KindBarrier || last.barrier != id) {
						return fail("aligned %d: input %d last delivered %v %d", id, i, last.kind, last.barrier)
					}
				}
				aligned = append(aligned, id)
				log = append(log, id)
			}
		}
		return true
	}

	for {
		var live []int
		for i := range streams {
			if offered[i] < len(streams[i]) {
				live = append(live, i)
			}
		}
		if len(live) == 0 {
			break
		}
		if chaos && r.IntN(10) == 0 {
			a.abort(uint64(r.IntN(k + 1)))
		}
		i := live[r.IntN(len(live))]
		it := streams[i][offered[i]]
		var env messages.Envelope
		switch it.kind {
		case messages.KindBatch:
			env = messages.BatchEnvelope(tagBatch(mem, int64(i<<16|offered[i])))
		case messages.KindWatermark:
			env = messages.WatermarkEnvelope(messages.Watermark(i<<16 | offered[i]))
		case messages.KindBarrier:
			env = messages.BarrierEnvelope(messages.Barrier{ID: it.barrier})
		case messages.KindEndOfStream:
			env = messages.EndOfStream()
		}
		if err := a.offer(i, env); err != nil {
			return fail("offer: %v", err)
		}
		offered[i]++
		model.offered[i]++
		// The instance sometimes lets steps pile up before processing them.
		if r.IntN(3) == 0 {
			continue
		}
		if !pull() {
			return false
		}
		if !chaos {
			model.settle()
			for j := range streams {
				if model.delivered[j] != len(got[j]) {
					return fail("after offering input %d #%d: input %d delivered %d, model %d (log %v)", i, offered[i]-1, j, len(got[j]), model.delivered[j], log)
				}
			}
			if model.aligned != len(aligned) {
				return fail("after offering input %d #%d: %d aligned, model %d (log %v)", i, offered[i]-1, len(aligned), model.aligned, log)
			}
		}
	}
	if !pull() {
		return false
	}
	for i := range streams {
		if len(got[i]) != len(streams[i]) {
			return fail("input %d: %d of %d envelopes delivered (log %v)", i, len(got[i]), len(streams[i]), log)
		}
	}
	if !chaos {
		want := make([]uint64, maxK)
		for i := range want {
			want[i] = uint64(i + 1)
		}
		if !slices.Equal(aligned, want) {
			return fail("aligned %v, want %v", aligned, want)
		}
	}
	if _, ok := a.aligning(); ok || a.open() != 0 {
		return fail("at the end: aligning %v, open %d", ok, a.open())
	}
	if left := a.drain(); len(left) != 0 {
		return fail("%d envelopes left", len(left))
	}
	if mem.CurrentAlloc() != 0 {
		return fail("%d bytes of Arrow memory left", mem.CurrentAlloc())
	}
	return true
}
