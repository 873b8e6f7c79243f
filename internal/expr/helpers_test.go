package expr_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/expr"
)

// Test values are Go values, nil for null: int64 for signed integers and
// temporal types (their raw ticks), uint64, float64, string (also for
// binary), bool.

// build returns an array of type dt holding vals.
func build(mem memory.Allocator, dt arrow.DataType, vals []any) arrow.Array {
	b := array.NewBuilder(mem, dt)
	defer b.Release()
	for _, v := range vals {
		if v == nil {
			b.AppendNull()
			continue
		}
		switch b := b.(type) {
		case *array.Int8Builder:
			b.Append(int8(v.(int64)))
		case *array.Int16Builder:
			b.Append(int16(v.(int64)))
		case *array.Int32Builder:
			b.Append(int32(v.(int64)))
		case *array.Int64Builder:
			b.Append(v.(int64))
		case *array.Uint8Builder:
			b.Append(uint8(v.(uint64)))
		case *array.Uint16Builder:
			b.Append(uint16(v.(uint64)))
		case *array.Uint32Builder:
			b.Append(uint32(v.(uint64)))
		case *array.Uint64Builder:
			b.Append(v.(uint64))
		case *array.Float32Builder:
			b.Append(float32(v.(float64)))
		case *array.Float64Builder:
			b.Append(v.(float64))
		case *array.Date32Builder:
			b.Append(arrow.Date32(v.(int64)))
		case *array.Date64Builder:
			b.Append(arrow.Date64(v.(int64)))
		case *array.TimestampBuilder:
			b.Append(arrow.Timestamp(v.(int64)))
		case *array.DurationBuilder:
			b.Append(arrow.Duration(v.(int64)))
		case *array.StringBuilder:
			b.Append(v.(string))
		case *array.LargeStringBuilder:
			b.Append(v.(string))
		case *array.BinaryBuilder:
			b.Append([]byte(v.(string)))
		case *array.BooleanBuilder:
			b.Append(v.(bool))
		default:
			panic(fmt.Sprintf("build: %T", b))
		}
	}
	return b.NewArray()
}

// valuesOf reads an array back into test values.
func valuesOf(a arrow.Array) []any {
	out := make([]any, a.Len())
	for i := range out {
		if a.IsNull(i) {
			continue
		}
		switch a := a.(type) {
		case *array.Int8:
			out[i] = int64(a.Value(i))
		case *array.Int16:
			out[i] = int64(a.Value(i))
		case *array.Int32:
			out[i] = int64(a.Value(i))
		case *array.Int64:
			out[i] = a.Value(i)
		case *array.Uint8:
			out[i] = uint64(a.Value(i))
		case *array.Uint16:
			out[i] = uint64(a.Value(i))
		case *array.Uint32:
			out[i] = uint64(a.Value(i))
		case *array.Uint64:
			out[i] = a.Value(i)
		case *array.Float32:
			out[i] = float64(a.Value(i))
		case *array.Float64:
			out[i] = a.Value(i)
		case *array.Date32:
			out[i] = int64(a.Value(i))
		case *array.Date64:
			out[i] = int64(a.Value(i))
		case *array.Timestamp:
			out[i] = int64(a.Value(i))
		case *array.Duration:
			out[i] = int64(a.Value(i))
		case *array.String:
			out[i] = a.Value(i)
		case *array.LargeString:
			out[i] = a.Value(i)
		case *array.Binary:
			out[i] = string(a.Value(i))
		case *array.Boolean:
			out[i] = a.Value(i)
		case *array.Null:
		default:
			panic(fmt.Sprintf("valuesOf: %T", a))
		}
	}
	return out
}

// same reports whether two test values are equal (NaN equals NaN).
func same(a, b any) bool {
	fa, okA := a.(float64)
	fb, okB := b.(float64)
	if okA && okB {
		return fa == fb && math.Signbit(fa) == math.Signbit(fb) || math.IsNaN(fa) && math.IsNaN(fb)
	}
	return a == b
}

func show(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return strconv.Quote(v)
	}
	return fmt.Sprint(v)
}

func showAll(vals []any) string {
	parts := make([]string, len(vals))
	for i, v := range vals {
		parts[i] = show(v)
	}
	return strings.Join(parts, " ")
}

// checkValues compares an array with expected values, and its null count
// with its bitmap.
func checkValues(t testing.TB, what string, got arrow.Array, want []any) {
	t.Helper()
	nulls := 0
	for i := range got.Len() {
		if got.IsNull(i) {
			nulls++
		}
	}
	if got.NullN() != nulls && got.DataType().ID() != arrow.NULL { // null arrays have no bitmap
		t.Fatalf("%s: NullN() = %d, bitmap has %d nulls", what, got.NullN(), nulls)
	}
	vals := valuesOf(got)
	if len(vals) != len(want) {
		t.Fatalf("%s: %d rows, want %d", what, len(vals), len(want))
	}
	for i := range vals {
		if !same(vals[i], want[i]) {
			t.Fatalf("%s: row %d = %s, want %s\n got %s\nwant %s", what, i, show(vals[i]), show(want[i]), showAll(vals), showAll(want))
		}
	}
}

// newBatch builds a batch from columns of test values.
func newBatch(mem memory.Allocator, fields []arrow.Field, cols [][]any) arrow.RecordBatch {
	arrs := make([]arrow.Array, len(fields))
	for i, f := range fields {
		arrs[i] = build(mem, f.Type, cols[i])
	}
	n := 0
	if len(cols) > 0 {
		n = len(cols[0])
	}
	rec := array.NewRecordBatch(arrow.NewSchema(fields, nil), arrs, int64(n))
	for _, a := range arrs {
		a.Release()
	}
	return rec
}

// eval binds e to rec's schema and evaluates it, checking that the result
// has the bound type and the batch's length.
func eval(t testing.TB, mem memory.Allocator, e expr.Expr, rec arrow.RecordBatch) (arrow.Array, error) {
	t.Helper()
	b, err := expr.Bind(e, rec.Schema())
	if err != nil {
		return nil, err
	}
	out, err := b.Eval(context.Background(), mem, rec)
	checkScratch(t, e)
	if err != nil {
		return nil, err
	}
	if !arrow.TypeEqual(out.DataType(), b.DataType()) {
		out.Release()
		t.Fatalf("%s: Eval gave %s, DataType says %s", e, out.DataType(), b.DataType())
	}
	if out.Len() != int(rec.NumRows()) {
		out.Release()
		t.Fatalf("%s: %d rows for a batch of %d", e, out.Len(), rec.NumRows())
	}
	return out, nil
}

// newRand returns a seeded generator; the seed is logged and can be fixed
// with MESHFLOW_SEED.
func newRand(t testing.TB) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("MESHFLOW_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("MESHFLOW_SEED: %v", err)
		}
	}
	t.Logf("seed %d (rerun with MESHFLOW_SEED=%[1]d)", seed)
	return rand.New(rand.NewPCG(seed, 0x65787072))
}

// checkScratch fails t when an evaluation left intermediate buffers
// unreleased (the checked allocator only sees results).
func checkScratch(t testing.TB, e expr.Expr) {
	t.Helper()
	if n := expr.ScratchLive(); n != 0 {
		t.Fatalf("%s: %d intermediate buffers not released", e, n)
	}
}
