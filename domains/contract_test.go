package domains_test

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/domains"
	"github.com/meshflow/meshflow/internal/expr"
	"github.com/meshflow/meshflow/messages"
)

var orderSchema = arrow.NewSchema([]arrow.Field{
	{Name: "id", Type: arrow.PrimitiveTypes.Int64},
	{Name: "amount", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
	{Name: "currency", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "email", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "paid", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
}, nil)

func decode(t *testing.T, mem memory.Allocator, lines ...string) arrow.RecordBatch {
	t.Helper()
	dec, err := messages.NewJSONDecoder(mem, arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64, Nullable: true}, // nulls reach the contract
		orderSchema.Field(1), orderSchema.Field(2), orderSchema.Field(3), orderSchema.Field(4),
	}, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Release()
	for _, l := range lines {
		if err := dec.Append([]byte(l)); err != nil {
			t.Fatalf("%s: %v", l, err)
		}
	}
	rec := dec.NewBatch()
	defer rec.Release()
	// Present it under the contract's schema, as a boundary sees it.
	return array.NewRecordBatch(orderSchema, rec.Columns(), rec.NumRows())
}

func TestContractRules(t *testing.T) {
	contract := domains.Contract{Schema: orderSchema, Version: 1, Rules: []domains.Rule{
		domains.Range("amount", 0, 10_000),
		domains.OneOf("currency", "EUR", "USD"),
		domains.Pattern("email", regexp.MustCompile(`^[^@\s]+@[^@\s]+$`)),
		domains.NotNull("paid"),
		domains.Check("paid orders have an amount", expr.Col("paid").Not().Or(expr.Col("amount").Gt(0))),
	}}
	cases := []struct {
		name, row, broken string // broken == "": a good row
	}{
		{"good", `{"id":1,"amount":10,"currency":"EUR","email":"a@b.c","paid":true}`, ""},
		{"good with nulls", `{"id":2,"paid":false}`, ""},
		{"range low", `{"id":3,"amount":-1,"paid":false}`, "amount in [0, 10000]"},
		{"range high", `{"id":4,"amount":10000.5,"paid":false}`, "amount in [0, 10000]"},
		{"range edge", `{"id":5,"amount":10000,"paid":false}`, ""},
		{"one of", `{"id":6,"currency":"GBP","paid":false}`, "currency one of [EUR, USD]"},
		{"pattern", `{"id":7,"email":"not an email","paid":false}`, `email matches ^[^@\s]+@[^@\s]+$`},
		{"not null rule", `{"id":8}`, "paid not null"},
		{"not null schema", `{"paid":false}`, "id not null"},
		{"custom", `{"id":9,"amount":0,"paid":true}`, "paid orders have an amount"},
		{"several", `{"id":10,"amount":-5,"currency":"XXX","paid":true}`, "amount in [0, 10000]; currency one of [EUR, USD]; paid orders have an amount"},
	}
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	var lines []string
	for _, c := range cases {
		lines = append(lines, c.row)
	}
	rec := decode(t, mem, lines...)
	defer rec.Release()
	good, bad, err := contract.Check(context.Background(), mem, rec)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Release()
	byRow := map[int]string{}
	for _, v := range bad {
		byRow[v.Row] = v.Rules
	}
	var wantGood []int64
	for i, c := range cases {
		if byRow[i] != c.broken {
			t.Errorf("%s: broke %q, want %q", c.name, byRow[i], c.broken)
		}
		if c.broken == "" {
			wantGood = append(wantGood, rec.Column(0).(*array.Int64).Value(i))
		}
	}
	gotGood := good.Column(0).(*array.Int64).Int64Values()
	if len(bad)+int(good.NumRows()) != len(cases) || len(gotGood) != len(wantGood) {
		t.Fatalf("%d good + %d bad rows of %d", good.NumRows(), len(bad), len(cases))
	}
	for i := range wantGood {
		if gotGood[i] != wantGood[i] {
			t.Fatalf("good rows %v, want %v", gotGood, wantGood)
		}
	}
}

func TestContractSchemaMismatch(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	other := arrow.NewSchema([]arrow.Field{{Name: "id", Type: arrow.BinaryTypes.String}}, nil)
	b := array.NewRecordBuilder(mem, other)
	b.Field(0).(*array.StringBuilder).Append("x")
	rec := b.NewRecordBatch()
	b.Release()
	defer rec.Release()
	c := domains.Contract{Schema: orderSchema, Version: 3}
	if _, _, err := c.Check(context.Background(), mem, rec); err == nil || !strings.Contains(err.Error(), "contract v3: schema mismatch") {
		t.Fatalf("got %v", err)
	}
}
