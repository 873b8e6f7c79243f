package kernels

import (
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// DirtyAllocator is an allocator that can also hand out memory without
// clearing it first (recycle.Allocator does). The kernels use it for
// their output buffers, whose every byte they write.
type DirtyAllocator interface {
	memory.Allocator
	// AllocateDirty is Allocate with the contents undefined.
	AllocateDirty(size int) []byte
}

// newBuffer allocates a buffer of n bytes from mem. Its contents are
// undefined: callers write every byte they hand out. Like a resizable
// buffer, it has room for a multiple of 64 bytes.
func newBuffer(mem memory.Allocator, n int) *memory.Buffer {
	if d, ok := mem.(DirtyAllocator); ok && n > 0 {
		b := memory.NewBufferWithAllocator(d.AllocateDirty((n+63)&^63), mem)
		b.ResizeNoShrink(n)
		return b
	}
	b := memory.NewResizableBuffer(mem)
	b.Resize(n)
	return b
}

// newBitmap allocates a zeroed bitmap of n bits.
func newBitmap(mem memory.Allocator, n int) *memory.Buffer {
	b := newBuffer(mem, int(bitutil.BytesForBits(int64(n))))
	clear(b.Bytes())
	return b
}

// castSlice reinterprets b as a slice of T. Arrow buffers are at least
// 8-byte aligned (64 from the arrow allocators, 8 in IPC bodies).
func castSlice[T any](b []byte) []T {
	if len(b) == 0 {
		return nil
	}
	var zero T
	return unsafe.Slice((*T)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/int(unsafe.Sizeof(zero)))
}

// fixedValues returns the values of a fixed-width array as []T, with the
// array offset applied (len == data.Len()).
func fixedValues[T any](data arrow.ArrayData) []T {
	buf := data.Buffers()[1]
	if buf == nil || data.Len() == 0 {
		return nil
	}
	return castSlice[T](buf.Bytes())[data.Offset() : data.Offset()+data.Len()]
}

// validityBits returns the validity bitmap of data (to be read at
// data.Offset()), or nil when data has no nulls.
func validityBits(data arrow.ArrayData) []byte {
	if data.NullN() == 0 {
		return nil
	}
	if b := data.Buffers()[0]; b != nil {
		return b.Bytes()
	}
	return nil
}

// makeArray assembles an array of type dt and length n from bufs, handing
// over the caller's references to the buffers (nil entries allowed).
func makeArray(dt arrow.DataType, n int, bufs []*memory.Buffer, nulls int) arrow.Array {
	data := array.NewData(dt, n, bufs, nil, nulls, 0)
	for _, b := range bufs {
		if b != nil {
			b.Release()
		}
	}
	arr := array.MakeFromData(data)
	data.Release()
	return arr
}

// copyValidity returns a copy of the validity bitmap of data at offset 0 and
// its null count, or (nil, 0) when data has no nulls.
func copyValidity(mem memory.Allocator, data arrow.ArrayData) (*memory.Buffer, int) {
	bits := validityBits(data)
	if bits == nil {
		return nil, 0
	}
	n := data.Len()
	out := newBuffer(mem, int(bitutil.BytesForBits(int64(n))))
	bitutil.CopyBitmap(bits, data.Offset(), n, out.Bytes(), 0)
	return out, data.NullN()
}

// andValidity returns the validity bitmap (offset 0) of the rows valid in
// both a and b, which have the same length, and its null count; (nil, 0)
// when neither has nulls.
func andValidity(mem memory.Allocator, a, b arrow.ArrayData) (*memory.Buffer, int) {
	ab, bb := validityBits(a), validityBits(b)
	switch {
	case ab == nil:
		return copyValidity(mem, b)
	case bb == nil:
		return copyValidity(mem, a)
	}
	n := a.Len()
	out := newBuffer(mem, int(bitutil.BytesForBits(int64(n))))
	bitutil.BitmapAnd(ab, bb, int64(a.Offset()), int64(b.Offset()), out.Bytes(), 0, int64(n))
	return out, n - bitutil.CountSetBits(out.Bytes(), 0, n)
}

// allNull returns a validity bitmap of n null rows.
func allNull(mem memory.Allocator, n int) (*memory.Buffer, int) {
	return newBitmap(mem, n), n
}
