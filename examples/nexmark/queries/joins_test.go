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
	for _, q := range []string{"q3", "q5", "q7", "q8"} {
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
