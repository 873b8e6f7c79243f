package nexmark

import (
	"fmt"
	"math"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// NextBatch returns the next n bids as one record batch with schema
// [BidSchema], allocated from mem. The caller owns the batch and must
// release it. The column buffers are written directly, without builders.
func (g *Generator) NextBatch(mem memory.Allocator, n int) arrow.RecordBatch {
	if n < 0 {
		panic(fmt.Sprintf("nexmark: NextBatch(%d): negative row count", n))
	}
	rec := g.bidBatch(mem, g.next, n)
	g.next += int64(n)
	return rec
}

// bidBatch returns bids first .. first+n-1 as one batch.
func (g *Generator) bidBatch(mem memory.Allocator, first int64, n int) arrow.RecordBatch {
	auctionBuf, auction := int64Buffer(mem, n)
	bidderBuf, bidder := int64Buffer(mem, n)
	priceBuf, price := int64Buffer(mem, n)
	timeBuf, dateTime := int64Buffer(mem, n)

	if cap(g.chanS) < n {
		g.chanS, g.urlS, g.x = make([]string, n), make([]string, n), make([]string, n)
	}
	chans, urls, extras := g.chanS[:n], g.urlS[:n], g.x[:n]
	var chanBytes, urlBytes, extraBytes int
	for i := range n {
		c := g.bid(first + int64(i))
		auction[i], bidder[i], price[i], dateTime[i] = c.auction, c.bidder, c.price, c.dateTime
		ch := g.channel(c.channel)
		chans[i], urls[i] = ch.name, ch.url
		extras[i] = g.pool[c.extraOff : c.extraOff+c.extraLen]
		chanBytes += len(ch.name)
		urlBytes += len(ch.url)
		extraBytes += c.extraLen
	}
	cols := [...]arrow.Array{
		ColAuction:  int64Array(arrow.PrimitiveTypes.Int64, n, auctionBuf),
		ColBidder:   int64Array(arrow.PrimitiveTypes.Int64, n, bidderBuf),
		ColPrice:    int64Array(arrow.PrimitiveTypes.Int64, n, priceBuf),
		ColChannel:  stringArray(mem, chans, chanBytes),
		ColURL:      stringArray(mem, urls, urlBytes),
		ColDateTime: int64Array(DateTimeType, n, timeBuf),
		ColExtra:    stringArray(mem, extras, extraBytes),
	}
	clear(chans)
	clear(urls)
	clear(extras)
	rec := array.NewRecordBatch(BidSchema, cols[:], int64(n))
	for _, c := range cols {
		c.Release()
	}
	return rec
}

// int64Buffer allocates a buffer of n int64 values and returns it with a
// view of its values.
func int64Buffer(mem memory.Allocator, n int) (*memory.Buffer, []int64) {
	buf := memory.NewResizableBuffer(mem)
	buf.Resize(n * arrow.Int64SizeBytes)
	return buf, arrow.Int64Traits.CastFromBytes(buf.Bytes())
}

// int64Array wraps buf (taking over the caller's reference) as an array of
// an 8-byte fixed-width type without nulls.
func int64Array(dt arrow.DataType, n int, buf *memory.Buffer) arrow.Array {
	data := array.NewData(dt, n, []*memory.Buffer{nil, buf}, nil, 0, 0)
	buf.Release()
	arr := array.MakeFromData(data)
	data.Release()
	return arr
}

// stringArray builds a string array of vals, whose lengths add up to total.
func stringArray(mem memory.Allocator, vals []string, total int) arrow.Array {
	if total > math.MaxInt32 {
		panic(fmt.Sprintf("nexmark: %d bytes of strings do not fit one string array", total))
	}
	offBuf := memory.NewResizableBuffer(mem)
	offBuf.Resize((len(vals) + 1) * arrow.Int32SizeBytes)
	offs := arrow.Int32Traits.CastFromBytes(offBuf.Bytes())
	dataBuf := memory.NewResizableBuffer(mem)
	dataBuf.Resize(total)
	data := dataBuf.Bytes()
	off := 0
	for i, s := range vals {
		offs[i] = int32(off)
		off += copy(data[off:], s)
	}
	offs[len(vals)] = int32(off)
	d := array.NewData(arrow.BinaryTypes.String, len(vals), []*memory.Buffer{nil, offBuf, dataBuf}, nil, 0, 0)
	offBuf.Release()
	dataBuf.Release()
	arr := array.NewStringData(d)
	d.Release()
	return arr
}
