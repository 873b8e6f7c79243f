// Package natstest gives tests a one-line embedded NATS server with
// JetStream, torn down when the test ends.
//
//	srv := natstest.RunJetStream(t)
//	nc := natstest.Connect(t, srv)
//
// Set MESHFLOW_TEST_NATS_LOG=1 to see the server's logs in the test output.
package natstest

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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

// RunServerProcess starts the real nats-server binary (see [Binary]) in
// its own process, JetStream on, its store in a temporary directory, on a
// random loopback port, with args added to its command line (for example
// "--user", u, "--pass", p). It is stopped (SIGINT) when the test ends.
// It returns the URL clients connect to.
func RunServerProcess(t testing.TB, args ...string) string {
	t.Helper()
	cmd := exec.Command(Binary(t, "nats-server"), append([]string{"-js", "-sd", t.TempDir(), "-a", "127.0.0.1", "-p", "-1"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	urls := make(chan string, 1)
	re := regexp.MustCompile(`Listening for client connections on (127\.0\.0\.1:[0-9]+)`)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				urls <- "nats://" + m[1]
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		<-exited
	})
	select {
	case url := <-urls:
		return url
	case err := <-exited:
		t.Fatalf("nats-server exited: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("nats-server did not listen within 30 s")
	}
	return ""
}
