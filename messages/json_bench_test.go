package messages_test

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/meshflow/meshflow/messages"
)

// benchEncode encodes every row of rec per iteration; b.N scales the rows.
func benchEncode(b *testing.B, rec arrow.RecordBatch) {
	enc, err := messages.NewJSONRowEncoder(rec.Schema())
	if err != nil {
		b.Fatal(err)
	}
	var buf []byte
	n := int(rec.NumRows())
	for i := range n {
		buf = enc.AppendRow(buf[:0], rec, i)
	}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		buf = enc.AppendRow(buf[:0], rec, i%n)
	}
}

// BenchmarkJSONRowEncoder: one row of mixed columns (jsonSchema) per op.
func BenchmarkJSONRowEncoder(b *testing.B) {
	mem := newMem(b)
	rec := randomBatch(mem, rand.New(rand.NewPCG(1, 2)), 4096)
	defer rec.Release()
	benchEncode(b, rec)
}

// stringCases are 1 KiB strings in three alphabets: plain ASCII, text with
// some escapes, and control characters only.
var stringCases = []struct{ name, unit string }{
	{"ascii", "abcdefghijklmnop"},
	{"text", "caf\u00e9 \"quoted\"\n\tline, na\u00efve \U0001F600 end\\"},
	{"controls", "\b\f\n\r\t\x00\x01\x1f"},
}

func kibString(unit string) string { return strings.Repeat(unit, 1024/len(unit)+1)[:1024] }

// BenchmarkJSONRowEncoderStrings: one row of a single 1 KiB string per op.
func BenchmarkJSONRowEncoderStrings(b *testing.B) {
	schema := arrow.NewSchema([]arrow.Field{{Name: "s", Type: arrow.BinaryTypes.String}}, nil)
	for _, tc := range stringCases {
		b.Run(tc.name, func(b *testing.B) {
			mem := newMem(b)
			bld := array.NewStringBuilder(mem)
			bld.Append(kibString(tc.unit))
			arr := bld.NewArray()
			bld.Release()
			rec := array.NewRecordBatch(schema, []arrow.Array{arr}, 1)
			arr.Release()
			defer rec.Release()
			benchEncode(b, rec)
		})
	}
}

// BenchmarkJSONStringReference: the same strings as
// BenchmarkJSONRowEncoderStrings written by encoding/json (without HTML
// escaping, into a reused buffer), as {"s":...}: the reference for the
// row encoder's string escaping.
func BenchmarkJSONStringReference(b *testing.B) {
	for _, tc := range stringCases {
		b.Run(tc.name, func(b *testing.B) {
			row := struct {
				S string `json:"s"`
			}{kibString(tc.unit)}
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			if err := enc.Encode(row); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(buf.Len() - 1))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				buf.Reset()
				if err := enc.Encode(row); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
