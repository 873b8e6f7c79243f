package nexmark

import (
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"time"
)

// Constants of the reference generator.
const (
	// FirstPersonID is the id of the first person.
	FirstPersonID = 1000
	// FirstAuctionID is the id of the first auction.
	FirstAuctionID = 1000

	personProportion  = 1
	auctionProportion = 3
	bidProportion     = 46
	totalProportion   = personProportion + auctionProportion + bidProportion

	hotAuctionGroup = 100 // HOT_AUCTION_RATIO: hot auctions are multiples of this
	hotBidderGroup  = 100 // HOT_BIDDER_RATIO: hot bidders are multiples of this, plus one
	auctionIDLead   = 10
	personIDLead    = 10

	hotSellerGroup = 100 // HOT_SELLER_RATIO: hot sellers are multiples of this

	// FirstCategoryID is the id of the first of numCategories categories.
	FirstCategoryID = 10
	numCategories   = 5

	hotChannelsRatio = 2
	channelsNumber   = 10_000

	// bidFixedSize is the size the reference generator counts for a bid's
	// numeric fields before it sizes extra.
	bidFixedSize = 8 + 8 + 8 + 8

	extraPoolSize = 1 << 16
)

var hotChannels = [...]string{"Google", "Facebook", "Baidu", "Apple"}

// DefaultBaseTime is the date_time of event number 0 when Config.BaseTime is
// zero. It is fixed so that a zero Config is reproducible.
var DefaultBaseTime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Config configures a [Generator]. Zero fields take the Nexmark defaults.
type Config struct {
	// Seed selects the random sequence. Generators with equal Configs
	// produce equal bids.
	Seed int64
	// BaseTime is the event time of event number 0 (default
	// DefaultBaseTime). It is truncated to the millisecond.
	BaseTime time.Time
	// EventsPerSecond is the event-time rate of the whole Nexmark stream
	// (people, auctions and bids; default 10000). Bids are 46 of every 50
	// events, so bids advance event time at 0.92 × EventsPerSecond.
	EventsPerSecond float64
	// HotAuctionRatio: a bid is for a hot auction with probability
	// 1 - 1/HotAuctionRatio (default 2).
	HotAuctionRatio int
	// HotBiddersRatio: a bid is by a hot bidder with probability
	// 1 - 1/HotBiddersRatio (default 4).
	HotBiddersRatio int
	// NumInFlightAuctions is how many recent auctions a cold bid may go to
	// (default 100).
	NumInFlightAuctions int
	// NumActivePeople is how many recent people a cold bidder is chosen
	// from (default 1000).
	NumActivePeople int
	// AvgBidByteSize is the average size of a bid the extra field pads to
	// (default 100).
	AvgBidByteSize int
	// HotSellersRatio: an auction is by a hot seller with probability
	// 1 - 1/HotSellersRatio (default 4).
	HotSellersRatio int
	// AvgPersonByteSize is the average size of a person the extra field
	// pads to (default 200).
	AvgPersonByteSize int
	// AvgAuctionByteSize is the average size of an auction the extra field
	// pads to (default 500).
	AvgAuctionByteSize int
}

// Validate reports a Config that cannot be used.
func (c Config) Validate() error {
	switch {
	case c.EventsPerSecond < 0 || math.IsNaN(c.EventsPerSecond) || math.IsInf(c.EventsPerSecond, 0):
		return fmt.Errorf("nexmark: EventsPerSecond %v: must be positive", c.EventsPerSecond)
	case c.HotAuctionRatio < 0, c.HotBiddersRatio < 0, c.NumInFlightAuctions < 0,
		c.NumActivePeople < 0, c.AvgBidByteSize < 0, c.HotSellersRatio < 0,
		c.AvgPersonByteSize < 0, c.AvgAuctionByteSize < 0:
		return fmt.Errorf("nexmark: negative setting in %+v", c)
	}
	return nil
}

func (c *Config) ensureDefaults() {
	if c.BaseTime.IsZero() {
		c.BaseTime = DefaultBaseTime
	}
	if c.EventsPerSecond == 0 {
		c.EventsPerSecond = 10_000
	}
	if c.HotAuctionRatio == 0 {
		c.HotAuctionRatio = 2
	}
	if c.HotBiddersRatio == 0 {
		c.HotBiddersRatio = 4
	}
	if c.NumInFlightAuctions == 0 {
		c.NumInFlightAuctions = 100
	}
	if c.NumActivePeople == 0 {
		c.NumActivePeople = 1000
	}
	if c.AvgBidByteSize == 0 {
		c.AvgBidByteSize = 100
	}
	if c.HotSellersRatio == 0 {
		c.HotSellersRatio = 4
	}
	if c.AvgPersonByteSize == 0 {
		c.AvgPersonByteSize = 200
	}
	if c.AvgAuctionByteSize == 0 {
		c.AvgAuctionByteSize = 500
	}
}

// Generator produces Nexmark events. It is not safe for concurrent use;
// give each goroutine its own Generator (with a different Seed, or the same
// one to produce the same events).
//
// It has two independent cursors: one over the bids alone ([Generator.NextBid],
// [Generator.NextBatch], [Generator.NextBidJSON]) and one over the whole
// interleaved stream of people, auctions and bids ([Generator.NextEvent],
// [Generator.NextEvents], [Generator.NextEventJSON]). A bid is the same
// whichever cursor reaches it.
type Generator struct {
	cfg            Config
	key            uint64  // per-event random streams derive from it
	baseMs         int64   // BaseTime in ms since the epoch
	interEventUs   float64 // event-time gap between consecutive events
	extraMin       int     // extra is extraMin + [0, extraSpread) bytes
	extraSpread    int
	next           int64 // index of the next bid among all bids
	nextEv         int64 // event number of the next event of the event cursor
	pool           string
	hotURLs        [len(hotChannels)]string
	channels       []channel // lazily filled, indexed by channel number
	chanS, urlS, x []string  // NextBatch scratch
}

type channel struct{ name, url string }

// NewGenerator returns a generator positioned at the first bid. It panics
// if cfg is invalid (see [Config.Validate]).
func NewGenerator(cfg Config) *Generator {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	cfg.ensureDefaults()
	g := &Generator{
		cfg:          cfg,
		key:          mix64(uint64(cfg.Seed) ^ 0x6e65786d61726b), // "nexmark"
		baseMs:       cfg.BaseTime.UnixMilli(),
		interEventUs: 1e6 / cfg.EventsPerSecond,
		channels:     make([]channel, channelsNumber),
	}
	// Size extra like the reference nextExtra: desired ± 20%.
	if want := cfg.AvgBidByteSize - bidFixedSize; want > 0 {
		delta := int(math.Round(float64(want) * 0.2))
		g.extraMin, g.extraSpread = want-delta, 2*delta
	}
	// extra values are windows into a pool of random lower-case letters.
	// The pool holds a window of the longest extra of any event type
	// (desired size + 20%) at every offset below extraPoolSize.
	longest := 0
	for _, avg := range []int{cfg.AvgBidByteSize, cfg.AvgPersonByteSize, cfg.AvgAuctionByteSize} {
		longest = max(longest, avg+int(math.Round(float64(avg)*0.2))+1)
	}
	r := rng{s: mix64(g.key ^ 0x706f6f6c)}
	pool := make([]byte, extraPoolSize+longest)
	for i := range pool {
		pool[i] = byte('a' + r.intn(26))
	}
	g.pool = string(pool)
	for i := range g.hotURLs {
		r := rng{s: mix64(g.key ^ uint64(0x686f74+i))}
		g.hotURLs[i] = string(appendBaseURL(nil, &r))
	}
	return g
}

// Count is the number of bids generated so far.
func (g *Generator) Count() int64 { return g.next }

// EventTime is the date_time of the next bid.
func (g *Generator) EventTime() time.Time {
	return time.UnixMilli(g.dateTime(eventNumber(g.next))).UTC()
}

// NextBid returns the next bid. Its strings are shared with the generator
// and never change; it allocates nothing once the bid's channel was seen.
func (g *Generator) NextBid() Bid {
	b := g.bidAt(g.next)
	g.next++
	return b
}

// bidAt returns bid number i.
func (g *Generator) bidAt(i int64) Bid {
	c := g.bid(i)
	ch := g.channel(c.channel)
	return Bid{
		Auction:  c.auction,
		Bidder:   c.bidder,
		Price:    c.price,
		Channel:  ch.name,
		URL:      ch.url,
		DateTime: time.UnixMilli(c.dateTime).UTC(),
		Extra:    g.pool[c.extraOff : c.extraOff+c.extraLen],
	}
}

// NextBidJSON appends the next bid to dst as one JSON object (no trailing
// newline) with the field names of [BidSchema], date_time in RFC 3339 with
// milliseconds, and returns the extended slice.
func (g *Generator) NextBidJSON(dst []byte) []byte {
	c := g.bid(g.next)
	g.next++
	ch := g.channel(c.channel)
	// The generated strings hold only letters, digits and URL punctuation,
	// none of which JSON escapes.
	dst = append(dst, `{"auction":`...)
	dst = strconv.AppendInt(dst, c.auction, 10)
	dst = append(dst, `,"bidder":`...)
	dst = strconv.AppendInt(dst, c.bidder, 10)
	dst = append(dst, `,"price":`...)
	dst = strconv.AppendInt(dst, c.price, 10)
	dst = append(dst, `,"channel":"`...)
	dst = append(dst, ch.name...)
	dst = append(dst, `","url":"`...)
	dst = append(dst, ch.url...)
	dst = append(dst, `","date_time":"`...)
	dst = time.UnixMilli(c.dateTime).UTC().AppendFormat(dst, "2006-01-02T15:04:05.000Z07:00")
	dst = append(dst, `","extra":"`...)
	dst = append(dst, g.pool[c.extraOff:c.extraOff+c.extraLen]...)
	return append(dst, `"}`...)
}

// bidCore is a bid before its strings are looked up.
type bidCore struct {
	auction, bidder, price, dateTime int64
	channel                          int // 0..3: hot channel; 4..: channel number + 4
	extraOff, extraLen               int
}

// eventNumber is the position of bid number i in the interleaved stream:
// every epoch of 50 events starts with 1 person and 3 auctions.
func eventNumber(i int64) int64 {
	return i/bidProportion*totalProportion + personProportion + auctionProportion + i%bidProportion
}

func (g *Generator) dateTime(eventNum int64) int64 {
	return g.baseMs + int64(float64(eventNum)*g.interEventUs)/1000
}

// bid computes bid number i from the seed and its event number alone.
func (g *Generator) bid(i int64) bidCore {
	ev := eventNumber(i)
	r := rng{s: mix64(g.key ^ uint64(ev))}
	var c bidCore

	// A hot auction with probability 1 - 1/HotAuctionRatio: the first of
	// the last group of hotAuctionGroup auctions.
	lastAuction := lastBase0AuctionID(ev)
	if r.intn(uint64(g.cfg.HotAuctionRatio)) > 0 {
		c.auction = lastAuction / hotAuctionGroup * hotAuctionGroup
	} else {
		// One of the auctions likely still in flight, plus a few leads.
		lo := max(lastAuction-int64(g.cfg.NumInFlightAuctions), 0)
		c.auction = lo + int64(r.intn(uint64(lastAuction-lo+1+auctionIDLead)))
	}
	c.auction += FirstAuctionID

	// A hot bidder with probability 1 - 1/HotBiddersRatio: the second of
	// the last group of hotBidderGroup people (so hot bidders and hot
	// sellers differ).
	lastPerson := lastBase0PersonID(ev)
	if r.intn(uint64(g.cfg.HotBiddersRatio)) > 0 {
		c.bidder = lastPerson/hotBidderGroup*hotBidderGroup + 1
	} else {
		// One of the active people, plus a few leads.
		numPeople := lastPerson + 1
		active := min(numPeople, int64(g.cfg.NumActivePeople))
		c.bidder = numPeople - active + int64(r.intn(uint64(active+personIDLead)))
	}
	c.bidder += FirstPersonID

	c.price = nextPrice(&r)

	if r.intn(hotChannelsRatio) > 0 {
		c.channel = int(r.intn(uint64(len(hotChannels))))
	} else {
		c.channel = len(hotChannels) + int(r.intn(channelsNumber))
	}

	c.extraLen = g.extraMin
	if g.extraSpread > 0 {
		c.extraLen += int(r.intn(uint64(g.extraSpread)))
	}
	c.extraOff = int(r.intn(extraPoolSize))
	c.dateTime = g.dateTime(ev)
	return c
}

// nextPrice is 10^[0,6) dollars, in cents.
func nextPrice(r *rng) int64 {
	return int64(math.Round(math.Exp(r.float64()*(6*math.Ln10)) * 100))
}

// lastBase0AuctionID is the id (from 0) of the last auction created at or
// before event ev.
func lastBase0AuctionID(ev int64) int64 {
	epoch, offset := ev/totalProportion, ev%totalProportion
	switch {
	case offset < personProportion:
		epoch--
		offset = auctionProportion - 1
	case offset >= personProportion+auctionProportion:
		offset = auctionProportion - 1
	default:
		offset -= personProportion
	}
	return epoch*auctionProportion + offset
}

// lastBase0PersonID is the id (from 0) of the last person created at or
// before event ev.
func lastBase0PersonID(ev int64) int64 {
	epoch, offset := ev/totalProportion, ev%totalProportion
	if offset >= personProportion {
		offset = personProportion - 1
	}
	return epoch*personProportion + offset
}

// channel returns the name and url of channel index c (see bidCore).
func (g *Generator) channel(c int) channel {
	if c < len(hotChannels) {
		return channel{hotChannels[c], g.hotURLs[c]}
	}
	n := c - len(hotChannels)
	ch := g.channels[n]
	if ch.name == "" {
		ch.name = "channel-" + strconv.Itoa(n)
		r := rng{s: mix64(g.key ^ uint64(0x6368616e0000+n))}
		url := appendBaseURL(make([]byte, 0, 96), &r)
		if r.intn(10) > 0 {
			// Java's Math.abs(Integer.reverse(n)).
			rev := int64(int32(bits.Reverse32(uint32(n))))
			url = strconv.AppendInt(append(url, "&channel_id="...), abs(rev), 10)
		}
		ch.url = string(url)
		g.channels[n] = ch
	}
	return ch
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// appendBaseURL appends a URL shaped like the reference generator's.
func appendBaseURL(dst []byte, r *rng) []byte {
	dst = append(dst, "https://www.nexmark.com/"...)
	for i := range 3 {
		if i > 0 {
			dst = append(dst, '/')
		}
		for n := 3 + r.intn(2); n > 0; n-- {
			if r.intn(13) == 0 {
				dst = append(dst, '_')
			} else {
				dst = append(dst, byte('a'+r.intn(26)))
			}
		}
	}
	return append(dst, "/item.htm?query=1"...)
}

// rng is a SplitMix64 stream: small, fast and good enough for test data.
type rng struct{ s uint64 }

func (r *rng) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	return mix64(r.s)
}

// intn returns a value in [0, n); n must be positive.
func (r *rng) intn(n uint64) uint64 {
	hi, _ := bits.Mul64(r.next(), n)
	return hi
}

// float64 returns a value in [0, 1).
func (r *rng) float64() float64 {
	return float64(r.next()>>11) * 0x1p-53
}

func mix64(z uint64) uint64 {
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}
