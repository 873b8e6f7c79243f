package queries_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/examples/nexmark/internal/reference"
	"github.com/meshflow/meshflow/examples/nexmark/queries"
	"github.com/meshflow/meshflow/internal/nexmark"
	"github.com/meshflow/meshflow/internal/testutil"
)

// TestJoinQueries runs q3, q5, q7 and q8 in process on generated events
// (50 events a second of event time, so that the 10 s windows hold a few
// hundred events; arrivals out of order by up to 2 s, and one bid later
// than MaxOutOfOrderness) with a checked allocator, and compares the
// rows, as a multiset, with the plain-Go reference of each query over the
// events that are not late.
func TestJoinQueries(t *testing.T) {
	g := nexmark.NewGenerator(nexmark.Config{Seed: 11, EventsPerSecond: 50})
	evs := make([]nexmark.Event, 5000)
	for i := range evs {
		evs[i] = g.NextEvent()
	}
	var file []byte
	for _, ev := range reference.Disorder(evs, 2*time.Second, 11) {
		file = append(nexmark.AppendEventJSON(file, &ev), '\n')
	}
	// A bid far behind, at the highest price, last: late for the windows
	// of q5 and q7, it is in neither's results (nor in the reference).
	late := nexmark.Event{Type: nexmark.BidEvent, Bid: nexmark.Bid{Auction: evs[1].Auction.ID, Bidder: evs[0].Person.ID,
		Price: 1 << 40, Channel: "late", URL: "u", DateTime: evs[0].Time(), Extra: ""}}
	file = append(nexmark.AppendEventJSON(file, &late), '\n')
	path := filepath.Join(t.TempDir(), "events.jsonl")
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"q3", "q4", "q5", "q6", "q7", "q8"} {
		t.Run(q, func(t *testing.T) {
			want := reference.Results(q, evs)
			if len(want) == 0 {
				t.Fatalf("%s: the reference has no rows: the test would prove nothing", q)
			}
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			var out bytes.Buffer
			src := meshflow.FromSource(nexmark.EventSchema, func() actors.Source { return &queries.FileSource{Path: path, BatchSize: 256} })
			p, err := queries.Build(q, src,
				meshflow.Print(&out, meshflow.JSONLines))
			if err != nil {
				t.Fatal(err)
			}
			err = meshflow.Run(testutil.Context(t, time.Minute), p, meshflow.WithAllocator(mem), meshflow.WithDataDir(t.TempDir()),
				meshflow.WithoutCheckpoints(), meshflow.WithLogger(testutil.TestLogger(t)))
			if err != nil {
				t.Fatal(err)
			}
			diff, err := reference.Diff(out.Bytes(), want)
			if err != nil {
				t.Fatal(err)
			}
			if diff != "" {
				t.Fatalf("%s: %s", q, diff)
			}
			t.Logf("%s: %d rows", q, len(want))
		})
	}
}

// runFile runs query q in process on the events of path (read in batches
// of batchSize rows) with a checked allocator and returns its output.
func runFile(t *testing.T, q, path string, batchSize int) []byte {
	t.Helper()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	var out bytes.Buffer
	src := meshflow.FromSource(nexmark.EventSchema, func() actors.Source { return &queries.FileSource{Path: path, BatchSize: batchSize} })
	p, err := queries.Build(q, src, meshflow.Print(&out, meshflow.JSONLines))
	if err != nil {
		t.Fatal(err)
	}
	err = meshflow.Run(testutil.Context(t, time.Minute), p, meshflow.WithAllocator(mem), meshflow.WithDataDir(t.TempDir()),
		meshflow.WithoutCheckpoints(), meshflow.WithLogger(testutil.TestLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestClosingEdges runs q4 and q6 on hand-made events, one a batch: three
// auctions of one category and seller expiring at the same instant close
// in id order; a bid at an auction's expiry counts though it arrives when
// the watermark is at that expiry; bids before an auction's start or after
// its expiry do not count.
func TestClosingEdges(t *testing.T) {
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int64) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	auction := func(id, start int64) nexmark.Event {
		return nexmark.Event{Type: nexmark.AuctionEvent, Auction: nexmark.Auction{ID: id, ItemName: "i", Description: "d",
			InitialBid: 1, Reserve: 2, DateTime: at(start), Expires: at(1000), Seller: 7, Category: 1}}
	}
	bid := func(auction, price, ms int64) nexmark.Event {
		return nexmark.Event{Type: nexmark.BidEvent, Bid: nexmark.Bid{Auction: auction, Bidder: 9, Price: price, Channel: "c", URL: "u", DateTime: at(ms)}}
	}
	person := func(ms int64) nexmark.Event {
		return nexmark.Event{Type: nexmark.PersonEvent, Person: nexmark.Person{ID: 9, Name: "n", EmailAddress: "e", CreditCard: "c",
			City: "c", State: "OR", DateTime: at(ms)}}
	}
	evs := []nexmark.Event{
		auction(3, 20), auction(2, 10), auction(1, 0),
		bid(3, 30, 500), bid(2, 20, 500), bid(1, 10, 500), bid(2, 500, 5),
		// The watermark is now 1000 ms (6001 - 5000, less 1 µs): the
		// auctions are still open.
		person(6001),
		bid(1, 100, 1000), bid(2, 200, 1001),
		person(7000),
	}
	var file []byte
	for _, ev := range evs {
		file = append(nexmark.AppendEventJSON(file, &ev), '\n')
	}
	path := filepath.Join(t.TempDir(), "events.jsonl")
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ q, want string }{
		{"q4", `{"category":1,"avg_price":100}` + "\n" + `{"category":1,"avg_price":60}` + "\n" + `{"category":1,"avg_price":50}` + "\n"},
		{"q6", `{"seller":7,"avg_price":100}` + "\n" + `{"seller":7,"avg_price":60}` + "\n" + `{"seller":7,"avg_price":50}` + "\n"},
	} {
		t.Run(tc.q, func(t *testing.T) {
			out := runFile(t, tc.q, path, 1)
			if string(out) != tc.want {
				t.Fatalf("%s:\n%s\nwant\n%s", tc.q, out, tc.want)
			}
			if diff, err := reference.Diff(out, reference.Results(tc.q, evs)); err != nil || diff != "" {
				t.Fatalf("%s: the reference differs: %v %s", tc.q, err, diff)
			}
		})
	}
}

// TestAuctionDurations: the generator's auctions last at most 2 × the
// event time of 1,666 events (67 s at 50 events a second, 0.34 s at
// 10,000), within MaxAuctionDuration, and come near that bound.
func TestAuctionDurations(t *testing.T) {
	for _, tc := range []struct {
		rate  float64
		bound time.Duration
	}{{50, 67 * time.Second}, {10_000, 340 * time.Millisecond}} {
		g := nexmark.NewGenerator(nexmark.Config{Seed: 3, EventsPerSecond: tc.rate})
		var longest time.Duration
		for range 100_000 {
			if ev := g.NextEvent(); ev.Type == nexmark.AuctionEvent {
				longest = max(longest, ev.Auction.Expires.Sub(ev.Auction.DateTime))
			}
		}
		if longest > tc.bound || longest < tc.bound*9/10 || tc.bound > queries.MaxAuctionDuration {
			t.Errorf("rate %v: the longest auction lasts %v; want at most %v, near it, and at most %v", tc.rate, longest, tc.bound, queries.MaxAuctionDuration)
		}
	}
}
