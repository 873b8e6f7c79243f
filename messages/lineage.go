package messages

import (
	"strconv"
)

// Lineage says where the rows of a batch come from: Origin names an input
// (a source of the job, or a batch derived from one by an operator that did
// not say which rows it derived from which), and every row has a position
// in it. Positions are what sinks build their message ids from, so a row
// read and published again after a restart gets the id it had, and a new
// row never gets an old one.
//
// A Lineage is immutable once built: envelopes that share a batch share
// its Lineage.
type Lineage struct {
	// Origin names the input; unique within a job.
	Origin string
	// Pos[i] is the position of row i. When Pos is nil, row i is at
	// Base+i.
	Pos  []uint64
	Base uint64
}

// At returns the position of row i.
func (l *Lineage) At(i int) uint64 {
	if l.Pos == nil {
		return l.Base + uint64(i)
	}
	return l.Pos[i]
}

// Slice returns the lineage of rows [lo, hi).
func (l *Lineage) Slice(lo, hi int) *Lineage {
	switch {
	case l.Pos == nil && lo == 0:
		return l
	case l.Pos == nil:
		return &Lineage{Origin: l.Origin, Base: l.Base + uint64(lo)}
	case lo == 0 && hi == len(l.Pos):
		return l
	default:
		return &Lineage{Origin: l.Origin, Pos: l.Pos[lo:hi]}
	}
}

// Take returns the lineage of rows rows[0], rows[1], ...
func (l *Lineage) Take(rows []int32) *Lineage {
	pos := make([]uint64, len(rows))
	for i, r := range rows {
		pos[i] = l.At(int(r))
	}
	return &Lineage{Origin: l.Origin, Pos: pos}
}

// Increasing reports whether positions strictly increase with the row
// index, so that no two rows share one.
func (l *Lineage) Increasing() bool {
	if l.Pos == nil {
		return true
	}
	for i := 1; i < len(l.Pos); i++ {
		if l.Pos[i] <= l.Pos[i-1] {
			return false
		}
	}
	return true
}

// Branch returns the lineage of the same rows sent down one branch of a
// fan-out: the same row reaching a sink by two paths is two rows.
func (l *Lineage) Branch(tag string) *Lineage {
	return &Lineage{Origin: l.Origin + "/" + tag, Pos: l.Pos, Base: l.Base}
}

// RowIDs calls f with an id for every row of a batch of n rows with lineage
// l: the origin and the row's position, plus an occurrence count when
// several rows share a position. The id bytes are valid during the call.
// Rows keep their ids across runs as long as their positions do.
func (l *Lineage) RowIDs(prefix string, n int, f func(row int, id []byte) error) error {
	buf := make([]byte, 0, len(prefix)+len(l.Origin)+32)
	buf = append(buf, prefix...)
	buf = append(buf, l.Origin...)
	buf = append(buf, ':')
	head := len(buf)
	var seen map[uint64]int
	if !l.Increasing() {
		seen = make(map[uint64]int, n)
	}
	for i := 0; i < n; i++ {
		p := l.At(i)
		buf = strconv.AppendUint(buf[:head], p, 36)
		if seen != nil {
			k := seen[p]
			seen[p] = k + 1
			if k > 0 {
				buf = append(buf, '+')
				buf = strconv.AppendInt(buf, int64(k), 36)
			}
		}
		if err := f(i, buf); err != nil {
			return err
		}
	}
	return nil
}
