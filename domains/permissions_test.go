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

// violations collects the permission errors the server reports to a
// connection.
type violations chan error

func (v violations) handler() nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { v <- err })
}

// expect waits for the server to report the violation want, failing on any
// other error.
func (v violations) expect(t *testing.T, want string) {
	t.Helper()
	select {
	case err := <-v:
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("got %v, want %s", err, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("not denied: %s", want)
	}
}

func (v violations) none(t *testing.T, who string) {
	t.Helper()
	select {
	case err := <-v:
		t.Fatalf("%s was denied within its own permissions: %v", who, err)
	default:
	}
}

// reporting reads orders.placed too: its durable is one analytics must not
// reach.
var reporting = &domains.Domain{Name: "reporting", Owner: "team-reports",
	Inputs:  []domains.Input{{Name: "orders", From: "orders.placed", Contract: placed}},
	Outputs: []domains.Output{{Name: "weekly", Contract: placed}}}

// TestDomainPermissions: on the embedded server each domain is its own NATS
// user. A domain reads the data products it declared through its own
// durable consumer, and reaches nothing private of another domain: not its
// subjects, not its inbox, not its durable consumers, not its streams'
// deletion.
func TestDomainPermissions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := natsembed.Start(ctx, natsembed.Config{StoreDir: t.TempDir(), DontListen: true, Users: []natsembed.User{
		{Name: "admin", Password: "a", Publish: []string{">"}, Subscribe: []string{">"}},
		orders.User("o"), analytics.User("b"), reporting.User("r"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.WithoutCancel(ctx))

	admin := natstest.Connect(t, srv, nats.UserInfo("admin", "a"))
	ajs := natstest.JetStream(t, admin)
	product := domains.ProductSubject("orders", "placed")
	productStream := domains.StreamName(product)
	checkout := domains.InputSubject("orders", "checkout")
	for _, subj := range []string{product, checkout} {
		if _, err := ajs.CreateStream(ctx, jetstream.StreamConfig{Name: domains.StreamName(subj), Subjects: []string{subj}}); err != nil {
			t.Fatal(err)
		}
	}

	connect := func(user, pw string, v violations) *nats.Conn {
		return natstest.Connect(t, srv, nats.UserInfo(user, pw), nats.CustomInboxPrefix(domains.InboxPrefix(user)), v.handler())
	}
	// orders publishes its data product, reads its input through its
	// durable, and uses its private namespace.
	oerrs := make(violations, 8)
	onc := connect("orders", "o", oerrs)
	ojs := natstest.JetStream(t, onc)
	if _, err := ojs.Publish(ctx, product, []byte(`{"id":1}`)); err != nil {
		t.Fatalf("orders publishing its product: %v", err)
	}
	if _, err := ojs.CreateOrUpdateConsumer(ctx, domains.StreamName(checkout), jetstream.ConsumerConfig{
		Durable: domains.ConsumerName("orders", "checkout"), FilterSubject: checkout, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatalf("orders creating its durable: %v", err)
	}
	if _, err := onc.SubscribeSync("mf.orders.enrich.data.a.b.0.0"); err != nil {
		t.Fatal(err)
	}
	if err := onc.Flush(); err != nil {
		t.Fatal(err)
	}

	// analytics and reporting read the product through their own durables.
	read := func(user, pw string, v violations) *nats.Conn {
		nc := connect(user, pw, v)
		js := natstest.JetStream(t, nc)
		cons, err := js.CreateOrUpdateConsumer(ctx, productStream, jetstream.ConsumerConfig{
			Durable: domains.ConsumerName(user, "orders"), FilterSubject: product, AckPolicy: jetstream.AckExplicitPolicy})
		if err != nil {
			t.Fatalf("%s creating its durable on its input: %v", user, err)
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
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatalf("%s acknowledging: %v", user, err)
			}
		}
		if got != 1 {
			t.Fatalf("%s read %d messages of orders.placed: %v", user, got, msgs.Error())
		}
		return nc
	}
	aerrs := make(violations, 8)
	anc := read("analytics", "b", aerrs)
	rerrs := make(violations, 8)
	read("reporting", "r", rerrs)

	for _, tc := range []struct {
		name    string
		nc      *nats.Conn
		v       violations
		sub     bool // subscribe, else publish
		subject string
	}{
		{"subscribe to another domain's private subjects", anc, aerrs, true, "mf.orders.>"},
		{"publish another domain's product", anc, aerrs, false, product},
		{"read every inbox", anc, aerrs, true, "_INBOX.>"},
		{"read another domain's inbox", anc, aerrs, true, "_INBOX_orders.>"},
		{"read acknowledgements", anc, aerrs, true, "$JS.ACK.>"},
		{"pull from another reader's durable", anc, aerrs, false, "$JS.API.CONSUMER.MSG.NEXT." + productStream + ".reporting_orders"},
		{"delete another reader's durable", anc, aerrs, false, "$JS.API.CONSUMER.DELETE." + productStream + ".reporting_orders"},
		{"update another reader's durable", anc, aerrs, false, "$JS.API.CONSUMER.CREATE." + productStream + ".reporting_orders." + product},
		{"acknowledge for another reader", anc, aerrs, false, "$JS.ACK." + productStream + ".reporting_orders.1.1.1.0.0"},
		{"create a consumer named in the body", anc, aerrs, false, "$JS.API.CONSUMER.CREATE." + productStream},
		{"delete another domain's stream", anc, aerrs, false, "$JS.API.STREAM.DELETE." + productStream},
		{"owner pulls from a reader's durable", onc, oerrs, false, "$JS.API.CONSUMER.MSG.NEXT." + productStream + ".analytics_orders"},
		{"owner deletes a reader's durable", onc, oerrs, false, "$JS.API.CONSUMER.DELETE." + productStream + ".analytics_orders"},
		{"owner deletes its product's stream", onc, oerrs, false, "$JS.API.STREAM.DELETE." + productStream},
		{"owner purges its product's stream", onc, oerrs, false, "$JS.API.STREAM.PURGE." + productStream},
		{"owner reads a reader's inbox", onc, oerrs, true, "_INBOX_analytics.>"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := `Permissions Violation for Publish to "` + tc.subject + `"`
			var err error
			if tc.sub {
				want = `Permissions Violation for Subscription to "` + tc.subject + `"`
				_, err = tc.nc.SubscribeSync(tc.subject)
			} else {
				err = tc.nc.PublishRequest(tc.subject, tc.nc.NewRespInbox(), []byte("{}"))
			}
			if err != nil {
				t.Fatal(err)
			}
			_ = tc.nc.Flush()
			tc.v.expect(t, want)
		})
	}
	// Nothing was lost: every durable is still there with its message
	// acknowledged.
	for _, name := range []string{"analytics_orders", "reporting_orders"} {
		c, err := ajs.Consumer(ctx, productStream, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if info := c.CachedInfo(); info.AckFloor.Stream != 1 || info.NumPending != 0 {
			t.Errorf("%s: ack floor %d, pending %d", name, info.AckFloor.Stream, info.NumPending)
		}
	}
	if info, err := ajs.Stream(ctx, productStream); err != nil || info.CachedInfo().State.Msgs != 1 {
		t.Fatalf("product stream after the denials: %v", err)
	}
	oerrs.none(t, "orders")
	rerrs.none(t, "reporting")
}
