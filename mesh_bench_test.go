package meshflow_test

import (
	"context"
	"testing"
	"time"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/domains"
	"github.com/meshflow/meshflow/internal/natstest"
)

// BenchmarkBulkhead measures domain "orders" moving 1M rows from its input
// port to its data product, alone and next to a domain that panics on
// every batch, in the same run:
//
//	go test -run '^$' -bench Bulkhead -benchtime 1x .
//
// "x_alone" is the throughput with the broken neighbour divided by the
// throughput alone.
func BenchmarkBulkhead(b *testing.B) {
	const rows = 1_000_000
	run := func(withBroken bool) time.Duration {
		srv := natstest.RunJetStream(b)
		nc := natstest.Connect(b, srv)
		js := natstest.JetStream(b, nc)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		ds := []*meshflow.Domain{healthyDomain("orders")}
		if withBroken {
			ds = append(ds, brokenDomain("broken", 1_000_000))
		}
		mesh, err := meshflow.NewMesh(ds, meshflow.WithNATS(nc))
		if err != nil {
			b.Fatal(err)
		}
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- mesh.Run(runCtx) }()
		for {
			if _, err := js.StreamNameBySubject(ctx, domains.InputSubject("orders", "events")); err == nil {
				if _, err := js.StreamNameBySubject(ctx, domains.InputSubject("broken", "events")); err == nil || !withBroken {
					break
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		if withBroken {
			publishRows(b, ctx, js, domains.InputSubject("broken", "events"), 200_000)
		}
		start := time.Now()
		publishRows(b, ctx, js, domains.InputSubject("orders", "events"), rows)
		for {
			if _, p := portStatus(mesh, "orders", "clean"); p.RowsOut >= rows {
				break
			}
			time.Sleep(time.Millisecond)
		}
		elapsed := time.Since(start)
		stop()
		<-done
		return elapsed
	}
	var alone, shared time.Duration
	for i := 0; i < b.N; i++ {
		alone += run(false)
		shared += run(true)
	}
	ra := float64(rows*b.N) / alone.Seconds()
	rs := float64(rows*b.N) / shared.Seconds()
	b.ReportMetric(ra, "alone_rows/s")
	b.ReportMetric(rs, "with_broken_rows/s")
	b.ReportMetric(rs/ra, "x_alone")
}
