package meshflow_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow/domains"
	"github.com/meshflow/meshflow/internal/natsembed"
	"github.com/meshflow/meshflow/internal/testutil"
)

// totalsRow is a row of mesh.analytics.customer_totals.
type totalsRow struct {
	OrderID    int64   `json:"order_id"`
	CustomerID string  `json:"customer_id"`
	Orders     int64   `json:"orders"`
	Total      float64 `json:"total"`
}

// TestDevSavepointRestore drives the built binaries as an operator does:
// `meshflow dev` runs the example mesh, the real `nats pub` publishes
// orders, `meshflow savepoint analytics` takes a savepoint of the
// analytics domain's job, more orders come, the node stops with Ctrl-C and
// starts again with `--restore analytics=<id>`. The analytics job resumes
// from the savepoint: it reads the orders after it again and, its state
// rewound, computes the same running totals for them as the first time;
// the orders domain, which resumes from its latest checkpoint, publishes
// nothing twice.
func TestDevSavepointRestore(t *testing.T) {
	bin := meshflowBinary(t)
	dataDir := t.TempDir()
	port := freePort(t)
	p := startDev(t, bin, dataDir, port, "--checkpoint-interval", "200ms")
	const first, second = 100, 50
	natsPub(t, p.url, "", first)
	waitMsgs(t, p.url, "MESH_ANALYTICS_CUSTOMER_TOTALS", first)

	out, err := exec.Command(bin, "savepoint", "analytics", "-s", p.url, "--inbox-prefix", domains.InboxPrefix("producer"), "-o", "json").CombinedOutput()
	if err != nil {
		t.Fatalf("meshflow savepoint: %v\n%s", err, out)
	}
	var sp struct {
		Job  string `json:"job"`
		ID   uint64 `json:"id"`
		Kind string `json:"kind"`
	}
	if err := json.Unmarshal(out, &sp); err != nil || sp.ID == 0 || sp.Kind != "savepoint" || sp.Job != "analytics.pipeline" {
		t.Fatalf("meshflow savepoint said %s (%v)", out, err)
	}

	natsPub(t, p.url, "900000", second)
	waitMsgs(t, p.url, "MESH_ANALYTICS_CUSTOMER_TOTALS", first+second)
	p.interrupt(t)

	p = startDev(t, bin, dataDir, port, "--checkpoint-interval", "200ms", "--restore", "analytics="+strconv.FormatUint(sp.ID, 10))
	waitMsgs(t, p.url, "MESH_ANALYTICS_CUSTOMER_TOTALS", first+2*second)
	list, err := exec.Command(bin, "checkpoints", "list", "analytics", "-s", p.url, "--inbox-prefix", domains.InboxPrefix("producer")).CombinedOutput()
	if err != nil || !strings.Contains(string(list), "savepoint") {
		t.Errorf("meshflow checkpoints list: %v\n%s", err, list)
	}
	p.interrupt(t)

	rows := readStream[totalsRow](t, filepath.Join(dataDir, "nats"), "MESH_ANALYTICS_CUSTOMER_TOTALS")
	byID := map[int64][]totalsRow{}
	for _, r := range rows {
		byID[r.OrderID] = append(byID[r.OrderID], r)
	}
	for k := 1; k <= first+second; k++ {
		id := int64(k)
		want := 1
		if k > first {
			id, _ = strconv.ParseInt("900000"+strconv.Itoa(k-first), 10, 64)
			want = 2 // once before the restore, once after it
		}
		got := byID[id]
		if len(got) != want {
			t.Errorf("order %d has %d running totals, want %d", id, len(got), want)
			continue
		}
		for _, r := range got {
			if r.Orders != int64(k) || r.Total != 12.5*float64(k) || r.CustomerID != "c-1" {
				t.Errorf("order %d: %+v, want orders %d, total %v", id, r, k, 12.5*float64(k))
			}
		}
	}
	placed := readStream[totalsRow](t, filepath.Join(dataDir, "nats"), "MESH_ORDERS_PLACED")
	if len(placed) != first+second {
		t.Errorf("orders.placed holds %d orders, want %d: the orders domain resumed from its own latest checkpoint", len(placed), first+second)
	}
}

// waitMsgs waits until stream holds n messages, reading it as a producer.
func waitMsgs(t *testing.T, url, stream string, n uint64) {
	t.Helper()
	nc, err := nats.Connect(url, nats.CustomInboxPrefix(domains.InboxPrefix("producer")))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, time.Minute, 50*time.Millisecond, func() error {
		s, err := js.Stream(t.Context(), stream)
		if err != nil {
			return err
		}
		if got := s.CachedInfo().State.Msgs; got != n {
			return fmt.Errorf("%s holds %d messages, want %d", stream, got, n)
		}
		return nil
	})
}

// readStream opens the JetStream store a stopped `meshflow dev` left and
// decodes every message of stream as a T.
func readStream[T any](t *testing.T, storeDir, stream string) []T {
	t.Helper()
	ctx := testutil.Context(t, time.Minute)
	srv, err := natsembed.Start(ctx, natsembed.Config{Name: "reader", StoreDir: storeDir, DontListen: true})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.WithoutCancel(ctx))
	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []T
	for i := uint64(0); i < s.CachedInfo().State.Msgs; i++ {
		m, err := c.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("%s: message %d of %d: %v", stream, i+1, s.CachedInfo().State.Msgs, err)
		}
		var v T
		if err := json.Unmarshal(m.Data(), &v); err != nil {
			t.Fatalf("%s: %q: %v", stream, m.Data(), err)
		}
		out = append(out, v)
	}
	return out
}
