// Package nexmark generates the events of the Nexmark streaming benchmark
// (people, auctions and bids), deterministically and fast enough to feed a
// benchmark.
//
// The generator follows the rules of the reference Nexmark generator
// (Apache Beam, nexmark/nexmark): events are numbered across one interleaved
// stream of people, auctions and bids in the proportions 1:3:46 (event n is
// a person when n % 50 is 0, an auction when it is 1 to 3, a bid
// otherwise); an event's date_time is BaseTime + n × interEventDelay; ids
// start at 1000 and people and auctions take consecutive ids; auctions
// have hot sellers, a category among five from 10 and an expiry that keeps
// about NumInFlightAuctions auctions open; bids choose their auction and
// bidder the Nexmark way (hot auctions and hot bidders, in-flight auctions,
// active people); extra pads each event to its type's average size.
//
// Every event is computed from (Seed, event number) alone, so a generator
// is reproducible: the same Config yields the same events whether they are
// read as Go values ([Generator.NextEvent], [Generator.NextBid]), Arrow
// batches ([Generator.NextEvents], [Generator.NextBatch]) or JSON
// ([Generator.NextEventJSON], [Generator.NextBidJSON]), in any mix.
//
// The JSON lines of the event stream carry a "type" field and the fields
// of their type in snake_case, times as integer milliseconds; decoded with
// [EventSchema] by the project's JSON decoder and read with
// [DecodeEvents], they give back the generated events.
//
// Typical use:
//
//	gen := nexmark.NewGenerator(nexmark.Config{Seed: 42})
//	rec := gen.NextBatch(mem, 8192) // bids only; schema BidSchema; the caller releases rec
//	defer rec.Release()
//	line := gen.NextEventJSON(nil)  // {"type":"person","id":1000,...}
package nexmark
