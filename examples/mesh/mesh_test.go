package mesh_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/domains"
	"github.com/meshflow/meshflow/examples/mesh"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
)

func counts(m *meshflow.Mesh, domain, port string) meshflow.PortStatus {
	for _, d := range m.Status() {
		for _, p := range d.Ports {
			if d.Name == domain && p.Name == port {
				return p
			}
		}
	}
	return meshflow.PortStatus{}
}

// TestExampleMesh runs the three domains on generated events: every valid
// checkout becomes an order, every bad one a dead letter, and analytics
// sees exactly the big orders.
func TestExampleMesh(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	js := natstest.JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m, err := meshflow.NewMesh(mesh.Domains(), meshflow.WithNATS(nc), meshflow.WithAllocator(mem), meshflow.WithLogger(testutil.TestLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()
	testutil.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		_, err := js.StreamNameBySubject(ctx, domains.InputSubject("payments", "transactions"))
		return err
	})

	g := mesh.NewGenerator(7)
	const n = 3000
	var valid, big int64
	for range n {
		ev := g.Checkout(time.Now())
		var o struct {
			Amount   float64 `json:"amount"`
			Currency string  `json:"currency"`
			Customer string  `json:"customer_id"`
		}
		if err := json.Unmarshal(ev, &o); err != nil {
			t.Fatal(err)
		}
		if o.Amount >= 0.01 && o.Currency != "XYZ" && o.Customer != "anonymous" {
			valid++
			if o.Amount >= 1000 {
				big++
			}
		}
		if _, err := js.Publish(ctx, domains.InputSubject("orders", "checkout"), ev); err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, domains.InputSubject("payments", "transactions"), g.Transaction()); err != nil {
			t.Fatal(err)
		}
	}
	testutil.CheckFor(t, time.Minute, 20*time.Millisecond, func() error {
		placed := counts(m, "orders", "placed")
		in := counts(m, "orders", "checkout")
		bigOut := counts(m, "analytics", "big_orders")
		if in.RowsIn != n || placed.RowsOut != valid || bigOut.RowsOut != big {
			return fmt.Errorf("checkout in %d (want %d), placed %d (want %d), big %d (want %d)",
				in.RowsIn, n, placed.RowsOut, valid, bigOut.RowsOut, big)
		}
		return nil
	})
	if d := counts(m, "orders", "checkout").DeadLettered; d != n-valid {
		t.Errorf("orders dead-lettered %d, want %d", d, n-valid)
	}
	stop()
	if err := <-done; err != context.Canceled {
		t.Fatalf("mesh: %v", err)
	}
	for _, d := range m.Status() {
		if d.State != meshflow.DomainFinished {
			t.Errorf("domain %s is %s after the stop: %s", d.Name, d.State, d.Error)
		}
	}
}
