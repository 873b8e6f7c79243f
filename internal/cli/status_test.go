package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
)

var statusSchema = arrow.NewSchema([]arrow.Field{
	{Name: "ts", Type: arrow.FixedWidthTypes.Timestamp_us},
}, nil)

// chanSource reads the batches sent on in; it ends when in is closed.
type chanSource struct{ in chan arrow.RecordBatch }

func (s *chanSource) Open(context.Context, actors.OperatorContext) error { return nil }
func (s *chanSource) Close(context.Context) error                        { return nil }
func (s *chanSource) Read(ctx context.Context) (arrow.RecordBatch, error) {
	select {
	case b, ok := <-s.in:
		if !ok {
			return nil, io.EOF
		}
		return b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// passOp emits its input.
type passOp struct{}

func (passOp) Open(context.Context, actors.OperatorContext) error { return nil }
func (passOp) Close(context.Context) error                        { return nil }
func (passOp) Process(_ context.Context, in arrow.RecordBatch, out actors.Emitter) error {
	in.Retain()
	out.Emit(in)
	return nil
}

// TestStatusCommand runs a job on a node in process and asks `meshflow
// status` for it: the table has one row per instance in graph order, with
// rows and batches in and out, the watermark in RFC 3339 to the
// millisecond ("-" before any), and idle; -o json has the same as one object
// per line, with the watermark null before any; a domain name stands for
// its pipeline; an unknown job and a malformed name are one-line errors; a
// job whose instances do not all answer prints those that did and fails.
func TestStatusCommand(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	url := serverURL(srv)
	node, err := actors.NewNode(actors.NodeConfig{ID: "n1", NATS: natstest.Connect(t, srv), Allocator: mem, Logger: testutil.TestLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	in := make(chan arrow.RecordBatch, 4)
	g := &actors.JobGraph{
		Name: "pipeline", Domain: "shop",
		Vertices: []*actors.Vertex{
			{Name: "src", Parallelism: 1, NewSource: func() actors.Source { return &chanSource{in: in} }, EventTime: &actors.EventTime{Column: "ts"}},
			{Name: "pass", Parallelism: 2, NewOperator: func() actors.Operator { return passOp{} }},
			{Name: "end", Parallelism: 1, NewOperator: func() actors.Operator { return passOp{} }},
		},
		Edges: []actors.Edge{{From: "src", To: "pass", Partitioning: actors.Rebalance}, {From: "pass", To: "end", Partitioning: actors.Rebalance}},
	}
	pl := actors.Placement{{Operator: "src"}: "n1", {Operator: "pass"}: "n1", {Operator: "pass", Index: 1}: "n1", {Operator: "end"}: "n1"}
	ctx, cancel := context.WithCancel(testutil.Context(t, time.Minute))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	var runErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		runErr = node.Run(ctx, g, pl)
	}()

	// Two batches of two rows: the watermark is the largest time less one
	// microsecond, 12:04:01.500.
	at := time.Date(2026, 11, 30, 12, 4, 1, 500_001_000, time.UTC).UnixMicro()
	for i := range 2 {
		b := array.NewRecordBuilder(mem, statusSchema)
		b.Field(0).(*array.TimestampBuilder).AppendValues([]arrow.Timestamp{arrow.Timestamp(at - 1000), arrow.Timestamp(at - int64(1-i)*2000)}, nil)
		in <- b.NewRecordBatch()
		b.Release()
	}
	want := `Job shop.pipeline (the pipeline of domain shop)
OPERATOR  INSTANCE  NODE  ROWS IN  ROWS OUT  BATCHES IN  BATCHES OUT  FAILURES  WATERMARK                 IDLE
src       0         n1    4        4         2           2            0         2026-11-30T12:04:01.500Z  no
pass      0         n1    2        2         1           1            0         2026-11-30T12:04:01.500Z  no
pass      1         n1    2        2         1           1            0         2026-11-30T12:04:01.500Z  no
end       0         n1    4        4         2           2            0         2026-11-30T12:04:01.500Z  no
`
	var last result
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		last = run(ctx, "", "status", "shop", "-s", url)
		if last.err != nil || last.stdout != want {
			return fmt.Errorf("status: %v, stdout:\n%s\nwant:\n%s", last.err, last.stdout, want)
		}
		return nil
	})

	r := run(ctx, "", "status", "shop.pipeline", "-o", "json", "-s", url)
	if r.err != nil {
		t.Fatal(r.err)
	}
	got := decodeLines[instanceStatusJSON](t, r.stdout)
	if len(got) != 4 {
		t.Fatalf("-o json: %d instances, want 4:\n%s", len(got), r.stdout)
	}
	for i, op := range []string{"src", "pass", "pass", "end"} {
		is := got[i]
		if is.Job != "shop.pipeline" || is.Operator != op || is.Node != "n1" || is.Watermark == nil || *is.Watermark != "2026-11-30T12:04:01.500Z" ||
			is.WatermarkUs == nil || *is.WatermarkUs != at-1 || is.Idle || is.Failures != 0 {
			t.Errorf("-o json line %d: %+v", i, is)
		}
	}

	for _, tc := range []struct {
		args   []string
		usage  bool
		stderr string
	}{
		{args: []string{"status", "nope"}, stderr: `status: unknown job "nope": no node runs it nor nope.pipeline`},
		{args: []string{"status", "shop.nope"}, stderr: `status: unknown job "shop.nope": no node runs it (within`},
		{args: []string{"status", "a.b.c"}, usage: true, stderr: `invalid job name "a.b.c"`},
		{args: []string{"status"}, usage: true, stderr: `wants one JOB`},
	} {
		var out, errOut bytes.Buffer
		code := Main(ctx, append(tc.args, "-s", url), strings.NewReader(""), &out, &errOut)
		wantCode := ExitError
		if tc.usage {
			wantCode = ExitUsage
		}
		if code != wantCode || out.Len() != 0 || !strings.Contains(errOut.String(), tc.stderr) || strings.Count(errOut.String(), "\n") != 1 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d and one line with %q", tc.args, code, out.String(), errOut.String(), wantCode, tc.stderr)
		}
	}

	// A job on nodes n1 and n2 of which only n1 runs: the command prints
	// n1's instances and fails.
	half, err := actors.NewNode(actors.NodeConfig{ID: "n1", NATS: natstest.Connect(t, srv), Allocator: mem, Logger: testutil.TestLogger(t), DrainTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	hg := &actors.JobGraph{
		Name: "half",
		Vertices: []*actors.Vertex{
			{Name: "src", Parallelism: 1, NewSource: func() actors.Source { return &chanSource{in: make(chan arrow.RecordBatch)} }},
			{Name: "end", Parallelism: 1, NewOperator: func() actors.Operator { return passOp{} }},
		},
		Edges: []actors.Edge{{From: "src", To: "end", Partitioning: actors.Forward}},
	}
	hctx, hcancel := context.WithCancel(ctx)
	hdone := make(chan error, 1)
	go func() {
		hdone <- half.Run(hctx, hg, actors.Placement{{Operator: "src"}: "n1", {Operator: "end"}: "n2"})
	}()
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		var out, errOut bytes.Buffer
		code := Main(ctx, []string{"status", "half", "--timeout", "300ms", "-s", url}, strings.NewReader(""), &out, &errOut)
		wantErr := "meshflow: status: job half: 1 of 2 instances answered within --timeout 300ms\n"
		if code != ExitError || errOut.String() != wantErr || !strings.HasPrefix(out.String(), "Job half\nOPERATOR") ||
			!strings.Contains(out.String(), "\nsrc ") || strings.Count(out.String(), "\n") != 3 {
			return fmt.Errorf("status of a half-running job: exit %d, stdout %q, stderr %q", code, out.String(), errOut.String())
		}
		return nil
	})
	hcancel()
	<-hdone

	close(in)
	wg.Wait()
	if runErr != nil {
		t.Fatal(runErr)
	}
}

// TestStatusBinary drives the built meshflow binary: `meshflow dev
// --example bids` runs the bids pipeline (event time from its bids), and
// `meshflow status bids`, as a producer (no credentials), prints every
// instance of it; with -o json the lines parse and the source's watermark
// advances between two calls, as do the operators' after it.
func TestStatusBinary(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "meshflow")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/meshflow/meshflow/cmd/meshflow").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	dev := exec.Command(bin, "dev", "--example", "bids", "--data-dir", filepath.Join(dir, "data"), "--listen", "127.0.0.1:0",
		"--rate", "500", "--checkpoint-interval", "1s")
	var devErr syncBuffer
	dev.Stdout, dev.Stderr = io.Discard, &devErr
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- dev.Wait() }()
	defer func() {
		_ = dev.Process.Signal(os.Interrupt)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("meshflow dev: %v\n%s", err, devErr.String())
			}
		case <-time.After(30 * time.Second):
			_ = dev.Process.Kill()
			<-exited
			t.Errorf("meshflow dev did not stop on SIGINT")
		}
	}()
	var url string
	testutil.CheckFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("meshflow dev ended: %v\n%s", err, devErr.String())
		default:
		}
		m := devURLRE.FindStringSubmatch(devErr.String())
		if m == nil {
			return errors.New("meshflow dev has not logged its URL yet")
		}
		url = m[1]
		return nil
	})
	meshflow := func(args ...string) (stdout, stderr string, code int) {
		var out, errOut bytes.Buffer
		cmd := exec.Command(bin, append(args, "-s", url, "--inbox-prefix", "_INBOX_producer")...)
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return out.String(), errOut.String(), exit.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return out.String(), errOut.String(), 0
	}
	// status returns the JSON lines of `meshflow status bids -o json`
	// once every instance has a watermark, by operator and instance.
	status := func() map[string]instanceStatusJSON {
		var got map[string]instanceStatusJSON
		testutil.CheckFor(t, 60*time.Second, 100*time.Millisecond, func() error {
			out, errOut, code := meshflow("status", "bids", "-o", "json")
			if code != 0 {
				return fmt.Errorf("status -o json: exit %d: %s", code, errOut)
			}
			got = map[string]instanceStatusJSON{}
			for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
				var is instanceStatusJSON
				if err := json.Unmarshal([]byte(line), &is); err != nil {
					t.Fatalf("status -o json: line %q: %v", line, err)
				}
				if is.Job != "bids" || is.Node == "" {
					t.Fatalf("status -o json: line %q", line)
				}
				got[fmt.Sprintf("%s/%d", is.Operator, is.Instance)] = is
				if is.Watermark == nil || is.WatermarkUs == nil {
					return fmt.Errorf("%s/%d has no watermark yet", is.Operator, is.Instance)
				}
				if _, err := time.Parse(time.RFC3339, *is.Watermark); err != nil {
					t.Fatalf("watermark %q: %v", *is.Watermark, err)
				}
			}
			return nil
		})
		return got
	}
	first := status()
	// The bids pipeline: bids -> high-value -> to-eur -> shape -> top-bid
	// (x4) -> publish.
	for _, id := range []string{"bids/0", "high-value/0", "to-eur/0", "shape/0", "top-bid/0", "top-bid/3", "publish/0"} {
		if _, ok := first[id]; !ok {
			t.Fatalf("no status of %s in %v", id, first)
		}
	}
	testutil.CheckFor(t, 60*time.Second, 100*time.Millisecond, func() error {
		second := status()
		for _, id := range []string{"bids/0", "top-bid/0", "publish/0"} {
			if *second[id].WatermarkUs <= *first[id].WatermarkUs || second[id].RowsIn < first[id].RowsIn {
				return fmt.Errorf("%s: watermark %s, %d rows in; before %s, %d rows in", id,
					*second[id].Watermark, second[id].RowsIn, *first[id].Watermark, first[id].RowsIn)
			}
		}
		return nil
	})
	out, errOut, code := meshflow("status", "bids")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if code != 0 || lines[0] != "Job bids" || strings.Join(strings.Fields(lines[1]), " ") != "OPERATOR INSTANCE NODE ROWS IN ROWS OUT BATCHES IN BATCHES OUT FAILURES WATERMARK IDLE" || len(lines) != 2+len(first) ||
		!strings.HasPrefix(lines[2], "bids ") {
		t.Fatalf("status: exit %d, stderr %q, %d lines for %d instances, stdout:\n%s", code, errOut, len(lines), len(first), out)
	}
	for _, tc := range []struct {
		job    string
		code   int
		stderr string
	}{
		// The producers may ask for the bids pipeline's status only.
		{"nope", ExitError, `meshflow: status: the server denies this user what the status command needs`},
		{"bids.*", ExitUsage, `meshflow: invalid job name "bids.*"`},
	} {
		out, errOut, code = meshflow("status", tc.job)
		if code != tc.code || out != "" || !strings.HasPrefix(errOut, tc.stderr) || strings.Count(errOut, "\n") != 1 {
			t.Errorf("status %s: exit %d, stdout %q, stderr %q; want exit %d and one line starting %q", tc.job, code, out, errOut, tc.code, tc.stderr)
		}
	}
}

// TestStatusDevMesh: the producers of `meshflow dev` (the example mesh) may
// ask each domain's pipeline for its status, by the domain's name; a job no
// node runs is an unknown job (the producers may ask for any one-token job,
// and for the pipelines of the mesh's domains only).
func TestStatusDevMesh(t *testing.T) {
	d := startDev(t, "--rate", "200")
	for _, domain := range []string{"orders", "payments", "analytics"} {
		testutil.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
			r := run(t.Context(), "", "status", domain, "-s", d.url, "--inbox-prefix", "_INBOX_producer")
			head := "Job " + domain + ".pipeline (the pipeline of domain " + domain + ")\nOPERATOR"
			if r.err != nil || !strings.HasPrefix(r.stdout, head) || strings.Count(r.stdout, "\n") < 4 {
				return fmt.Errorf("status %s: %v\n%s%s", domain, r.err, r.stdout, r.stderr)
			}
			return nil
		})
	}
	r := run(t.Context(), "", "status", "nope", "-s", d.url, "--inbox-prefix", "_INBOX_producer")
	if r.err == nil || !strings.Contains(r.err.Error(), `unknown job "nope": no node runs it (this user may not ask for nope.pipeline)`) {
		t.Fatalf("status nope: %v", r.err)
	}
}
