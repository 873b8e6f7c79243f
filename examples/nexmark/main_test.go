package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	ref "github.com/meshflow/meshflow/examples/nexmark/internal/reference"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/nexmark"
	"github.com/meshflow/meshflow/internal/testutil"
)

// binary is the nexmark command, built once for the package's tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "nexmark-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "nexmark")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

// nexmarkCmd runs the binary as a user does.
func nexmarkCmd(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("nexmark %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return result{stdout.String(), stderr.String(), code}
}

// genFile writes `nexmark gen` output to a file and checks it is the
// generator's event stream, line for line.
func genFile(t *testing.T, events int, seed int64) (string, []nexmark.Event) {
	t.Helper()
	r := nexmarkCmd(t, "gen", "--events", strconv.Itoa(events), "--seed", strconv.FormatInt(seed, 10))
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("gen: exit %d: %s", r.code, r.stderr)
	}
	g := nexmark.NewGenerator(nexmark.Config{Seed: seed})
	var want []byte
	evs := make([]nexmark.Event, events)
	for i := range evs {
		evs[i] = g.NextEvent()
		want = append(nexmark.AppendEventJSON(want, &evs[i]), '\n')
	}
	if r.stdout != string(want) {
		t.Fatalf("gen --events %d --seed %d differs from the generator's events", events, seed)
	}
	path := filepath.Join(t.TempDir(), "events.jsonl")
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, evs
}

// eur is 0.908 × price as an exact decimal, as Nexmark's q1 defines it.
func eur(price int64) string {
	v := price * 908
	s := fmt.Sprintf("%d.%03d", v/1000, v%1000)
	return strings.TrimSuffix(strings.TrimRight(s, "0"), ".")
}

// reference computes the results of query q from the events in plain Go,
// one JSON object a row with the values as the output writes them
// (numbers as their JSON text, times as instants).
func reference(q string, evs []nexmark.Event) []map[string]string {
	var out []map[string]string
	for _, ev := range evs {
		if ev.Type != nexmark.BidEvent {
			continue
		}
		b := ev.Bid
		ms := strconv.FormatInt(b.DateTime.UnixMilli(), 10)
		switch q {
		case "q0":
			out = append(out, map[string]string{"auction": itoa(b.Auction), "bidder": itoa(b.Bidder),
				"price": itoa(b.Price), "date_time": ms, "extra": b.Extra})
		case "q1":
			out = append(out, map[string]string{"auction": itoa(b.Auction), "bidder": itoa(b.Bidder),
				"price": eur(b.Price), "date_time": ms, "extra": b.Extra})
		case "q2":
			if b.Auction%123 == 0 {
				out = append(out, map[string]string{"auction": itoa(b.Auction), "price": itoa(b.Price)})
			}
		}
	}
	return out
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

// parseRow reads one output row: numbers keep their JSON text, date_time
// (RFC 3339) becomes milliseconds.
func parseRow(t *testing.T, line []byte) map[string]string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	var raw map[string]any
	if err := dec.Decode(&raw); err != nil {
		t.Fatalf("output line %q: %v", line, err)
	}
	row := map[string]string{}
	for k, v := range raw {
		switch v := v.(type) {
		case json.Number:
			row[k] = v.String()
		case string:
			if k == "date_time" {
				ts, err := time.Parse(time.RFC3339Nano, v)
				if err != nil {
					t.Fatalf("date_time %q: %v", v, err)
				}
				v = itoa(ts.UnixMilli())
			}
			row[k] = v
		default:
			t.Fatalf("output line %s: %s is %T", line, k, v)
		}
	}
	return row
}

func compareRows(t *testing.T, q string, got []byte, want []map[string]string) {
	t.Helper()
	lines := bytes.Split(bytes.TrimSuffix(got, []byte("\n")), []byte("\n"))
	if len(got) == 0 {
		lines = nil
	}
	if len(lines) != len(want) {
		t.Fatalf("%s: %d rows, want %d", q, len(lines), len(want))
	}
	for i, l := range lines {
		if row := parseRow(t, l); fmt.Sprint(row) != fmt.Sprint(want[i]) {
			t.Fatalf("%s: row %d:\n got %s\nwant %v", q, i, l, want[i])
		}
	}
}

// TestQueriesOnFile generates a file with `nexmark gen`, runs q0, q1 and
// q2 on it with `nexmark run --input` and compares every output line, in
// order, with the results computed from the generated events.
func TestQueriesOnFile(t *testing.T) {
	path, evs := genFile(t, 30_000, 7)
	for _, q := range []string{"q0", "q1", "q2"} {
		t.Run(q, func(t *testing.T) {
			want := reference(q, evs)
			if len(want) == 0 {
				t.Fatalf("%s: the reference has no rows: the test would prove nothing", q)
			}
			r := nexmarkCmd(t, "run", "--query", q, "--input", path)
			if r.code != 0 || r.stderr != "" {
				t.Fatalf("run: exit %d: %s", r.code, r.stderr)
			}
			compareRows(t, q, []byte(r.stdout), want)
		})
	}
}

// TestJoinQueriesOnFile generates events at 50 a second of event time
// with `nexmark gen --rate 50`, puts them out of order by up to 2 s, runs
// q3, q5, q7 and q8 on the file with `nexmark run --input` and compares
// the output lines, as a multiset, with the plain-Go reference of each
// query: every window is flushed at the end of the file.
func TestJoinQueriesOnFile(t *testing.T) {
	const events, seed = 5000, 5
	r := nexmarkCmd(t, "gen", "--events", strconv.Itoa(events), "--seed", strconv.Itoa(seed), "--rate", "50")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("gen: exit %d: %s", r.code, r.stderr)
	}
	g := nexmark.NewGenerator(nexmark.Config{Seed: seed, EventsPerSecond: 50})
	evs := make([]nexmark.Event, events)
	var want []byte
	for i := range evs {
		evs[i] = g.NextEvent()
		want = append(nexmark.AppendEventJSON(want, &evs[i]), '\n')
	}
	if r.stdout != string(want) {
		t.Fatal("gen --rate 50 differs from the generator's events")
	}
	var file []byte
	for _, ev := range ref.Disorder(evs, 2*time.Second, seed) {
		file = append(nexmark.AppendEventJSON(file, &ev), '\n')
	}
	path := filepath.Join(t.TempDir(), "events.jsonl")
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"q3", "q4", "q5", "q6", "q7", "q8"} {
		t.Run(q, func(t *testing.T) {
			want := ref.Results(q, evs)
			if len(want) == 0 {
				t.Fatalf("%s: the reference has no rows: the test would prove nothing", q)
			}
			r := nexmarkCmd(t, "run", "--query", q, "--input", path)
			if r.code != 0 || r.stderr != "" {
				t.Fatalf("run: exit %d: %s", r.code, r.stderr)
			}
			diff, err := ref.Diff([]byte(r.stdout), want)
			if err != nil {
				t.Fatal(err)
			}
			if diff != "" {
				t.Fatalf("%s: %s", q, diff)
			}
		})
	}
}

// TestRefusals: unknown queries, bad flags, an unreadable file
// and a line that is not an event end the command with one line on stderr
// and a non-zero exit.
func TestRefusals(t *testing.T) {
	path, _ := genFile(t, 10, 1)
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	lines, _ := os.ReadFile(path)
	ls := strings.SplitAfter(string(lines), "\n")
	ls[2] = `{"type":"bid","auction":"x"}` + "\n"
	if err := os.WriteFile(bad, []byte(strings.Join(ls, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.jsonl")
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"run", "-q", "q9", "--input", path}, 2, `unknown query "q9"`},
		{[]string{"run", "--input", path}, 2, "run needs --query"},
		{[]string{"run", "-q", "q0"}, 2, "exactly one of --input FILE and --subject SUBJ"},
		{[]string{"run", "-q", "q0", "--input", path, "--subject", "x"}, 2, "exactly one of"},
		{[]string{"run", "-q", "q0", "--input", path, "--bounded"}, 2, "--bounded goes with --subject"},
		{[]string{"run", "-q", "q0", "--input", path, "--bogus"}, 2, "unknown flag: --bogus"},
		{[]string{"gen"}, 2, "gen needs --events"},
		{[]string{"gen", "--events", "x"}, 2, `invalid argument "x"`},
		{[]string{"run", "-q", "q0", "--input", missing}, 1, "open " + missing + ": no such file or directory"},
		{[]string{"run", "-q", "q0", "--input", bad}, 1, bad + `:3: field "auction"`},
	} {
		r := nexmarkCmd(t, tc.args...)
		if r.code != tc.code || !strings.HasPrefix(r.stderr, "nexmark: ") || strings.Count(r.stderr, "\n") != 1 ||
			!strings.Contains(r.stderr, tc.msg) {
			t.Errorf("nexmark %s: exit %d, stderr %q; want exit %d and one line with %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.code, tc.msg)
		}
		if tc.code == 2 && r.stdout != "" {
			t.Errorf("nexmark %s: stdout %q", strings.Join(tc.args, " "), r.stdout)
		}
	}
}

// TestGenRate: --rate sets the event-time rate: at 50 events a second
// event 50 is one second after event 0.
func TestGenRate(t *testing.T) {
	r := nexmarkCmd(t, "gen", "--events", "51", "--rate", "50")
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if r.code != 0 || len(lines) != 51 {
		t.Fatalf("gen: exit %d, %d lines: %s", r.code, len(lines), r.stderr)
	}
	var first, last struct {
		Type     string `json:"type"`
		DateTime int64  `json:"date_time"`
	}
	if json.Unmarshal([]byte(lines[0]), &first) != nil || json.Unmarshal([]byte(lines[50]), &last) != nil {
		t.Fatalf("lines %s, %s", lines[0], lines[50])
	}
	if first.DateTime != time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli() || last.DateTime-first.DateTime != 1000 ||
		first.Type != "person" || last.Type != "person" {
		t.Fatalf("first %+v, last %+v", first, last)
	}
}

// TestRunHelp: run takes the NATS connection flags as the nats CLI spells
// them, and every query q0 to q8.
func TestRunHelp(t *testing.T) {
	r := nexmarkCmd(t, "run", "--help")
	for _, f := range []string{"-s, --server", "--user", "--password", "--creds", "--output-subject", "--bounded", "q0|q1|q2|q3|q4|q5|q6|q7|q8"} {
		if !strings.Contains(r.stdout, f) {
			t.Errorf("run --help lacks %s:\n%s", f, r.stdout)
		}
	}
}

// TestJetStream runs the queries against a real NATS server: events
// published to a JetStream subject are read with --subject (--bounded),
// results go to stdout; a second run of the query goes on where the first
// stopped; and --output-subject publishes results to JetStream.
func TestJetStream(t *testing.T) {
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	js := natstest.JetStream(t, nc)
	ctx := testutil.Context(t, 2*time.Minute)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"nexmark.events"}}); err != nil {
		t.Fatal(err)
	}
	path, evs := genFile(t, 6000, 11)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	publish := func(n int) {
		for i := 0; i < n && sc.Scan(); i++ {
			if _, err := js.Publish(ctx, "nexmark.events", bytes.Clone(sc.Bytes())); err != nil {
				t.Fatal(err)
			}
		}
	}
	server := []string{"-s", srv.ClientURL()}

	// An event that does not decode goes to the dead-letter subject.
	if _, err := js.Publish(ctx, "nexmark.events", []byte(`{"type":"bid","auction":"x"}`)); err != nil {
		t.Fatal(err)
	}
	publish(4000)
	r := nexmarkCmd(t, append([]string{"run", "-q", "q1", "--subject", "nexmark.events", "--bounded"}, server...)...)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("run --subject: exit %d: %s", r.code, r.stderr)
	}
	compareRows(t, "q1", []byte(r.stdout), reference("q1", evs[:4000]))
	dlq, err := js.StreamNameBySubject(ctx, "nexmark.events.dlq")
	if err != nil {
		t.Fatal(err)
	}
	if info, err := js.Stream(ctx, dlq); err != nil || info.CachedInfo().State.Msgs != 1 {
		t.Fatalf("dead letters: %v, %+v", err, info.CachedInfo().State)
	}

	publish(2000)
	r = nexmarkCmd(t, append([]string{"run", "-q", "q1", "--subject", "nexmark.events", "--bounded"}, server...)...)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("second run --subject: exit %d: %s", r.code, r.stderr)
	}
	compareRows(t, "q1 resumed", []byte(r.stdout), reference("q1", evs[4000:]))

	r = nexmarkCmd(t, append([]string{"run", "-q", "q0", "--input", path, "--output-subject", "nexmark.q0"}, server...)...)
	if r.code != 0 || r.stderr != "" || r.stdout != "" {
		t.Fatalf("run --output-subject: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	want := reference("q0", evs)
	stream, err := js.StreamNameBySubject(ctx, "nexmark.q0")
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"nexmark.q0"}})
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	for rows := 0; rows < len(want); {
		msgs, err := cons.Fetch(len(want)-rows, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range msgs.Messages() {
			got = append(append(got, m.Data()...), '\n')
			n++
			rows++
		}
		if n == 0 {
			break
		}
	}
	compareRows(t, "q0 on JetStream", got, want)

	// A subject no stream covers gets one; a bounded run of it ends at once.
	r = nexmarkCmd(t, append([]string{"run", "-q", "q2", "--subject", "fresh.events", "--bounded"}, server...)...)
	if r.code != 0 || r.stderr != "" || r.stdout != "" {
		t.Fatalf("run --subject fresh.events: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	if _, err := js.StreamNameBySubject(ctx, "fresh.events"); err != nil {
		t.Fatalf("no stream for fresh.events: %v", err)
	}
}

// TestJetStreamUntilInterrupted: without --bounded a run reads events as
// they come, from the server $NATS_URL names, until interrupted; then it
// exits 0.
func TestJetStreamUntilInterrupted(t *testing.T) {
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	js := natstest.JetStream(t, nc)
	ctx := testutil.Context(t, 2*time.Minute)
	cmd := exec.CommandContext(ctx, binary, "run", "-q", "q0", "--subject", "live.events")
	cmd.Env = append(os.Environ(), "NATS_URL="+srv.ClientURL())
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g := nexmark.NewGenerator(nexmark.Config{Seed: 2})
	var evs []nexmark.Event
	for range 100 {
		evs = append(evs, g.NextEvent())
	}
	want := reference("q0", evs)
	testutil.CheckFor(t, time.Minute, 50*time.Millisecond, func() error {
		if _, err := js.StreamNameBySubject(ctx, "live.events"); err != nil {
			return err
		}
		return nil
	})
	for i := range evs {
		if _, err := js.Publish(ctx, "live.events", nexmark.AppendEventJSON(nil, &evs[i])); err != nil {
			t.Fatal(err)
		}
	}
	// A bid without a price decodes: its price is null in the results.
	const noPrice = `{"type":"bid","auction":1001,"bidder":1002,"channel":"c","url":"u","date_time":5,"extra":""}`
	if _, err := js.Publish(ctx, "live.events", []byte(noPrice)); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, time.Minute, 20*time.Millisecond, func() error {
		if n := strings.Count(stdout.String(), "\n"); n != len(want)+1 {
			return fmt.Errorf("%d rows of %d; stderr %s", n, len(want), stderr.String())
		}
		return nil
	})
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("interrupted run: %v: %s", err, stderr.String())
	}
	out := stdout.String()
	last := strings.LastIndex(strings.TrimSuffix(out, "\n"), "\n") + 1
	if got := out[last:]; got != `{"auction":1001,"bidder":1002,"price":null,"date_time":"1970-01-01T00:00:00.005Z","extra":""}`+"\n" {
		t.Fatalf("bid without a price: %s", got)
	}
	compareRows(t, "q0 live", []byte(out[:last]), want)
}

// syncBuffer is a bytes.Buffer a process writes while the test reads it.
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
