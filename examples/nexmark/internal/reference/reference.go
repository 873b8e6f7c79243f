// Package reference computes the results of the Nexmark queries of the
// nexmark example from the events in plain Go, for the tests: no Arrow,
// no windows machinery, nested loops and maps over the events of each
// window.
package reference

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/meshflow/meshflow/internal/nexmark"
)

// Row is one result row: numbers as their JSON text, strings as they
// are, times (date_time, window_start, window_end) as Unix milliseconds.
type Row map[string]string

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

// floorDiv is a/b rounded down.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// Results computes query q (q3 to q8) over evs, in no particular order.
func Results(q string, evs []nexmark.Event) []Row {
	switch q {
	case "q3":
		return q3(evs)
	case "q4":
		return q4(evs)
	case "q6":
		return q6(evs)
	case "q5":
		return q5(evs)
	case "q7":
		return q7(evs)
	case "q8":
		return q8(evs)
	}
	panic("reference: no query " + q)
}

func q3(evs []nexmark.Event) []Row {
	var out []Row
	for _, a := range evs {
		if a.Type != nexmark.AuctionEvent || a.Auction.Category != 10 {
			continue
		}
		for _, p := range evs {
			if p.Type != nexmark.PersonEvent || p.Person.ID != a.Auction.Seller {
				continue
			}
			if s := p.Person.State; s == "OR" || s == "ID" || s == "CA" {
				out = append(out, Row{"name": p.Person.Name, "city": p.Person.City, "state": s, "id": itoa(a.Auction.ID)})
			}
		}
	}
	return out
}

// Closed is an auction with its final price.
type Closed struct {
	Auction nexmark.Auction
	Price   int64
}

// Closings returns the auctions of evs that have a final price — the
// highest price of the bids on them with auction.date_time <=
// bid.date_time <= auction.expires — in closing order: expires, then id.
func Closings(evs []nexmark.Event) []Closed {
	final := map[int64]int64{}
	auctions := map[int64]nexmark.Auction{}
	for _, e := range evs {
		if e.Type == nexmark.AuctionEvent {
			auctions[e.Auction.ID] = e.Auction
		}
	}
	for _, e := range evs {
		if e.Type != nexmark.BidEvent {
			continue
		}
		b := e.Bid
		a, ok := auctions[b.Auction]
		if !ok || b.DateTime.Before(a.DateTime) || b.DateTime.After(a.Expires) {
			continue
		}
		if p, ok := final[a.ID]; !ok || b.Price > p {
			final[a.ID] = b.Price
		}
	}
	var out []Closed
	for id, p := range final {
		out = append(out, Closed{auctions[id], p})
	}
	slices.SortFunc(out, func(x, y Closed) int {
		if c := x.Auction.Expires.Compare(y.Auction.Expires); c != 0 {
			return c
		}
		return cmp.Compare(x.Auction.ID, y.Auction.ID)
	})
	return out
}

// ftoa writes an average as the JSON output does.
func ftoa(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

func q4(evs []nexmark.Event) []Row {
	type sumCount struct{ sum, n int64 }
	per := map[int64]sumCount{}
	var out []Row
	for _, c := range Closings(evs) {
		s := per[c.Auction.Category]
		s.sum += c.Price
		s.n++
		per[c.Auction.Category] = s
		out = append(out, Row{"category": itoa(c.Auction.Category), "avg_price": ftoa(float64(s.sum) / float64(s.n))})
	}
	return out
}

func q6(evs []nexmark.Event) []Row {
	last := map[int64][]int64{}
	var out []Row
	for _, c := range Closings(evs) {
		ps := append(last[c.Auction.Seller], c.Price)
		if len(ps) > 10 {
			ps = ps[1:]
		}
		last[c.Auction.Seller] = ps
		var sum int64
		for _, p := range ps {
			sum += p
		}
		out = append(out, Row{"seller": itoa(c.Auction.Seller), "avg_price": ftoa(float64(sum) / float64(len(ps)))})
	}
	return out
}

func q5(evs []nexmark.Event) []Row {
	const size, slide = 10_000, 2_000
	counts := map[int64]map[int64]int64{} // window start -> auction -> bids
	for _, e := range evs {
		if e.Type != nexmark.BidEvent {
			continue
		}
		t := e.Bid.DateTime.UnixMilli()
		for s := floorDiv(t, slide) * slide; s > t-size; s -= slide {
			if counts[s] == nil {
				counts[s] = map[int64]int64{}
			}
			counts[s][e.Bid.Auction]++
		}
	}
	var out []Row
	for s, per := range counts {
		var most int64
		for _, n := range per {
			most = max(most, n)
		}
		for a, n := range per {
			if n == most {
				out = append(out, Row{"auction": itoa(a), "num": itoa(n), "window_start": itoa(s), "window_end": itoa(s + size)})
			}
		}
	}
	return out
}

func q7(evs []nexmark.Event) []Row {
	const size = 10_000
	best := map[int64]int64{}
	for _, e := range evs {
		if e.Type == nexmark.BidEvent {
			w := floorDiv(e.Bid.DateTime.UnixMilli(), size)
			if p, ok := best[w]; !ok || e.Bid.Price > p {
				best[w] = e.Bid.Price
			}
		}
	}
	var out []Row
	for _, e := range evs {
		if e.Type != nexmark.BidEvent {
			continue
		}
		b := e.Bid
		if b.Price == best[floorDiv(b.DateTime.UnixMilli(), size)] {
			out = append(out, Row{"auction": itoa(b.Auction), "price": itoa(b.Price), "bidder": itoa(b.Bidder),
				"date_time": itoa(b.DateTime.UnixMilli()), "extra": b.Extra})
		}
	}
	return out
}

func q8(evs []nexmark.Event) []Row {
	const size = 10_000
	type pw struct{ person, window int64 }
	seen := map[pw]bool{}
	var out []Row
	for _, p := range evs {
		if p.Type != nexmark.PersonEvent {
			continue
		}
		w := floorDiv(p.Person.DateTime.UnixMilli(), size)
		for _, a := range evs {
			if a.Type != nexmark.AuctionEvent || a.Auction.Seller != p.Person.ID || floorDiv(a.Auction.DateTime.UnixMilli(), size) != w {
				continue
			}
			if k := (pw{p.Person.ID, w}); !seen[k] {
				seen[k] = true
				out = append(out, Row{"id": itoa(p.Person.ID), "name": p.Person.Name, "window_start": itoa(w * size)})
			}
		}
	}
	return out
}

// timeFields are the output fields written as RFC 3339 times.
var timeFields = map[string]bool{"date_time": true, "window_start": true, "window_end": true}

// Parse reads one output line: numbers keep their JSON text, times
// become milliseconds.
func Parse(line []byte) (Row, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	var raw map[string]any
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("output line %q: %w", line, err)
	}
	row := Row{}
	for k, v := range raw {
		switch v := v.(type) {
		case json.Number:
			row[k] = v.String()
		case string:
			if timeFields[k] {
				ts, err := time.Parse(time.RFC3339Nano, v)
				if err != nil {
					return nil, fmt.Errorf("%s %q: %w", k, v, err)
				}
				v = itoa(ts.UnixMilli())
			}
			row[k] = v
		default:
			return nil, fmt.Errorf("output line %s: %s is %T", line, k, v)
		}
	}
	return row, nil
}

// Diff compares the output lines with the reference rows as multisets
// and describes the first differences ("" when equal).
func Diff(out []byte, want []Row) (string, error) {
	count := map[string]int{}
	for _, r := range want {
		count[fmt.Sprint(map[string]string(r))]++
	}
	got := map[string]int{}
	n := 0
	for _, l := range bytes.Split(out, []byte("\n")) {
		if len(bytes.TrimSpace(l)) == 0 {
			continue
		}
		r, err := Parse(l)
		if err != nil {
			return "", err
		}
		got[fmt.Sprint(map[string]string(r))]++
		n++
	}
	var diffs []string
	for k, c := range count {
		if got[k] != c {
			diffs = append(diffs, fmt.Sprintf("%s: %d, want %d", k, got[k], c))
		}
	}
	for k, c := range got {
		if count[k] == 0 {
			diffs = append(diffs, fmt.Sprintf("%s: %d, want 0", k, c))
		}
	}
	if len(diffs) == 0 {
		return "", nil
	}
	slices.Sort(diffs)
	return fmt.Sprintf("%d rows, want %d; %d differ, first: %.10q", n, len(want), len(diffs), diffs), nil
}

// Disorder returns the events in an arrival order in which each is at
// most d behind the newest event time before it: every event is moved
// later by a random delay below d (seeded by seed).
func Disorder(evs []nexmark.Event, d time.Duration, seed uint64) []nexmark.Event {
	r := rand.New(rand.NewPCG(seed, 5))
	type arrival struct {
		at int64
		ev nexmark.Event
	}
	as := make([]arrival, len(evs))
	for i, e := range evs {
		as[i] = arrival{e.Time().UnixMilli() + r.Int64N(d.Milliseconds()), e}
	}
	slices.SortStableFunc(as, func(a, b arrival) int { return int(a.at - b.at) })
	out := make([]nexmark.Event, len(as))
	for i, a := range as {
		out[i] = a.ev
	}
	return out
}
