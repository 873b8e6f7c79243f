package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow/cluster/checkpoint"
	ref "github.com/meshflow/meshflow/examples/nexmark/internal/reference"
	"github.com/meshflow/meshflow/examples/nexmark/queries"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/nexmark"
	"github.com/meshflow/meshflow/internal/testutil"
)

// natsServer starts the real nats-server binary in its own process,
// JetStream on, its store in a temporary directory, and returns its URL;
// it is stopped when the test ends. Without the binary the test is
// skipped, unless $CI is set: there it must run, and fails with how to
// install it.
func natsServer(t *testing.T) string {
	t.Helper()
	if !haveBinary("nats-server") && os.Getenv("CI") == "" {
		t.Skip("nats-server is not on PATH or in $(go env GOPATH)/bin (bash scripts/install-nats.sh installs it); under CI this test fails instead")
	}
	return natstest.RunServerProcess(t)
}

// haveBinary says whether natstest.Binary finds name.
func haveBinary(name string) bool {
	if _, err := exec.LookPath(name); err == nil {
		return true
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			gopath = strings.TrimSpace(string(out))
		}
	}
	for _, dir := range filepath.SplitList(gopath) {
		if _, err := os.Stat(filepath.Join(dir, "bin", name)); err == nil {
			return true
		}
	}
	return false
}

// runProcess is a `nexmark run` in its own process.
type runProcess struct {
	cmd    *exec.Cmd
	stderr syncBuffer
	done   chan error
}

func startRun(t *testing.T, dir string, args ...string) *runProcess {
	t.Helper()
	p := &runProcess{cmd: exec.Command(binary, args...), done: make(chan error, 1)}
	p.cmd.Dir = dir
	p.cmd.Stdout = &p.stderr // nothing is printed with --output-subject
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
		}
		<-p.wait()
	})
	return p
}

// wait returns a channel with the process's exit; it can be called again.
func (p *runProcess) wait() <-chan error {
	ch := make(chan error, 1)
	go func() {
		err := <-p.done
		p.done <- err
		ch <- err
	}()
	return ch
}

// exit waits up to d for the process to end and returns its error.
func (p *runProcess) exit(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case err := <-p.wait():
		return err
	case <-time.After(d):
		_ = p.cmd.Process.Kill()
		t.Fatalf("nexmark %v did not end within %v: %s", p.cmd.Args[1:], d, p.stderr.String())
		return nil
	}
}

// natsPub publishes evs to subject with `nats pub --jetstream`, one
// message per line of its stdin.
func natsPub(ctx context.Context, t *testing.T, url, subject string, evs []nexmark.Event) {
	t.Helper()
	var stdin bytes.Buffer
	for i := range evs {
		stdin.Write(append(nexmark.AppendEventJSON(nil, &evs[i]), '\n'))
	}
	cmd := exec.CommandContext(ctx, natstest.Binary(t, "nats"), "-s", url, "pub", subject, "--jetstream",
		"--send-on", "newline", "--force-stdin", "--no-templates", "--quiet")
	cmd.Stdin = &stdin
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nats pub: %v\n%s", err, out)
	}
}

// checkServerState checks that what a restart of job needs is on the
// NATS server: its latest checkpoint in the KV bucket
// meshflow_checkpoints, that checkpoint's snapshots in the Object Store
// bucket meshflow_snapshots, and its durable consumer (named as the job)
// with every event acknowledged.
func checkServerState(ctx context.Context, t *testing.T, js jetstream.JetStream, job, subject string) {
	t.Helper()
	store, err := checkpoint.OpenStore(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	meta, err := store.Latest(ctx, job)
	if err != nil || meta == nil {
		t.Fatalf("latest checkpoint of %s: %v, %v", job, meta, err)
	}
	latest := strconv.FormatUint(meta.GetId(), 10)
	obs, err := js.ObjectStore(ctx, "meshflow_snapshots")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := obs.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, o := range objs {
		if strings.HasPrefix(o.Name, job+"/"+latest+"/") {
			n++
		}
	}
	if n == 0 {
		t.Fatalf("no snapshot of %s checkpoint %s in meshflow_snapshots", job, latest)
	}
	stream, err := js.StreamNameBySubject(ctx, subject)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.Consumer(ctx, stream, job)
	if err != nil {
		t.Fatalf("consumer %s of %s: %v", job, stream, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumPending != 0 || info.NumAckPending != 0 || info.AckFloor.Stream != info.Delivered.Stream {
		t.Fatalf("consumer %s: %d pending, %d unacknowledged, acknowledged to %d of %d", job,
			info.NumPending, info.NumAckPending, info.AckFloor.Stream, info.Delivered.Stream)
	}
}

// outputRows reads every message of the output stream of subject, in
// stream order, as lines.
func outputRows(ctx context.Context, t *testing.T, js jetstream.JetStream, subject string) []byte {
	t.Helper()
	name, err := js.StreamNameBySubject(ctx, subject)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	n := int(s.CachedInfo().State.Msgs)
	if n == 0 {
		return nil
	}
	cons, err := js.OrderedConsumer(ctx, name, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for rows := 0; rows < n; {
		msgs, err := cons.Fetch(n-rows, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range msgs.Messages() {
			out = append(append(out, m.Data()...), '\n')
			got++
		}
		if err := msgs.Error(); err != nil {
			t.Fatal(err)
		}
		if got == 0 {
			t.Fatalf("output stream %s: %d of %d messages read", name, rows, n)
		}
		rows += got
	}
	return out
}

// perKeyOrder checks that, for each value of key, the output rows of that
// key come in the order of the reference's (q4 and q6 update a key's
// average with each closing).
func perKeyOrder(t *testing.T, out []byte, want []ref.Row, key string) {
	t.Helper()
	seq := func(rows []ref.Row) map[string][]string {
		m := map[string][]string{}
		for _, r := range rows {
			m[r[key]] = append(m[r[key]], fmt.Sprint(map[string]string(r)))
		}
		return m
	}
	var got []ref.Row
	for _, l := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		r, err := ref.Parse([]byte(l))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, r)
	}
	g, w := seq(got), seq(want)
	for k, ws := range w {
		if fmt.Sprint(g[k]) != fmt.Sprint(ws) {
			t.Fatalf("%s %s: rows in order\n%v\nwant\n%v", key, k, g[k], ws)
		}
	}
}

// TestJetStreamStatefulRestart runs the stateful queries q4 to q8
// (windows, window joins, keyed state and event-time timers) with the
// built binary against a real nats-server in its own process, as users of
// `nats pub` do: the events, at 50 a second of event time and out of
// order by up to 2 s, are published to a JetStream subject in parts;
// `nexmark run --subject --output-subject` is started, interrupted with
// SIGINT once results are out, started again and killed with SIGKILL at a
// seeded random moment (MESHFLOW_SEED replays it), started again and
// stopped with SIGTERM, and started a last time with --bounded, which
// ends once the stream is read. The output stream then holds, as a
// multiset, exactly the plain-Go reference's rows over all the events —
// nothing missing, nothing twice — and q4's and q6's averages come in the
// reference's order per category and per seller. The runs leave their
// working directory empty: what a restart needs is on the server.
func TestJetStreamStatefulRestart(t *testing.T) {
	url := natsServer(t)
	nc, err := nats.Connect(url, nats.Name("nexmark-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js := natstest.JetStream(t, nc)
	ctx := testutil.Context(t, 3*time.Minute)
	seed := testutil.Seed(t)

	const events, rate = 5000, 50
	g := nexmark.NewGenerator(nexmark.Config{Seed: int64(seed % 1000), EventsPerSecond: rate})
	evs := make([]nexmark.Event, events)
	for i := range evs {
		evs[i] = g.NextEvent()
	}
	arrivals := ref.Disorder(evs, 2*time.Second, seed)

	for i, tc := range []struct {
		q      string
		perKey string // the key whose rows come in the reference's order
	}{
		{"q4", "category"},
		{"q5", ""},
		{"q6", "seller"},
		{"q7", ""},
		{"q8", ""},
	} {
		t.Run(tc.q, func(t *testing.T) {
			want := ref.Results(tc.q, evs)
			if len(want) == 0 {
				t.Fatalf("%s: the reference has no rows: the test would prove nothing", tc.q)
			}
			subject, outSubject := "nx."+tc.q+".events", "nx."+tc.q+".out"
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS_" + strings.ToUpper(tc.q), Subjects: []string{subject}}); err != nil {
				t.Fatal(err)
			}
			published := 0
			publish := func(upTo int) {
				for ; published < upTo; published++ {
					if _, err := js.Publish(ctx, subject, nexmark.AppendEventJSON(nil, &arrivals[published])); err != nil {
						t.Fatal(err)
					}
				}
			}
			// Every run starts in the same empty directory, which stays
			// empty: a restart keeps nothing on the local disk.
			workDir := t.TempDir()
			run := []string{"run", "-q", tc.q, "--subject", subject, "--output-subject", outSubject, "-s", url}
			rows := func() int {
				return strings.Count(string(outputRows(ctx, t, js, outSubject)), "\n")
			}
			r := rand.New(rand.NewPCG(seed, uint64(i)))

			// Run 1: interrupted with Ctrl-C once results are out.
			publish(events * 2 / 5)
			p := startRun(t, workDir, run...)
			testutil.CheckFor(t, time.Minute, 50*time.Millisecond, func() error {
				if n := rows(); n == 0 {
					return fmt.Errorf("no results yet; stderr %q", p.stderr.String())
				}
				return nil
			})
			publish(events / 2)
			if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
				t.Fatal(err)
			}
			if err := p.exit(t, time.Minute); err != nil {
				t.Fatalf("interrupted run: %v: %s", err, p.stderr.String())
			}
			afterInterrupt := rows()

			// Run 2: killed at a random moment while events come in.
			p = startRun(t, workDir, run...)
			kill := time.Duration(200+r.IntN(2800)) * time.Millisecond
			t.Logf("run 1 published %d rows; run 2 is killed after %v", afterInterrupt, kill)
			deadline := time.Now().Add(kill)
			for published < events*4/5 && time.Now().Before(deadline) {
				publish(min(published+50, events*4/5))
			}
			time.Sleep(time.Until(deadline))
			if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			if err := p.exit(t, time.Minute); err == nil {
				t.Fatalf("killed run exited 0: %s", p.stderr.String())
			}
			t.Logf("%d rows after the kill", rows())
			publish(events * 4 / 5)

			// Run 3: started again after the kill, stopped with SIGTERM.
			p = startRun(t, workDir, run...)
			publish(events * 9 / 10)
			testutil.CheckFor(t, time.Minute, 50*time.Millisecond, func() error {
				if n := rows(); n <= afterInterrupt {
					return fmt.Errorf("%d rows, no more since the first run; stderr %q", n, p.stderr.String())
				}
				return nil
			})
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if err := p.exit(t, time.Minute); err != nil {
				t.Fatalf("run after the kill, stopped with SIGTERM: %v: %s", err, p.stderr.String())
			}

			// Run 4: bounded, to the end of the stream. The last events
			// are published with the real `nats pub` when it is installed
			// (under CI it is).
			if haveBinary("nats") || os.Getenv("CI") != "" {
				natsPub(ctx, t, url, subject, arrivals[published:])
				published = events
				if s, err := js.Stream(ctx, "EVENTS_"+strings.ToUpper(tc.q)); err != nil || s.CachedInfo().State.Msgs != events {
					t.Fatalf("after nats pub: %v, %+v", err, s.CachedInfo().State)
				}
			}
			publish(events)
			p = startRun(t, workDir, append(run, "--bounded")...)
			if err := p.exit(t, time.Minute); err != nil {
				t.Fatalf("bounded run: %v: %s", err, p.stderr.String())
			}
			if s := p.stderr.String(); s != "" {
				t.Fatalf("bounded run wrote %q", s)
			}

			out := outputRows(ctx, t, js, outSubject)
			diff, err := ref.Diff(out, want)
			if err != nil {
				t.Fatal(err)
			}
			if diff != "" {
				t.Fatalf("%s after Ctrl-C, SIGKILL, SIGTERM and a bounded run: %s", tc.q, diff)
			}
			if tc.perKey != "" {
				perKeyOrder(t, out, want, tc.perKey)
			}
			if ents, err := os.ReadDir(workDir); err != nil || len(ents) != 0 {
				t.Fatalf("the runs left %v in their working directory (%v)", ents, err)
			}
			checkServerState(ctx, t, js, queries.Name(tc.q), subject)
		})
	}
}
