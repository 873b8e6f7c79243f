package meshflow_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/actors/natsio"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
)

var bidSchema = arrow.NewSchema([]arrow.Field{
	{Name: "auction", Type: arrow.PrimitiveTypes.Int64},
	{Name: "bidder", Type: arrow.PrimitiveTypes.Int64},
	{Name: "price", Type: arrow.PrimitiveTypes.Int64},
	{Name: "channel", Type: arrow.BinaryTypes.String},
	{Name: "date_time", Type: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}},
}, nil)

type bid struct {
	Auction  int64  `json:"auction"`
	Bidder   int64  `json:"bidder"`
	Price    int64  `json:"price"`
	Channel  string `json:"channel"`
	DateTime string `json:"date_time"`
}

// outRow is what the pipeline publishes for one bid.
type outRow struct {
	Auction  int64   `json:"auction"`
	Bidder   int64   `json:"bidder"`
	Price    int64   `json:"price"`
	PriceEUR float64 `json:"price_eur"`
}

// TestEndToEnd injects JSON events with a plain NATS client, runs
// filter -> map -> key-by(4) -> JetStream sink, and reads the output back
// from JetStream: exactly the expected rows, and every malformed event on
// the dead-letter subject.
func TestEndToEnd(t *testing.T) {
	const events = 100_000
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 1))

	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	js := natstest.JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BIDS", Subjects: []string{"bids.in"}}); err != nil {
		t.Fatal(err)
	}

	base := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	want := map[outRow]int{}
	var bad []string
	for i := 0; i < events; i++ {
		b := bid{
			Auction:  1000 + rng.Int64N(500),
			Bidder:   2000 + rng.Int64N(5000),
			Price:    rng.Int64N(20_000),
			Channel:  []string{"web", "app", "partner"}[rng.IntN(3)],
			DateTime: base.Add(time.Duration(i) * time.Millisecond).Format(time.RFC3339Nano),
		}
		data, _ := json.Marshal(b)
		if i%1000 == 999 {
			// Every thousandth event is malformed in one of three ways.
			switch (i / 1000) % 3 {
			case 0:
				data = data[:len(data)/2]
			case 1:
				data = []byte(strings.Replace(string(data), fmt.Sprintf(`"price":%d`, b.Price), `"price":"lots"`, 1))
			case 2:
				data = []byte(`{"auction":1,"channel":"web"}`)
			}
			bad = append(bad, string(data))
		} else if b.Price > 5000 {
			want[outRow{b.Auction, b.Bidder, b.Price, float64(b.Price) * 0.01}]++
		}
		if _, err := js.PublishAsync("bids.in", data, jetstream.WithStallWait(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("publish did not complete")
	}

	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	p := meshflow.NewPipeline("e2e")
	src := p.Source("bids", meshflow.FromJetStream(meshflow.JetStreamSource{
		Subjects:   []string{"bids.in"},
		Schema:     bidSchema,
		Bounded:    true,
		DeadLetter: "bids.dlq",
	}))
	big := src.Filter("expensive", meshflow.Col("price").Gt(5000))
	eur := big.Map("eur", meshflow.Set("price_eur", meshflow.Col("price").Mul(0.01)))
	eur.KeyBy("auction").To("out", meshflow.ToJetStream(meshflow.JetStreamSink{Subject: "bids.out"}), meshflow.Parallelism(4))
	if err := meshflow.Run(ctx, p, meshflow.WithNATS(nc), meshflow.WithAllocator(mem), meshflow.WithLogger(testutil.TestLogger(t))); err != nil {
		t.Fatal(err)
	}

	got := map[outRow]int{}
	total := 0
	for _, m := range readAll(t, ctx, js, "bids.out") {
		var r outRow
		if err := json.Unmarshal(m.Data(), &r); err != nil {
			t.Fatalf("output %q: %v", m.Data(), err)
		}
		got[r]++
		total++
	}
	wantTotal := 0
	for _, n := range want {
		wantTotal += n
	}
	if total != wantTotal {
		t.Errorf("output has %d rows, want %d", total, wantTotal)
	}
	for r, n := range want {
		if got[r] != n {
			t.Errorf("row %+v: got %d times, want %d", r, got[r], n)
			break
		}
	}

	dlq := readAll(t, ctx, js, "bids.dlq")
	if len(dlq) != len(bad) {
		t.Fatalf("dead-letter stream has %d events, want %d", len(dlq), len(bad))
	}
	var gotBad []string
	for _, m := range dlq {
		if m.Headers().Get(natsio.HeaderError) == "" {
			t.Errorf("dead-lettered event %q has no reason", m.Data())
		}
		gotBad = append(gotBad, string(m.Data()))
	}
	slices.Sort(bad)
	slices.Sort(gotBad)
	if !slices.Equal(bad, gotBad) {
		t.Errorf("dead-lettered events differ from the malformed ones")
	}
	mem.AssertSize(t, 0)
}

// readAll reads every message of the stream holding subject.
func readAll(t testing.TB, ctx context.Context, js jetstream.JetStream, subject string) []jetstream.Msg {
	t.Helper()
	name, err := js.StreamNameBySubject(ctx, subject)
	if err != nil {
		t.Fatalf("stream for %s: %v", subject, err)
	}
	st, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := int(info.State.Msgs)
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	for len(out) < n {
		batch, err := cons.Fetch(min(n-len(out), 10_000), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			out = append(out, m)
			got++
		}
		if got == 0 {
			t.Fatalf("read %d of %d messages of %s: %v", len(out), n, subject, batch.Error())
		}
	}
	return out
}
