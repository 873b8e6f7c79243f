// Package window holds the columnar machinery of event-time windows:
// assigning rows to tumbling and sliding windows, and a table of
// per-(key, window) aggregates updated a whole batch at a time and fired
// when the watermark passes a window's end.
//
// Times are int64 milliseconds since the Unix epoch (the representation of
// the engine's timestamp columns and watermarks). A window is [Start,
// End): a row at time t belongs to it when Start <= t < End.
package window

import (
	"errors"
	"fmt"
)

// Spec describes tumbling or sliding windows: windows of Size
// milliseconds starting every Slide milliseconds, aligned on Offset (a
// window starts at Offset + k*Slide for every integer k). Slide == Size
// (or 0) is tumbling; Slide < Size is sliding (each row is in Size/Slide
// windows, rounded up); Slide > Size leaves gaps, whose rows belong to no
// window.
type Spec struct {
	Size, Slide, Offset int64
}

// Tumbling returns the spec of tumbling windows of size ms.
func Tumbling(size int64) Spec { return Spec{Size: size, Slide: size} }

// Sliding returns the spec of sliding windows of size ms every slide ms.
func Sliding(size, slide int64) Spec { return Spec{Size: size, Slide: slide} }

// Validate reports a spec that cannot assign windows.
func (s Spec) Validate() error {
	switch {
	case s.Size <= 0:
		return fmt.Errorf("window: size %d ms: must be positive", s.Size)
	case s.Slide < 0:
		return fmt.Errorf("window: slide %d ms: must not be negative", s.Slide)
	}
	return nil
}

func (s Spec) slide() int64 {
	if s.Slide == 0 {
		return s.Size
	}
	return s.Slide
}

// LastStart is the start of the last window (the one starting latest)
// that can hold time t: the largest Offset + k*Slide <= t.
func (s Spec) LastStart(t int64) int64 {
	sl := s.slide()
	return t - floorMod(t-s.Offset, sl)
}

// floorMod is a mod b with the sign of b (b > 0).
func floorMod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

var errOverflow = errors.New("window: time out of range")

// Assign appends, for every row i of ts (skipping the rows whose valid
// bit is clear when valid is not nil), one (row, window start) pair per
// window holding ts[i], oldest window first, to rows and starts, and
// returns them. Tumbling windows give one pair per row and a tight loop.
func (s Spec) Assign(ts []int64, valid func(i int) bool, rows []int32, starts []int64) ([]int32, []int64, error) {
	if err := s.Validate(); err != nil {
		return rows, starts, err
	}
	sl := s.slide()
	if sl == s.Size && valid == nil {
		// Tumbling, no nulls: one window per row.
		for i, t := range ts {
			rows = append(rows, int32(i))
			starts = append(starts, t-floorMod(t-s.Offset, sl))
		}
		return rows, starts, nil
	}
	for i, t := range ts {
		if valid != nil && !valid(i) {
			continue
		}
		last := t - floorMod(t-s.Offset, sl)
		first := last
		for first-sl > t-s.Size {
			if first-sl > first {
				return rows, starts, errOverflow
			}
			first -= sl
		}
		for w := first; w <= last; w += sl {
			if w+s.Size <= t {
				continue // a gap: slide > size
			}
			rows = append(rows, int32(i))
			starts = append(starts, w)
		}
	}
	return rows, starts, nil
}
