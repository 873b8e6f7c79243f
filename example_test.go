package meshflow_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow"
)

var exampleSchema = arrow.NewSchema([]arrow.Field{
	{Name: "auction", Type: arrow.PrimitiveTypes.Int64},
	{Name: "price", Type: arrow.PrimitiveTypes.Int64},
	{Name: "channel", Type: arrow.BinaryTypes.String},
}, nil)

// A pipeline runs on an embedded node: filter, compute a column, project,
// print.
func Example() {
	dir, _ := os.MkdirTemp("", "meshflow-example")
	defer os.RemoveAll(dir)

	p := meshflow.NewPipeline("example")
	p.Source("bids", meshflow.FromJSON(exampleSchema,
		`{"auction":1,"price":500,"channel":"web"}`,
		`{"auction":2,"price":15000,"channel":"app"}`,
		`{"auction":3,"price":22000,"channel":"web"}`,
	)).
		Filter("expensive", meshflow.Col("price").Gt(10_000)).
		Map("eur", meshflow.Set("price_eur", meshflow.Col("price").Mul(0.01))).
		Project("shape", "auction", "price_eur").
		To("out", meshflow.Print(os.Stdout, meshflow.JSONLines))

	if err := meshflow.Run(context.Background(), p, meshflow.WithDataDir(dir)); err != nil {
		fmt.Println(err)
	}
	// Output:
	// {"auction":2,"price_eur":150}
	// {"auction":3,"price_eur":220}
}

// Validate reports every problem of a pipeline at once, without running it.
func ExamplePipeline_Validate() {
	p := meshflow.NewPipeline("broken")
	p.Source("bids", meshflow.FromJSON(exampleSchema)).
		Filter("typo", meshflow.Col("prize").Gt(10)).
		Map("bad", meshflow.Set("x", meshflow.Col("channel").Mul(2))).
		To("out", meshflow.Print(os.Stdout, meshflow.JSONLines))
	fmt.Println(p.Validate())
	// Output:
	// operator "typo": expr (prize > 10): no column "prize" (columns: auction, price, channel)
	// operator "bad": x: expr (channel * 2): cannot compute channel (utf8) * 2 (int64)
}

// upper is a custom operator: it emits each batch with its channel column
// in upper case. The input is borrowed; the emitted batch is handed over.
type upper struct{ meshflow.OperatorContext }

func (u *upper) Open(_ context.Context, oc meshflow.OperatorContext) error {
	u.OperatorContext = oc
	return nil
}
func (u *upper) Close(context.Context) error { return nil }
func (u *upper) Process(_ context.Context, in arrow.RecordBatch, out meshflow.Emitter) error {
	ch := in.Column(2).(*array.String)
	b := array.NewStringBuilder(u.Allocator())
	defer b.Release()
	for i := range ch.Len() {
		v := []byte(ch.Value(i))
		for j, c := range v {
			if c >= 'a' && c <= 'z' {
				v[j] = c - 'a' + 'A'
			}
		}
		b.Append(string(v))
	}
	col := b.NewArray()
	defer col.Release()
	cols := []arrow.Array{in.Column(0), in.Column(1), col}
	out.Emit(array.NewRecordBatch(in.Schema(), cols, in.NumRows()))
	return nil
}

func ExampleStream_Process() {
	dir, _ := os.MkdirTemp("", "meshflow-example")
	defer os.RemoveAll(dir)

	p := meshflow.NewPipeline("custom")
	p.Source("bids", meshflow.FromJSON(exampleSchema, `{"auction":7,"price":1,"channel":"web"}`)).
		Process("upper", func() meshflow.Operator { return &upper{} }).
		To("out", meshflow.Print(os.Stdout, meshflow.JSONLines))
	if err := meshflow.Run(context.Background(), p, meshflow.WithDataDir(dir)); err != nil {
		fmt.Println(err)
	}
	// Output:
	// {"auction":7,"price":1,"channel":"WEB"}
}

// Union merges streams of one schema; Apply runs a function on each batch.
func ExampleUnion() {
	dir, _ := os.MkdirTemp("", "meshflow-example")
	defer os.RemoveAll(dir)

	p := meshflow.NewPipeline("union")
	web := p.Source("web", meshflow.FromJSON(exampleSchema, `{"auction":1,"price":10,"channel":"web"}`))
	app := p.Source("app", meshflow.FromJSON(exampleSchema, `{"auction":2,"price":20,"channel":"app"}`))
	var mu sync.Mutex
	total := int64(0)
	meshflow.Union("all", web, app).
		Apply("sum", func(_ context.Context, _ memory.Allocator, in arrow.RecordBatch) (arrow.RecordBatch, error) {
			mu.Lock()
			defer mu.Unlock()
			for _, v := range in.Column(1).(*array.Int64).Int64Values() {
				total += v
			}
			in.Retain()
			return in, nil
		}).
		To("out", meshflow.Print(io.Discard, meshflow.JSONLines))
	if err := meshflow.Run(context.Background(), p, meshflow.WithDataDir(dir)); err != nil {
		fmt.Println(err)
	}
	fmt.Println("total price", total)
	// Output: total price 30
}

// IdleTimeout goes with EventTime on a source: a source instance that reads
// nothing for a second stops holding back the watermark of the operators
// after it (here a bounded source, which ends instead).
func ExampleIdleTimeout() {
	dir, _ := os.MkdirTemp("", "meshflow-example")
	defer os.RemoveAll(dir)

	schema := arrow.NewSchema([]arrow.Field{
		{Name: "auction", Type: arrow.PrimitiveTypes.Int64},
		{Name: "ts", Type: arrow.FixedWidthTypes.Timestamp_us},
	}, nil)
	p := meshflow.NewPipeline("idle")
	p.Source("bids", meshflow.FromJSON(schema,
		`{"auction":1,"ts":"2026-01-01T00:00:00Z"}`,
		`{"auction":2,"ts":"2026-01-01T00:00:05Z"}`,
	), meshflow.EventTime("ts", 2*time.Second), meshflow.IdleTimeout(time.Second)).
		To("out", meshflow.Print(os.Stdout, meshflow.JSONLines))
	if err := meshflow.Run(context.Background(), p, meshflow.WithDataDir(dir)); err != nil {
		fmt.Println(err)
	}
	// Output:
	// {"auction":1,"ts":"2026-01-01T00:00:00Z"}
	// {"auction":2,"ts":"2026-01-01T00:00:05Z"}
}
