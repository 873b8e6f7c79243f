package expr

import (
	"context"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/arrow/scalar"

	"github.com/meshflow/meshflow/internal/kernels"
)

// evaluator is a bound node. eval returns an array or, for literals, a
// scalar, which the operators above pass to the kernels' scalar variants
// instead of broadcasting it.
type evaluator interface {
	dataType() arrow.DataType
	eval(mem memory.Allocator, rec arrow.RecordBatch) (datum, error)
}

// datum is an owned array or a scalar.
type datum struct {
	arr arrow.Array
	sc  scalar.Scalar
}

func (d datum) release() {
	if d.arr != nil {
		d.arr.Release()
	}
}

// array returns the datum as an owned array of n rows, broadcasting a
// scalar.
func (d datum) array(mem memory.Allocator, n int) (arrow.Array, error) {
	if d.arr != nil {
		return d.arr, nil
	}
	return broadcast(mem, d.sc, n)
}

func broadcast(mem memory.Allocator, s scalar.Scalar, n int) (a arrow.Array, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("expr: broadcast %s literal: %v", s.DataType(), p)
		}
	}()
	return scalar.MakeArrayFromScalar(s, n, mem)
}

type bound struct{ root evaluator }

func (b *bound) DataType() arrow.DataType { return b.root.dataType() }

func (b *bound) Eval(ctx context.Context, mem memory.Allocator, rec arrow.RecordBatch) (arrow.Array, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d, err := b.root.eval(mem, rec)
	if err != nil {
		return nil, err
	}
	return d.array(mem, int(rec.NumRows()))
}

type colEval struct {
	idx  int
	name string
	dt   arrow.DataType
}

func (c *colEval) dataType() arrow.DataType { return c.dt }

func (c *colEval) eval(_ memory.Allocator, rec arrow.RecordBatch) (datum, error) {
	if c.idx >= int(rec.NumCols()) || rec.Schema().Field(c.idx).Name != c.name {
		return datum{}, errorf(ErrSchema, "batch has no column %q at position %d", c.name, c.idx)
	}
	a := rec.Column(c.idx)
	if !arrow.TypeEqual(a.DataType(), c.dt) {
		return datum{}, errorf(ErrSchema, "column %q is %s, bound as %s", c.name, a.DataType(), c.dt)
	}
	a.Retain()
	return datum{arr: a}, nil
}

type litEval struct{ lit *literal }

func (l *litEval) dataType() arrow.DataType { return l.lit.s.DataType() }

func (l *litEval) eval(memory.Allocator, arrow.RecordBatch) (datum, error) {
	return datum{sc: l.lit.s}, nil
}

// nullEval is a null of a given type: a comparison or arithmetic with a
// null-typed operand.
type nullEval struct{ dt arrow.DataType }

func nullOf(dt arrow.DataType) evaluator { return &nullEval{dt: dt} }

func (n *nullEval) dataType() arrow.DataType { return n.dt }

func (n *nullEval) eval(memory.Allocator, arrow.RecordBatch) (datum, error) {
	return datum{sc: scalar.MakeNullScalar(n.dt)}, nil
}

// evalBoth evaluates both operands; on error nothing is left owned.
func evalBoth(mem memory.Allocator, rec arrow.RecordBatch, l, r evaluator) (datum, datum, error) {
	ld, err := l.eval(mem, rec)
	if err != nil {
		return datum{}, datum{}, err
	}
	rd, err := r.eval(mem, rec)
	if err != nil {
		ld.release()
		return datum{}, datum{}, err
	}
	return ld, rd, nil
}

type cmpEval struct {
	op   kernels.CmpOp
	l, r evaluator
}

func (c *cmpEval) dataType() arrow.DataType { return arrow.FixedWidthTypes.Boolean }

func (c *cmpEval) eval(mem memory.Allocator, rec arrow.RecordBatch) (datum, error) {
	ld, rd, err := evalBoth(scratch(mem), rec, c.l, c.r)
	if err != nil {
		return datum{}, err
	}
	defer ld.release()
	defer rd.release()
	var out *array.Boolean
	switch {
	case ld.arr != nil && rd.arr != nil:
		out, err = kernels.Compare(mem, c.op, ld.arr, rd.arr)
	case ld.arr != nil:
		out, err = kernels.CompareScalar(mem, c.op, ld.arr, rd.sc)
	case rd.arr != nil:
		out, err = kernels.CompareScalar(mem, c.op.Swap(), rd.arr, ld.sc)
	default: // two literals: only while folding constants
		var la arrow.Array
		if la, err = broadcast(mem, ld.sc, int(rec.NumRows())); err == nil {
			out, err = kernels.CompareScalar(mem, c.op, la, rd.sc)
			la.Release()
		}
	}
	if err != nil {
		return datum{}, err
	}
	return datum{arr: out}, nil
}

type arithEval struct {
	op   kernels.ArithOp
	l, r evaluator
	dt   arrow.DataType
}

func (a *arithEval) dataType() arrow.DataType { return a.dt }

func (a *arithEval) eval(mem memory.Allocator, rec arrow.RecordBatch) (datum, error) {
	return evalBinary(mem, rec, a.l, a.r,
		func(l, r arrow.Array) (arrow.Array, error) { return kernels.Arith(mem, a.op, l, r) },
		func(l arrow.Array, r scalar.Scalar) (arrow.Array, error) { return kernels.ArithScalar(mem, a.op, l, r) },
		func(l scalar.Scalar, r arrow.Array) (arrow.Array, error) { return kernels.ScalarArith(mem, a.op, l, r) })
}

// evalBinary evaluates l and r (intermediates in scratch buffers) and
// applies the kernel form that fits them: two arrays, an array and a
// scalar, or a scalar and an array (two scalars: the left broadcast, only
// while folding constants). The result is allocated from mem.
func evalBinary(mem memory.Allocator, rec arrow.RecordBatch, l, r evaluator,
	arrays func(l, r arrow.Array) (arrow.Array, error),
	arrayScalar func(l arrow.Array, r scalar.Scalar) (arrow.Array, error),
	scalarArray func(l scalar.Scalar, r arrow.Array) (arrow.Array, error)) (datum, error) {
	ld, rd, err := evalBoth(scratch(mem), rec, l, r)
	if err != nil {
		return datum{}, err
	}
	defer ld.release()
	defer rd.release()
	var out arrow.Array
	switch {
	case ld.arr != nil && rd.arr != nil:
		out, err = arrays(ld.arr, rd.arr)
	case ld.arr != nil:
		out, err = arrayScalar(ld.arr, rd.sc)
	case rd.arr != nil:
		out, err = scalarArray(ld.sc, rd.arr)
	default:
		var la arrow.Array
		if la, err = broadcast(mem, ld.sc, int(rec.NumRows())); err == nil {
			out, err = arrayScalar(la, rd.sc)
			la.Release()
		}
	}
	if err != nil {
		return datum{}, err
	}
	return datum{arr: out}, nil
}

// boolArray evaluates a boolean operand as an array of the batch length.
func boolArray(mem memory.Allocator, rec arrow.RecordBatch, e evaluator) (*array.Boolean, error) {
	d, err := e.eval(mem, rec)
	if err != nil {
		return nil, err
	}
	a, err := d.array(mem, int(rec.NumRows()))
	if err != nil {
		return nil, err
	}
	b, ok := a.(*array.Boolean)
	if !ok {
		a.Release()
		return nil, errorf(ErrType, "expected boolean, got %s", a.DataType())
	}
	return b, nil
}

type logicEval struct {
	and  bool
	l, r evaluator
}

func (l *logicEval) dataType() arrow.DataType { return arrow.FixedWidthTypes.Boolean }

func (l *logicEval) eval(mem memory.Allocator, rec arrow.RecordBatch) (datum, error) {
	a, err := boolArray(scratch(mem), rec, l.l)
	if err != nil {
		return datum{}, err
	}
	defer a.Release()
	b, err := boolArray(scratch(mem), rec, l.r)
	if err != nil {
		return datum{}, err
	}
	defer b.Release()
	var out *array.Boolean
	if l.and {
		out, err = kernels.And(mem, a, b)
	} else {
		out, err = kernels.Or(mem, a, b)
	}
	if err != nil {
		return datum{}, err
	}
	return datum{arr: out}, nil
}

type notEval struct{ a evaluator }

func (n *notEval) dataType() arrow.DataType { return arrow.FixedWidthTypes.Boolean }

func (n *notEval) eval(mem memory.Allocator, rec arrow.RecordBatch) (datum, error) {
	a, err := boolArray(scratch(mem), rec, n.a)
	if err != nil {
		return datum{}, err
	}
	defer a.Release()
	return datum{arr: kernels.Not(mem, a)}, nil
}

// nullTestEval is IS NULL or IS NOT NULL.
type nullTestEval struct {
	a      evaluator
	isNull bool
}

func (n *nullTestEval) dataType() arrow.DataType { return arrow.FixedWidthTypes.Boolean }

func (n *nullTestEval) eval(mem memory.Allocator, rec arrow.RecordBatch) (datum, error) {
	d, err := n.a.eval(scratch(mem), rec)
	if err != nil {
		return datum{}, err
	}
	defer d.release()
	if d.sc != nil {
		return datum{sc: scalar.NewBooleanScalar(d.sc.IsValid() != n.isNull)}, nil
	}
	data := d.arr.Data()
	rows := data.Len()
	vals := memory.NewResizableBuffer(mem)
	vals.Resize(int(bitutil.BytesForBits(int64(rows))))
	out := vals.Bytes()
	switch valid := validityBits(data); {
	case valid != nil:
		bitutil.CopyBitmap(valid, data.Offset(), rows, out, 0)
		if n.isNull {
			bitutil.InvertBitmap(out, 0, rows, out, 0)
		}
	case (data.NullN() == rows && rows > 0) == n.isNull: // all null (a null-typed array) or none
		fill(out, 0xff)
	default:
		fill(out, 0)
	}
	return datum{arr: newBoolean(rows, nil, vals, 0)}, nil
}

// constBoolEval is a constant boolean that is null where a is null: a
// comparison whose answer the literal alone decides (n = 2.5 on an
// integer column).
type constBoolEval struct {
	a   evaluator
	val bool
}

func (c *constBoolEval) dataType() arrow.DataType { return arrow.FixedWidthTypes.Boolean }

func (c *constBoolEval) eval(mem memory.Allocator, rec arrow.RecordBatch) (datum, error) {
	d, err := c.a.eval(scratch(mem), rec)
	if err != nil {
		return datum{}, err
	}
	defer d.release()
	if d.sc != nil {
		if !d.sc.IsValid() {
			return datum{sc: scalar.MakeNullScalar(arrow.FixedWidthTypes.Boolean)}, nil
		}
		return datum{sc: scalar.NewBooleanScalar(c.val)}, nil
	}
	data := d.arr.Data()
	rows := data.Len()
	nbytes := int(bitutil.BytesForBits(int64(rows)))
	vals := memory.NewResizableBuffer(mem)
	vals.Resize(nbytes)
	if c.val {
		fill(vals.Bytes(), 0xff)
	} else {
		fill(vals.Bytes(), 0)
	}
	var validBuf *memory.Buffer
	nulls := 0
	if valid := validityBits(data); valid != nil {
		validBuf = memory.NewResizableBuffer(mem)
		validBuf.Resize(nbytes)
		bitutil.CopyBitmap(valid, data.Offset(), rows, validBuf.Bytes(), 0)
		nulls = data.NullN()
	}
	return datum{arr: newBoolean(rows, validBuf, vals, nulls)}, nil
}

// validityBits returns data's validity bitmap (read at data.Offset()), or
// nil when it has no nulls or no bitmap.
func validityBits(data arrow.ArrayData) []byte {
	if data.NullN() == 0 || len(data.Buffers()) == 0 || data.Buffers()[0] == nil {
		return nil
	}
	return data.Buffers()[0].Bytes()
}

func fill(b []byte, v byte) {
	for i := range b {
		b[i] = v
	}
}

// newBoolean assembles a boolean array, taking over the buffer references.
func newBoolean(n int, valid, vals *memory.Buffer, nulls int) *array.Boolean {
	data := array.NewData(arrow.FixedWidthTypes.Boolean, n, []*memory.Buffer{valid, vals}, nil, nulls, 0)
	vals.Release()
	if valid != nil {
		valid.Release()
	}
	defer data.Release()
	return array.NewBooleanData(data)
}
