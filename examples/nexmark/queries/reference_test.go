package queries_test

// Plain Go references of the Nexmark queries over batches of
// nexmark.EventSchema, without the engine: the baselines of
// BenchmarkNexmark and, for q3 to q8, oracles for the queries' tests
// (checked against naive nested loops in reference_check_test.go).
//
// q0 to q2 are the tightest honest loops producing the query's output
// batches: per batch a branch-free loop builds the selection vector of
// the rows kept, then the output columns are gathered into buffers reused
// from batch to batch. q3 to q8 are hash-map loops with the semantics of
// the queries' definitions (event time, millisecond date_time, windows
// aligned on the Unix epoch, [start, end)).

import (
	"cmp"
	"errors"
	"math"
	"slices"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/nexmark"
)

// Column indexes in nexmark.EventSchema.
var (
	cType, cID, cName, cCity, cState         = ecol("type"), ecol("id"), ecol("name"), ecol("city"), ecol("state")
	cExpires, cSeller, cCategory             = ecol("expires"), ecol("seller"), ecol("category")
	cAuction, cBidder, cPrice, cDate, cExtra = ecol("auction"), ecol("bidder"), ecol("price"), ecol("date_time"), ecol("extra")
)

func ecol(name string) int { return nexmark.EventSchema.FieldIndices(name)[0] }

// newReference returns the reference of query q as a function of the
// events returning the number of result rows.
func newReference(q string) func([]arrow.RecordBatch) int64 {
	switch q {
	case "q0", "q1", "q2":
		r := newStatelessRef(q)
		return func(recs []arrow.RecordBatch) int64 {
			var rows int64
			for _, rec := range recs {
				out, err := r.batch(rec)
				if err != nil {
					panic(err)
				}
				rows += out.NumRows()
				out.Release()
			}
			return rows
		}
	case "q3":
		return func(recs []arrow.RecordBatch) int64 { return int64(len(refQ3(recs))) }
	case "q4":
		return func(recs []arrow.RecordBatch) int64 { return int64(len(refQ4(recs))) }
	case "q5":
		return func(recs []arrow.RecordBatch) int64 { return int64(len(refQ5(recs))) }
	case "q6":
		return func(recs []arrow.RecordBatch) int64 { return int64(len(refQ6(recs))) }
	case "q7":
		return func(recs []arrow.RecordBatch) int64 { return int64(len(refQ7(recs))) }
	case "q8":
		return func(recs []arrow.RecordBatch) int64 { return int64(len(refQ8(recs))) }
	}
	panic("no reference for " + q)
}

// statelessRef is the reference of q0, q1 and q2.
type statelessRef struct {
	q      string
	schema *arrow.Schema
	sel    []int32
	ints   [4][]int64 // auction, bidder, price, date_time
	f64    []float64  // q1's price
	offs   []int32    // extra
	data   []byte
}

var (
	field      = nexmark.EventSchema.Field
	refSchemas = map[string]*arrow.Schema{
		"q0": arrow.NewSchema([]arrow.Field{field(cAuction), field(cBidder), field(cPrice), field(cDate), field(cExtra)}, nil),
		"q1": arrow.NewSchema([]arrow.Field{field(cAuction), field(cBidder), {Name: "price", Type: arrow.PrimitiveTypes.Float64, Nullable: true}, field(cDate), field(cExtra)}, nil),
		"q2": arrow.NewSchema([]arrow.Field{field(cAuction), field(cPrice)}, nil),
	}
)

func newStatelessRef(q string) *statelessRef {
	return &statelessRef{q: q, schema: refSchemas[q]}
}

// "bid" as the little-endian bytes of a uint32.
const bidWord = 'b' | 'i'<<8 | 'd'<<16

// batch returns the query's output of rec, a batch over the reference's
// buffers: valid until the next call.
func (r *statelessRef) batch(rec arrow.RecordBatch) (arrow.RecordBatch, error) {
	n := int(rec.NumRows())
	if cap(r.sel) < n {
		r.sel = make([]int32, n)
		for i := range r.ints {
			r.ints[i] = make([]int64, n)
		}
		r.f64 = make([]float64, n)
		r.offs = make([]int32, n+1)
	}
	sel := r.sel[:n]
	types := rec.Column(cType).(*array.String)
	offs, tdata := types.ValueOffsets(), types.ValueBytes()
	auction := rec.Column(cAuction).(*array.Int64).Int64Values()
	// Branch-free selection: row i is written at sel[k] and kept by
	// advancing k when it is a bid (and, for q2, its auction a multiple of
	// 123). A word of three type bytes is read from a position clamped to
	// the data, so it never reads past it; a string of another length
	// never matches whatever it reads.
	last := int32(len(tdata) - 3)
	k := 0
	if last >= 0 {
		if r.q == "q2" {
			for i := range n {
				s := offs[i]
				j := min(s, last)
				w := uint32(tdata[j]) | uint32(tdata[j+1])<<8 | uint32(tdata[j+2])<<16
				sel[k] = int32(i)
				k += b2i(offs[i+1]-s == 3) & b2i(w == bidWord) & b2i(auction[i]%123 == 0)
			}
		} else {
			for i := range n {
				s := offs[i]
				j := min(s, last)
				w := uint32(tdata[j]) | uint32(tdata[j+1])<<8 | uint32(tdata[j+2])<<16
				sel[k] = int32(i)
				k += b2i(offs[i+1]-s == 3) & b2i(w == bidWord)
			}
		}
	}
	sel = sel[:k]
	price := rec.Column(cPrice).(*array.Int64).Int64Values()
	cols := make([]arrow.Array, 0, 5)
	defer func() {
		for _, c := range cols {
			c.Release()
		}
	}()
	if r.q == "q2" {
		a, p := r.ints[0][:k], r.ints[2][:k]
		for j, i := range sel {
			a[j], p[j] = auction[i], price[i]
		}
		cols = append(cols, int64Array(arrow.PrimitiveTypes.Int64, a), int64Array(arrow.PrimitiveTypes.Int64, p))
		return array.NewRecordBatch(r.schema, cols, int64(k)), nil
	}
	bidder := rec.Column(cBidder).(*array.Int64).Int64Values()
	dt := arrow.Int64Traits.CastFromBytes(rec.Column(cDate).Data().Buffers()[1].Bytes())[rec.Column(cDate).Data().Offset():]
	a, bd, p, t := r.ints[0][:k], r.ints[1][:k], r.ints[2][:k], r.ints[3][:k]
	for j, i := range sel {
		a[j], bd[j], p[j], t[j] = auction[i], bidder[i], price[i], dt[i]
	}
	cols = append(cols, int64Array(arrow.PrimitiveTypes.Int64, a), int64Array(arrow.PrimitiveTypes.Int64, bd))
	if r.q == "q1" {
		// price × 908 in int64, an overflow failing the query (checked
		// once per batch), then / 1000 in float64.
		const hi, lo = math.MaxInt64 / 908, math.MinInt64 / 908
		f := r.f64[:k]
		over := 0
		for j, v := range p {
			over |= b2i(v > hi) | b2i(v < lo)
			f[j] = float64(v*908) / 1000.0
		}
		if over != 0 {
			return nil, errors.New("q1: price × 908 overflows int64")
		}
		cols = append(cols, float64Array(f))
	} else {
		cols = append(cols, int64Array(arrow.PrimitiveTypes.Int64, p))
	}
	cols = append(cols, int64Array(nexmark.DateTimeType, t))
	extra := rec.Column(cExtra).(*array.String)
	xo, xd := extra.ValueOffsets(), extra.ValueBytes()
	var total int32
	for _, i := range sel {
		total += xo[i+1] - xo[i]
	}
	if cap(r.data) < int(total) {
		r.data = make([]byte, total, 2*total)
	}
	data, outOffs := r.data[:total], r.offs[:k+1]
	// Runs of consecutive rows (bids come 46 in a row) are copied at once.
	pos := int32(0)
	outOffs[0] = 0
	for j := 0; j < k; {
		e := j + 1
		for e < k && sel[e] == sel[e-1]+1 {
			e++
		}
		base := xo[sel[j]]
		for t := j; t < e; t++ {
			outOffs[t+1] = pos + xo[sel[t]+1] - base
		}
		pos += int32(copy(data[pos:], xd[base:xo[sel[e-1]+1]]))
		j = e
	}
	cols = append(cols, stringArray(outOffs, data))
	return array.NewRecordBatch(r.schema, cols, int64(k)), nil
}

func b2i(v bool) int {
	if v {
		return 1
	}
	return 0
}

// int64Array is an array of type dt (8-byte values) over v, not copied.
func int64Array(dt arrow.DataType, v []int64) arrow.Array {
	return bufferArray(dt, len(v), memory.NewBufferBytes(arrow.Int64Traits.CastToBytes(v)))
}

func float64Array(v []float64) arrow.Array {
	return bufferArray(arrow.PrimitiveTypes.Float64, len(v), memory.NewBufferBytes(arrow.Float64Traits.CastToBytes(v)))
}

func bufferArray(dt arrow.DataType, n int, buf *memory.Buffer) arrow.Array {
	d := array.NewData(dt, n, []*memory.Buffer{nil, buf}, nil, 0, 0)
	defer d.Release()
	return array.MakeFromData(d)
}

func stringArray(offs []int32, data []byte) arrow.Array {
	d := array.NewData(arrow.BinaryTypes.String, len(offs)-1, []*memory.Buffer{
		nil, memory.NewBufferBytes(arrow.Int32Traits.CastToBytes(offs)), memory.NewBufferBytes(data),
	}, nil, 0, 0)
	defer d.Release()
	return array.NewStringData(d)
}

// eventCols are the columns of one batch the stateful references read.
type eventCols struct {
	types                                                       *array.String
	id, seller, category, auction, bidder, price, date, expires []int64
	name, city, state, extra                                    *array.String
}

func colsOf(rec arrow.RecordBatch) eventCols {
	i64 := func(c int) []int64 {
		d := rec.Column(c).Data()
		return arrow.Int64Traits.CastFromBytes(d.Buffers()[1].Bytes())[d.Offset() : d.Offset()+d.Len()]
	}
	str := func(c int) *array.String { return rec.Column(c).(*array.String) }
	return eventCols{
		types: str(cType), id: i64(cID), seller: i64(cSeller), category: i64(cCategory),
		auction: i64(cAuction), bidder: i64(cBidder), price: i64(cPrice), date: i64(cDate), expires: i64(cExpires),
		name: str(cName), city: str(cCity), state: str(cState), extra: str(cExtra),
	}
}

// eventType is row i's type by its first byte: 'p'erson, 'a'uction or
// 'b'id (the batches are checked events, nexmark.CheckEvents).
func (c *eventCols) eventType(i int) byte { return c.types.Value(i)[0] }

// floorDiv rounds t down to a multiple of d (d > 0), negative t included.
func floorDiv(t, d int64) int64 {
	q := t / d
	if t%d < 0 {
		q--
	}
	return q * d
}

// q3Row is a row of q3: the person's name, city and state, the auction id.
type q3Row struct {
	Name, City, State string
	ID                int64
}

// refQ3 is q3 as a streaming hash join: the matching persons by id and
// the matching auctions by seller; each event joins what the other map
// holds, so every matching pair is emitted once, in the order the later
// of its two events arrives.
func refQ3(recs []arrow.RecordBatch) []q3Row {
	type person struct{ name, city, state string }
	persons := map[int64][]person{}
	auctions := map[int64][]int64{}
	var out []q3Row
	for _, rec := range recs {
		c := colsOf(rec)
		for i := range int(rec.NumRows()) {
			switch c.eventType(i) {
			case 'p':
				st := c.state.Value(i)
				if st != "OR" && st != "ID" && st != "CA" {
					continue
				}
				p := person{strings.Clone(c.name.Value(i)), strings.Clone(c.city.Value(i)), strings.Clone(st)}
				id := c.id[i]
				persons[id] = append(persons[id], p)
				for _, a := range auctions[id] {
					out = append(out, q3Row{p.name, p.city, p.state, a})
				}
			case 'a':
				if c.category[i] != 10 {
					continue
				}
				s, a := c.seller[i], c.id[i]
				auctions[s] = append(auctions[s], a)
				for _, p := range persons[s] {
					out = append(out, q3Row{p.name, p.city, p.state, a})
				}
			}
		}
	}
	return out
}

// closedAuction is an auction with a final price, for q4 and q6.
type closedAuction struct {
	id, seller, category, expires, final int64
}

// closedAuctions returns the auctions with a final price (the highest
// price of the bids on them with date_time in [date_time, expires]) in
// closing order: expires, then id.
func closedAuctions(recs []arrow.RecordBatch) []closedAuction {
	type auction struct {
		seller, category, start, expires, final int64
		bids                                    bool
	}
	auctions := map[int64]*auction{}
	for _, rec := range recs {
		c := colsOf(rec)
		for i := range int(rec.NumRows()) {
			if c.eventType(i) == 'a' {
				auctions[c.id[i]] = &auction{seller: c.seller[i], category: c.category[i], start: c.date[i], expires: c.expires[i]}
			}
		}
	}
	for _, rec := range recs {
		c := colsOf(rec)
		for i := range int(rec.NumRows()) {
			if c.eventType(i) != 'b' {
				continue
			}
			a := auctions[c.auction[i]]
			if a == nil || c.date[i] < a.start || c.date[i] > a.expires {
				continue
			}
			if !a.bids || c.price[i] > a.final {
				a.final, a.bids = c.price[i], true
			}
		}
	}
	var out []closedAuction
	for id, a := range auctions {
		if a.bids {
			out = append(out, closedAuction{id, a.seller, a.category, a.expires, a.final})
		}
	}
	slices.SortFunc(out, func(x, y closedAuction) int {
		return cmp.Or(cmp.Compare(x.expires, y.expires), cmp.Compare(x.id, y.id))
	})
	return out
}

// avgRow is a row of q4 (Key: category) or q6 (Key: seller).
type avgRow struct {
	Key int64
	Avg float64
}

// refQ4 is q4: each closing auction's category and the average final
// price of that category's closed auctions so far, in closing order
// (expires, then id, as q6's; auctions closing at one watermark may come
// in another order from the engine, but the last row per category is
// the same).
func refQ4(recs []arrow.RecordBatch) []avgRow {
	type acc struct{ sum, n int64 }
	per := map[int64]*acc{}
	closed := closedAuctions(recs)
	out := make([]avgRow, 0, len(closed))
	for _, a := range closed {
		s := per[a.category]
		if s == nil {
			s = &acc{}
			per[a.category] = s
		}
		s.sum += a.final
		s.n++
		out = append(out, avgRow{a.category, float64(s.sum) / float64(s.n)})
	}
	return out
}

// refQ6 is q6: each closing auction's seller and the average final price
// of that seller's last 10 closed auctions.
func refQ6(recs []arrow.RecordBatch) []avgRow {
	type last10 struct {
		p   [10]int64
		n   int // auctions closed so far
		sum int64
	}
	per := map[int64]*last10{}
	closed := closedAuctions(recs)
	out := make([]avgRow, 0, len(closed))
	for _, a := range closed {
		s := per[a.seller]
		if s == nil {
			s = &last10{}
			per[a.seller] = s
		}
		slot := s.n % len(s.p)
		if s.n >= len(s.p) {
			s.sum -= s.p[slot]
		}
		s.p[slot] = a.final
		s.sum += a.final
		s.n++
		out = append(out, avgRow{a.seller, float64(s.sum) / float64(min(s.n, len(s.p)))})
	}
	return out
}

// q5Row is a row of q5.
type q5Row struct {
	Auction, Num, WindowStart, WindowEnd int64
}

const (
	q5Size, q5Slide = 10_000, 2_000 // ms
	tumble          = 10_000        // q7 and q8, ms
)

// refQ5 is q5: the bid counts per window in a map per window (auction
// -> count), then each window's maximum count and the auctions that
// reach it, ordered by window and auction. The five windows of a bid are
// those of the bid before it until its time crosses a slide boundary
// (the events are nearly in order), so their maps are looked up once per
// run of bids.
func refQ5(recs []arrow.RecordBatch) []q5Row {
	const per = q5Size / q5Slide // windows a bid falls in
	wins := map[int64]map[int64]int64{}
	lastSlide := int64(math.MinInt64)
	var cur [per]map[int64]int64
	for _, rec := range recs {
		c := colsOf(rec)
		for i := range int(rec.NumRows()) {
			if c.eventType(i) != 'b' {
				continue
			}
			t, a := c.date[i], c.auction[i]
			if sl := floorDiv(t, q5Slide); sl != lastSlide {
				for k := range cur {
					w := sl - int64(k)*q5Slide
					m := wins[w]
					if m == nil {
						m = map[int64]int64{}
						wins[w] = m
					}
					cur[k] = m
				}
				lastSlide = sl
			}
			for _, m := range cur {
				m[a]++
			}
		}
	}
	var out []q5Row
	for w, m := range wins {
		var best int64
		for _, n := range m {
			best = max(best, n)
		}
		for a, n := range m {
			if n == best {
				out = append(out, q5Row{a, n, w, w + q5Size})
			}
		}
	}
	slices.SortFunc(out, func(x, y q5Row) int {
		return cmp.Or(cmp.Compare(x.WindowStart, y.WindowStart), cmp.Compare(x.Auction, y.Auction))
	})
	return out
}

// q7Row is a row of q7.
type q7Row struct {
	Auction, Price, Bidder, DateTime int64
	Extra                            string
}

// refQ7 is q7: per open window, the highest price so far and the bids at
// it (dropped when a higher price comes), ordered by window and then
// input order.
func refQ7(recs []arrow.RecordBatch) []q7Row {
	type at struct{ rec, row int32 }
	type win struct {
		max  int64
		bids []at
	}
	wins := map[int64]*win{}
	lastW, last := int64(math.MinInt64), (*win)(nil)
	for r, rec := range recs {
		c := colsOf(rec)
		for i := range int(rec.NumRows()) {
			if c.eventType(i) != 'b' {
				continue
			}
			w, p := floorDiv(c.date[i], tumble), c.price[i]
			if w != lastW || last == nil {
				last = wins[w]
				if last == nil {
					last = &win{max: math.MinInt64}
					wins[w] = last
				}
				lastW = w
			}
			if p > last.max {
				last.max, last.bids = p, last.bids[:0]
			}
			if p == last.max {
				last.bids = append(last.bids, at{int32(r), int32(i)})
			}
		}
	}
	starts := make([]int64, 0, len(wins))
	for w := range wins {
		starts = append(starts, w)
	}
	slices.Sort(starts)
	var out []q7Row
	for _, w := range starts {
		for _, b := range wins[w].bids {
			c := colsOf(recs[b.rec])
			i := int(b.row)
			out = append(out, q7Row{c.auction[i], c.price[i], c.bidder[i], c.date[i], strings.Clone(c.extra.Value(i))})
		}
	}
	return out
}

// q8Row is a row of q8.
type q8Row struct {
	ID          int64
	Name        string
	WindowStart int64
}

// refQ8 is q8: per window, a map of the persons who registered in it and
// a set of the sellers of its auctions; a person in both is a row, once,
// ordered by window and id.
func refQ8(recs []arrow.RecordBatch) []q8Row {
	type win struct {
		persons map[int64]string
		sellers map[int64]struct{}
	}
	wins := map[int64]*win{}
	get := func(w int64) *win {
		s := wins[w]
		if s == nil {
			s = &win{persons: map[int64]string{}, sellers: map[int64]struct{}{}}
			wins[w] = s
		}
		return s
	}
	for _, rec := range recs {
		c := colsOf(rec)
		for i := range int(rec.NumRows()) {
			switch c.eventType(i) {
			case 'p':
				s := get(floorDiv(c.date[i], tumble))
				if _, ok := s.persons[c.id[i]]; !ok {
					s.persons[c.id[i]] = strings.Clone(c.name.Value(i))
				}
			case 'a':
				get(floorDiv(c.date[i], tumble)).sellers[c.seller[i]] = struct{}{}
			}
		}
	}
	var out []q8Row
	for w, s := range wins {
		for id, name := range s.persons {
			if _, ok := s.sellers[id]; ok {
				out = append(out, q8Row{id, name, w})
			}
		}
	}
	slices.SortFunc(out, func(x, y q8Row) int {
		return cmp.Or(cmp.Compare(x.WindowStart, y.WindowStart), cmp.Compare(x.ID, y.ID))
	})
	return out
}
