package queries_test

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/nexmark"
	"github.com/meshflow/meshflow/internal/testutil"
)

// TestReferences checks the references of reference_test.go against
// naive nested loops over the decoded events, on streams slow enough (100
// events a second) for many windows and closed auctions, and slower still
// (5 a second: few bids a window, many of them on window boundaries), with
// a checked allocator. Every query must give rows, so no comparison is
// vacuous.
func TestReferences(t *testing.T) {
	seeds := []int64{1, 2, int64(testutil.Seed(t) % (1 << 62))}
	for _, c := range []struct {
		rate   float64
		events int
	}{{100, 10_000}, {5, 3_000}} {
		for _, seed := range seeds {
			t.Run(fmt.Sprintf("rate=%v/seed=%d", c.rate, seed), func(t *testing.T) {
				testReferences(t, nexmark.Config{Seed: seed, EventsPerSecond: c.rate}, c.events)
			})
		}
	}
}

// testReferences compares the references with the naive loops on the
// first n events of cfg.
func testReferences(t *testing.T, cfg nexmark.Config, n int) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	recs, err := eventBatches(mem, cfg, n, 300)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseAll(recs)
	var evs []nexmark.Event
	for _, rec := range recs {
		e, err := nexmark.DecodeEvents(rec)
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, e...)
	}
	for _, tc := range []struct {
		q         string
		got, want any
	}{
		{"q0", stateless(t, "q0", recs), naiveStateless("q0", evs)},
		{"q1", stateless(t, "q1", recs), naiveStateless("q1", evs)},
		{"q2", stateless(t, "q2", recs), naiveStateless("q2", evs)},
		{"q3", sorted(refQ3(recs), cmpQ3), sorted(naiveQ3(evs), cmpQ3)},
		{"q4", refQ4(recs), naiveQ4(evs)},
		{"q5", refQ5(recs), naiveQ5(evs)},
		{"q6", refQ6(recs), naiveQ6(evs)},
		{"q7", refQ7(recs), naiveQ7(evs)},
		{"q8", refQ8(recs), naiveQ8(evs)},
	} {
		got, want := fmt.Sprint(tc.got), fmt.Sprint(tc.want)
		if got != want {
			t.Errorf("%s: reference\n%.2000s\nnaive\n%.2000s", tc.q, got, want)
		}
		if want == "[]" {
			t.Errorf("%s: no rows", tc.q)
		}
	}
}

func sorted[T any](v []T, f func(a, b T) int) []T {
	slices.SortFunc(v, f)
	return v
}

func cmpQ3(a, b q3Row) int {
	return cmp.Or(cmp.Compare(a.ID, b.ID), cmp.Compare(a.Name, b.Name), cmp.Compare(a.City, b.City), cmp.Compare(a.State, b.State))
}

// stateless returns the rows of the reference of q0, q1 or q2 over recs.
func stateless(t *testing.T, q string, recs []arrow.RecordBatch) [][]any {
	r := newStatelessRef(q)
	var rows [][]any
	for _, rec := range recs {
		out, err := r.batch(rec)
		if err != nil {
			t.Fatal(err)
		}
		if !out.Schema().Equal(refSchemas[q]) {
			t.Fatalf("%s: schema %s", q, out.Schema())
		}
		for i := range int(out.NumRows()) {
			var row []any
			for _, c := range out.Columns() {
				switch c := c.(type) {
				case *array.Int64:
					row = append(row, c.Value(i))
				case *array.Timestamp:
					row = append(row, int64(c.Value(i)))
				case *array.Float64:
					row = append(row, c.Value(i))
				case *array.String:
					// A copy: the reference reuses its buffers.
					row = append(row, strings.Clone(c.Value(i)))
				default:
					t.Fatalf("%s: column of %s", q, c.DataType())
				}
			}
			rows = append(rows, row)
		}
		out.Release()
	}
	return rows
}

func naiveStateless(q string, evs []nexmark.Event) [][]any {
	var rows [][]any
	for _, e := range evs {
		if e.Type != nexmark.BidEvent {
			continue
		}
		b := e.Bid
		switch q {
		case "q0":
			rows = append(rows, []any{b.Auction, b.Bidder, b.Price, b.DateTime.UnixMilli(), b.Extra})
		case "q1":
			rows = append(rows, []any{b.Auction, b.Bidder, float64(b.Price*908) / 1000, b.DateTime.UnixMilli(), b.Extra})
		case "q2":
			if b.Auction%123 == 0 {
				rows = append(rows, []any{b.Auction, b.Price})
			}
		}
	}
	return rows
}

func naiveQ3(evs []nexmark.Event) []q3Row {
	var out []q3Row
	for _, a := range evs {
		if a.Type != nexmark.AuctionEvent || a.Auction.Category != 10 {
			continue
		}
		for _, p := range evs {
			if p.Type != nexmark.PersonEvent || p.Person.ID != a.Auction.Seller {
				continue
			}
			if s := p.Person.State; s == "OR" || s == "ID" || s == "CA" {
				out = append(out, q3Row{p.Person.Name, p.Person.City, s, a.Auction.ID})
			}
		}
	}
	return out
}

// naiveClosed is closedAuctions with a scan of all bids per auction.
func naiveClosed(evs []nexmark.Event) []closedAuction {
	var out []closedAuction
	for _, e := range evs {
		if e.Type != nexmark.AuctionEvent {
			continue
		}
		a := e.Auction
		final, any := int64(0), false
		for _, b := range evs {
			if b.Type != nexmark.BidEvent || b.Bid.Auction != a.ID {
				continue
			}
			if t := b.Bid.DateTime; t.Before(a.DateTime) || t.After(a.Expires) {
				continue
			}
			if !any || b.Bid.Price > final {
				final, any = b.Bid.Price, true
			}
		}
		if any {
			out = append(out, closedAuction{a.ID, a.Seller, a.Category, a.Expires.UnixMilli(), final})
		}
	}
	slices.SortFunc(out, func(x, y closedAuction) int {
		return cmp.Or(cmp.Compare(x.expires, y.expires), cmp.Compare(x.id, y.id))
	})
	return out
}

func naiveQ4(evs []nexmark.Event) []avgRow {
	closed := naiveClosed(evs)
	var out []avgRow
	for i, a := range closed {
		var sum, n int64
		for _, b := range closed[:i+1] {
			if b.category == a.category {
				sum += b.final
				n++
			}
		}
		out = append(out, avgRow{a.category, float64(sum) / float64(n)})
	}
	return out
}

func naiveQ6(evs []nexmark.Event) []avgRow {
	closed := naiveClosed(evs)
	var out []avgRow
	for i, a := range closed {
		var sum, n int64
		for j := i; j >= 0 && n < 10; j-- {
			if closed[j].seller == a.seller {
				sum += closed[j].final
				n++
			}
		}
		out = append(out, avgRow{a.seller, float64(sum) / float64(n)})
	}
	return out
}

// bidTimes returns the bids and the lowest and highest bid time.
func bidTimes(evs []nexmark.Event) (bids []nexmark.Bid, lo, hi int64) {
	for _, e := range evs {
		if e.Type == nexmark.BidEvent {
			t := e.Bid.DateTime.UnixMilli()
			if len(bids) == 0 || t < lo {
				lo = t
			}
			hi = max(hi, t)
			bids = append(bids, e.Bid)
		}
	}
	return bids, lo, hi
}

func naiveQ5(evs []nexmark.Event) []q5Row {
	bids, lo, hi := bidTimes(evs)
	var out []q5Row
	for s := lo - lo%q5Slide - q5Size; s <= hi; s += q5Slide {
		in := func(b nexmark.Bid) bool { t := b.DateTime.UnixMilli(); return s <= t && t < s+q5Size }
		var auctions []int64
		for _, b := range bids {
			if in(b) && !slices.Contains(auctions, b.Auction) {
				auctions = append(auctions, b.Auction)
			}
		}
		count := func(a int64) (n int64) {
			for _, b := range bids {
				if in(b) && b.Auction == a {
					n++
				}
			}
			return n
		}
		var best int64
		for _, a := range auctions {
			best = max(best, count(a))
		}
		slices.Sort(auctions)
		for _, a := range auctions {
			if count(a) == best {
				out = append(out, q5Row{a, best, s, s + q5Size})
			}
		}
	}
	return out
}

func naiveQ7(evs []nexmark.Event) []q7Row {
	bids, lo, hi := bidTimes(evs)
	var out []q7Row
	for s := lo - lo%tumble; s <= hi; s += tumble {
		in := func(b nexmark.Bid) bool { t := b.DateTime.UnixMilli(); return s <= t && t < s+tumble }
		best, any := int64(0), false
		for _, b := range bids {
			if in(b) && (!any || b.Price > best) {
				best, any = b.Price, true
			}
		}
		for _, b := range bids {
			if in(b) && b.Price == best {
				out = append(out, q7Row{b.Auction, b.Price, b.Bidder, b.DateTime.UnixMilli(), b.Extra})
			}
		}
	}
	return out
}

func naiveQ8(evs []nexmark.Event) []q8Row {
	var out []q8Row
	seen := map[[2]int64]bool{}
	for _, p := range evs {
		if p.Type != nexmark.PersonEvent {
			continue
		}
		t := p.Person.DateTime.UnixMilli()
		w := t - t%tumble
		for _, a := range evs {
			at := a.Auction.DateTime.UnixMilli()
			if a.Type == nexmark.AuctionEvent && a.Auction.Seller == p.Person.ID && w <= at && at < w+tumble && !seen[[2]int64{p.Person.ID, w}] {
				seen[[2]int64{p.Person.ID, w}] = true
				out = append(out, q8Row{p.Person.ID, p.Person.Name, w})
			}
		}
	}
	slices.SortFunc(out, func(x, y q8Row) int {
		return cmp.Or(cmp.Compare(x.WindowStart, y.WindowStart), cmp.Compare(x.ID, y.ID))
	})
	return out
}
