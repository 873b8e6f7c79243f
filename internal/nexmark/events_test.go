package nexmark_test

import (
	"bytes"
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/nexmark"
	"github.com/meshflow/meshflow/messages"
)

// decodeLines decodes JSON lines with EventSchema, as the nexmark example
// reads its input, and reads the batch back as Events.
func decodeLines(t testing.TB, mem memory.Allocator, lines []byte) ([]nexmark.Event, error) {
	t.Helper()
	dec, err := messages.NewJSONDecoder(mem, nexmark.EventSchema)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Release()
	for i, l := range bytes.Split(bytes.TrimSuffix(lines, []byte("\n")), []byte("\n")) {
		if err := dec.Append(l); err != nil {
			return nil, &nexmark.RowError{Row: i, Err: err}
		}
	}
	rec := dec.NewBatch()
	defer rec.Release()
	return nexmark.DecodeEvents(rec)
}

// TestEventJSONRoundTrip: JSON lines written by NextEventJSON and read
// back with EventSchema equal the events NextEvent generates.
func TestEventJSONRoundTrip(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	for _, cfg := range []nexmark.Config{{Seed: 1}, {Seed: 2, EventsPerSecond: 7, AvgAuctionByteSize: 30, AvgPersonByteSize: 1}} {
		a, b := nexmark.NewGenerator(cfg), nexmark.NewGenerator(cfg)
		var lines []byte
		const n = 2000
		for range n {
			lines = append(a.NextEventJSON(lines), '\n')
		}
		got, err := decodeLines(t, mem, lines)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != n {
			t.Fatalf("%d events read back, want %d", len(got), n)
		}
		for i, ev := range got {
			if want := b.NextEvent(); ev != want {
				t.Fatalf("%+v: event %d:\n got %+v\nwant %+v", cfg, i, ev, want)
			}
		}
	}
}

// TestEventFormsAgree: the event cursor's Go values, its Arrow batches and
// the bid cursor give the same events.
func TestEventFormsAgree(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	cfg := nexmark.Config{Seed: 5}
	values, batches, bidsOnly := nexmark.NewGenerator(cfg), nexmark.NewGenerator(cfg), nexmark.NewGenerator(cfg)
	for _, n := range []int{0, 1, 3, 4, 49, 50, 51, 997, 4096} {
		ps, as, bs := batches.NextEvents(mem, n)
		var want []nexmark.Event
		for range n {
			want = append(want, values.NextEvent())
		}
		var got []nexmark.Event
		got = append(got, personsOf(t, ps)...)
		got = append(got, auctionsOf(t, as)...)
		for _, b := range bidsOf(t, bs) {
			got = append(got, nexmark.Event{Type: nexmark.BidEvent, Bid: b})
			if want := bidsOnly.NextBid(); b != want {
				t.Fatalf("bid cursor: %+v, event cursor: %+v", want, b)
			}
		}
		ps.Release()
		as.Release()
		bs.Release()
		// The batches are per type, in event order: order want the same way.
		slices.SortStableFunc(want, func(a, b nexmark.Event) int { return int(a.Type) - int(b.Type) })
		if !slices.Equal(got, want) {
			t.Fatalf("NextEvents(%d) differs from NextEvent:\n got %+v\nwant %+v", n, got, want)
		}
	}
	if values.EventCount() != batches.EventCount() {
		t.Fatalf("EventCount %d vs %d", values.EventCount(), batches.EventCount())
	}
}

func check(t testing.TB, rec arrow.RecordBatch, schema *arrow.Schema) {
	t.Helper()
	if !rec.Schema().Equal(schema) {
		t.Fatalf("schema %v, want %v", rec.Schema(), schema)
	}
	for i, col := range rec.Columns() {
		if err := array.ValidateFull(col); err != nil || col.NullN() != 0 {
			t.Fatalf("column %d: %v, %d nulls", i, err, col.NullN())
		}
	}
}

func ms(a arrow.Array, i int) time.Time {
	return time.UnixMilli(int64(a.(*array.Timestamp).Value(i))).UTC()
}

func personsOf(t testing.TB, rec arrow.RecordBatch) []nexmark.Event {
	check(t, rec, nexmark.PersonSchema)
	c := rec.Columns()
	s := func(j, i int) string { return strings.Clone(c[j].(*array.String).Value(i)) }
	var out []nexmark.Event
	for i := range int(rec.NumRows()) {
		out = append(out, nexmark.Event{Type: nexmark.PersonEvent, Person: nexmark.Person{
			ID: c[0].(*array.Int64).Value(i), Name: s(1, i), EmailAddress: s(2, i), CreditCard: s(3, i),
			City: s(4, i), State: s(5, i), DateTime: ms(c[6], i), Extra: s(7, i)}})
	}
	return out
}

func auctionsOf(t testing.TB, rec arrow.RecordBatch) []nexmark.Event {
	check(t, rec, nexmark.AuctionSchema)
	c := rec.Columns()
	s := func(j, i int) string { return strings.Clone(c[j].(*array.String).Value(i)) }
	n := func(j, i int) int64 { return c[j].(*array.Int64).Value(i) }
	var out []nexmark.Event
	for i := range int(rec.NumRows()) {
		out = append(out, nexmark.Event{Type: nexmark.AuctionEvent, Auction: nexmark.Auction{
			ID: n(0, i), ItemName: s(1, i), Description: s(2, i), InitialBid: n(3, i), Reserve: n(4, i),
			DateTime: ms(c[5], i), Expires: ms(c[6], i), Seller: n(7, i), Category: n(8, i), Extra: s(9, i)}})
	}
	return out
}

func bidsOf(t testing.TB, rec arrow.RecordBatch) []nexmark.Bid {
	check(t, rec, nexmark.BidSchema)
	c := rec.Columns()
	s := func(j, i int) string { return strings.Clone(c[j].(*array.String).Value(i)) }
	n := func(j, i int) int64 { return c[j].(*array.Int64).Value(i) }
	var out []nexmark.Bid
	for i := range int(rec.NumRows()) {
		out = append(out, nexmark.Bid{Auction: n(0, i), Bidder: n(1, i), Price: n(2, i), Channel: s(3, i),
			URL: s(4, i), DateTime: ms(c[5], i), Extra: s(6, i)})
	}
	return out
}

// TestEventRules checks the stream against the reference generator's
// rules: the 1:3:46 interleaving, consecutive ids, event times, sellers
// among the people so far, categories, prices, expiry and field shapes.
func TestEventRules(t *testing.T) {
	cfg := nexmark.Config{Seed: 3, EventsPerSecond: 1000, BaseTime: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	g := nexmark.NewGenerator(cfg)
	const n = 50_000
	email := regexp.MustCompile(`^([a-z][a-z ]*[a-z]|[a-z])?@([a-z][a-z ]*[a-z]|[a-z])?\.com$`)
	card := regexp.MustCompile(`^[0-9]{4} [0-9]{4} [0-9]{4} [0-9]{4}$`)
	var persons, auctions, hotSellers int
	var extraP, extraA, sizeP, sizeA int
	nextPerson, nextAuction := int64(nexmark.FirstPersonID), int64(nexmark.FirstAuctionID)
	for i := range n {
		ev := g.NextEvent()
		if want := cfg.BaseTime.Add(time.Duration(i) * time.Millisecond); !ev.Time().Equal(want) {
			t.Fatalf("event %d at %v, want %v", i, ev.Time(), want)
		}
		wantType := nexmark.BidEvent
		switch off := i % 50; {
		case off == 0:
			wantType = nexmark.PersonEvent
		case off <= 3:
			wantType = nexmark.AuctionEvent
		}
		if ev.Type != wantType {
			t.Fatalf("event %d is a %v, want a %v", i, ev.Type, wantType)
		}
		switch ev.Type {
		case nexmark.PersonEvent:
			p := ev.Person
			persons++
			if p.ID != nextPerson {
				t.Fatalf("event %d: person id %d, want %d", i, p.ID, nextPerson)
			}
			nextPerson++
			if !email.MatchString(p.EmailAddress) {
				t.Fatalf("email %q", p.EmailAddress)
			}
			if !card.MatchString(p.CreditCard) || !strings.Contains(p.Name, " ") || len(p.State) != 2 || p.City == "" {
				t.Fatalf("person %+v", p)
			}
			extraP += len(p.Extra)
			sizeP += 8 + len(p.Name) + len(p.EmailAddress) + len(p.CreditCard) + len(p.City) + len(p.State) + len(p.Extra)
		case nexmark.AuctionEvent:
			a := ev.Auction
			auctions++
			if a.ID != nextAuction {
				t.Fatalf("event %d: auction id %d, want %d", i, a.ID, nextAuction)
			}
			nextAuction++
			if a.Seller < nexmark.FirstPersonID || a.Seller >= nextPerson+10 {
				t.Fatalf("auction %d: seller %d, last person %d", a.ID, a.Seller, nextPerson-1)
			}
			if (a.Seller-nexmark.FirstPersonID)%100 == 0 {
				hotSellers++
			}
			if a.Category < nexmark.FirstCategoryID || a.Category >= nexmark.FirstCategoryID+5 {
				t.Fatalf("auction %d: category %d", a.ID, a.Category)
			}
			if a.InitialBid < 100 || a.Reserve <= a.InitialBid || !a.Expires.After(a.DateTime) {
				t.Fatalf("auction %+v", a)
			}
			// 100 auctions in flight: 1666 events ahead, 1.666 s at 1000/s;
			// an auction lasts up to twice that.
			if d := a.Expires.Sub(a.DateTime); d > 2*1666*time.Millisecond+time.Millisecond {
				t.Fatalf("auction %d lasts %v", a.ID, d)
			}
			if len(a.ItemName) > 19 || len(a.Description) > 99 || strings.TrimSpace(a.ItemName) != a.ItemName {
				t.Fatalf("auction %d: name %q, description %q", a.ID, a.ItemName, a.Description)
			}
			extraA += len(a.Extra)
			sizeA += 8 + len(a.ItemName) + len(a.Description) + 40 + len(a.Extra)
		}
	}
	if persons != n/50 || auctions != 3*n/50 {
		t.Fatalf("%d persons, %d auctions in %d events", persons, auctions, n)
	}
	if f := float64(hotSellers) / float64(auctions); f < 0.72 || f > 0.78 {
		t.Errorf("hot sellers: fraction %.3f, want about 3/4", f)
	}
	// extra pads events to their average size.
	if avg := float64(sizeP) / float64(persons); avg < 195 || avg > 205 {
		t.Errorf("average person size %.1f, want about 200", avg)
	}
	if avg := float64(sizeA) / float64(auctions); avg < 495 || avg > 505 {
		t.Errorf("average auction size %.1f, want about 500", avg)
	}
}

// TestEventGolden pins the first events of seed 42 so that a change to the
// generator is a deliberate one.
func TestEventGolden(t *testing.T) {
	g := nexmark.NewGenerator(nexmark.Config{Seed: 42, AvgPersonByteSize: 60, AvgAuctionByteSize: 160})
	var got []byte
	for range 5 {
		got = append(g.NextEventJSON(got), '\n')
	}
	const want = `{"type":"person","id":1000,"name":"Deiter Bartels","email_address":"txflux@p xh.com","credit_card":"8980 6768 1772 0188","city":"Kent","state":"OR","date_time":1704067200000,"extra":""}
{"type":"auction","id":1000,"item_name":"rlwt","description":"lxocybzgdgqfjifwkwbyhgblwhuackjucbfnlbrgqbympi  zyyipavvl gsfkynmk jzcsvyzmtkfu ljocre","initial_bid":86785,"reserve":87608,"date_time":1704067200000,"expires":1704067200245,"seller":1000,"category":12,"extra":"ckvbvuuqhishstkcjwm"}
{"type":"auction","id":1001,"item_name":"mdxkdnlhinth wgcqr","description":"fzhpt xzfdldyeaw wbk o prgdgi klegfqpvt fbjjw fowhf tvacexrpzu","initial_bid":2466,"reserve":10697,"date_time":1704067200000,"expires":1704067200300,"seller":1000,"category":12,"extra":"iyhxjhottjobggykiktrxvniqorpjsqymqbq"}
{"type":"auction","id":1002,"item_name":"zedqahqhoi i","description":"iuomgztdlodkwlitgwavvvmqnovqb nloigijdvnvkifrtpdsrbyhgx uvosc dehbxpxdjh dmheukkkqvgr","initial_bid":2673,"reserve":1411023,"date_time":1704067200000,"expires":1704067200200,"seller":1000,"category":14,"extra":"raztbcqvkxljxnzm"}
{"type":"bid","auction":1011,"bidder":1001,"price":1633114,"channel":"Google","url":"https://www.nexmark.com/t_ju/vbx/ewc/item.htm?query=1","date_time":1704067200000,"extra":"dncmkjjfpfbzxnxlzopvztkszpfvyvmlgcvbnpwtanodonrjxmsjuodnvfwwekvcmffxv"}
`
	if string(got) != want {
		t.Fatalf("first events of seed 42:\n got %s\nwant %s", got, want)
	}
}

func TestCheckEvents(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	for _, tc := range []struct {
		line, err string
	}{
		{`{"type":"bid","auction":1,"bidder":2,"price":3,"channel":"c","url":"u","date_time":4,"extra":""}`, ""},
		{`{"type":"bid","auction":1,"bidder":2,"channel":"c","url":"u","date_time":4,"extra":""}`, `bid without "price"`},
		{`{"type":"person","id":1,"name":"n","email_address":"e","credit_card":"c","city":"c","state":"s","date_time":5,"extra":"x"}`, ""},
		{`{"type":"person","id":1,"name":"n","email_address":"e","credit_card":"c","city":"c","date_time":5,"extra":"x"}`, `person without "state"`},
		{`{"type":"auction","id":1,"item_name":"i","description":"d","initial_bid":1,"reserve":2,"date_time":3,"seller":5,"category":10,"extra":""}`, `auction without "expires"`},
		{`{"type":"sale"}`, `unknown event type "sale"`},
	} {
		dec, err := messages.NewJSONDecoder(mem, nexmark.EventSchema)
		if err != nil {
			t.Fatal(err)
		}
		if err := dec.Append([]byte(tc.line)); err != nil {
			t.Fatal(err)
		}
		rec := dec.NewBatch()
		dec.Release()
		err = nexmark.CheckEvents(rec)
		_, derr := nexmark.DecodeEvents(rec)
		rec.Release()
		var re *nexmark.RowError
		switch {
		case tc.err == "" && (err != nil || derr != nil):
			t.Errorf("%s: %v, %v", tc.line, err, derr)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !errors.As(err, &re) || re.Row != 0 || derr == nil || derr.Error() != err.Error()):
			t.Errorf("%s: %v, %v; want %q", tc.line, err, derr, tc.err)
		}
	}
}

// FuzzDecodeEvents: whatever a line holds, decoding it with EventSchema
// and DecodeEvents either fails or gives an event that, written again
// with AppendEventJSON, reads back the same.
func FuzzDecodeEvents(f *testing.F) {
	g := nexmark.NewGenerator(nexmark.Config{Seed: 1})
	for range 60 {
		f.Add(g.NextEventJSON(nil))
	}
	f.Add([]byte(`{"type":"bid","auction":1,"bidder":2,"price":3,"channel":"\u0000\"","url":"é\n","date_time":"2024-01-01T00:00:00Z","extra":""}`))
	f.Add([]byte(`{"type":"person","id":"7","name":"","email_address":"","credit_card":"","city":"","state":"","date_time":-5,"extra":"\\"}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
		defer mem.AssertSize(t, 0)
		if bytes.IndexByte(line, '\n') >= 0 {
			return
		}
		evs, err := decodeLines(t, mem, line)
		if err != nil {
			return
		}
		if len(evs) != 1 {
			t.Fatalf("%d events from one line", len(evs))
		}
		again := nexmark.AppendEventJSON(nil, &evs[0])
		evs2, err := decodeLines(t, mem, again)
		if err != nil {
			t.Fatalf("%s written as %s does not read back: %v", line, again, err)
		}
		if evs2[0] != evs[0] {
			t.Fatalf("%s: read %+v, written %s, read back %+v", line, evs[0], again, evs2[0])
		}
	})
}

func BenchmarkNextEvents(b *testing.B) {
	g := nexmark.NewGenerator(nexmark.Config{Seed: 1})
	mem := memory.NewGoAllocator()
	const n = 8192
	b.ReportAllocs()
	for b.Loop() {
		p, a, bids := g.NextEvents(mem, n)
		p.Release()
		a.Release()
		bids.Release()
	}
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkNextEventJSON(b *testing.B) {
	g := nexmark.NewGenerator(nexmark.Config{Seed: 1})
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = g.NextEventJSON(buf[:0])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
