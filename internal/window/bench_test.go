package window

import (
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/nexmark"
)

// BenchmarkTable folds Nexmark bids into 10 s tumbling windows per auction
// (count, sum and max of price) and fires them every batch at a watermark
// 10 s behind; BenchmarkTableReference does the same with a plain Go map
// keyed by (auction, window start) in one loop over the same Arrow
// columns: the tightest honest reference. ns/op is per bid.
//
//	go test -run '^$' -bench 'Table' -benchtime 2000000x ./internal/window
func BenchmarkTable(b *testing.B) {
	mem := memory.NewGoAllocator()
	recs := benchBids(b, mem)
	tab, err := NewTable(Config{Spec: Tumbling(10_000), Schema: nexmark.BidSchema, Keys: []int{nexmark.ColAuction}, MaxParallelism: 128,
		Time: nexmark.ColDateTime, Aggs: []Agg{{Kind: Count, Column: -1, Name: "n"}, {Kind: Sum, Column: nexmark.ColPrice, Name: "sum"}, {Kind: Max, Column: nexmark.ColPrice, Name: "max"}}})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	rows := 0
	for i := 0; rows < b.N; i++ {
		rec := recs[i%len(recs)]
		if err := tab.Add(rec); err != nil {
			b.Fatal(err)
		}
		ts := rec.Column(nexmark.ColDateTime).(*array.Timestamp).Value(int(rec.NumRows()) - 1)
		out, err := tab.Fire(mem, int64(ts)-10_000)
		if err != nil {
			b.Fatal(err)
		}
		if out != nil {
			out.Release()
		}
		rows += int(rec.NumRows())
	}
}

func BenchmarkTableReference(b *testing.B) {
	mem := memory.NewGoAllocator()
	recs := benchBids(b, mem)
	type key struct{ auction, start int64 }
	type acc struct{ n, sum, max int64 }
	m := map[key]*acc{}
	b.ResetTimer()
	rows, emitted := 0, 0
	for i := 0; rows < b.N; i++ {
		rec := recs[i%len(recs)]
		auctions := rec.Column(nexmark.ColAuction).(*array.Int64).Int64Values()
		prices := rec.Column(nexmark.ColPrice).(*array.Int64).Int64Values()
		times := rec.Column(nexmark.ColDateTime).(*array.Timestamp).TimestampValues()
		for j, a := range auctions {
			t := int64(times[j])
			k := key{a, t - floorMod(t, 10_000)}
			s := m[k]
			if s == nil {
				s = &acc{}
				m[k] = s
			}
			s.n++
			s.sum += prices[j]
			s.max = max(s.max, prices[j])
		}
		wm := int64(times[len(times)-1]) - 10_000
		for k, s := range m {
			if k.start+10_000 <= wm {
				emitted += int(s.n)
				delete(m, k)
			}
		}
		rows += len(auctions)
	}
	_ = emitted
}

func benchBids(b *testing.B, mem memory.Allocator) []arrow.RecordBatch {
	// Enough batches for b.N rows without repeating times (a repeat
	// would be late, all of it).
	g := nexmark.NewGenerator(nexmark.Config{})
	var recs []arrow.RecordBatch
	for range b.N/8192 + 1 {
		recs = append(recs, g.NextBatch(mem, 8192))
	}
	b.Cleanup(func() {
		for _, r := range recs {
			r.Release()
		}
	})
	return recs
}

// BenchmarkSessions folds Nexmark bids into session windows per bidder
// (gap 10 s, as Nexmark's query 11; count, sum and max of price) and
// fires them every batch at a watermark 10 s behind;
// BenchmarkSessionsReference does the same sessionisation with a plain Go
// map of each bidder's sessions, a row at a time over the same Arrow
// columns (a row within the gap of a session joins it, one bridging two
// merges them). ns/op is per bid.
//
//	go test -run '^$' -bench 'Sessions' -benchtime 2000000x ./internal/window
func BenchmarkSessions(b *testing.B) {
	mem := memory.NewGoAllocator()
	recs := benchBids(b, mem)
	tab, err := NewSessions(Config{Gap: 10_000, Schema: nexmark.BidSchema, Keys: []int{nexmark.ColBidder}, MaxParallelism: 128,
		Time: nexmark.ColDateTime, Aggs: []Agg{{Kind: Count, Column: -1, Name: "n"}, {Kind: Sum, Column: nexmark.ColPrice, Name: "sum"},
			{Kind: Max, Column: nexmark.ColPrice, Name: "max"}}})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	rows, emitted := 0, 0
	for i := 0; rows < b.N; i++ {
		rec := recs[i%len(recs)]
		if err := tab.Add(rec); err != nil {
			b.Fatal(err)
		}
		ts := rec.Column(nexmark.ColDateTime).(*array.Timestamp).Value(int(rec.NumRows()) - 1)
		out, err := tab.Fire(mem, int64(ts)-10_000)
		if err != nil {
			b.Fatal(err)
		}
		if out != nil {
			emitted += int(out.NumRows())
			out.Release()
		}
		rows += int(rec.NumRows())
	}
	b.ReportMetric(float64(emitted)/float64(rows), "sessions/bid")
}

func BenchmarkSessionsReference(b *testing.B) {
	mem := memory.NewGoAllocator()
	recs := benchBids(b, mem)
	const gap = 10_000
	type session struct{ start, end, n, sum, max int64 }
	m := map[int64][]session{}
	b.ResetTimer()
	rows, emitted := 0, 0
	for i := 0; rows < b.N; i++ {
		rec := recs[i%len(recs)]
		bidders := rec.Column(nexmark.ColBidder).(*array.Int64).Int64Values()
		prices := rec.Column(nexmark.ColPrice).(*array.Int64).Int64Values()
		times := rec.Column(nexmark.ColDateTime).(*array.Timestamp).TimestampValues()
		for j, k := range bidders {
			t, p := int64(times[j]), prices[j]
			ss := m[k]
			// The sessions [t, t+gap) overlaps: merged into the first.
			first := -1
			for x := 0; x < len(ss); x++ {
				s := &ss[x]
				if s.start >= t+gap || t >= s.end {
					continue
				}
				if first < 0 {
					first = x
					continue
				}
				f := &ss[first]
				f.start, f.end = min(f.start, s.start), max(f.end, s.end)
				f.n, f.sum, f.max = f.n+s.n, f.sum+s.sum, max(f.max, s.max)
				ss = append(ss[:x], ss[x+1:]...)
				x--
			}
			if first < 0 {
				ss = append(ss, session{start: t, end: t + gap, n: 1, sum: p, max: p})
			} else {
				f := &ss[first]
				f.start, f.end = min(f.start, t), max(f.end, t+gap)
				f.n, f.sum, f.max = f.n+1, f.sum+p, max(f.max, p)
			}
			m[k] = ss
		}
		wm := int64(times[len(times)-1]) - 10_000
		for k, ss := range m {
			n := 0
			for _, s := range ss {
				if s.end <= wm {
					emitted++
					continue
				}
				ss[n] = s
				n++
			}
			if n == 0 {
				delete(m, k)
			} else {
				m[k] = ss[:n]
			}
		}
		rows += len(bidders)
	}
	b.ReportMetric(float64(emitted)/float64(rows), "sessions/bid")
}
