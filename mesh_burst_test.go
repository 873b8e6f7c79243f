package meshflow_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/domains"
	"github.com/meshflow/meshflow/examples/mesh"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
)

// TestMeshBurst: 200,000 checkout events published as fast as possible
// into the running example mesh all pass its boundary (as orders or dead
// letters) and reach analytics, with no redelivery on any of the durable
// consumers behind them and no slow consumer.
func TestMeshBurst(t *testing.T) {
	const n = 200_000
	srv := natstest.RunJetStream(t)
	var slow atomic.Int64
	nc := natstest.Connect(t, srv, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrSlowConsumer) {
			slow.Add(1)
		}
	}))
	pub := natstest.Connect(t, srv)
	js, err := jetstream.New(pub, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		t.Fatal(err)
	}
	m, err := meshflow.NewMesh(mesh.Domains(), meshflow.WithNATS(nc), meshflow.WithLogger(testutil.TestLogger(t)), meshflow.WithDataDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testutil.Context(t, 5*time.Minute)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()
	in := domains.InputSubject("orders", "checkout")
	testutil.CheckFor(t, time.Minute, 5*time.Millisecond, func() error {
		for _, d := range m.Status() {
			if d.State != meshflow.DomainRunning {
				return fmt.Errorf("domain %s is %s", d.Name, d.State)
			}
		}
		_, err := js.Consumer(ctx, domains.StreamName(in), domains.ConsumerName("orders", "checkout"))
		return err
	})

	gen := mesh.NewGenerator(7)
	now := time.Now()
	for i := 0; i < n; i++ {
		if _, err := js.PublishAsync(in, gen.Checkout(now), jetstream.WithStallWait(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	// Every event is an order or a dead letter, once (counted in the
	// streams: a recovery under load processes some events again, and the
	// streams still hold each result once).
	msgs := func(subject string) (uint64, error) {
		s, err := js.Stream(ctx, domains.StreamName(subject))
		if err != nil {
			return 0, err
		}
		return s.CachedInfo().State.Msgs, nil
	}
	testutil.CheckFor(t, 4*time.Minute, 20*time.Millisecond, func() error {
		placed, err := msgs(domains.ProductSubject("orders", "placed"))
		if err != nil {
			return err
		}
		dead, err := msgs(domains.DeadLetterSubject("orders"))
		if err != nil {
			return err
		}
		if placed+dead != n || placed == 0 {
			return fmt.Errorf("%d orders placed and %d dead letters, want %d in all", placed, dead, n)
		}
		return nil
	})
	for _, c := range []struct{ stream, consumer string }{
		{domains.StreamName(in), domains.ConsumerName("orders", "checkout")},
		{domains.StreamName(domains.ProductSubject("orders", "placed")), domains.ConsumerName("analytics", "orders")},
	} {
		testutil.CheckFor(t, time.Minute, 10*time.Millisecond, func() error {
			cons, err := js.Consumer(ctx, c.stream, c.consumer)
			if err != nil {
				return err
			}
			info, err := cons.Info(ctx)
			if err != nil {
				return err
			}
			if info.NumRedelivered != 0 {
				t.Fatalf("%s/%s: %d messages redelivered", c.stream, c.consumer, info.NumRedelivered)
			}
			if info.NumAckPending != 0 || info.NumPending != 0 {
				return fmt.Errorf("%s/%s: %d ack pending, %d pending", c.stream, c.consumer, info.NumAckPending, info.NumPending)
			}
			return nil
		})
	}
	varz, err := srv.NATSServer().Varz(nil)
	if err != nil {
		t.Fatal(err)
	}
	if slow.Load() != 0 || varz.SlowConsumers != 0 {
		t.Fatalf("slow consumers: %d seen by the client, %d by the server", slow.Load(), varz.SlowConsumers)
	}
	stop()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}
