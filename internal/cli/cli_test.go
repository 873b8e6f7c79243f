package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/actors/natsio"
	"github.com/meshflow/meshflow/examples/mesh"
	"github.com/meshflow/meshflow/internal/natsembed"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/nexmark"
	"github.com/meshflow/meshflow/internal/testutil"
)

// syncBuffer is a bytes.Buffer safe for a command writing while the test
// reads.
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

type result struct {
	stdout, stderr string
	err            error
}

// run executes one command tree in process.
func run(ctx context.Context, stdin string, args ...string) result {
	var stdout, stderr syncBuffer
	return runWith(ctx, stdin, &stdout, &stderr, args...)
}

func runWith(ctx context.Context, stdin string, stdout, stderr *syncBuffer, args ...string) result {
	env := &Env{
		Stdin:  strings.NewReader(stdin),
		Stdout: stdout,
		Stderr: stderr,
		Getenv: func(string) string { return "" },
	}
	root := NewRootCmd(env)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return result{stdout.String(), stderr.String(), err}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// createStream creates stream name capturing subjects.
func createStream(t *testing.T, nc *nats.Conn, name string, subjects ...string) jetstream.Stream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: name, Subjects: subjects})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// streamMessages returns the payloads stored in stream, in order.
func streamMessages(t *testing.T, s jetstream.Stream) []string {
	t.Helper()
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatalf("get message %d: %v", seq, err)
		}
		out = append(out, string(m.Data))
	}
	return out
}

func bidLines(n int) []string {
	gen := nexmark.NewGenerator(nexmark.Config{Seed: 11})
	lines := make([]string, n)
	for i := range lines {
		lines[i] = string(gen.NextBidJSON(nil))
	}
	return lines
}

func serverURL(s *natsembed.Server) string { return s.ClientURL() }

func TestInjectJSONFileJetStream(t *testing.T) {
	s := natstest.RunJetStream(t)
	nc := natstest.Connect(t, s)
	stream := createStream(t, nc, "BIDS", "bids.in")

	lines := bidLines(5000)
	// Blank lines and CRLF endings are accepted.
	content := strings.Join(lines[:10], "\n") + "\n\n   \n" + strings.Join(lines[10:], "\r\n") + "\n"
	file := writeFile(t, "bids.json", content)

	r := run(t.Context(), "", "inject", "-s", serverURL(s), "--subject", "bids.in", "--file", file, "--jetstream")
	if r.err != nil {
		t.Fatalf("inject: %v\nstderr: %s", r.err, r.stderr)
	}
	if !strings.HasPrefix(r.stdout, "published 5000 events to bids.in in ") {
		t.Errorf("summary %q", r.stdout)
	}
	got := streamMessages(t, stream)
	if len(got) != len(lines) {
		t.Fatalf("stream holds %d messages, want %d", len(got), len(lines))
	}
	for i := range lines {
		if got[i] != lines[i] {
			t.Fatalf("message %d = %s, want %s", i, got[i], lines[i])
		}
	}
}

func TestInjectCSVFileJetStream(t *testing.T) {
	s := natstest.RunJetStream(t)
	nc := natstest.Connect(t, s)
	stream := createStream(t, nc, "ORDERS", "orders.in")

	file := writeFile(t, "orders.csv", "id,customer,amount\n1,alice,10.5\n2,bob,3\n3,\"carol, jr\",7\n")
	// The format comes from the file name.
	r := run(t.Context(), "", "inject", "-s", serverURL(s), "--subject", "orders.in", "-f", file, "--jetstream")
	if r.err != nil {
		t.Fatalf("inject: %v\nstderr: %s", r.err, r.stderr)
	}
	if !strings.HasPrefix(r.stdout, "published 3 events to orders.in") {
		t.Errorf("summary %q", r.stdout)
	}
	got := streamMessages(t, stream)
	want := []map[string]string{
		{"id": "1", "customer": "alice", "amount": "10.5"},
		{"id": "2", "customer": "bob", "amount": "3"},
		{"id": "3", "customer": "carol, jr", "amount": "7"},
	}
	if len(got) != len(want) {
		t.Fatalf("stream holds %v, want %d messages", got, len(want))
	}
	for i, msg := range got {
		var obj map[string]any
		if err := json.Unmarshal([]byte(msg), &obj); err != nil {
			t.Fatalf("message %d %q: %v", i, msg, err)
		}
		for k, v := range want[i] {
			if fmt.Sprint(obj[k]) != v {
				t.Errorf("message %d: %s = %v, want %s (%s)", i, k, obj[k], v, msg)
			}
		}
	}
}

func TestInjectCoreStdin(t *testing.T) {
	s := natstest.RunJetStream(t)
	nc := natstest.Connect(t, s)
	sub, err := nc.SubscribeSync("bids.raw")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	lines := bidLines(100)
	r := run(t.Context(), strings.Join(lines, "\n"), "inject", "-s", serverURL(s), "--subject", "bids.raw", "--rate", "100000/s")
	if r.err != nil {
		t.Fatalf("inject: %v\nstderr: %s", r.err, r.stderr)
	}
	if !strings.HasPrefix(r.stdout, "published 100 events to bids.raw") {
		t.Errorf("summary %q", r.stdout)
	}
	for i, want := range lines {
		msg, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if string(msg.Data) != want {
			t.Fatalf("message %d = %s, want %s", i, msg.Data, want)
		}
	}
}

func TestInjectBadLine(t *testing.T) {
	s := natstest.RunJetStream(t)
	nc := natstest.Connect(t, s)
	stream := createStream(t, nc, "BAD", "bad.in")
	content := "{\"a\":1}\n{\"a\":2}\n{\"a\":\n{\"a\":4}\n"

	// A file is checked first: nothing is sent.
	file := writeFile(t, "bad.json", content)
	r := run(t.Context(), "", "inject", "-s", serverURL(s), "--subject", "bad.in", "--file", file, "--jetstream")
	if r.err == nil || !strings.Contains(r.err.Error(), "line 3: invalid JSON") {
		t.Fatalf("error %v, want one naming line 3", r.err)
	}
	if got := streamMessages(t, stream); len(got) != 0 {
		t.Fatalf("a bad file sent %d messages", len(got))
	}

	// Stdin is streamed: the lines before the bad one are sent.
	r = run(t.Context(), content, "inject", "-s", serverURL(s), "--subject", "bad.in", "--jetstream")
	if r.err == nil || !strings.Contains(r.err.Error(), "after publishing 2 events") || !strings.Contains(r.err.Error(), "line 3") {
		t.Fatalf("error %v", r.err)
	}
	if got := streamMessages(t, stream); len(got) != 2 {
		t.Fatalf("stream holds %v, want the 2 lines before the bad one", got)
	}

	// A line that is valid JSON but not an object.
	r = run(t.Context(), "[1,2]\n", "inject", "-s", serverURL(s), "--subject", "bad.in")
	if r.err == nil || !strings.Contains(r.err.Error(), "line 1: not a JSON object") {
		t.Fatalf("error %v", r.err)
	}
}

func TestInjectNoStream(t *testing.T) {
	s := natstest.RunJetStream(t)
	r := run(t.Context(), `{"a":1}`, "inject", "-s", serverURL(s), "--subject", "nowhere", "--jetstream")
	if r.err == nil || !strings.Contains(r.err.Error(), `no JetStream stream captures subject "nowhere"`) {
		t.Fatalf("error %v", r.err)
	}
}

func TestTailJetStreamTable(t *testing.T) {
	s := natstest.RunJetStream(t)
	nc := natstest.Connect(t, s)
	createStream(t, nc, "EVENTS", "events.>")
	for _, m := range []string{
		`{"auction":1000,"price":250,"channel":"Google"}`,
		`{"auction":1001,"price":7,"channel":"channel-12"}`,
		`{"price":99,"auction":1002}`,
	} {
		if err := nc.Publish("events.a", []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Publish("events.b", []byte(`{"other":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Wait until the stream has stored them.
	js, _ := jetstream.New(nc)
	str, _ := js.Stream(t.Context(), "EVENTS")
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		info, err := str.Info(t.Context())
		if err != nil {
			return err
		}
		if info.State.Msgs != 4 {
			return fmt.Errorf("%d messages stored", info.State.Msgs)
		}
		return nil
	})

	r := run(t.Context(), "", "tail", "events.a", "-s", serverURL(s), "--jetstream", "--count", "3")
	if r.err != nil {
		t.Fatalf("tail: %v\nstderr: %s", r.err, r.stderr)
	}
	want := `auction  price  channel
1000     250    Google
1001     7      channel-12
1002     99     NULL
`
	if r.stdout != want {
		t.Fatalf("stdout:\n%s\nwant:\n%s", r.stdout, want)
	}

	// JSON output prints the messages as they are; --stream names the
	// stream.
	r = run(t.Context(), "", "tail", "events.a", "-s", serverURL(s), "--stream", "EVENTS", "-c", "2", "-o", "json")
	if r.err != nil {
		t.Fatalf("tail: %v", r.err)
	}
	if want := "{\"auction\":1000,\"price\":250,\"channel\":\"Google\"}\n{\"auction\":1001,\"price\":7,\"channel\":\"channel-12\"}\n"; r.stdout != want {
		t.Fatalf("stdout %q, want %q", r.stdout, want)
	}
}

// TestInjectThenTail feeds tail from inject through a stream, as a user
// would.
func TestInjectThenTail(t *testing.T) {
	s := natstest.RunJetStream(t)
	nc := natstest.Connect(t, s)
	createStream(t, nc, "BIDS", "bids.in")
	lines := bidLines(20)
	file := writeFile(t, "bids.json", strings.Join(lines, "\n"))
	if r := run(t.Context(), "", "inject", "-s", serverURL(s), "--subject", "bids.in", "-f", file, "--jetstream"); r.err != nil {
		t.Fatalf("inject: %v", r.err)
	}
	r := run(t.Context(), "", "tail", "bids.in", "-s", serverURL(s), "--jetstream", "-c", "20", "-o", "json")
	if r.err != nil {
		t.Fatalf("tail: %v", r.err)
	}
	if want := strings.Join(lines, "\n") + "\n"; r.stdout != want {
		t.Fatalf("stdout:\n%s\nwant:\n%s", r.stdout, want)
	}
}

func TestTailCore(t *testing.T) {
	s := natstest.RunJetStream(t)
	nc := natstest.Connect(t, s)

	var stdout, stderr syncBuffer
	done := make(chan result, 1)
	go func() {
		done <- runWith(t.Context(), "", &stdout, &stderr, "tail", "live.>", "-s", serverURL(s), "-c", "2")
	}()
	// tail logs once its subscription is in place.
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if !strings.Contains(stderr.String(), "tailing") {
			return errors.New("not subscribed yet")
		}
		return nil
	})
	for _, m := range []string{`{"k":"x","v":1}`, `{"k":"longer key","v":22}`} {
		if err := nc.Publish("live.one", []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("tail: %v\nstderr: %s", r.err, r.stderr)
	}
	// Rows are printed as they arrive: a wider value widens its column from
	// then on.
	want := "k  v\nx  1\nlonger key  22\n"
	if r.stdout != want {
		t.Fatalf("stdout %q, want %q", r.stdout, want)
	}
}

func TestTailStopsOnCancel(t *testing.T) {
	s := natstest.RunJetStream(t)
	ctx, cancel := context.WithCancel(t.Context())
	var stdout, stderr syncBuffer
	done := make(chan result, 1)
	go func() {
		done <- runWith(ctx, "", &stdout, &stderr, "tail", "quiet", "-s", serverURL(s))
	}()
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if !strings.Contains(stderr.String(), "tailing") {
			return errors.New("not subscribed yet")
		}
		return nil
	})
	cancel()
	if r := <-done; r.err != nil {
		t.Fatalf("tail after cancel: %v", r.err)
	}
}

func TestMainExitCodes(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.json")
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string // prefix of the one stderr line
	}{
		{"bad flag", []string{"inject", "--bogus"}, ExitUsage, "meshflow: unknown flag: --bogus"},
		{"bad root flag", []string{"--log-level", "loud", "version"}, ExitUsage, `meshflow: invalid --log-level "loud"`},
		{"unknown command", []string{"frobnicate"}, ExitUsage, `meshflow: unknown command "frobnicate"`},
		{"missing subject", []string{"inject", "--file", missing}, ExitUsage, "meshflow: inject: --subject is required"},
		{"missing file", []string{"inject", "--subject", "x", "--file", missing}, ExitError, "meshflow: inject: open " + missing},
		{"tail without subject", []string{"tail"}, ExitUsage, "meshflow: meshflow tail wants one SUBJECT"},
		{"bad output", []string{"tail", "x", "-o", "yaml"}, ExitUsage, `meshflow: invalid argument "yaml"`},
		{"from without stream", []string{"tail", "x", "--from", "new"}, ExitUsage, "meshflow: tail: --from needs --jetstream"},
		{"bad rate", []string{"inject", "--subject", "x", "--rate", "fast"}, ExitUsage, `meshflow: inject: --rate "fast"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Main(t.Context(), tc.args, strings.NewReader(""), &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tc.code, stderr.String())
			}
			if !strings.HasPrefix(stderr.String(), tc.stderr) || strings.Count(stderr.String(), "\n") != 1 {
				t.Errorf("stderr %q, want one line starting %q", stderr.String(), tc.stderr)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q, want nothing (no usage dump)", stdout.String())
			}
		})
	}
}

func TestMainVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := Main(t.Context(), []string{"version"}, strings.NewReader(""), &stdout, &stderr); code != ExitOK {
		t.Fatalf("exit code %d: %s", code, stderr.String())
	}
	if !strings.HasPrefix(stdout.String(), "meshflow ") {
		t.Fatalf("version printed %q", stdout.String())
	}
}

func TestNATSURLFromEnv(t *testing.T) {
	env := &Env{Getenv: func(k string) string {
		if k == "NATS_URL" {
			return "nats://example:4333"
		}
		return ""
	}}
	root := NewRootCmd(env)
	tail, _, err := root.Find([]string{"tail"})
	if err != nil {
		t.Fatal(err)
	}
	if got := tail.Flags().Lookup("server").DefValue; got != "nats://example:4333" {
		t.Fatalf("--server default %q", got)
	}
	tail, _, _ = NewRootCmd(&Env{Getenv: func(string) string { return "" }}).Find([]string{"tail"})
	if got := tail.Flags().Lookup("server").DefValue; got != defaultNATSURL {
		t.Fatalf("--server default %q", got)
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]float64{
		"": 0, "1000": 1000, "1000/s": 1000, "50/100ms": 500, "60/m": 1, "5/2s": 2.5, "1/ms": 1000,
	} {
		got, err := parseRate(in)
		if err != nil || got != want {
			t.Errorf("parseRate(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"x", "-5", "0", "10/parsec", "10/0s"} {
		if _, err := parseRate(bad); err == nil {
			t.Errorf("parseRate(%q) accepted", bad)
		}
	}
}

func TestTailDeadLetterReason(t *testing.T) {
	s := natstest.RunJetStream(t)
	nc := natstest.Connect(t, s)
	js := natstest.JetStream(t, nc)
	createStream(t, nc, "DLQ", "bids.in.dlq")
	m := nats.NewMsg("bids.in.dlq")
	m.Data = []byte(`{"auction":"x"}`)
	m.Header.Set(natsio.HeaderError, `field "auction": "x" is not an int64`)
	m.Header.Set(natsio.HeaderSourceSeq, "17")
	if _, err := js.PublishMsg(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	r := run(t.Context(), "", "tail", "bids.in.dlq", "-s", serverURL(s), "--jetstream", "-c", "1", "-o", "json")
	if r.err != nil {
		t.Fatalf("tail: %v", r.err)
	}
	if r.stdout != `{"auction":"x"}`+"\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	if !strings.Contains(r.stderr, `is not an int64`) || !strings.Contains(r.stderr, "source_seq=17") {
		t.Errorf("stderr does not carry the reason: %s", r.stderr)
	}
}

func TestDomainsCatalog(t *testing.T) {
	s := natstest.RunJetStream(t)
	nc := natstest.Connect(t, s)
	if r := run(t.Context(), "", "domains", "list", "-s", serverURL(s)); r.err == nil || !strings.Contains(r.err.Error(), "no mesh is running") {
		t.Fatalf("without a mesh: %v", r.err)
	}
	m, err := meshflow.NewMesh(mesh.Domains(), meshflow.WithNATS(nc))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() { stop(); <-done }()
	js := natstest.JetStream(t, nc)
	testutil.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		_, err := js.StreamNameBySubject(t.Context(), "mesh.orders.in.checkout")
		return err
	})
	if _, err := js.Publish(t.Context(), "mesh.orders.in.checkout", []byte(`{"order_id":1,"customer_id":"c-1","amount":-3,"currency":"EUR","placed_at":"2026-11-01T12:00:00Z"}`)); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		r := run(t.Context(), "", "domains", "list", "-s", serverURL(s))
		if r.err != nil {
			return r.err
		}
		if !strings.Contains(r.stdout, "orders     team-checkout  running  checkout         placed                                  1        0         1") {
			return fmt.Errorf("list:\n%s", r.stdout)
		}
		return nil
	})
	r := run(t.Context(), "", "domains", "describe", "analytics", "-s", serverURL(s))
	if r.err != nil || !strings.Contains(r.stdout, "reads:   orders.placed") || !strings.Contains(r.stdout, "rule: currency one of [EUR, USD, GBP]") {
		t.Fatalf("describe: %v\n%s", r.err, r.stdout)
	}
	r = run(t.Context(), "", "domains", "describe", "orders", "-o", "json", "-s", serverURL(s))
	var d meshflow.DomainStatus
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil || d.Owner != "team-checkout" || len(d.Ports) != 2 {
		t.Fatalf("describe -o json: %v %+v", err, d)
	}
	r = run(t.Context(), "", "domains", "describe", "nope", "-s", serverURL(s))
	if r.err == nil || !strings.Contains(r.err.Error(), `no domain "nope" (the mesh has: orders, payments, analytics)`) {
		t.Fatalf("unknown domain: %v", r.err)
	}
}
