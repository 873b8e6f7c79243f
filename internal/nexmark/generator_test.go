package nexmark

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// bidsOf reads the rows of rec back as Bids.
func bidsOf(t *testing.T, rec arrow.RecordBatch) []Bid {
	t.Helper()
	if !rec.Schema().Equal(BidSchema) {
		t.Fatalf("schema = %v, want %v", rec.Schema(), BidSchema)
	}
	auction := rec.Column(ColAuction).(*array.Int64)
	bidder := rec.Column(ColBidder).(*array.Int64)
	price := rec.Column(ColPrice).(*array.Int64)
	channel := rec.Column(ColChannel).(*array.String)
	url := rec.Column(ColURL).(*array.String)
	dateTime := rec.Column(ColDateTime).(*array.Timestamp)
	extra := rec.Column(ColExtra).(*array.String)
	out := make([]Bid, rec.NumRows())
	for i := range out {
		out[i] = Bid{
			Auction:  auction.Value(i),
			Bidder:   bidder.Value(i),
			Price:    price.Value(i),
			Channel:  strings.Clone(channel.Value(i)),
			URL:      strings.Clone(url.Value(i)),
			DateTime: time.UnixMilli(int64(dateTime.Value(i))).UTC(),
			Extra:    strings.Clone(extra.Value(i)),
		}
	}
	for i, col := range rec.Columns() {
		if col.NullN() != 0 {
			t.Errorf("column %d has %d nulls", i, col.NullN())
		}
		if err := array.ValidateFull(col); err != nil {
			t.Errorf("column %d: %v", i, err)
		}
	}
	return out
}

func TestBatchMatchesNextBid(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)

	cfg := Config{Seed: 7}
	batchGen, bidGen := NewGenerator(cfg), NewGenerator(cfg)
	for _, n := range []int{0, 1, 45, 46, 47, 1000, 4096} {
		rec := batchGen.NextBatch(mem, n)
		if rec.NumRows() != int64(n) || rec.NumCols() != int64(len(BidSchema.Fields())) {
			t.Fatalf("NextBatch(%d): %d rows, %d cols", n, rec.NumRows(), rec.NumCols())
		}
		got := bidsOf(t, rec)
		rec.Release()
		for i, b := range got {
			if want := bidGen.NextBid(); b != want {
				t.Fatalf("batch of %d, row %d:\n got %+v\nwant %+v", n, i, b, want)
			}
		}
	}
	if batchGen.Count() != bidGen.Count() {
		t.Fatalf("Count: %d vs %d", batchGen.Count(), bidGen.Count())
	}
}

func TestDeterministic(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)

	run := func(cfg Config) []Bid {
		g := NewGenerator(cfg)
		rec := g.NextBatch(mem, 2000)
		defer rec.Release()
		return bidsOf(t, rec)
	}
	a, b := run(Config{Seed: 1}), run(Config{Seed: 1})
	if !slices.Equal(a, b) {
		t.Fatal("same seed gave different bids")
	}
	c := run(Config{Seed: 2})
	same := 0
	for i := range a {
		if a[i] == c[i] {
			same++
		}
	}
	if same > len(a)/100 {
		t.Fatalf("seeds 1 and 2 agree on %d of %d bids", same, len(a))
	}
	// Event times depend on the configured rate, not on the seed.
	for i := range a {
		if !a[i].DateTime.Equal(c[i].DateTime) {
			t.Fatalf("row %d: date_time %v vs %v", i, a[i].DateTime, c[i].DateTime)
		}
	}
}

// TestGolden pins the first bids of seed 42 so that a change to the
// generator is a deliberate one.
func TestGolden(t *testing.T) {
	g := NewGenerator(Config{Seed: 42})
	var got []byte
	for range 3 {
		got = append(g.NextBidJSON(got), '\n')
	}
	const want = `{"auction":1011,"bidder":1001,"price":1633114,"channel":"Google","url":"https://www.nexmark.com/t_ju/vbx/ewc/item.htm?query=1","date_time":"2024-01-01T00:00:00.000Z","extra":"dncmkjjfpfbzxnxlzopvztkszpfvyvmlgcvbnpwtanodonrjxmsjuodnvfwwekvcmffxv"}
{"auction":1000,"bidder":1006,"price":342,"channel":"channel-9937","url":"https://www.nexmark.com/islu/rjlk/eygx/item.htm?query=1&channel_id=1956380672","date_time":"2024-01-01T00:00:00.000Z","extra":"jiysawclaxudaynwyjxttauvllbmntuetvligdiibypgeuuabdodnwbmqarve"}
{"auction":1000,"bidder":1009,"price":1933,"channel":"channel-280","url":"https://www.nexmark.com/xna/ijsh/irt/item.htm?query=1&channel_id=411041792","date_time":"2024-01-01T00:00:00.000Z","extra":"zszdwehecnfjiagbglmzvcfaxfptywuipwlkjlmqikinfyilcqareqsaugpaxfyypcivfxfdnvjrivp"}
`
	if string(got) != want {
		t.Fatalf("first bids of seed 42:\n got %s\nwant %s", got, want)
	}
}

func TestNexmarkRules(t *testing.T) {
	cfg := Config{Seed: 3, EventsPerSecond: 1000, BaseTime: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	g := NewGenerator(cfg)
	const n = 50_000
	hotAuction, hotBidder, hotChannel := 0, 0, 0
	var prev time.Time
	for i := range n {
		b := g.NextBid()
		ev := eventNumber(int64(i))
		if want := cfg.BaseTime.Add(time.Duration(ev) * time.Millisecond); !b.DateTime.Equal(want) {
			t.Fatalf("bid %d (event %d): date_time %v, want %v", i, ev, b.DateTime, want)
		}
		if b.DateTime.Before(prev) {
			t.Fatalf("bid %d: date_time went back", i)
		}
		prev = b.DateTime
		lastAuction := lastBase0AuctionID(ev) + FirstAuctionID
		if b.Auction < FirstAuctionID || b.Auction > lastAuction+auctionIDLead {
			t.Fatalf("bid %d: auction %d outside [%d, %d]", i, b.Auction, FirstAuctionID, lastAuction+auctionIDLead)
		}
		if (b.Auction-FirstAuctionID)%hotAuctionGroup == 0 {
			hotAuction++
		}
		lastPerson := lastBase0PersonID(ev) + FirstPersonID
		if b.Bidder < FirstPersonID || b.Bidder > lastPerson+personIDLead {
			t.Fatalf("bid %d: bidder %d outside [%d, %d]", i, b.Bidder, FirstPersonID, lastPerson+personIDLead)
		}
		if (b.Bidder-FirstPersonID)%hotBidderGroup == 1 {
			hotBidder++
		}
		if b.Price < 100 || b.Price > 100_000_000 {
			t.Fatalf("bid %d: price %d", i, b.Price)
		}
		if slices.Contains(hotChannels[:], b.Channel) {
			hotChannel++
		} else if !strings.HasPrefix(b.Channel, "channel-") {
			t.Fatalf("bid %d: channel %q", i, b.Channel)
		}
		if !strings.HasPrefix(b.URL, "https://www.nexmark.com/") {
			t.Fatalf("bid %d: url %q", i, b.URL)
		}
		if l := len(b.Extra); l < 54 || l >= 54+28 {
			t.Fatalf("bid %d: extra of %d bytes", i, l)
		}
	}
	// Hot auctions ≈ 1/2 (plus cold picks that land on a multiple of 100),
	// hot bidders ≈ 3/4, hot channels ≈ 1/2.
	within := func(name string, got int, lo, hi float64) {
		if f := float64(got) / n; f < lo || f > hi {
			t.Errorf("%s: fraction %.3f outside [%.2f, %.2f]", name, f, lo, hi)
		}
	}
	within("hot auctions", hotAuction, 0.48, 0.53)
	within("hot bidders", hotBidder, 0.73, 0.77)
	within("hot channels", hotChannel, 0.48, 0.52)
}

func TestNextBidJSON(t *testing.T) {
	a, b := NewGenerator(Config{Seed: 9}), NewGenerator(Config{Seed: 9})
	var buf []byte
	for i := range 500 {
		buf = a.NextBidJSON(buf[:0])
		var got struct {
			Auction  int64  `json:"auction"`
			Bidder   int64  `json:"bidder"`
			Price    int64  `json:"price"`
			Channel  string `json:"channel"`
			URL      string `json:"url"`
			DateTime string `json:"date_time"`
			Extra    string `json:"extra"`
		}
		dec := json.NewDecoder(strings.NewReader(string(buf)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("bid %d: %v: %s", i, err, buf)
		}
		want := b.NextBid()
		ts, err := time.Parse(time.RFC3339Nano, got.DateTime)
		if err != nil || !ts.Equal(want.DateTime) || len(got.DateTime) != len("2006-01-02T15:04:05.000Z") {
			t.Fatalf("bid %d: date_time %q (%v), want %v", i, got.DateTime, err, want.DateTime)
		}
		if got.Auction != want.Auction || got.Bidder != want.Bidder || got.Price != want.Price ||
			got.Channel != want.Channel || got.URL != want.URL || got.Extra != want.Extra {
			t.Fatalf("bid %d: JSON %s, want %+v", i, buf, want)
		}
	}
}

func TestEventTime(t *testing.T) {
	g := NewGenerator(Config{EventsPerSecond: 50})
	if got := g.EventTime(); !got.Equal(DefaultBaseTime.Add(4 * 20 * time.Millisecond)) {
		t.Fatalf("first bid at %v", got)
	}
	g.NextBatch(memory.NewGoAllocator(), 46).Release()
	// Bid 46 is event 54: the next epoch skips one person and three auctions.
	if got, want := g.EventTime(), DefaultBaseTime.Add(54*20*time.Millisecond); !got.Equal(want) {
		t.Fatalf("bid 46 at %v, want %v", got, want)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{{EventsPerSecond: -1}, {HotAuctionRatio: -2}, {AvgBidByteSize: -1}} {
		if c.Validate() == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("NewGenerator accepted an invalid Config")
		}
	}()
	NewGenerator(Config{EventsPerSecond: -1})
}

func TestSmallAvgSize(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	g := NewGenerator(Config{AvgBidByteSize: 10})
	rec := g.NextBatch(mem, 100)
	defer rec.Release()
	for _, b := range bidsOf(t, rec) {
		if b.Extra != "" {
			t.Fatalf("extra %q with AvgBidByteSize below the fixed size", b.Extra)
		}
	}
}

func BenchmarkNextBatch(b *testing.B) {
	g := NewGenerator(Config{Seed: 1})
	mem := memory.NewGoAllocator()
	const n = 8192
	g.NextBatch(mem, n).Release() // fill the channel cache
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		g.NextBatch(mem, n).Release()
	}
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "rows/s")
}

func BenchmarkNextBid(b *testing.B) {
	g := NewGenerator(Config{Seed: 1})
	var sink int64
	b.ReportAllocs()
	for b.Loop() {
		sink += g.NextBid().Price
	}
	_ = sink
}

func BenchmarkNextBidJSON(b *testing.B) {
	g := NewGenerator(Config{Seed: 1})
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = g.NextBidJSON(buf[:0])
	}
	b.SetBytes(int64(len(buf)))
}
