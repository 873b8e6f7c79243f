package kernels

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"sync"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// copyBlock is the size of the fixed block copies used for short string and
// binary values.
const copyBlock = 32

// span is a half-open range of selected rows.
type span struct{ start, end int32 }

// minRunForSpans is the average run length of selected rows from which a
// filter copies runs (spans) instead of gathering row by row.
const minRunForSpans = 16

// selection is the set of rows a Filter or Take keeps, built once and reused
// for every column. Exactly one of idx and spans describes the rows when
// 0 < count < input length; spans are used when the selected rows come in
// long runs.
type selection struct {
	count  int
	idx    []int32
	spans  []span
	pooled *[]int32 // backing store of idx to return to idxPool
}

var idxPool = sync.Pool{New: func() any { return new([]int32) }}

func pooledIndices(n int) *[]int32 {
	p := idxPool.Get().(*[]int32)
	if cap(*p) < n {
		*p = make([]int32, n)
	}
	*p = (*p)[:n]
	return p
}

// release returns pooled scratch memory. The selection is unusable after.
func (s *selection) release() {
	if s.pooled != nil {
		idxPool.Put(s.pooled)
		s.pooled, s.idx = nil, nil
	}
}

// indices returns the selected rows as indices, materialising them from
// spans if needed.
func (s *selection) indices() []int32 {
	if s.idx == nil && s.count > 0 {
		s.pooled = pooledIndices(s.count)
		s.idx = *s.pooled
		j := 0
		for _, sp := range s.spans {
			for i := sp.start; i < sp.end; i++ {
				s.idx[j] = i
				j++
			}
		}
	}
	return s.idx
}

// maskBitmap returns the bits of mask that are both valid and true as a
// bitmap starting at bit 0.
func maskBitmap(mask *array.Boolean) []byte {
	data := mask.Data()
	n, off := data.Len(), data.Offset()
	if n == 0 {
		return nil
	}
	vals := data.Buffers()[1].Bytes()
	valid := validityBits(data)
	if valid == nil && off%8 == 0 {
		return vals[off/8 : off/8+int(bitutil.BytesForBits(int64(n)))]
	}
	bm := make([]byte, bitutil.BytesForBits(int64(n)))
	if valid == nil {
		bitutil.CopyBitmap(vals, off, n, bm, 0)
	} else {
		bitutil.BitmapAnd(vals, valid, int64(off), int64(off), bm, 0, int64(n))
	}
	return bm
}

// bitmapWord returns bits [64k, 64k+64) of bm, a bitmap of n bits; bits at
// or past n read as zero.
func bitmapWord(bm []byte, k, n int) uint64 {
	base := k * 64
	if base+64 <= n {
		return binary.LittleEndian.Uint64(bm[k*8:])
	}
	var w uint64
	for b := k * 8; b < len(bm); b++ {
		w |= uint64(bm[b]) << (8 * (b - k*8))
	}
	return w & (1<<(n-base) - 1)
}

// maskSelection builds the selection of the rows where mask is true (null
// counts as false).
func maskSelection(mask *array.Boolean) selection {
	n := mask.Len()
	bm := maskBitmap(mask)
	nw := (n + 63) / 64
	count, runs := 0, 0
	var carry uint64
	for k := range nw {
		w := bitmapWord(bm, k, n)
		count += bits.OnesCount64(w)
		runs += bits.OnesCount64(w &^ (w<<1 | carry))
		carry = w >> 63
	}
	sel := selection{count: count}
	if count == 0 || count == n {
		return sel
	}
	if runs*minRunForSpans <= count {
		sel.spans = maskSpans(bm, n, runs)
		return sel
	}
	sel.pooled = pooledIndices(count)
	idx := *sel.pooled
	j := 0
	for k := range nw {
		w := bitmapWord(bm, k, n)
		base := int32(k * 64)
		if w == math.MaxUint64 {
			out := idx[j : j+64]
			for t := range out {
				out[t] = base + int32(t)
			}
			j += 64
			continue
		}
		for w != 0 {
			idx[j] = base + int32(bits.TrailingZeros64(w))
			j++
			w &= w - 1
		}
	}
	sel.idx = idx
	return sel
}

// maskSpans returns the runs of set bits of bm (n bits, runs of them).
func maskSpans(bm []byte, n, runs int) []span {
	spans := make([]span, 0, runs)
	inRun, start := false, 0
	for k := range (n + 63) / 64 {
		w := bitmapWord(bm, k, n)
		base, width := k*64, min(64, n-k*64)
		for p := 0; p < width; {
			if inRun {
				z := bits.TrailingZeros64(^w >> p) // ones from p
				if p+z >= width {
					break
				}
				spans = append(spans, span{int32(start), int32(base + p + z)})
				inRun = false
				p += z
			} else {
				o := bits.TrailingZeros64(w >> p) // zeros from p
				if p+o >= width {
					break
				}
				start, inRun = base+p+o, true
				p += o
			}
		}
	}
	if inRun {
		spans = append(spans, span{int32(start), int32(n)})
	}
	return spans
}

// Filter returns the rows of rec for which mask is true; a null mask value
// drops the row. mask must have rec's length. When every row is selected
// the result is rec itself, retained; when none is, an empty batch.
func Filter(mem memory.Allocator, rec arrow.RecordBatch, mask *array.Boolean) (arrow.RecordBatch, error) {
	if mask == nil {
		return nil, fmt.Errorf("filter: %w: nil mask", ErrInvalidArgument)
	}
	if int64(mask.Len()) != rec.NumRows() {
		return nil, fmt.Errorf("filter: %w: mask has %d rows, batch %d", ErrLengthMismatch, mask.Len(), rec.NumRows())
	}
	sel := maskSelection(mask)
	defer sel.release()
	if int64(sel.count) == rec.NumRows() {
		rec.Retain()
		return rec, nil
	}
	return gatherRecord(mem, rec, &sel)
}

// FilterArray is Filter for a single array.
func FilterArray(mem memory.Allocator, arr arrow.Array, mask *array.Boolean) (arrow.Array, error) {
	if mask == nil {
		return nil, fmt.Errorf("filter: %w: nil mask", ErrInvalidArgument)
	}
	if mask.Len() != arr.Len() {
		return nil, fmt.Errorf("filter: %w: mask has %d rows, array %d", ErrLengthMismatch, mask.Len(), arr.Len())
	}
	sel := maskSelection(mask)
	defer sel.release()
	if sel.count == arr.Len() {
		arr.Retain()
		return arr, nil
	}
	return gatherArray(mem, arr, &sel)
}

// Take returns the rows of rec at indices, in that order (repeats
// allowed). Every index must be in [0, rec.NumRows()).
func Take(mem memory.Allocator, rec arrow.RecordBatch, indices []int32) (arrow.RecordBatch, error) {
	if err := checkIndices(indices, rec.NumRows()); err != nil {
		return nil, err
	}
	return takeUnchecked(mem, rec, indices)
}

// TakeArray is Take for a single array.
func TakeArray(mem memory.Allocator, arr arrow.Array, indices []int32) (arrow.Array, error) {
	if err := checkIndices(indices, int64(arr.Len())); err != nil {
		return nil, err
	}
	sel := selection{count: len(indices), idx: indices}
	return gatherArray(mem, arr, &sel)
}

func checkIndices(indices []int32, n int64) error {
	for j, i := range indices {
		if int64(uint32(i)) >= n {
			return fmt.Errorf("take: %w: index %d (position %d) with %d rows", ErrIndexOutOfRange, i, j, n)
		}
	}
	return nil
}

// takeUnchecked is Take with indices known to be in range.
func takeUnchecked(mem memory.Allocator, rec arrow.RecordBatch, indices []int32) (arrow.RecordBatch, error) {
	sel := selection{count: len(indices), idx: indices}
	return gatherRecord(mem, rec, &sel)
}

// gatherRecord applies sel to every column of rec.
func gatherRecord(mem memory.Allocator, rec arrow.RecordBatch, sel *selection) (arrow.RecordBatch, error) {
	cols := make([]arrow.Array, rec.NumCols())
	defer func() {
		for _, c := range cols {
			if c != nil {
				c.Release()
			}
		}
	}()
	for i, col := range rec.Columns() {
		c, err := gatherArray(mem, col, sel)
		if err != nil {
			return nil, fmt.Errorf("column %q: %w", rec.Schema().Field(i).Name, err)
		}
		cols[i] = c
	}
	return newRecordLike(rec, cols, int64(sel.count)), nil
}

// newRecordLike returns a batch with rec's schema and batch metadata over
// cols (which it retains).
func newRecordLike(rec arrow.RecordBatch, cols []arrow.Array, n int64) arrow.RecordBatch {
	if m, ok := rec.(arrow.RecordBatchWithMetadata); ok {
		if md := m.Metadata(); md.Len() > 0 {
			return array.NewRecordBatchWithMetadata(rec.Schema(), cols, n, md)
		}
	}
	return array.NewRecordBatch(rec.Schema(), cols, n)
}

// gatherArray applies sel to one array: the hand-written loops for the
// primitive and binary layouts, arrow compute's take for the others. For
// the former the validity of the selected rows is settled first: when
// none of them is null no bitmap is made, and when all of them are no
// values are gathered (an array of nulls is made instead).
func gatherArray(mem memory.Allocator, arr arrow.Array, sel *selection) (arrow.Array, error) {
	data := arr.Data()
	id := arr.DataType().ID()
	switch id {
	case arrow.BOOL, arrow.INT8, arrow.UINT8, arrow.INT16, arrow.UINT16, arrow.FLOAT16,
		arrow.INT32, arrow.UINT32, arrow.FLOAT32, arrow.DATE32, arrow.TIME32, arrow.INTERVAL_MONTHS, arrow.DECIMAL32,
		arrow.INT64, arrow.UINT64, arrow.FLOAT64, arrow.DATE64, arrow.TIME64, arrow.TIMESTAMP, arrow.DURATION,
		arrow.INTERVAL_DAY_TIME, arrow.DECIMAL64, arrow.DECIMAL128, arrow.INTERVAL_MONTH_DAY_NANO, arrow.DECIMAL256,
		arrow.FIXED_SIZE_BINARY, arrow.STRING, arrow.BINARY, arrow.LARGE_STRING, arrow.LARGE_BINARY:
	default:
		return gatherCompute(mem, arr, sel)
	}
	valid, nulls := gatherValidity(mem, data, sel)
	if nulls > 0 && nulls == sel.count {
		valid.Release()
		return array.MakeArrayOfNull(mem, arr.DataType(), sel.count), nil
	}
	switch id {
	case arrow.BOOL:
		return gatherBool(mem, data, sel, valid, nulls), nil
	case arrow.INT8, arrow.UINT8:
		return gatherFixed[uint8](mem, data, sel, valid, nulls), nil
	case arrow.INT16, arrow.UINT16, arrow.FLOAT16:
		return gatherFixed[uint16](mem, data, sel, valid, nulls), nil
	case arrow.INT32, arrow.UINT32, arrow.FLOAT32, arrow.DATE32, arrow.TIME32,
		arrow.INTERVAL_MONTHS, arrow.DECIMAL32:
		return gatherFixed[uint32](mem, data, sel, valid, nulls), nil
	case arrow.INT64, arrow.UINT64, arrow.FLOAT64, arrow.DATE64, arrow.TIME64,
		arrow.TIMESTAMP, arrow.DURATION, arrow.INTERVAL_DAY_TIME, arrow.DECIMAL64:
		return gatherFixed[uint64](mem, data, sel, valid, nulls), nil
	case arrow.DECIMAL128, arrow.INTERVAL_MONTH_DAY_NANO:
		return gatherFixed[[2]uint64](mem, data, sel, valid, nulls), nil
	case arrow.DECIMAL256:
		return gatherFixed[[4]uint64](mem, data, sel, valid, nulls), nil
	case arrow.FIXED_SIZE_BINARY:
		return gatherFixedSizeBinary(mem, data, sel, valid, nulls), nil
	case arrow.STRING, arrow.BINARY:
		a, err := gatherVarBinary[int32](mem, data, sel, valid, nulls)
		if err != nil && valid != nil {
			valid.Release()
		}
		return a, err
	default: // LARGE_STRING, LARGE_BINARY
		a, err := gatherVarBinary[int64](mem, data, sel, valid, nulls)
		if err != nil && valid != nil {
			valid.Release()
		}
		return a, err
	}
}

// gatherCompute applies sel with arrow compute's take (nested, dictionary,
// view, extension and other types).
func gatherCompute(mem memory.Allocator, arr arrow.Array, sel *selection) (arrow.Array, error) {
	idx := sel.indices()
	var buf *memory.Buffer
	if len(idx) > 0 {
		buf = memory.NewBufferBytes(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(idx))), len(idx)*arrow.Int32SizeBytes))
	} else {
		buf = memory.NewBufferBytes(nil)
	}
	data := array.NewData(arrow.PrimitiveTypes.Int32, len(idx), []*memory.Buffer{nil, buf}, nil, 0, 0)
	buf.Release()
	indices := array.MakeFromData(data)
	data.Release()
	defer indices.Release()
	ctx := compute.WithAllocator(context.Background(), mem)
	out, err := compute.TakeArrayOpts(ctx, arr, indices, compute.TakeOptions{BoundsCheck: false})
	if err != nil {
		return nil, fmt.Errorf("%w: take on %s: %w", ErrUnsupportedType, arr.DataType(), err)
	}
	return out, nil
}

// gatherValidity returns the validity bitmap of the selected rows and its
// null count, or (nil, 0) when none of them is null. A selection of spans
// counts the valid rows first and copies no bitmap when all or none are.
func gatherValidity(mem memory.Allocator, data arrow.ArrayData, sel *selection) (*memory.Buffer, int) {
	src := validityBits(data)
	if src == nil || sel.count == 0 {
		return nil, 0
	}
	if sel.idx == nil {
		set := 0
		for _, s := range sel.spans {
			set += bitutil.CountSetBits(src, data.Offset()+int(s.start), int(s.end-s.start))
		}
		switch set {
		case sel.count:
			return nil, 0
		case 0:
			return newBitmap(mem, sel.count), sel.count
		}
	}
	out := newBuffer(mem, int(bitutil.BytesForBits(int64(sel.count))))
	gatherBits(src, data.Offset(), sel, out.Bytes())
	nulls := sel.count - bitutil.CountSetBits(out.Bytes(), 0, sel.count)
	if nulls == 0 {
		out.Release()
		return nil, 0
	}
	return out, nulls
}

// gatherBits writes the bits of src (read from bit offset off) at the
// selected rows to dst, from bit 0.
func gatherBits(src []byte, off int, sel *selection, dst []byte) {
	if sel.idx == nil {
		pos := 0
		for _, s := range sel.spans {
			n := int(s.end - s.start)
			bitutil.CopyBitmap(src, off+int(s.start), n, dst, pos)
			pos += n
		}
		return
	}
	idx := sel.idx
	m := len(idx)
	full := m &^ 7
	for j := 0; j < full; j += 8 {
		ix := (*[8]int32)(idx[j : j+8])
		var b byte
		for k := range 8 {
			i := int(ix[k]) + off
			b |= (src[i>>3] >> (i & 7) & 1) << k
		}
		dst[j>>3] = b
	}
	if full < m {
		var b byte
		for k, i := range idx[full:] {
			i := int(i) + off
			b |= (src[i>>3] >> (i & 7) & 1) << k
		}
		dst[full>>3] = b
	}
}

func gatherBool(mem memory.Allocator, data arrow.ArrayData, sel *selection, valid *memory.Buffer, nulls int) arrow.Array {
	vbuf := newBuffer(mem, int(bitutil.BytesForBits(int64(sel.count))))
	if sel.count > 0 {
		gatherBits(data.Buffers()[1].Bytes(), data.Offset(), sel, vbuf.Bytes())
	}
	return makeArray(data.DataType(), sel.count, []*memory.Buffer{valid, vbuf}, nulls)
}

// gatherFixed gathers a fixed-width layout whose values are T-sized.
func gatherFixed[T any](mem memory.Allocator, data arrow.ArrayData, sel *selection, valid *memory.Buffer, nulls int) arrow.Array {
	in := fixedValues[T](data)
	vbuf := newBuffer(mem, sel.count*int(unsafe.Sizeof(*new(T))))
	out := castSlice[T](vbuf.Bytes())
	if sel.idx != nil {
		idx := sel.idx
		out = out[:len(idx)]
		j := 0
		for ; j+4 <= len(idx); j += 4 {
			ix := (*[4]int32)(idx[j : j+4])
			o := (*[4]T)(out[j : j+4])
			o[0], o[1], o[2], o[3] = in[ix[0]], in[ix[1]], in[ix[2]], in[ix[3]]
		}
		for ; j < len(idx); j++ {
			out[j] = in[idx[j]]
		}
	} else {
		p := 0
		for _, s := range sel.spans {
			p += copy(out[p:], in[s.start:s.end])
		}
	}
	return makeArray(data.DataType(), sel.count, []*memory.Buffer{valid, vbuf}, nulls)
}

func gatherFixedSizeBinary(mem memory.Allocator, data arrow.ArrayData, sel *selection, valid *memory.Buffer, nulls int) arrow.Array {
	w := data.DataType().(*arrow.FixedSizeBinaryType).ByteWidth
	var in []byte
	if b := data.Buffers()[1]; b != nil {
		in = b.Bytes()[data.Offset()*w:]
	}
	vbuf := newBuffer(mem, sel.count*w)
	out := vbuf.Bytes()
	if sel.idx != nil {
		for j, i := range sel.idx {
			copy(out[j*w:(j+1)*w], in[int(i)*w:])
		}
	} else {
		p := 0
		for _, s := range sel.spans {
			p += copy(out[p:], in[int(s.start)*w:int(s.end)*w])
		}
	}
	return makeArray(data.DataType(), sel.count, []*memory.Buffer{valid, vbuf}, nulls)
}

// gatherVarBinary gathers a string or binary layout with O-typed offsets.
func gatherVarBinary[O int32 | int64](mem memory.Allocator, data arrow.ArrayData, sel *selection, valid *memory.Buffer, nulls int) (arrow.Array, error) {
	n, off := data.Len(), data.Offset()
	var offs []O
	if b := data.Buffers()[1]; b != nil && n > 0 {
		offs = castSlice[O](b.Bytes())[off : off+n+1]
	}
	var src []byte
	if b := data.Buffers()[2]; b != nil {
		src = b.Bytes()
	}
	var total int64
	if sel.idx != nil {
		for _, i := range sel.idx {
			total += int64(offs[i+1] - offs[i])
		}
	} else {
		for _, s := range sel.spans {
			total += int64(offs[s.end] - offs[s.start])
		}
	}
	if unsafe.Sizeof(O(0)) == 4 && total > math.MaxInt32 {
		return nil, fmt.Errorf("%w: %d bytes of %s data exceed 32-bit offsets", ErrOverflow, total, data.DataType())
	}
	obuf := newBuffer(mem, (sel.count+1)*int(unsafe.Sizeof(O(0))))
	outOffs := castSlice[O](obuf.Bytes())[:sel.count+1]
	// The data buffer gets copyBlock bytes of slack so that short values
	// can be copied in whole blocks.
	dbuf := newBuffer(mem, int(total)+copyBlock)
	dbuf.ResizeNoShrink(int(total))
	dst := dbuf.Buf()
	var srcAll []byte
	if b := data.Buffers()[2]; b != nil {
		srcAll = b.Buf()
	}
	outOffs[0] = 0
	var pos O
	if sel.idx != nil {
		outOffs := outOffs[1 : len(sel.idx)+1]
		for j, i := range sel.idx {
			s, e := offs[i], offs[i+1]
			if e-s <= copyBlock && int(s)+copyBlock <= len(srcAll) {
				// Over-copy into the slack after the value; the next
				// value overwrites it.
				*(*[copyBlock]byte)(dst[pos : pos+copyBlock]) = *(*[copyBlock]byte)(srcAll[s : s+copyBlock])
			} else {
				copy(dst[pos:], src[s:e])
			}
			pos += e - s
			outOffs[j] = pos
		}
	} else {
		j := 1
		for _, sp := range sel.spans {
			base := offs[sp.start]
			for _, e := range offs[sp.start+1 : sp.end+1] {
				outOffs[j] = pos + e - base
				j++
			}
			end := offs[sp.end]
			copy(dst[pos:], src[base:end])
			pos += end - base
		}
	}
	return makeArray(data.DataType(), sel.count, []*memory.Buffer{valid, obuf, dbuf}, nulls), nil
}
