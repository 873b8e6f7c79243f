package kernels_test

import (
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/kernels"
)

// dirtyAllocator is the kernels tests' allocator: a checked allocator
// whose AllocateDirty hands out memory filled with garbage, so a kernel
// that reads an output byte it did not write fails its test.
type dirtyAllocator struct{ *memory.CheckedAllocator }

var _ kernels.DirtyAllocator = dirtyAllocator{}

func newTestAllocator() dirtyAllocator {
	return dirtyAllocator{memory.NewCheckedAllocator(memory.NewGoAllocator())}
}

func (a dirtyAllocator) AllocateDirty(size int) []byte {
	b := a.Allocate(size)
	for i := range b {
		b[i] = 0xa5
	}
	return b
}
