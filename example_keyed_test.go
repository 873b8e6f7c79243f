package meshflow_test

import (
	"context"
	"fmt"
	"os"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/meshflow/meshflow"
)

var countSchema = arrow.NewSchema([]arrow.Field{
	{Name: "channel", Type: arrow.BinaryTypes.String},
	{Name: "bids", Type: arrow.PrimitiveTypes.Int64},
	{Name: "total", Type: arrow.PrimitiveTypes.Int64},
}, nil)

// bidCounter keeps, per channel, the number of bids and their total price
// in keyed state, and emits the running figures of every row.
type bidCounter struct {
	oc     meshflow.OperatorContext
	ks     *meshflow.KeyedState
	counts *meshflow.ValueState[int64]
	totals *meshflow.MapState[string, int64]
	keys   meshflow.KeyRows
}

func (c *bidCounter) Open(ctx context.Context, oc meshflow.OperatorContext) (err error) {
	c.oc = oc
	if c.ks, err = meshflow.NewKeyedState(ctx, oc, meshflow.KeyedOptions{}); err != nil {
		return err
	}
	if c.counts, err = meshflow.NewValueState[int64](c.ks, "count", meshflow.StateOptions[int64]{}); err != nil {
		return err
	}
	c.totals, err = meshflow.NewMapState[string, int64](c.ks, "totals", nil, meshflow.StateOptions[int64]{})
	return err
}

func (c *bidCounter) Close(context.Context) error { return nil }

func (c *bidCounter) Process(ctx context.Context, in arrow.RecordBatch, out meshflow.Emitter) error {
	// The keys of all rows at once, with the hash of the keyed edge.
	if err := c.keys.Compute(c.ks, in, "channel"); err != nil {
		return err
	}
	price, channel := in.Column(1).(*array.Int64), in.Column(2).(*array.String)
	b := array.NewRecordBuilder(c.oc.Allocator(), countSchema)
	defer b.Release()
	for i := range c.keys.Len() {
		key := c.keys.Key(i)
		n, _, err := c.counts.Get(ctx, key)
		if err != nil {
			return err
		}
		if err := c.counts.Set(ctx, key, n+1); err != nil {
			return err
		}
		total, _, err := c.totals.Get(ctx, key, "price")
		if err != nil {
			return err
		}
		if err := c.totals.Put(ctx, key, "price", total+price.Value(i)); err != nil {
			return err
		}
		b.Field(0).(*array.StringBuilder).Append(channel.Value(i))
		b.Field(1).(*array.Int64Builder).Append(n + 1)
		b.Field(2).(*array.Int64Builder).Append(total + price.Value(i))
	}
	out.Emit(b.NewRecordBatch())
	return nil
}

// Keyed state: an operator after KeyBy keeps values, maps and lists per
// key, for the key groups its instance owns.
func ExampleKeyedState() {
	dir, _ := os.MkdirTemp("", "meshflow-example")
	defer os.RemoveAll(dir)

	p := meshflow.NewPipeline("keyed-example")
	p.Source("bids", meshflow.FromJSON(exampleSchema,
		`{"auction":1,"price":500,"channel":"web"}`,
		`{"auction":2,"price":15000,"channel":"app"}`,
		`{"auction":3,"price":22000,"channel":"web"}`,
		`{"auction":4,"price":100,"channel":"web"}`,
	)).
		KeyBy("channel").
		Process("count", func() meshflow.Operator { return &bidCounter{} }, meshflow.OutputSchema(countSchema)).
		To("out", meshflow.Print(os.Stdout, meshflow.JSONLines))

	if err := meshflow.Run(context.Background(), p, meshflow.WithDataDir(dir)); err != nil {
		fmt.Println(err)
	}
	// Output:
	// {"channel":"web","bids":1,"total":500}
	// {"channel":"app","bids":1,"total":15000}
	// {"channel":"web","bids":2,"total":22500}
	// {"channel":"web","bids":3,"total":22600}
}
