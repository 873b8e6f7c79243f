package messages

import (
	"encoding/base64"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// JSONRowEncoder writes rows of record batches as JSON objects, in the
// forms [JSONDecoder] reads back as the same values: timestamps as RFC 3339
// strings in UTC, dates as "2006-01-02", binary as base64, NaN and
// infinities as the strings "NaN", "Infinity" and "-Infinity" (JSON has no
// numbers for them; null would lose them and break non-nullable columns).
// Only a null is written as null.
//
// Strings are written with the short escapes \b, \f, \n, \r, \t, \" and
// \\, other control characters as \u00XX, and everything else as it is,
// so a JSON string read by [JSONDecoder] and written again is never longer
// than it was (4 MiB of \b escapes stay 4 MiB). Invalid
// UTF-8 (which [JSONDecoder] refuses, but Arrow IPC input can carry) is
// written as U+FFFD, one replacement character per invalid byte.
//
// Values that batches from other sources can hold but RFC 3339 and
// "2006-01-02" cannot write are written as integers in the column's unit:
// timestamps and dates outside the years 0000 to 9999, and date64 values
// that are not a whole number of days. [JSONDecoder] refuses these.
type JSONRowEncoder struct {
	schema *arrow.Schema
	keys   [][]byte // `"name":` per field, the first without the comma
	codes  []colCode
	units  []arrow.TimeUnit
}

// NewJSONRowEncoder returns an encoder for batches of schema. It fails for
// column types it cannot write.
func NewJSONRowEncoder(schema *arrow.Schema) (*JSONRowEncoder, error) {
	if schema == nil {
		return nil, errors.New("messages: JSON encoder needs a schema")
	}
	e := &JSONRowEncoder{schema: schema}
	var errs []error
	for i, f := range schema.Fields() {
		c, err := newJSONColumn(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var k []byte
		if i > 0 {
			k = append(k, ',')
		}
		k = appendJSONString(k, f.Name)
		e.keys = append(e.keys, append(k, ':'))
		e.codes = append(e.codes, c.code)
		e.units = append(e.units, c.unit)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("messages: JSON encoder: %w", errors.Join(errs...))
	}
	return e, nil
}

// AppendRow appends row of rec as one JSON object (no newline) to buf.
// rec must have the encoder's schema.
func (e *JSONRowEncoder) AppendRow(buf []byte, rec arrow.RecordBatch, row int) []byte {
	buf = append(buf, '{')
	for i, col := range rec.Columns() {
		buf = append(buf, e.keys[i]...)
		if col.IsNull(row) {
			buf = append(buf, "null"...)
			continue
		}
		buf = e.appendValue(buf, i, col, row)
	}
	return append(buf, '}')
}

func (e *JSONRowEncoder) appendValue(buf []byte, i int, col arrow.Array, row int) []byte {
	switch a := col.(type) {
	case *array.Int8:
		return strconv.AppendInt(buf, int64(a.Value(row)), 10)
	case *array.Int16:
		return strconv.AppendInt(buf, int64(a.Value(row)), 10)
	case *array.Int32:
		return strconv.AppendInt(buf, int64(a.Value(row)), 10)
	case *array.Int64:
		return strconv.AppendInt(buf, a.Value(row), 10)
	case *array.Uint8:
		return strconv.AppendUint(buf, uint64(a.Value(row)), 10)
	case *array.Uint16:
		return strconv.AppendUint(buf, uint64(a.Value(row)), 10)
	case *array.Uint32:
		return strconv.AppendUint(buf, uint64(a.Value(row)), 10)
	case *array.Uint64:
		return strconv.AppendUint(buf, a.Value(row), 10)
	case *array.Float32:
		return appendFloat(buf, float64(a.Value(row)), 32)
	case *array.Float64:
		return appendFloat(buf, a.Value(row), 64)
	case *array.Boolean:
		return strconv.AppendBool(buf, a.Value(row))
	case *array.String:
		return appendJSONString(buf, a.Value(row))
	case *array.LargeString:
		return appendJSONString(buf, a.Value(row))
	case *array.Binary:
		return appendBase64(buf, a.Value(row))
	case *array.LargeBinary:
		return appendBase64(buf, a.Value(row))
	case *array.Timestamp:
		v := int64(a.Value(row))
		if lo, hi := timestampBounds(e.units[i]); v < lo || v > hi {
			return strconv.AppendInt(buf, v, 10)
		}
		buf = append(buf, '"')
		buf = toTime(v, e.units[i]).UTC().AppendFormat(buf, time.RFC3339Nano)
		return append(buf, '"')
	case *array.Date32:
		v := int64(a.Value(row))
		if v < minDay || v > maxDay {
			return strconv.AppendInt(buf, v, 10)
		}
		buf = append(buf, '"')
		buf = a.Value(row).ToTime().AppendFormat(buf, time.DateOnly)
		return append(buf, '"')
	case *array.Date64:
		v := int64(a.Value(row))
		if v%msPerDay != 0 || v < minDay*msPerDay || v > maxDay*msPerDay {
			return strconv.AppendInt(buf, v, 10)
		}
		buf = append(buf, '"')
		buf = a.Value(row).ToTime().AppendFormat(buf, time.DateOnly)
		return append(buf, '"')
	}
	// Not reached for a batch of the encoder's schema; never write a
	// value as null.
	return appendJSONString(buf, col.ValueStr(row))
}

func toTime(v int64, u arrow.TimeUnit) time.Time {
	switch u {
	case arrow.Second:
		return time.Unix(v, 0)
	case arrow.Millisecond:
		return time.UnixMilli(v)
	case arrow.Microsecond:
		return time.UnixMicro(v)
	default:
		return time.Unix(0, v)
	}
}

// appendFloat writes f as encoding/json does; NaN and infinities, which
// JSON numbers cannot carry, as the strings strconv.ParseFloat reads.
func appendFloat(buf []byte, f float64, bitSize int) []byte {
	switch {
	case math.IsNaN(f):
		return append(buf, `"NaN"`...)
	case math.IsInf(f, 1):
		return append(buf, `"Infinity"`...)
	case math.IsInf(f, -1):
		return append(buf, `"-Infinity"`...)
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	return strconv.AppendFloat(buf, f, format, -1, bitSize)
}

func appendBase64(buf []byte, b []byte) []byte {
	buf = append(buf, '"')
	buf = base64.StdEncoding.AppendEncode(buf, b)
	return append(buf, '"')
}

const hexDigits = "0123456789abcdef"

// jsonEscape is, for each ASCII byte, 0 when it stands for itself in a
// JSON string, the letter of its short escape, or 'u' for \u00XX.
var jsonEscape = func() (t [utf8.RuneSelf]byte) {
	for c := range 0x20 {
		t[c] = 'u'
	}
	t['\b'], t['\f'], t['\n'], t['\r'], t['\t'] = 'b', 'f', 'n', 'r', 't'
	t['"'], t['\\'] = '"', '\\'
	return t
}()

// appendJSONString writes s as a JSON string (see [JSONRowEncoder] for
// the escapes); each byte of invalid UTF-8 becomes U+FFFD.
func appendJSONString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			esc := jsonEscape[c]
			if esc == 0 {
				i++
				continue
			}
			buf = append(buf, s[start:i]...)
			if esc == 'u' {
				buf = append(buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			} else {
				buf = append(buf, '\\', esc)
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			buf = append(buf, s[start:i]...)
			buf = append(buf, "\uFFFD"...)
			i++
			start = i
			continue
		}
		i += size
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}

// CSVToJSON reads CSV with a header row and calls emit with one JSON object
// per record, every value a JSON string (keys from the header). The column
// types come from the schema of the reading source, which accepts numbers,
// booleans and times as strings and reads an empty cell as null. emit must
// not retain the event. Errors name the CSV line.
func CSVToJSON(r io.Reader, emit func(event []byte) error) error {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err == io.EOF {
		return nil
	}
	if err != nil {
		return fmt.Errorf("csv header: %w", err)
	}
	keys := make([][]byte, len(header))
	seen := make(map[string]bool, len(header))
	for i, h := range header {
		if h == "" {
			return fmt.Errorf("csv header: column %d has no name", i+1)
		}
		if seen[h] {
			return fmt.Errorf("csv header: column %q appears twice", h)
		}
		seen[h] = true
		var k []byte
		if i > 0 {
			k = append(k, ',')
		}
		keys[i] = append(appendJSONString(k, h), ':')
	}
	var buf []byte
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("csv: %w", err)
		}
		buf = append(buf[:0], '{')
		for i, v := range rec {
			buf = append(buf, keys[i]...)
			buf = appendJSONString(buf, v)
		}
		buf = append(buf, '}')
		if err := emit(buf); err != nil {
			line, _ := cr.FieldPos(0)
			return fmt.Errorf("csv line %d: %w", line, err)
		}
	}
}
