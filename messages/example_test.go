package messages_test

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/messages"
)

// Decode JSON events into a batch, send it as a frame and read it back.
func Example() {
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "auction", Type: arrow.PrimitiveTypes.Int64},
		{Name: "price", Type: arrow.PrimitiveTypes.Float64},
		{Name: "channel", Type: arrow.BinaryTypes.String, Nullable: true},
	}, nil)
	mem := memory.NewGoAllocator()
	dec, err := messages.NewJSONDecoder(mem, schema)
	if err != nil {
		panic(err)
	}
	defer dec.Release()
	payload := []byte(`{"auction":1,"price":12.5,"channel":"web"}
{"auction":2,"price":"99"}
{"auction":"three"}`)
	dec.AppendLines(payload, func(event []byte, err error) {
		fmt.Printf("dead letter: %s: %v\n", event, err)
	})
	rec := dec.NewBatch()

	frame, err := messages.EncodeFrame(1, messages.BatchEnvelope(rec)) // rec is borrowed
	if err != nil {
		panic(err)
	}
	rec.Release()
	seq, env, err := messages.DecodeFrame(mem, frame)
	if err != nil {
		panic(err)
	}
	defer env.Release()

	enc, _ := messages.NewJSONRowEncoder(env.Batch.Schema())
	fmt.Println("frame", seq, env.Kind, env.Rows(), "rows")
	for i := range int(env.Rows()) {
		fmt.Println(string(enc.AppendRow(nil, env.Batch, i)))
	}
	// Output:
	// dead letter: {"auction":"three"}: field "auction": "three" is not an int64
	// frame 1 batch 2 rows
	// {"auction":1,"price":12.5,"channel":"web"}
	// {"auction":2,"price":99,"channel":null}
}
