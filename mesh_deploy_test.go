package meshflow_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/domains"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
)

// TestDeployChecksContracts: deploying a new version of a domain is
// checked against the running contracts; a removed or retyped column is
// refused naming the column and the consumer, a new nullable column is
// accepted.
func TestDeployChecksContracts(t *testing.T) {
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	mesh := func(c domains.Contract) []*meshflow.Domain {
		producer := &meshflow.Domain{
			Domain: domains.Domain{Name: "orders", Owner: "o",
				Inputs:  []domains.Input{{Name: "events", Contract: c}},
				Outputs: []domains.Output{{Name: "placed", Contract: c}}},
			Build: func(b *meshflow.DomainPipeline) { b.Output("placed", b.Input("events")) },
		}
		consumer := &meshflow.Domain{
			Domain: domains.Domain{Name: "analytics", Owner: "a",
				Inputs:  []domains.Input{{Name: "orders", From: "orders.placed", Contract: c}},
				Outputs: []domains.Output{{Name: "copy", Contract: c}}},
			Build: func(b *meshflow.DomainPipeline) { b.Output("copy", b.Input("orders")) },
		}
		return []*meshflow.Domain{producer, consumer}
	}
	deploy := func(c domains.Contract) error {
		m, err := meshflow.NewMesh(mesh(c), meshflow.WithNATS(nc), meshflow.WithLogger(testutil.TestLogger(t)))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		err = m.Run(ctx)
		if errors.Is(err, context.DeadlineExceeded) {
			return nil // it ran
		}
		return err
	}
	field := func(name string, dt arrow.DataType, nullable bool) arrow.Field {
		return arrow.Field{Name: name, Type: dt, Nullable: nullable}
	}
	v1 := domains.Contract{Version: 1, Schema: arrow.NewSchema([]arrow.Field{
		field("id", arrow.PrimitiveTypes.Int64, false), field("amount", arrow.PrimitiveTypes.Float64, false)}, nil)}
	if err := deploy(v1); err != nil {
		t.Fatalf("first deployment: %v", err)
	}
	retyped := domains.Contract{Version: 2, Schema: arrow.NewSchema([]arrow.Field{
		field("id", arrow.BinaryTypes.String, false), field("amount", arrow.PrimitiveTypes.Float64, false)}, nil)}
	err := deploy(retyped)
	if !errors.Is(err, domains.ErrIncompatible) || !strings.Contains(err.Error(), `orders.placed v1 -> v2: column "id" retyped from int64 to utf8 (would break consumers analytics.orders)`) {
		t.Fatalf("retyped column: %v", err)
	}
	added := domains.Contract{Version: 2, Schema: arrow.NewSchema([]arrow.Field{
		field("id", arrow.PrimitiveTypes.Int64, false), field("amount", arrow.PrimitiveTypes.Float64, false),
		field("coupon", arrow.BinaryTypes.String, true)}, nil)}
	if err := deploy(added); err != nil {
		t.Fatalf("nullable column added: %v", err)
	}
	removed := domains.Contract{Version: 3, Schema: arrow.NewSchema([]arrow.Field{
		field("id", arrow.PrimitiveTypes.Int64, false), field("coupon", arrow.BinaryTypes.String, true)}, nil)}
	err = deploy(removed)
	if !errors.Is(err, domains.ErrIncompatible) || !strings.Contains(err.Error(), `column "amount" removed (would break consumers analytics.orders)`) {
		t.Fatalf("removed column: %v", err)
	}
}
