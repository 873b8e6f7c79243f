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

// PersonSchema is the Arrow schema of the person batches of
// [Generator.NextEvents]. No column is nullable.
var PersonSchema = arrow.NewSchema([]arrow.Field{
	{Name: "id", Type: arrow.PrimitiveTypes.Int64},
	{Name: "name", Type: arrow.BinaryTypes.String},
	{Name: "email_address", Type: arrow.BinaryTypes.String},
	{Name: "credit_card", Type: arrow.BinaryTypes.String},
	{Name: "city", Type: arrow.BinaryTypes.String},
	{Name: "state", Type: arrow.BinaryTypes.String},
	{Name: "date_time", Type: DateTimeType},
	{Name: "extra", Type: arrow.BinaryTypes.String},
}, nil)

// AuctionSchema is the Arrow schema of the auction batches of
// [Generator.NextEvents]. Prices are in cents. No column is nullable.
var AuctionSchema = arrow.NewSchema([]arrow.Field{
	{Name: "id", Type: arrow.PrimitiveTypes.Int64},
	{Name: "item_name", Type: arrow.BinaryTypes.String},
	{Name: "description", Type: arrow.BinaryTypes.String},
	{Name: "initial_bid", Type: arrow.PrimitiveTypes.Int64},
	{Name: "reserve", Type: arrow.PrimitiveTypes.Int64},
	{Name: "date_time", Type: DateTimeType},
	{Name: "expires", Type: DateTimeType},
	{Name: "seller", Type: arrow.PrimitiveTypes.Int64},
	{Name: "category", Type: arrow.PrimitiveTypes.Int64},
	{Name: "extra", Type: arrow.BinaryTypes.String},
}, nil)

// EventSchema is the wide schema of the JSON lines of the event stream
// ([AppendEventJSON]): "type" ("person", "auction" or "bid") and the
// fields of all three types, nullable, a field shared by several types
// (id, date_time, extra) appearing once. Decoded with the project's JSON
// decoder (messages.JSONDecoder), a line fills the columns of its type and
// leaves the others null; date_time and expires are read from integer
// milliseconds. [DecodeEvents] turns such a batch back into Events.
var EventSchema = arrow.NewSchema([]arrow.Field{
	{Name: "type", Type: arrow.BinaryTypes.String},
	{Name: "id", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "name", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "email_address", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "credit_card", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "city", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "state", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "item_name", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "description", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "initial_bid", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "reserve", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "expires", Type: DateTimeType, Nullable: true},
	{Name: "seller", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "category", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "auction", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "bidder", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "price", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "channel", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "url", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "date_time", Type: DateTimeType, Nullable: true},
	{Name: "extra", Type: arrow.BinaryTypes.String, Nullable: true},
}, nil)
