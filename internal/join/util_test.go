package join

import (
	"fmt"
	"slices"
	"strconv"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/testutil"
)

func seed(t testing.TB) uint64 { t.Helper(); return testutil.Seed(t) }

var (
	tsType = &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}
	// Left: string key, timestamp time; right: string key, int64 time.
	leftSchema = arrow.NewSchema([]arrow.Field{
		{Name: "key", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "ts", Type: tsType, Nullable: true},
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
	}, nil)
	rightSchema = arrow.NewSchema([]arrow.Field{
		{Name: "key", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "t", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "name", Type: arrow.BinaryTypes.String, Nullable: true},
	}, nil)
)

// row is a test row of either side; id is unique across both.
type row struct {
	key *string
	ts  *int64
	id  int64
}

func sp(s string) *string { return &s }
func ip(v int64) *int64   { return &v }

func build(mem memory.Allocator, schema *arrow.Schema, rows []row) arrow.RecordBatch {
	b := array.NewRecordBuilder(mem, schema)
	defer b.Release()
	for _, r := range rows {
		if r.key == nil {
			b.Field(0).AppendNull()
		} else {
			b.Field(0).(*array.StringBuilder).Append(*r.key)
		}
		switch {
		case r.ts == nil:
			b.Field(1).AppendNull()
		case schema.Field(1).Type.ID() == arrow.TIMESTAMP:
			b.Field(1).(*array.TimestampBuilder).Append(arrow.Timestamp(*r.ts))
		default:
			b.Field(1).(*array.Int64Builder).Append(*r.ts)
		}
		b.Field(2).(*array.Int64Builder).Append(r.id)
		if schema.NumFields() > 3 {
			b.Field(3).(*array.StringBuilder).Append("n" + strconv.FormatInt(r.id, 10))
		}
	}
	return b.NewRecordBatch()
}

// pairsOf reads the (left id, right id) pairs of out, checking that the
// right side's other columns came with the right row.
func pairsOf(t *testing.T, out arrow.RecordBatch, lid, rid string) []string {
	t.Helper()
	if out == nil {
		return nil
	}
	col := func(name string) arrow.Array {
		idx := out.Schema().FieldIndices(name)
		if len(idx) != 1 {
			t.Fatalf("no column %q in %s", name, out.Schema())
		}
		return out.Column(idx[0])
	}
	l, r := col(lid).(*array.Int64), col(rid).(*array.Int64)
	names := col("name").(*array.String)
	var ps []string
	for i := range int(out.NumRows()) {
		if r.IsNull(i) {
			ps = append(ps, fmt.Sprintf("%d-", l.Value(i)))
			if names.IsValid(i) {
				t.Fatalf("row %d: unmatched, name %q", i, names.Value(i))
			}
			continue
		}
		if want := "n" + strconv.FormatInt(r.Value(i), 10); names.Value(i) != want {
			t.Fatalf("row %d: right id %d with name %q", i, r.Value(i), names.Value(i))
		}
		ps = append(ps, fmt.Sprintf("%d-%d", l.Value(i), r.Value(i)))
	}
	return ps
}

func sameSet(t *testing.T, got, want []string) {
	t.Helper()
	slices.Sort(got)
	slices.Sort(want)
	if slices.Equal(got, want) {
		return
	}
	count := map[string]int{}
	for _, g := range got {
		count[g]++
	}
	for _, w := range want {
		count[w]--
	}
	var extra, missing []string
	for k, c := range count {
		for ; c > 0; c-- {
			extra = append(extra, k)
		}
		for ; c < 0; c++ {
			missing = append(missing, k)
		}
	}
	t.Fatalf("%d pairs, want %d: extra %v, missing %v", len(got), len(want), extra, missing)
}
