// Package expr holds typed column expressions, evaluated a batch at a time
// with the vectorised kernels of internal/kernels.
//
// An [Expr] is built from [Col] and [Lit] and chained methods:
//
//	expr.Col("price").Gt(5000).And(expr.Col("channel").Eq("web"))
//	expr.Col("price").Mul(0.0091)
//
// Method arguments are expressions or Go literals (converted by [Lit]).
// Building an expression never fails: [Bind] checks it against a schema,
// once per schema, and returns a [Bound] expression whose Eval computes a
// whole batch at a time. Bind reports unknown columns (listing the
// available ones), type mismatches, non-boolean operands of And, Or and
// Not, and unsupported literals as errors; it never panics.
//
// # Types
//
// Column types come from the schema. A literal takes the type of the
// operand it meets, when its value converts exactly:
//
//   - An integer literal meeting an integer column takes the column's type
//     when the value fits (Col("n").Ge(0) on an int16 column compares
//     int16s); otherwise it stays int64 (or uint64) and the operands widen
//     to a common type. Meeting a float column it becomes that float type.
//   - A float literal meeting a float32 column becomes float32 when exact,
//     else both are float64. Meeting an integer column in arithmetic it
//     stays float64, so the result is float64 (price * 0.0091). In
//     comparisons with an integer column it is compared exactly, as the
//     integer type: n > 2.5 is evaluated as n > 2, n = 2.5 is false (null
//     where n is null), n < 1e300 is true.
//   - A string literal takes the column's string or binary type.
//   - A time.Time literal is a timestamp[us, UTC] on its own. Compared with
//     a timestamp, date32 or date64 column it is compared exactly in the
//     column's unit (a timestamp[ms] column compared with an instant
//     between two milliseconds gives the right answer); in arithmetic it
//     takes the column's unit when exact. Timestamps compare as instants:
//     a column without a time zone is read as UTC.
//   - A time.Duration literal is a duration[ns] on its own and takes the
//     unit of a duration column, or of a timestamp column in arithmetic
//     (Col("ts").Add(time.Hour)), the same way.
//   - nil (NULL) takes the type of the other operand.
//
// Two literals are not converted to each other (their arithmetic follows
// the column rules below); expressions made only of literals are evaluated
// once, at Bind, and broadcast by Eval.
//
// Between two non-literal operands, arithmetic follows internal/kernels:
// int64 with int64 is int64; integers of different types widen to their
// common type (int32 and int64 give int64); an integer with a float gives
// a float (int64 with float64: float64); timestamps and durations of
// different units meet in the finer unit. Comparisons between numbers of
// different types compare in the common type.
//
// # Nulls and errors
//
// Nulls follow SQL: a null operand gives a null comparison or arithmetic
// result; And and Or use Kleene logic (false AND null is false, true OR
// null is true); Not null is null; IsNull and IsNotNull are never null.
// NaN is unequal to everything, itself included (IEEE 754).
//
// Integer arithmetic is checked: an overflow, or an integer division by
// zero, in a non-null row fails Eval with an error wrapping
// kernels.ErrOverflow or kernels.ErrDivideByZero. Integer division
// truncates toward zero. Float arithmetic follows IEEE 754 (x/0 is ±Inf or
// NaN). Mod is the integer remainder with Go's semantics (the sign of the
// dividend; math.MinInt64 % -1 is 0); a zero divisor fails Eval like
// division. x % d = c with an int64 x and literals d and c is computed in
// one pass, without a division per row.
//
// # Functions
//
// Contains, HasPrefix and HasSuffix test string (or binary) values
// against a fixed string; Lower and Upper map case (Unicode);
// RegexpExtract returns a capture group of the leftmost match, null when
// there is none, with the pattern compiled once by Bind (a pattern that
// does not compile, or a group it lacks, is ErrArgument). Truncate rounds
// a timestamp down to a multiple of a duration since the epoch, in the
// column's type. A null value gives a null result.
//
// # Ownership
//
// Eval borrows its batch and returns a new array reference that the caller
// releases; only that result is allocated from the caller's allocator.
// Intermediate results, released before Eval returns, come from a pool of
// recycled Go buffers, so that evaluating batch after batch does not
// allocate (and zero) fresh memory for them every time. A bare column is returned as the batch's own array, retained,
// without a copy; a bare literal is broadcast to the batch length.
package expr
