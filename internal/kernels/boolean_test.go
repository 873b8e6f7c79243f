package kernels_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/kernels"
)

// kleeneAnd and kleeneOr are the reference three-valued logic (nil is
// null).
func kleeneAnd(a, b any) any {
	if a == false || b == false {
		return false
	}
	if a == nil || b == nil {
		return nil
	}
	return true
}

func kleeneOr(a, b any) any {
	if a == true || b == true {
		return true
	}
	if a == nil || b == nil {
		return nil
	}
	return false
}

func TestBoolean(t *testing.T) {
	rng := newRand(t)
	boolType := arrow.FixedWidthTypes.Boolean
	for _, nullPct := range []int{0, 30, 100} {
		t.Run(fmt.Sprintf("nulls=%d%%", nullPct), func(t *testing.T) {
			mem := newTestAllocator()
			defer mem.AssertSize(t, 0)
			g := valueGen{nullPct: nullPct}
			for _, n := range append(sizes, 200, 513) {
				for _, off := range [][2]int{{0, 0}, {8, 0}, {3, 5}, {0, 11}} {
					// One side without nulls half of the time, to cover the
					// plain bitmap path and the mixed one.
					rg := g
					if rng.IntN(2) == 0 {
						rg.nullPct = 0
					}
					la, lv := randArray(mem, rng, g, boolType, n, off[0])
					ra, rv := randArray(mem, rng, rg, boolType, n, off[1])
					l, r := la.(*array.Boolean), ra.(*array.Boolean)
					what := fmt.Sprintf("n=%d offsets=%v", n, off)
					for _, c := range []struct {
						name, fn string
						kern     func(mem memory.Allocator, a, b *array.Boolean) (*array.Boolean, error)
						ref      func(a, b any) any
					}{
						{"and", "and_kleene", kernels.And, kleeneAnd},
						{"or", "or_kleene", kernels.Or, kleeneOr},
					} {
						got, err := c.kern(mem, l, r)
						if err != nil {
							t.Fatalf("%s %s: %v", what, c.name, err)
						}
						want := make([]any, n)
						for i := range want {
							want[i] = c.ref(lv[i], rv[i])
						}
						checkValues(t, what+" "+c.name, got, want)
						sameAsCompute(t, mem, what+" "+c.name, got, c.fn,
							compute.NewDatumWithoutOwning(l), compute.NewDatumWithoutOwning(r))
						got.Release()
					}
					got := kernels.Not(mem, l)
					want := make([]any, n)
					for i, v := range lv {
						if v != nil {
							want[i] = !v.(bool)
						}
					}
					checkValues(t, what+" not", got, want)
					sameAsCompute(t, mem, what+" not", got, "invert", compute.NewDatumWithoutOwning(l))
					got.Release()
					l.Release()
					r.Release()
				}
			}
		})
	}
}

func TestBooleanErrors(t *testing.T) {
	mem := newTestAllocator()
	defer mem.AssertSize(t, 0)
	a := build(mem, arrow.FixedWidthTypes.Boolean, []any{true, false}).(*array.Boolean)
	defer a.Release()
	b := build(mem, arrow.FixedWidthTypes.Boolean, []any{true}).(*array.Boolean)
	defer b.Release()
	for name, f := range map[string]func(memory.Allocator, *array.Boolean, *array.Boolean) (*array.Boolean, error){
		"and": kernels.And, "or": kernels.Or,
	} {
		if out, err := f(mem, a, b); !errors.Is(err, kernels.ErrLengthMismatch) {
			if out != nil {
				out.Release()
			}
			t.Errorf("%s: %v, want ErrLengthMismatch", name, err)
		}
	}
}
