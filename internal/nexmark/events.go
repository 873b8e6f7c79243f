package nexmark

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// EventType is the kind of a Nexmark event.
type EventType uint8

// The event types, in the order of an epoch of the stream: one person,
// three auctions, 46 bids.
const (
	PersonEvent EventType = iota + 1
	AuctionEvent
	BidEvent
)

// String is the event type as the "type" field of the JSON lines writes
// it: "person", "auction" or "bid".
func (t EventType) String() string {
	switch t {
	case PersonEvent:
		return "person"
	case AuctionEvent:
		return "auction"
	case BidEvent:
		return "bid"
	}
	return "eventtype(" + strconv.Itoa(int(t)) + ")"
}

// ParseEventType reads "person", "auction" or "bid".
func ParseEventType(s string) (EventType, error) {
	switch s {
	case "person":
		return PersonEvent, nil
	case "auction":
		return AuctionEvent, nil
	case "bid":
		return BidEvent, nil
	}
	return 0, fmt.Errorf("nexmark: unknown event type %q (want person, auction or bid)", s)
}

// Person is one Nexmark person (a seller or bidder) as a plain Go value.
type Person struct {
	ID           int64
	Name         string
	EmailAddress string
	CreditCard   string
	City         string
	State        string
	DateTime     time.Time // UTC, millisecond precision
	Extra        string
}

// Auction is one Nexmark auction as a plain Go value. Prices are in cents.
type Auction struct {
	ID          int64
	ItemName    string
	Description string
	InitialBid  int64
	Reserve     int64
	DateTime    time.Time // UTC, millisecond precision
	Expires     time.Time // UTC, millisecond precision
	Seller      int64     // a Person's ID
	Category    int64
	Extra       string
}

// Event is one event of the Nexmark stream: the field named by Type is
// set, the other two are zero.
type Event struct {
	Type    EventType
	Person  Person
	Auction Auction
	Bid     Bid
}

// Time is the event's date_time.
func (e *Event) Time() time.Time {
	switch e.Type {
	case PersonEvent:
		return e.Person.DateTime
	case AuctionEvent:
		return e.Auction.DateTime
	}
	return e.Bid.DateTime
}

// Reference data of the person generator.
var (
	usStates   = [...]string{"AZ", "CA", "ID", "OR", "WA", "WY"}
	usCities   = [...]string{"Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend", "Redmond", "Seattle", "Kent", "Cheyenne"}
	firstNames = [...]string{"Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter"}
	lastNames  = [...]string{"Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris"}
	// personNames[i*len(lastNames)+j] is first name i and last name j.
	personNames = func() (n [len(firstNames) * len(lastNames)]string) {
		for i, f := range firstNames {
			for j, l := range lastNames {
				n[i*len(lastNames)+j] = f + " " + l
			}
		}
		return n
	}()
)

// EventCount is the number of events the event cursor has produced.
func (g *Generator) EventCount() int64 { return g.nextEv }

// NextEvent returns the next event of the interleaved stream: event number
// n is a person when n % 50 is 0, an auction when it is 1 to 3, and a bid
// otherwise.
func (g *Generator) NextEvent() Event {
	ev := g.nextEv
	g.nextEv++
	return g.eventAt(ev)
}

func (g *Generator) eventAt(ev int64) Event {
	switch off := ev % totalProportion; {
	case off < personProportion:
		return Event{Type: PersonEvent, Person: g.personAt(ev)}
	case off < personProportion+auctionProportion:
		return Event{Type: AuctionEvent, Auction: g.auctionAt(ev)}
	default:
		return Event{Type: BidEvent, Bid: g.bidAt(ev/totalProportion*bidProportion + off - personProportion - auctionProportion)}
	}
}

// personAt is the person of event number ev, computed from the seed and ev
// alone, drawing its fields in the reference generator's order.
func (g *Generator) personAt(ev int64) Person {
	r := rng{s: mix64(g.key ^ uint64(ev))}
	p := Person{ID: lastBase0PersonID(ev) + FirstPersonID}
	first := r.intn(len64(firstNames[:]))
	p.Name = personNames[first*len64(lastNames[:])+r.intn(len64(lastNames[:]))]
	email := appendString(make([]byte, 0, 16), &r, 7)
	email = append(email, '@')
	email = append(appendString(email, &r, 5), ".com"...)
	p.EmailAddress = string(email)
	cc := make([]byte, 0, 19)
	for i := range 4 {
		if i > 0 {
			cc = append(cc, ' ')
		}
		n := r.intn(10000)
		cc = append(cc, byte('0'+n/1000), byte('0'+n/100%10), byte('0'+n/10%10), byte('0'+n%10))
	}
	p.CreditCard = string(cc)
	p.City = usCities[r.intn(len64(usCities[:]))]
	p.State = usStates[r.intn(len64(usStates[:]))]
	size := 8 + len(p.Name) + len(p.EmailAddress) + len(p.CreditCard) + len(p.City) + len(p.State)
	p.Extra = g.extra(&r, size, g.cfg.AvgPersonByteSize)
	p.DateTime = time.UnixMilli(g.dateTime(ev)).UTC()
	return p
}

// auctionAt is the auction of event number ev.
func (g *Generator) auctionAt(ev int64) Auction {
	r := rng{s: mix64(g.key ^ uint64(ev))}
	a := Auction{ID: lastBase0AuctionID(ev) + FirstAuctionID}
	// A hot seller with probability 1 - 1/HotSellersRatio: the first of
	// the last group of hotSellerGroup people.
	if r.intn(uint64(g.cfg.HotSellersRatio)) > 0 {
		a.Seller = lastBase0PersonID(ev) / hotSellerGroup * hotSellerGroup
	} else {
		a.Seller = g.nextBase0PersonID(ev, &r)
	}
	a.Seller += FirstPersonID
	a.Category = FirstCategoryID + int64(r.intn(numCategories))
	a.InitialBid = nextPrice(&r)
	ts := g.dateTime(ev)
	// The auction lasts 1 + [0, 2 × horizon) ms, the horizon being the
	// event time until NumInFlightAuctions more auctions have started.
	eventsForAuctions := int64(g.cfg.NumInFlightAuctions) * totalProportion / auctionProportion
	horizon := g.dateTime(ev+eventsForAuctions) - ts
	expires := ts + 1 + int64(r.intn(uint64(max(2*horizon, 1))))
	a.ItemName = string(appendString(nil, &r, 20))
	a.Description = string(appendString(nil, &r, 100))
	a.Reserve = a.InitialBid + nextPrice(&r)
	size := 8 + len(a.ItemName) + len(a.Description) + 8 + 8 + 8 + 8 + 8
	a.Extra = g.extra(&r, size, g.cfg.AvgAuctionByteSize)
	a.DateTime = time.UnixMilli(ts).UTC()
	a.Expires = time.UnixMilli(expires).UTC()
	return a
}

// nextBase0PersonID is one of the active people, plus a few leads.
func (g *Generator) nextBase0PersonID(ev int64, r *rng) int64 {
	numPeople := lastBase0PersonID(ev) + 1
	active := min(numPeople, int64(g.cfg.NumActivePeople))
	return numPeople - active + int64(r.intn(uint64(active+personIDLead)))
}

// extra is a string padding an event of size bytes to avg bytes on
// average: avg - size ± 20%, empty when size exceeds avg. Its letters are
// a window into the generator's pool.
func (g *Generator) extra(r *rng, size, avg int) string {
	n := 0
	if size <= avg {
		want := avg - size
		delta := int(math.Round(float64(want) * 0.2))
		n = want - delta
		if delta > 0 {
			n += int(r.intn(uint64(2 * delta)))
		}
	}
	off := int(r.intn(extraPoolSize))
	return g.pool[off : off+n]
}

// appendString appends a string of 3 to maxLen-1 characters, lower-case
// letters with a space one time in 13, without leading or trailing spaces.
func appendString(dst []byte, r *rng, maxLen int) []byte {
	start := len(dst)
	for n := 3 + r.intn(uint64(maxLen-3)); n > 0; n-- {
		if r.intn(13) == 0 {
			dst = append(dst, ' ')
		} else {
			dst = append(dst, byte('a'+r.intn(26)))
		}
	}
	s := strings.TrimSpace(string(dst[start:]))
	return append(dst[:start], s...)
}

func len64[T any](s []T) uint64 { return uint64(len(s)) }

// personsBefore, auctionsBefore and bidsBefore count the events of their
// type before event number ev: the index of the first one at or after ev.
func personsBefore(ev int64) int64 {
	return ev/totalProportion*personProportion + min(ev%totalProportion, personProportion)
}

func auctionsBefore(ev int64) int64 {
	return ev/totalProportion*auctionProportion + min(max(ev%totalProportion-personProportion, 0), auctionProportion)
}

func bidsBefore(ev int64) int64 {
	return ev/totalProportion*bidProportion + max(ev%totalProportion-personProportion-auctionProportion, 0)
}

// personEvent and auctionEvent are the event numbers of person i and
// auction i.
func personEvent(i int64) int64 {
	return i/personProportion*totalProportion + i%personProportion
}

func auctionEvent(i int64) int64 {
	return i/auctionProportion*totalProportion + personProportion + i%auctionProportion
}
