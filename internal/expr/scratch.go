package expr

import (
	"math/bits"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Intermediate results (the operands of an operator, released before Eval
// returns) are allocated from a recycling allocator of Go memory instead
// of the caller's: their buffers go back to a pool when released and are
// handed out again, cleared, for the next batch, instead of being
// allocated fresh (and zeroed by the runtime) every time. Only Eval's
// result, which is handed over to the caller, comes from the caller's
// allocator. A buffer is recycled only when its last reference is
// released, so a result that shares an intermediate's buffer (none does
// today) stays valid; the pool belongs to the garbage collector, which
// may empty it at any time.

// scratchAllocator hands out Go memory in power-of-two size classes from
// 64 bytes to maxPooled, 64-byte aligned, recycling freed buffers.
type scratchAllocator struct {
	pools [nClasses]sync.Pool // unsafe.Pointer to the first byte of 64<<k bytes
	live  atomic.Int64        // buffers handed out and not yet freed
}

const (
	minShift  = 6  // 64 bytes
	nClasses  = 19 // up to 16 MiB
	maxPooled = 1 << (minShift + nClasses - 1)
)

var scratchMem = new(scratchAllocator)

// scratch returns the allocator for intermediates of an evaluation whose
// result is allocated from mem.
func scratch(memory.Allocator) memory.Allocator { return scratchMem }

func sizeClass(n int) int {
	if n <= 1<<minShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minShift
}

func (s *scratchAllocator) Allocate(size int) []byte {
	s.live.Add(1)
	if size > maxPooled {
		return make([]byte, size)
	}
	k := sizeClass(size)
	if p := s.pools[k].Get(); p != nil {
		b := unsafe.Slice((*byte)(p.(unsafe.Pointer)), 1<<(minShift+k))[:size]
		clear(b)
		return b
	}
	b := make([]byte, 1<<(minShift+k))
	if uintptr(unsafe.Pointer(unsafe.SliceData(b)))%64 != 0 {
		// Not expected from the Go runtime for power-of-two sizes; an
		// aligned buffer of another capacity, never pooled, keeps it safe.
		b = make([]byte, size+64)
		off := int(-uintptr(unsafe.Pointer(unsafe.SliceData(b))) & 63)
		return b[off : off+size : off+size]
	}
	return b[:size]
}

func (s *scratchAllocator) Reallocate(size int, b []byte) []byte {
	if size <= cap(b) {
		if size > len(b) {
			clear(b[len(b):size])
		}
		return b[:size]
	}
	nb := s.Allocate(size)
	copy(nb, b)
	s.Free(b)
	return nb
}

func (s *scratchAllocator) Free(b []byte) {
	c := cap(b)
	if c == 0 {
		return // a buffer that never allocated (arrow frees those too)
	}
	s.live.Add(-1)
	if c < 1<<minShift || c > maxPooled || c&(c-1) != 0 {
		return
	}
	b = b[:c]
	s.pools[sizeClass(c)].Put(unsafe.Pointer(unsafe.SliceData(b)))
}

// Scratch returns the allocator of intermediate results, for arrays that
// the caller releases before it returns (such as a filter's mask, which
// is not emitted): their buffers are recycled for the next batch. It is
// safe for concurrent use. Arrays handed over to someone else must come
// from the caller's own allocator, which accounts for them.
func Scratch() memory.Allocator { return scratchMem }
