package window

import (
	"errors"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// badUDAF is squares with one fault: a Result of the wrong length, or a
// ReadState that panics.
type badUDAF struct {
	squares
	shortResult, panics bool
}

func (a *badUDAF) Result(mem memory.Allocator, groups []int32) arrow.Array {
	if a.shortResult {
		groups = groups[1:]
	}
	return a.squares.Result(mem, groups)
}

func (a *badUDAF) ReadState(src []byte, g int32) ([]byte, error) {
	if a.panics {
		var m map[int]int
		m[0] = 1
	}
	return a.squares.ReadState(src, g)
}

// TestUserAggregateErrors: a user-defined aggregate that breaks its
// contract gives errors, not panics or wrong rows: a constructor's
// error, a Result of the wrong length, a ReadState that panics.
func TestUserAggregateErrors(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	mk := func(u UDAF, err error) []Agg {
		return []Agg{{Kind: User, Column: -1, Columns: []int{2}, Name: "u", User: func([]arrow.DataType) (UDAF, error) { return u, err }}}
	}
	for _, tc := range []struct {
		name string
		aggs []Agg
		want string
	}{
		{"constructor error", mk(nil, errors.New("no such type")), "no such type"},
		{"no constructor", []Agg{{Kind: User, Column: -1, Name: "u"}}, "without a constructor"},
		{"bad column", []Agg{{Kind: User, Column: -1, Columns: []int{9}, Name: "u", User: newSquares}}, "column 9"},
		{"short result", mk(&badUDAF{shortResult: true}, nil), "Result is not 2 values"},
		{"panicking state", mk(&badUDAF{panics: true}, nil), "reading the state"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab, err := NewSessions(Config{Gap: 10, Schema: testSchema, Keys: []int{0}, MaxParallelism: testMaxP, Time: 1, Aggs: tc.aggs})
			if err == nil {
				k1, k2, ts, v := "a", "b", int64(1), int64(2)
				rec := buildBatch(mem, []testRow{{key: &k1, ts: &ts, v: &v}, {key: &k2, ts: &ts, v: &v}})
				err = tab.Add(rec)
				rec.Release()
				if err == nil {
					var saved [][2][]byte
					_ = tab.Checkpoint(func(k, v []byte) error {
						saved = append(saved, [2][]byte{append([]byte(nil), k...), append([]byte(nil), v...)})
						return nil
					}, func([]byte) error { return nil })
					var out arrow.RecordBatch
					if out, err = tab.Fire(mem, 100); out != nil {
						out.Release()
					}
					if err == nil {
						err = tab.Restore(saved[0][0], saved[0][1])
					}
				}
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one with %q", err, tc.want)
			}
		})
	}
}
