package kernels

import (
	"encoding/binary"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// And returns a AND b with Kleene logic: false if either side is false,
// else null if either side is null, else true.
func And(mem memory.Allocator, a, b *array.Boolean) (*array.Boolean, error) {
	return kleene(mem, "and", a, b, bitutil.BitmapAnd,
		func(av, aok, bv, bok uint64) (uint64, uint64) {
			return av & bv, aok&bok | aok&^av | bok&^bv
		})
}

// Or returns a OR b with Kleene logic: true if either side is true, else
// null if either side is null, else false.
func Or(mem memory.Allocator, a, b *array.Boolean) (*array.Boolean, error) {
	return kleene(mem, "or", a, b, bitutil.BitmapOr,
		func(av, aok, bv, bok uint64) (uint64, uint64) {
			return av | bv, aok&bok | aok&av | bok&bv
		})
}

// Not returns NOT a; null stays null.
func Not(mem memory.Allocator, a *array.Boolean) *array.Boolean {
	d := a.Data()
	n := d.Len()
	vals := newBuffer(mem, int(bitutil.BytesForBits(int64(n))))
	if n > 0 {
		bitutil.InvertBitmap(d.Buffers()[1].Bytes(), d.Offset(), n, vals.Bytes(), 0)
	}
	valid, nulls := copyValidity(mem, d)
	return makeArray(arrow.FixedWidthTypes.Boolean, n, []*memory.Buffer{valid, vals}, nulls).(*array.Boolean)
}

// kleene applies a binary boolean operator: plain is the bitmap operation
// used when neither side has nulls, words computes (value, validity) for 64
// rows from the values and validities of both sides.
func kleene(mem memory.Allocator, name string, a, b *array.Boolean,
	plain func(l, r []byte, lOff, rOff int64, out []byte, outOff, n int64),
	words func(av, aok, bv, bok uint64) (uint64, uint64),
) (*array.Boolean, error) {
	if a.Len() != b.Len() {
		return nil, fmt.Errorf("%s: %w: %d and %d rows", name, ErrLengthMismatch, a.Len(), b.Len())
	}
	ad, bd := a.Data(), b.Data()
	n := ad.Len()
	nbytes := int(bitutil.BytesForBits(int64(n)))
	vals := newBuffer(mem, nbytes)
	if n == 0 {
		return makeArray(arrow.FixedWidthTypes.Boolean, 0, []*memory.Buffer{nil, vals}, 0).(*array.Boolean), nil
	}
	aValid, bValid := validityBits(ad), validityBits(bd)
	if aValid == nil && bValid == nil {
		plain(ad.Buffers()[1].Bytes(), bd.Buffers()[1].Bytes(), int64(ad.Offset()), int64(bd.Offset()), vals.Bytes(), 0, int64(n))
		return makeArray(arrow.FixedWidthTypes.Boolean, n, []*memory.Buffer{nil, vals}, 0).(*array.Boolean), nil
	}
	av := alignedBits(ad.Buffers()[1].Bytes(), ad.Offset(), n)
	bv := alignedBits(bd.Buffers()[1].Bytes(), bd.Offset(), n)
	aok, bok := alignedBits(aValid, ad.Offset(), n), alignedBits(bValid, bd.Offset(), n)
	valid := newBuffer(mem, nbytes)
	ov, ook := vals.Bytes(), valid.Bytes()
	load := func(bm []byte, i int) uint64 {
		if bm == nil {
			return ^uint64(0)
		}
		return binary.LittleEndian.Uint64(bm[i:])
	}
	loadByte := func(bm []byte, i int) uint64 {
		if bm == nil {
			return 0xff
		}
		return uint64(bm[i])
	}
	full := nbytes &^ 7
	for i := 0; i < full; i += 8 {
		v, ok := words(load(av, i), load(aok, i), load(bv, i), load(bok, i))
		binary.LittleEndian.PutUint64(ov[i:], v)
		binary.LittleEndian.PutUint64(ook[i:], ok)
	}
	for i := full; i < nbytes; i++ {
		v, ok := words(loadByte(av, i), loadByte(aok, i), loadByte(bv, i), loadByte(bok, i))
		ov[i], ook[i] = byte(v), byte(ok)
	}
	nulls := n - bitutil.CountSetBits(ook, 0, n)
	if nulls == 0 {
		valid.Release()
		valid = nil
	}
	return makeArray(arrow.FixedWidthTypes.Boolean, n, []*memory.Buffer{valid, vals}, nulls).(*array.Boolean), nil
}

// alignedBits returns n bits of bm starting at bit off as a bitmap starting
// at bit 0, copying only when off is not a multiple of 8. nil stays nil.
func alignedBits(bm []byte, off, n int) []byte {
	if bm == nil {
		return nil
	}
	nbytes := int(bitutil.BytesForBits(int64(n)))
	if off%8 == 0 {
		return bm[off/8 : off/8+nbytes]
	}
	out := make([]byte, nbytes)
	bitutil.CopyBitmap(bm, off, n, out, 0)
	return out
}
