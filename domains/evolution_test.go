package domains_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/meshflow/meshflow/domains"
)

func TestCheckEvolution(t *testing.T) {
	f := func(name string, dt arrow.DataType, nullable bool) arrow.Field {
		return arrow.Field{Name: name, Type: dt, Nullable: nullable}
	}
	i64, str := arrow.PrimitiveTypes.Int64, arrow.BinaryTypes.String
	running := domains.Contract{Version: 1, Schema: arrow.NewSchema([]arrow.Field{f("id", i64, false), f("customer", str, false), f("note", str, true)}, nil)}
	consumers := []string{"analytics.orders", "payments.orders"}
	cases := []struct {
		name    string
		next    domains.Contract
		refused []string // empty: accepted
	}{
		{"same", running, nil},
		{"nullable column added", domains.Contract{Version: 2, Schema: arrow.NewSchema([]arrow.Field{f("id", i64, false), f("customer", str, false), f("note", str, true), f("coupon", str, true)}, nil)}, nil},
		{"made stricter", domains.Contract{Version: 2, Schema: arrow.NewSchema([]arrow.Field{f("id", i64, false), f("customer", str, false), f("note", str, false)}, nil)}, nil},
		{"removed", domains.Contract{Version: 2, Schema: arrow.NewSchema([]arrow.Field{f("id", i64, false), f("note", str, true)}, nil)},
			[]string{`orders.placed v1 -> v2: column "customer" removed (would break consumers analytics.orders, payments.orders)`}},
		{"retyped", domains.Contract{Version: 2, Schema: arrow.NewSchema([]arrow.Field{f("id", str, false), f("customer", str, false), f("note", str, true)}, nil)},
			[]string{`column "id" retyped from int64 to utf8`}},
		{"made nullable", domains.Contract{Version: 2, Schema: arrow.NewSchema([]arrow.Field{f("id", i64, true), f("customer", str, false), f("note", str, true)}, nil)},
			[]string{`column "id" made nullable`}},
		{"not-null column added", domains.Contract{Version: 2, Schema: arrow.NewSchema([]arrow.Field{f("id", i64, false), f("customer", str, false), f("note", str, true), f("x", i64, false)}, nil)},
			[]string{`column "x" added as not nullable`}},
		{"version not raised", domains.Contract{Version: 1, Schema: arrow.NewSchema([]arrow.Field{f("id", i64, false), f("customer", str, false), f("note", str, true), f("coupon", str, true)}, nil)},
			[]string{"schema changed but version 1 is not above the running 1"}},
		{"several", domains.Contract{Version: 3, Schema: arrow.NewSchema([]arrow.Field{f("id", str, false)}, nil)},
			[]string{`"id" retyped`, `"customer" removed`, `"note" removed`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := domains.CheckEvolution("orders", "placed", running, tc.next, consumers)
			if len(tc.refused) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, domains.ErrIncompatible) {
				t.Fatalf("got %v, want ErrIncompatible", err)
			}
			for _, want := range tc.refused {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}
