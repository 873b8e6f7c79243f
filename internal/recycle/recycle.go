// Package recycle is an Arrow allocator of Go memory that recycles the
// buffers released to it: a freed buffer goes back to a pool of its size
// class and is handed out again, cleared, instead of new memory being
// allocated (and zeroed by the runtime, and faulted in by the kernel for
// large buffers) for every batch.
//
// A buffer is recycled only when arrow frees it, that is when its last
// reference is released, so memory still referenced is never handed out
// again. The pools belong to the garbage collector, which may empty them
// at any time; a buffer that is never released is collected like any Go
// memory.
package recycle

import (
	"math/bits"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Allocator hands out Go memory in power-of-two size classes from 64
// bytes to 16 MiB, 64-byte aligned and zeroed, recycling freed buffers
// (larger ones are plain Go memory). It is safe for concurrent use.
type Allocator struct {
	pools [nClasses]sync.Pool // unsafe.Pointer to the first byte of 64<<k bytes
	live  atomic.Int64        // buffers handed out and not yet freed
}

var _ memory.Allocator = (*Allocator)(nil)

const (
	minShift  = 6  // 64 bytes
	nClasses  = 19 // up to 16 MiB
	maxPooled = 1 << (minShift + nClasses - 1)
)

// New returns an allocator with empty pools.
func New() *Allocator { return new(Allocator) }

// Live is the number of buffers handed out and not yet freed.
func (a *Allocator) Live() int64 { return a.live.Load() }

func sizeClass(n int) int {
	if n <= 1<<minShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minShift
}

// Allocate implements memory.Allocator.
func (a *Allocator) Allocate(size int) []byte { return a.allocate(size, true) }

// AllocateDirty is Allocate without clearing a recycled buffer: its
// contents are undefined, for callers that write every byte they use
// (the kernels' output buffers).
func (a *Allocator) AllocateDirty(size int) []byte { return a.allocate(size, false) }

func (a *Allocator) allocate(size int, zero bool) []byte {
	a.live.Add(1)
	if size > maxPooled {
		return make([]byte, size)
	}
	k := sizeClass(size)
	if p := a.pools[k].Get(); p != nil {
		b := unsafe.Slice((*byte)(p.(unsafe.Pointer)), 1<<(minShift+k))[:size]
		if zero {
			clear(b)
		}
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

// Reallocate implements memory.Allocator.
func (a *Allocator) Reallocate(size int, b []byte) []byte {
	if size <= cap(b) {
		if size > len(b) {
			clear(b[len(b):size])
		}
		return b[:size]
	}
	nb := a.Allocate(size)
	copy(nb, b)
	a.Free(b)
	return nb
}

// Free implements memory.Allocator.
func (a *Allocator) Free(b []byte) {
	c := cap(b)
	if c == 0 {
		return // a buffer that never allocated (arrow frees those too)
	}
	a.live.Add(-1)
	if c < 1<<minShift || c > maxPooled || c&(c-1) != 0 {
		return
	}
	b = b[:c]
	a.pools[sizeClass(c)].Put(unsafe.Pointer(unsafe.SliceData(b)))
}
