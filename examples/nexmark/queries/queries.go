// Package queries holds the Nexmark queries of the nexmark example, built
// with the public meshflow API, the file source they read, and the
// example's command line ([Main]).
//
// Every query reads the one mixed stream of Nexmark events (JSON lines
// with a "type" field, decoded with the wide schema nexmark.EventSchema:
// the fields of all three event types, nullable), keeps its event type with
// a Filter on "type" and projects the columns it needs:
//
//	q0  pass-through:        SELECT auction, bidder, price, date_time, extra FROM bid
//	q1  currency conversion: SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid
//	q2  selection:           SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0
//
// q3 to q8 need stream joins and event-time windows, which Meshflow does
// not have yet: [Build] refuses them with [ErrNotSupported].
package queries

import (
	"errors"
	"fmt"
	"slices"

	"github.com/meshflow/meshflow"
)

// ErrNotSupported is wrapped by the error of [Build] for the Nexmark
// queries Meshflow cannot run yet.
var ErrNotSupported = errors.New("nexmark query not supported")

type notSupported struct{ q, what string }

func (e notSupported) Error() string {
	return fmt.Sprintf("query %s needs %s, which Meshflow does not have yet (supported: q0, q1, q2)", e.q, e.what)
}

func (e notSupported) Is(target error) bool { return target == ErrNotSupported }

// Supported lists the queries [Build] builds.
var Supported = []string{"q0", "q1", "q2"}

// needs says what the queries Build refuses need.
var needs = map[string]string{
	"q3": "a join of auctions and people",
	"q4": "a join of auctions and bids and a windowed aggregation",
	"q5": "sliding event-time windows",
	"q6": "a join of auctions and bids and per-seller windows",
	"q7": "event-time windows and a join",
	"q8": "a windowed join of people and auctions",
}

// Name is the job name of query q: "nexmark-<q>".
func Name(q string) string { return "nexmark-" + q }

// Build returns the pipeline of Nexmark query q (q0, q1 or q2) reading
// events from src (batches of nexmark.EventSchema) and writing results to
// sink. q3 to q8 fail with an error wrapping [ErrNotSupported].
func Build(q string, src meshflow.Source, sink meshflow.Sink) (*meshflow.Pipeline, error) {
	if what, ok := needs[q]; ok {
		return nil, notSupported{q, what}
	}
	if !slices.Contains(Supported, q) {
		return nil, fmt.Errorf("unknown query %q (Nexmark queries are q0 to q8; supported: q0, q1, q2)", q)
	}
	p := meshflow.NewPipeline(Name(q))
	bids := p.Source("events", src).Filter("bids", meshflow.Col("type").Eq("bid"))
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
	}
	out.To("out", sink)
	return p, nil
}
