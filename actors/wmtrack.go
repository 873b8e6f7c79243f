package actors

import (
	"github.com/meshflow/meshflow/messages"
)

// Input watermarks
//
// An instance's watermark is the minimum of the watermarks of its inputs.
// Three kinds of input are left out of that minimum:
//   - an ended input (end-of-stream arrived): for good;
//   - an idle input (its sender said it has had no data for the job's idle
//     timeout, see [Vertex.IdleTimeout]): until a batch or a watermark
//     arrives on it, which makes it active again with its own watermark.
//
// When every input has ended the watermark is MaxWatermark. When every input
// that has not ended is idle, nothing holds the watermark and nothing
// drives it: it stays where it is (combine says so with ok false).
//
// The instance never moves its watermark backwards: an input that rejoins
// with a watermark below the instance's own lowers the minimum, but the
// instance keeps its watermark until the minimum passes it again
// (setWatermark ignores a lower one).
//
// wmInput is the part of an input channel this concerns; it is a pure
// value, tested by itself (wmtrack_test.go).
type wmInput struct {
	wm   messages.Watermark
	eos  bool
	idle bool
}

// onWatermark records a watermark that arrived on the input: it raises the
// input's watermark (never lowers it) and makes the input active.
func (in *wmInput) onWatermark(wm messages.Watermark) {
	in.idle = false
	if wm > in.wm {
		in.wm = wm
	}
}

// onData records a batch that arrived on the input: the input is active.
func (in *wmInput) onData() { in.idle = false }

// onIdle records the idle marker: the input stops holding the watermark.
func (in *wmInput) onIdle() {
	if !in.eos {
		in.idle = true
	}
}

// onEnd records end-of-stream on the input.
func (in *wmInput) onEnd() { in.eos, in.idle = true, false }

// combineWatermarks returns the minimum watermark of the active inputs
// (neither ended nor idle). ok is false when no input is active but some
// are idle: the watermark must then stay where it is. With no input or
// every input ended, it returns MaxWatermark, true.
// allIdle reports that every input that has not ended is idle (and at least
// one is): the instance is idle itself.
func combineWatermarks(ins []*wmInput) (wm messages.Watermark, ok, allIdle bool) {
	wm = messages.MaxWatermark
	active, idle := 0, 0
	for _, in := range ins {
		switch {
		case in.eos:
		case in.idle:
			idle++
		default:
			active++
			if in.wm < wm {
				wm = in.wm
			}
		}
	}
	if active == 0 && idle > 0 {
		return 0, false, true
	}
	return wm, true, false
}
