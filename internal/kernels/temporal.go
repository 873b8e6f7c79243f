package kernels

import (
	"fmt"
	"math"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// TruncateTime rounds every timestamp of arr down (toward the past) to a
// multiple of step ticks of arr's unit, counted from the Unix epoch: with
// a timestamp[ms] column and step 60000, 12:34:56.789 becomes 12:34:00.
// Timestamps are instants, so a time zone does not move the boundaries
// (days start at 00:00 UTC). The result has arr's type. step must be
// positive (ErrInvalidArgument); a result below the type's range is
// ErrOverflow.
func TruncateTime(mem memory.Allocator, arr arrow.Array, step int64) (arrow.Array, error) {
	if arr.DataType().ID() != arrow.TIMESTAMP {
		return nil, fmt.Errorf("truncate: %w: %s", ErrUnsupportedType, arr.DataType())
	}
	if step <= 0 {
		return nil, fmt.Errorf("truncate: %w: step %d", ErrInvalidArgument, step)
	}
	d := arr.Data()
	n := d.Len()
	vbuf := newBuffer(mem, n*8)
	in, out := fixedValues[int64](d), castSlice[int64](vbuf.Bytes())
	if err := truncateLoop(in, step, out[:n], validityBits(d), d.Offset()); err != nil {
		vbuf.Release()
		return nil, err
	}
	valid, nulls := copyValidity(mem, d)
	return makeArray(arr.DataType(), n, []*memory.Buffer{valid, vbuf}, nulls), nil
}

// truncateLoop computes out = floor(a / step) * step. A result that wraps
// (only within step of math.MinInt64) in a valid row is ErrOverflow.
func truncateLoop(a []int64, step int64, out []int64, valid []byte, off int) error {
	if step == 1 {
		copy(out, a)
		return nil
	}
	if step == math.MinInt64 { // unreachable: step > 0
		return fmt.Errorf("truncate: %w: step %d", ErrInvalidArgument, step)
	}
	modInt64Const(a, step, out)
	var wrapped int64
	for i, x := range a {
		r := out[i]
		r += step & (r >> 63) // floor: a negative remainder moves one step down
		t := x - r
		wrapped |= x &^ t // x < 0 <= t: only by wrapping
		out[i] = t
	}
	if wrapped < 0 {
		for i, x := range a {
			if out[i] > x && isValid(valid, off, i) {
				return fmt.Errorf("truncate %d to a multiple of %d: %w", x, step, ErrOverflow)
			}
		}
	}
	return nil
}
