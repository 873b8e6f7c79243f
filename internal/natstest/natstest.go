// Package natstest gives tests a one-line embedded NATS server with
// JetStream, torn down when the test ends.
//
//	srv := natstest.RunJetStream(t)
//	nc := natstest.Connect(t, srv)
//
// Set MESHFLOW_TEST_NATS_LOG=1 to see the server's logs in the test output.
package natstest

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow/internal/logging"
	"github.com/meshflow/meshflow/internal/natsembed"
	"github.com/meshflow/meshflow/internal/testutil"
)

// RunJetStream starts an embedded server on a random loopback port with
// its store in a temporary directory.
func RunJetStream(t testing.TB) *natsembed.Server {
	t.Helper()
	var l *slog.Logger = logging.Discard()
	if os.Getenv("MESHFLOW_TEST_NATS_LOG") == "1" {
		l = testutil.TestLogger(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := natsembed.Start(ctx, natsembed.Config{
		Name: "test", StoreDir: t.TempDir(), Port: -1, Logger: l,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	return srv
}

// Connect opens an in-process connection to srv, closed when the test ends.
func Connect(t testing.TB, srv *natsembed.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := srv.Connect(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// JetStream returns a JetStream context on nc.
func JetStream(t testing.TB, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// Binary returns the path of a NATS binary ("nats-server" or "nats") for
// tests that drive separate processes as users do: from PATH, else from
// $(go env GOPATH)/bin, where scripts/install-nats.sh (run by .ci/run)
// puts them. A missing binary fails the test with the command to install it.
func Binary(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			gopath = strings.TrimSpace(string(out))
		}
	}
	for _, dir := range filepath.SplitList(gopath) {
		p := filepath.Join(dir, "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatalf("%s not found on PATH or in $(go env GOPATH)/bin: run bash scripts/install-nats.sh", name)
	return ""
}
