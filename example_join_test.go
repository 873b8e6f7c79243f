package meshflow_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/meshflow/meshflow"
)

var (
	examplePersons = arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "name", Type: arrow.BinaryTypes.String},
		{Name: "date_time", Type: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}},
	}, nil)
	exampleAuctions = arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "seller", Type: arrow.PrimitiveTypes.Int64},
		{Name: "date_time", Type: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}},
	}, nil)
)

// Persons who opened an auction in the 10 s window they registered in:
// the pairs of a window come when the watermark passes its end (here the
// sources' last watermark).
func ExampleWindowJoin() {
	dir, _ := os.MkdirTemp("", "meshflow-example")
	defer os.RemoveAll(dir)

	p := meshflow.NewPipeline("new-sellers")
	persons := p.Source("persons", meshflow.FromJSON(examplePersons,
		`{"id":1,"name":"ann","date_time":"2026-01-01T00:00:01Z"}`,
		`{"id":2,"name":"bob","date_time":"2026-01-01T00:00:09Z"}`,
	), meshflow.EventTime("date_time", time.Second))
	auctions := p.Source("auctions", meshflow.FromJSON(exampleAuctions,
		`{"id":100,"seller":1,"date_time":"2026-01-01T00:00:04Z"}`,
		`{"id":101,"seller":2,"date_time":"2026-01-01T00:00:12Z"}`,
		`{"id":102,"seller":1,"date_time":"2026-01-01T00:00:09.999Z"}`,
	), meshflow.EventTime("date_time", time.Second))
	meshflow.WindowJoin("sellers", persons, auctions,
		meshflow.On("id", "seller").Prefixes("person_", "auction_"),
		meshflow.TumblingWindows(10*time.Second, "date_time")).
		Project("shape", "name", "auction_id", "window_start").
		To("out", meshflow.Print(os.Stdout, meshflow.JSONLines))

	if err := meshflow.Run(context.Background(), p, meshflow.WithDataDir(dir)); err != nil {
		fmt.Println(err)
	}
	// Output:
	// {"name":"ann","auction_id":100,"window_start":"2026-01-01T00:00:00Z"}
	// {"name":"ann","auction_id":102,"window_start":"2026-01-01T00:00:00Z"}
}

// A regular join keeps both inputs and emits each pair once, when its
// second row arrives, whichever side that is. Clashing names get the
// sides' prefixes.
func ExampleJoin() {
	dir, _ := os.MkdirTemp("", "meshflow-example")
	defer os.RemoveAll(dir)

	p := meshflow.NewPipeline("sellers")
	persons := p.Source("persons", meshflow.FromJSON(examplePersons,
		`{"id":1,"name":"ann","date_time":"2026-01-01T00:00:01Z"}`,
		`{"id":2,"name":"bob","date_time":"2026-01-01T00:00:09Z"}`,
	))
	auctions := p.Source("auctions", meshflow.FromJSON(exampleAuctions,
		`{"id":100,"seller":1,"date_time":"2026-01-01T00:00:04Z"}`,
		`{"id":101,"seller":3,"date_time":"2026-01-01T00:00:12Z"}`,
		`{"id":102,"seller":1,"date_time":"2026-01-01T00:10:00Z"}`,
	))
	var buf bytes.Buffer
	meshflow.Join("sellers", persons, auctions, meshflow.On("id", "seller")).
		Project("shape", "name", "right_id").
		To("out", meshflow.Print(&buf, meshflow.JSONLines))

	if err := meshflow.Run(context.Background(), p, meshflow.WithDataDir(dir)); err != nil {
		fmt.Println(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	slices.Sort(lines) // the order of the pairs depends on the arrivals
	fmt.Println(strings.Join(lines, "\n"))
	// Output:
	// {"name":"ann","right_id":100}
	// {"name":"ann","right_id":102}
}

// Auctions opened within 10 s after their seller registered: each pair is
// emitted when its second row arrives.
func ExampleIntervalJoin() {
	dir, _ := os.MkdirTemp("", "meshflow-example")
	defer os.RemoveAll(dir)

	p := meshflow.NewPipeline("quick-sellers")
	persons := p.Source("persons", meshflow.FromJSON(examplePersons,
		`{"id":1,"name":"ann","date_time":"2026-01-01T00:00:01Z"}`,
		`{"id":2,"name":"bob","date_time":"2026-01-01T00:00:09Z"}`,
	), meshflow.EventTime("date_time", time.Minute))
	auctions := p.Source("auctions", meshflow.FromJSON(exampleAuctions,
		`{"id":100,"seller":1,"date_time":"2026-01-01T00:00:04Z"}`,
		`{"id":101,"seller":2,"date_time":"2026-01-01T00:00:30Z"}`,
		`{"id":102,"seller":1,"date_time":"2026-01-01T00:00:11Z"}`,
	), meshflow.EventTime("date_time", time.Minute))
	var buf bytes.Buffer
	meshflow.IntervalJoin("quick", persons, auctions,
		meshflow.On("id", "seller").Times("date_time", "date_time").Prefixes("person_", "auction_"),
		0, 10*time.Second).
		Project("shape", "name", "auction_id").
		To("out", meshflow.Print(&buf, meshflow.JSONLines))

	if err := meshflow.Run(context.Background(), p, meshflow.WithDataDir(dir)); err != nil {
		fmt.Println(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	slices.Sort(lines) // the order of the pairs depends on the arrivals
	fmt.Println(strings.Join(lines, "\n"))
	// Output:
	// {"name":"ann","auction_id":100}
	// {"name":"ann","auction_id":102}
}
