package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/nexmark"
	"github.com/meshflow/meshflow/internal/testutil"
)

// devRun is `meshflow dev` running in process, listening on a free
// loopback port.
type devRun struct {
	url    string
	stderr *syncBuffer
}

var devURLRE = regexp.MustCompile(`"embedded NATS server ready" url=(nats://[0-9.:]+)`)

// startDev runs `meshflow dev` with args until the test ends, then stops it
// as Ctrl-C does and checks that it stopped cleanly.
func startDev(t *testing.T, args ...string) *devRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	done := make(chan result, 1)
	all := append([]string{"dev", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--every", "1h"}, args...)
	go func() { done <- runWith(ctx, "", &stdout, &stderr, all...) }()
	t.Cleanup(func() {
		cancel()
		if r := <-done; r.err != nil {
			t.Errorf("dev stopped with %v", r.err)
		}
	})
	d := &devRun{stderr: &stderr}
	testutil.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		select {
		case r := <-done:
			done <- r
			t.Fatalf("dev ended during startup: %v\n%s", r.err, stderr.String())
		default:
		}
		m := devURLRE.FindStringSubmatch(stderr.String())
		if m == nil {
			return fmt.Errorf("dev has not logged its URL yet")
		}
		d.url = m[1]
		return nil
	})
	return d
}

// natsCLI runs the real nats CLI as a client without credentials (dev's
// producers) against url, until it exits or, when until is not empty, its
// output shows until (then it is killed: `nats sub` and `nats kv watch`
// would go on). It returns the output and how the CLI exited.
func natsCLI(t *testing.T, url, until string, args ...string) (string, error) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.Command(natstest.Binary(t, "nats"), append([]string{"-s", url, "--timeout", "3s"}, args...)...)
	cmd.Env = append(cmd.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home, "NATS_CONTEXT=", "NATS_URL=")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var err error
	testutil.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		select {
		case err = <-exited:
			exited <- err
			return nil
		default:
		}
		if until != "" && strings.Contains(out.String(), until) {
			return nil
		}
		return fmt.Errorf("nats %s is still running: %s", strings.Join(args, " "), out.String())
	})
	select {
	case err = <-exited:
	default:
		_ = cmd.Process.Kill()
		<-exited
		err = fmt.Errorf("killed once it printed %q", until)
	}
	return out.String(), err
}

// streamState is what the nats CLI reports of a stream.
type streamState struct {
	Msgs      uint64 `json:"messages"`
	FirstSeq  uint64 `json:"first_seq"`
	Consumers int    `json:"consumer_count"`
}

func readStreamState(t *testing.T, url, stream string) streamState {
	t.Helper()
	st, err := streamInfo(t, url, stream)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func streamInfo(t *testing.T, url, stream string) (streamState, error) {
	t.Helper()
	out, err := natsCLI(t, url, "", "--inbox-prefix", "_INBOX_producer", "stream", "info", stream, "--json")
	if err != nil {
		return streamState{}, fmt.Errorf("nats stream info %s: %w\n%s", stream, err, out)
	}
	var info struct {
		State streamState `json:"state"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		return streamState{}, fmt.Errorf("nats stream info %s: %w\n%s", stream, err, out)
	}
	return info.State, nil
}

func checkoutEvent(id int, customer string) string {
	return fmt.Sprintf(`{"order_id":%d,"customer_id":"%s","amount":%d.5,"currency":"EUR","placed_at":"2026-11-01T12:00:00Z"}`, id, customer, 1000+id)
}

// TestDevProducerRights drives every operation a producer must not do
// with the real nats CLI, as the user of clients without credentials of
// `meshflow dev`, and checks that each is denied and changed nothing, and
// that what producers may do works: publishing to an input port, reading
// data products, dead letters, contracts and the catalog.
func TestDevProducerRights(t *testing.T) {
	d := startDev(t, "--generator=false")
	url := d.url
	inbox := []string{"--inbox-prefix", "_INBOX_producer"}

	// The catalog, as a producer.
	testutil.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		r := run(t.Context(), "", "domains", "list", "-s", url, "--inbox-prefix", "_INBOX_producer")
		if r.err != nil {
			return r.err
		}
		if strings.Count(r.stdout, " running ") != 3 {
			return fmt.Errorf("domains list:\n%s", r.stdout)
		}
		return nil
	})
	testutil.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		st, err := streamInfo(t, url, "MESH_ORDERS_PLACED")
		if err == nil && st.Consumers != 1 {
			err = fmt.Errorf("MESH_ORDERS_PLACED has %d consumers, want analytics'", st.Consumers)
		}
		return err
	})

	// Publishing to an input port lands.
	publish := func(from, to int) {
		t.Helper()
		for i := from; i <= to; i++ {
			if out, err := natsCLI(t, url, "", "pub", "mesh.orders.in.checkout", checkoutEvent(i, fmt.Sprintf("c-%d", i))); err != nil {
				t.Fatalf("nats pub: %v\n%s", err, out)
			}
		}
		testutil.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
			st, err := streamInfo(t, url, "MESH_ANALYTICS_BIG_ORDERS")
			if err == nil && st.Msgs != uint64(to) {
				err = fmt.Errorf("big_orders holds %d orders, want %d", st.Msgs, to)
			}
			return err
		})
	}
	publish(1, 3)
	before := readStreamState(t, url, "MESH_ORDERS_PLACED")
	contract, err := natsCLI(t, url, "", append(inbox, "kv", "get", "MESHFLOW_CONTRACTS", "orders.placed", "--raw")...)
	if err != nil || !strings.HasPrefix(contract, `{"version":1,`) {
		t.Fatalf("reading a contract by key: %v\n%s", err, contract)
	}

	const violation = "Permissions Violation for "
	for _, tc := range []struct {
		name string
		args []string
		want string // what the CLI prints
	}{
		{"pull from a domain's durable consumer", append(inbox, "consumer", "next", "MESH_ORDERS_PLACED", "analytics_orders"),
			`Publish to "$JS.API.CONSUMER.MSG.NEXT.MESH_ORDERS_PLACED.analytics_orders"`},
		{"pull from an input port's durable consumer", append(inbox, "consumer", "next", "MESH_ORDERS_IN_CHECKOUT", "orders_checkout"),
			`Publish to "$JS.API.CONSUMER.MSG.NEXT.MESH_ORDERS_IN_CHECKOUT.orders_checkout"`},
		{"delete a domain's durable consumer", append(inbox, "consumer", "rm", "MESH_ORDERS_PLACED", "analytics_orders", "-f"),
			`Publish to "$JS.API.CONSUMER.DELETE.MESH_ORDERS_PLACED.analytics_orders"`},
		{"take over a domain's durable consumer", append(inbox, "consumer", "add", "MESH_ORDERS_PLACED", "analytics_orders", "--pull", "--defaults"),
			`Publish to "$JS.API.CONSUMER.CREATE.MESH_ORDERS_PLACED.analytics_orders"`},
		{"take over a durable named in the request body", append(inbox, "req", "$JS.API.CONSUMER.DURABLE.CREATE.MESH_ORDERS_PLACED.analytics_orders",
			`{"stream_name":"MESH_ORDERS_PLACED","config":{"durable_name":"analytics_orders","ack_policy":"explicit"}}`),
			`Publish to "$JS.API.CONSUMER.DURABLE.CREATE.MESH_ORDERS_PLACED.analytics_orders"`},
		{"create a consumer named in the request body", append(inbox, "req", "$JS.API.CONSUMER.CREATE.MESH_ORDERS_PLACED",
			`{"stream_name":"MESH_ORDERS_PLACED","config":{"name":"analytics_orders","ack_policy":"explicit"}}`),
			`Publish to "$JS.API.CONSUMER.CREATE.MESH_ORDERS_PLACED"`},
		{"delete a stream", append(inbox, "stream", "rm", "MESH_ORDERS_PLACED", "-f"),
			`Publish to "$JS.API.STREAM.DELETE.MESH_ORDERS_PLACED"`},
		{"purge a stream", append(inbox, "stream", "purge", "MESH_ORDERS_PLACED", "-f"),
			`Publish to "$JS.API.STREAM.PURGE.MESH_ORDERS_PLACED"`},
		{"change a stream", append(inbox, "stream", "edit", "MESH_ORDERS_PLACED", "--max-msgs", "1", "-f"),
			`Publish to "$JS.API.STREAM.UPDATE.MESH_ORDERS_PLACED"`},
		{"read every inbox", []string{"sub", "_INBOX.>"}, `Subscription to "_INBOX.>"`},
		{"read a domain's inbox", []string{"sub", "_INBOX_analytics.>"}, `Subscription to "_INBOX_analytics.>"`},
		{"read acknowledgements", []string{"sub", "$JS.ACK.>"}, `Subscription to "$JS.ACK.>"`},
		{"read an input port's events", []string{"sub", "mesh.orders.in.>"}, `Subscription to "mesh.orders.in.>"`},
		{"read a domain's private subjects", []string{"sub", "mf.orders.>"}, `Subscription to "mf.orders.>"`},
		{"watch the contracts", append(inbox, "kv", "watch", "MESHFLOW_CONTRACTS"),
			`Publish to "$JS.API.CONSUMER.CREATE.KV_MESHFLOW_CONTRACTS.`},
		{"list the contracts", append(inbox, "kv", "ls", "MESHFLOW_CONTRACTS"),
			`Publish to "$JS.API.CONSUMER.CREATE.KV_MESHFLOW_CONTRACTS.`},
		{"put a contract", append(inbox, "kv", "put", "MESHFLOW_CONTRACTS", "orders.placed", "{}"),
			`Publish to "$KV.MESHFLOW_CONTRACTS.orders.placed"`},
		{"delete a contract", append(inbox, "kv", "del", "MESHFLOW_CONTRACTS", "orders.placed", "-f"),
			`Publish to "$KV.MESHFLOW_CONTRACTS.orders.placed"`},
		{"forge a data product", []string{"pub", "mesh.orders.placed", checkoutEvent(99, "c-99")},
			`Publish to "mesh.orders.placed"`},
		{"forge a dead letter", []string{"pub", "mesh.orders._dlq", "{}"}, `Publish to "mesh.orders._dlq"`},
		{"publish on a domain's private subjects", []string{"pub", "mf.orders.pipeline.ctl.failure", "x"},
			`Publish to "mf.orders.pipeline.ctl.failure"`},
		{"publish to an undeclared input port", []string{"pub", "mesh.analytics.in.orders", "{}"},
			`Publish to "mesh.analytics.in.orders"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := natsCLI(t, url, violation+tc.want, tc.args...)
			if !strings.Contains(out, violation+tc.want) {
				t.Fatalf("nats %s: %v, want %s%s in:\n%s", strings.Join(tc.args, " "), err, violation, tc.want, out)
			}
			t.Logf("nats %s:\n%s", strings.Join(tc.args, " "), out)
		})
	}

	// Nothing changed: the stream still holds every order from the first,
	// analytics' durable consumer is still its only consumer, and the
	// contract is the one recorded.
	if after := readStreamState(t, url, "MESH_ORDERS_PLACED"); after != before {
		t.Errorf("MESH_ORDERS_PLACED was %+v, is %+v after the denied operations", before, after)
	}
	if got, err := natsCLI(t, url, "", append(inbox, "kv", "get", "MESHFLOW_CONTRACTS", "orders.placed", "--raw")...); err != nil || got != contract {
		t.Errorf("the contract changed: %v\n%s", err, got)
	}
	// A consumer of its own on a data product: create, pull (acknowledging)
	// and delete it.
	for _, args := range [][]string{
		{"consumer", "add", "MESH_ORDERS_PLACED", "mine", "--pull", "--defaults"},
		{"consumer", "next", "MESH_ORDERS_PLACED", "mine"},
		{"consumer", "rm", "MESH_ORDERS_PLACED", "mine", "-f"},
	} {
		if out, err := natsCLI(t, url, "", append(inbox, args...)...); err != nil || strings.Contains(out, violation) {
			t.Fatalf("nats %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	// ...and no event vanished: analytics publishes every big order, once.
	// (Order 4 is injected with meshflow inject, as a producer.)
	file := writeFile(t, "orders.jsonl", checkoutEvent(4, "c-4")+"\n")
	if r := run(t.Context(), "", "inject", "--subject", "mesh.orders.in.checkout", "--file", file, "-s", url, "--inbox-prefix", "_INBOX_producer"); r.err != nil {
		t.Fatalf("meshflow inject as a producer: %v\n%s", r.err, r.stderr)
	}
	publish(5, 6)
	out, err := natsCLI(t, url, "", append(inbox, "sub", "mesh.analytics.big_orders", "--stream", "MESH_ANALYTICS_BIG_ORDERS", "--all", "--count", "6", "--raw")...)
	if err != nil {
		t.Fatalf("reading a data product with nats sub --stream: %v\n%s", err, out)
	}
	for i := 1; i <= 6; i++ {
		if n := strings.Count(out, fmt.Sprintf(`"order_id":%d,`, i)); n != 1 {
			t.Errorf("order %d is %d times in big_orders:\n%s", i, n, out)
		}
	}
	r := run(t.Context(), "", "tail", "mesh.analytics.big_orders", "--jetstream", "-c", "6", "-o", "json", "-s", url, "--inbox-prefix", "_INBOX_producer")
	if r.err != nil || strings.Count(r.stdout, "\n") != 6 {
		t.Fatalf("meshflow tail of a data product: %v\n%s", r.err, r.stdout)
	}

	// Dead letters are readable.
	if out, err := natsCLI(t, url, "", "pub", "mesh.orders.in.checkout", checkoutEvent(7, "anonymous")); err != nil {
		t.Fatalf("nats pub: %v\n%s", err, out)
	}
	r = run(t.Context(), "", "tail", "mesh.orders._dlq", "--jetstream", "-c", "1", "-o", "json", "-s", url, "--inbox-prefix", "_INBOX_producer")
	if r.err != nil || !strings.Contains(r.stdout, `"customer_id":"anonymous"`) || !strings.Contains(r.stderr, "contract broken") {
		t.Fatalf("meshflow tail of the dead letters: %v\n%s\n%s", r.err, r.stdout, r.stderr)
	}

	// Without the producers' inbox prefix a request fails at once, saying
	// which prefix to use.
	r = run(t.Context(), "", "domains", "list", "-s", url)
	if r.err == nil || !strings.Contains(r.stderr, "--inbox-prefix _INBOX_producer") {
		t.Fatalf("domains list without the inbox prefix: %v\n%s", r.err, r.stderr)
	}
}

// TestDevBidsUsers: `meshflow dev --example bids` runs its pipeline as its
// own NATS user, and clients without credentials are producers: they
// publish bids and read the results, and nothing else.
func TestDevBidsUsers(t *testing.T) {
	d := startDev(t, "--example", "bids", "--rate", "500", "-o", "json")
	url := d.url
	inbox := []string{"--inbox-prefix", "_INBOX_producer"}
	// The generator publishes as a producer; results come.
	var before streamState
	testutil.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		var err error
		if before, err = streamInfo(t, url, "BIDS_TOP"); err == nil && before.Msgs == 0 {
			err = fmt.Errorf("no results yet")
		}
		return err
	})
	out, err := natsCLI(t, url, "", append(inbox, "sub", "bids.top", "--stream", "BIDS_TOP", "--all", "--count", "1", "--raw")...)
	if err != nil || !strings.Contains(out, `"auction":`) {
		t.Fatalf("reading the results: %v\n%s", err, out)
	}
	bid := nexmark.NewGenerator(nexmark.Config{BaseTime: time.Now().UTC()}).NextBidJSON(nil)
	if out, err := natsCLI(t, url, "", "pub", "bids.in", string(bid)); err != nil || strings.Contains(out, "Violation") {
		t.Fatalf("publishing a bid: %v\n%s", err, out)
	}
	file := writeFile(t, "bids.jsonl", string(bid)+"\n")
	if r := run(t.Context(), "", "inject", "--subject", "bids.in", "--file", file, "-s", url, "--inbox-prefix", "_INBOX_producer"); r.err != nil {
		t.Fatalf("meshflow inject as a producer: %v\n%s", r.err, r.stderr)
	}
	if r := run(t.Context(), "", "tail", "bids.top", "-c", "1", "-o", "json", "-s", url, "--inbox-prefix", "_INBOX_producer"); r.err != nil || !strings.Contains(r.stdout, `"auction":`) {
		t.Fatalf("meshflow tail bids.top as a producer: %v\n%s", r.err, r.stdout)
	}

	const violation = "Permissions Violation for "
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"forge results", []string{"pub", "bids.top", `{"auction":1}`}, `Publish to "bids.top"`},
		{"forge a dead letter", []string{"pub", "bids.in.dlq", `{}`}, `Publish to "bids.in.dlq"`},
		{"publish on the pipeline's private subjects", []string{"pub", "mf.bids.ctl.failure", "x"}, `Publish to "mf.bids.ctl.failure"`},
		{"delete the results stream", append(inbox, "stream", "rm", "BIDS_TOP", "-f"), `Publish to "$JS.API.STREAM.DELETE.BIDS_TOP"`},
		{"look at the input stream", append(inbox, "stream", "purge", "BIDS_IN", "-f"), `Publish to "$JS.API.STREAM.INFO.BIDS_IN"`},
		{"purge the input stream", append(inbox, "req", "$JS.API.STREAM.PURGE.BIDS_IN", ""), `Publish to "$JS.API.STREAM.PURGE.BIDS_IN"`},
		{"pull from the pipeline's consumer", append(inbox, "consumer", "next", "BIDS_IN", "bids"), `Publish to "$JS.API.CONSUMER.MSG.NEXT.BIDS_IN.bids"`},
		{"delete the pipeline's consumer", append(inbox, "consumer", "rm", "BIDS_IN", "bids", "-f"), `Publish to "$JS.API.CONSUMER.DELETE.BIDS_IN.bids"`},
		{"read every inbox", []string{"sub", "_INBOX.>"}, `Subscription to "_INBOX.>"`},
		{"read the pipeline's inbox", []string{"sub", "_INBOX_bids.>"}, `Subscription to "_INBOX_bids.>"`},
		{"read acknowledgements", []string{"sub", "$JS.ACK.>"}, `Subscription to "$JS.ACK.>"`},
		{"read other producers' bids", []string{"sub", "bids.in"}, `Subscription to "bids.in"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := natsCLI(t, url, violation+tc.want, tc.args...)
			if !strings.Contains(out, violation+tc.want) {
				t.Fatalf("nats %s: %v, want %s%s in:\n%s", strings.Join(tc.args, " "), err, violation, tc.want, out)
			}
		})
	}
	// The pipeline goes on: more results, the stream from its start.
	testutil.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		after, err := streamInfo(t, url, "BIDS_TOP")
		if err != nil {
			return err
		}
		if after.FirstSeq != 1 || after.Msgs <= before.Msgs {
			return fmt.Errorf("BIDS_TOP was %+v, is %+v", before, after)
		}
		return nil
	})
}
