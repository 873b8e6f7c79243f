package join_test

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/join"
	"github.com/meshflow/meshflow/internal/window"
)

var (
	persons = arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "name", Type: arrow.BinaryTypes.String},
		{Name: "ts", Type: arrow.PrimitiveTypes.Int64},
	}, nil)
	auctions = arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "seller", Type: arrow.PrimitiveTypes.Int64},
		{Name: "ts", Type: arrow.PrimitiveTypes.Int64},
	}, nil)
)

func batch(mem memory.Allocator, schema *arrow.Schema, rows ...[3]any) arrow.RecordBatch {
	b := array.NewRecordBuilder(mem, schema)
	defer b.Release()
	for _, r := range rows {
		for i, v := range r {
			switch v := v.(type) {
			case int:
				b.Field(i).(*array.Int64Builder).Append(int64(v))
			case string:
				b.Field(i).(*array.StringBuilder).Append(v)
			}
		}
	}
	return b.NewRecordBatch()
}

// Persons who opened an auction in the 10 s window they joined in, as in
// Nexmark q8.
func ExampleWindow() {
	mem := memory.NewGoAllocator()
	j, err := join.NewWindow(join.WindowConfig{
		Spec:  window.Tumbling(10_000),
		Left:  join.Side{Schema: persons, Keys: []int{0}, Time: 2, Prefix: "p_"},
		Right: join.Side{Schema: auctions, Keys: []int{1}, Time: 2, Prefix: "a_"},
	})
	if err != nil {
		panic(err)
	}
	defer j.Close()
	p := batch(mem, persons, [3]any{1, "ann", 1_000}, [3]any{2, "bob", 9_000})
	a := batch(mem, auctions, [3]any{100, 1, 4_000}, [3]any{101, 2, 12_000}, [3]any{102, 1, 9_999})
	defer p.Release()
	defer a.Release()
	if err := j.Add(join.Left, p); err != nil {
		panic(err)
	}
	if err := j.Add(join.Right, a); err != nil {
		panic(err)
	}
	out, err := j.Fire(mem, 10_000)
	if err != nil {
		panic(err)
	}
	defer out.Release()
	for i := range int(out.NumRows()) {
		fmt.Println(out.Column(1).(*array.String).Value(i), out.Column(3).(*array.Int64).Value(i), out.Column(6).(*array.Timestamp).Value(i))
	}
	// Output:
	// ann 100 0
	// ann 102 0
}

// Auctions with their seller's latest details, as in Nexmark q3.
func ExampleLookup() {
	mem := memory.NewGoAllocator()
	j, err := join.NewLookup(mem, join.LookupConfig{
		Probe:  join.Side{Schema: auctions, Keys: []int{1}, Prefix: "a_"},
		Table:  join.Side{Schema: persons, Keys: []int{0}, Prefix: "p_"},
		Delete: -1,
	})
	if err != nil {
		panic(err)
	}
	defer j.Close()
	p := batch(mem, persons, [3]any{1, "ann", 1_000}, [3]any{2, "bob", 2_000}, [3]any{1, "ann b.", 3_000})
	defer p.Release()
	if err := j.Upsert(mem, p); err != nil {
		panic(err)
	}
	a := batch(mem, auctions, [3]any{100, 1, 4_000}, [3]any{101, 3, 5_000}, [3]any{102, 2, 6_000})
	defer a.Release()
	out, err := j.Probe(mem, a)
	if err != nil {
		panic(err)
	}
	defer out.Release()
	fmt.Println(out.Schema().Field(0).Name, out.Schema().Field(4).Name)
	for i := range int(out.NumRows()) {
		fmt.Println(out.Column(0).(*array.Int64).Value(i), out.Column(4).(*array.String).Value(i))
	}
	// Output:
	// a_id name
	// 100 ann b.
	// 102 bob
}
