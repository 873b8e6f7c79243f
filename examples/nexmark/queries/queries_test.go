package queries_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/examples/nexmark/queries"
	"github.com/meshflow/meshflow/internal/nexmark"
	"github.com/meshflow/meshflow/internal/testutil"
)

var twoCols = arrow.NewSchema([]arrow.Field{
	{Name: "auction", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "price", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
}, nil)

// TestFileQueryInProcess runs q2 in process on a generated file with a
// checked allocator: every batch the file source, the filter and q2 make is
// released, and the rows are the bids of auctions that are multiples of
// 123.
func TestFileQueryInProcess(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	g := nexmark.NewGenerator(nexmark.Config{Seed: 3})
	var file, want bytes.Buffer
	for range 20_000 {
		ev := g.NextEvent()
		file.Write(nexmark.AppendEventJSON(nil, &ev))
		file.WriteByte('\n')
		if ev.Type == nexmark.BidEvent && ev.Bid.Auction%123 == 0 {
			fmt.Fprintf(&want, `{"auction":%d,"price":%d}`+"\n", ev.Bid.Auction, ev.Bid.Price)
		}
	}
	path := filepath.Join(t.TempDir(), "events.jsonl")
	if err := os.WriteFile(path, file.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	p, err := queries.Build("q2", queries.FromFile(path), meshflow.Print(&out, meshflow.JSONLines))
	if err != nil {
		t.Fatal(err)
	}
	err = meshflow.Run(testutil.Context(t, time.Minute), p, meshflow.WithAllocator(mem), meshflow.WithDataDir(t.TempDir()),
		meshflow.WithoutCheckpoints(), meshflow.WithLogger(testutil.TestLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	if want.Len() == 0 || out.String() != want.String() {
		t.Fatalf("q2:\n got %s\nwant %s", out.String(), want.String())
	}
}

// TestBuildRefuses: Build builds and validates every Nexmark query q0 to
// q8, and refuses an unknown one without ErrNotSupported.
func TestBuildRefuses(t *testing.T) {
	src := meshflow.FromJSON(nexmark.EventSchema)
	for q := range 9 {
		name := fmt.Sprintf("q%d", q)
		p, err := queries.Build(name, src, meshflow.Print(&bytes.Buffer{}, meshflow.JSONLines))
		switch {
		case err != nil:
			t.Errorf("%s: %v", name, err)
		case p.Validate() != nil:
			t.Errorf("%s: %v", name, p.Validate())
		}
	}
	if _, err := queries.Build("q22", src, nil); err == nil || errors.Is(err, queries.ErrNotSupported) {
		t.Errorf("q22: %v", err)
	}
}

// Query q1 converts bid prices with an exact 0.908; people and auctions
// are not bids and give no row.
func ExampleBuild() {
	dir, _ := os.MkdirTemp("", "nexmark-example")
	defer os.RemoveAll(dir)
	p, err := queries.Build("q1", meshflow.FromJSON(nexmark.EventSchema,
		`{"type":"person","id":1000,"name":"Kate Walton","email_address":"uzw@xkyy.com","credit_card":"2181 4431 1219 4997","city":"Boise","state":"ID","date_time":1704067200000,"extra":""}`,
		`{"type":"bid","auction":1000,"bidder":1001,"price":126324,"channel":"Google","url":"https://www.nexmark.com/a/b/c/item.htm?query=1","date_time":1704067200004,"extra":"x"}`,
		`{"type":"bid","auction":1012,"bidder":1002,"price":551,"channel":"Apple","url":"https://www.nexmark.com/a/b/c/item.htm?query=1","date_time":1704067200005,"extra":""}`,
	), meshflow.Print(os.Stdout, meshflow.JSONLines))
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := meshflow.Run(context.Background(), p, meshflow.WithDataDir(dir), meshflow.WithoutCheckpoints()); err != nil {
		fmt.Println(err)
	}
	// Output:
	// {"auction":1000,"bidder":1001,"price":114702.192,"date_time":"2024-01-01T00:00:00.004Z","extra":"x"}
	// {"auction":1012,"bidder":1002,"price":500.308,"date_time":"2024-01-01T00:00:00.005Z","extra":""}
}
