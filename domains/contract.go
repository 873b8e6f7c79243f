package domains

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync"

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
// NotNull to forbid them).
func Range(column string, min, max any) Rule {
	e := expr.Col(column).Lt(min).Or(expr.Col(column).Gt(max))
	r := exprRule(fmt.Sprintf("%s in [%v, %v]", column, min, max), e, true)
	r.column = column
	return r
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
			return nil, err
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
// and the rows that do not, with the rules they broke.
func (c *Contract) Check(ctx context.Context, mem memory.Allocator, rec arrow.RecordBatch) (arrow.RecordBatch, []Violation, error) {
	if err := messages.CheckSchema(c.Schema, rec.Schema()); err != nil {
		return nil, nil, fmt.Errorf("contract v%d: %w", c.Version, err)
	}
	n := int(rec.NumRows())
	broken := make([][]string, n)
	bad := 0
	// Schema-level not-null: a non-nullable field must hold no nulls.
	rules := make([]Rule, 0, len(c.Rules)+c.Schema.NumFields())
	for _, f := range c.Schema.Fields() {
		if !f.Nullable {
			rules = append(rules, NotNull(f.Name))
		}
	}
	rules = append(rules, c.Rules...)
	for _, r := range rules {
		v, err := r.violations(ctx, mem, rec)
		if err != nil {
			return nil, nil, fmt.Errorf("contract v%d rule %q: %w", c.Version, r.Name, err)
		}
		for i, broke := range v {
			if broke {
				if broken[i] == nil {
					bad++
				}
				broken[i] = append(broken[i], r.Name)
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

// conform returns a new reference to rec under the contract's schema (the
// rows were checked: not-null columns hold no nulls).
func (c *Contract) conform(rec arrow.RecordBatch) arrow.RecordBatch {
	if rec.Schema() == c.Schema {
		rec.Retain()
		return rec
	}
	return array.NewRecordBatch(c.Schema, rec.Columns(), rec.NumRows())
}
