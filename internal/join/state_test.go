package join

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/window"
)

// joinOp is one step of a join's input: a batch of one side, or a
// watermark.
type joinOp struct {
	w    Which
	rows []row
	wm   *int64
}

// joinOps draws a random input: both sides' rows shuffled out of order in
// batches, watermarks never past a row still to come, a last watermark at
// the end.
func joinOps(r *rand.Rand, keys int) []joinOp {
	all := arrivals(r, randomRows(r, 600, 0, keys, 3000), randomRows(r, 600, 10000, keys, 3000))
	var ops []joinOp
	wm := int64(math.MinInt64)
	for i := 0; i < len(all); {
		w := all[i].w
		var batch []row
		for n := r.IntN(40); i < len(all) && all[i].w == w && len(batch) <= n; i++ {
			batch = append(batch, all[i].row)
		}
		ops = append(ops, joinOp{w: w, rows: batch})
		if r.IntN(3) == 0 {
			wm = lowWatermark(r, wm, all[i:])
			at := wm
			ops = append(ops, joinOp{wm: &at})
		}
	}
	last := int64(math.MaxInt64)
	return append(ops, joinOp{wm: &last})
}

// restorable is what the crash test needs of a join.
type restorable interface {
	step(t *testing.T, mem memory.Allocator, op joinOp) []string
	Buffered(mem memory.Allocator, w Which) (arrow.RecordBatch, error)
	Watermark() int64
	SetWatermark(wm int64)
	Restore(w Which, rec arrow.RecordBatch) error
	Close()
}

type intervalRun struct{ *Interval }

func (j intervalRun) step(t *testing.T, mem memory.Allocator, op joinOp) []string {
	if op.wm != nil {
		j.Expire(*op.wm)
		return nil
	}
	rec := build(mem, [2]*arrow.Schema{leftSchema, rightSchema}[op.w], op.rows)
	defer rec.Release()
	out, err := j.Add(mem, op.w, rec)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseIf(out)
	return pairsOf(t, out, "left_id", "right_id")
}

type windowRun struct{ *Window }

func (j windowRun) step(t *testing.T, mem memory.Allocator, op joinOp) []string {
	if op.wm == nil {
		rec := build(mem, [2]*arrow.Schema{leftSchema, rightSchema}[op.w], op.rows)
		defer rec.Release()
		if err := j.Add(op.w, rec); err != nil {
			t.Fatal(err)
		}
		return nil
	}
	out, err := j.Fire(mem, *op.wm)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseIf(out)
	ps := pairsOf(t, out, "left_id", "right_id")
	if out != nil {
		st := out.Column(int(out.NumCols()) - 2).(*array.Timestamp)
		for i := range ps {
			ps[i] += fmt.Sprintf("@%d", st.Value(i))
		}
	}
	return ps
}

func releaseIf(rec arrow.RecordBatch) {
	if rec != nil {
		rec.Release()
	}
}

// TestJoinCheckpointRestore: a join checkpointed at random steps and
// crashed (a new join restored from the last checkpoint, the input after
// it fed again, what it emitted after it dropped, as a transactional sink
// does) emits what the same join emits without crashes.
func TestJoinCheckpointRestore(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 7))
	for _, tc := range []struct {
		name string
		keys int
		make func() restorable
	}{
		{"interval", 12, func() restorable {
			j, err := NewInterval(intervalCfg(-20, 40))
			if err != nil {
				t.Fatal(err)
			}
			return intervalRun{j}
		}},
		{"window tumbling", 12, func() restorable {
			j, err := NewWindow(windowCfg(window.Tumbling(100)))
			if err != nil {
				t.Fatal(err)
			}
			return windowRun{j}
		}},
		{"window sliding", 3, func() restorable {
			j, err := NewWindow(windowCfg(window.Sliding(100, 20)))
			if err != nil {
				t.Fatal(err)
			}
			return windowRun{j}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			ops := joinOps(r, tc.keys)

			j := tc.make()
			var want []string
			for _, op := range ops {
				want = append(want, j.step(t, mem, op)...)
			}
			j.Close()
			if len(want) == 0 {
				t.Fatal("no pairs: the test would prove nothing")
			}

			type saved struct {
				at, emitted int
				wm          int64
				sides       [2]arrow.RecordBatch
			}
			var last *saved
			forget := func() {
				if last != nil {
					for _, b := range last.sides {
						releaseIf(b)
					}
				}
			}
			defer forget()
			j = tc.make()
			var got []string
			crashes := 0
			for i := 0; i < len(ops); {
				switch {
				case r.IntN(6) == 0:
					s := &saved{at: i, emitted: len(got), wm: j.Watermark()}
					for w := range s.sides {
						var err error
						if s.sides[w], err = j.Buffered(mem, Which(w)); err != nil {
							t.Fatal(err)
						}
					}
					forget()
					last = s
				case last != nil && crashes < 4 && i >= (crashes+1)*len(ops)/5 && r.IntN(10) == 0:
					// Crashes spread over the input.
					crashes++
					j.Close()
					j = tc.make()
					j.SetWatermark(last.wm)
					for w, b := range last.sides {
						if b != nil {
							if err := j.Restore(Which(w), b); err != nil {
								t.Fatal(err)
							}
						}
					}
					i, got = last.at, got[:last.emitted]
					continue
				}
				got = append(got, j.step(t, mem, ops[i])...)
				i++
			}
			j.Close()
			t.Logf("%d steps, %d pairs, %d crashes", len(ops), len(want), crashes)
			sameSet(t, got, want)
		})
	}
}
