package queries_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/examples/nexmark/queries"
	"github.com/meshflow/meshflow/internal/nexmark"
	"github.com/meshflow/meshflow/messages"
)

const benchEvents = 200_000

// benchFile writes benchEvents generated events to a file.
func benchFile(b *testing.B) string {
	b.Helper()
	g := nexmark.NewGenerator(nexmark.Config{Seed: 1})
	var buf bytes.Buffer
	var line []byte
	for range benchEvents {
		line = append(g.NextEventJSON(line[:0]), '\n')
		buf.Write(line)
	}
	path := filepath.Join(b.TempDir(), "events.jsonl")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(buf.Len()))
	return path
}

// BenchmarkQ0File runs q0 in process on a file of generated events, as
// `nexmark run --query q0 --input FILE` does, writing to io.Discard.
// BenchmarkQ0FileReference does the same work without the engine: it
// decodes the file with the same JSON decoder into batches of the same
// schema, keeps the bids and writes q0's columns with the same encoder,
// in one goroutine.
func BenchmarkQ0File(b *testing.B) {
	path := benchFile(b)
	dir := b.TempDir()
	for b.Loop() {
		p, err := queries.Build("q0", queries.FromFile(path), meshflow.Print(io.Discard, meshflow.JSONLines))
		if err != nil {
			b.Fatal(err)
		}
		if err := meshflow.Run(context.Background(), p, meshflow.WithDataDir(dir), meshflow.WithoutCheckpoints()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)*benchEvents/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkQ0FileReference(b *testing.B) {
	path := benchFile(b)
	mem := memory.NewGoAllocator()
	cols := []int{}
	for _, c := range []string{"auction", "bidder", "price", "date_time", "extra"} {
		cols = append(cols, nexmark.EventSchema.FieldIndices(c)[0])
	}
	fields := make([]arrow.Field, len(cols))
	for i, c := range cols {
		fields[i] = nexmark.EventSchema.Field(c)
	}
	outSchema := arrow.NewSchema(fields, nil)
	enc, err := messages.NewJSONRowEncoder(outSchema)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		dec, err := messages.NewJSONDecoder(mem, nexmark.EventSchema)
		if err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var out []byte
		flush := func() {
			rec := dec.NewBatch()
			types := rec.Column(0).(*array.String)
			proj := make([]arrow.Array, len(cols))
			for i, c := range cols {
				proj[i] = rec.Column(c)
			}
			shaped := array.NewRecordBatch(outSchema, proj, rec.NumRows())
			out = out[:0]
			for i := range int(rec.NumRows()) {
				if types.Value(i) == "bid" {
					out = append(enc.AppendRow(out, shaped, i), '\n')
				}
			}
			io.Discard.Write(out)
			shaped.Release()
			rec.Release()
		}
		for sc.Scan() {
			if err := dec.Append(sc.Bytes()); err != nil {
				b.Fatal(err)
			}
			if dec.Len() == 8192 {
				flush()
			}
		}
		if dec.Len() > 0 {
			flush()
		}
		dec.Release()
		f.Close()
	}
	b.ReportMetric(float64(b.N)*benchEvents/b.Elapsed().Seconds(), "events/s")
}
