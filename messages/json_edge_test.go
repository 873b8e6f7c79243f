package messages_test

// Events that must either flow unchanged through decode → encode → decode
// or be refused, one event at a time, with a reason.

import (
	"bytes"
	"encoding/json"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/messages"
)

// decodeOne decodes one event into a one-row batch of schema.
func decodeOne(t testing.TB, mem memory.Allocator, schema *arrow.Schema, event string) (arrow.RecordBatch, error) {
	t.Helper()
	dec, err := messages.NewJSONDecoder(mem, schema)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Release()
	if err := dec.Append([]byte(event)); err != nil {
		return nil, err
	}
	return dec.NewBatch(), nil
}

// roundTrip decodes event, encodes the row, decodes that and encodes it
// again; it fails unless both decoded rows are equal and both encodings
// the same. It returns the first encoding.
func roundTrip(t *testing.T, schema *arrow.Schema, event string) string {
	t.Helper()
	mem := newMem(t)
	rec, err := decodeOne(t, mem, schema, event)
	if err != nil {
		t.Fatalf("%.200s: %v", event, err)
	}
	defer rec.Release()
	out := row(t, rec, 0)
	if !json.Valid([]byte(out)) {
		t.Fatalf("encoder wrote invalid JSON %.200s", out)
	}
	again, err := decodeOne(t, mem, schema, out)
	if err != nil {
		t.Fatalf("re-decoding %.200s: %v", out, err)
	}
	defer again.Release()
	if !array.RecordEqual(rec, again) && !array.RecordApproxEqual(rec, again, array.WithNaNsEqual(true)) {
		t.Fatalf("round trip changed %.200s into %.200s", out, row(t, again, 0))
	}
	if out2 := row(t, again, 0); out2 != out {
		t.Fatalf("encodings differ: %.200s then %.200s", out, out2)
	}
	return out
}

func TestJSONNonFiniteFloats(t *testing.T) {
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "f", Type: arrow.PrimitiveTypes.Float64}, // not nullable
		{Name: "f32", Type: arrow.PrimitiveTypes.Float32, Nullable: true},
	}, nil)
	cases := []struct{ event, want string }{
		{`{"f":"NaN","f32":"nan"}`, `{"f":"NaN","f32":"NaN"}`},
		{`{"f":"Infinity","f32":"+Inf"}`, `{"f":"Infinity","f32":"Infinity"}`},
		{`{"f":"-Infinity","f32":"-inf"}`, `{"f":"-Infinity","f32":"-Infinity"}`},
		{`{"f":-0,"f32":"-0.0"}`, `{"f":-0,"f32":-0}`},
		{`{"f":1.7976931348623157e308,"f32":3.4028235e38}`, `{"f":1.7976931348623157e+308,"f32":3.4028235e+38}`},
		{`{"f":5e-324,"f32":1e-45}`, `{"f":5e-324,"f32":1e-45}`},
	}
	for _, tc := range cases {
		t.Run(tc.event, func(t *testing.T) {
			if got := roundTrip(t, schema, tc.event); got != tc.want {
				t.Fatalf("encoded %s, want %s", got, tc.want)
			}
		})
	}
	t.Run("negative zero keeps its sign", func(t *testing.T) {
		mem := newMem(t)
		rec, err := decodeOne(t, mem, schema, roundTrip(t, schema, `{"f":-0}`))
		if err != nil {
			t.Fatal(err)
		}
		defer rec.Release()
		if f := rec.Column(0).(*array.Float64).Value(0); f != 0 || !math.Signbit(f) {
			t.Fatalf("got %v", f)
		}
	})
	refused := []struct{ event, want string }{
		{`{"f":1e309}`, `"1e309" is not a float64`},
		{`{"f":0,"f32":3.5e38}`, `"3.5e38" is not a float32`},
		{`{"f":"NaNa"}`, `"NaNa" is not a float64`},
		{`{"f":null}`, `field "f": null, and it is not nullable`},
	}
	for _, tc := range refused {
		t.Run(tc.event, func(t *testing.T) {
			mem := newMem(t)
			if _, err := decodeOne(t, mem, schema, tc.event); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// TestJSONEncoderNonFiniteNeverNull: NaN and infinities built directly
// into a batch (as Arrow IPC input can carry them) are written as strings,
// never as null.
func TestJSONEncoderNonFiniteNeverNull(t *testing.T) {
	mem := newMem(t)
	schema := arrow.NewSchema([]arrow.Field{{Name: "f", Type: arrow.PrimitiveTypes.Float64}}, nil)
	b := array.NewFloat64Builder(mem)
	b.AppendValues([]float64{math.NaN(), math.Inf(1), math.Inf(-1), math.Float64frombits(0x7ff8000000000001)}, nil)
	arr := b.NewArray()
	b.Release()
	rec := array.NewRecordBatch(schema, []arrow.Array{arr}, int64(arr.Len()))
	arr.Release()
	defer rec.Release()
	want := []string{`{"f":"NaN"}`, `{"f":"Infinity"}`, `{"f":"-Infinity"}`, `{"f":"NaN"}`}
	for i, w := range want {
		if got := row(t, rec, i); got != w {
			t.Errorf("row %d: %s, want %s", i, got, w)
		}
	}
}

// Timestamps and dates: exact bounds of what RFC 3339 and "2006-01-02"
// carry, in every unit, as strings and as integers.
func TestJSONTimeBounds(t *testing.T) {
	ts := func(u arrow.TimeUnit) *arrow.Schema {
		return arrow.NewSchema([]arrow.Field{{Name: "t", Type: &arrow.TimestampType{Unit: u, TimeZone: "UTC"}}}, nil)
	}
	date32 := arrow.NewSchema([]arrow.Field{{Name: "t", Type: arrow.FixedWidthTypes.Date32}}, nil)
	date64 := arrow.NewSchema([]arrow.Field{{Name: "t", Type: arrow.FixedWidthTypes.Date64}}, nil)
	cases := []struct {
		name   string
		schema *arrow.Schema
		value  string // JSON value of "t"
		want   string // encoded "t" if accepted
		err    string // error if refused
	}{
		{"s last", ts(arrow.Second), `"9999-12-31T23:59:59.999999999Z"`, `"9999-12-31T23:59:59Z"`, ""},
		{"s first", ts(arrow.Second), `"0000-01-01T00:00:00Z"`, `"0000-01-01T00:00:00Z"`, ""},
		{"s year 10000", ts(arrow.Second), `"10000-01-01T00:00:00Z"`, "", "is not an RFC 3339 time"},
		{"s year 10000 by offset", ts(arrow.Second), `"9999-12-31T23:59:59-00:01"`, "", "is outside the times 0000-01-01T00:00:00Z to 9999-12-31T23:59:59Z that a timestamp[s] carries"},
		{"s year -1 by offset", ts(arrow.Second), `"0000-01-01T00:00:00+00:01"`, "", "is outside the times"},
		{"s last int", ts(arrow.Second), `253402300799`, `"9999-12-31T23:59:59Z"`, ""},
		{"s past last int", ts(arrow.Second), `253402300800`, "", `"253402300800" s is outside the times 0000-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z`},
		{"s first int", ts(arrow.Second), `"-62167219200"`, `"0000-01-01T00:00:00Z"`, ""},
		{"s before first int", ts(arrow.Second), `-62167219201`, "", "is outside the times"},
		{"s int64 max", ts(arrow.Second), `9223372036854775807`, "", "is outside the times"},
		{"s int64 overflow", ts(arrow.Second), `9223372036854775808`, "", "is not an int64"},
		{"ms last", ts(arrow.Millisecond), `"9999-12-31T23:59:59.999999999Z"`, `"9999-12-31T23:59:59.999Z"`, ""},
		{"ms last int", ts(arrow.Millisecond), `253402300799999`, `"9999-12-31T23:59:59.999Z"`, ""},
		{"ms past last int", ts(arrow.Millisecond), `253402300800000`, "", "is outside the times"},
		{"ms first int", ts(arrow.Millisecond), `-62167219200000`, `"0000-01-01T00:00:00Z"`, ""},
		{"ms before first int", ts(arrow.Millisecond), `-62167219200001`, "", "is outside the times"},
		{"µs last", ts(arrow.Microsecond), `"9999-12-31T23:59:59.999999999Z"`, `"9999-12-31T23:59:59.999999Z"`, ""},
		{"µs last int", ts(arrow.Microsecond), `253402300799999999`, `"9999-12-31T23:59:59.999999Z"`, ""},
		{"µs past last int", ts(arrow.Microsecond), `253402300800000000`, "", "is outside the times"},
		{"µs first int", ts(arrow.Microsecond), `-62167219200000000`, `"0000-01-01T00:00:00Z"`, ""},
		{"µs before first int", ts(arrow.Microsecond), `-62167219200000001`, "", "is outside the times"},
		{"ns last", ts(arrow.Nanosecond), `"2262-04-11T23:47:16.854775807Z"`, `"2262-04-11T23:47:16.854775807Z"`, ""},
		{"ns past last", ts(arrow.Nanosecond), `"2262-04-11T23:47:16.854775808Z"`, "", "is outside the times 1677-09-21T00:12:43.145224192Z to 2262-04-11T23:47:16.854775807Z that a timestamp[ns] carries"},
		{"ns first", ts(arrow.Nanosecond), `"1677-09-21T00:12:43.145224192Z"`, `"1677-09-21T00:12:43.145224192Z"`, ""},
		{"ns before first", ts(arrow.Nanosecond), `"1677-09-21T00:12:43.145224191Z"`, "", "is outside the times"},
		{"ns year 9999", ts(arrow.Nanosecond), `"9999-12-31T23:59:59.999999999Z"`, "", "is outside the times"},
		{"ns int64 max", ts(arrow.Nanosecond), `9223372036854775807`, `"2262-04-11T23:47:16.854775807Z"`, ""},
		{"ns int64 min", ts(arrow.Nanosecond), `"-9223372036854775808"`, `"1677-09-21T00:12:43.145224192Z"`, ""},
		{"ns int64 overflow", ts(arrow.Nanosecond), `-9223372036854775809`, "", "is not an int64"},
		{"date32 last", date32, `"9999-12-31"`, `"9999-12-31"`, ""},
		{"date32 first", date32, `"0000-01-01"`, `"0000-01-01"`, ""},
		{"date32 year 10000", date32, `"10000-01-01"`, "", "is not an int32"},
		{"date32 last int", date32, `2932896`, `"9999-12-31"`, ""},
		{"date32 past last int", date32, `2932897`, "", `"2932897" days is outside the dates 0000-01-01 to 9999-12-31`},
		{"date32 first int", date32, `-719528`, `"0000-01-01"`, ""},
		{"date32 before first int", date32, `-719529`, "", "is outside the dates"},
		{"date32 int32 overflow", date32, `2147483648`, "", "is not an int32"},
		{"date64 last", date64, `"9999-12-31"`, `"9999-12-31"`, ""},
		{"date64 last int", date64, `253402214400000`, `"9999-12-31"`, ""},
		{"date64 past last int", date64, `253402300800000`, "", "is outside the dates"},
		{"date64 first int", date64, `-62167219200000`, `"0000-01-01"`, ""},
		{"date64 before first int", date64, `-62167305600000`, "", "is outside the dates"},
		{"date64 part of a day", date64, `86400001`, "", `"86400001" ms is not a whole number of days`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			event := `{"t":` + tc.value + `}`
			if tc.err != "" {
				mem := newMem(t)
				_, err := decodeOne(t, mem, tc.schema, event)
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.HasPrefix(err.Error(), `field "t": `) {
					t.Fatalf("got %v, want %q", err, tc.err)
				}
				return
			}
			if got := roundTrip(t, tc.schema, event); got != `{"t":`+tc.want+`}` {
				t.Fatalf("encoded %s, want %s", got, tc.want)
			}
		})
	}
}

// TestJSONEncoderTimesOutOfRange: values that other sources can put in a
// batch but RFC 3339 cannot write are written as integers in the unit.
func TestJSONEncoderTimesOutOfRange(t *testing.T) {
	mem := newMem(t)
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "s", Type: arrow.FixedWidthTypes.Timestamp_s},
		{Name: "us", Type: arrow.FixedWidthTypes.Timestamp_us},
		{Name: "d32", Type: arrow.FixedWidthTypes.Date32},
		{Name: "d64", Type: arrow.FixedWidthTypes.Date64},
	}, nil)
	b := array.NewRecordBuilder(mem, schema)
	defer b.Release()
	b.Field(0).(*array.TimestampBuilder).AppendValues([]arrow.Timestamp{253402300800, -62167219201, 0}, nil)
	b.Field(1).(*array.TimestampBuilder).AppendValues([]arrow.Timestamp{math.MaxInt64, math.MinInt64, 1}, nil)
	b.Field(2).(*array.Date32Builder).AppendValues([]arrow.Date32{2932897, -719529, 1}, nil)
	b.Field(3).(*array.Date64Builder).AppendValues([]arrow.Date64{1, 253402300800000, 86400000}, nil)
	rec := b.NewRecordBatch()
	defer rec.Release()
	want := []string{
		`{"s":253402300800,"us":9223372036854775807,"d32":2932897,"d64":1}`,
		`{"s":-62167219201,"us":-9223372036854775808,"d32":-719529,"d64":253402300800000}`,
		`{"s":"1970-01-01T00:00:00Z","us":"1970-01-01T00:00:00.000001Z","d32":"1970-01-02","d64":"1970-01-02"}`,
	}
	for i, w := range want {
		if got := row(t, rec, i); got != w {
			t.Errorf("row %d: %s, want %s", i, got, w)
		}
	}
}

func TestJSONIntegersExact(t *testing.T) {
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "i64", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "i8", Type: arrow.PrimitiveTypes.Int8, Nullable: true},
		{Name: "u64", Type: arrow.PrimitiveTypes.Uint64, Nullable: true},
		{Name: "u8", Type: arrow.PrimitiveTypes.Uint8, Nullable: true},
	}, nil)
	cases := []struct {
		field, value string
		want         string // decimal value if accepted
		err          string
	}{
		{"i64", `9223372036854775807`, "9223372036854775807", ""},
		{"i64", `9223372036854775807.0`, "9223372036854775807", ""},
		{"i64", `9.223372036854775807e18`, "9223372036854775807", ""},
		{"i64", `"-9.223372036854775808E+18"`, "-9223372036854775808", ""},
		{"i64", `9007199254740993.0`, "9007199254740993", ""},
		{"i64", `9007199254740993.5`, "", `"9007199254740993.5" is not an int64`},
		{"i64", `9223372036854775808`, "", "is not an int64"},
		{"i64", `9223372036854775807.5`, "", "is not an int64"},
		{"i64", `1e19`, "", "is not an int64"},
		{"i64", `123456789012345678901234567890`, "", "is not an int64"},
		{"i64", `1e999999999999999999999`, "", "is not an int64"},
		{"i64", `1e-999999999999999999999`, "", "is not an int64"},
		{"i64", `0e999999999999999999999`, "0", ""},
		{"i64", `-0`, "0", ""},
		{"i64", `-0.0e-5`, "0", ""},
		{"i64", `1500e-3`, "", "is not an int64"},
		{"i64", `15000e-3`, "15", ""},
		{"i64", `"+42"`, "42", ""},
		{"i64", `"NaN"`, "", "is not an int64"},
		{"i64", `"Infinity"`, "", "is not an int64"},
		{"i64", `"0x10"`, "", "is not an int64"},
		{"i64", `"1_000"`, "", "is not an int64"},
		{"i64", `" 1"`, "", "is not an int64"},
		{"i64", `"1."`, "1", ""},
		{"i64", `"."`, "", "is not an int64"},
		{"i64", `"1e"`, "", "is not an int64"},
		{"i8", `127.0`, "127", ""},
		{"i8", `-1.28e2`, "-128", ""},
		{"i8", `128`, "", "is not an int8"},
		{"i8", `-129.0`, "", "is not an int8"},
		{"u64", `18446744073709551615`, "18446744073709551615", ""},
		{"u64", `18446744073709551615.0`, "18446744073709551615", ""},
		{"u64", `1.8446744073709551615e19`, "18446744073709551615", ""},
		{"u64", `18446744073709551616`, "", "is not a uint64"},
		{"u64", `1.8446744073709551616e19`, "", "is not a uint64"},
		{"u64", `-0`, "0", ""},
		{"u64", `-1`, "", "is not a uint64"},
		{"u64", `-1e0`, "", "is not a uint64"},
		{"u8", `2.55e2`, "255", ""},
		{"u8", `256`, "", "is not a uint8"},
	}
	for _, tc := range cases {
		t.Run(tc.field+"="+tc.value, func(t *testing.T) {
			event := `{"` + tc.field + `":` + tc.value + `}`
			if tc.err != "" {
				mem := newMem(t)
				_, err := decodeOne(t, mem, schema, event)
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, want %q", err, tc.err)
				}
				return
			}
			out := roundTrip(t, schema, event)
			var m map[string]json.Number
			d := json.NewDecoder(strings.NewReader(out))
			d.UseNumber()
			if err := d.Decode(&m); err != nil {
				t.Fatal(err)
			}
			if got := m[tc.field].String(); got != tc.want {
				t.Fatalf("decoded %s, want %s", got, tc.want)
			}
		})
	}
}

// TestJSONDeepNesting: a million levels of arrays or objects, as a known
// field, an unknown one, or the event itself, are refused at depth 512,
// without reading further, and the events around them still decode.
func TestJSONDeepNesting(t *testing.T) {
	const depth = 1 << 20
	arrays := strings.Repeat("[", depth) + strings.Repeat("]", depth)
	objects := strings.Repeat(`{"a":`, depth) + "1" + strings.Repeat("}", depth)
	open := strings.Repeat("[", depth) // never closed
	cases := []struct{ name, event string }{
		{"arrays in a known field", `{"s":` + arrays + `,"id":1}`},
		{"objects in a known field", `{"s":` + objects + `,"id":1}`},
		{"arrays in an unknown field", `{"x":` + arrays + `,"id":1}`},
		{"objects in an unknown field", `{"x":` + objects + `,"id":1}`},
		{"unclosed arrays", `{"x":` + open},
	}
	where := regexp.MustCompile(`at byte (\d+): nested deeper than 512`)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mem := newMem(t)
			dec, err := messages.NewJSONDecoder(mem, jsonSchema)
			if err != nil {
				t.Fatal(err)
			}
			defer dec.Release()
			payload := `{"id":1}` + "\n" + tc.event + "\n" + `{"id":2}`
			var reasons []string
			n := dec.AppendLines([]byte(payload), func(ev []byte, err error) { reasons = append(reasons, err.Error()) })
			rec := dec.NewBatch()
			defer rec.Release()
			if n != 2 || len(reasons) != 1 {
				t.Fatalf("%d good events, reasons %q", n, reasons)
			}
			m := where.FindStringSubmatch(reasons[0])
			if m == nil {
				t.Fatalf("reason %q", reasons[0])
			}
			// The decoder stopped at the 513th level, never scanning on.
			if at, _ := strconv.Atoi(m[1]); at > 6*513+10 {
				t.Fatalf("stopped at byte %d", at)
			}
			if got := rec.Column(0).(*array.Int64).Int64Values(); got[0] != 1 || got[1] != 2 {
				t.Fatalf("good events %v", got)
			}
		})
	}
}

// TestJSONStringsDoNotGrow: escapes are written back in their shortest
// form, so a string read and written again is never longer than it was.
func TestJSONStringsDoNotGrow(t *testing.T) {
	schema := arrow.NewSchema([]arrow.Field{{Name: "s", Type: arrow.BinaryTypes.String}}, nil)
	cases := []struct{ name, in, out string }{
		{"backspace", `\b`, `\b`},
		{"form feed", `\f`, `\f`},
		{"newline", `\n`, `\n`},
		{"return", `\r`, `\r`},
		{"tab", `\t`, `\t`},
		{"quote", `\"`, `\"`},
		{"backslash", `\\`, `\\`},
		{"slash", `\/`, `/`},
		{"short escapes written long", `\u0008\u000c\u000A\u000d\u0009\u0022\u005c`, `\b\f\n\r\t\"\\`},
		{"nul", `\u0000`, `\u0000`},
		{"unit separator", `\u001f`, `\u001f`},
		{"delete", `\u007f`, "\x7f"},
		{"line separator", `\u2028`, "\u2028"},
		{"lone surrogate", `\ud800`, "\uFFFD"},
		{"surrogate pair", `\ud83d\ude00`, "😀"},
		{"raw text", "é😀\u2028<&>", "é😀\u2028<&>"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := roundTrip(t, schema, `{"s":"`+tc.in+`"}`)
			if want := `{"s":"` + tc.out + `"}`; got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
			if len(tc.out) > len(tc.in) {
				t.Fatalf("%q grew to %q", tc.in, tc.out)
			}
		})
	}
	t.Run("4 MiB of backspaces", func(t *testing.T) {
		in := `{"s":"` + strings.Repeat(`\b`, 2<<20) + `"}`
		if got := roundTrip(t, schema, in); got != in {
			t.Fatalf("re-encoded to %d bytes from %d", len(got), len(in))
		}
	})
}

// TestJSONEncoderInvalidUTF8: invalid UTF-8 (which only batches from other
// sources carry) becomes one U+FFFD per invalid byte, and the output is
// valid JSON that decodes to that text.
func TestJSONEncoderInvalidUTF8(t *testing.T) {
	mem := newMem(t)
	schema := arrow.NewSchema([]arrow.Field{{Name: "s", Type: arrow.BinaryTypes.String}}, nil)
	b := array.NewStringBuilder(mem)
	b.Append("a\xffb\xe2\x82c\x00\b")
	arr := b.NewArray()
	b.Release()
	rec := array.NewRecordBatch(schema, []arrow.Array{arr}, 1)
	arr.Release()
	defer rec.Release()
	got := row(t, rec, 0)
	if want := "{\"s\":\"a\uFFFDb\uFFFD\uFFFDc\\u0000\\b\"}"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	again, err := decodeOne(t, mem, schema, got)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Release()
	if s := again.Column(0).(*array.String).Value(0); s != "a\uFFFDb\uFFFD\uFFFDc\x00\b" {
		t.Fatalf("decoded %q", s)
	}
}

// TestJSONErrorsAreShort: a huge value or key is quoted in errors cut to
// 64 bytes, so a reason always fits in a header.
func TestJSONErrorsAreShort(t *testing.T) {
	huge := strings.Repeat("9", 1<<20)
	hugeKey := strings.Repeat("k", 1<<20)
	cases := []struct{ name, event, want string }{
		{"int", `{"id":"` + huge + `"}`, `field "id": "9999999999999999999999999999999999999999999999999999999999999999"… (1048576 bytes) is not an int64`},
		{"float", `{"id":1,"f":"x` + huge + `"}`, "(1048577 bytes) is not a float64"},
		{"time", `{"id":1,"ts":"x` + huge + `"}`, "(1048577 bytes) is not an RFC 3339 time"},
		{"uint", `{"id":1,"u16":"` + huge + `"}`, "(1048576 bytes) is not a uint16"},
		{"key", `{"` + hugeKey + `" 1}`, "(1048576 bytes)"},
		{"duplicate key", `{"id":1,"id":2}`, `field "id" appears twice`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mem := newMem(t)
			_, err := decodeOne(t, mem, jsonSchema, tc.event)
			if err == nil || !strings.Contains(err.Error(), tc.want) || len(err.Error()) > 200 {
				t.Fatalf("got %.300v (%d bytes), want %q", err, len(fmtErr(err)), tc.want)
			}
		})
	}
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestJSONOddButValid: events that are unusual but valid flow unchanged.
func TestJSONOddButValid(t *testing.T) {
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "s", Type: arrow.BinaryTypes.String},
		{Name: "bin", Type: arrow.BinaryTypes.Binary, Nullable: true},
	}, nil)
	cases := []struct{ name, event, want string }{
		{"nul in a string", `{"s":"a\u0000b"}`, `{"s":"a\u0000b","bin":null}`},
		{"nul in a key is another key", `{"s":"x","s\u0000":5}`, `{"s":"x","bin":null}`},
		{"empty string", `{"s":""}`, `{"s":"","bin":null}`},
		{"bytes of every value", `{"s":"","bin":"` + allBytesBase64() + `"}`, `{"s":"","bin":"` + allBytesBase64() + `"}`},
		{"base64 across lines", `{"s":"","bin":"AA\r\nEC"}`, `{"s":"","bin":"AAEC"}`},
		{"noncharacters", `{"s":"\uffff\ufffe\ud83f\udfff"}`, "{\"s\":\"\uffff\ufffe\U0001FFFF\",\"bin\":null}"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := roundTrip(t, schema, tc.event); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func allBytesBase64() string {
	var b bytes.Buffer
	for i := range 256 {
		b.WriteByte(byte(i))
	}
	raw, _ := json.Marshal(b.Bytes()) // encoding/json writes []byte as base64
	return string(raw[1 : len(raw)-1])
}

// FuzzJSONStringRoundTrip: any Go string, valid UTF-8 or not, written by
// the encoder is valid JSON that encoding/json and the decoder both read
// as the string with each invalid byte replaced by U+FFFD.
func FuzzJSONStringRoundTrip(f *testing.F) {
	for _, s := range []string{"", "plain", "\b\f\n\r\t\"\\/", "\x00\x01\x1f\x7f", "\xff\xfe", "a\xe2\x82", "é😀\u2028", "\xed\xa0\x80"} {
		f.Add(s)
	}
	schema := arrow.NewSchema([]arrow.Field{{Name: "s", Type: arrow.BinaryTypes.String}}, nil)
	enc, err := messages.NewJSONRowEncoder(schema)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
		defer mem.AssertSize(t, 0)
		b := array.NewStringBuilder(mem)
		b.Append(s)
		arr := b.NewArray()
		b.Release()
		rec := array.NewRecordBatch(schema, []arrow.Array{arr}, 1)
		arr.Release()
		defer rec.Release()
		out := enc.AppendRow(nil, rec, 0)
		if !json.Valid(out) {
			t.Fatalf("invalid JSON %q from %q", out, s)
		}
		want := replaceInvalid(s)
		var m map[string]string
		if err := json.Unmarshal(out, &m); err != nil || m["s"] != want {
			t.Fatalf("encoding/json read %q (%v) from %q, want %q", m["s"], err, out, want)
		}
		again, err := decodeOne(t, mem, schema, string(out))
		if err != nil {
			t.Fatalf("decoding %q: %v", out, err)
		}
		defer again.Release()
		if got := again.Column(0).(*array.String).Value(0); got != want {
			t.Fatalf("decoded %q from %q, want %q", got, out, want)
		}
	})
}

// replaceInvalid replaces each byte of invalid UTF-8 with U+FFFD.
func replaceInvalid(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// FuzzJSONStringNoGrowth: whatever JSON string the decoder accepts, the
// encoder writes it back no longer than it came, and as the same text.
func FuzzJSONStringNoGrowth(f *testing.F) {
	for _, s := range []string{`\b\b\b`, `\u0008`, `\ud800`, `\ud83d\ude00`, `\/\"\\`, "é\u2028", `\u0000`} {
		f.Add(s)
	}
	schema := arrow.NewSchema([]arrow.Field{{Name: "s", Type: arrow.BinaryTypes.String}}, nil)
	f.Fuzz(func(t *testing.T, body string) {
		mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
		defer mem.AssertSize(t, 0)
		in := `{"s":"` + body + `"}`
		rec, err := decodeOne(t, mem, schema, in)
		if err != nil {
			return
		}
		defer rec.Release()
		out := row(t, rec, 0)
		if len(out) > len(in) {
			t.Fatalf("%q grew to %q", in, out)
		}
		again, err := decodeOne(t, mem, schema, out)
		if err != nil {
			t.Fatalf("re-decoding %q: %v", out, err)
		}
		defer again.Release()
		if a, b := rec.Column(0).(*array.String).Value(0), again.Column(0).(*array.String).Value(0); a != b {
			t.Fatalf("%q became %q", a, b)
		}
	})
}

// TestJSONEncoderNeverNullForAValue: even given a column of a type its
// schema does not have, the encoder writes a value as a value (its text),
// never as null.
func TestJSONEncoderNeverNullForAValue(t *testing.T) {
	mem := newMem(t)
	enc, err := messages.NewJSONRowEncoder(arrow.NewSchema([]arrow.Field{{Name: "x", Type: arrow.PrimitiveTypes.Int64}}, nil))
	if err != nil {
		t.Fatal(err)
	}
	arr, _, err := array.FromJSON(mem, arrow.FixedWidthTypes.Float16, strings.NewReader(`[1.5, null]`))
	if err != nil {
		t.Fatal(err)
	}
	rec := array.NewRecordBatch(arrow.NewSchema([]arrow.Field{{Name: "x", Type: arrow.FixedWidthTypes.Float16, Nullable: true}}, nil), []arrow.Array{arr}, 2)
	arr.Release()
	defer rec.Release()
	if got := string(enc.AppendRow(nil, rec, 0)); got != `{"x":"1.5"}` {
		t.Fatalf("value written as %s", got)
	}
	if got := string(enc.AppendRow(nil, rec, 1)); got != `{"x":null}` {
		t.Fatalf("null written as %s", got)
	}
}
