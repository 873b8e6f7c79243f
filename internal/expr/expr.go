package expr

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/arrow/scalar"

	"github.com/meshflow/meshflow/internal/kernels"
)

// Expr is a column expression. Expressions are immutable values: methods
// return new expressions and never change their receiver, so a shared
// subexpression is safe. Method arguments are expressions or Go literals,
// converted by [Lit] (nil is NULL). String returns a readable form, such as
// ((price > 5000) AND (channel = "web")).
type Expr interface {
	fmt.Stringer

	// Comparisons; the result is boolean.
	Eq(v any) Expr // =
	Ne(v any) Expr // !=
	Lt(v any) Expr // <
	Le(v any) Expr // <=
	Gt(v any) Expr // >
	Ge(v any) Expr // >=

	// Arithmetic; see the package documentation for the result types.
	Add(v any) Expr
	Sub(v any) Expr
	Mul(v any) Expr
	Div(v any) Expr
	Neg() Expr // arithmetic negation of a signed integer, float or duration
	// Mod is the remainder of integers, with Go's semantics: the sign of
	// the dividend (-7 % 3 is -1); a zero divisor fails Eval like Div.
	Mod(v any) Expr

	// String functions on a string column (Contains, HasPrefix and
	// HasSuffix also on binary); a null value gives null.
	Contains(substr string) Expr // boolean
	HasPrefix(prefix string) Expr
	HasSuffix(suffix string) Expr
	Lower() Expr // Unicode lower case
	Upper() Expr
	// RegexpExtract is the text of capture group group (0: the whole
	// match) of the leftmost match of the regular expression pattern (Go
	// regexp syntax, compiled once by Bind); null when the value does not
	// match or the group takes no part in the match.
	RegexpExtract(pattern string, group int) Expr

	// Truncate rounds a timestamp down to a multiple of step since the
	// Unix epoch (time.Minute: the start of the minute; 10*time.Second: a
	// 10-second window), keeping the column's type. Days start at 00:00
	// UTC whatever the column's time zone. step must be a positive whole
	// number of the column's unit.
	Truncate(step time.Duration) Expr

	// Kleene logic on booleans.
	And(v any) Expr
	Or(v any) Expr
	Not() Expr

	// Null tests; the result is boolean and never null.
	IsNull() Expr
	IsNotNull() Expr

	node() *node
}

type kind uint8

const (
	kCol kind = iota + 1
	kLit
	kCmp
	kArith
	kAnd
	kOr
	kNot
	kNeg
	kIsNull
	kIsNotNull
	kMod
	kStr
	kTrunc
)

// node is the one implementation of Expr.
type node struct {
	kind  kind
	name  string   // kCol
	lit   *literal // kLit
	cmp   kernels.CmpOp
	arith kernels.ArithOp
	args  []*node
	fn    strFunc       // kStr
	text  string        // kStr: the substring, prefix, suffix or pattern
	group int           // kStr: the capture group of RegexpExtract
	step  time.Duration // kTrunc
}

func (n *node) node() *node { return n }

// literal is a converted Go value.
type literal struct {
	s   scalar.Scalar // its own typed value; nil when err is set
	err error
	// v is the exact Go value (nil, bool, int64, uint64, float64, string,
	// []byte, time.Time, time.Duration), from which coercions convert
	// without the rounding of s (a time.Time is exact to the nanosecond,
	// s to the microsecond). nil for a scalar.Scalar literal.
	v any
}

// Col refers to the column called name.
func Col(name string) Expr { return &node{kind: kCol, name: name} }

// Lit is a literal: nil (NULL), bool, int, int8…int64, uint, uint8…uint64,
// float32, float64, string, []byte (binary), time.Time (a timestamp in
// microseconds, UTC), time.Duration (a duration in nanoseconds) or an
// arrow scalar.Scalar. An Expr is returned as it is. Other values make an
// expression that Bind rejects with ErrLiteral.
func Lit(v any) Expr {
	if e, ok := v.(Expr); ok && e != nil {
		return e
	}
	return &node{kind: kLit, lit: newLiteral(v)}
}

func newLiteral(v any) *literal {
	l := &literal{v: v}
	switch x := v.(type) {
	case nil:
		l.s = scalar.MakeNullScalar(arrow.Null)
	case bool:
		l.s = scalar.NewBooleanScalar(x)
	case int:
		l.s, l.v = scalar.NewInt64Scalar(int64(x)), int64(x)
	case int8:
		l.s, l.v = scalar.NewInt8Scalar(x), int64(x)
	case int16:
		l.s, l.v = scalar.NewInt16Scalar(x), int64(x)
	case int32:
		l.s, l.v = scalar.NewInt32Scalar(x), int64(x)
	case int64:
		l.s = scalar.NewInt64Scalar(x)
	case uint:
		l.s, l.v = scalar.NewUint64Scalar(uint64(x)), uint64(x)
	case uint8:
		l.s, l.v = scalar.NewUint8Scalar(x), uint64(x)
	case uint16:
		l.s, l.v = scalar.NewUint16Scalar(x), uint64(x)
	case uint32:
		l.s, l.v = scalar.NewUint32Scalar(x), uint64(x)
	case uint64:
		l.s = scalar.NewUint64Scalar(x)
	case float32:
		l.s, l.v = scalar.NewFloat32Scalar(x), float64(x)
	case float64:
		l.s = scalar.NewFloat64Scalar(x)
	case string:
		l.s = scalar.NewStringScalar(x)
	case []byte:
		b := append([]byte(nil), x...)
		l.s, l.v = scalar.NewBinaryScalar(memory.NewBufferBytes(b), arrow.BinaryTypes.Binary), b
	case time.Time:
		l.s = scalar.NewTimestampScalar(arrow.Timestamp(x.UnixMicro()), timestampUS)
	case time.Duration:
		l.s = scalar.NewDurationScalar(arrow.Duration(x), arrow.FixedWidthTypes.Duration_ns)
	case scalar.Scalar:
		l.s, l.v = x, scalarValue(x)
	default:
		l.err = errorf(ErrLiteral, "unsupported literal %v of type %T", v, v)
	}
	return l
}

// timestampUS is the type of time.Time literals.
var timestampUS = &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}

// toNode converts a method argument.
func toNode(v any) *node { return Lit(v).node() }

func (n *node) binary(k kind, v any) *node { return &node{kind: k, args: []*node{n, toNode(v)}} }

func (n *node) compare(op kernels.CmpOp, v any) Expr {
	e := n.binary(kCmp, v)
	e.cmp = op
	return e
}

func (n *node) arithmetic(op kernels.ArithOp, v any) Expr {
	e := n.binary(kArith, v)
	e.arith = op
	return e
}

func (n *node) Eq(v any) Expr   { return n.compare(kernels.Eq, v) }
func (n *node) Ne(v any) Expr   { return n.compare(kernels.Ne, v) }
func (n *node) Lt(v any) Expr   { return n.compare(kernels.Lt, v) }
func (n *node) Le(v any) Expr   { return n.compare(kernels.Le, v) }
func (n *node) Gt(v any) Expr   { return n.compare(kernels.Gt, v) }
func (n *node) Ge(v any) Expr   { return n.compare(kernels.Ge, v) }
func (n *node) Add(v any) Expr  { return n.arithmetic(kernels.Add, v) }
func (n *node) Sub(v any) Expr  { return n.arithmetic(kernels.Sub, v) }
func (n *node) Mul(v any) Expr  { return n.arithmetic(kernels.Mul, v) }
func (n *node) Div(v any) Expr  { return n.arithmetic(kernels.Div, v) }
func (n *node) And(v any) Expr  { return n.binary(kAnd, v) }
func (n *node) Or(v any) Expr   { return n.binary(kOr, v) }
func (n *node) Not() Expr       { return &node{kind: kNot, args: []*node{n}} }
func (n *node) Neg() Expr       { return &node{kind: kNeg, args: []*node{n}} }
func (n *node) IsNull() Expr    { return &node{kind: kIsNull, args: []*node{n}} }
func (n *node) IsNotNull() Expr { return &node{kind: kIsNotNull, args: []*node{n}} }

func (n *node) String() string {
	var b strings.Builder
	n.write(&b)
	return b.String()
}

func (n *node) write(b *strings.Builder) {
	switch n.kind {
	case kCol:
		b.WriteString(columnName(n.name))
	case kLit:
		b.WriteString(n.lit.String())
	case kStr, kTrunc:
		n.writeFunc(b)
	case kCmp, kArith, kAnd, kOr, kMod:
		var op string
		switch n.kind {
		case kMod:
			op = "%"
		case kCmp:
			op = n.cmp.String()
		case kArith:
			op = n.arith.String()
		case kAnd:
			op = "AND"
		default:
			op = "OR"
		}
		b.WriteByte('(')
		n.args[0].write(b)
		b.WriteString(" " + op + " ")
		n.args[1].write(b)
		b.WriteByte(')')
	case kNot:
		b.WriteString("NOT ")
		n.args[0].write(b)
	case kNeg:
		b.WriteString("-")
		n.args[0].write(b)
	case kIsNull, kIsNotNull:
		b.WriteByte('(')
		n.args[0].write(b)
		if n.kind == kIsNull {
			b.WriteString(" IS NULL)")
		} else {
			b.WriteString(" IS NOT NULL)")
		}
	}
}

// columnName returns name as written in String: bare when it is an
// identifier (letters, digits, _ and ., not starting with a digit), else
// in backquotes.
func columnName(name string) string {
	for i, r := range name {
		ok := r == '_' || r == '.' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9'
		if !ok {
			return "`" + strings.ReplaceAll(name, "`", "``") + "`"
		}
	}
	if name == "" {
		return "``"
	}
	return name
}

func (l *literal) String() string {
	if l.err != nil {
		return fmt.Sprintf("<bad literal %T>", l.v)
	}
	switch v := l.v.(type) {
	case nil:
		if l.s != nil && l.s.IsValid() {
			return l.s.String()
		}
		return "NULL"
	case string:
		return strconv.Quote(v)
	case []byte:
		return fmt.Sprintf("x'%x'", v)
	case float64:
		bits := 64
		if l.s.DataType().ID() == arrow.FLOAT32 {
			bits = 32
		}
		return strconv.FormatFloat(v, 'g', -1, bits)
	case time.Time:
		return v.UTC().Format(time.RFC3339Nano)
	case time.Duration:
		return v.String()
	}
	return fmt.Sprint(l.v)
}
