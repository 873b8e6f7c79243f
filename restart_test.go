package meshflow_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/domains"
	"github.com/meshflow/meshflow/internal/natsembed"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// meshflowBinary builds cmd/meshflow once per test run.
func meshflowBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "meshflow-bin")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "meshflow")
		out, err := exec.Command("go", "build", "-o", builtBin, "./cmd/meshflow").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// devProcess is a running `meshflow dev`.
type devProcess struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	url  string
	done chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startDev runs the example mesh on its embedded server without the
// generator, with the extra flags given, and waits until every domain runs.
func startDev(t *testing.T, bin, dataDir string, port int, extra ...string) *devProcess {
	t.Helper()
	args := append([]string{"dev", "--generator=false", "--data-dir", dataDir,
		"--listen", "127.0.0.1:" + strconv.Itoa(port), "--every", "1h"}, extra...)
	return startDevArgs(t, bin, fmt.Sprintf("nats://127.0.0.1:%d", port), args...)
}

// startDevArgs runs the meshflow binary with args, a `meshflow dev` whose
// clients reach NATS at url, and waits until every domain runs.
func startDevArgs(t *testing.T, bin, url string, args ...string) *devProcess {
	t.Helper()
	p := &devProcess{out: &syncBuffer{}, url: url, done: make(chan error, 1)}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	testutil.CheckFor(t, time.Minute, 50*time.Millisecond, func() error {
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("meshflow dev exited: %v\n%s", err, p.out.String())
		default:
		}
		st, err := p.status()
		if err != nil {
			return err
		}
		for _, d := range st {
			if d.State != meshflow.DomainRunning {
				return fmt.Errorf("domain %s is %s", d.Name, d.State)
			}
		}
		return nil
	})
	return p
}

// status asks the running mesh for its catalog, as a producer does.
func (p *devProcess) status() ([]meshflow.DomainStatus, error) {
	nc, err := nats.Connect(p.url, nats.Timeout(time.Second), nats.CustomInboxPrefix(domains.InboxPrefix("producer")))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	msg, err := nc.Request(meshflow.CatalogSubject, nil, 2*time.Second)
	if err != nil {
		return nil, err
	}
	var st []meshflow.DomainStatus
	return st, json.Unmarshal(msg.Data, &st)
}

func (p *devProcess) port(domain, name string) (meshflow.PortStatus, error) {
	st, err := p.status()
	if err != nil {
		return meshflow.PortStatus{}, err
	}
	for _, d := range st {
		for _, ps := range d.Ports {
			if d.Name == domain && ps.Name == name {
				return ps, nil
			}
		}
	}
	return meshflow.PortStatus{}, fmt.Errorf("no port %s.%s", domain, name)
}

// interrupt sends Ctrl-C and waits for a clean exit.
func (p *devProcess) interrupt(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("meshflow dev after Ctrl-C: %v\n%s", err, p.out.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("meshflow dev still running a minute after Ctrl-C\n%s", p.out.String())
	}
}

// natsPub publishes count checkout events with the real nats CLI; their
// order ids are prefix followed by 1 ... count.
func natsPub(t *testing.T, url, prefix string, count int) {
	t.Helper()
	body := `{"order_id":` + prefix + `{{ Count }},"customer_id":"c-1","amount":12.5,"currency":"EUR","placed_at":"2026-01-01T00:00:00Z"}`
	out, err := exec.Command(natstest.Binary(t, "nats"), "-s", url, "pub", "mesh.orders.in.checkout", body,
		"--count", strconv.Itoa(count), "--quiet").CombinedOutput()
	if err != nil {
		t.Fatalf("nats pub: %v\n%s", err, out)
	}
}

// TestRestartKeepsEveryRow runs `meshflow dev` as a user does, publishes
// checkout events with the real nats CLI, stops it with Ctrl-C, starts it
// again within seconds on the same data directory, publishes new events,
// and stops it again. Every order of both runs is in the data product
// exactly once: nothing of the second run is mistaken for a duplicate of
// the first (message ids derive from the events' stream positions), and
// nothing is published twice.
func TestRestartKeepsEveryRow(t *testing.T) {
	bin := meshflowBinary(t)
	dataDir := t.TempDir()
	port := freePort(t)
	const n = 5000
	// Run 1 publishes order ids 1..n; run 2 ids "900000" followed by 1..n,
	// which are all distinct from those.
	for i, prefix := range []string{"", "900000"} {
		p := startDev(t, bin, dataDir, port)
		natsPub(t, p.url, prefix, n)
		testutil.CheckFor(t, time.Minute, 100*time.Millisecond, func() error {
			ps, err := p.port("orders", "placed")
			if err != nil {
				return err
			}
			if ps.RowsOut < n {
				return fmt.Errorf("run %d: %d orders placed, want %d", i+1, ps.RowsOut, n)
			}
			return nil
		})
		p.interrupt(t)
	}

	got := readOrders(t, filepath.Join(dataDir, "nats"))
	want := map[int64]bool{}
	for c := 1; c <= n; c++ {
		want[int64(c)] = true
		id, _ := strconv.ParseInt("900000"+strconv.Itoa(c), 10, 64)
		want[id] = true
	}
	if len(want) != 2*n {
		t.Fatalf("test ids overlap: %d distinct", len(want))
	}
	for id := range want {
		if got[id] != 1 {
			t.Errorf("order %d in orders.placed %d times, want once", id, got[id])
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d distinct orders in orders.placed, want %d", len(got), len(want))
	}
}

// readOrders opens the JetStream store left by `meshflow dev` and counts
// the order ids in the orders.placed data product.
func readOrders(t *testing.T, storeDir string) map[int64]int {
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
	s, err := js.Stream(ctx, "MESH_ORDERS_PLACED")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64]int{}
	for i := uint64(0); i < info.State.Msgs; i++ {
		m, err := c.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("message %d of %d: %v", i+1, info.State.Msgs, err)
		}
		var o struct {
			OrderID int64 `json:"order_id"`
		}
		if err := json.Unmarshal(m.Data(), &o); err != nil {
			t.Fatalf("%q: %v", m.Data(), err)
		}
		got[o.OrderID]++
	}
	return got
}
