package queries

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/internal/nexmark"
)

// MaxAuctionDuration bounds how long (expires - date_time) an auction of
// q4 and q6 may last: the join of auctions and bids keeps an auction
// until the watermark passes its date_time + MaxAuctionDuration, so a
// bid later than that after its auction's start is not seen. The
// generator's auctions last at most 2 × the event time of 1,666 events
// (NumInFlightAuctions × 50 / 3): 67 s at 50 events a second, 0.34 s at
// the default 10,000 (TestAuctionDurations).
const MaxAuctionDuration = 10 * time.Minute

// closings joins the auctions (their id, the group column — category or
// seller — and expires) with the bids on them, keeps each auction's
// highest bid price in [date_time, expires] in keyed state and emits
// the auction with its final price once the watermark passes its
// expires: columns id, group, expires and price, in closing order
// (expires, then id).
//
// The join is an interval join of the bids within MaxAuctionDuration
// after their auction's start, filtered on bid.date_time <= expires: an
// interval join's upper bound is one duration for all rows, not a column.
// It keeps each auction for MaxAuctionDuration of event time and each
// bid only until the watermark passes it.
func closings(events *meshflow.Stream, group string) *meshflow.Stream {
	auctions := events.Filter("auctions", meshflow.Col("type").Eq("auction")).
		Project("auction-cols", "id", group, "date_time", "expires")
	bids := events.Filter("bids", meshflow.Col("type").Eq("bid")).
		Project("bid-cols", "auction", "price", "date_time")
	return meshflow.IntervalJoin("join", auctions, bids,
		meshflow.On("id", "auction").Times("date_time", "date_time").Prefixes("auction_", "bid_"),
		0, MaxAuctionDuration).
		Filter("before-expiry", meshflow.Col("bid_date_time").Le(meshflow.Col("expires"))).
		Project("auction-bids", "id", group, "expires", "price").
		KeyBy("id").
		Process("final-price", func() meshflow.Operator { return &finalPrice{group: group} },
			meshflow.OutputSchema(closedSchema(group)))
}

// closedSchema is the schema of the closed auctions of closings.
func closedSchema(group string) *arrow.Schema {
	return arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: group, Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "expires", Type: nexmark.DateTimeType, Nullable: true},
		{Name: "price", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	}, nil)
}

// openAuction is the keyed state of an auction with a bid: its id, group
// value, expiry (ms) and highest price so far.
type openAuction struct{ id, group, expires, price int64 }

// openAuctionCodec encodes an openAuction as 4 big-endian int64.
type openAuctionCodec struct{}

func (openAuctionCodec) Append(dst []byte, a openAuction) []byte {
	for _, v := range [4]int64{a.id, a.group, a.expires, a.price} {
		dst = binary.BigEndian.AppendUint64(dst, uint64(v))
	}
	return dst
}

func (openAuctionCodec) Decode(b []byte) (openAuction, error) {
	if len(b) != 32 {
		return openAuction{}, fmt.Errorf("open auction: %d bytes", len(b))
	}
	v := func(i int) int64 { return int64(binary.BigEndian.Uint64(b[8*i:])) }
	return openAuction{v(0), v(1), v(2), v(3)}, nil
}

// finalPrice keeps, per auction (its input is keyed by id), the highest
// price of its bids and an event-time timer at expires + 1 ms: when the
// watermark passes expires, the auction closes and is emitted with that
// price. The closings of one watermark are emitted in one batch sorted by
// (expires, id). Run as one instance (the default), it emits all
// closings in that order.
type finalPrice struct {
	group string

	schema  *arrow.Schema
	oc      meshflow.OperatorContext
	ks      *meshflow.KeyedState
	open    *meshflow.ValueState[openAuction]
	keys    meshflow.KeyRows
	closing []openAuction // filled by onTimer during one HandleTimer
}

func (f *finalPrice) Open(ctx context.Context, oc meshflow.OperatorContext) (err error) {
	f.oc, f.schema = oc, closedSchema(f.group)
	if f.ks, err = meshflow.NewKeyedState(ctx, oc, meshflow.KeyedOptions{OnTimer: f.onTimer}); err != nil {
		return err
	}
	f.open, err = meshflow.NewValueState(f.ks, "open", meshflow.StateOptions[openAuction]{Codec: openAuctionCodec{}})
	return err
}

func (f *finalPrice) Close(context.Context) error { return nil }

// Process folds the batch's bids into their auctions' highest prices.
func (f *finalPrice) Process(ctx context.Context, in arrow.RecordBatch, _ meshflow.Emitter) error {
	if in.NumRows() == 0 {
		return nil
	}
	if err := f.keys.Compute(f.ks, in, "id"); err != nil {
		return err
	}
	idc, gc := in.Column(0).(*array.Int64), in.Column(1).(*array.Int64)
	ec, pc := in.Column(2).(*array.Timestamp), in.Column(3).(*array.Int64)
	ids, groups, expires, prices := idc.Int64Values(), gc.Int64Values(), ec.TimestampValues(), pc.Int64Values()
	nulls := idc.NullN()+gc.NullN()+ec.NullN()+pc.NullN() > 0
	for i := range f.keys.Len() {
		if nulls && (idc.IsNull(i) || gc.IsNull(i) || ec.IsNull(i) || pc.IsNull(i)) {
			// The join and the filter let no null id or time through; a
			// bid without a price (JetStream input) is no bid, an auction
			// without a category or seller has no group to average in.
			continue
		}
		key := f.keys.Key(i)
		a, ok, err := f.open.Get(ctx, key)
		if err != nil {
			return err
		}
		switch {
		case !ok:
			a = openAuction{id: ids[i], group: groups[i], expires: int64(expires[i]), price: prices[i]}
			if err := f.ks.RegisterEventTimer(ctx, key, time.UnixMilli(a.expires+1), "close"); err != nil {
				return err
			}
		case prices[i] > a.price:
			a.price = prices[i]
		default:
			continue
		}
		if err := f.open.Set(ctx, key, a); err != nil {
			return err
		}
	}
	return nil
}

// onTimer closes an auction: its state goes to f.closing.
func (f *finalPrice) onTimer(ctx context.Context, key meshflow.StateKey, _ meshflow.Timer, _ meshflow.Emitter) error {
	a, ok, err := f.open.Get(ctx, key)
	if err != nil || !ok {
		return err
	}
	f.closing = append(f.closing, a)
	return f.open.Delete(ctx, key)
}

// OnTimer closes the auctions whose expiry the watermark passed and emits
// them, sorted by (expires, id), in one batch.
func (f *finalPrice) OnTimer(ctx context.Context, t meshflow.Timer, out meshflow.Emitter) error {
	f.closing = f.closing[:0]
	if _, err := f.ks.HandleTimer(ctx, t, out); err != nil {
		return err
	}
	if len(f.closing) == 0 {
		return nil
	}
	slices.SortFunc(f.closing, func(a, b openAuction) int {
		return cmp.Or(cmp.Compare(a.expires, b.expires), cmp.Compare(a.id, b.id))
	})
	n := len(f.closing)
	ids, groups, expires, prices := make([]int64, n), make([]int64, n), make([]arrow.Timestamp, n), make([]int64, n)
	for i, a := range f.closing {
		ids[i], groups[i], expires[i], prices[i] = a.id, a.group, arrow.Timestamp(a.expires), a.price
	}
	mem := f.oc.Allocator()
	ib, gb := array.NewInt64Builder(mem), array.NewInt64Builder(mem)
	eb, pb := array.NewTimestampBuilder(mem, nexmark.DateTimeType), array.NewInt64Builder(mem)
	defer func() { ib.Release(); gb.Release(); eb.Release(); pb.Release() }()
	ib.AppendValues(ids, nil)
	gb.AppendValues(groups, nil)
	eb.AppendValues(expires, nil)
	pb.AppendValues(prices, nil)
	cols := []arrow.Array{ib.NewArray(), gb.NewArray(), eb.NewArray(), pb.NewArray()}
	out.Emit(array.NewRecordBatch(f.schema, cols, int64(n)))
	for _, c := range cols {
		c.Release()
	}
	return nil
}

// avgSchema is the output of q4 (group "category") and q6 ("seller").
func avgSchema(group string) *arrow.Schema {
	return arrow.NewSchema([]arrow.Field{
		{Name: group, Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "avg_price", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
	}, nil)
}

// averager is the keyed operator of q4 and q6 after closings, keyed by
// the group column: for each closed auction in order, it adds the final
// price to its group's state and emits the group and its average.
type averager struct {
	group  string
	schema *arrow.Schema
	// last, when positive, averages the last `last` prices of the group
	// (a list in keyed state, q6); 0 averages all (a running sum and
	// count, q4).
	last int

	oc     meshflow.OperatorContext
	ks     *meshflow.KeyedState
	sums   *meshflow.ValueState[sumCount]
	recent *meshflow.ListState[int64]
	keys   meshflow.KeyRows
	avgs   []float64
}

// sumCount is a running sum of prices and their number.
type sumCount struct{ sum, n int64 }

// sumCountCodec encodes a sumCount as 2 big-endian int64.
type sumCountCodec struct{}

func (sumCountCodec) Append(dst []byte, s sumCount) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(dst, uint64(s.sum)), uint64(s.n))
}

func (sumCountCodec) Decode(b []byte) (sumCount, error) {
	if len(b) != 16 {
		return sumCount{}, fmt.Errorf("sum and count: %d bytes", len(b))
	}
	return sumCount{int64(binary.BigEndian.Uint64(b)), int64(binary.BigEndian.Uint64(b[8:]))}, nil
}

func (a *averager) Open(ctx context.Context, oc meshflow.OperatorContext) (err error) {
	a.oc, a.schema = oc, avgSchema(a.group)
	if a.ks, err = meshflow.NewKeyedState(ctx, oc, meshflow.KeyedOptions{}); err != nil {
		return err
	}
	if a.last > 0 {
		a.recent, err = meshflow.NewListState(a.ks, "recent", meshflow.StateOptions[int64]{})
	} else {
		a.sums, err = meshflow.NewValueState(a.ks, "sum", meshflow.StateOptions[sumCount]{Codec: sumCountCodec{}})
	}
	return err
}

func (a *averager) Close(context.Context) error { return nil }

// Process emits, for every closed auction of in (columns id, group,
// expires, price), its group and the group's new average, in one batch.
func (a *averager) Process(ctx context.Context, in arrow.RecordBatch, out meshflow.Emitter) error {
	n := int(in.NumRows())
	if n == 0 {
		return nil
	}
	if err := a.keys.Compute(a.ks, in, a.group); err != nil {
		return err
	}
	prices := in.Column(3).(*array.Int64).Int64Values()
	a.avgs = slices.Grow(a.avgs[:0], n)[:n]
	for i := range n {
		key := a.keys.Key(i)
		if a.last == 0 {
			s, _, err := a.sums.Get(ctx, key)
			if err != nil {
				return err
			}
			s.sum += prices[i]
			s.n++
			if err := a.sums.Set(ctx, key, s); err != nil {
				return err
			}
			a.avgs[i] = float64(s.sum) / float64(s.n)
			continue
		}
		ps, err := a.recent.Get(ctx, key)
		if err != nil {
			return err
		}
		ps = append(ps, prices[i])
		if len(ps) > a.last {
			ps = ps[len(ps)-a.last:]
		}
		if err := a.recent.Update(ctx, key, ps); err != nil {
			return err
		}
		var sum int64
		for _, p := range ps {
			sum += p
		}
		a.avgs[i] = float64(sum) / float64(len(ps))
	}
	// The group column is passed on as it is; the averages are one new
	// column.
	avg := array.NewFloat64Builder(a.oc.Allocator())
	defer avg.Release()
	avg.AppendValues(a.avgs, nil)
	avgs := avg.NewArray()
	defer avgs.Release()
	out.Emit(array.NewRecordBatch(a.schema, []arrow.Array{in.Column(1), avgs}, int64(n)))
	return nil
}

// q4: per category, the average final price of its closed auctions, each
// time one closes.
func q4(events *meshflow.Stream) *meshflow.Stream {
	return closings(events, "category").KeyBy("category").
		Process("q4", func() meshflow.Operator { return &averager{group: "category"} },
			meshflow.OutputSchema(avgSchema("category")))
}

// q6: per seller, the average final price of their last 10 closed
// auctions, each time one closes.
func q6(events *meshflow.Stream) *meshflow.Stream {
	return closings(events, "seller").KeyBy("seller").
		Process("q6", func() meshflow.Operator { return &averager{group: "seller", last: 10} },
			meshflow.OutputSchema(avgSchema("seller")))
}
