package actors

import (
	"encoding/binary"
	"math/bits"
	"strconv"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/zeebo/xxh3"

	"github.com/meshflow/meshflow/messages"
)

// Emit implements Emitter for the operator's calls: the rows of rec get a
// lineage of their own, derived from the input batch as a whole.
func (s *instance) Emit(rec arrow.RecordBatch) { s.emitLineage(rec, rowMap{}) }

// emitLineage implements lineageEmitter.
func (s *instance) emitLineage(rec arrow.RecordBatch, how rowMap) {
	if rec == nil {
		return
	}
	if rec.NumRows() == 0 {
		rec.Release()
		return
	}
	s.emitN++
	s.emitted = append(s.emitted, rec)
	s.emittedLin = append(s.emittedLin, s.lineageOf(int(rec.NumRows()), how))
}

func (s *instance) releaseEmitted() {
	for _, r := range s.emitted {
		r.Release()
	}
	s.emitted = s.emitted[:0]
	clear(s.emittedLin)
	s.emittedLin = s.emittedLin[:0]
}

// lineageOf returns the lineage of a batch of n rows emitted for the input
// being processed, as how derives them from the input's rows. An emit that
// does not say how (plain Emit), or says it wrongly, gets an origin of its
// own, derived from the input's origin, first and last positions and the
// emit's index: the same input batch processed again gives the same
// lineage, as long as the operator emits the same batches.
func (s *instance) lineageOf(n int, how rowMap) *messages.Lineage {
	in := s.inLin
	if in == nil {
		// Emitted from a timer, a watermark or Finish.
		return s.unplacedLineage(n)
	}
	switch {
	case how.same && n == s.inRows:
		return in
	case how.mask != nil && how.mask.Len() == s.inRows:
		if pos := selectPositions(in, how.mask, n); len(pos) == n {
			return &messages.Lineage{Origin: in.Origin, Pos: pos}
		}
	case how.rows != nil && len(how.rows) == n:
		ok := true
		for _, r := range how.rows {
			if r < 0 || int(r) >= s.inRows {
				ok = false
				break
			}
		}
		if ok {
			return in.Take(how.rows)
		}
	}
	var h [40]byte
	first, last := uint64(0), uint64(0)
	if s.inRows > 0 {
		first, last = in.At(0), in.At(s.inRows-1)
	}
	binary.LittleEndian.PutUint64(h[0:], first)
	binary.LittleEndian.PutUint64(h[8:], last)
	binary.LittleEndian.PutUint64(h[16:], uint64(s.inRows))
	binary.LittleEndian.PutUint64(h[24:], uint64(s.emitN))
	binary.LittleEndian.PutUint64(h[32:], in.Base)
	d := xxh3.HashString128(in.Origin + "\x00" + string(h[:]))
	return &messages.Lineage{Origin: s.id.Operator + "#" + strconv.FormatUint(d.Hi^d.Lo, 36)}
}

// unplacedLineage returns a lineage unique to this run for n rows that have
// no input position: rows of a source that gives none, and batches emitted
// with no input (timers, watermarks, Finish).
func (s *instance) unplacedLineage(n int) *messages.Lineage {
	l := &messages.Lineage{Origin: s.unplacedOrigin(), Base: s.unplaced}
	s.unplaced += uint64(n)
	return l
}

func (s *instance) unplacedOrigin() string { return s.id.Operator + "~" + s.run }

// selectPositions returns the positions of the rows of in where mask is
// true (and not null), a 64-row word at a time.
func selectPositions(in *messages.Lineage, mask *array.Boolean, n int) []uint64 {
	pos := make([]uint64, 0, n)
	data := mask.Data()
	off, length := data.Offset(), mask.Len()
	if length == 0 || data.Buffers()[1] == nil {
		return pos
	}
	vals := data.Buffers()[1].Bytes()
	var valid []byte
	if mask.NullN() > 0 && data.Buffers()[0] != nil {
		valid = data.Buffers()[0].Bytes()
	}
	base, src := in.Base, in.Pos
	at := func(i int) uint64 {
		if src == nil {
			return base + uint64(i)
		}
		return src[i]
	}
	for i := 0; i < length; {
		if (off+i)%8 == 0 && i+64 <= length {
			b := (off + i) / 8
			w := binary.LittleEndian.Uint64(vals[b:])
			if valid != nil {
				w &= binary.LittleEndian.Uint64(valid[b:])
			}
			for w != 0 {
				pos = append(pos, at(i+bits.TrailingZeros64(w)))
				w &= w - 1
			}
			i += 64
			continue
		}
		if bitutil.BitIsSet(vals, off+i) && (valid == nil || bitutil.BitIsSet(valid, off+i)) {
			pos = append(pos, at(i))
		}
		i++
	}
	return pos
}
