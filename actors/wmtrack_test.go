package actors

import (
	"math/rand/v2"
	"testing"

	"github.com/meshflow/meshflow/messages"
)

// wmStep is one event on input in of a wmRun: a watermark, a batch, the
// idle marker or end-of-stream.
type wmStep struct {
	in   int
	kind string // "wm", "data", "idle", "eos"
	wm   messages.Watermark
}

// wmRun applies steps to n fresh inputs the way an instance does, and
// returns the instance watermark after each step (never moving backwards,
// as setWatermark) and whether the instance was idle then.
func wmRun(n int, steps []wmStep) (out []messages.Watermark, idle []bool) {
	ins := make([]*wmInput, n)
	for i := range ins {
		ins[i] = &wmInput{wm: messages.MinWatermark}
	}
	cur := messages.MinWatermark
	for _, st := range steps {
		in := ins[st.in]
		switch st.kind {
		case "wm":
			in.onWatermark(st.wm)
		case "data":
			in.onData()
		case "idle":
			in.onIdle()
		case "eos":
			in.onEnd()
		}
		wm, ok, allIdle := combineWatermarks(ins)
		if ok && wm > cur {
			cur = wm
		}
		out = append(out, cur)
		idle = append(idle, allIdle)
	}
	return out, idle
}

func TestCombineWatermarks(t *testing.T) {
	const min, max = messages.MinWatermark, messages.MaxWatermark
	w := func(in int, wm messages.Watermark) wmStep { return wmStep{in: in, kind: "wm", wm: wm} }
	idle := func(in int) wmStep { return wmStep{in: in, kind: "idle"} }
	data := func(in int) wmStep { return wmStep{in: in, kind: "data"} }
	eos := func(in int) wmStep { return wmStep{in: in, kind: "eos"} }
	cases := []struct {
		name  string
		n     int
		steps []wmStep
		want  []messages.Watermark
		idle  []bool
	}{
		{"minimum over inputs", 2, []wmStep{w(0, 10), w(1, 5), w(1, 20)}, []messages.Watermark{min, 5, 10}, []bool{false, false, false}},
		{"watermark never lowers an input", 2, []wmStep{w(0, 10), w(1, 10), w(0, 3)}, []messages.Watermark{min, 10, 10}, []bool{false, false, false}},
		{"idle input leaves the minimum", 2, []wmStep{w(0, 10), idle(1)}, []messages.Watermark{min, 10}, []bool{false, false}},
		{"idle then ahead", 2, []wmStep{idle(1), w(0, 10), w(0, 30)}, []messages.Watermark{min, 10, 30}, []bool{false, false, false}},
		{"rejoin by watermark below does not move back", 2, []wmStep{idle(1), w(0, 30), w(1, 5), w(1, 40), w(0, 50)}, []messages.Watermark{min, 30, 30, 30, 40}, []bool{false, false, false, false, false}},
		{"rejoin by data holds at its old watermark", 2, []wmStep{w(1, 5), idle(1), w(0, 30), data(1), w(0, 60), w(1, 50)}, []messages.Watermark{min, min, 30, 30, 30, 50}, []bool{false, false, false, false, false, false}},
		{"every input idle: no advance, instance idle", 2, []wmStep{w(0, 10), w(1, 20), idle(0), idle(1)}, []messages.Watermark{min, 10, 20, 20}, []bool{false, false, false, true}},
		{"idle and ended: instance idle, no advance", 2, []wmStep{w(0, 10), w(1, 10), eos(0), idle(1)}, []messages.Watermark{min, 10, 10, 10}, []bool{false, false, false, true}},
		{"every input ended: max", 2, []wmStep{w(0, 10), eos(0), eos(1)}, []messages.Watermark{min, min, max}, []bool{false, false, false}},
		{"idle after end is ignored", 2, []wmStep{eos(0), idle(0), w(1, 7)}, []messages.Watermark{min, min, 7}, []bool{false, false, false}},
		{"idle then end: max", 1, []wmStep{idle(0), eos(0)}, []messages.Watermark{min, max}, []bool{true, false}},
		{"single input idle then back", 1, []wmStep{w(0, 4), idle(0), w(0, 9)}, []messages.Watermark{4, 4, 9}, []bool{false, true, false}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, gotIdle := wmRun(tc.n, tc.steps)
			for i := range tc.want {
				if got[i] != tc.want[i] || gotIdle[i] != tc.idle[i] {
					t.Fatalf("after step %d (%+v): watermark %d idle %v, want %d idle %v", i, tc.steps[i], got[i], gotIdle[i], tc.want[i], tc.idle[i])
				}
			}
		})
	}
}

// TestCombineWatermarksRandom checks random runs against a model that
// keeps, per input, the list of events and derives each input's state
// from it: an input has ended if any event was end-of-stream; it is idle
// if its last event is the idle marker and it has not ended; its
// watermark is the largest it received.
func TestCombineWatermarksRandom(t *testing.T) {
	seed := alignSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0))
	for run := 0; run < 2000; run++ {
		n := 1 + rng.IntN(4)
		var steps []wmStep
		for k := rng.IntN(30); k > 0; k-- {
			st := wmStep{in: rng.IntN(n)}
			switch rng.IntN(10) {
			case 0:
				st.kind = "eos"
			case 1, 2:
				st.kind = "idle"
			case 3, 4:
				st.kind = "data"
			default:
				st.kind, st.wm = "wm", messages.Watermark(rng.IntN(100))
			}
			steps = append(steps, st)
		}
		got, gotIdle := wmRun(n, steps)
		hist := make([][]wmStep, n)
		cur := messages.MinWatermark
		for i, st := range steps {
			hist[st.in] = append(hist[st.in], st)
			lo, active, idle := messages.MaxWatermark, 0, 0
			for _, h := range hist {
				ended, wm := false, messages.MinWatermark
				for _, e := range h {
					ended = ended || e.kind == "eos"
					if e.kind == "wm" && e.wm > wm {
						wm = e.wm
					}
				}
				isIdle := !ended && len(h) > 0 && h[len(h)-1].kind == "idle"
				switch {
				case ended:
				case isIdle:
					idle++
				default:
					active++
					lo = min(lo, wm)
				}
			}
			wantIdle := active == 0 && idle > 0
			if !wantIdle && lo > cur {
				cur = lo
			}
			if got[i] != cur || gotIdle[i] != wantIdle {
				t.Fatalf("seed %d run %d step %d (%+v of %+v): watermark %d idle %v, want %d idle %v", seed, run, i, st, steps[:i+1], got[i], gotIdle[i], cur, wantIdle)
			}
			if i > 0 && got[i] < got[i-1] {
				t.Fatalf("seed %d run %d step %d: watermark went back from %d to %d", seed, run, i, got[i-1], got[i])
			}
		}
	}
}
