// Package testutil holds test helpers: polling instead of sleeping, and a
// logger writing through the test's log.
package testutil

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Seed returns the seed of a randomized test: MESHFLOW_SEED when set,
// else a random one. It logs it, with how to replay it.
func Seed(t testing.TB) uint64 {
	t.Helper()
	s := rand.Uint64()
	if env := os.Getenv("MESHFLOW_SEED"); env != "" {
		v, err := strconv.ParseUint(env, 10, 64)
		if err != nil {
			t.Fatalf("MESHFLOW_SEED=%q: %v", env, err)
		}
		s = v
	}
	t.Logf("seed %d (MESHFLOW_SEED=%d replays)", s, s)
	return s
}

// CheckFor calls f every `every` until it returns nil; if it still fails
// after total, the test fails with f's last error.
func CheckFor(t testing.TB, total, every time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", total, err)
		}
		time.Sleep(every)
	}
}

// TestLogger returns a logger writing through t.Log; it goes quiet once the
// test has ended.
func TestLogger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// Context returns a context cancelled when the test ends or after d.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
