package domains

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/expr"
	"github.com/meshflow/meshflow/internal/kernels"
	"github.com/meshflow/meshflow/messages"
)

// Contract is what a port promises: an Arrow schema, a version, and rules
// every row must keep.
//
// Besides its rules, [Contract.Check] holds every row to its schema: no
// null in a field that is not nullable (at the top, as a non-nullable
// child of a valid struct, as a non-nullable element of a list, or item
// of a map, or as a dictionary value behind a valid index), and valid
// UTF-8 in every utf8 and large_utf8 value, however deep. So a row that
// leaves a boundary carries no null where its schema forbids one.
//
// NaN and ±Inf are values, not nulls: in a float column with no rule
// about it they pass, and [messages.JSONRowEncoder] writes them as "NaN",
// "Infinity" and "-Infinity", which [messages.JSONDecoder] reads back. A
// [Range] refuses them.
type Contract struct {
	Schema  *arrow.Schema
	Version int
	Rules   []Rule
}

// Rule is a row rule of a contract. Rules are evaluated a batch at a time.
type Rule struct {
	// Name identifies the rule in dead letters and counts, e.g.
	// "amount in [0, 10000]".
	Name string
	// violations returns, for each row of rec, whether the row breaks the
	// rule.
	violations func(ctx context.Context, mem memory.Allocator, rec arrow.RecordBatch) ([]bool, error)
	column     string
}

// NotNull requires column to hold a value.
func NotNull(column string) Rule {
	return Rule{Name: column + " not null", column: column, violations: func(_ context.Context, _ memory.Allocator, rec arrow.RecordBatch) ([]bool, error) {
		col, err := column1(rec, column)
		if err != nil {
			return nil, err
		}
		out := make([]bool, col.Len())
		for i := range out {
			out[i] = col.IsNull(i)
		}
		return out, nil
	}}
}

// Range requires column to be within [min, max] (nulls pass: combine with
// NotNull to forbid them). A float must also be finite: NaN and ±Inf break
// a range whatever its bounds.
func Range(column string, min, max any) Rule {
	name := fmt.Sprintf("%s in [%v, %v]", column, min, max)
	// Written as "min <= x and x <= max", which is false for NaN (IEEE 754:
	// every comparison with NaN is false), not as "x < min or x > max".
	within := exprRule(name, expr.Col(column).Ge(min).And(expr.Col(column).Le(max)), false)
	return Rule{Name: name, column: column, violations: func(ctx context.Context, mem memory.Allocator, rec arrow.RecordBatch) ([]bool, error) {
		out, err := within.violations(ctx, mem, rec)
		if err != nil {
			return nil, err
		}
		col, err := column1(rec, column)
		if err != nil {
			return nil, err
		}
		switch a := col.(type) {
		case *array.Float64:
			markNonFinite(out, a, func(i int) float64 { return a.Value(i) })
		case *array.Float32:
			markNonFinite(out, a, func(i int) float64 { return float64(a.Value(i)) })
		case *array.Float16:
			markNonFinite(out, a, func(i int) float64 { return float64(a.Value(i).Float32()) })
		}
		return out, nil
	}}
}

func markNonFinite(out []bool, a arrow.Array, value func(int) float64) {
	for i := range out {
		if f := value(i); a.IsValid(i) && (math.IsNaN(f) || math.IsInf(f, 0)) {
			out[i] = true
		}
	}
}

// OneOf requires column's value to be one of values (nulls pass).
func OneOf(column string, values ...any) Rule {
	strs := make([]string, len(values))
	for i, v := range values {
		strs[i] = fmt.Sprint(v)
	}
	name := fmt.Sprintf("%s one of [%s]", column, strings.Join(strs, ", "))
	var pred expr.Expr
	for _, v := range values {
		if pred == nil {
			pred = expr.Col(column).Eq(v)
		} else {
			pred = pred.Or(expr.Col(column).Eq(v))
		}
	}
	if pred == nil {
		pred = expr.Lit(false)
	}
	r := exprRule(name, pred, false)
	r.column = column
	return r
}

// Pattern requires a string column to match the regular expression (nulls
// pass).
func Pattern(column string, re *regexp.Regexp) Rule {
	return Rule{Name: fmt.Sprintf("%s matches %s", column, re), column: column,
		violations: func(_ context.Context, _ memory.Allocator, rec arrow.RecordBatch) ([]bool, error) {
			col, err := column1(rec, column)
			if err != nil {
				return nil, err
			}
			s, ok := col.(*array.String)
			if !ok {
				return nil, fmt.Errorf("column %q is %s, a pattern needs utf8", column, col.DataType())
			}
			out := make([]bool, s.Len())
			for i := range out {
				out[i] = s.IsValid(i) && !re.MatchString(s.Value(i))
			}
			return out, nil
		}}
}

// Check requires the boolean expression pred not to be false (a null
// result passes, as in SQL CHECK constraints), e.g. Check("paid orders have an amount",
// Col("paid").Not().Or(Col("amount").Gt(0))).
//
// Comparisons follow IEEE 754: every comparison with NaN is false but Ne,
// so Col("x").Le(100) refuses a NaN x while Col("x").Gt(100).Not() lets it
// through. State what must hold, not the negation of what must not.
func Check(name string, pred expr.Expr) Rule { return exprRule(name, pred, false) }

// exprRule: with violating set, a true result of e is a violation;
// otherwise a false one is. Null results pass.
func exprRule(name string, e expr.Expr, violating bool) Rule {
	// The expression is bound once per schema; boundary instances running
	// in parallel share the rule, hence the lock.
	var (
		mu     sync.Mutex
		schema *arrow.Schema
		bound  expr.Bound
	)
	bind := func(s *arrow.Schema) (expr.Bound, error) {
		mu.Lock()
		defer mu.Unlock()
		if bound != nil && (schema == s || schema.Equal(s)) {
			return bound, nil
		}
		b, err := expr.Bind(e, s)
		if err != nil {
			return nil, err
		}
		if b.DataType().ID() != arrow.BOOL {
			return nil, fmt.Errorf("%s is %s, not boolean", e, b.DataType())
		}
		schema, bound = s, b
		return b, nil
	}
	return Rule{Name: name, violations: func(ctx context.Context, mem memory.Allocator, rec arrow.RecordBatch) ([]bool, error) {
		b, err := bind(rec.Schema())
		if err != nil {
			return nil, err
		}
		res, err := b.Eval(ctx, mem, rec)
		if err != nil {
			return nil, &evalError{err}
		}
		defer res.Release()
		m := res.(*array.Boolean)
		out := make([]bool, m.Len())
		for i := range out {
			// Unknown (null) passes, as in SQL CHECK constraints.
			out[i] = m.IsValid(i) && m.Value(i) == violating
		}
		return out, nil
	}}
}

// evalError is a rule that failed on the values of a batch, not on its
// schema.
type evalError struct{ err error }

func (e *evalError) Error() string { return e.err.Error() }
func (e *evalError) Unwrap() error { return e.err }

// rowByRow evaluates r on each row of rec alone. A row the rule cannot
// evaluate breaks it, with the error as its reason.
func (r Rule) rowByRow(ctx context.Context, mem memory.Allocator, rec arrow.RecordBatch) ([]bool, []string, error) {
	n := int(rec.NumRows())
	out := make([]bool, n)
	reasons := make([]string, n)
	for i := range n {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		one := rec.NewSlice(int64(i), int64(i+1))
		v, err := r.violations(ctx, mem, one)
		one.Release()
		var ee *evalError
		switch {
		case errors.As(err, &ee):
			out[i], reasons[i] = true, ee.Error()
		case err != nil:
			return nil, nil, err
		default:
			out[i] = v[0]
		}
	}
	return out, reasons, nil
}

func column1(rec arrow.RecordBatch, name string) (arrow.Array, error) {
	idx := rec.Schema().FieldIndices(name)
	if len(idx) != 1 {
		return nil, fmt.Errorf("no column %q", name)
	}
	return rec.Column(idx[0]), nil
}

// Violation is a row that broke a contract.
type Violation struct {
	Row   int    // row index in the checked batch
	Rules string // the rules it broke, "; "-separated
}

// Check validates rec (borrowed) against the contract. A batch whose schema
// differs is refused whole (an error naming the difference). Otherwise it
// returns the rows that keep every rule as a new batch of the contract's
// schema, owned by the caller,
// and the rows that do not, with the rules they broke. A rule that cannot
// be evaluated on a row's values (an integer overflow, a division by zero)
// is broken by that row alone, the error following the rule's name.
// Broken schema requirements are named "<path> not null" and "<path> is
// valid UTF-8".
func (c *Contract) Check(ctx context.Context, mem memory.Allocator, rec arrow.RecordBatch) (arrow.RecordBatch, []Violation, error) {
	if err := messages.CheckSchema(c.Schema, rec.Schema()); err != nil {
		return nil, nil, fmt.Errorf("contract v%d: %w", c.Version, err)
	}
	n := int(rec.NumRows())
	broken := make([][]string, n)
	bad := 0
	// The schema itself: nulls where it forbids them, invalid UTF-8.
	for i, f := range c.Schema.Fields() {
		for row, reason := range schemaViolations(f.Name, f, rec.Column(i)) {
			if reason != "" {
				if broken[row] == nil {
					bad++
				}
				broken[row] = append(broken[row], reason)
			}
		}
	}
	for _, r := range c.Rules {
		v, err := r.violations(ctx, mem, rec)
		var reasons []string
		var ee *evalError
		if errors.As(err, &ee) {
			// A value that the rule cannot evaluate (an integer overflow, a
			// division by zero) fails the whole batch: find its rows, so
			// that only they are refused.
			v, reasons, err = r.rowByRow(ctx, mem, rec)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("contract v%d rule %q: %w", c.Version, r.Name, err)
		}
		for i, broke := range v {
			if broke {
				if broken[i] == nil {
					bad++
				}
				if reasons != nil && reasons[i] != "" {
					broken[i] = append(broken[i], r.Name+" ("+reasons[i]+")")
				} else {
					broken[i] = append(broken[i], r.Name)
				}
			}
		}
	}
	if bad == 0 {
		return c.conform(rec), nil, nil
	}
	keep := memory.NewResizableBuffer(mem)
	keep.Resize(int(bitutil.BytesForBits(int64(n))))
	bits := keep.Bytes()
	clear(bits)
	violations := make([]Violation, 0, bad)
	for i, rs := range broken {
		if rs == nil {
			bitutil.SetBit(bits, i)
		} else {
			violations = append(violations, Violation{Row: i, Rules: strings.Join(rs, "; ")})
		}
	}
	data := array.NewData(arrow.FixedWidthTypes.Boolean, n, []*memory.Buffer{nil, keep}, nil, 0, 0)
	keep.Release()
	mask := array.NewBooleanData(data)
	data.Release()
	defer mask.Release()
	good, err := kernels.Filter(mem, rec, mask)
	if err != nil {
		return nil, nil, err
	}
	defer good.Release()
	return c.conform(good), violations, nil
}

// schemaViolations returns, for each value of arr (a column or child of
// field f, named path), why it breaks the schema ("" when it does not), or
// nil when no value does.
func schemaViolations(path string, f arrow.Field, arr arrow.Array) []string {
	n := arr.Len()
	var out []string
	mark := func(i int, reason string) {
		if out == nil {
			out = make([]string, n)
		}
		if out[i] == "" {
			out[i] = reason
		}
	}
	if !f.Nullable {
		switch {
		case arr.DataType().ID() == arrow.NULL:
			for i := range n { // every value is null, with no bitmap to say so
				mark(i, path+" not null")
			}
		case arr.NullN() > 0 || len(arr.NullBitmapBytes()) > 0:
			// The bitmap, not the count, is what readers go by.
			for i := range n {
				if arr.IsNull(i) {
					mark(i, path+" not null")
				}
			}
		}
	}
	// A null hides its contents: only valid values are looked into.
	switch a := arr.(type) {
	case *array.String:
		for i := range n {
			if a.IsValid(i) && !utf8.ValidString(a.Value(i)) {
				mark(i, path+" is valid UTF-8")
			}
		}
	case *array.LargeString:
		for i := range n {
			if a.IsValid(i) && !utf8.ValidString(a.Value(i)) {
				mark(i, path+" is valid UTF-8")
			}
		}
	case *array.StringView:
		for i := range n {
			if a.IsValid(i) && !utf8.ValidString(a.Value(i)) {
				mark(i, path+" is valid UTF-8")
			}
		}
	case *array.Struct:
		st, ok := f.Type.(*arrow.StructType)
		if !ok {
			break
		}
		for j, cf := range st.Fields() {
			for i, reason := range schemaViolations(path+"."+cf.Name, cf, a.Field(j)) {
				if reason != "" && a.IsValid(i) {
					mark(i, reason)
				}
			}
		}
	case array.ListLike:
		lt, ok := f.Type.(arrow.ListLikeType)
		if !ok {
			break
		}
		elems := schemaViolations(path+"[]", lt.ElemField(), a.ListValues())
		if elems == nil {
			break
		}
		for i := range n {
			if !a.IsValid(i) {
				continue
			}
			start, end := a.ValueOffsets(i)
			for _, reason := range elems[start:end] {
				if reason != "" {
					mark(i, reason)
					break
				}
			}
		}
	case *array.Dictionary:
		dt, ok := f.Type.(*arrow.DictionaryType)
		if !ok {
			break
		}
		values := schemaViolations(path, arrow.Field{Type: dt.ValueType, Nullable: f.Nullable}, a.Dictionary())
		if values == nil {
			break
		}
		for i := range n {
			if a.IsValid(i) {
				if reason := values[a.GetValueIndex(i)]; reason != "" {
					mark(i, reason)
				}
			}
		}
	case array.ExtensionArray:
		et, ok := f.Type.(arrow.ExtensionType)
		if !ok {
			break
		}
		for i, reason := range schemaViolations(path, arrow.Field{Type: et.StorageType(), Nullable: f.Nullable}, a.Storage()) {
			if reason != "" {
				mark(i, reason)
			}
		}
	}
	return out
}

// conform returns a new reference to rec under the contract's schema (the
// rows were checked: not-null columns hold no nulls).
func (c *Contract) conform(rec arrow.RecordBatch) arrow.RecordBatch {
	if rec.Schema() == c.Schema {
		rec.Retain()
		return rec
	}
	return array.NewRecordBatch(c.Schema, rec.Columns(), rec.NumRows())
}
