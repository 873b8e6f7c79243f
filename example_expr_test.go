package meshflow_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/meshflow/meshflow"
)

// Mod is the integer remainder: Nexmark q2 keeps the bids of every 123rd
// auction.
func ExampleExpr_mod() {
	dir, _ := os.MkdirTemp("", "meshflow-example")
	defer os.RemoveAll(dir)

	p := meshflow.NewPipeline("q2")
	p.Source("bids", meshflow.FromJSON(exampleSchema,
		`{"auction":123,"price":500,"channel":"web"}`,
		`{"auction":124,"price":700,"channel":"app"}`,
		`{"auction":2460,"price":900,"channel":"web"}`,
	)).
		Filter("every-123rd", meshflow.Col("auction").Mod(123).Eq(0)).
		Project("shape", "auction", "price").
		To("out", meshflow.Print(os.Stdout, meshflow.JSONLines))
	if err := meshflow.Run(context.Background(), p, meshflow.WithDataDir(dir)); err != nil {
		fmt.Println(err)
	}
	// Output:
	// {"auction":123,"price":500}
	// {"auction":2460,"price":900}
}

// String functions: a case-insensitive channel test, and a capture group
// of a regular expression (null where it does not match).
func ExampleExpr_strings() {
	dir, _ := os.MkdirTemp("", "meshflow-example")
	defer os.RemoveAll(dir)

	schema := arrow.NewSchema([]arrow.Field{
		{Name: "channel", Type: arrow.BinaryTypes.String},
		{Name: "url", Type: arrow.BinaryTypes.String},
	}, nil)
	p := meshflow.NewPipeline("strings")
	p.Source("bids", meshflow.FromJSON(schema,
		`{"channel":"Web","url":"https://x/item?id=42"}`,
		`{"channel":"app","url":"https://x/item?id=7"}`,
		`{"channel":"WEB","url":"https://x/home"}`,
	)).
		Filter("web", meshflow.Col("channel").Lower().Eq("web")).
		Map("id",
			meshflow.Set("id", meshflow.Col("url").RegexpExtract(`id=(\d+)`, 1)),
			meshflow.Set("secure", meshflow.Col("url").HasPrefix("https:")),
			meshflow.Parallelism(2)).
		Project("shape", "channel", "id", "secure").
		To("out", meshflow.Print(os.Stdout, meshflow.JSONLines))
	if err := meshflow.Run(context.Background(), p, meshflow.WithDataDir(dir)); err != nil {
		fmt.Println(err)
	}
	// Unordered output:
	// {"channel":"Web","id":"42","secure":true}
	// {"channel":"WEB","id":null,"secure":true}
}

// Truncate rounds timestamps down to windows: here 10-second tumbling
// windows, as a window key.
func ExampleExpr_truncate() {
	dir, _ := os.MkdirTemp("", "meshflow-example")
	defer os.RemoveAll(dir)

	schema := arrow.NewSchema([]arrow.Field{
		{Name: "auction", Type: arrow.PrimitiveTypes.Int64},
		{Name: "date_time", Type: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}},
	}, nil)
	p := meshflow.NewPipeline("windows")
	p.Source("bids", meshflow.FromJSON(schema,
		`{"auction":1,"date_time":"2026-12-01T10:11:09.999Z"}`,
		`{"auction":2,"date_time":"2026-12-01T10:11:10Z"}`,
		`{"auction":3,"date_time":"2026-12-01T10:11:19.5Z"}`,
	)).
		Map("window", meshflow.Set("window", meshflow.Col("date_time").Truncate(10*time.Second))).
		ProjectWith("shape", []string{"auction", "window"}, meshflow.Parallelism(1)).
		To("out", meshflow.Print(os.Stdout, meshflow.JSONLines))
	if err := meshflow.Run(context.Background(), p, meshflow.WithDataDir(dir)); err != nil {
		fmt.Println(err)
	}
	// Output:
	// {"auction":1,"window":"2026-12-01T10:11:00Z"}
	// {"auction":2,"window":"2026-12-01T10:11:10Z"}
	// {"auction":3,"window":"2026-12-01T10:11:10Z"}
}
