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
