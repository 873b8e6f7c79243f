package meshflow_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/actors/natsio"
	"github.com/meshflow/meshflow/domains"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
	"github.com/meshflow/meshflow/messages"
)

var eventContract = domains.Contract{Version: 1, Schema: arrow.NewSchema([]arrow.Field{
	{Name: "id", Type: arrow.PrimitiveTypes.Int64},
	{Name: "amount", Type: arrow.PrimitiveTypes.Int64},
}, nil), Rules: []domains.Rule{domains.Range("amount", 0, 1_000_000)}}

// healthyDomain passes its input port on as its output port, Arrow IPC
// both ways.
func healthyDomain(name string) *meshflow.Domain {
	return &meshflow.Domain{
		Domain: domains.Domain{Name: name, Owner: "team-" + name,
			Inputs:  []domains.Input{{Name: "events", Contract: eventContract, Format: natsio.ArrowIPC}},
			Outputs: []domains.Output{{Name: "clean", Contract: eventContract, Format: natsio.ArrowIPC}}},
		Build: func(b *meshflow.DomainPipeline) {
			b.Output("clean", b.Input("events"))
		},
	}
}

type panicky struct{}

func (panicky) Open(context.Context, meshflow.OperatorContext) error { return nil }
func (panicky) Close(context.Context) error                          { return nil }
func (panicky) Process(context.Context, arrow.RecordBatch, meshflow.Emitter) error {
	panic("this domain is broken")
}

// brokenDomain panics on every batch; its policy lets it crash-loop.
func brokenDomain(name string, maxFailures int) *meshflow.Domain {
	d := healthyDomain(name)
	d.Restart = &meshflow.RestartPolicy{MaxFailures: maxFailures, Window: time.Hour, InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}
	d.Build = func(b *meshflow.DomainPipeline) {
		b.Output("clean", b.Input("events").Process("explode", func() meshflow.Operator { return panicky{} }))
	}
	return d
}

// publishRows publishes rows events in Arrow IPC batches of 8192 to subject.
func publishRows(t testing.TB, ctx context.Context, js jetstream.JetStream, subject string, rows int) {
	t.Helper()
	mem := memory.NewGoAllocator()
	for start := 0; start < rows; start += 8192 {
		n := min(8192, rows-start)
		b := array.NewRecordBuilder(mem, eventContract.Schema)
		for i := range n {
			b.Field(0).(*array.Int64Builder).Append(int64(start + i))
			b.Field(1).(*array.Int64Builder).Append(int64((start + i) % 1000))
		}
		rec := b.NewRecordBatch()
		b.Release()
		data, err := messages.EncodeIPC(rec)
		rec.Release()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, subject, data); err != nil {
			t.Fatal(err)
		}
	}
}

// productRows reads every row of a data product published as Arrow IPC.
func productRows(t testing.TB, ctx context.Context, js jetstream.JetStream, subject string) map[int64]int {
	t.Helper()
	seen := map[int64]int{}
	for _, m := range readAll(t, ctx, js, subject) {
		recs, _, err := messages.DecodeIPC(memory.DefaultAllocator, m.Data())
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			for _, v := range r.Column(0).(*array.Int64).Int64Values() {
				seen[v]++
			}
			r.Release()
		}
	}
	return seen
}

func portStatus(m *meshflow.Mesh, domain, port string) (meshflow.DomainStatus, meshflow.PortStatus) {
	for _, d := range m.Status() {
		if d.Name != domain {
			continue
		}
		for _, p := range d.Ports {
			if p.Name == port {
				return d, p
			}
		}
		return d, meshflow.PortStatus{}
	}
	return meshflow.DomainStatus{}, meshflow.PortStatus{}
}

// TestMeshBulkhead: domain "broken" panics on every batch and crash-loops
// while domain "orders" processes 1M rows; orders' output is complete and
// the failures stay inside "broken".
func TestMeshBulkhead(t *testing.T) {
	const rows = 1_000_000
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	js := natstest.JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	orders, broken := healthyDomain("orders"), brokenDomain("broken", 1_000_000)
	mesh, err := meshflow.NewMesh([]*meshflow.Domain{orders, broken},
		meshflow.WithNATS(nc), meshflow.WithAllocator(mem), meshflow.WithLogger(testutil.TestLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mesh.Run(runCtx) }()

	testutil.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if _, err := js.StreamNameBySubject(ctx, domains.InputSubject("broken", "events")); err != nil {
			return err
		}
		_, err := js.StreamNameBySubject(ctx, domains.InputSubject("orders", "events"))
		return err
	})
	publishRows(t, ctx, js, domains.InputSubject("broken", "events"), 50_000)
	publishRows(t, ctx, js, domains.InputSubject("orders", "events"), rows)

	testutil.CheckFor(t, 4*time.Minute, 20*time.Millisecond, func() error {
		if _, p := portStatus(mesh, "orders", "clean"); p.RowsOut < rows {
			return fmt.Errorf("orders published %d of %d rows", p.RowsOut, rows)
		}
		return nil
	})
	bst, _ := portStatus(mesh, "broken", "clean")
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("mesh: %v", err)
	}
	if bst.State != meshflow.DomainRunning {
		t.Errorf("broken is %s while crash-looping, want running", bst.State)
	}
	seen := productRows(t, ctx, js, domains.ProductSubject("orders", "clean"))
	if len(seen) != rows {
		t.Fatalf("orders' data product holds %d distinct rows, want %d", len(seen), rows)
	}
	for id, n := range seen {
		if n != 1 || id < 0 || id >= rows {
			t.Fatalf("row %d published %d times", id, n)
		}
	}
	if got := productRows(t, ctx, js, domains.ProductSubject("broken", "clean")); len(got) != 0 {
		t.Errorf("broken published %d rows", len(got))
	}
}

// TestMeshFailureContained: a domain that gives up is reported failed, with
// its error, while the other domain goes on.
func TestMeshFailureContained(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	js := natstest.JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mesh, err := meshflow.NewMesh([]*meshflow.Domain{healthyDomain("orders"), brokenDomain("broken", 2)},
		meshflow.WithNATS(nc), meshflow.WithAllocator(mem), meshflow.WithLogger(testutil.TestLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mesh.Run(runCtx) }()
	testutil.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		_, err := js.StreamNameBySubject(ctx, domains.InputSubject("broken", "events"))
		return err
	})
	publishRows(t, ctx, js, domains.InputSubject("broken", "events"), 10)
	testutil.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if d, _ := portStatus(mesh, "broken", "clean"); d.State != meshflow.DomainFailed {
			return fmt.Errorf("broken is %s", d.State)
		}
		return nil
	})
	publishRows(t, ctx, js, domains.InputSubject("orders", "events"), 1000)
	testutil.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if _, p := portStatus(mesh, "orders", "clean"); p.RowsOut != 1000 {
			return fmt.Errorf("orders published %d rows", p.RowsOut)
		}
		return nil
	})
	d, _ := portStatus(mesh, "broken", "clean")
	if !strings.Contains(d.Error, `operator "explode"`) || !strings.Contains(d.Error, "this domain is broken") {
		t.Errorf("broken's error: %s", d.Error)
	}
	stop()
	err = <-done
	if err == nil || !strings.Contains(err.Error(), "domain broken") || strings.Contains(err.Error(), "domain orders") {
		t.Fatalf("mesh returned %v, want broken's failure only", err)
	}
}

type blocking struct{ release <-chan struct{} }

func (blocking) Open(context.Context, meshflow.OperatorContext) error { return nil }
func (blocking) Close(context.Context) error                          { return nil }
func (b blocking) Process(ctx context.Context, in arrow.RecordBatch, out meshflow.Emitter) error {
	select {
	case <-b.release:
	case <-ctx.Done():
	}
	return nil
}

// TestMeshStallContained: a domain whose operator stalls holds up only
// itself; the other domain processes all its rows meanwhile.
func TestMeshStallContained(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	js := natstest.JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	release := make(chan struct{})
	stalled := healthyDomain("stalled")
	stalled.Build = func(b *meshflow.DomainPipeline) {
		b.Output("clean", b.Input("events").Process("stuck", func() meshflow.Operator { return blocking{release} }))
	}
	m, err := meshflow.NewMesh([]*meshflow.Domain{healthyDomain("orders"), stalled},
		meshflow.WithNATS(nc), meshflow.WithAllocator(mem), meshflow.WithLogger(testutil.TestLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()
	testutil.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		_, err := js.StreamNameBySubject(ctx, domains.InputSubject("stalled", "events"))
		return err
	})
	publishRows(t, ctx, js, domains.InputSubject("stalled", "events"), 100_000)
	publishRows(t, ctx, js, domains.InputSubject("orders", "events"), 100_000)
	testutil.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if _, p := portStatus(m, "orders", "clean"); p.RowsOut != 100_000 {
			return fmt.Errorf("orders published %d rows", p.RowsOut)
		}
		return nil
	})
	if _, p := portStatus(m, "stalled", "clean"); p.RowsOut != 0 {
		t.Errorf("the stalled domain published %d rows", p.RowsOut)
	}
	close(release)
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("mesh: %v", err)
	}
}
