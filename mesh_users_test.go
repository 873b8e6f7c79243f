package meshflow_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/domains"
	"github.com/meshflow/meshflow/examples/mesh"
	"github.com/meshflow/meshflow/internal/natsembed"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
)

// TestMeshWithDomainUsers runs the example mesh with every domain as its
// own NATS user and producers as the anonymous user: data still flows from
// orders to analytics through the data product, and nothing else is open.
func TestMeshWithDomainUsers(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	ds := mesh.Domains()
	var decls []*domains.Domain
	for _, d := range ds {
		decls = append(decls, &d.Domain)
	}
	users := []natsembed.User{{Name: "node", Password: rand.Text(), Publish: []string{">"}, Subscribe: []string{">"}},
		domains.ProducerUser("producer", rand.Text(), decls)}
	pw := map[string]string{}
	for _, d := range ds {
		pw[d.Name] = rand.Text()
		users = append(users, d.User(pw[d.Name]))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := natsembed.Start(ctx, natsembed.Config{StoreDir: t.TempDir(), DontListen: true, Users: users, NoAuthUser: "producer"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.WithoutCancel(ctx))
	node := natstest.Connect(t, srv, nats.UserInfo("node", users[0].Password))
	denied := make(chan error, 16)
	connect := func(d *domains.Domain) (*nats.Conn, error) {
		return srv.Connect(nats.UserInfo(d.Name, pw[d.Name]), nats.CustomInboxPrefix(domains.InboxPrefix(d.Name)), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { denied <- err }))
	}
	m, err := meshflow.NewMesh(ds, meshflow.WithNATS(node), meshflow.WithDomainConnect(connect),
		meshflow.WithAllocator(mem), meshflow.WithLogger(testutil.TestLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()

	producer := natstest.Connect(t, srv, nats.CustomInboxPrefix(domains.InboxPrefix("producer"))) // no credentials: the producer user
	pjs := natstest.JetStream(t, producer)
	testutil.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		select {
		case err := <-done:
			t.Fatalf("mesh stopped before its streams were made: %v", err)
		default:
		}
		_, err := pjs.StreamNameBySubject(ctx, domains.InputSubject("orders", "checkout"))
		return err
	})
	for i := range 20 {
		ev := fmt.Sprintf(`{"order_id":%d,"customer_id":"c-%d","amount":%d,"currency":"EUR","placed_at":"2026-11-01T12:00:00Z"}`, i, i, 500*i)
		if _, err := pjs.Publish(ctx, domains.InputSubject("orders", "checkout"), []byte(ev)); err != nil {
			t.Fatal(err)
		}
	}
	testutil.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		for _, d := range m.Status() {
			for _, p := range d.Ports {
				if d.Name == "analytics" && p.Name == "big_orders" && p.RowsOut == 18 {
					return nil
				}
			}
		}
		return fmt.Errorf("analytics has not published the 18 big orders yet: %+v", m.Status())
	})
	// The producer may not publish a data product.
	if err := producer.Publish(domains.ProductSubject("orders", "placed"), []byte("{}")); err == nil {
		if err := producer.Flush(); err == nil {
			if err := producer.LastError(); err == nil {
				testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
					if producer.LastError() == nil {
						return fmt.Errorf("publishing a data product as a producer was not denied")
					}
					return nil
				})
			}
		}
	}
	stop()
	if err := <-done; err != context.Canceled {
		t.Fatalf("mesh: %v", err)
	}
	select {
	case err := <-denied:
		t.Fatalf("a domain was denied within its own permissions: %v", err)
	default:
	}
}
