package nexmark

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// NextEventJSON appends the next event of the event cursor to dst as one
// JSON line without the newline (see [AppendEventJSON]).
func (g *Generator) NextEventJSON(dst []byte) []byte {
	ev := g.NextEvent()
	return AppendEventJSON(dst, &ev)
}

// AppendEventJSON appends ev to dst as one JSON object, without a newline:
// "type" ("person", "auction" or "bid") first, then the fields of its type
// in snake_case, in the order of [PersonSchema], [AuctionSchema] and
// [BidSchema], with date_time and expires as integer milliseconds since the
// Unix epoch. Decoded with [EventSchema] it reads back as ev (a string
// that is not valid UTF-8 is written with U+FFFD for each invalid byte).
func AppendEventJSON(dst []byte, ev *Event) []byte {
	switch ev.Type {
	case PersonEvent:
		p := &ev.Person
		dst = append(dst, `{"type":"person","id":`...)
		dst = strconv.AppendInt(dst, p.ID, 10)
		dst = appendStringField(dst, "name", p.Name)
		dst = appendStringField(dst, "email_address", p.EmailAddress)
		dst = appendStringField(dst, "credit_card", p.CreditCard)
		dst = appendStringField(dst, "city", p.City)
		dst = appendStringField(dst, "state", p.State)
		dst = appendIntField(dst, "date_time", p.DateTime.UnixMilli())
		dst = appendStringField(dst, "extra", p.Extra)
	case AuctionEvent:
		a := &ev.Auction
		dst = append(dst, `{"type":"auction","id":`...)
		dst = strconv.AppendInt(dst, a.ID, 10)
		dst = appendStringField(dst, "item_name", a.ItemName)
		dst = appendStringField(dst, "description", a.Description)
		dst = appendIntField(dst, "initial_bid", a.InitialBid)
		dst = appendIntField(dst, "reserve", a.Reserve)
		dst = appendIntField(dst, "date_time", a.DateTime.UnixMilli())
		dst = appendIntField(dst, "expires", a.Expires.UnixMilli())
		dst = appendIntField(dst, "seller", a.Seller)
		dst = appendIntField(dst, "category", a.Category)
		dst = appendStringField(dst, "extra", a.Extra)
	default:
		b := &ev.Bid
		dst = append(dst, `{"type":"bid","auction":`...)
		dst = strconv.AppendInt(dst, b.Auction, 10)
		dst = appendIntField(dst, "bidder", b.Bidder)
		dst = appendIntField(dst, "price", b.Price)
		dst = appendStringField(dst, "channel", b.Channel)
		dst = appendStringField(dst, "url", b.URL)
		dst = appendIntField(dst, "date_time", b.DateTime.UnixMilli())
		dst = appendStringField(dst, "extra", b.Extra)
	}
	return append(dst, '}')
}

func appendIntField(dst []byte, name string, v int64) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return strconv.AppendInt(dst, v, 10)
}

func appendStringField(dst []byte, name, v string) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return appendJSONString(dst, v)
}

// appendJSONString appends s as a JSON string. The generated strings need
// no escaping and are copied as they are.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r != utf8.RuneError || size != 1 {
				i += size
				continue
			}
		}
		dst = append(dst, s[start:i]...)
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default: // an invalid UTF-8 byte
			dst = append(dst, `\ufffd`...)
		}
		i++
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

const hexDigits = "0123456789abcdef"

// NextEvents returns the next n events of the event cursor as three
// batches, one per type ([PersonSchema], [AuctionSchema], [BidSchema]),
// each in event order, allocated from mem. The caller owns and releases
// them; a type absent from the n events gets a batch of zero rows.
func (g *Generator) NextEvents(mem memory.Allocator, n int) (persons, auctions, bids arrow.RecordBatch) {
	if n < 0 {
		panic(fmt.Sprintf("nexmark: NextEvents(%d): negative event count", n))
	}
	from, to := g.nextEv, g.nextEv+int64(n)
	g.nextEv = to

	p0, p1 := personsBefore(from), personsBefore(to)
	ps := make([]Person, 0, p1-p0)
	for i := p0; i < p1; i++ {
		ps = append(ps, g.personAt(personEvent(i)))
	}
	a0, a1 := auctionsBefore(from), auctionsBefore(to)
	as := make([]Auction, 0, a1-a0)
	for i := a0; i < a1; i++ {
		as = append(as, g.auctionAt(auctionEvent(i)))
	}
	b0, b1 := bidsBefore(from), bidsBefore(to)
	return personBatch(mem, ps), auctionBatch(mem, as), g.bidBatch(mem, b0, int(b1-b0))
}

func personBatch(mem memory.Allocator, ps []Person) arrow.RecordBatch {
	n := len(ps)
	idBuf, id := int64Buffer(mem, n)
	timeBuf, ts := int64Buffer(mem, n)
	strs := make([][]string, 5)
	sizes := make([]int, 6)
	for i := range strs {
		strs[i] = make([]string, n)
	}
	extra := make([]string, n)
	for i := range ps {
		p := &ps[i]
		id[i], ts[i] = p.ID, p.DateTime.UnixMilli()
		for j, s := range [...]string{p.Name, p.EmailAddress, p.CreditCard, p.City, p.State} {
			strs[j][i] = s
			sizes[j] += len(s)
		}
		extra[i] = p.Extra
		sizes[5] += len(p.Extra)
	}
	cols := []arrow.Array{
		int64Array(arrow.PrimitiveTypes.Int64, n, idBuf),
		stringArray(mem, strs[0], sizes[0]),
		stringArray(mem, strs[1], sizes[1]),
		stringArray(mem, strs[2], sizes[2]),
		stringArray(mem, strs[3], sizes[3]),
		stringArray(mem, strs[4], sizes[4]),
		int64Array(DateTimeType, n, timeBuf),
		stringArray(mem, extra, sizes[5]),
	}
	return newBatch(PersonSchema, cols, n)
}

func auctionBatch(mem memory.Allocator, as []Auction) arrow.RecordBatch {
	n := len(as)
	var bufs [7]*memory.Buffer
	var vals [7][]int64
	for i := range bufs {
		bufs[i], vals[i] = int64Buffer(mem, n)
	}
	names, descs, extras := make([]string, n), make([]string, n), make([]string, n)
	var nameBytes, descBytes, extraBytes int
	for i := range as {
		a := &as[i]
		vals[0][i], vals[1][i], vals[2][i], vals[3][i] = a.ID, a.InitialBid, a.Reserve, a.DateTime.UnixMilli()
		vals[4][i], vals[5][i], vals[6][i] = a.Expires.UnixMilli(), a.Seller, a.Category
		names[i], descs[i], extras[i] = a.ItemName, a.Description, a.Extra
		nameBytes += len(a.ItemName)
		descBytes += len(a.Description)
		extraBytes += len(a.Extra)
	}
	i64 := arrow.PrimitiveTypes.Int64
	cols := []arrow.Array{
		int64Array(i64, n, bufs[0]),
		stringArray(mem, names, nameBytes),
		stringArray(mem, descs, descBytes),
		int64Array(i64, n, bufs[1]),
		int64Array(i64, n, bufs[2]),
		int64Array(DateTimeType, n, bufs[3]),
		int64Array(DateTimeType, n, bufs[4]),
		int64Array(i64, n, bufs[5]),
		int64Array(i64, n, bufs[6]),
		stringArray(mem, extras, extraBytes),
	}
	return newBatch(AuctionSchema, cols, n)
}

func newBatch(schema *arrow.Schema, cols []arrow.Array, n int) arrow.RecordBatch {
	rec := array.NewRecordBatch(schema, cols, int64(n))
	for _, c := range cols {
		c.Release()
	}
	return rec
}

// RowError is the error of [DecodeEvents] and [CheckEvents] about one row.
type RowError struct {
	Row int
	Err error
}

func (e *RowError) Error() string { return fmt.Sprintf("row %d: %v", e.Row, e.Err) }
func (e *RowError) Unwrap() error { return e.Err }

// Columns of EventSchema.
var (
	evType                                             = 0
	evID, evName, evEmail, evCard, evCity, evState     = ecol("id"), ecol("name"), ecol("email_address"), ecol("credit_card"), ecol("city"), ecol("state")
	evItem, evDesc, evInitial, evReserve, evExpires    = ecol("item_name"), ecol("description"), ecol("initial_bid"), ecol("reserve"), ecol("expires")
	evSeller, evCategory, evAuction, evBidder, evPrice = ecol("seller"), ecol("category"), ecol("auction"), ecol("bidder"), ecol("price")
	evChannel, evURL, evDateTime, evExtra              = ecol("channel"), ecol("url"), ecol("date_time"), ecol("extra")
	required                                           = [...][]int{
		PersonEvent:  {evID, evName, evEmail, evCard, evCity, evState, evDateTime, evExtra},
		AuctionEvent: {evID, evItem, evDesc, evInitial, evReserve, evDateTime, evExpires, evSeller, evCategory, evExtra},
		BidEvent:     {evAuction, evBidder, evPrice, evChannel, evURL, evDateTime, evExtra},
	}
)

func ecol(name string) int { return EventSchema.FieldIndices(name)[0] }

// CheckEvents checks that every row of rec, a batch of [EventSchema], is
// an event: its type is person, auction or bid and every field of that
// type is set. The error, a *[RowError], names the first row that is not.
func CheckEvents(rec arrow.RecordBatch) error {
	if !rec.Schema().Equal(EventSchema) {
		return fmt.Errorf("nexmark: batch schema %s is not EventSchema", rec.Schema())
	}
	types := rec.Column(evType).(*array.String)
	for i := range int(rec.NumRows()) {
		if _, err := rowType(rec, types, i); err != nil {
			return &RowError{Row: i, Err: err}
		}
	}
	return nil
}

func rowType(rec arrow.RecordBatch, types *array.String, i int) (EventType, error) {
	if types.IsNull(i) {
		return 0, errors.New(`nexmark: no "type"`)
	}
	t, err := ParseEventType(types.Value(i))
	if err != nil {
		return 0, err
	}
	for _, c := range required[t] {
		if rec.Column(c).IsNull(i) {
			return 0, fmt.Errorf("nexmark: %s without %q", t, EventSchema.Field(c).Name)
		}
	}
	return t, nil
}

// DecodeEvents reads the rows of rec, a batch of [EventSchema], as Events
// (the fields of other types than a row's own are ignored). The error, a
// *[RowError], names the first row that is not an event (see
// [CheckEvents]).
func DecodeEvents(rec arrow.RecordBatch) ([]Event, error) {
	if !rec.Schema().Equal(EventSchema) {
		return nil, fmt.Errorf("nexmark: batch schema %s is not EventSchema", rec.Schema())
	}
	types := rec.Column(evType).(*array.String)
	i64 := func(c, i int) int64 { return rec.Column(c).(*array.Int64).Value(i) }
	str := func(c, i int) string { return strings.Clone(rec.Column(c).(*array.String).Value(i)) }
	ms := func(c, i int) time.Time {
		return time.UnixMilli(int64(rec.Column(c).(*array.Timestamp).Value(i))).UTC()
	}
	out := make([]Event, rec.NumRows())
	for i := range out {
		t, err := rowType(rec, types, i)
		if err != nil {
			return nil, &RowError{Row: i, Err: err}
		}
		ev := Event{Type: t}
		switch t {
		case PersonEvent:
			ev.Person = Person{ID: i64(evID, i), Name: str(evName, i), EmailAddress: str(evEmail, i),
				CreditCard: str(evCard, i), City: str(evCity, i), State: str(evState, i),
				DateTime: ms(evDateTime, i), Extra: str(evExtra, i)}
		case AuctionEvent:
			ev.Auction = Auction{ID: i64(evID, i), ItemName: str(evItem, i), Description: str(evDesc, i),
				InitialBid: i64(evInitial, i), Reserve: i64(evReserve, i), DateTime: ms(evDateTime, i),
				Expires: ms(evExpires, i), Seller: i64(evSeller, i), Category: i64(evCategory, i), Extra: str(evExtra, i)}
		case BidEvent:
			ev.Bid = Bid{Auction: i64(evAuction, i), Bidder: i64(evBidder, i), Price: i64(evPrice, i),
				Channel: str(evChannel, i), URL: str(evURL, i), DateTime: ms(evDateTime, i), Extra: str(evExtra, i)}
		}
		out[i] = ev
	}
	return out, nil
}
