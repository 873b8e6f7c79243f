package expr

import (
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/recycle"
)

// Intermediate results (the operands of an operator, released before Eval
// returns) are allocated from a recycling allocator (package recycle)
// instead of the caller's: their buffers go back to a pool when released
// and are handed out again, cleared, for the next batch. Only Eval's
// result, which is handed over to the caller, comes from the caller's
// allocator.
var scratchMem = recycle.New()

// scratch returns the allocator for intermediates of an evaluation whose
// result is allocated from mem.
func scratch(memory.Allocator) memory.Allocator { return scratchMem }

// Scratch returns the allocator of intermediate results, for arrays that
// the caller releases before it returns (such as a filter's mask, which
// is not emitted): their buffers are recycled for the next batch. It is
// safe for concurrent use. Arrays handed over to someone else come from
// the caller's own allocator, which accounts for them.
func Scratch() memory.Allocator { return scratchMem }
