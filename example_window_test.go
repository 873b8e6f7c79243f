package meshflow_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow"
)

// weightedAvg is a user-defined aggregate: the mean of an int64 value
// column weighted by an int64 weight column, sum(v*w)/sum(w), over the
// rows where both are non-null and the weight positive (null when there
// are none). Its state per group is two int64 sums, kept in slices
// indexed by group.
type weightedAvg struct {
	num, den []int64
}

// WeightedAvg returns the aggregate over the columns value and weight.
func WeightedAvg(name, value, weight string) meshflow.Aggregate {
	return meshflow.UserAggregate(name, []string{value, weight}, func(in []arrow.DataType) (meshflow.AggregateFunc, error) {
		if len(in) != 2 || in[0].ID() != arrow.INT64 || in[1].ID() != arrow.INT64 {
			return nil, fmt.Errorf("weighted average of %v: want two int64 columns", in)
		}
		return &weightedAvg{}, nil
	})
}

func (a *weightedAvg) DataType() arrow.DataType { return arrow.PrimitiveTypes.Float64 }

func (a *weightedAvg) Grow(n int) {
	a.num = append(a.num, make([]int64, n-len(a.num))...)
	a.den = append(a.den, make([]int64, n-len(a.den))...)
}

func (a *weightedAvg) Reset(g int32) { a.num[g], a.den[g] = 0, 0 }

// Update is one loop over the batch's value and weight buffers.
func (a *weightedAvg) Update(cols []arrow.Array, rows, groups []int32) {
	vc, wc := cols[0].(*array.Int64), cols[1].(*array.Int64)
	vs, ws := vc.Int64Values(), wc.Int64Values()
	nulls := vc.NullN() > 0 || wc.NullN() > 0
	for p, g := range groups {
		r := rows[p]
		if nulls && (vc.IsNull(int(r)) || wc.IsNull(int(r))) || ws[r] <= 0 {
			continue
		}
		a.num[g] += vs[r] * ws[r]
		a.den[g] += ws[r]
	}
}

func (a *weightedAvg) Merge(dst, src int32) {
	a.num[dst] += a.num[src]
	a.den[dst] += a.den[src]
}

func (a *weightedAvg) Result(mem memory.Allocator, groups []int32) arrow.Array {
	b := array.NewFloat64Builder(mem)
	defer b.Release()
	b.Reserve(len(groups))
	for _, g := range groups {
		if a.den[g] == 0 {
			b.AppendNull()
			continue
		}
		b.Append(float64(a.num[g]) / float64(a.den[g]))
	}
	return b.NewArray()
}

func (a *weightedAvg) AppendState(dst []byte, g int32) []byte {
	return binary.AppendVarint(binary.AppendVarint(dst, a.num[g]), a.den[g])
}

func (a *weightedAvg) ReadState(src []byte, g int32) ([]byte, error) {
	num, n := binary.Varint(src)
	if n <= 0 {
		return nil, errors.New("weighted average: truncated state")
	}
	den, m := binary.Varint(src[n:])
	if m <= 0 {
		return nil, errors.New("weighted average: truncated state")
	}
	a.num[g], a.den[g] = num, den
	return src[n+m:], nil
}

// A user-defined aggregate (the weighted average above) next to built-in
// ones, over session windows: per sensor, readings less than 10 s apart
// make one session.
func ExampleSessionWindows() {
	dir, _ := os.MkdirTemp("", "meshflow-example")
	defer os.RemoveAll(dir)

	schema := arrow.NewSchema([]arrow.Field{
		{Name: "sensor", Type: arrow.BinaryTypes.String},
		{Name: "ts", Type: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}},
		{Name: "v", Type: arrow.PrimitiveTypes.Int64},
		{Name: "w", Type: arrow.PrimitiveTypes.Int64},
	}, nil)
	p := meshflow.NewPipeline("sessions")
	p.Source("readings", meshflow.FromJSON(schema,
		`{"sensor":"a","ts":"2026-01-01T00:00:00Z","v":10,"w":1}`,
		`{"sensor":"a","ts":"2026-01-01T00:00:05Z","v":20,"w":3}`,
		`{"sensor":"b","ts":"2026-01-01T00:00:06Z","v":7,"w":2}`,
		`{"sensor":"a","ts":"2026-01-01T00:00:30Z","v":40,"w":1}`,
	), meshflow.EventTime("ts", time.Second)).
		KeyBy("sensor").
		Window("activity", meshflow.SessionWindows(10*time.Second, "ts"),
			[]meshflow.Aggregate{meshflow.Count().As("n"), meshflow.Max("v"), WeightedAvg("wavg", "v", "w")}).
		To("out", meshflow.Print(os.Stdout, meshflow.JSONLines))
	if err := meshflow.Run(context.Background(), p, meshflow.WithDataDir(dir)); err != nil {
		fmt.Println(err)
	}
	// Output:
	// {"sensor":"a","window_start":"2026-01-01T00:00:00Z","window_end":"2026-01-01T00:00:15Z","n":2,"max_v":20,"wavg":17.5}
	// {"sensor":"b","window_start":"2026-01-01T00:00:06Z","window_end":"2026-01-01T00:00:16Z","n":1,"max_v":7,"wavg":7}
	// {"sensor":"a","window_start":"2026-01-01T00:00:30Z","window_end":"2026-01-01T00:00:40Z","n":1,"max_v":40,"wavg":40}
}
