package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/nexmark"
)

func testBatch(t *testing.T, mem memory.Allocator) arrow.RecordBatch {
	t.Helper()
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "name", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "score", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
		{Name: "at", Type: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}},
		{Name: "ok", Type: arrow.FixedWidthTypes.Boolean},
	}, nil)
	b := array.NewRecordBuilder(mem, schema)
	defer b.Release()
	at := time.Date(2024, 1, 1, 0, 0, 1, 500e6, time.UTC).UnixMilli()
	b.Field(0).(*array.Int64Builder).AppendValues([]int64{1, 22, 333}, nil)
	b.Field(1).(*array.StringBuilder).AppendValues([]string{"a", "", "tab\there"}, []bool{true, false, true})
	b.Field(2).(*array.Float64Builder).AppendValues([]float64{0.5, 0, 12}, []bool{true, false, true})
	b.Field(3).(*array.TimestampBuilder).AppendValues([]arrow.Timestamp{arrow.Timestamp(at), arrow.Timestamp(at + 1), arrow.Timestamp(at + 2)}, nil)
	b.Field(4).(*array.BooleanBuilder).AppendValues([]bool{true, false, true}, nil)
	return b.NewRecordBatch()
}

func TestTablePrinter(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rec := testBatch(t, mem)
	defer rec.Release()

	var out bytes.Buffer
	p := newRowPrinter(&out, outputTable)
	if err := p.Batch(rec); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	want := `id   name       score  at                        ok
1    a          0.5    2024-01-01T00:00:01.500Z  true
22   NULL       NULL   2024-01-01T00:00:01.501Z  false
333  tab\there  12     2024-01-01T00:00:01.502Z  true
`
	if got := out.String(); got != want {
		t.Fatalf("table:\n%s\nwant:\n%s", got, want)
	}
}

func TestTablePrinterStaysAligned(t *testing.T) {
	var out bytes.Buffer
	p := newRowPrinter(&out, outputTable)
	for _, obj := range []string{
		`{"auction": 1000, "price": 12, "channel": "Google"}`,
		`{"price": 7, "auction": 1001, "extra": [1, 2]}`,
		`{"auction": null, "price": 3.5, "channel": "Baidu"}`,
	} {
		if err := p.Object([]byte(obj)); err != nil {
			t.Fatal(err)
		}
		// A flush per message, as tail does.
		if err := p.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	want := `auction  price  channel
1000     12     Google
1001     7      NULL
NULL     3.5    Baidu
`
	if got := out.String(); got != want {
		t.Fatalf("table:\n%s\nwant:\n%s", got, want)
	}
}

func TestTablePrinterNotAnObject(t *testing.T) {
	var out bytes.Buffer
	p := newRowPrinter(&out, outputTable)
	for _, msg := range []string{`{"a":1}`, "plain text", `[1,2]`, `{"a":2}`} {
		if err := p.Object([]byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	want := "a\n1\nplain text\n[1,2]\n2\n"
	if got := out.String(); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestJSONPrinter(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	gen := nexmark.NewGenerator(nexmark.Config{Seed: 5})
	rec := gen.NextBatch(mem, 3)
	defer rec.Release()

	var out bytes.Buffer
	p := newRowPrinter(&out, outputJSON)
	if err := p.Batch(rec); err != nil {
		t.Fatal(err)
	}
	if err := p.Object([]byte(`  {"raw": true}  `)); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines:\n%s", len(lines), out.String())
	}
	want := nexmark.NewGenerator(nexmark.Config{Seed: 5})
	for i, l := range lines[:3] {
		var got map[string]any
		if err := json.Unmarshal([]byte(l), &got); err != nil {
			t.Fatalf("line %d: %v: %s", i, err, l)
		}
		b := want.NextBid()
		if got["auction"] != float64(b.Auction) || got["price"] != float64(b.Price) || got["channel"] != b.Channel {
			t.Errorf("line %d: %s, want %+v", i, l, b)
		}
	}
	if lines[3] != `{"raw": true}` {
		t.Errorf("object line %q", lines[3])
	}
}

func TestFormatValueTimestamps(t *testing.T) {
	at := arrow.Timestamp(time.Date(2024, 3, 4, 5, 6, 7, 891011121, time.UTC).UnixNano())
	for _, tc := range []struct {
		dt   *arrow.TimestampType
		want string
	}{
		{&arrow.TimestampType{Unit: arrow.Nanosecond, TimeZone: "UTC"}, "2024-03-04T05:06:07.891011121Z"},
		{&arrow.TimestampType{Unit: arrow.Nanosecond}, "2024-03-04T05:06:07.891011121"},
		{&arrow.TimestampType{Unit: arrow.Nanosecond, TimeZone: "+01:00"}, "2024-03-04T06:06:07.891011121+01:00"},
	} {
		if got := formatTimestamp(at, tc.dt); got != tc.want {
			t.Errorf("%v: %s, want %s", tc.dt, got, tc.want)
		}
	}
}

func TestOutputFlag(t *testing.T) {
	var o outputFormat
	for _, ok := range []string{"table", "json", "JSON"} {
		if err := o.Set(ok); err != nil {
			t.Errorf("Set(%q): %v", ok, err)
		}
	}
	if err := o.Set("yaml"); err == nil {
		t.Error("Set(yaml) accepted")
	}
}
