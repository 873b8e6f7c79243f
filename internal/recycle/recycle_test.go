package recycle_test

import (
	"testing"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/recycle"
)

// TestAllocateFreeReuse checks, per size, that a buffer is 64-byte
// aligned and of the size asked, that a freed buffer handed out again is
// cleared, and that Live counts the buffers not yet freed.
func TestAllocateFreeReuse(t *testing.T) {
	for _, size := range []int{1, 63, 64, 65, 1000, 4096, 32 << 10, 1 << 20, 16 << 20, 16<<20 + 1} {
		a := recycle.New()
		b := a.Allocate(size)
		if len(b) != size {
			t.Fatalf("size %d: got %d bytes", size, len(b))
		}
		if uintptr(unsafe.Pointer(unsafe.SliceData(b)))%64 != 0 {
			t.Fatalf("size %d: not 64-byte aligned", size)
		}
		if a.Live() != 1 {
			t.Fatalf("size %d: live %d, want 1", size, a.Live())
		}
		for i := range b {
			b[i] = 0xff
		}
		a.Free(b)
		if a.Live() != 0 {
			t.Fatalf("size %d: live %d after free, want 0", size, a.Live())
		}
		c := a.Allocate(size)
		for i, v := range c {
			if v != 0 {
				t.Fatalf("size %d: byte %d of a recycled buffer is %#x, want 0", size, i, v)
			}
		}
		a.Free(c)
	}
}

func TestReallocate(t *testing.T) {
	for _, tc := range []struct{ from, to int }{{10, 20}, {10, 100}, {100, 10}, {64, 5000}, {5000, 1 << 25}} {
		a := recycle.New()
		b := a.Allocate(tc.from)
		for i := range b {
			b[i] = byte(i + 1)
		}
		nb := a.Reallocate(tc.to, b)
		if len(nb) != tc.to {
			t.Fatalf("%d -> %d: got %d bytes", tc.from, tc.to, len(nb))
		}
		for i := range min(tc.from, tc.to) {
			if nb[i] != byte(i+1) {
				t.Fatalf("%d -> %d: byte %d lost", tc.from, tc.to, i)
			}
		}
		for i := tc.from; i < tc.to; i++ {
			if nb[i] != 0 {
				t.Fatalf("%d -> %d: new byte %d not zero", tc.from, tc.to, i)
			}
		}
		a.Free(nb)
		if a.Live() != 0 {
			t.Fatalf("%d -> %d: live %d", tc.from, tc.to, a.Live())
		}
	}
}

// TestArrowArrays builds and releases arrays with the allocator, as the
// engine does, and checks every buffer is freed.
func TestArrowArrays(t *testing.T) {
	a := recycle.New()
	var mem memory.Allocator = a
	for round := range 3 {
		bld := array.NewInt64Builder(mem)
		for i := range 10_000 {
			if i%7 == 0 {
				bld.AppendNull()
			} else {
				bld.Append(int64(i))
			}
		}
		arr := bld.NewInt64Array()
		bld.Release()
		if arr.NullN() != 1429 || arr.Value(9_999) != 9_999 {
			t.Fatalf("round %d: %d nulls, last %d", round, arr.NullN(), arr.Value(9_999))
		}
		arr.Release()
		if a.Live() != 0 {
			t.Fatalf("round %d: live %d", round, a.Live())
		}
	}
}
