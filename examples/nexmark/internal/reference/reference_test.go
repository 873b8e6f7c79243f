package reference

import (
	"fmt"
	"testing"
	"time"

	"github.com/meshflow/meshflow/internal/nexmark"
)

func at(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

func auction(id, category, seller, start, expires int64) nexmark.Event {
	return nexmark.Event{Type: nexmark.AuctionEvent, Auction: nexmark.Auction{ID: id, Category: category, Seller: seller,
		DateTime: at(start), Expires: at(expires)}}
}

func bid(auction, price, ms int64) nexmark.Event {
	return nexmark.Event{Type: nexmark.BidEvent, Bid: nexmark.Bid{Auction: auction, Price: price, DateTime: at(ms)}}
}

// TestClosingsByHand: bids at an auction's start and at its expiry count,
// bids before or after do not, an auction without such a bid has no
// final price, and auctions expiring together close in id order.
func TestClosingsByHand(t *testing.T) {
	evs := []nexmark.Event{
		bid(2, 20, 5), // before auction 2 starts
		auction(1, 1, 7, 0, 100), auction(2, 1, 7, 10, 100), auction(3, 2, 8, 0, 50), auction(4, 2, 8, 0, 60),
		bid(1, 5, 0), bid(1, 9, 100), bid(1, 50, 101), bid(2, 7, 50), bid(3, 3, 50), bid(4, 99, 61), bid(5, 1, 10),
	}
	for _, tc := range []struct {
		q    string
		want string
	}{
		{"q4", "[map[avg_price:3 category:2] map[avg_price:9 category:1] map[avg_price:8 category:1]]"},
		{"q6", "[map[avg_price:3 seller:8] map[avg_price:9 seller:7] map[avg_price:8 seller:7]]"},
	} {
		if got := fmt.Sprint(Results(tc.q, evs)); got != tc.want {
			t.Errorf("%s: %s\nwant %s", tc.q, got, tc.want)
		}
	}
	// Eleven closings of one seller: the last average is of the last 10.
	evs = nil
	for i := range int64(11) {
		evs = append(evs, auction(i+1, 1, 7, 0, 10+i), bid(i+1, 100*(i+1), 5))
	}
	rows := Results("q6", evs)
	if len(rows) != 11 || rows[9]["avg_price"] != "550" || rows[10]["avg_price"] != "650" {
		t.Errorf("q6: %v", rows)
	}
}

// naive computes q4 or q6 with nested loops over the events: the final
// price of every auction by a scan of all bids, the closing order by
// repeated selection of the smallest (expires, id), and each average by
// a scan of the auctions closed before.
func naive(q string, evs []nexmark.Event) []Row {
	type closed struct {
		a     nexmark.Auction
		price int64
	}
	var cs []closed
	for _, e := range evs {
		if e.Type != nexmark.AuctionEvent {
			continue
		}
		a, price, found := e.Auction, int64(0), false
		for _, b := range evs {
			if b.Type == nexmark.BidEvent && b.Bid.Auction == a.ID &&
				!b.Bid.DateTime.Before(a.DateTime) && !b.Bid.DateTime.After(a.Expires) && (!found || b.Bid.Price > price) {
				price, found = b.Bid.Price, true
			}
		}
		if found {
			cs = append(cs, closed{a, price})
		}
	}
	for i := range cs {
		m := i
		for j := i + 1; j < len(cs); j++ {
			if cs[j].a.Expires.Before(cs[m].a.Expires) || cs[j].a.Expires.Equal(cs[m].a.Expires) && cs[j].a.ID < cs[m].a.ID {
				m = j
			}
		}
		cs[i], cs[m] = cs[m], cs[i]
	}
	var out []Row
	for i, c := range cs {
		var sum, n int64
		for j := i; j >= 0; j-- {
			if q == "q4" && cs[j].a.Category == c.a.Category || q == "q6" && cs[j].a.Seller == c.a.Seller && n < 10 {
				sum += cs[j].price
				n++
			}
		}
		avg := ftoa(float64(sum) / float64(n))
		if q == "q4" {
			out = append(out, Row{"category": itoa(c.a.Category), "avg_price": avg})
		} else {
			out = append(out, Row{"seller": itoa(c.a.Seller), "avg_price": avg})
		}
	}
	return out
}

// TestClosingsNaive compares q4 and q6, row for row in closing order,
// with the naive loops on generated events.
func TestClosingsNaive(t *testing.T) {
	g := nexmark.NewGenerator(nexmark.Config{Seed: 4, EventsPerSecond: 50})
	evs := make([]nexmark.Event, 3000)
	for i := range evs {
		evs[i] = g.NextEvent()
	}
	for _, q := range []string{"q4", "q6"} {
		got, want := Results(q, evs), naive(q, evs)
		if len(want) < 50 {
			t.Fatalf("%s: %d rows: too few to prove anything", q, len(want))
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s:\n got %v\nwant %v", q, got, want)
		}
	}
}
