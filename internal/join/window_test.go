package join

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/window"
)

func windowCfg(spec window.Spec) WindowConfig {
	return WindowConfig{
		Spec:  spec,
		Left:  Side{Schema: leftSchema, Keys: []int{0}, Time: 1},
		Right: Side{Schema: rightSchema, Keys: []int{0}, Time: 1},
	}
}

// windowPairs reads "left-right@start" from a Fire result, checking the
// window end and that the window fired at the first watermark at or past
// its end (prev < end <= wm).
func windowPairs(t *testing.T, out arrow.RecordBatch, prev, wm int64, size int64) []string {
	t.Helper()
	if out == nil {
		return nil
	}
	ps := pairsOf(t, out, "left_id", "right_id")
	n := out.NumCols()
	st, en := out.Column(int(n)-2).(*array.Timestamp), out.Column(int(n)-1).(*array.Timestamp)
	for i := range ps {
		s, e := int64(st.Value(i)), int64(en.Value(i))
		if e != s+size || e > wm || e <= prev {
			t.Fatalf("window [%d, %d) fired at watermark %d (previous %d)", s, e, wm, prev)
		}
		ps[i] += "@" + strconv.FormatInt(s, 10)
	}
	return ps
}

func TestWindowCases(t *testing.T) {
	k := sp("a")
	for _, tc := range []struct {
		name        string
		spec        window.Spec
		left, right []row
		wm          int64
		want        []string
		left1       int // (row, window) references left after Fire
	}{
		{"same window", window.Tumbling(10), []row{{k, ip(0), 1}}, []row{{k, ip(9), 2}}, 10, []string{"1-2@0"}, 0},
		{"window edge", window.Tumbling(10), []row{{k, ip(9), 1}}, []row{{k, ip(10), 2}}, 100, nil, 0},
		{"not yet", window.Tumbling(10), []row{{k, ip(0), 1}}, []row{{k, ip(9), 2}}, 9, nil, 1},
		{"partly fired", window.Tumbling(10), []row{{k, ip(0), 1}, {k, ip(15), 3}}, []row{{k, ip(1), 2}, {k, ip(16), 4}}, 10, []string{"1-2@0"}, 1},
		{"sliding", window.Sliding(10, 5), []row{{k, ip(7), 1}}, []row{{k, ip(9), 2}, {k, ip(12), 3}}, 100,
			[]string{"1-2@0", "1-2@5", "1-3@5"}, 0},
		{"keys", window.Tumbling(10), []row{{k, ip(0), 1}, {sp("b"), ip(0), 3}}, []row{{sp("b"), ip(1), 2}}, 10, []string{"3-2@0"}, 0},
		{"nulls never join", window.Tumbling(10), []row{{nil, ip(0), 1}, {k, nil, 3}}, []row{{nil, ip(1), 2}, {k, nil, 4}}, 10, nil, 0},
		{"empty", window.Tumbling(10), nil, nil, 10, nil, 0},
		{"negative times", window.Tumbling(10), []row{{k, ip(-1), 1}}, []row{{k, ip(-10), 2}, {k, ip(0), 3}}, 0, []string{"1-2@-10"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			j, err := NewWindow(windowCfg(tc.spec))
			if err != nil {
				t.Fatal(err)
			}
			defer j.Close()
			l, r := build(mem, leftSchema, tc.left), build(mem, rightSchema, tc.right)
			if err := j.Add(Left, l); err != nil {
				t.Fatal(err)
			}
			if err := j.Add(Right, r); err != nil {
				t.Fatal(err)
			}
			l.Release()
			r.Release()
			out, err := j.Fire(mem, tc.wm)
			if err != nil {
				t.Fatal(err)
			}
			got := windowPairs(t, out, math.MinInt64, tc.wm, tc.spec.Size)
			if out != nil {
				out.Release()
			}
			sameSet(t, got, tc.want)
			if j.Len(Left) != tc.left1 {
				t.Fatalf("%d left references held, want %d", j.Len(Left), tc.left1)
			}
		})
	}
}

// TestWindowLate: rows of windows already fired are dropped, not joined
// later.
func TestWindowLate(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	j, err := NewWindow(windowCfg(window.Tumbling(10)))
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if out, err := j.Fire(mem, 20); out != nil || err != nil {
		t.Fatal(out, err)
	}
	k := sp("a")
	l, r := build(mem, leftSchema, []row{{k, ip(5), 1}, {k, ip(25), 3}}), build(mem, rightSchema, []row{{k, ip(6), 2}, {k, ip(26), 4}})
	defer l.Release()
	defer r.Release()
	if err := j.Add(Left, l); err != nil {
		t.Fatal(err)
	}
	if err := j.Add(Right, r); err != nil {
		t.Fatal(err)
	}
	if j.Len(Left) != 1 || j.Len(Right) != 1 {
		t.Fatalf("%d, %d held, want 1, 1", j.Len(Left), j.Len(Right))
	}
	out, err := j.Fire(mem, 30)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Release()
	sameSet(t, windowPairs(t, out, 20, 30, 10), []string{"3-4@20"})
}

// TestWindowRandom: shuffled, out-of-order rows of both sides in random
// batches, fired at random watermarks (never past a row still to come),
// for tumbling, sliding, gapped and offset windows: the pairs are exactly
// those of a nested-loop reference, each window fires at the first
// watermark at or past its end, and nothing is held at the end.
func TestWindowRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 3))
	for _, spec := range []window.Spec{window.Tumbling(100), window.Sliding(100, 30), window.Sliding(40, 100), {Size: 50, Slide: 50, Offset: 7}} {
		t.Run(fmt.Sprintf("%+v", spec), func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			j, err := NewWindow(windowCfg(spec))
			if err != nil {
				t.Fatal(err)
			}
			defer j.Close()
			left := randomRows(r, 600, 0, 15, 3000)
			right := randomRows(r, 600, 10000, 15, 3000)
			var got []string
			prev := int64(math.MinInt64)
			feed(t, r, mem, arrivals(r, left, right),
				func(w Which, rec arrow.RecordBatch) arrow.RecordBatch {
					if err := j.Add(w, rec); err != nil {
						t.Fatal(err)
					}
					return nil
				},
				func(wm int64) arrow.RecordBatch {
					out, err := j.Fire(mem, wm)
					if err != nil {
						t.Fatal(err)
					}
					got = append(got, windowPairs(t, out, prev, wm, spec.Size)...)
					prev = max(prev, wm)
					return out
				},
				func(out arrow.RecordBatch) {
					if out != nil {
						out.Release()
					}
				})
			windows := func(x row) []int64 {
				if x.ts == nil || x.key == nil {
					return nil
				}
				_, s, err := spec.Assign([]int64{*x.ts}, nil, nil, nil)
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
			var want []string
			for _, l := range left {
				for _, s := range windows(l) {
					for _, rr := range right {
						for _, s2 := range windows(rr) {
							if s == s2 && *l.key == *rr.key {
								want = append(want, fmt.Sprintf("%d-%d@%d", l.id, rr.id, s))
							}
						}
					}
				}
			}
			if len(want) == 0 {
				t.Fatal("the reference has no pairs: the test would prove nothing")
			}
			sameSet(t, got, want)
			if j.Len(Left)+j.Len(Right) != 0 {
				t.Fatalf("%d, %d references held after the last watermark", j.Len(Left), j.Len(Right))
			}
		})
	}
}

// TestWindowPartlyLate: a row of a sliding window some of whose windows
// have fired joins in the others only.
func TestWindowPartlyLate(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	j, err := NewWindow(windowCfg(window.Sliding(10, 5)))
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if out, err := j.Fire(mem, 15); out != nil || err != nil { // [0, 10) and [5, 15) fired
		t.Fatal(out, err)
	}
	k := sp("a")
	l, r := build(mem, leftSchema, []row{{k, ip(12), 1}}), build(mem, rightSchema, []row{{k, ip(11), 2}})
	defer l.Release()
	defer r.Release()
	if err := j.Add(Left, l); err != nil {
		t.Fatal(err)
	}
	if err := j.Add(Right, r); err != nil {
		t.Fatal(err)
	}
	out, err := j.Fire(mem, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Release()
	sameSet(t, windowPairs(t, out, 15, 100, 10), []string{"1-2@10"})
}
