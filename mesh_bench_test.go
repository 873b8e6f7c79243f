package meshflow_test

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/actors/natsio"
	"github.com/meshflow/meshflow/domains"
	"github.com/meshflow/meshflow/internal/natstest"
)

// publishJSONRows publishes rows events to subject, one JSON object per
// message.
func publishJSONRows(b *testing.B, ctx context.Context, js jetstream.JetStream, subject string, rows int) {
	b.Helper()
	var buf []byte
	for i := range rows {
		buf = append(buf[:0], `{"id":`...)
		buf = strconv.AppendInt(buf, int64(i), 10)
		buf = append(buf, `,"amount":`...)
		buf = strconv.AppendInt(buf, int64(i%1000), 10)
		buf = append(buf, '}')
		if _, err := js.PublishAsync(subject, append([]byte(nil), buf...)); err != nil {
			b.Fatal(err)
		}
		if i%10_000 == 9_999 || i == rows-1 {
			select {
			case <-js.PublishAsyncComplete():
			case <-ctx.Done():
				b.Fatal(ctx.Err())
			}
		}
	}
}

// restartCounter is a slog handler counting the restarts the runtime logs.
type restartCounter struct{ n *atomic.Int64 }

func (h restartCounter) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h restartCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "operator instance failed; restarting" {
		h.n.Add(1)
	}
	return nil
}
func (h restartCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h restartCounter) WithGroup(string) slog.Handler      { return h }

// BenchmarkBulkhead measures domain "orders" moving rows from its input
// port (one JSON event per message) to its data product, alone and next
// to a domain "broken" that panics on every batch and crash-loops, in the
// same run:
//
//	go test -run '^$' -bench Bulkhead -benchtime 2x .
//
// Every row is in the input streams before the mesh starts. The time
// measured runs from the first row on orders' data product to the last,
// so that it holds the domain's work (decoding, the checks of both ports,
// encoding, publishing) and not what its source waits before its first
// batch. It grows with the rows moved, b.N × 262,144: the source's fetches
// fill at once from the backlog, and the rows are a multiple of its batch
// size, so no batch waits for its linger.
//
// The broken domain restarts after the node's default backoff (50 ms,
// doubling to 5 s: restart=default), or after 1–2 ms (restart=2ms), a
// crash loop of hundreds of restarts a second that competes for the CPU.
//
// Metrics: alone_rows/s and with_broken_rows/s are the throughputs,
// x_alone their ratio, alone_s and with_broken_s the seconds measured,
// broken_restarts/s how often the broken domain restarted meanwhile.
func BenchmarkBulkhead(b *testing.B) {
	const rowsPerOp = 1 << 18
	for _, bc := range []struct {
		name    string
		restart *meshflow.RestartPolicy
	}{
		{"restart=default", &meshflow.RestartPolicy{MaxFailures: 1_000_000, Window: time.Hour}},
		{"restart=2ms", &meshflow.RestartPolicy{MaxFailures: 1_000_000, Window: time.Hour, InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			rows := b.N * rowsPerOp
			run := func(withBroken bool) (elapsed time.Duration, moved, restarts int64) {
				srv := natstest.RunJetStream(b)
				nc := natstest.Connect(b, srv)
				js := natstest.JetStream(b, nc)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
				defer cancel()
				ds := []*meshflow.Domain{healthyDomain("orders")}
				if withBroken {
					broken := brokenDomain("broken", 1_000_000)
					broken.Restart = bc.restart
					ds = append(ds, broken)
				}
				// The input streams exist (as the mesh makes them) and hold
				// every row before the mesh starts.
				for _, d := range ds {
					d.Inputs[0].Format = natsio.JSON
					subject := domains.InputSubject(d.Name, "events")
					if _, err := natsio.EnsureOwnedStream(ctx, js, domains.StreamName(subject), subject, natsio.Limits{}); err != nil {
						b.Fatal(err)
					}
				}
				if withBroken {
					publishJSONRows(b, ctx, js, domains.InputSubject("broken", "events"), 8192)
				}
				publishJSONRows(b, ctx, js, domains.InputSubject("orders", "events"), rows)
				var failures atomic.Int64
				mesh, err := meshflow.NewMesh(ds, meshflow.WithNATS(nc), meshflow.WithLogger(slog.New(restartCounter{&failures})))
				if err != nil {
					b.Fatal(err)
				}
				runCtx, stop := context.WithCancel(ctx)
				done := make(chan error, 1)
				go func() { done <- mesh.Run(runCtx) }()
				var first time.Time
				var atFirst, failedAtFirst int64
				for {
					_, p := portStatus(mesh, "orders", "clean")
					now := time.Now()
					if p.RowsOut > 0 && first.IsZero() {
						first, atFirst, failedAtFirst = now, p.RowsOut, failures.Load()
					}
					if p.RowsOut >= int64(rows) {
						elapsed, moved, restarts = now.Sub(first), p.RowsOut-atFirst, failures.Load()-failedAtFirst
						break
					}
					select {
					case err := <-done:
						b.Fatalf("mesh ended early: %v", err)
					case <-time.After(time.Millisecond):
					}
				}
				if withBroken {
					if st, _ := portStatus(mesh, "broken", "clean"); st.State != meshflow.DomainRunning {
						b.Fatalf("broken is %s, want it running (crash-looping)", st.State)
					}
				}
				stop()
				if err := <-done; !errors.Is(err, context.Canceled) {
					b.Fatalf("mesh: %v", err)
				}
				return elapsed, moved, restarts
			}
			alone, movedAlone, _ := run(false)
			shared, movedShared, restarts := run(true)
			ra := float64(movedAlone) / alone.Seconds()
			rs := float64(movedShared) / shared.Seconds()
			b.ReportMetric(ra, "alone_rows/s")
			b.ReportMetric(rs, "with_broken_rows/s")
			b.ReportMetric(rs/ra, "x_alone")
			b.ReportMetric(alone.Seconds(), "alone_s")
			b.ReportMetric(shared.Seconds(), "with_broken_s")
			b.ReportMetric(float64(restarts)/shared.Seconds(), "broken_restarts/s")
		})
	}
}
