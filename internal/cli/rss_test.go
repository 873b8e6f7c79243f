package cli

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshflow/meshflow/actors/natsio"
)

// vmRSS reads the resident set size of process pid, in bytes.
func vmRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// TestDevRSS runs the built `meshflow dev` with its generator at the
// default --rate 2000 (2,000 checkout events and 2,000 payments a second)
// for 150 s: the duplicate windows of its streams fill within 45 s, and
// the busiest streams reach their retention (30 MiB) after 80 to 120 s.
// It checks that the resident set stays within 200 MiB. It runs only with
// MESHFLOW_DEV_RSS=1:
//
//	MESHFLOW_DEV_RSS=1 go test -run TestDevRSS -v ./internal/cli/
func TestDevRSS(t *testing.T) {
	if os.Getenv("MESHFLOW_DEV_RSS") != "1" {
		t.Skip("set MESHFLOW_DEV_RSS=1 to run (about 160 s)")
	}
	const limit = 200 << 20
	dir := t.TempDir()
	bin := filepath.Join(dir, "meshflow")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/meshflow/meshflow/cmd/meshflow").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "dev", "--data-dir", filepath.Join(dir, "data"), "--listen", "", "--every", "10s")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOMEMLIMIT=") && !strings.HasPrefix(kv, "GOGC=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	const run = 150 * time.Second
	if natsio.DuplicateWindow > run/2 {
		t.Fatalf("a run of %v does not fill the duplicate window of %v for long", run, natsio.DuplicateWindow)
	}
	var peak int64
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for end := time.Now().Add(run); time.Now().Before(end); {
		select {
		case err := <-exited:
			t.Fatalf("dev exited early: %v\n%s", err, stderr.String())
		case <-tick.C:
		}
		rss, err := vmRSS(cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		peak = max(peak, rss)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := <-exited; err != nil {
		t.Fatalf("dev: %v\n%s", err, stderr.String())
	}
	out := stdout.String()
	i := strings.LastIndex(out, "DOMAIN")
	if i < 0 {
		t.Fatalf("dev printed no status:\n%s\n%s", out, stderr.String())
	}
	last := out[i:]
	t.Logf("peak RSS %.1f MiB over %v; last status:\n%s", float64(peak)/(1<<20), run, last)
	if !strings.Contains(last, "orders") || strings.Contains(last, "failed") {
		t.Errorf("the mesh did not run:\n%s", out)
	}
	if peak > limit {
		t.Errorf("peak RSS %.1f MiB, over %d MiB", float64(peak)/(1<<20), limit>>20)
	}
}
