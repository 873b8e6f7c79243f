// Package queries holds the Nexmark queries of the nexmark example, built
// with the public meshflow API, the file source they read, and the
// example's command line ([Main]).
//
// Every query reads the one mixed stream of Nexmark events (JSON lines
// with a "type" field, decoded with the wide schema nexmark.EventSchema:
// the fields of all three event types, nullable), keeps its event types
// with a Filter on "type" and projects the columns it needs:
//
//	q0  pass-through:        SELECT auction, bidder, price, date_time, extra FROM bid
//	q1  currency conversion: SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid
//	q2  selection:           SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0
//	q3  local item suggestion: name, city, state of the sellers in OR, ID or CA
//	    and the id of each of their auctions of category 10 (a regular Join)
//	q4  average price per category: each time an auction closes (the
//	    watermark passes its expires), its category and the average final
//	    price (highest bid within the auction's time) of the category's
//	    closed auctions (IntervalJoin of auctions and bids, then keyed state
//	    and event-time timers per auction and per category)
//	q5  hot items: per sliding window of 10 s every 2 s, the auctions with the
//	    most bids, all ties (Window count per auction, a custom operator
//	    keeping the counts at or above their window's running maximum,
//	    Window max per window, WindowJoin on the count)
//	q6  average selling price by seller: each time an auction closes, its
//	    seller and the average final price of the seller's last 10 closed
//	    auctions (as q4, the last prices in keyed list state per seller)
//	q7  highest bid: per tumbling 10 s window, the bids at the window's
//	    highest price (a custom operator keeping the bids at or above
//	    their window's running maximum, then Window max and WindowJoin on
//	    the price)
//	q8  monitor new users: the persons who registered and opened an auction
//	    in the same tumbling 10 s window, once per person and window
//	    (Window count of auctions per seller, WindowJoin with the persons)
//
// Windows are aligned on the Unix epoch and use event time (date_time):
// the source's watermark trails the newest date_time read by
// [MaxOutOfOrderness], and a bounded input's last watermark flushes every
// window. An event later than that is a late row of the window or join
// it reaches (on the subject "nexmark-<q>.<operator>.late"), not part of
// the results.
//
// q4 and q6 close auctions in order of expires, then id: the averages
// after each closing are those of that order. Auctions lasting longer
// than [MaxAuctionDuration] lose the bids after it.
package queries

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/meshflow/meshflow"
)

// ErrNotSupported is wrapped by the error of [Build] for the Nexmark
// queries Meshflow cannot run yet: none of q0 to q8 now.
var ErrNotSupported = errors.New("nexmark query not supported")

type notSupported struct{ q, what string }

func (e notSupported) Error() string {
	return fmt.Sprintf("query %s needs %s, which Meshflow does not have yet (supported: %s)", e.q, e.what, supportedList())
}

func (e notSupported) Is(target error) bool { return target == ErrNotSupported }

// Supported lists the queries [Build] builds.
var Supported = []string{"q0", "q1", "q2", "q3", "q4", "q5", "q6", "q7", "q8"}

func supportedList() string {
	s := ""
	for i, q := range Supported {
		if i > 0 {
			s += ", "
		}
		s += q
	}
	return s
}

// needs says what the queries Build refuses need (none now).
var needs = map[string]string{}

// MaxOutOfOrderness is how far behind the newest event time read an
// event may come and still be on time for the windows, joins and timers
// of q4 to q8.
const MaxOutOfOrderness = 5 * time.Second

// Name is the job name of query q: "nexmark-<q>".
func Name(q string) string { return "nexmark-" + q }

// Build returns the pipeline of Nexmark query q (one of [Supported])
// reading events from src (batches of nexmark.EventSchema) and writing
// results to sink.
func Build(q string, src meshflow.Source, sink meshflow.Sink) (*meshflow.Pipeline, error) {
	if what, ok := needs[q]; ok {
		return nil, notSupported{q, what}
	}
	if !slices.Contains(Supported, q) {
		return nil, fmt.Errorf("unknown query %q (Nexmark queries are q0 to q8; supported: %s)", q, supportedList())
	}
	p := meshflow.NewPipeline(Name(q))
	var opts []meshflow.Option
	if q != "q0" && q != "q1" && q != "q2" && q != "q3" {
		opts = append(opts, meshflow.EventTime("date_time", MaxOutOfOrderness))
	}
	events := p.Source("events", src, opts...)
	var bids *meshflow.Stream
	if q != "q3" && q != "q4" && q != "q6" && q != "q7" && q != "q8" {
		bids = events.Filter("bids", meshflow.Col("type").Eq("bid"))
	}
	var out *meshflow.Stream
	switch q {
	case "q0":
		out = bids.Project("q0", "auction", "bidder", "price", "date_time", "extra")
	case "q1":
		// Nexmark's q1 is 0.908 * price, an exact decimal (its Flink SQL
		// sink column is DECIMAL(23, 3)). price × 908 is exact in int64 (an
		// overflow fails the job) and its division by 1000 in float64 is
		// the float nearest the decimal, which the JSON encoder writes as
		// that decimal whenever it has at most 15 significant digits (every
		// price below 10^12 cents). Col("price").Mul(0.908) would round
		// twice and print 1482867.5120000001 for 1482867.512.
		out = bids.Project("shape", "auction", "bidder", "price", "date_time", "extra").
			Map("q1", meshflow.Set("price", meshflow.Col("price").Mul(908).Div(1000.0)))
	case "q2":
		out = bids.Filter("q2", meshflow.Col("auction").Mod(123).Eq(0)).
			Project("shape", "auction", "price")
	case "q3":
		out = q3(events)
	case "q4":
		out = q4(events)
	case "q5":
		out = q5(bids)
	case "q6":
		out = q6(events)
	case "q7":
		out = q7(events)
	case "q8":
		out = q8(events)
	}
	out.To("out", sink)
	return p, nil
}

// tumbling10s are q7's and q8's windows.
func tumbling10s(timeColumn string) meshflow.Windows {
	return meshflow.TumblingWindows(10*time.Second, timeColumn)
}

// q3: SELECT P.name, P.city, P.state, A.id FROM auction A, person P
// WHERE A.seller = P.id AND P.state IN ('OR', 'ID', 'CA') AND
// A.category = 10 — a regular join: both sides are kept, each pair is
// emitted once, whichever arrives first.
func q3(events *meshflow.Stream) *meshflow.Stream {
	state := meshflow.Col("state")
	persons := events.Filter("persons", meshflow.Col("type").Eq("person").
		And(state.Eq("OR").Or(state.Eq("ID")).Or(state.Eq("CA")))).
		Project("person-cols", "id", "name", "city", "state")
	auctions := events.Filter("auctions", meshflow.Col("type").Eq("auction").And(meshflow.Col("category").Eq(10))).
		Project("auction-cols", "id", "seller")
	return meshflow.Join("join", auctions, persons, meshflow.On("seller", "id").Prefixes("auction_", "person_")).
		Map("rename", meshflow.Set("id", meshflow.Col("auction_id"))).
		Project("q3", "name", "city", "state", "id")
}

// q5: per sliding window of 10 s every 2 s, the auctions with the most
// bids. The bids are counted per auction and window; each count row is
// timed by its window's end, so the windows of one sliding window's
// counts are the 2 s tumbling windows starting at that end: there the
// counts' maximum is taken and joined back with the counts equal to it.
// Only the counts at or above their window's running maximum reach the
// window and the join ([hotCandidates]).
func q5(bids *meshflow.Stream) *meshflow.Stream {
	counts := bids.Project("bid-cols", "auction", "date_time").KeyBy("auction").
		Window("count", meshflow.SlidingWindows(10*time.Second, 2*time.Second, "date_time"),
			[]meshflow.Aggregate{meshflow.Count().As("num")}).
		Map("count-times", meshflow.Set("ws", meshflow.Col("window_start")), meshflow.Set("we", meshflow.Col("window_end"))).
		Project("all-counts", "auction", "num", "ws", "we").
		Process("counts", newHotCandidates("we", "num", (2*time.Second).Milliseconds()), meshflow.OutputSchema(countsSchema))
	best := counts.Window("max", meshflow.TumblingWindows(2*time.Second, "we"),
		[]meshflow.Aggregate{meshflow.Max("num").As("max_num")}).
		Map("max-time", meshflow.Set("at", meshflow.Col("window_start"))).
		Project("maxima", "max_num", "at")
	return meshflow.WindowJoin("hot", counts, best, meshflow.On("num", "max_num").Times("we", "at"),
		meshflow.TumblingWindows(2*time.Second, "we")).
		Map("q5-times", meshflow.Set("window_start", meshflow.Col("ws")), meshflow.Set("window_end", meshflow.Col("we"))).
		Project("q5", "auction", "num", "window_start", "window_end")
}

// q7: per tumbling 10 s window, the bids whose price is the window's
// highest: the maximum per window (timed by the window's start), joined
// with the bids of the same window on the price. Only the bids that may
// be at their window's maximum reach the window and the join: those at or
// above the highest price seen in their window so far ([maxCandidates],
// which also keeps only the bids of the events).
func q7(events *meshflow.Stream) *meshflow.Stream {
	cols := events.Process("bid-candidates", newMaxCandidates((10 * time.Second).Milliseconds()),
		meshflow.OutputSchema(bidColsSchema))
	best := cols.Window("max", tumbling10s("date_time"), []meshflow.Aggregate{meshflow.Max("price").As("max_price")}).
		Map("max-time", meshflow.Set("at", meshflow.Col("window_start"))).
		Project("maxima", "max_price", "at")
	return meshflow.WindowJoin("highest", cols, best, meshflow.On("price", "max_price").Times("date_time", "at"),
		tumbling10s("date_time")).
		Project("q7", "auction", "price", "bidder", "date_time", "extra")
}

// q8: the persons who registered in a tumbling 10 s window and opened an
// auction in the same window. The auctions are counted per seller and
// window first (one row per seller and window, timed by the window's
// start), so that each person is emitted once per window.
func q8(events *meshflow.Stream) *meshflow.Stream {
	persons := events.Filter("persons", meshflow.Col("type").Eq("person")).
		Project("person-cols", "id", "name", "date_time")
	sellers := events.Filter("auctions", meshflow.Col("type").Eq("auction")).
		Project("auction-cols", "seller", "date_time").KeyBy("seller").
		Window("sellers", tumbling10s("date_time"), []meshflow.Aggregate{meshflow.Count().As("auctions")}).
		Map("seller-time", meshflow.Set("at", meshflow.Col("window_start"))).
		Project("seller-windows", "seller", "at")
	return meshflow.WindowJoin("new-sellers", persons, sellers, meshflow.On("id", "seller").Times("date_time", "at"),
		tumbling10s("date_time")).
		Project("q8", "id", "name", "window_start")
}
