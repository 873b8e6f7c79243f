package expr_test

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/expr"
	"github.com/meshflow/meshflow/internal/kernels"
)

// opTypes are the column types every operator is tested on.
var opTypes = []arrow.DataType{
	arrow.PrimitiveTypes.Int8, arrow.PrimitiveTypes.Int16, arrow.PrimitiveTypes.Int32, arrow.PrimitiveTypes.Int64,
	arrow.PrimitiveTypes.Uint8, arrow.PrimitiveTypes.Uint16, arrow.PrimitiveTypes.Uint32, arrow.PrimitiveTypes.Uint64,
	arrow.PrimitiveTypes.Float32, arrow.PrimitiveTypes.Float64,
	arrow.BinaryTypes.String, arrow.BinaryTypes.LargeString, arrow.BinaryTypes.Binary,
	arrow.FixedWidthTypes.Boolean,
	tsMs, &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"},
	arrow.FixedWidthTypes.Date32, durMs,
}

type typeClass int

const (
	classSigned typeClass = iota // and temporal types
	classUnsigned
	classFloat
	classString
	classBool
)

func classOf(dt arrow.DataType) typeClass {
	switch dt.ID() {
	case arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64:
		return classUnsigned
	case arrow.FLOAT32, arrow.FLOAT64:
		return classFloat
	case arrow.STRING, arrow.LARGE_STRING, arrow.BINARY:
		return classString
	case arrow.BOOL:
		return classBool
	}
	return classSigned
}

func isTemporal(dt arrow.DataType) bool {
	switch dt.ID() {
	case arrow.TIMESTAMP, arrow.DATE32, arrow.DURATION:
		return true
	}
	return false
}

// randValue returns a random test value of type dt (nulls included):
// small numbers, so that ties are frequent and arithmetic rarely
// overflows.
func randValue(rng *rand.Rand, dt arrow.DataType, noZero bool) any {
	if rng.IntN(6) == 0 {
		return nil
	}
	switch classOf(dt) {
	case classUnsigned:
		v := rng.Uint64N(21)
		if noZero && v == 0 {
			v = 1
		}
		return v
	case classFloat:
		v := float64(rng.IntN(81)-40) / 4
		if noZero && v == 0 {
			v = 0.25
		}
		return v
	case classString:
		b := make([]byte, rng.IntN(3))
		for i := range b {
			b[i] = "ab"[rng.IntN(2)]
		}
		return string(b)
	case classBool:
		return rng.IntN(2) == 0
	}
	v := rng.Int64N(21) - 10
	if noZero && v == 0 {
		v = 1
	}
	return v
}

// goLiteral turns a test value of type dt into the Go literal a user would
// write for it.
func goLiteral(dt arrow.DataType, v any) any {
	if v == nil {
		return nil
	}
	switch t := dt.(type) {
	case *arrow.TimestampType:
		return time.Unix(0, v.(int64)*int64(t.Unit.Multiplier())).UTC()
	case *arrow.Date32Type:
		return time.Unix(v.(int64)*86400, 0).UTC()
	case *arrow.DurationType:
		return time.Duration(v.(int64) * int64(t.Unit.Multiplier()))
	}
	switch dt.ID() {
	case arrow.BINARY:
		return []byte(v.(string))
	case arrow.UINT64:
		return v
	}
	if x, ok := v.(int64); ok {
		return int(x)
	}
	if x, ok := v.(uint64); ok {
		return int(x)
	}
	return v
}

func compareValues(op kernels.CmpOp, a, b any) any {
	if a == nil || b == nil {
		return nil
	}
	var c int
	switch a := a.(type) {
	case int64:
		c = cmp.Compare(a, b.(int64))
	case uint64:
		c = cmp.Compare(a, b.(uint64))
	case float64:
		c = cmp.Compare(a, b.(float64))
	case string:
		c = strings.Compare(a, b.(string))
	case bool:
		c = cmp.Compare(boolInt(a), boolInt(b.(bool)))
	}
	switch op {
	case kernels.Eq:
		return c == 0
	case kernels.Ne:
		return c != 0
	case kernels.Lt:
		return c < 0
	case kernels.Le:
		return c <= 0
	case kernels.Gt:
		return c > 0
	}
	return c >= 0
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

var cmpMethods = []struct {
	op   kernels.CmpOp
	call func(e expr.Expr, v any) expr.Expr
}{
	{kernels.Eq, expr.Expr.Eq}, {kernels.Ne, expr.Expr.Ne}, {kernels.Lt, expr.Expr.Lt},
	{kernels.Le, expr.Expr.Le}, {kernels.Gt, expr.Expr.Gt}, {kernels.Ge, expr.Expr.Ge},
}

var arithMethods = []struct {
	op   kernels.ArithOp
	call func(e expr.Expr, v any) expr.Expr
}{
	{kernels.Add, expr.Expr.Add}, {kernels.Sub, expr.Expr.Sub}, {kernels.Mul, expr.Expr.Mul}, {kernels.Div, expr.Expr.Div},
}

// arithValues is the reference of a op b in the column type dt: exact for
// integers (false when the result leaves dt's range or divides by zero),
// IEEE 754 in dt's width for floats.
func arithValues(op kernels.ArithOp, dt arrow.DataType, a, b any) (any, bool) {
	if a == nil || b == nil {
		return nil, true
	}
	if classOf(dt) == classFloat {
		x, y := a.(float64), b.(float64)
		var r float64
		switch op {
		case kernels.Add:
			r = x + y
		case kernels.Sub:
			r = x - y
		case kernels.Mul:
			r = x * y
		default:
			r = x / y
		}
		if dt.ID() == arrow.FLOAT32 {
			x32, y32 := float32(x), float32(y)
			switch op {
			case kernels.Add:
				r = float64(x32 + y32)
			case kernels.Sub:
				r = float64(x32 - y32)
			case kernels.Mul:
				r = float64(x32 * y32)
			default:
				r = float64(x32 / y32)
			}
		}
		return r, true
	}
	toBig := func(v any) *big.Int {
		if u, ok := v.(uint64); ok {
			return new(big.Int).SetUint64(u)
		}
		return big.NewInt(v.(int64))
	}
	x, y, r := toBig(a), toBig(b), new(big.Int)
	switch op {
	case kernels.Add:
		r.Add(x, y)
	case kernels.Sub:
		r.Sub(x, y)
	case kernels.Mul:
		r.Mul(x, y)
	default:
		if y.Sign() == 0 {
			return nil, false
		}
		r.Quo(x, y)
	}
	w := uint(dt.(arrow.FixedWidthDataType).BitWidth())
	if classOf(dt) == classUnsigned {
		if r.Sign() < 0 || r.BitLen() > int(w) {
			return nil, false
		}
		return r.Uint64(), true
	}
	if r.BitLen() > int(w)-1 && !(r.Sign() < 0 && r.BitLen() == int(w) && r.TrailingZeroBits() == w-1) {
		return nil, false
	}
	return r.Int64(), true
}

// TestOperatorsAllTypes runs every operator on every supported column
// type, column with column, column with literal and literal with column,
// against a row-by-row reference.
func TestOperatorsAllTypes(t *testing.T) {
	rng := newRand(t)
	for _, dt := range opTypes {
		t.Run(dt.String(), func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			const n, off = 60, 3
			av, bv, cv := make([]any, n+off), make([]any, n+off), make([]any, n+off)
			for i := range av {
				av[i], bv[i], cv[i] = randValue(rng, dt, false), randValue(rng, dt, false), randValue(rng, dt, true)
			}
			full := newBatch(mem, []arrow.Field{
				{Name: "a", Type: dt, Nullable: true}, {Name: "b", Type: dt, Nullable: true}, {Name: "c", Type: dt, Nullable: true},
			}, [][]any{av, bv, cv})
			defer full.Release()
			rec := full.NewSlice(off, off+n)
			defer rec.Release()
			av, bv, cv = av[off:], bv[off:], cv[off:]
			want := make([]any, n)
			run := func(e expr.Expr, wantErr bool) {
				t.Helper()
				out, err := eval(t, mem, e, rec)
				if wantErr {
					if err == nil {
						out.Release()
						t.Fatalf("%s: no error", e)
					}
					if !errors.Is(err, kernels.ErrOverflow) && !errors.Is(err, kernels.ErrDivideByZero) {
						t.Fatalf("%s: %v", e, err)
					}
					return
				}
				if err != nil {
					t.Fatalf("%s: %v", e, err)
				}
				checkValues(t, e.String(), out, want)
				out.Release()
			}

			// Comparisons.
			lit := av[rng.IntN(n)]
			for lit == nil {
				lit = randValue(rng, dt, false)
			}
			for _, m := range cmpMethods {
				for i := range want {
					want[i] = compareValues(m.op, av[i], bv[i])
				}
				run(m.call(expr.Col("a"), expr.Col("b")), false)
				for i := range want {
					want[i] = compareValues(m.op, av[i], lit)
				}
				run(m.call(expr.Col("a"), goLiteral(dt, lit)), false)
				for i := range want {
					want[i] = compareValues(m.op, lit, av[i])
				}
				run(m.call(expr.Lit(goLiteral(dt, lit)), expr.Col("a")), false)
			}

			// Null tests.
			for i := range want {
				want[i] = av[i] == nil
			}
			run(expr.Col("a").IsNull(), false)
			for i := range want {
				want[i] = av[i] != nil
			}
			run(expr.Col("a").IsNotNull(), false)

			switch classOf(dt) {
			case classBool:
				for i := range want {
					want[i] = kleene(true, av[i], bv[i])
				}
				run(expr.Col("a").And(expr.Col("b")), false)
				for i := range want {
					want[i] = kleene(false, av[i], bv[i])
				}
				run(expr.Col("a").Or(expr.Col("b")), false)
				for i := range want {
					want[i] = nil
					if av[i] != nil {
						want[i] = !av[i].(bool)
					}
				}
				run(expr.Col("a").Not(), false)
				return
			case classString:
				return
			}
			if isTemporal(dt) {
				return // temporal arithmetic: see TestEval
			}

			// Arithmetic; c has no zeros (a divisor).
			for _, m := range arithMethods {
				for _, pair := range []struct {
					e    expr.Expr
					l, r func(i int) any
				}{
					{m.call(expr.Col("a"), expr.Col("b")), func(i int) any { return av[i] }, func(i int) any { return bv[i] }},
					{m.call(expr.Col("a"), expr.Col("c")), func(i int) any { return av[i] }, func(i int) any { return cv[i] }},
					{m.call(expr.Col("a"), goLiteral(dt, lit)), func(i int) any { return av[i] }, func(int) any { return lit }},
					{m.call(expr.Lit(goLiteral(dt, lit)), expr.Col("c")), func(int) any { return lit }, func(i int) any { return cv[i] }},
				} {
					ok := true
					for i := range want {
						var good bool
						want[i], good = arithValues(m.op, dt, pair.l(i), pair.r(i))
						ok = ok && good
					}
					run(pair.e, !ok)
				}
			}
			if classOf(dt) != classUnsigned {
				for i := range want {
					want[i] = nil
					switch v := av[i].(type) {
					case int64:
						want[i] = -v
					case float64:
						want[i] = -v
						if dt.ID() == arrow.FLOAT32 {
							want[i] = float64(-float32(v))
						}
					}
				}
				run(expr.Col("a").Neg(), false)
			}
		})
	}
}

// kleene is the reference And (and=true) or Or of two nullable booleans.
func kleene(and bool, a, b any) any {
	if and {
		if a == false || b == false {
			return false
		}
		if a == nil || b == nil {
			return nil
		}
		return true
	}
	if a == true || b == true {
		return true
	}
	if a == nil || b == nil {
		return nil
	}
	return false
}

// TestExactLiteralComparisons compares integer and temporal columns with
// literals that do not convert exactly (fractions, out of range, NaN,
// sub-unit instants) against an exact reference in big.Rat.
func TestExactLiteralComparisons(t *testing.T) {
	rng := newRand(t)
	type colCase struct {
		dt   arrow.DataType
		vals func() any                     // a random column value (raw ticks for temporal types)
		rat  func(v any) *big.Rat           // the exact value of a column value (seconds for temporal types)
		lits []any                          // Go literals
		lrat func(lit any) (*big.Rat, bool) // the exact value of a literal; false for NaN
	}
	intRat := func(v any) *big.Rat {
		if u, ok := v.(uint64); ok {
			return new(big.Rat).SetInt(new(big.Int).SetUint64(u))
		}
		return new(big.Rat).SetInt64(v.(int64))
	}
	numLit := func(lit any) (*big.Rat, bool) {
		switch l := lit.(type) {
		case int:
			return new(big.Rat).SetInt64(int64(l)), true
		case uint64:
			return new(big.Rat).SetInt(new(big.Int).SetUint64(l)), true
		case float64:
			if math.IsNaN(l) {
				return nil, false
			}
			if math.IsInf(l, 0) {
				r := new(big.Rat).SetInt(new(big.Int).Lsh(big.NewInt(1), 80))
				if l < 0 {
					r.Neg(r)
				}
				return r, true
			}
			return new(big.Rat).SetFloat64(l), true
		}
		panic(lit)
	}
	timeLit := func(lit any) (*big.Rat, bool) {
		switch l := lit.(type) {
		case time.Time:
			return new(big.Rat).SetFrac(new(big.Int).Add(new(big.Int).Mul(big.NewInt(l.Unix()), big.NewInt(1e9)), big.NewInt(int64(l.Nanosecond()))), big.NewInt(1e9)), true
		case time.Duration:
			return new(big.Rat).SetFrac64(int64(l), 1e9), true
		}
		panic(lit)
	}
	perTick := func(nanos int64) func(v any) *big.Rat {
		return func(v any) *big.Rat { return new(big.Rat).SetFrac(big.NewInt(v.(int64)*nanos), big.NewInt(1e9)) }
	}
	numLits := []any{0, 3, -3, 2.5, -2.5, 3.0, 127, 128, -128, -129, 255, 256, -1, 1e300, -1e300,
		math.Inf(1), math.Inf(-1), math.NaN(), uint64(math.MaxUint64), math.MaxInt64, math.MinInt64, 0.1, -0.1}
	t0 := time.Date(2024, 2, 29, 12, 0, 0, 0, time.UTC)
	cases := []colCase{
		{arrow.PrimitiveTypes.Int8, func() any { return rng.Int64N(256) - 128 }, intRat, numLits, numLit},
		{arrow.PrimitiveTypes.Uint8, func() any { return rng.Uint64N(256) }, intRat, numLits, numLit},
		{arrow.PrimitiveTypes.Int64, func() any { return rng.Int64N(11) - 5 }, intRat, numLits, numLit},
		{arrow.PrimitiveTypes.Uint64, func() any { return rng.Uint64N(11) }, intRat, numLits, numLit},
		{tsMs, func() any { return t0.UnixMilli() + rng.Int64N(5) - 2 }, perTick(1e6),
			[]any{t0, t0.Add(time.Microsecond), t0.Add(-time.Nanosecond), t0.Add(time.Millisecond + 1),
				time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)}, timeLit},
		{&arrow.TimestampType{Unit: arrow.Nanosecond}, func() any { return t0.UnixNano() + rng.Int64N(5) - 2 }, perTick(1),
			[]any{t0, t0.Add(time.Nanosecond), time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)}, timeLit},
		{&arrow.TimestampType{Unit: arrow.Second, TimeZone: "Europe/Paris"}, func() any { return t0.Unix() + rng.Int64N(5) - 2 }, perTick(1e9),
			[]any{t0, t0.Add(500 * time.Millisecond), t0.Add(-time.Second - 1)}, timeLit},
		{arrow.FixedWidthTypes.Date32, func() any { return t0.Unix()/86400 + rng.Int64N(5) - 2 }, perTick(86400e9),
			[]any{t0, t0.Add(-12 * time.Hour), t0.Add(24 * time.Hour), t0.Truncate(24 * time.Hour)}, timeLit},
		{durMs, func() any { return rng.Int64N(7) - 3 }, perTick(1e6),
			[]any{time.Duration(0), time.Millisecond, 1500 * time.Microsecond, -time.Microsecond, time.Duration(math.MaxInt64)}, timeLit},
	}
	for _, c := range cases {
		t.Run(c.dt.String(), func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			const n = 40
			vals := make([]any, n)
			for i := range vals {
				if rng.IntN(8) != 0 {
					vals[i] = c.vals()
				}
			}
			rec := newBatch(mem, []arrow.Field{{Name: "x", Type: c.dt, Nullable: true}}, [][]any{vals})
			defer rec.Release()
			want := make([]any, n)
			for _, lit := range c.lits {
				lr, ordered := c.lrat(lit)
				for _, m := range cmpMethods {
					for _, swapped := range []bool{false, true} {
						e := m.call(expr.Col("x"), lit)
						if swapped {
							e = m.call(expr.Lit(lit), expr.Col("x"))
						}
						for i, v := range vals {
							switch {
							case v == nil:
								want[i] = nil
							case !ordered:
								want[i] = m.op == kernels.Ne
							default:
								x, y := c.rat(v), lr
								if swapped {
									x, y = y, x
								}
								want[i] = ratCompare(m.op, x, y)
							}
						}
						out, err := eval(t, mem, e, rec)
						if err != nil {
							t.Fatalf("%s: %v", e, err)
						}
						checkValues(t, fmt.Sprintf("%s on %s", e, showAll(vals)), out, want)
						out.Release()
					}
				}
			}
		})
	}
}

func ratCompare(op kernels.CmpOp, x, y *big.Rat) bool {
	c := x.Cmp(y)
	switch op {
	case kernels.Eq:
		return c == 0
	case kernels.Ne:
		return c != 0
	case kernels.Lt:
		return c < 0
	case kernels.Le:
		return c <= 0
	case kernels.Gt:
		return c > 0
	}
	return c >= 0
}
