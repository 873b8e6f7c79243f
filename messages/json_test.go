package messages_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/messages"
)

var jsonSchema = arrow.NewSchema([]arrow.Field{
	{Name: "id", Type: arrow.PrimitiveTypes.Int64},
	{Name: "i8", Type: arrow.PrimitiveTypes.Int8, Nullable: true},
	{Name: "u16", Type: arrow.PrimitiveTypes.Uint16, Nullable: true},
	{Name: "f", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
	{Name: "f32", Type: arrow.PrimitiveTypes.Float32, Nullable: true},
	{Name: "s", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "ls", Type: arrow.BinaryTypes.LargeString, Nullable: true},
	{Name: "b", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
	{Name: "bin", Type: arrow.BinaryTypes.Binary, Nullable: true},
	{Name: "ts", Type: &arrow.TimestampType{Unit: arrow.Millisecond}, Nullable: true},
	{Name: "d", Type: arrow.FixedWidthTypes.Date32, Nullable: true},
}, nil)

// row renders row i of rec as JSON through the row encoder.
func row(t testing.TB, rec arrow.RecordBatch, i int) string {
	enc, err := messages.NewJSONRowEncoder(rec.Schema())
	if err != nil {
		t.Fatal(err)
	}
	return string(enc.AppendRow(nil, rec, i))
}

func TestJSONDecoderValues(t *testing.T) {
	cases := []struct {
		name, event, want string
	}{
		{"all null", `{"id":1}`, `{"id":1,"i8":null,"u16":null,"f":null,"f32":null,"s":null,"ls":null,"b":null,"bin":null,"ts":null,"d":null}`},
		{"typed", `{"id":-9223372036854775808,"i8":-128,"u16":65535,"f":1.5e3,"f32":0.25,"s":"a\"\\\n\u00e9\ud83d\ude00","ls":"x","b":true,"bin":"AAEC","ts":"2024-05-01T10:00:01.5Z","d":"2024-02-29"}`,
			`{"id":-9223372036854775808,"i8":-128,"u16":65535,"f":1500,"f32":0.25,"s":"a\"\\\né😀","ls":"x","b":true,"bin":"AAEC","ts":"2024-05-01T10:00:01.5Z","d":"2024-02-29"}`},
		{"strings for numbers", `{"id":"42","i8":"7","u16":"8","f":"2.5","b":"false","ts":"1714557601500","d":"19000"}`,
			`{"id":42,"i8":7,"u16":8,"f":2.5,"f32":null,"s":null,"ls":null,"b":false,"bin":null,"ts":"2024-05-01T10:00:01.5Z","d":"2022-01-08"}`},
		{"integral floats", `{"id":1e3,"i8":12.0}`, `{"id":1000,"i8":12,"u16":null,"f":null,"f32":null,"s":null,"ls":null,"b":null,"bin":null,"ts":null,"d":null}`},
		{"empty strings are null except for strings", `{"id":2,"f":"","s":"","ts":""}`, `{"id":2,"i8":null,"u16":null,"f":null,"f32":null,"s":"","ls":null,"b":null,"bin":null,"ts":null,"d":null}`},
		{"unknown keys skipped", `{"x":{"y":[1,{"z":null}]},"id":3,"w":"q"}`, `{"id":3,"i8":null,"u16":null,"f":null,"f32":null,"s":null,"ls":null,"b":null,"bin":null,"ts":null,"d":null}`},
		{"escaped key", `{"\u0069d":4}`, `{"id":4,"i8":null,"u16":null,"f":null,"f32":null,"s":null,"ls":null,"b":null,"bin":null,"ts":null,"d":null}`},
		{"white space", " \t{ \"id\" : 7 }\r\n", `{"id":7,"i8":null,"u16":null,"f":null,"f32":null,"s":null,"ls":null,"b":null,"bin":null,"ts":null,"d":null}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mem := newMem(t)
			dec, err := messages.NewJSONDecoder(mem, jsonSchema)
			if err != nil {
				t.Fatal(err)
			}
			defer dec.Release()
			if err := dec.Append([]byte(tc.event)); err != nil {
				t.Fatal(err)
			}
			rec := dec.NewBatch()
			defer rec.Release()
			if got := row(t, rec, 0); got != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestJSONDecoderRejects(t *testing.T) {
	cases := []struct {
		name, event, want string
	}{
		{"not an object", `[1]`, "not a JSON object"},
		{"truncated", `{"id":1`, "unexpected end"},
		{"trailing data", `{"id":1} x`, "after the object"},
		{"missing required", `{"s":"a"}`, `field "id": missing, and it is not nullable`},
		{"null required", `{"id":null}`, `field "id": null, and it is not nullable`},
		{"int overflow", `{"id":1,"i8":128}`, `field "i8": "128" is not an int8`},
		{"fraction for int", `{"id":1.5}`, `"1.5" is not an int64`},
		{"negative uint", `{"id":1,"u16":-1}`, `is not a uint16`},
		{"string for number", `{"id":"abc"}`, `"abc" is not an int64`},
		{"number for string", `{"id":1,"s":5}`, `field "s": expected utf8, got a number`},
		{"object for int", `{"id":{}}`, "got an object or array"},
		{"bad bool", `{"id":1,"b":"yes"}`, `field "b": expected bool, got a string`},
		{"bad time", `{"id":1,"ts":"yesterday"}`, "not an RFC 3339 time"},
		{"bad base64", `{"id":1,"bin":"!!"}`, "not base64"},
		{"bad escape", `{"id":1,"s":"\q"}`, "bad escape"},
		{"control char", "{\"id\":1,\"s\":\"a\x01\"}", "control character"},
		{"invalid utf8", "{\"id\":1,\"s\":\"\xff\"}", "not valid UTF-8"},
		{"leading zero", `{"id":01}`, "expected ',' or '}'"},
		{"bare word", `{"id":nul}`, "expected null"},
		{"duplicate key", `{"id":5,"id":6}`, `field "id" appears twice`},
		{"duplicate escaped key", `{"id":5,"\u0069d":6}`, `field "id" appears twice`},
		{"deep nesting", `{"x":` + strings.Repeat("[", 600) + strings.Repeat("]", 600) + `,"id":1}`, "nested deeper"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mem := newMem(t)
			dec, err := messages.NewJSONDecoder(mem, jsonSchema)
			if err != nil {
				t.Fatal(err)
			}
			defer dec.Release()
			if err := dec.Append([]byte(`{"id":100,"s":"before"}`)); err != nil {
				t.Fatal(err)
			}
			err = dec.Append([]byte(tc.event))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %v, want one containing %q", err, tc.want)
			}
			// The bad event left nothing behind.
			if err := dec.Append([]byte(`{"id":101}`)); err != nil {
				t.Fatal(err)
			}
			rec := dec.NewBatch()
			defer rec.Release()
			if rec.NumRows() != 2 || row(t, rec, 0) != row(t, rec, 0) ||
				!strings.HasPrefix(row(t, rec, 1), `{"id":101,"i8":null`) || strings.Contains(row(t, rec, 1), "before") {
				t.Fatalf("batch after a bad event: %d rows, %s / %s", rec.NumRows(), row(t, rec, 0), row(t, rec, 1))
			}
		})
	}
}

func TestJSONDecoderUnsupportedType(t *testing.T) {
	s := arrow.NewSchema([]arrow.Field{{Name: "l", Type: arrow.ListOf(arrow.PrimitiveTypes.Int64)}}, nil)
	if _, err := messages.NewJSONDecoder(memory.DefaultAllocator, s); err == nil || !strings.Contains(err.Error(), `field "l"`) {
		t.Fatalf("got %v, want an error naming field l", err)
	}
}

func TestAppendLines(t *testing.T) {
	s := arrow.NewSchema([]arrow.Field{{Name: "n", Type: arrow.PrimitiveTypes.Int64}}, nil)
	cases := []struct {
		name    string
		payload string
		rows    []int64
		bad     []string
	}{
		{"one event", `{"n":1}`, []int64{1}, nil},
		{"json lines", "{\"n\":1}\n{\"n\":2}\n\n{\"n\":3}\n", []int64{1, 2, 3}, nil},
		{"pretty printed", "{\n  \"n\": 1\n}\n{\n  \"n\": 2\n}", []int64{1, 2}, nil},
		{"bad lines", "{\"n\":1}\n{\"n\":\"x\"}\nnot json\n{\"n\":4}", []int64{1, 4}, []string{`{"n":"x"}`, "not json"}},
		{"empty", "  \n", nil, []string{"  \n"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mem := newMem(t)
			dec, err := messages.NewJSONDecoder(mem, s)
			if err != nil {
				t.Fatal(err)
			}
			defer dec.Release()
			var bad []string
			n := dec.AppendLines([]byte(tc.payload), func(ev []byte, err error) { bad = append(bad, string(ev)) })
			rec := dec.NewBatch()
			defer rec.Release()
			got := rec.Column(0).(*array.Int64).Int64Values()
			if n != len(tc.rows) || fmt.Sprint(got) != fmt.Sprint(tc.rows) || fmt.Sprint(bad) != fmt.Sprint(tc.bad) {
				t.Fatalf("n=%d rows %v bad %q; want rows %v bad %q", n, got, bad, tc.rows, tc.bad)
			}
		})
	}
}

// randomBatch builds a batch of jsonSchema with random values and nulls.
func randomBatch(mem memory.Allocator, rng *rand.Rand, n int) arrow.RecordBatch {
	b := array.NewRecordBuilder(mem, jsonSchema)
	defer b.Release()
	str := func() string {
		r := make([]rune, rng.IntN(8))
		for i := range r {
			alphabet := []rune("aé\"\\\n\t😀z\x01")
			r[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return string(r)
	}
	for range n {
		b.Field(0).(*array.Int64Builder).Append(rng.Int64() - rng.Int64())
		for f := 1; f < len(b.Fields()); f++ {
			if rng.IntN(4) == 0 {
				b.Field(f).AppendNull()
				continue
			}
			switch fb := b.Field(f).(type) {
			case *array.Int8Builder:
				fb.Append(int8(rng.Int()))
			case *array.Uint16Builder:
				fb.Append(uint16(rng.Int()))
			case *array.Float64Builder:
				fb.Append(rng.NormFloat64() * 1e6)
			case *array.Float32Builder:
				fb.Append(float32(rng.NormFloat64()))
			case *array.StringBuilder:
				fb.Append(str())
			case *array.LargeStringBuilder:
				fb.Append(str())
			case *array.BooleanBuilder:
				fb.Append(rng.IntN(2) == 0)
			case *array.BinaryBuilder:
				fb.Append([]byte(str()))
			case *array.TimestampBuilder:
				fb.Append(arrow.Timestamp(rng.Int64N(4e12) - 1e12))
			case *array.Date32Builder:
				fb.Append(arrow.Date32(rng.Int32N(40000) - 10000))
			}
		}
	}
	return b.NewRecordBatch()
}

// TestJSONRoundTrip: encoding rows and decoding them gives the same batch.
func TestJSONRoundTrip(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("MESHFLOW_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (rerun with MESHFLOW_SEED=%[1]d)", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	mem := newMem(t)
	rec := randomBatch(mem, rng, 2000)
	defer rec.Release()
	enc, err := messages.NewJSONRowEncoder(jsonSchema)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := messages.NewJSONDecoder(mem, jsonSchema)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Release()
	var buf []byte
	for i := range int(rec.NumRows()) {
		buf = enc.AppendRow(buf[:0], rec, i)
		if !json.Valid(buf) {
			t.Fatalf("row %d: encoder wrote invalid JSON %s", i, buf)
		}
		if err := dec.Append(buf); err != nil {
			t.Fatalf("row %d: %v: %s", i, err, buf)
		}
	}
	got := dec.NewBatch()
	defer got.Release()
	if !array.RecordApproxEqual(got, rec, array.WithNaNsEqual(true)) {
		for i := range int(rec.NumRows()) {
			if a, b := row(t, rec, i), row(t, got, i); a != b {
				t.Fatalf("row %d: sent %s, got %s", i, a, b)
			}
		}
		t.Fatal("round trip changed the batch")
	}
}

// FuzzJSONDecoder: no input panics; what the decoder accepts is valid JSON
// and survives a round trip through the encoder.
func FuzzJSONDecoder(f *testing.F) {
	for _, s := range []string{`{"id":1,"s":"x","ts":"2024-05-01T10:00:01Z"}`, `{"id":"2","f":1e400}`, `{"\u0069d":3,"x":[{}]}`, `{"id":1,"s":"\ud83d\ude00"}`,
		`{"id":1,"f":"NaN","f32":"Infinity"}`, `{"id":9.2233720368547758e18}`, `{"id":1,"ts":"0000-01-01T00:00:00+00:01"}`, `{"id":1,"ts":253402300799999,"d":-719528}`,
		`{"id":1,"id":2}`, `{"id":1,"s":"\b\f\u0000\u001f"}`, `{"id":1,"u16":"6.5535e4"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, event []byte) {
		mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
		defer mem.AssertSize(t, 0)
		dec, err := messages.NewJSONDecoder(mem, jsonSchema)
		if err != nil {
			t.Fatal(err)
		}
		defer dec.Release()
		if err := dec.Append(event); err != nil {
			return
		}
		if !json.Valid(event) {
			t.Fatalf("accepted invalid JSON %q", event)
		}
		rec := dec.NewBatch()
		defer rec.Release()
		out := row(t, rec, 0)
		if err := dec.Append([]byte(out)); err != nil {
			t.Fatalf("re-decoding %s: %v", out, err)
		}
		again := dec.NewBatch()
		defer again.Release()
		if got := row(t, again, 0); got != out {
			t.Fatalf("round trip: %s became %s", out, got)
		}
	})
}

func TestCSVToJSON(t *testing.T) {
	cases := []struct {
		name, csv string
		want      []string
		err       string
	}{
		{"basic", "id,name\n1,a\n2,\"b,c\"\n", []string{`{"id":"1","name":"a"}`, `{"id":"2","name":"b,c"}`}, ""},
		{"empty cell", "id,name\n3,\n", []string{`{"id":"3","name":""}`}, ""},
		{"quotes and newlines", "q\n\"say \"\"hi\"\"\nnow\"\n", []string{`{"q":"say \"hi\"\nnow"}`}, ""},
		{"header only", "id\n", nil, ""},
		{"nothing", "", nil, ""},
		{"ragged", "a,b\n1,2\n3\n", []string{`{"a":"1","b":"2"}`}, "wrong number of fields"},
		{"duplicate header", "a,a\n1,2\n", nil, `column "a" appears twice`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			err := messages.CSVToJSON(strings.NewReader(tc.csv), func(ev []byte) error {
				got = append(got, string(ev))
				return nil
			})
			if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("error %v, want %q", err, tc.err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// CSV cells feed a typed schema through the JSON decoder.
func TestCSVIntoDecoder(t *testing.T) {
	mem := newMem(t)
	dec, err := messages.NewJSONDecoder(mem, jsonSchema)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Release()
	err = messages.CSVToJSON(strings.NewReader("id,f,b,ts,s\n1,2.5,true,2024-05-01T10:00:00Z,x\n2,,,,\n"), dec.Append)
	if err != nil {
		t.Fatal(err)
	}
	rec := dec.NewBatch()
	defer rec.Release()
	if got := row(t, rec, 1); got != `{"id":2,"i8":null,"u16":null,"f":null,"f32":null,"s":"","ls":null,"b":null,"bin":null,"ts":null,"d":null}` {
		t.Fatalf("row 1: %s", got)
	}
	if got := row(t, rec, 0); !strings.Contains(got, `"f":2.5`) || !strings.Contains(got, `"b":true`) {
		t.Fatalf("row 0: %s", got)
	}
}

func FuzzCSVToJSON(f *testing.F) {
	f.Add("a,b\n1,\"x\"\"y\"\n")
	f.Fuzz(func(t *testing.T, in string) {
		_ = messages.CSVToJSON(strings.NewReader(in), func(ev []byte) error {
			if !json.Valid(ev) {
				t.Fatalf("invalid JSON %q from %q", ev, in)
			}
			return nil
		})
	})
}
