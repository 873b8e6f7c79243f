package expr_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/expr"
	"github.com/meshflow/meshflow/internal/kernels"
)

// TestRandomized builds random expression trees together with a
// row-by-row reference evaluation and compares the two on random data with
// nulls, including the result types, the literal conversions, constant
// folding and the errors (integer overflow and division by zero).

// tag is the reference's view of an operand's type.
type tag int

const (
	tI32 tag = iota
	tI64
	tU8
	tF64
	tIntLit   // an integer constant (int64 until it meets a column)
	tFloatLit // a float constant
	tNull     // a null constant
	tBool
	tString
)

func (t tag) dataType() arrow.DataType {
	switch t {
	case tI32:
		return arrow.PrimitiveTypes.Int32
	case tI64, tIntLit:
		return arrow.PrimitiveTypes.Int64
	case tU8:
		return arrow.PrimitiveTypes.Uint8
	case tF64, tFloatLit:
		return arrow.PrimitiveTypes.Float64
	case tBool:
		return arrow.FixedWidthTypes.Boolean
	case tString:
		return arrow.BinaryTypes.String
	}
	return arrow.Null
}

func (t tag) isInt() bool { return t == tI32 || t == tI64 || t == tU8 }

// rnode is an expression and its reference values.
type rnode struct {
	e        expr.Expr
	t        tag
	constant bool  // no column below: folded by Bind
	vals     []any // per row: nil, int64, float64, bool or string
	fault    bool  // an overflow or division by zero in a non-null row
}

type rgen struct {
	rng  *rand.Rand
	cols map[string][]any
	n    int
}

var randFields = []arrow.Field{
	{Name: "i64", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "i32", Type: arrow.PrimitiveTypes.Int32, Nullable: true},
	{Name: "u8", Type: arrow.PrimitiveTypes.Uint8, Nullable: true},
	{Name: "f64", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
	{Name: "s", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "b", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
}

func (g *rgen) constant(v any, t tag) rnode {
	vals := make([]any, g.n)
	for i := range vals {
		vals[i] = v
	}
	return rnode{e: expr.Lit(v), t: t, constant: true, vals: vals}
}

func (g *rgen) column(name string, t tag) rnode {
	return rnode{e: expr.Col(name), t: t, vals: g.cols[name]}
}

func (g *rgen) num(depth int) rnode {
	r := g.rng.IntN(10)
	if depth == 0 || r < 4 {
		switch g.rng.IntN(12) {
		case 0, 1:
			return g.column("i64", tI64)
		case 2, 3:
			return g.column("i32", tI32)
		case 4:
			return g.column("u8", tU8)
		case 5, 6:
			return g.column("f64", tF64)
		case 7, 8:
			return g.constant(g.rng.Int64N(11)-5, tIntLit)
		case 9, 10:
			return g.constant(float64(g.rng.IntN(21)-10)/4, tFloatLit)
		default:
			return g.constant(nil, tNull)
		}
	}
	if r == 4 {
		a := g.num(depth - 1)
		if a.t == tU8 {
			return a // no negation of unsigned integers
		}
		return g.arith(func(e expr.Expr, _ any) expr.Expr { return e.Neg() }, kernels.Sub, g.constant(int64(0), tIntLit), a, true)
	}
	if r == 5 {
		return g.mod(g.intNum(depth-1), g.intNum(depth-1))
	}
	ops := []struct {
		op   kernels.ArithOp
		call func(expr.Expr, any) expr.Expr
	}{{kernels.Add, expr.Expr.Add}, {kernels.Sub, expr.Expr.Sub}, {kernels.Mul, expr.Expr.Mul}, {kernels.Div, expr.Expr.Div}}
	o := ops[g.rng.IntN(len(ops))]
	return g.arith(o.call, o.op, g.num(depth-1), g.num(depth-1), false)
}

// intNum is an integer (or null) operand for Mod.
func (g *rgen) intNum(depth int) rnode {
	for range 5 {
		if n := g.num(depth); n.t != tF64 && n.t != tFloatLit {
			return n
		}
	}
	return g.column("i64", tI64)
}

// mod builds a % b and its reference: Go's %, a zero divisor in a
// non-null row is a fault.
func (g *rgen) mod(a, b rnode) rnode {
	out := rnode{e: a.e.Mod(b.e), constant: a.constant && b.constant, fault: a.fault || b.fault, vals: make([]any, g.n)}
	at, bt := meet(a, b)
	out.t = widen(at, bt)
	if out.constant && out.t == tI64 {
		out.t = tIntLit
	}
	for i := range out.vals {
		x, y := a.vals[i], b.vals[i]
		if x == nil || y == nil {
			continue
		}
		if y.(int64) == 0 {
			out.fault = true
			continue
		}
		out.vals[i] = x.(int64) % y.(int64)
	}
	return out
}

// meet returns the tags two operands have after literal conversion (see
// the package documentation): a constant takes the other side's type when
// its values convert exactly.
func meet(a, b rnode) (tag, tag) {
	adapt := func(c, other rnode) tag {
		if !c.constant || other.constant {
			return c.t
		}
		switch {
		case c.t == tNull:
			return other.t
		case c.t == tIntLit && other.t.isInt():
			for _, v := range c.vals {
				if x, ok := v.(int64); ok && other.t == tU8 && (x < 0 || x > 255) {
					return tI64
				}
			}
			return other.t
		case c.t == tIntLit && other.t == tF64:
			return tF64
		}
		return c.t
	}
	return adapt(a, b), adapt(b, a)
}

// widen is the result type of arithmetic on two operand types.
func widen(a, b tag) tag {
	switch {
	case a == tNull:
		return b
	case b == tNull:
		return a
	case a == tF64 || b == tF64 || a == tFloatLit || b == tFloatLit:
		return tF64
	case a == b:
		return a
	case a == tIntLit || b == tIntLit || a == tI64 || b == tI64:
		return tI64
	}
	return tI32 // u8 with i32
}

func fitsTag(t tag, v int64) bool {
	switch t {
	case tI32:
		return v >= math.MinInt32 && v <= math.MaxInt32
	case tU8:
		return v >= 0 && v <= 255
	}
	return true
}

// arith builds a op b (or, with neg, -b as 0 - b) and its reference.
func (g *rgen) arith(call func(expr.Expr, any) expr.Expr, op kernels.ArithOp, a, b rnode, neg bool) rnode {
	out := rnode{constant: a.constant && b.constant, fault: a.fault || b.fault, vals: make([]any, g.n)}
	if neg {
		out.e = call(b.e, nil)
		out.t = b.t
		if b.t == tNull {
			out.t = tNull
		}
	} else {
		out.e = call(a.e, b.e)
		at, bt := meet(a, b)
		out.t = widen(at, bt)
		if out.constant {
			switch {
			case out.t == tF64:
				out.t = tFloatLit
			case out.t == tI64:
				out.t = tIntLit
			}
		}
	}
	for i := range out.vals {
		x, y := a.vals[i], b.vals[i]
		if x == nil || y == nil {
			continue
		}
		if out.t == tF64 || out.t == tFloatLit {
			fx, fy := toF(x), toF(y)
			switch op {
			case kernels.Add:
				out.vals[i] = fx + fy
			case kernels.Sub:
				out.vals[i] = fx - fy
			case kernels.Mul:
				out.vals[i] = fx * fy
			default:
				out.vals[i] = fx / fy
			}
			if neg {
				out.vals[i] = -fy // -0.0, not 0 - 0.0
			}
			continue
		}
		ix, iy := x.(int64), y.(int64)
		var r int64
		switch op {
		case kernels.Add:
			r = ix + iy
		case kernels.Sub:
			r = ix - iy
		case kernels.Mul:
			r = ix * iy
		default:
			if iy == 0 {
				out.fault = true
				continue
			}
			r = ix / iy
		}
		if !fitsTag(out.t, r) {
			out.fault = true
			continue
		}
		out.vals[i] = r
	}
	return out
}

func toF(v any) float64 {
	if x, ok := v.(int64); ok {
		return float64(x)
	}
	return v.(float64)
}

func (g *rgen) boolean(depth int) rnode {
	r := g.rng.IntN(12)
	if depth == 0 || r < 3 {
		switch g.rng.IntN(6) {
		case 0, 1, 2:
			return g.column("b", tBool)
		case 3, 4:
			return g.constant(g.rng.IntN(2) == 0, tBool)
		default:
			return g.constant(nil, tNull)
		}
	}
	switch r {
	case 3, 4:
		return g.logic(true, g.boolean(depth-1), g.boolean(depth-1))
	case 5, 6:
		return g.logic(false, g.boolean(depth-1), g.boolean(depth-1))
	case 7:
		a := g.boolean(depth - 1)
		out := rnode{e: a.e.Not(), t: tBool, constant: a.constant, fault: a.fault, vals: make([]any, g.n)}
		for i, v := range a.vals {
			if v != nil {
				out.vals[i] = !v.(bool)
			}
		}
		return out
	case 8:
		var a rnode
		if g.rng.IntN(2) == 0 {
			a = g.num(depth - 1)
		} else {
			a = g.column("s", tString)
		}
		isNull := g.rng.IntN(2) == 0
		out := rnode{t: tBool, constant: a.constant, fault: a.fault, vals: make([]any, g.n)}
		if isNull {
			out.e = a.e.IsNull()
		} else {
			out.e = a.e.IsNotNull()
		}
		for i, v := range a.vals {
			out.vals[i] = (v == nil) == isNull
		}
		return out
	case 9:
		s := g.column("s", tString)
		lit := g.constant([]string{"", "a", "ab", "b"}[g.rng.IntN(4)], tString)
		return g.compare(s, lit)
	}
	return g.compare(g.num(depth-1), g.num(depth-1))
}

func (g *rgen) logic(and bool, a, b rnode) rnode {
	out := rnode{t: tBool, constant: a.constant && b.constant, fault: a.fault || b.fault, vals: make([]any, g.n)}
	if and {
		out.e = a.e.And(b.e)
	} else {
		out.e = a.e.Or(b.e)
	}
	for i := range out.vals {
		out.vals[i] = kleene(and, a.vals[i], b.vals[i])
	}
	return out
}

func (g *rgen) compare(a, b rnode) rnode {
	op := cmpMethods[g.rng.IntN(len(cmpMethods))]
	out := rnode{e: op.call(a.e, b.e), t: tBool, constant: a.constant && b.constant, fault: a.fault || b.fault, vals: make([]any, g.n)}
	for i := range out.vals {
		x, y := a.vals[i], b.vals[i]
		if x == nil || y == nil {
			continue
		}
		if _, ok := x.(string); ok {
			out.vals[i] = compareValues(op.op, x, y)
			continue
		}
		fx, fy := toF(x), toF(y)
		if math.IsNaN(fx) || math.IsNaN(fy) {
			out.vals[i] = op.op == kernels.Ne
			continue
		}
		out.vals[i] = compareValues(op.op, fx, fy)
	}
	return out
}

func TestRandomized(t *testing.T) {
	stats := runRandomized(t, newRand(t), 4, 150)
	t.Logf("outcomes: %v", stats)
}

// FuzzRandomized runs the randomized comparison from fuzzer-chosen seeds:
//
//	go test -run '^$' -fuzz FuzzRandomized ./internal/expr/
func FuzzRandomized(f *testing.F) {
	for _, seed := range []uint64{0, 1, 42, 1 << 40} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, seed uint64) {
		runRandomized(t, rand.New(rand.NewPCG(seed, seed>>32)), 1, 30)
	})
}

// runRandomized checks exprs random expressions on each of rounds random
// batches and returns the count of each kind of outcome.
func runRandomized(t *testing.T, rng *rand.Rand, rounds, exprs int) map[string]int {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	stats := map[string]int{}
	for round := range rounds {
		n := 1 + rng.IntN(300)
		off := rng.IntN(70)
		cols := map[string][]any{}
		all := make([][]any, len(randFields))
		for c, f := range randFields {
			vals := make([]any, off+n)
			for i := range vals {
				if rng.IntN(7) == 0 {
					continue
				}
				switch f.Type.ID() {
				case arrow.INT64, arrow.INT32:
					vals[i] = rng.Int64N(41) - 20
				case arrow.UINT8:
					vals[i] = rng.Uint64N(21)
				case arrow.FLOAT64:
					vals[i] = float64(rng.IntN(81)-40) / 4
				case arrow.STRING:
					vals[i] = []string{"", "a", "ab", "b", "ba"}[rng.IntN(5)]
				case arrow.BOOL:
					vals[i] = rng.IntN(2) == 0
				}
			}
			all[c] = vals
			// The reference works on int64 and float64 only.
			ref := make([]any, n)
			for i, v := range vals[off:] {
				if u, ok := v.(uint64); ok {
					ref[i] = int64(u)
				} else {
					ref[i] = v
				}
			}
			cols[f.Name] = ref
		}
		full := newBatch(mem, randFields, all)
		rec := full.NewSlice(int64(off), int64(off+n))
		full.Release()
		g := &rgen{rng: rng, cols: cols, n: n}
		for range exprs {
			var r rnode
			if rng.IntN(3) == 0 {
				r = g.num(3)
			} else {
				r = g.boolean(3)
			}
			stats[checkRandom(t, mem, rec, r, round)]++
			if strings.Contains(r.e.String(), " % ") {
				stats["with %"]++
			}
			if t.Failed() {
				break
			}
		}
		rec.Release()
	}
	return stats
}

// checkRandom checks one expression and returns the kind of outcome.
func checkRandom(t *testing.T, mem memory.Allocator, rec arrow.RecordBatch, r rnode, round int) string {
	t.Helper()
	b, err := expr.Bind(r.e, rec.Schema())
	if err != nil {
		if !r.fault || !(errors.Is(err, kernels.ErrOverflow) || errors.Is(err, kernels.ErrDivideByZero)) {
			t.Errorf("round %d: %s: %v", round, r.e, err)
		}
		return "bind error" // a constant subexpression failed while folding
	}
	out, err := b.Eval(context.Background(), mem, rec)
	checkScratch(t, r.e)
	if r.fault {
		if err == nil {
			out.Release()
			t.Errorf("round %d: %s: no error, want overflow or division by zero", round, r.e)
		} else if !errors.Is(err, kernels.ErrOverflow) && !errors.Is(err, kernels.ErrDivideByZero) {
			t.Errorf("round %d: %s: %v", round, r.e, err)
		}
		return "eval error"
	}
	if err != nil {
		t.Errorf("round %d: %s: %v", round, r.e, err)
		return "failed"
	}
	defer out.Release()
	if !r.constant && r.t != tNull && !arrow.TypeEqual(out.DataType(), r.t.dataType()) {
		t.Errorf("round %d: %s: type %s, reference %s", round, r.e, out.DataType(), r.t.dataType())
		return "failed"
	}
	want := make([]any, len(r.vals))
	for i, v := range r.vals {
		want[i] = v
		if x, ok := v.(int64); ok && out.DataType().ID() == arrow.UINT8 {
			want[i] = uint64(x)
		}
		if x, ok := v.(int64); ok && out.DataType().ID() == arrow.FLOAT64 {
			want[i] = float64(x)
		}
	}
	checkValues(t, r.e.String(), out, want)
	if r.constant {
		return "constant"
	}
	return "values"
}
