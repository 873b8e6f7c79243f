package kernels

import "errors"

// Sentinel errors. Kernels wrap them with details; test with errors.Is.
var (
	// ErrLengthMismatch: inputs that must have the same length do not.
	ErrLengthMismatch = errors.New("kernels: length mismatch")
	// ErrIndexOutOfRange: a Take index or a column index is out of range.
	ErrIndexOutOfRange = errors.New("kernels: index out of range")
	// ErrOverflow: an integer result does not fit its type.
	ErrOverflow = errors.New("kernels: integer overflow")
	// ErrDivideByZero: an integer division by zero.
	ErrDivideByZero = errors.New("kernels: integer division by zero")
	// ErrUnsupportedType: no kernel (fast path or arrow compute) accepts
	// the input types.
	ErrUnsupportedType = errors.New("kernels: unsupported type")
	// ErrInvalidArgument: an argument is out of its domain (for example a
	// parallelism above the maximum parallelism).
	ErrInvalidArgument = errors.New("kernels: invalid argument")
)
