package mesh

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/persistence"
)

// TotalsSchema is the schema of analytics.customer_totals: for every order,
// the customer's order count and order total so far (this order included).
var TotalsSchema = arrow.NewSchema([]arrow.Field{
	{Name: "order_id", Type: arrow.PrimitiveTypes.Int64},
	{Name: "customer_id", Type: arrow.BinaryTypes.String},
	{Name: "orders", Type: arrow.PrimitiveTypes.Int64},
	{Name: "total", Type: arrow.PrimitiveTypes.Float64},
}, nil)

// CustomerTotals is a keyed, stateful operator: it keeps the number and the
// sum of every customer's orders and emits, for each order, the
// customer's running totals. Its input is keyed by customer_id, so each
// instance sees all orders of its customers, in order.
//
// The totals live in memory and reach the instance's Store in one batch at
// every checkpoint (PrepareCheckpoint); Open loads them back, so after a
// failure or a crash the job restarts from the totals of its last
// checkpoint and the input that followed is read again: every running
// total is exact, once.
type CustomerTotals struct {
	mem    memory.Allocator
	state  persistence.Store
	totals map[string]*total
	dirty  map[string]struct{}
	batch  persistence.Batch
}

type total struct {
	orders int64
	sum    float64
}

// NewCustomerTotals returns a CustomerTotals operator.
func NewCustomerTotals() meshflow.Operator { return &CustomerTotals{} }

// Open implements meshflow.Operator: it loads the totals from the Store.
func (t *CustomerTotals) Open(ctx context.Context, oc meshflow.OperatorContext) error {
	t.mem, t.state = oc.Allocator(), oc.State()
	t.totals, t.dirty = map[string]*total{}, map[string]struct{}{}
	return t.state.Scan(ctx, nil, func(k, v []byte) error {
		if len(v) != 16 {
			return fmt.Errorf("customer totals: bad state for %q", k)
		}
		t.totals[string(k)] = &total{
			orders: int64(binary.LittleEndian.Uint64(v)),
			sum:    math.Float64frombits(binary.LittleEndian.Uint64(v[8:])),
		}
		return nil
	})
}

// Process implements meshflow.Operator.
func (t *CustomerTotals) Process(_ context.Context, in arrow.RecordBatch, out meshflow.Emitter) error {
	s := in.Schema()
	idx := func(name string) int {
		if i := s.FieldIndices(name); len(i) == 1 {
			return i[0]
		}
		return -1
	}
	oi, ci, ai := idx("order_id"), idx("customer_id"), idx("amount")
	if oi < 0 || ci < 0 || ai < 0 {
		return fmt.Errorf("customer totals: input %s lacks order_id, customer_id or amount", s)
	}
	ids, ok1 := in.Column(oi).(*array.Int64)
	customers, ok2 := in.Column(ci).(*array.String)
	amounts, ok3 := in.Column(ai).(*array.Float64)
	if !ok1 || !ok2 || !ok3 {
		return fmt.Errorf("customer totals: input %s has unexpected column types", s)
	}
	n := int(in.NumRows())
	b := array.NewRecordBuilder(t.mem, TotalsSchema)
	defer b.Release()
	ob := b.Field(0).(*array.Int64Builder)
	cb := b.Field(1).(*array.StringBuilder)
	nb := b.Field(2).(*array.Int64Builder)
	sb := b.Field(3).(*array.Float64Builder)
	ob.AppendValues(ids.Int64Values(), nil)
	for i := 0; i < n; i++ {
		// c points into the input batch, whose memory is reused once the
		// batch is released: a key kept in a map is a copy.
		// (Assigning to a map entry stores its key again, so entries are
		// updated through pointers.)
		c := customers.Value(i)
		tt := t.totals[c]
		if tt == nil {
			tt = &total{}
			t.totals[strings.Clone(c)] = tt
		}
		tt.orders++
		tt.sum += amounts.Value(i)
		if _, ok := t.dirty[c]; !ok {
			t.dirty[strings.Clone(c)] = struct{}{}
		}
		cb.Append(c)
		nb.Append(tt.orders)
		sb.Append(math.Round(tt.sum*100) / 100)
	}
	meshflow.EmitSameRows(out, b.NewRecordBatch())
	return nil
}

// PrepareCheckpoint implements meshflow.CheckpointHandler: the totals that
// changed since the last checkpoint go to the Store in one batch.
func (t *CustomerTotals) PrepareCheckpoint(ctx context.Context, _ uint64) error {
	if len(t.dirty) == 0 {
		return nil
	}
	t.batch.Reset()
	var v [16]byte
	for c := range t.dirty {
		tt := t.totals[c]
		binary.LittleEndian.PutUint64(v[:], uint64(tt.orders))
		binary.LittleEndian.PutUint64(v[8:], math.Float64bits(tt.sum))
		t.batch.Put([]byte(c), v[:])
	}
	if err := t.state.Apply(ctx, &t.batch); err != nil {
		return fmt.Errorf("customer totals: %w", err)
	}
	clear(t.dirty)
	return nil
}

// Close implements meshflow.Operator.
func (t *CustomerTotals) Close(context.Context) error { return nil }
