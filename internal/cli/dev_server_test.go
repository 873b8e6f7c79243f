package cli

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
)

// runNATSServer starts the real nats-server binary in its own process,
// requiring user and password.
func runNATSServer(t *testing.T, user, password string) string {
	t.Helper()
	return natstest.RunServerProcess(t, "--user", user, "--pass", password)
}

// TestDevOnExistingServer runs `meshflow dev --server` on a real
// nats-server in its own process: the example mesh runs there, an event
// published with the real nats CLI goes through it, and its data product
// is read back.
func TestDevOnExistingServer(t *testing.T) {
	url := runNATSServer(t, "mf", "s3cret")
	auth := []string{"--user", "mf", "--password", "s3cret"}
	dataDir := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, append([]string{"dev", "--server", url, "--data-dir", dataDir, "--generator=false", "--every", "1h"}, auth...),
			strings.NewReader(""), &stdout, &stderr)
	}()
	testutil.CheckFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		select {
		case code := <-done:
			t.Fatalf("dev --server ended with %d: %s", code, stderr.String())
		default:
		}
		r := run(t.Context(), "", append([]string{"domains", "list", "-s", url}, auth...)...)
		if r.err != nil {
			return r.err
		}
		if strings.Count(r.stdout, " running ") != 3 {
			return fmt.Errorf("domains list:\n%s", r.stdout)
		}
		return nil
	})
	if out, err := natsCLI(t, url, "", append(auth, "pub", "mesh.orders.in.checkout", checkoutEvent(42, "c-42"))...); err != nil {
		t.Fatalf("nats pub: %v\n%s", err, out)
	}
	out, err := natsCLI(t, url, "", append(auth, "sub", "mesh.analytics.big_orders", "--stream", "MESH_ANALYTICS_BIG_ORDERS", "--all", "--count", "1", "--raw")...)
	if err != nil || !strings.Contains(out, `"order_id":42,`) {
		t.Fatalf("reading the data product back: %v\n%s", err, out)
	}
	cancel()
	if code := <-done; code != ExitOK {
		t.Fatalf("dev --server stopped with %d: %s", code, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dataDir, "nats")); !os.IsNotExist(err) {
		t.Errorf("dev --server started an embedded server too (%s exists)", filepath.Join(dataDir, "nats"))
	}
	if !strings.Contains(stderr.String(), `msg="connected to NATS" url=`+url) {
		t.Errorf("dev --server does not say where it runs:\n%s", stderr.String())
	}
}

// TestDevBusyPort: when the port to listen on is taken, dev fails at once
// with a one-line error and a non-zero exit code, not after a timeout.
func TestDevBusyPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var stdout, stderr syncBuffer
	start := time.Now()
	code := Main(ctx, []string{"dev", "--listen", l.Addr().String(), "--data-dir", t.TempDir(), "--log-level", "error"},
		strings.NewReader(""), &stdout, &stderr)
	t.Logf("dev on a busy port returned in %v", time.Since(start))
	if ctx.Err() != nil {
		t.Fatal("dev waited for the test's deadline")
	}
	if code != ExitError {
		t.Errorf("exit code %d, want %d", code, ExitError)
	}
	want := "meshflow: natsembed: server meshflow-dev: Error listening on port: " + l.Addr().String()
	if got := stderr.String(); !strings.HasPrefix(got, want) || !strings.Contains(got, "address already in use") || strings.Count(got, "\n") != 1 {
		t.Errorf("stderr %q, want one line starting %q", got, want)
	}
}

// TestDevCtrlC: Ctrl-C (the cancelled context) stops dev cleanly at every
// stage of startup: before it starts, and while a server it was told to
// use accepts the connection but never answers.
func TestDevCtrlC(t *testing.T) {
	t.Run("before startup", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		dataDir := t.TempDir()
		var stdout, stderr syncBuffer
		if code := Main(ctx, []string{"dev", "--listen", "127.0.0.1:0", "--data-dir", dataDir}, strings.NewReader(""), &stdout, &stderr); code != ExitOK {
			t.Fatalf("exit code %d: %s", code, stderr.String())
		}
		if _, err := os.Stat(filepath.Join(dataDir, "nats")); !os.IsNotExist(err) {
			t.Errorf("the embedded server was started: %v", err)
		}
	})
	t.Run("during the handshake with --server", func(t *testing.T) {
		// A server that accepts connections and never says a word.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		accepted := make(chan net.Conn, 1)
		go func() {
			c, err := l.Accept()
			if err == nil {
				accepted <- c
			}
		}()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		var stdout, stderr syncBuffer
		done := make(chan int, 1)
		go func() {
			done <- Main(ctx, []string{"dev", "--server", "nats://" + l.Addr().String(), "--timeout", "10m", "--data-dir", t.TempDir()},
				strings.NewReader(""), &stdout, &stderr)
		}()
		var c net.Conn
		select {
		case c = <-accepted:
		case code := <-done:
			t.Fatalf("dev ended with %d before connecting: %s", code, stderr.String())
		}
		defer c.Close()
		cancel()
		if code := <-done; code != ExitOK {
			t.Fatalf("exit code %d after Ctrl-C: %s", code, stderr.String())
		}
	})
}

func TestDevUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--listen", "127.0.0.1:4999", "--server", "nats://127.0.0.1:4222"}, "meshflow: --listen is for the embedded server; --server runs on an existing one"},
		{[]string{"--example", "bids", "--input", "bids.>"}, `meshflow: invalid --input "bids.>": want a subject without wildcards`},
		{[]string{"--example", "bids", "--results", "top..x"}, `meshflow: invalid --results "top..x": want a subject without wildcards`},
		{[]string{"--listen", "127.0.0.1:http"}, `meshflow: invalid --listen "127.0.0.1:http": bad port`},
		{[]string{"--server", "nats://127.0.0.1:4222", "--password", "x"}, "meshflow: --password needs --user"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr syncBuffer
			code := Main(t.Context(), append([]string{"dev", "--data-dir", t.TempDir()}, tc.args...), strings.NewReader(""), &stdout, &stderr)
			if code != ExitUsage || stderr.String() != tc.want+"\n" {
				t.Errorf("exit code %d, stderr %q; want %d, %q", code, stderr.String(), ExitUsage, tc.want)
			}
		})
	}
}
