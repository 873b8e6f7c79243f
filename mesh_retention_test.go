package meshflow_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/domains"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
)

// retentionMesh is domain orders (input events, output clean) read by
// domain analytics, with the given retentions.
func retentionMesh(in, out domains.Retention) []*meshflow.Domain {
	orders := healthyDomain("orders")
	orders.Inputs[0].Retention = in
	orders.Outputs[0].Retention = out
	analytics := healthyDomain("analytics")
	analytics.Inputs[0].From = "orders.clean"
	return []*meshflow.Domain{orders, analytics}
}

// runMesh runs a mesh until its domains are running and returns a function
// that stops it and returns Run's error.
func runMesh(t *testing.T, ds []*meshflow.Domain, opts ...meshflow.RunOption) (*meshflow.Mesh, func() error) {
	t.Helper()
	m, err := meshflow.NewMesh(ds, append(opts, meshflow.WithLogger(testutil.TestLogger(t)))...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	testutil.CheckFor(t, 30*time.Second, 5*time.Millisecond, func() error {
		for _, d := range m.Status() {
			if d.State != meshflow.DomainRunning {
				return fmt.Errorf("domain %s is %s", d.Name, d.State)
			}
		}
		return nil
	})
	return m, func() error {
		stop()
		if err := <-done; !errors.Is(err, context.Canceled) {
			return err
		}
		return nil
	}
}

type streamWant struct {
	stream   string
	maxAge   time.Duration
	maxBytes int64 // 0: none
	maxMsgs  int64 // 0: none
}

// checkStreams reads each stream back from the server and compares it,
// and what the catalog (the JSON `meshflow domains describe -o json`
// prints) says of its port, with want.
func checkStreams(t *testing.T, nc *nats.Conn, want map[string]streamWant) {
	t.Helper()
	js := natstest.JetStream(t, nc)
	for _, w := range want {
		s, err := js.Stream(t.Context(), w.stream)
		if err != nil {
			t.Fatal(err)
		}
		cfg := s.CachedInfo().Config
		if cfg.MaxAge != w.maxAge || max(cfg.MaxBytes, 0) != w.maxBytes || max(cfg.MaxMsgs, 0) != w.maxMsgs || cfg.Discard != jetstream.DiscardOld {
			t.Errorf("stream %s: max age %v, max bytes %d, max msgs %d, discard %v; want %v, %d, %d, old",
				w.stream, cfg.MaxAge, cfg.MaxBytes, cfg.MaxMsgs, cfg.Discard, w.maxAge, w.maxBytes, w.maxMsgs)
		}
	}
	msg, err := nc.Request(meshflow.CatalogSubject, nil, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var catalog []meshflow.DomainStatus
	if err := json.Unmarshal(msg.Data, &catalog); err != nil {
		t.Fatal(err)
	}
	got := map[string]*meshflow.StreamStatus{}
	for _, d := range catalog {
		got[d.Name+"/_dlq"] = d.DeadLetters
		for _, p := range d.Ports {
			got[d.Name+"/"+p.Name] = p.Stream
		}
	}
	for port, w := range want {
		st := got[port]
		wantSt := meshflow.StreamStatus{Name: w.stream, Managed: true, MaxAge: w.maxAge, MaxBytes: w.maxBytes, MaxMsgs: w.maxMsgs, Discard: "old"}
		if st == nil || *st != wantSt {
			t.Errorf("catalog: port %s: stream %+v, want %+v", port, st, wantSt)
		}
	}
}

// TestMeshRetention: the streams of a mesh's ports and dead letters have
// the retention of their port, field by field over the mesh's default; a
// redeployment with other retention updates them; the catalog shows them.
func TestMeshRetention(t *testing.T) {
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)

	_, stop := runMesh(t, retentionMesh(domains.Retention{MaxAge: 2 * time.Hour}, domains.Retention{MaxBytes: 16 << 20, MaxMsgs: 1000}),
		meshflow.WithNATS(nc), meshflow.WithRetention(domains.Retention{MaxAge: time.Hour, MaxBytes: 32 << 20}))
	checkStreams(t, nc, map[string]streamWant{
		"orders/events":    {stream: "MESH_ORDERS_IN_EVENTS", maxAge: 2 * time.Hour, maxBytes: 32 << 20},
		"orders/clean":     {stream: "MESH_ORDERS_CLEAN", maxAge: time.Hour, maxBytes: 16 << 20, maxMsgs: 1000},
		"orders/_dlq":      {stream: "MESH_ORDERS__DLQ", maxAge: time.Hour, maxBytes: 32 << 20},
		"analytics/events": {stream: "MESH_ORDERS_CLEAN", maxAge: time.Hour, maxBytes: 16 << 20, maxMsgs: 1000},
		"analytics/clean":  {stream: "MESH_ANALYTICS_CLEAN", maxAge: time.Hour, maxBytes: 32 << 20},
		"analytics/_dlq":   {stream: "MESH_ANALYTICS__DLQ", maxAge: time.Hour, maxBytes: 32 << 20},
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// Redeployed: the output lifts its message limit, the input takes the
	// default age, the default changes.
	_, stop = runMesh(t, retentionMesh(domains.Retention{}, domains.Retention{MaxBytes: 24 << 20, MaxMsgs: domains.Unlimited}),
		meshflow.WithNATS(nc), meshflow.WithRetention(domains.Retention{MaxAge: 30 * time.Minute, MaxBytes: 48 << 20}))
	checkStreams(t, nc, map[string]streamWant{
		"orders/events":   {stream: "MESH_ORDERS_IN_EVENTS", maxAge: 30 * time.Minute, maxBytes: 48 << 20},
		"orders/clean":    {stream: "MESH_ORDERS_CLEAN", maxAge: 30 * time.Minute, maxBytes: 24 << 20},
		"orders/_dlq":     {stream: "MESH_ORDERS__DLQ", maxAge: 30 * time.Minute, maxBytes: 48 << 20},
		"analytics/clean": {stream: "MESH_ANALYTICS_CLEAN", maxAge: 30 * time.Minute, maxBytes: 48 << 20},
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// Without WithRetention the streams are unbounded again.
	_, stop = runMesh(t, retentionMesh(domains.Retention{}, domains.Retention{}), meshflow.WithNATS(nc))
	checkStreams(t, nc, map[string]streamWant{
		"orders/events": {stream: "MESH_ORDERS_IN_EVENTS"},
		"orders/clean":  {stream: "MESH_ORDERS_CLEAN"},
		"orders/_dlq":   {stream: "MESH_ORDERS__DLQ"},
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestMeshRetentionForeignStream: a stream made outside Meshflow that
// captures a port's subject keeps its limits, and the catalog says so.
func TestMeshRetentionForeignStream(t *testing.T) {
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	js := natstest.JetStream(t, nc)
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "ALL_ORDERS_INPUTS", Subjects: []string{"mesh.orders.in.>"}, MaxMsgs: 5_000_000}); err != nil {
		t.Fatal(err)
	}
	m, stop := runMesh(t, retentionMesh(domains.Retention{}, domains.Retention{}),
		meshflow.WithNATS(nc), meshflow.WithRetention(domains.Retention{MaxAge: time.Hour}))
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	_, p := portStatus(m, "orders", "events")
	want := meshflow.StreamStatus{Name: "ALL_ORDERS_INPUTS", Managed: false, MaxMsgs: 5_000_000, Discard: "old"}
	if p.Stream == nil || *p.Stream != want {
		t.Errorf("port stream %+v, want %+v", p.Stream, want)
	}
	s, err := js.Stream(t.Context(), "ALL_ORDERS_INPUTS")
	if err != nil {
		t.Fatal(err)
	}
	if cfg := s.CachedInfo().Config; cfg.MaxAge != 0 || cfg.MaxMsgs != 5_000_000 {
		t.Errorf("the foreign stream was changed: %+v", cfg)
	}
}

// TestMeshRetentionRefused: limits a mesh cannot honour stop it before
// any domain starts, naming the port.
func TestMeshRetentionRefused(t *testing.T) {
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	tests := []struct {
		name string
		ds   []*meshflow.Domain
		opts []meshflow.RunOption
		want string
	}{{
		name: "max bytes below max payload",
		ds:   retentionMesh(domains.Retention{}, domains.Retention{MaxBytes: 1 << 20}),
		want: "output port clean: retention of 1048576 bytes is below the server's max payload (8388608 bytes)",
	}, {
		name: "bad default",
		ds:   retentionMesh(domains.Retention{}, domains.Retention{}),
		opts: []meshflow.RunOption{meshflow.WithRetention(domains.Retention{MaxMsgs: -7})},
		want: "default retention: max messages -7 is negative",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := meshflow.NewMesh(tt.ds, append(tt.opts, meshflow.WithNATS(nc))...)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			err = m.Run(ctx)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run: %v, want an error with %q", err, tt.want)
			}
		})
	}
}

// TestDuplicateWindowCoversRedelivery: without checkpoints, the duplicate
// window of a mesh's streams outlasts the AckWait of its sources by 10 s or
// more, so that a row published again after a crash (when its
// unacknowledged input comes back) is dropped as a duplicate. (With
// checkpoints nothing depends on the window: see docs/checkpoints.md.)
func TestDuplicateWindowCoversRedelivery(t *testing.T) {
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	js := natstest.JetStream(t, nc)
	_, stop := runMesh(t, retentionMesh(domains.Retention{}, domains.Retention{}),
		meshflow.WithNATS(nc), meshflow.WithRetention(domains.Retention{MaxAge: time.Hour}), meshflow.WithoutCheckpoints())
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	var ackWait time.Duration
	testutil.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		c, err := js.Consumer(t.Context(), "MESH_ORDERS_IN_EVENTS", "orders_events")
		if err != nil {
			return err
		}
		ackWait = c.CachedInfo().Config.AckWait
		return nil
	})
	for _, stream := range []string{"MESH_ORDERS_CLEAN", "MESH_ORDERS__DLQ", "MESH_ANALYTICS_CLEAN"} {
		s, err := js.Stream(t.Context(), stream)
		if err != nil {
			t.Fatal(err)
		}
		if d := s.CachedInfo().Config.Duplicates; d < ackWait+10*time.Second {
			t.Errorf("stream %s remembers ids for %v; its sources' AckWait is %v", stream, d, ackWait)
		}
	}
}
