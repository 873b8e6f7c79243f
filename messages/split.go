package messages

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
)

// frameOverhead estimates the bytes of a frame beyond its column buffers:
// the frame header, the IPC schema message (about 120 bytes plus 100 per
// field), the record batch metadata and the end-of-stream marker.
func frameOverhead(s *arrow.Schema) int {
	return 512 + 160*s.NumFields()
}

// lineageBytesPerRow bounds what a row's position adds to a frame header: a
// zigzag varint of at most 10 bytes.
const lineageBytesPerRow = 10

// SplitBatch cuts rec into slices whose frames stay under maxBytes, so that
// no NATS message exceeds the server's max payload. The slices are
// zero-copy views; each is a new reference the caller owns. rec is
// borrowed. A single row larger than maxBytes is an error.
func SplitBatch(rec arrow.RecordBatch, maxBytes int) ([]arrow.RecordBatch, error) {
	parts, oversize, err := SplitBatchOversize(rec, maxBytes)
	if err == nil && len(oversize) > 0 {
		for _, r := range parts {
			r.Release()
		}
		err = fmt.Errorf("messages: row %d takes more than the %d bytes a frame may carry (raise the NATS max payload)", oversize[0], maxBytes)
		return nil, err
	}
	return parts, err
}

// SplitBatchOversize is [SplitBatch] that leaves out the rows too large for
// any frame and returns their indexes instead of failing, so the caller can
// dead-letter them and still send every other row. The parts hold the
// remaining rows in order.
func SplitBatchOversize(rec arrow.RecordBatch, maxBytes int) (parts []arrow.RecordBatch, oversize []int, err error) {
	parts, _, oversize, err = splitBatch(rec, maxBytes)
	return parts, oversize, err
}

// SplitBatchAt is [SplitBatchOversize] that also returns where each part
// starts in rec.
func SplitBatchAt(rec arrow.RecordBatch, maxBytes int) (parts []arrow.RecordBatch, partStart []int, oversize []int, err error) {
	return splitBatch(rec, maxBytes)
}

func splitBatch(rec arrow.RecordBatch, maxBytes int) (out []arrow.RecordBatch, starts []int, oversize []int, err error) {
	overhead := frameOverhead(rec.Schema())
	budget := maxBytes - overhead
	if budget <= 0 {
		return nil, nil, nil, fmt.Errorf("messages: max payload %d is below the %d-byte frame overhead of schema %s", maxBytes, overhead, rec.Schema())
	}
	var split func(lo, hi int64)
	split = func(lo, hi int64) {
		size := encodedSize(rec, lo, hi) + lineageBytesPerRow*int(hi-lo)
		if size <= budget {
			if lo == 0 && hi == rec.NumRows() {
				rec.Retain()
				out = append(out, rec)
			} else {
				out = append(out, rec.NewSlice(lo, hi))
			}
			starts = append(starts, int(lo))
			return
		}
		if hi-lo == 1 {
			oversize = append(oversize, int(lo))
			return
		}
		// Cut into as many even parts as the estimate asks for, then check
		// each: skewed variable-length columns split further.
		parts := int64(size/budget) + 1
		step := max((hi-lo)/parts, 1)
		for a := lo; a < hi; a += step {
			split(a, min(a+step, hi))
		}
	}
	if rec.NumRows() == 0 {
		rec.Retain()
		return []arrow.RecordBatch{rec}, []int{0}, nil, nil
	}
	split(0, rec.NumRows())
	return out, starts, oversize, nil
}

// encodedSize estimates the IPC body size of rows [lo, hi) of rec: each
// buffer padded to 8 bytes, as the IPC writer lays them out.
func encodedSize(rec arrow.RecordBatch, lo, hi int64) int {
	n := 0
	for _, c := range rec.Columns() {
		n += dataSize(c.Data(), int(lo), int(hi))
	}
	return n
}

func pad8(n int) int { return (n + 7) &^ 7 }

func dataSize(d arrow.ArrayData, lo, hi int) int {
	rows := hi - lo
	n := 0
	if d.NullN() > 0 {
		n += pad8((rows + 7) / 8)
	}
	off := d.Offset()
	bufs := d.Buffers()
	switch t := d.DataType().(type) {
	case *arrow.NullType:
		return 0
	case *arrow.BooleanType:
		return n + pad8((rows+7)/8)
	case *arrow.StringType, *arrow.BinaryType:
		o := arrow.Int32Traits.CastFromBytes(bufs[1].Bytes())
		return n + pad8(4*(rows+1)) + pad8(int(o[off+hi]-o[off+lo]))
	case *arrow.LargeStringType, *arrow.LargeBinaryType:
		o := arrow.Int64Traits.CastFromBytes(bufs[1].Bytes())
		return n + pad8(8*(rows+1)) + pad8(int(o[off+hi]-o[off+lo]))
	case *arrow.ListType, *arrow.MapType:
		o := arrow.Int32Traits.CastFromBytes(bufs[1].Bytes())
		return n + pad8(4*(rows+1)) + dataSize(d.Children()[0], int(o[off+lo]), int(o[off+hi]))
	case *arrow.LargeListType:
		o := arrow.Int64Traits.CastFromBytes(bufs[1].Bytes())
		return n + pad8(8*(rows+1)) + dataSize(d.Children()[0], int(o[off+lo]), int(o[off+hi]))
	case *arrow.FixedSizeListType:
		k := int(t.Len())
		return n + dataSize(d.Children()[0], (off+lo)*k, (off+hi)*k)
	case *arrow.StructType:
		for _, c := range d.Children() {
			n += dataSize(c, off+lo, off+hi)
		}
		return n
	case arrow.FixedWidthDataType:
		return n + pad8((rows*t.BitWidth()+7)/8)
	default:
		// Unknown layouts: count whole buffers, an over-estimate.
		for _, b := range bufs {
			if b != nil {
				n += pad8(b.Len())
			}
		}
		for _, c := range d.Children() {
			n += dataSize(c, 0, c.Len())
		}
		return n
	}
}
