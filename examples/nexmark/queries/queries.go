// Package queries holds the Nexmark queries of the nexmark example, built
// with the public meshflow API, the file source they read, and the
// example's command line ([Main]).
//
// Every query reads the one mixed stream of Nexmark events (JSON lines
// with a "type" field, decoded with the wide schema nexmark.EventSchema:
// the fields of all three event types, nullable), keeps its event type with
// a Filter on "type" and projects the columns it needs:
//
//	q0  pass-through:        SELECT auction, bidder, price, date_time, extra FROM bid
//	q1  currency conversion: SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid
//	q2  selection:           SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0
//
// q3 to q8 need stream joins and event-time windows, which Meshflow does
// not have yet: [Build] refuses them with [ErrNotSupported].
package queries

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/internal/nexmark"
)

// ErrNotSupported is wrapped by the error of [Build] for the Nexmark
// queries Meshflow cannot run yet.
var ErrNotSupported = errors.New("nexmark query not supported")

type notSupported struct{ q, what string }

func (e notSupported) Error() string {
	return fmt.Sprintf("query %s needs %s, which Meshflow does not have yet (supported: q0, q1, q2)", e.q, e.what)
}

func (e notSupported) Is(target error) bool { return target == ErrNotSupported }

// Supported lists the queries [Build] builds.
var Supported = []string{"q0", "q1", "q2"}

// needs says what the queries Build refuses need.
var needs = map[string]string{
	"q3": "a join of auctions and people",
	"q4": "a join of auctions and bids and a windowed aggregation",
	"q5": "sliding event-time windows",
	"q6": "a join of auctions and bids and per-seller windows",
	"q7": "event-time windows and a join",
	"q8": "a windowed join of people and auctions",
}

// Name is the job name of query q: "nexmark-<q>".
func Name(q string) string { return "nexmark-" + q }

// Build returns the pipeline of Nexmark query q (q0, q1 or q2) reading
// events from src (batches of nexmark.EventSchema) and writing results to
// sink. q3 to q8 fail with an error wrapping [ErrNotSupported].
func Build(q string, src meshflow.Source, sink meshflow.Sink) (*meshflow.Pipeline, error) {
	if what, ok := needs[q]; ok {
		return nil, notSupported{q, what}
	}
	if !slices.Contains(Supported, q) {
		return nil, fmt.Errorf("unknown query %q (Nexmark queries are q0 to q8; supported: q0, q1, q2)", q)
	}
	p := meshflow.NewPipeline(Name(q))
	bids := p.Source("events", src).Filter("bids", meshflow.Col("type").Eq("bid"))
	var out *meshflow.Stream
	switch q {
	case "q0":
		out = bids.Project("q0", "auction", "bidder", "price", "date_time", "extra")
	case "q1":
		// Nexmark's q1 is 0.908 * price, an exact decimal (its Flink SQL
		// sink column is DECIMAL(23, 3)). price × 908 is exact in int64 (an
		// overflow fails the job) and its division by 1000 in float64 is
		// the float nearest the decimal, which the JSON encoder writes as
		// that decimal whenever it has at most 15 significant digits (every
		// price below 10^12 cents). Col("price").Mul(0.908) would round
		// twice and print 1482867.5120000001 for 1482867.512.
		out = bids.Project("shape", "auction", "bidder", "price", "date_time", "extra").
			Map("q1", meshflow.Set("price", meshflow.Col("price").Mul(908).Div(1000.0)))
	case "q2":
		// TODO(expr Mod): Filter("q2", meshflow.Col("auction").Mod(123).Eq(0))
		// once expressions have a modulo; until then a vectorised batch
		// function over the auction column.
		out = bids.Project("shape", "auction", "price").
			Apply("q2", AuctionMultipleOf(123), meshflow.OutputSchema(q2Schema))
	}
	out.To("out", sink)
	return p, nil
}

// q2Schema is what q2 emits: the auction and price columns of the events.
var q2Schema = func() *arrow.Schema {
	s := nexmark.EventSchema
	return arrow.NewSchema([]arrow.Field{s.Field(s.FieldIndices("auction")[0]), s.Field(s.FieldIndices("price")[0])}, nil)
}()

// AuctionMultipleOf returns a batch function keeping the rows whose
// "auction" column (an int64 column, the batch's first) is a multiple of
// m: MOD(auction, m) = 0, a null auction dropping its row. It builds a
// selection bitmap in one loop over the column's values and filters the
// batch with the Arrow filter kernel; a batch kept whole is passed on
// without a copy. m must not be 0.
func AuctionMultipleOf(m int64) meshflow.BatchFunc {
	div := newDivisibility(m)
	return func(ctx context.Context, mem memory.Allocator, in arrow.RecordBatch) (arrow.RecordBatch, error) {
		col, ok := in.Column(0).(*array.Int64)
		if !ok || in.ColumnName(0) != "auction" {
			return nil, fmt.Errorf("q2: first column is %s %s, want auction int64", in.ColumnName(0), in.Column(0).DataType())
		}
		n := col.Len()
		scratch := selPool.Get().(*[]int32)
		defer selPool.Put(scratch)
		sel := (*scratch)[:0]
		defer func() { *scratch = sel[:0] }()
		for i, a := range col.Int64Values() {
			if div.divides(a) {
				sel = append(sel, int32(i))
			}
		}
		if col.NullN() > 0 {
			sel = slices.DeleteFunc(sel, func(i int32) bool { return col.IsNull(int(i)) })
		}
		switch len(sel) {
		case 0:
			return nil, nil
		case n:
			in.Retain()
			return in, nil
		}
		return takeRows(ctx, mem, in, sel)
	}
}

// selPool holds the selection vectors of AuctionMultipleOf, reused across
// batches and operator instances.
var selPool = sync.Pool{New: func() any { return new([]int32) }}

// takeRows returns the rows sel (ascending) of in. Int64 columns without
// nulls are copied in one loop; other columns go through the Arrow filter
// kernel.
func takeRows(ctx context.Context, mem memory.Allocator, in arrow.RecordBatch, sel []int32) (arrow.RecordBatch, error) {
	cols := make([]arrow.Array, 0, in.NumCols())
	defer func() {
		for _, c := range cols {
			c.Release()
		}
	}()
	var mask *array.Boolean
	defer func() {
		if mask != nil {
			mask.Release()
		}
	}()
	for _, c := range in.Columns() {
		if ic, ok := c.(*array.Int64); ok && ic.NullN() == 0 {
			buf := memory.NewResizableBuffer(mem)
			buf.Resize(len(sel) * arrow.Int64SizeBytes)
			dst, src := arrow.Int64Traits.CastFromBytes(buf.Bytes()), ic.Int64Values()
			for k, i := range sel {
				dst[k] = src[i]
			}
			data := array.NewData(c.DataType(), len(sel), []*memory.Buffer{nil, buf}, nil, 0, 0)
			buf.Release()
			cols = append(cols, array.MakeFromData(data))
			data.Release()
			continue
		}
		if mask == nil {
			b := array.NewBooleanBuilder(mem)
			b.AppendEmptyValues(int(in.NumRows()))
			m := b.NewBooleanArray()
			b.Release()
			bits := m.Data().Buffers()[1].Bytes()
			for _, i := range sel {
				bitutil.SetBit(bits, int(i))
			}
			mask = m
		}
		d, err := compute.FilterArray(compute.WithAllocator(ctx, mem), c, mask, *compute.DefaultFilterOptions())
		if err != nil {
			return nil, err
		}
		cols = append(cols, d)
	}
	return array.NewRecordBatch(in.Schema(), cols, int64(len(sel))), nil
}

// divisibility tests whether m divides a value with a multiplication
// instead of a division (Granlund and Montgomery): with m = 2^k × d, d
// odd, x is a multiple of m when its low k bits are zero and
// x × d⁻¹ mod 2^64 is at most (2^64 - 1) / d, d⁻¹ being d's inverse
// modulo 2^64.
type divisibility struct {
	low   uint64 // 2^k - 1
	inv   uint64
	limit uint64
}

func newDivisibility(m int64) divisibility {
	if m == 0 {
		panic("queries: divisibility by 0")
	}
	u := uint64(m)
	if m < 0 {
		u = -u
	}
	k := bits.TrailingZeros64(u)
	d := u >> k
	inv := d // Newton's iteration: each step doubles the correct low bits (3 to start)
	for range 5 {
		inv *= 2 - d*inv
	}
	return divisibility{low: 1<<k - 1, inv: inv, limit: math.MaxUint64 / d}
}

func (v divisibility) divides(a int64) bool {
	x := uint64(a)
	if a < 0 {
		x = -x
	}
	return x&v.low == 0 && x*v.inv <= v.limit
}
