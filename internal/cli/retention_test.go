package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/actors/natsio"
	"github.com/meshflow/meshflow/domains"
	"github.com/meshflow/meshflow/examples/mesh"
	"github.com/meshflow/meshflow/internal/natsembed"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
)

// TestDomainsDescribeRetention: `domains describe` shows the stream of
// every port and of the dead letters with its retention, in the table and
// in JSON, and says when a stream is not Meshflow's.
func TestDomainsDescribeRetention(t *testing.T) {
	s := natstest.RunJetStream(t)
	nc := natstest.Connect(t, s)
	// Someone else's stream captures the payments input.
	createStream(t, nc, "PAYMENTS_RAW", "mesh.payments.in.>")
	m, err := meshflow.NewMesh(mesh.Domains(), meshflow.WithNATS(nc), meshflow.WithRetention(devRetention))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() { stop(); <-done }()
	// Every stream exists once every domain runs.
	testutil.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		for _, d := range m.Status() {
			if d.State != meshflow.DomainRunning {
				return fmt.Errorf("domain %s is %s", d.Name, d.State)
			}
		}
		return nil
	})
	{
		r := run(t.Context(), "", "domains", "describe", "orders", "-s", serverURL(s))
		if r.err != nil {
			t.Fatal(r.err)
		}
		for _, want := range []string{
			"Dead letters: MESH_ORDERS__DLQ (max age 1h0m0s, max bytes 30 MiB, max messages unlimited, discard old)",
			"input port checkout (contract v1) on mesh.orders.in.checkout\n  stream:  MESH_ORDERS_IN_CHECKOUT (max age 1h0m0s, max bytes 30 MiB, max messages unlimited, discard old)\n",
			"output port placed (contract v1) on mesh.orders.placed\n  about:   every valid order\n  stream:  MESH_ORDERS_PLACED (max age 1h0m0s, max bytes 30 MiB, max messages unlimited, discard old)\n",
		} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("describe does not show %q:\n%s", want, r.stdout)
			}
		}
	}
	r := run(t.Context(), "", "domains", "describe", "payments", "-s", serverURL(s))
	if want := "stream:  PAYMENTS_RAW (max age unlimited, max bytes unlimited, max messages unlimited, discard old; made outside Meshflow, which leaves its limits alone)"; r.err != nil || !strings.Contains(r.stdout, want) {
		t.Errorf("describe payments: %v: no %q in\n%s", r.err, want, r.stdout)
	}
	r = run(t.Context(), "", "domains", "describe", "analytics", "-o", "json", "-s", serverURL(s))
	var d meshflow.DomainStatus
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil {
		t.Fatalf("describe -o json: %v\n%s", err, r.stdout)
	}
	want := meshflow.StreamStatus{Name: "MESH_ANALYTICS_BIG_ORDERS", Managed: true, MaxAge: time.Hour, MaxBytes: 30 << 20, Discard: "old"}
	for _, p := range d.Ports {
		if p.Name == "big_orders" && (p.Stream == nil || *p.Stream != want) {
			t.Errorf("big_orders stream %+v, want %+v", p.Stream, want)
		}
	}
	if !strings.Contains(r.stdout, `"max_age": 3600000000000,`) || !strings.Contains(r.stdout, `"max_bytes": 31457280,`) {
		t.Errorf("JSON lacks the limits:\n%s", r.stdout)
	}
}

// freeAddr returns a loopback address no one listens on (for a moment).
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestDevStreamsBounded: every stream `meshflow dev` makes for the example
// mesh has the dev retention. The streams are read from the data directory
// once dev has stopped: producers may not read the input streams' config.
func TestDevStreamsBounded(t *testing.T) {
	addr := freeAddr(t)
	dataDir := filepath.Join(t.TempDir(), "dev")
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan result, 1)
	go func() {
		done <- run(ctx, "", "dev", "--data-dir", dataDir, "--listen", addr, "--rate", "50", "--every", "1h")
	}()
	testutil.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		nc, err := nats.Connect("nats://"+addr, nats.CustomInboxPrefix(domains.InboxPrefix("producer")))
		if err != nil {
			return err
		}
		defer nc.Close()
		msg, err := nc.Request(meshflow.CatalogSubject, nil, time.Second)
		if err != nil {
			return err
		}
		var st []meshflow.DomainStatus
		if err := json.Unmarshal(msg.Data, &st); err != nil {
			return err
		}
		for _, d := range st {
			if d.State != meshflow.DomainRunning {
				return fmt.Errorf("domain %s is %s", d.Name, d.State)
			}
		}
		return nil
	})
	stop()
	if r := <-done; r.err != nil && !errors.Is(r.err, context.Canceled) {
		t.Fatalf("dev: %v\n%s", r.err, r.stderr)
	}
	srv, err := natsembed.Start(t.Context(), natsembed.Config{Name: "reader", StoreDir: filepath.Join(dataDir, "nats"), DontListen: true})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.WithoutCancel(t.Context()))
	js := natstest.JetStream(t, natstest.Connect(t, srv))
	subjects := []string{"mesh.orders.in.checkout", "mesh.orders.placed", "mesh.orders._dlq",
		"mesh.payments.in.transactions", "mesh.payments.settled", "mesh.payments._dlq",
		"mesh.analytics.big_orders", "mesh.analytics.settled_eur", "mesh.analytics._dlq"}
	for _, subj := range subjects {
		name, err := js.StreamNameBySubject(t.Context(), subj)
		if err != nil {
			t.Fatalf("stream for %s: %v", subj, err)
		}
		s, err := js.Stream(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		cfg := s.CachedInfo().Config
		if cfg.MaxAge != devRetention.MaxAge || cfg.MaxBytes != devRetention.MaxBytes || cfg.Discard != jetstream.DiscardOld {
			t.Errorf("stream %s: max age %v, max bytes %d, discard %v; want %v, %d, old",
				name, cfg.MaxAge, cfg.MaxBytes, cfg.Discard, devRetention.MaxAge, devRetention.MaxBytes)
		}
	}
}

// TestBoundDevStreams: the streams of a pipeline dev runs outside a mesh
// get the dev retention, and its source and sink use them.
func TestBoundDevStreams(t *testing.T) {
	s := natstest.RunJetStream(t)
	nc := natstest.Connect(t, s)
	js := natstest.JetStream(t, nc)
	createStream(t, nc, "BIDS_IN", "bids.in") // made by an earlier run, unbounded
	if err := boundDevStreams(t.Context(), nc, devRetention, "bids.in", "bids.in.dlq", "bids.top"); err != nil {
		t.Fatal(err)
	}
	for subj, name := range map[string]string{"bids.in": "BIDS_IN", "bids.in.dlq": "BIDS_IN_DLQ", "bids.top": "BIDS_TOP"} {
		got, err := natsio.EnsureStream(t.Context(), js, "OTHER", []string{subj})
		if err != nil || got != name {
			t.Errorf("%s: a source or sink would use stream %q (%v), want %s", subj, got, err, name)
		}
		st, err := js.Stream(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		if cfg := st.CachedInfo().Config; cfg.MaxAge != devRetention.MaxAge || cfg.MaxBytes != devRetention.MaxBytes || cfg.Discard != jetstream.DiscardOld {
			t.Errorf("stream %s: max age %v, max bytes %d, discard %v", name, cfg.MaxAge, cfg.MaxBytes, cfg.Discard)
		}
	}
}
