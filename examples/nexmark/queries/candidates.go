package queries

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/internal/nexmark"
	"github.com/meshflow/meshflow/messages"
	"github.com/meshflow/meshflow/persistence"
)

// bidColsSchema is the schema of q7's bids: auction, price, bidder,
// date_time and extra, as in the events.
var bidColsSchema = func() *arrow.Schema {
	var fields []arrow.Field
	for _, name := range []string{"auction", "price", "bidder", "date_time", "extra"} {
		fields = append(fields, nexmark.EventSchema.Field(nexmark.EventSchema.FieldIndices(name)[0]))
	}
	return arrow.NewSchema(fields, nil)
}()

// countsSchema is the schema of q5's bid counts: auction, num, ws and we
// (the bounds of their sliding window).
var countsSchema = func() *arrow.Schema {
	ts := &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}
	return arrow.NewSchema([]arrow.Field{
		nexmark.EventSchema.Field(nexmark.EventSchema.FieldIndices("auction")[0]),
		{Name: "num", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "ws", Type: ts, Nullable: true},
		{Name: "we", Type: ts, Nullable: true},
	}, nil)
}()

// maxCandidates is the first operator of q7, on the events: it passes on
// (as columns auction, price, bidder, date_time, extra) the bids that may
// be at their tumbling window's highest price, and drops the others. A
// window's highest price is at least the highest price seen so far in it,
// so a bid below that is at no window's maximum: each batch, it takes the
// highest price of each window among its bids, raises the window's
// running maximum with it, and passes on only the bids at or above it —
// every bid at a window's final maximum passes. The window max and the
// window join after it, which give q7's rows, see only these candidates
// (a few per window instead of every bid).
//
// Late rows are passed on whatever their price, so that the window and
// the join after it judge them as they judge all bids: a bid whose window
// ends at or before the last watermark this operator saw (which is at
// least the watermark those operators saw when it reaches them) is
// passed on, as are bids without a time. Bids without a price, which are
// at no maximum and join no maximum, are dropped unless late.
//
// The running maxima only save work: an instance that starts empty (after
// a restart) passes on more bids, the same results. The watermark is kept
// in the checkpoints, so that after a restore the rows late for the
// restored window and join are still passed on to them.
type maxCandidates struct{ runningMaxes }

// runningMaxes is the running maximum of each tumbling window of size ms
// not yet closed, and the last watermark (kept in the checkpoints), of
// maxCandidates and hotCandidates.
type runningMaxes struct {
	size int64 // the windows' size, ms

	oc    meshflow.OperatorContext
	state persistence.Store
	wm    int64           // last watermark, ms
	maxes map[int64]int64 // window start -> highest price seen
	rows  []int32         // the rows selectCandidates looks at
	sel   []int32         // the rows kept
}

// candidatesWatermarkKey is the key of the watermark in the instance's
// state.
var candidatesWatermarkKey = []byte("watermark")

func newMaxCandidates(size int64) func() meshflow.Operator {
	return func() meshflow.Operator { return &maxCandidates{runningMaxes{size: size}} }
}

func (c *runningMaxes) Open(ctx context.Context, oc meshflow.OperatorContext) error {
	c.oc, c.state = oc, oc.State().Namespace("candidates")
	c.wm, c.maxes = int64(messages.MinWatermark), map[int64]int64{}
	switch v, err := c.state.Get(ctx, candidatesWatermarkKey); {
	case err == nil && len(v) == 8:
		c.wm = int64(binary.BigEndian.Uint64(v))
	case err == nil:
		return fmt.Errorf("candidates: restore: watermark of %d bytes", len(v))
	case !errors.Is(err, persistence.ErrNotFound):
		return fmt.Errorf("candidates: restore: %w", err)
	}
	return nil
}

func (c *runningMaxes) Close(context.Context) error { return nil }

// PrepareCheckpoint keeps the watermark.
func (c *runningMaxes) PrepareCheckpoint(ctx context.Context, id uint64) error {
	if c.wm == int64(messages.MinWatermark) {
		return nil
	}
	var b persistence.Batch
	b.Put(candidatesWatermarkKey, binary.BigEndian.AppendUint64(nil, uint64(c.wm)))
	if err := c.state.Apply(ctx, &b); err != nil {
		return fmt.Errorf("candidates: checkpoint %d: %w", id, err)
	}
	return nil
}

// OnWatermark notes the watermark (in ms, rounded down) and forgets the
// maxima of the windows it closed.
func (c *runningMaxes) OnWatermark(_ context.Context, wm meshflow.Watermark, _ meshflow.Emitter) error {
	ms := int64(wm)
	if wm != messages.MinWatermark && wm != messages.MaxWatermark {
		ms = floorDiv(int64(wm), 1000)
	}
	c.wm = max(c.wm, ms)
	for w := range c.maxes {
		if c.late(w) {
			delete(c.maxes, w)
		}
	}
	return nil
}

// late reports whether the window starting at w ends at or before the
// watermark.
func (c *runningMaxes) late(w int64) bool {
	return c.wm != int64(messages.MinWatermark) && w+c.size <= c.wm
}

func floorDiv(t, d int64) int64 {
	q := t / d
	if t%d < 0 {
		q--
	}
	return q
}

// isBid reports whether row i of the type column is "bid".
func isBid(offs []int32, data []byte, i int) bool {
	o := offs[i]
	return offs[i+1]-o == 3 && data[o] == 'b' && data[o+1] == 'i' && data[o+2] == 'd'
}

func (c *maxCandidates) Process(_ context.Context, in arrow.RecordBatch, out meshflow.Emitter) error {
	n := int(in.NumRows())
	if n == 0 {
		return nil
	}
	s := in.Schema()
	for _, name := range []string{"type", "auction", "price", "bidder", "date_time", "extra"} {
		if len(s.FieldIndices(name)) != 1 {
			return fmt.Errorf("candidates: no column %q in %s", name, s)
		}
	}
	col := func(name string) arrow.Array { return in.Column(s.FieldIndices(name)[0]) }
	typ, ok := col("type").(*array.String)
	if !ok {
		return fmt.Errorf("candidates: type column of %s", col("type").DataType())
	}
	pc, ok1 := col("price").(*array.Int64)
	tc, ok2 := col("date_time").(*array.Timestamp)
	if !ok1 || !ok2 {
		return fmt.Errorf("candidates: price of %s, date_time of %s", col("price").DataType(), col("date_time").DataType())
	}
	// The bids only: a row of another type, or without one, is dropped.
	offs, data := typ.ValueOffsets(), typ.ValueBytes()
	ynull := typ.NullN() > 0
	c.rows = c.rows[:0]
	for i := range n {
		if isBid(offs, data, i) && !(ynull && typ.IsNull(i)) {
			c.rows = append(c.rows, int32(i))
		}
	}
	if c.selectCandidates(c.rows, tc, pc) == 0 {
		return nil
	}
	rec, err := c.gather(in, bidColsSchema)
	if err != nil {
		return err
	}
	out.Emit(rec)
	return nil
}

// selectCandidates sets c.sel to those of rows that may be at their
// window's maximum, and returns how many: the rows at or above the
// running maximum of their window (raised as it goes), then, in a second
// pass over those, the ones still at or above their window's maximum at
// the batch's end; rows late for their window and rows without a time
// are kept whatever their value, rows without a value dropped unless
// late. The events come nearly in time order, so the window of the row
// before is tried first.
func (c *runningMaxes) selectCandidates(rows []int32, tc *array.Timestamp, vc *array.Int64) int {
	times, vals := tc.TimestampValues(), vc.Int64Values()
	tnull, vnull := tc.NullN() > 0, vc.NullN() > 0
	c.sel = c.sel[:0]
	start, end, m, late := int64(1), int64(0), int64(0), false // no window yet
	for _, r := range rows {
		i := int(r)
		if tnull && tc.IsNull(i) {
			c.sel = append(c.sel, r)
			continue
		}
		if t := int64(times[i]); t < start || t >= end {
			if start <= end && !late {
				c.maxes[start] = m
			}
			start = floorDiv(t, c.size) * c.size
			end, late = start+c.size, c.late(start)
			var ok bool
			if m, ok = c.maxes[start]; !ok {
				m = math.MinInt64
			}
		}
		switch {
		case late:
			c.sel = append(c.sel, r)
		case vals[i] >= m && !(vnull && vc.IsNull(i)):
			m = vals[i]
			c.sel = append(c.sel, r)
		}
	}
	if start <= end && !late {
		c.maxes[start] = m
	}
	kept := c.sel[:0]
	for _, i := range c.sel {
		if !tnull || !tc.IsNull(int(i)) {
			w := floorDiv(int64(times[i]), c.size) * c.size
			if !c.late(w) && vals[i] < c.maxes[w] {
				continue
			}
		}
		kept = append(kept, i)
	}
	c.sel = kept
	return len(kept)
}

// gather returns the rows c.sel of in as a batch of schema (columns of
// in by name, int64, timestamp or string).
func (c *runningMaxes) gather(in arrow.RecordBatch, schema *arrow.Schema) (arrow.RecordBatch, error) {
	mem := c.oc.Allocator()
	s := in.Schema()
	cols := make([]arrow.Array, 0, schema.NumFields())
	defer func() {
		for _, a := range cols {
			a.Release()
		}
	}()
	for _, f := range schema.Fields() {
		src := in.Column(s.FieldIndices(f.Name)[0])
		if !arrow.TypeEqual(src.DataType(), f.Type) {
			return nil, fmt.Errorf("candidates: column %s of %s, want %s", f.Name, src.DataType(), f.Type)
		}
		b := array.NewBuilder(mem, f.Type)
		b.Reserve(len(c.sel))
		switch src := src.(type) {
		case *array.Int64:
			ib := b.(*array.Int64Builder)
			for _, i := range c.sel {
				if src.IsNull(int(i)) {
					ib.AppendNull()
				} else {
					ib.Append(src.Value(int(i)))
				}
			}
		case *array.Timestamp:
			tb := b.(*array.TimestampBuilder)
			for _, i := range c.sel {
				if src.IsNull(int(i)) {
					tb.AppendNull()
				} else {
					tb.Append(src.Value(int(i)))
				}
			}
		case *array.String:
			sb := b.(*array.StringBuilder)
			for _, i := range c.sel {
				if src.IsNull(int(i)) {
					sb.AppendNull()
				} else {
					sb.Append(src.Value(int(i)))
				}
			}
		default:
			b.Release()
			return nil, fmt.Errorf("candidates: column %s of %s", f.Name, src.DataType())
		}
		cols = append(cols, b.NewArray())
		b.Release()
	}
	return array.NewRecordBatch(schema, cols, int64(len(c.sel))), nil
}

// hotCandidates passes on the rows of its input whose value column is at
// or above the running maximum of their tumbling window (of size ms, on
// the time column) and drops the others, as maxCandidates does for q7's
// bids: a window's maximum is at least its running maximum, so every row
// at a window's final maximum passes, and the window max and window join
// after it see only these. Rows late for those windows (their window
// ends at or before the last watermark) and rows without a time are
// passed on whatever their value; rows without a value are dropped
// unless late. q5 runs it on the bid counts, timed by their sliding
// window's end.
type hotCandidates struct {
	runningMaxes
	time, value string
}

func newHotCandidates(time, value string, size int64) func() meshflow.Operator {
	return func() meshflow.Operator { return &hotCandidates{runningMaxes{size: size}, time, value} }
}

func (c *hotCandidates) Process(_ context.Context, in arrow.RecordBatch, out meshflow.Emitter) error {
	n := int(in.NumRows())
	if n == 0 {
		return nil
	}
	s := in.Schema()
	ti, vi := s.FieldIndices(c.time), s.FieldIndices(c.value)
	if len(ti) != 1 || len(vi) != 1 {
		return fmt.Errorf("candidates: no column %q or %q in %s", c.time, c.value, s)
	}
	tc, ok1 := in.Column(ti[0]).(*array.Timestamp)
	vc, ok2 := in.Column(vi[0]).(*array.Int64)
	if !ok1 || !ok2 {
		return fmt.Errorf("candidates: %s of %s, %s of %s: want a timestamp and an int64", c.time, in.Column(ti[0]).DataType(), c.value, in.Column(vi[0]).DataType())
	}
	c.rows = c.rows[:0]
	for i := range n {
		c.rows = append(c.rows, int32(i))
	}
	if c.selectCandidates(c.rows, tc, vc) == 0 {
		return nil
	}
	rec, err := c.gather(in, s)
	if err != nil {
		return err
	}
	out.Emit(rec)
	return nil
}
