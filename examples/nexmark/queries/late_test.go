package queries_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/examples/nexmark/queries"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/nexmark"
	"github.com/meshflow/meshflow/internal/testutil"
)

// TestQ7LateBids: q7's bids late for their window (the watermark passed
// its end) reach the late subject of its window max, whatever their
// price, though q7 drops the on-time bids below their window's running
// maximum before it; they are not in the results. The bids are one a
// batch, so the watermark moves between them. (Whether the window join
// after it takes such a bid as late too depends on when the maximum, the
// join's other input, reaches it: the join judges by the lesser of its
// inputs' watermarks. A late bid at the maximum may be joined with it, as
// before; the test has none.)
func TestQ7LateBids(t *testing.T) {
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	bid := func(bidder, price, ms int64) nexmark.Event {
		return nexmark.Event{Type: nexmark.BidEvent, Bid: nexmark.Bid{Auction: 1, Bidder: bidder, Price: price, Channel: "c", URL: "u",
			DateTime: base.Add(time.Duration(ms) * time.Millisecond)}}
	}
	for _, tc := range []struct {
		name string
		late []nexmark.Event // after the watermark passed 10 s
		want string
	}{
		{"below the maximum", []nexmark.Event{bid(100, 1, 1000)},
			`{"auction":1,"price":50,"bidder":2,"date_time":"2024-01-01T00:00:02Z","extra":""}` + "\n" +
				`{"auction":1,"price":50,"bidder":3,"date_time":"2024-01-01T00:00:03Z","extra":""}` + "\n" +
				`{"auction":1,"price":7,"bidder":4,"date_time":"2024-01-01T00:00:20Z","extra":""}` + "\n"},
		{"above the maximum", []nexmark.Event{bid(100, 1000, 9999), bid(101, 40, 5000)},
			`{"auction":1,"price":50,"bidder":2,"date_time":"2024-01-01T00:00:02Z","extra":""}` + "\n" +
				`{"auction":1,"price":50,"bidder":3,"date_time":"2024-01-01T00:00:03Z","extra":""}` + "\n" +
				`{"auction":1,"price":7,"bidder":4,"date_time":"2024-01-01T00:00:20Z","extra":""}` + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Window [0 s, 10 s): 10, then 50 twice (the maximum) and 20
			// below it; a bid at 20 s moves the watermark to 15 s.
			evs := []nexmark.Event{bid(1, 10, 1000), bid(2, 50, 2000), bid(3, 50, 3000), bid(5, 20, 4000), bid(4, 7, 20_000)}
			evs = append(evs, tc.late...)
			var file []byte
			for _, ev := range evs {
				file = append(nexmark.AppendEventJSON(file, &ev), '\n')
			}
			path := filepath.Join(t.TempDir(), "events.jsonl")
			if err := os.WriteFile(path, file, 0o600); err != nil {
				t.Fatal(err)
			}
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			nc := natstest.Connect(t, natstest.RunJetStream(t))
			var out bytes.Buffer
			src := meshflow.FromSource(nexmark.EventSchema, func() actors.Source { return &queries.FileSource{Path: path, BatchSize: 1} })
			p, err := queries.Build("q7", src, meshflow.Print(&out, meshflow.JSONLines))
			if err != nil {
				t.Fatal(err)
			}
			ctx := testutil.Context(t, time.Minute)
			err = meshflow.Run(ctx, p, meshflow.WithAllocator(mem), meshflow.WithDataDir(t.TempDir()), meshflow.WithNATS(nc),
				meshflow.WithoutCheckpoints(), meshflow.WithLogger(testutil.TestLogger(t)))
			if err != nil {
				t.Fatal(err)
			}
			if out.String() != tc.want {
				t.Errorf("results:\n%s\nwant\n%s", out.String(), tc.want)
			}
			js := natstest.JetStream(t, nc)
			for _, subject := range []string{"nexmark-q7.max.late"} {
				got := lateBidders(ctx, t, js, subject)
				for _, ev := range tc.late {
					if !got[ev.Bid.Bidder] {
						t.Errorf("%s: late bid of bidder %d missing (got %v)", subject, ev.Bid.Bidder, got)
					}
				}
				if len(got) != len(tc.late) {
					t.Errorf("%s: %d late bids, want %d", subject, len(got), len(tc.late))
				}
			}
		})
	}
}

// lateBidders reads the late rows of subject: their bidders.
func lateBidders(ctx context.Context, t *testing.T, js jetstream.JetStream, subject string) map[int64]bool {
	t.Helper()
	got := map[int64]bool{}
	stream, err := js.StreamNameBySubject(ctx, subject)
	if err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
	info, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	for range info.CachedInfo().State.Msgs {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var row struct{ Bidder int64 }
		if err := json.Unmarshal(m.Data(), &row); err != nil {
			t.Fatalf("late row %q: %v", m.Data(), err)
		}
		got[row.Bidder] = true
	}
	return got
}
