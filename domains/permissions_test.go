package domains_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow/domains"
	"github.com/meshflow/meshflow/internal/natsembed"
	"github.com/meshflow/meshflow/internal/natstest"
)

var (
	placed = domains.Contract{Version: 1, Schema: arrow.NewSchema([]arrow.Field{{Name: "id", Type: arrow.PrimitiveTypes.Int64}}, nil)}
	orders = &domains.Domain{Name: "orders", Owner: "team-orders",
		Inputs:  []domains.Input{{Name: "checkout", Contract: placed}},
		Outputs: []domains.Output{{Name: "placed", Contract: placed}}}
	analytics = &domains.Domain{Name: "analytics", Owner: "team-bi",
		Inputs:  []domains.Input{{Name: "orders", From: "orders.placed", Contract: placed}},
		Outputs: []domains.Output{{Name: "daily", Contract: placed}}}
)

func TestValidate(t *testing.T) {
	for _, d := range []*domains.Domain{orders, analytics} {
		if err := d.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	bad := &domains.Domain{Name: "Bad Name", Inputs: []domains.Input{{Name: "x", From: "nodot"}}, Outputs: []domains.Output{{Name: "_p"}}}
	err := bad.Validate()
	for _, want := range []string{`domain name "Bad Name"`, "no owner", `from "nodot"`, `output port "_p"`, "contract has no schema", "contract version 0"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %q", err, want)
		}
	}
}

// TestDomainPermissions: on the embedded server each domain is its own NATS
// user. A domain reads the data products it declared and nothing private
// of another domain.
func TestDomainPermissions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := natsembed.Start(ctx, natsembed.Config{StoreDir: t.TempDir(), DontListen: true, Users: []natsembed.User{
		{Name: "admin", Password: "a", Publish: []string{">"}, Subscribe: []string{">"}},
		orders.User("o"), analytics.User("b"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.WithoutCancel(ctx))

	admin := natstest.Connect(t, srv, nats.UserInfo("admin", "a"))
	ajs := natstest.JetStream(t, admin)
	product := domains.ProductSubject("orders", "placed")
	if _, err := ajs.CreateStream(ctx, jetstream.StreamConfig{Name: domains.StreamName(product), Subjects: []string{product}}); err != nil {
		t.Fatal(err)
	}

	// orders publishes its data product and uses its private namespace.
	oerrs := make(chan error, 8)
	onc := natstest.Connect(t, srv, nats.UserInfo("orders", "o"), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { oerrs <- err }))
	ojs := natstest.JetStream(t, onc)
	if _, err := ojs.Publish(ctx, product, []byte(`{"id":1}`)); err != nil {
		t.Fatalf("orders publishing its product: %v", err)
	}
	if _, err := onc.SubscribeSync("mf.orders.enrich.data.a.b.0.0"); err != nil {
		t.Fatal(err)
	}
	if err := onc.Flush(); err != nil {
		t.Fatal(err)
	}

	// analytics reads the product through JetStream.
	aerrs := make(chan error, 8)
	anc := natstest.Connect(t, srv, nats.UserInfo("analytics", "b"), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { aerrs <- err }))
	bjs := natstest.JetStream(t, anc)
	cons, err := bjs.OrderedConsumer(ctx, domains.StreamName(product), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("analytics creating a consumer on its input: %v", err)
	}
	msgs, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for m := range msgs.Messages() {
		got++
		if string(m.Data()) != `{"id":1}` {
			t.Errorf("read %s", m.Data())
		}
	}
	if got != 1 {
		t.Fatalf("analytics read %d messages of orders.placed: %v", got, msgs.Error())
	}

	// ...but not the private subjects of orders, nor publish its product.
	if _, err := anc.SubscribeSync("mf.orders.>"); err != nil {
		t.Fatal(err)
	}
	_ = anc.Flush()
	select {
	case err := <-aerrs:
		if !strings.Contains(err.Error(), "Permissions Violation for Subscription to \"mf.orders.>\"") {
			t.Fatalf("got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("subscribing to another domain's private subjects was not denied")
	}
	if err := anc.Publish(product, []byte("forged")); err != nil {
		t.Fatal(err)
	}
	_ = anc.Flush()
	select {
	case err := <-aerrs:
		if !strings.Contains(err.Error(), "Permissions Violation for Publish to \""+product+"\"") {
			t.Fatalf("got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("publishing another domain's product was not denied")
	}
	select {
	case err := <-oerrs:
		t.Fatalf("orders got %v within its own namespace", err)
	default:
	}
}
