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
// true (and not null), a 64-row word at a time; nil when that is not n
// rows.
func selectPositions(in *messages.Lineage, mask *array.Boolean, n int) []uint64 {
	data := mask.Data()
	off, length := data.Offset(), mask.Len()
	if length == 0 || data.Buffers()[1] == nil {
		if n == 0 {
			return []uint64{}
		}
		return nil
	}
	vals := data.Buffers()[1].Bytes()
	var valid []byte
	if mask.NullN() > 0 && data.Buffers()[0] != nil {
		valid = data.Buffers()[0].Bytes()
	}
	set := func(i int) bool {
		return bitutil.BitIsSet(vals, off+i) && (valid == nil || bitutil.BitIsSet(valid, off+i))
	}
	word := func(i int) uint64 {
		b := (off + i) / 8
		w := binary.LittleEndian.Uint64(vals[b:])
		if valid != nil {
			w &= binary.LittleEndian.Uint64(valid[b:])
		}
		return w
	}
	// The rows before the first whole word, the whole words, the rest.
	head := min((8-off%8)%8, length)
	body := (length - head) / 64 * 64
	count := 0
	for i := range head {
		count += b2i(set(i))
	}
	for i := head; i < head+body; i += 64 {
		count += bits.OnesCount64(word(i))
	}
	for i := head + body; i < length; i++ {
		count += b2i(set(i))
	}
	if count != n {
		return nil
	}
	pos := make([]uint64, n)
	base, src := in.Base, in.Pos
	at := func(i int) uint64 {
		if src == nil {
			return base + uint64(i)
		}
		return src[i]
	}
	j := 0
	for i := range head {
		if set(i) {
			pos[j] = at(i)
			j++
		}
	}
	for i := head; i < head+body; i += 64 {
		w := word(i)
		if src == nil {
			b := base + uint64(i)
			for w != 0 {
				pos[j] = b + uint64(bits.TrailingZeros64(w))
				j++
				w &= w - 1
			}
			continue
		}
		s := src[i : i+64]
		for w != 0 {
			pos[j] = s[bits.TrailingZeros64(w)&63]
			j++
			w &= w - 1
		}
	}
	for i := head + body; i < length; i++ {
		if set(i) {
			pos[j] = at(i)
			j++
		}
	}
	return pos
}

func b2i(v bool) int {
	if v {
		return 1
	}
	return 0
}
