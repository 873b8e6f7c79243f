package expr_test

import (
	"errors"
	"math"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/expr"
	"github.com/meshflow/meshflow/internal/kernels"
)

// TestRandomFuncs compares the string functions and Truncate with plain Go
// (package strings, regexp, integer floor) on random batches, sliced, with
// nulls.
func TestRandomFuncs(t *testing.T) {
	rng := newRand(t)
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	alphabet := []string{"a", "b", "A", "B", "1", "2", "/", "=", "é", "É", "ß", "İ", "\xff"}
	word := func(max int) string {
		var b strings.Builder
		for range rng.IntN(max + 1) {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		return b.String()
	}
	patterns := []string{`a+`, `(\d)(b)?`, `^A(.)`, `=(\w*)$`, `(é|ß)+`, `x`}
	units := []arrow.TimeUnit{arrow.Second, arrow.Millisecond, arrow.Microsecond, arrow.Nanosecond}
	for round := range 60 {
		n, off := rng.IntN(40), rng.IntN(3)
		strs := make([]any, off+n)
		times := make([]any, off+n)
		for i := range strs {
			if rng.IntN(8) > 0 {
				strs[i] = word(8)
			}
			switch rng.IntN(8) {
			case 0:
			case 1:
				times[i] = []int64{math.MinInt64, math.MaxInt64, math.MinInt64 + 5, -1, 0}[rng.IntN(5)]
			default:
				times[i] = rng.Int64N(4e12) - 1e12
			}
		}
		unit := units[rng.IntN(len(units))]
		ts := &arrow.TimestampType{Unit: unit, TimeZone: "UTC"}
		full := newBatch(mem, []arrow.Field{
			{Name: "s", Type: arrow.BinaryTypes.String, Nullable: true},
			{Name: "t", Type: ts, Nullable: true},
		}, [][]any{strs, times})
		rec := full.NewSlice(int64(off), int64(off+n))
		full.Release()
		strs, times = strs[off:], times[off:]

		sub := word(2)
		pat := patterns[rng.IntN(len(patterns))]
		re := regexp.MustCompile(pat)
		group := rng.IntN(re.NumSubexp() + 1)
		steps := []time.Duration{time.Second, time.Minute, time.Hour, 24 * time.Hour, 10 * time.Second, 7 * time.Millisecond, 3 * time.Microsecond}
		step := steps[rng.IntN(len(steps))]
		stepTicks := int64(step / time.Duration(unit.Multiplier()))
		okStep := step%time.Duration(unit.Multiplier()) == 0

		str := func(f func(string) any) []any {
			out := make([]any, len(strs))
			for i, v := range strs {
				if v != nil {
					out[i] = f(v.(string))
				}
			}
			return out
		}
		cases := []struct {
			e    expr.Expr
			want []any
		}{
			{expr.Col("s").Contains(sub), str(func(s string) any { return strings.Contains(s, sub) })},
			{expr.Col("s").HasPrefix(sub), str(func(s string) any { return strings.HasPrefix(s, sub) })},
			{expr.Col("s").HasSuffix(sub), str(func(s string) any { return strings.HasSuffix(s, sub) })},
			{expr.Col("s").Lower(), str(func(s string) any { return strings.ToLower(s) })},
			{expr.Col("s").Upper(), str(func(s string) any { return strings.ToUpper(s) })},
			{expr.Col("s").RegexpExtract(pat, group), str(func(s string) any {
				m := re.FindStringSubmatchIndex(s)
				if m == nil || m[2*group] < 0 {
					return nil
				}
				return s[m[2*group]:m[2*group+1]]
			})},
		}
		for _, c := range cases {
			got, err := eval(t, mem, c.e, rec)
			if err != nil {
				t.Fatalf("round %d: %s: %v", round, c.e, err)
			}
			checkValues(t, c.e.String(), got, c.want)
			got.Release()
		}

		e := expr.Col("t").Truncate(step)
		if !okStep {
			if _, err := expr.Bind(e, rec.Schema()); !errors.Is(err, expr.ErrArgument) {
				t.Fatalf("round %d: %s on %s: %v, want ErrArgument", round, e, ts, err)
			}
			rec.Release()
			continue
		}
		want := make([]any, len(times))
		wraps := false
		for i, v := range times {
			if v == nil {
				continue
			}
			x := v.(int64)
			r := x % stepTicks
			if r < 0 {
				r += stepTicks
			}
			if x-r > x {
				wraps = true
				continue
			}
			want[i] = x - r
		}
		got, err := eval(t, mem, e, rec)
		switch {
		case wraps:
			if !errors.Is(err, kernels.ErrOverflow) {
				t.Fatalf("round %d: %s: %v, want ErrOverflow", round, e, err)
			}
		case err != nil:
			t.Fatalf("round %d: %s: %v", round, e, err)
		default:
			checkValues(t, e.String(), got, want)
			got.Release()
		}
		rec.Release()
	}
}
