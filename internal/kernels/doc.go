// Package kernels holds Meshflow's vectorised batch kernels: selection
// (Filter, Take), comparisons, Kleene boolean logic, checked arithmetic, key
// hashing and hash partitioning into Flink-style key groups.
//
// The common types have hand-written loops over the column buffers; every
// other type falls back to the arrow compute kernels with the same
// semantics, so callers never need to know which path ran.
//
// # Ownership
//
// Inputs are borrowed: a kernel neither retains nor releases the arrays,
// batches or scalars it is given, and never modifies them. Every array or
// batch a kernel returns is a new reference owned by the caller, who must
// release it, also when the kernel returned one of its inputs unchanged (it
// then retained it first). Buffers are allocated from the allocator passed in.
//
// # Nulls
//
// Comparisons and arithmetic propagate nulls: a null on either side gives a
// null result. And and Or follow Kleene logic (false AND null is false, true
// OR null is true). Filter drops the rows whose mask value is null.
package kernels
