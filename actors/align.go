package actors

import (
	"fmt"
	"time"

	"github.com/meshflow/meshflow/messages"
)

// Barrier alignment
//
// An instance with several inputs takes the snapshot of checkpoint N when
// it has processed everything every input sent before barrier N, and
// nothing any input sent after it (Chandy-Lamport over FIFO channels, as in
// Flink's aligned checkpoints). The aligner decides that order. It is a
// pure state machine: the instance offers it every envelope that arrives
// and processes, in order, the steps next returns. It starts no goroutine
// and reads the time only through the clock it is given.
//
// Rules:
//   - An input that is not blocked has its envelopes delivered at once.
//   - Barrier N on input i starts the alignment of N (or joins it) and
//     blocks i: later envelopes of i are held, end-of-stream included.
//   - When every input that has not ended has delivered N, the aligner
//     returns aligned(N), then the held envelopes, in order per input.
//     A held barrier starts the next alignment: what is behind it stays
//     held.
//   - End-of-stream on an input that is not blocked ends the input; this
//     can complete the alignment in progress (the other open inputs all
//     delivered N).
//   - A barrier whose id is below the alignment in progress, or at or
//     below the last completed or aborted id, is dropped (counted).
//   - A barrier N' > N on an input that is not blocked, while aligning N,
//     means upstream abandoned N: N is cancelled, what it held is released
//     in order, and N' starts.
//   - abort(id) cancels the alignment in progress if its id is at or below
//     id, releases what it held, and makes later barriers of id or older be
//     dropped.
//
// Ownership: the aligner never releases an envelope. Every envelope offered
// comes back out exactly once, as a deliver step (barriers included: the
// instance counts them as processed input for credit, and acts on the
// aligned steps only), or from drain when the instance is torn down. An
// envelope held by the aligner is owned by it until then; the caller owns
// what next or drain returns.

// alignKind is the kind of an alignEvent.
type alignKind uint8

const (
	// alignDeliver: process env, which arrived on input in, now.
	alignDeliver alignKind = iota + 1
	// alignAligned: every open input has delivered barrier; snapshot and
	// forward it now.
	alignAligned
)

// alignEvent is one step for the instance.
type alignEvent struct {
	kind alignKind
	in   int               // alignDeliver
	env  messages.Envelope // alignDeliver; handed over
	// alignAligned: the barrier and the time from its first arrival to the
	// completion of the alignment.
	barrier messages.Barrier
	took    time.Duration
}

type alignInput struct {
	ended   bool                // end-of-stream delivered
	eosSeen bool                // end-of-stream offered (maybe still held)
	blocked bool                // delivered the barrier being aligned
	held    []messages.Envelope // FIFO; non-empty only while blocked or being released
}

// aligner aligns barriers over the inputs of one instance. It is not safe
// for concurrent use: the instance's goroutine owns it.
type aligner struct {
	now func() time.Time
	ins []alignInput

	cur     messages.Barrier // alignment in progress when cur.ID != 0
	started time.Time        // first arrival of cur
	last    uint64           // highest completed or aborted id

	out     []alignEvent // steps ready for next; out[head:] pending
	head    int
	dropped uint64
}

// newAligner returns an aligner over n inputs, reading the time from now.
func newAligner(n int, now func() time.Time) *aligner {
	return &aligner{now: now, ins: make([]alignInput, n)}
}

// offer takes env, which arrived on input in. It returns an error, and
// does not take env, when in is not an input, when env follows an
// end-of-stream on in, or when env's kind is unknown.
func (a *aligner) offer(in int, env messages.Envelope) error {
	if in < 0 || in >= len(a.ins) {
		return fmt.Errorf("aligner: envelope on input %d of %d", in, len(a.ins))
	}
	switch env.Kind {
	case messages.KindBatch, messages.KindWatermark, messages.KindBarrier, messages.KindEndOfStream:
	default:
		return fmt.Errorf("aligner: unknown envelope kind %v on input %d", env.Kind, in)
	}
	c := &a.ins[in]
	if c.eosSeen {
		return fmt.Errorf("aligner: %v envelope after end-of-stream on input %d", env.Kind, in)
	}
	if env.Kind == messages.KindEndOfStream {
		c.eosSeen = true
	}
	if c.blocked {
		c.held = append(c.held, env)
		return nil
	}
	a.step(in, env)
	a.release()
	return nil
}

// next returns the next step, in order, and false when there is none.
func (a *aligner) next() (alignEvent, bool) {
	if a.head == len(a.out) {
		return alignEvent{}, false
	}
	ev := a.out[a.head]
	a.out[a.head] = alignEvent{}
	a.head++
	if a.head == len(a.out) {
		a.out, a.head = a.out[:0], 0
	}
	return ev, true
}

// abort cancels the alignment in progress if its id is at or below id,
// releasing what it held, and has later barriers of id or older dropped.
func (a *aligner) abort(id uint64) {
	a.last = max(a.last, id)
	if a.cur.ID != 0 && a.cur.ID <= id {
		a.cancel()
		a.release()
	}
}

// open is the number of inputs that have not ended.
func (a *aligner) open() int {
	n := 0
	for i := range a.ins {
		if !a.ins[i].ended {
			n++
		}
	}
	return n
}

// aligning returns the id of the alignment in progress.
func (a *aligner) aligning() (uint64, bool) { return a.cur.ID, a.cur.ID != 0 }

// droppedBarriers is the number of barriers dropped as stale.
func (a *aligner) droppedBarriers() uint64 { return a.dropped }

// drain hands over every envelope the aligner still owns, pending steps
// first then held envelopes, for the instance to release at teardown. The
// aligner is left with nothing held or pending.
func (a *aligner) drain() []messages.Envelope {
	var envs []messages.Envelope
	for ev, ok := a.next(); ok; ev, ok = a.next() {
		if ev.kind == alignDeliver {
			envs = append(envs, ev.env)
		}
	}
	for i := range a.ins {
		envs = append(envs, a.ins[i].held...)
		clear(a.ins[i].held)
		a.ins[i].held = nil
		a.ins[i].blocked = false
	}
	a.cur = messages.Barrier{}
	return envs
}

// step handles env of input in, which is not blocked.
func (a *aligner) step(in int, env messages.Envelope) {
	a.out = append(a.out, alignEvent{kind: alignDeliver, in: in, env: env})
	switch env.Kind {
	case messages.KindEndOfStream:
		a.ins[in].ended = true
		a.complete()
	case messages.KindBarrier:
		id := env.Barrier.ID
		switch {
		case id <= a.last || (a.cur.ID != 0 && id < a.cur.ID):
			a.dropped++
			return
		case a.cur.ID != 0 && id > a.cur.ID:
			// Upstream abandoned the alignment in progress.
			a.last = max(a.last, a.cur.ID)
			a.cancel()
		}
		if a.cur.ID == 0 {
			a.cur = env.Barrier
			a.started = a.now()
		}
		a.ins[in].blocked = true
		a.complete()
	}
}

// complete ends the alignment in progress if every open input is blocked.
func (a *aligner) complete() {
	if a.cur.ID == 0 {
		return
	}
	for i := range a.ins {
		if c := &a.ins[i]; !c.ended && !c.blocked {
			return
		}
	}
	a.out = append(a.out, alignEvent{kind: alignAligned, barrier: a.cur, took: a.now().Sub(a.started)})
	a.last = max(a.last, a.cur.ID)
	a.cancel()
}

// cancel ends the alignment in progress and unblocks every input; release
// then steps through what they held.
func (a *aligner) cancel() {
	a.cur = messages.Barrier{}
	for i := range a.ins {
		a.ins[i].blocked = false
	}
}

// release steps through the held envelopes of the inputs that are not
// blocked, in order per input, until every input is blocked or has nothing
// held. A held barrier may start (and complete) an alignment on the way.
func (a *aligner) release() {
	for progress := true; progress; {
		progress = false
		for i := range a.ins {
			c := &a.ins[i]
			for !c.blocked && len(c.held) > 0 {
				env := c.held[0]
				c.held[0] = messages.Envelope{}
				c.held = c.held[1:]
				if len(c.held) == 0 {
					c.held = nil
				}
				a.step(i, env)
				progress = true
			}
		}
	}
}
