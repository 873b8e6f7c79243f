// Package nexmark generates the Bid events of the Nexmark streaming
// benchmark, deterministically and fast enough to feed a benchmark.
//
// The generator follows the rules of the reference Nexmark generator
// (Apache Beam, nexmark/nexmark): events are numbered across one interleaved
// stream of people, auctions and bids in the proportions 1:3:46; a bid takes
// the event number of its slot in that stream, its date_time is
// BaseTime + eventNumber × interEventDelay, and its auction and bidder ids
// are chosen the Nexmark way (hot auctions and hot bidders, in-flight
// auctions, active people, ids starting at 1000). Only the bid slots are
// produced; person and auction events are not generated.
//
// Every bid is computed from (Seed, event number) alone, so a generator is
// reproducible: the same Config yields the same bids whether they are read
// as Arrow batches ([Generator.NextBatch]), JSON ([Generator.NextBidJSON]) or
// Go values ([Generator.NextBid]), in any mix.
//
// Typical use:
//
//	gen := nexmark.NewGenerator(nexmark.Config{Seed: 42})
//	rec := gen.NextBatch(mem, 8192) // schema BidSchema; the caller releases rec
//	defer rec.Release()
package nexmark
