package nexmark

import (
	"time"

	"github.com/apache/arrow-go/v18/arrow"
)

// DateTimeType is the type of the date_time column: milliseconds since the
// Unix epoch, UTC.
var DateTimeType = &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}

// BidSchema is the Arrow schema of the batches [Generator.NextBatch]
// returns. Prices are in cents. No column is nullable.
var BidSchema = arrow.NewSchema([]arrow.Field{
	{Name: "auction", Type: arrow.PrimitiveTypes.Int64},
	{Name: "bidder", Type: arrow.PrimitiveTypes.Int64},
	{Name: "price", Type: arrow.PrimitiveTypes.Int64},
	{Name: "channel", Type: arrow.BinaryTypes.String},
	{Name: "url", Type: arrow.BinaryTypes.String},
	{Name: "date_time", Type: DateTimeType},
	{Name: "extra", Type: arrow.BinaryTypes.String},
}, nil)

// Column indexes in [BidSchema].
const (
	ColAuction = iota
	ColBidder
	ColPrice
	ColChannel
	ColURL
	ColDateTime
	ColExtra
)

// Bid is one Nexmark bid as a plain Go value.
type Bid struct {
	Auction  int64
	Bidder   int64
	Price    int64 // cents
	Channel  string
	URL      string
	DateTime time.Time // UTC, millisecond precision
	Extra    string
}
