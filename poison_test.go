package meshflow_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/actors/natsio"
	"github.com/meshflow/meshflow/domains"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
)

var (
	poisonTS       = &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}
	poisonContract = domains.Contract{Version: 1, Schema: arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "note", Type: arrow.BinaryTypes.String},
		{Name: "amount", Type: arrow.PrimitiveTypes.Float64},
		{Name: "at", Type: poisonTS},
		{Name: "repeat", Type: arrow.PrimitiveTypes.Int64},
	}, nil), Rules: []domains.Rule{domains.Range("amount", 0.01, 100_000)}}
)

// repeatNotes replaces each row's note with itself repeated "repeat"
// times: an enrichment whose output can outgrow its input.
func repeatNotes(_ context.Context, mem memory.Allocator, in arrow.RecordBatch) (arrow.RecordBatch, error) {
	notes := in.Column(1).(*array.String)
	reps := in.Column(4).(*array.Int64)
	b := array.NewStringBuilder(mem)
	defer b.Release()
	for i := 0; i < int(in.NumRows()); i++ {
		b.Append(strings.Repeat(notes.Value(i), int(max(reps.Value(i), 1))))
	}
	col := b.NewArray()
	defer col.Release()
	cols := append([]arrow.Array(nil), in.Columns()...)
	cols[1] = col
	return array.NewRecordBatch(in.Schema(), cols, in.NumRows()), nil
}

// TestPoisonEvents publishes, between good events, each kind of event
// that once stopped a domain: an undecodable event just under the max
// payload, an event whose output row grows past it, megabytes of escapes
// that grow when encoded again, NaN and infinite amounts, a timestamp in
// year 10000, a million-deep nesting. The domain keeps running, every good
// event reaches the data product exactly once, and every bad one is in the
// domain's dead-letter stream with a reason.
func TestPoisonEvents(t *testing.T) {
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	maxPayload := int(nc.MaxPayload())
	d := &meshflow.Domain{
		Domain: domains.Domain{Name: "poison", Owner: "team-test",
			Inputs:  []domains.Input{{Name: "events", Contract: poisonContract}},
			Outputs: []domains.Output{{Name: "out", Contract: poisonContract}}},
		Build: func(b *meshflow.DomainPipeline) {
			b.Output("out", b.Input("events").Apply("repeat", repeatNotes))
		},
	}
	m, err := meshflow.NewMesh([]*meshflow.Domain{d}, meshflow.WithNATS(nc), meshflow.WithLogger(testutil.TestLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(testutil.Context(t, 3*time.Minute))
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	in := domains.InputSubject("poison", "events")
	testutil.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		_, err := js.StreamNameBySubject(ctx, in)
		return err
	})

	good := func(id int) string {
		return fmt.Sprintf(`{"id":%d,"note":"ok","amount":10.5,"at":"2026-01-01T00:00:00Z","repeat":1}`, id)
	}
	event := func(id int, note, amount, at string, repeat int) string {
		return fmt.Sprintf(`{"id":%d,"note":%s,"amount":%s,"at":%s,"repeat":%d}`, id, note, amount, at, repeat)
	}
	undecodable := `{"id":1000,"note":"` + strings.Repeat("x", maxPayload-200) // no closing quote
	bad := []struct {
		name, payload string
	}{
		{"undecodable near max payload", undecodable + strings.Repeat("y", maxPayload-100-len(undecodable))},
		{"output grows past max payload", event(1001, `"`+strings.Repeat("z", maxPayload/4)+`"`, "10.5", `"2026-01-01T00:00:00Z"`, 8)},
		{"escapes that grow when encoded", event(1002, `"`+strings.Repeat(`\b`, 2<<20)+`"`, "10.5", `"2026-01-01T00:00:00Z"`, 4)},
		{"NaN amount", event(1003, `"nan"`, `"NaN"`, `"2026-01-01T00:00:00Z"`, 1)},
		{"+Inf amount", event(1004, `"inf"`, `"Infinity"`, `"2026-01-01T00:00:00Z"`, 1)},
		{"-Inf amount", event(1005, `"-inf"`, `"-Infinity"`, `"2026-01-01T00:00:00Z"`, 1)},
		{"year 10000", event(1006, `"y10k"`, "10.5", `"10000-01-01T00:00:00Z"`, 1)},
		{"million-deep nesting", event(1007, strings.Repeat("[", 1<<20)+strings.Repeat("]", 1<<20), "10.5", `"2026-01-01T00:00:00Z"`, 1)},
	}
	id := 0
	for _, b := range bad {
		for range 50 {
			id++
			if _, err := js.Publish(ctx, in, []byte(good(id))); err != nil {
				t.Fatal(err)
			}
		}
		if len(b.payload) > maxPayload {
			t.Fatalf("%s: %d bytes, above the max payload", b.name, len(b.payload))
		}
		if _, err := js.Publish(ctx, in, []byte(b.payload)); err != nil {
			t.Fatalf("%s: %v", b.name, err)
		}
	}
	for range 50 {
		id++
		if _, err := js.Publish(ctx, in, []byte(good(id))); err != nil {
			t.Fatal(err)
		}
	}

	testutil.CheckFor(t, time.Minute, 50*time.Millisecond, func() error {
		dom, in := portStatus(m, "poison", "events")
		_, out := portStatus(m, "poison", "out")
		if dom.State != meshflow.DomainRunning {
			t.Fatalf("domain is %s: %s", dom.State, dom.Error)
		}
		if out.RowsOut < int64(id) || in.DeadLettered+out.DeadLettered < int64(len(bad)) {
			return fmt.Errorf("%d good rows out (want %d), %d+%d dead letters (want %d)", out.RowsOut, id, in.DeadLettered, out.DeadLettered, len(bad))
		}
		return nil
	})
	dom, inPort := portStatus(m, "poison", "events")
	if dom.State != meshflow.DomainRunning {
		t.Fatalf("domain is %s: %s", dom.State, dom.Error)
	}
	// Status counts every dead letter of a port, by class: decode failures
	// at the source, contract violations at the boundary, rows too large
	// at the sink.
	_, outPort := portStatus(m, "poison", "out")
	wantIn := map[string]int64{natsio.ClassDecode: 3, natsio.ClassContract: 3}
	wantOut := map[string]int64{natsio.ClassOversize: 2}
	if !maps.Equal(inPort.DeadLetteredBy, wantIn) || inPort.DeadLettered != 6 {
		t.Errorf("input port dead letters %d %v, want 6 %v", inPort.DeadLettered, inPort.DeadLetteredBy, wantIn)
	}
	if !maps.Equal(outPort.DeadLetteredBy, wantOut) || outPort.DeadLettered != 2 {
		t.Errorf("output port dead letters %d %v, want 2 %v", outPort.DeadLettered, outPort.DeadLetteredBy, wantOut)
	}

	// The boundary counts a row out before the sink has published it.
	testutil.CheckFor(t, time.Minute, 50*time.Millisecond, func() error {
		info, err := js.Stream(ctx, domains.StreamName(domains.ProductSubject("poison", "out")))
		if err != nil {
			return err
		}
		if n := info.CachedInfo().State.Msgs; n < uint64(id) {
			return fmt.Errorf("%d rows in the data product, want %d", n, id)
		}
		return nil
	})
	seen := map[int]int{}
	for _, msg := range readAll(t, ctx, js, domains.ProductSubject("poison", "out")) {
		var row struct{ ID int }
		if err := json.Unmarshal(msg.Data(), &row); err != nil {
			t.Fatalf("product row %.80q: %v", msg.Data(), err)
		}
		seen[row.ID]++
	}
	for i := 1; i <= id; i++ {
		if seen[i] != 1 {
			t.Errorf("good event %d in the data product %d times, want once", i, seen[i])
		}
	}
	if len(seen) != id {
		t.Errorf("%d distinct ids in the data product, want the %d good ones", len(seen), id)
	}
	// Dead letters are published when the checkpoint covering them
	// completes, in the background like the data product's rows: wait for
	// them as for the rows.
	testutil.CheckFor(t, time.Minute, 50*time.Millisecond, func() error {
		info, err := js.Stream(ctx, domains.StreamName(domains.DeadLetterSubject("poison")))
		if err != nil {
			return err
		}
		if n := info.CachedInfo().State.Msgs; n < uint64(len(bad)) {
			return fmt.Errorf("%d dead letters in their stream, want %d", n, len(bad))
		}
		return nil
	})
	dlq := readAll(t, ctx, js, domains.DeadLetterSubject("poison"))
	if len(dlq) != len(bad) {
		t.Errorf("%d dead letters, want %d", len(dlq), len(bad))
	}
	for _, msg := range dlq {
		if msg.Headers().Get(natsio.HeaderError) == "" || msg.Headers().Get(natsio.HeaderErrorClass) == "" {
			t.Errorf("dead letter without a reason: headers %v", msg.Headers())
		}
		t.Logf("dead letter: class %s, %d bytes, truncated %q: %.160s", msg.Headers().Get(natsio.HeaderErrorClass),
			len(msg.Data()), msg.Headers().Get(natsio.HeaderTruncated), msg.Headers().Get(natsio.HeaderError))
	}
	cancel()
	if err := <-done; err != nil && ctx.Err() == nil {
		t.Fatal(err)
	}
}
