package expr

import "fmt"

// ScratchLive is the number of intermediate buffers handed out and not yet
// freed: zero between evaluations.
func ScratchLive() int64 { return scratchMem.Live() }

// RootType is the Go type of a bound expression's top evaluator.
func RootType(b Bound) string { return fmt.Sprintf("%T", b.(*bound).root) }
