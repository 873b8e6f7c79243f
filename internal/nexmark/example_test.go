package nexmark_test

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/nexmark"
)

func ExampleGenerator_NextBatch() {
	gen := nexmark.NewGenerator(nexmark.Config{Seed: 42, EventsPerSecond: 1000})
	rec := gen.NextBatch(memory.NewGoAllocator(), 4)
	defer rec.Release()
	auction := rec.Column(nexmark.ColAuction).(*array.Int64)
	bidder := rec.Column(nexmark.ColBidder).(*array.Int64)
	dateTime := rec.Column(nexmark.ColDateTime).(*array.Timestamp)
	for i := range int(rec.NumRows()) {
		fmt.Println(auction.Value(i), bidder.Value(i), dateTime.Value(i).ToTime(nexmark.DateTimeType.Unit).Format("15:04:05.000"))
	}
	// Output:
	// 1011 1001 00:00:00.004
	// 1000 1006 00:00:00.005
	// 1000 1009 00:00:00.006
	// 1012 1001 00:00:00.007
}

func ExampleGenerator_NextBidJSON() {
	gen := nexmark.NewGenerator(nexmark.Config{Seed: 42})
	fmt.Printf("%s\n", gen.NextBidJSON(nil))
	// Output:
	// {"auction":1011,"bidder":1001,"price":1633114,"channel":"Google","url":"https://www.nexmark.com/t_ju/vbx/ewc/item.htm?query=1","date_time":"2024-01-01T00:00:00.000Z","extra":"dncmkjjfpfbzxnxlzopvztkszpfvyvmlgcvbnpwtanodonrjxmsjuodnvfwwekvcmffxv"}
}
