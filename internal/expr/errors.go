package expr

import (
	"errors"
	"fmt"
)

// Sentinel errors of Bind and Eval. The errors returned wrap them, so test
// with errors.Is; their messages carry the details only (the expression,
// the column, the types), such as
//
//	expr (prize > 10): no column "prize" (columns: auction, price, channel)
//
// Evaluation errors of the kernels (kernels.ErrOverflow,
// kernels.ErrDivideByZero) are wrapped as they are.
var (
	// ErrUnknownColumn: the schema has no column of that name, or several.
	ErrUnknownColumn = errors.New("expr: unknown column")
	// ErrType: an operator does not apply to its operands' types.
	ErrType = errors.New("expr: type mismatch")
	// ErrLiteral: a Go value that Lit cannot convert.
	ErrLiteral = errors.New("expr: unsupported literal")
	// ErrArgument: a function argument out of its domain: a regular
	// expression that does not compile, a capture group it lacks, a
	// truncation step that is not a positive whole number of the column's
	// unit.
	ErrArgument = errors.New("expr: invalid argument")
	// ErrSchema: Eval was given a batch whose columns do not match the
	// schema the expression was bound to.
	ErrSchema = errors.New("expr: batch does not match the bound schema")
)

// kindError is an error of a sentinel kind whose message is its details
// alone.
type kindError struct {
	kind error
	err  error
}

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.kind, e.err} }

// errorf returns an error wrapping kind with the formatted message (which
// may wrap further errors with %w).
func errorf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, err: fmt.Errorf(format, args...)}
}
