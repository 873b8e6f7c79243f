package cli

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/spf13/cobra"

	"github.com/meshflow/meshflow/messages"
)

// outputFormat is the value of --output.
type outputFormat string

const (
	outputTable outputFormat = "table"
	outputJSON  outputFormat = "json"
)

func (o *outputFormat) String() string { return string(*o) }
func (o *outputFormat) Type() string   { return "table|json" }
func (o *outputFormat) Set(s string) error {
	switch f := outputFormat(strings.ToLower(s)); f {
	case outputTable, outputJSON:
		*o = f
		return nil
	}
	return fmt.Errorf("want table or json, got %q", s)
}

// addOutputFlag registers --output/-o on cmd, defaulting to table.
func addOutputFlag(cmd *cobra.Command) *outputFormat {
	o := outputTable
	cmd.Flags().VarP(&o, "output", "o", "output format: table (aligned columns) or json (one object per line)")
	return &o
}

// rowPrinter prints rows: Arrow batches, and JSON objects that are rows
// already. It buffers; Flush writes everything printed so far.
type rowPrinter interface {
	// Batch prints the rows of rec. It does not retain rec.
	Batch(rec arrow.RecordBatch) error
	// Object prints one JSON object as a row.
	Object(obj []byte) error
	Flush() error
}

// newRowPrinter returns the printer for format writing to w.
func newRowPrinter(w io.Writer, format outputFormat) rowPrinter {
	if format == outputJSON {
		return &jsonPrinter{w: bufio.NewWriter(w)}
	}
	return newTablePrinter(w)
}

// jsonPrinter prints JSON lines: one object per row.
type jsonPrinter struct {
	w      *bufio.Writer
	schema *arrow.Schema
	enc    *messages.JSONRowEncoder
	buf    []byte
}

func (p *jsonPrinter) Batch(rec arrow.RecordBatch) error {
	if p.enc == nil || !p.schema.Equal(rec.Schema()) {
		enc, err := messages.NewJSONRowEncoder(rec.Schema())
		if err != nil {
			return fmt.Errorf("print rows: %w", err)
		}
		p.enc, p.schema = enc, rec.Schema()
	}
	for row := range int(rec.NumRows()) {
		p.buf = append(p.enc.AppendRow(p.buf[:0], rec, row), '\n')
		if _, err := p.w.Write(p.buf); err != nil {
			return err
		}
	}
	return nil
}

func (p *jsonPrinter) Object(obj []byte) error {
	obj = bytes.TrimSpace(obj)
	if _, err := p.w.Write(obj); err != nil {
		return err
	}
	return p.w.WriteByte('\n')
}

func (p *jsonPrinter) Flush() error { return p.w.Flush() }

// tablePrinter prints aligned columns under a header. Columns are aligned
// within each Flush; across flushes they keep the widest width seen so far,
// so a stream of small flushes stays aligned unless a wider value arrives.
type tablePrinter struct {
	tw      *tabwriter.Writer
	header  []string // columns of the current header
	widths  []int
	cells   []string
	objKeys []string // columns of JSON-object rows, from the first object
}

func newTablePrinter(w io.Writer) *tablePrinter {
	return &tablePrinter{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
}

func (p *tablePrinter) Batch(rec arrow.RecordBatch) error {
	fields := rec.Schema().Fields()
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.Name
	}
	if err := p.setHeader(names); err != nil {
		return err
	}
	for row := range int(rec.NumRows()) {
		p.cells = p.cells[:0]
		for _, col := range rec.Columns() {
			p.cells = append(p.cells, formatValue(col, row))
		}
		if err := p.writeRow(p.cells); err != nil {
			return err
		}
	}
	return nil
}

func (p *tablePrinter) Object(obj []byte) error {
	keys, vals, err := parseObject(obj)
	if err != nil {
		// Not a row: print it on a line of its own, outside the columns.
		if err := p.tw.Flush(); err != nil {
			return err
		}
		_, err := p.tw.Write([]byte(cellText(string(bytes.TrimSpace(obj))) + "\n"))
		return err
	}
	if p.objKeys == nil {
		p.objKeys = keys
		if p.objKeys == nil {
			p.objKeys = []string{}
		}
	}
	if err := p.setHeader(p.objKeys); err != nil {
		return err
	}
	p.cells = p.cells[:0]
	for _, k := range p.objKeys {
		cell := "NULL"
		for i, have := range keys {
			if have == k {
				cell = formatJSONValue(vals[i])
				break
			}
		}
		p.cells = append(p.cells, cell)
	}
	return p.writeRow(p.cells)
}

func (p *tablePrinter) Flush() error { return p.tw.Flush() }

// setHeader prints a header when the columns change.
func (p *tablePrinter) setHeader(names []string) error {
	if p.header != nil && equalStrings(p.header, names) {
		return nil
	}
	if p.header != nil {
		// A new table: flush the old one and leave a blank line.
		if err := p.tw.Flush(); err != nil {
			return err
		}
		if _, err := p.tw.Write([]byte("\n")); err != nil {
			return err
		}
	}
	p.header = append(p.header[:0:0], names...)
	p.widths = make([]int, len(names))
	return p.writeRow(names)
}

func (p *tablePrinter) writeRow(cells []string) error {
	var line []byte
	for i, c := range cells {
		if n := utf8.RuneCountInString(c); n > p.widths[i] {
			p.widths[i] = n
		}
		line = append(line, c...)
		if i < len(cells)-1 {
			for n := utf8.RuneCountInString(c); n < p.widths[i]; n++ {
				line = append(line, ' ')
			}
			line = append(line, '\t')
		}
	}
	line = append(line, '\n')
	_, err := p.tw.Write(line)
	return err
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// formatValue formats row i of arr for a table cell.
func formatValue(arr arrow.Array, i int) string {
	if arr.IsNull(i) {
		return "NULL"
	}
	switch a := arr.(type) {
	case *array.String:
		return cellText(a.Value(i))
	case *array.LargeString:
		return cellText(a.Value(i))
	case *array.StringView:
		return cellText(a.Value(i))
	case *array.Binary:
		return base64.StdEncoding.EncodeToString(a.Value(i))
	case *array.LargeBinary:
		return base64.StdEncoding.EncodeToString(a.Value(i))
	case *array.Boolean:
		return strconv.FormatBool(a.Value(i))
	case *array.Int8:
		return strconv.FormatInt(int64(a.Value(i)), 10)
	case *array.Int16:
		return strconv.FormatInt(int64(a.Value(i)), 10)
	case *array.Int32:
		return strconv.FormatInt(int64(a.Value(i)), 10)
	case *array.Int64:
		return strconv.FormatInt(a.Value(i), 10)
	case *array.Uint8:
		return strconv.FormatUint(uint64(a.Value(i)), 10)
	case *array.Uint16:
		return strconv.FormatUint(uint64(a.Value(i)), 10)
	case *array.Uint32:
		return strconv.FormatUint(uint64(a.Value(i)), 10)
	case *array.Uint64:
		return strconv.FormatUint(a.Value(i), 10)
	case *array.Float32:
		return formatFloat(float64(a.Value(i)), 32)
	case *array.Float64:
		return formatFloat(a.Value(i), 64)
	case *array.Timestamp:
		return formatTimestamp(a.Value(i), a.DataType().(*arrow.TimestampType))
	case *array.Date32:
		return a.Value(i).ToTime().Format(time.DateOnly)
	case *array.Date64:
		return a.Value(i).ToTime().Format(time.DateOnly)
	case *array.Duration:
		unit := a.DataType().(*arrow.DurationType).Unit
		return (time.Duration(a.Value(i)) * unit.Multiplier()).String()
	default:
		return cellText(arr.ValueStr(i))
	}
}

func formatFloat(f float64, bits int) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(f, 'f', -1, bits)
}

// formatTimestamp formats ts in RFC 3339 with as many fraction digits as
// the unit has, in the type's time zone; a timestamp without a zone prints
// without offset.
func formatTimestamp(ts arrow.Timestamp, dt *arrow.TimestampType) string {
	layout := "2006-01-02T15:04:05"
	switch dt.Unit {
	case arrow.Millisecond:
		layout += ".000"
	case arrow.Microsecond:
		layout += ".000000"
	case arrow.Nanosecond:
		layout += ".000000000"
	}
	t := ts.ToTime(dt.Unit)
	if dt.TimeZone == "" {
		return t.Format(layout)
	}
	if loc, err := dt.GetZone(); err == nil && loc != nil {
		t = t.In(loc)
	}
	return t.Format(layout + "Z07:00")
}

// cellText keeps a value on one line and free of tabs, which would break
// the columns.
func cellText(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return s
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

// parseObject splits a JSON object into its keys, in order, and raw values.
func parseObject(data []byte) (keys []string, vals []json.RawMessage, err error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, nil, fmt.Errorf("not a JSON object: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, nil, errors.New("not a JSON object")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, fmt.Errorf("not a JSON object: %w", err)
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, fmt.Errorf("not a JSON object: %w", err)
		}
		keys = append(keys, key)
		vals = append(vals, v)
	}
	if _, err := dec.Token(); err != nil {
		return nil, nil, fmt.Errorf("not a JSON object: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, errors.New("not a JSON object: data after the object")
	}
	return keys, vals, nil
}

// formatJSONValue formats a JSON value for a table cell: strings without
// quotes, null as NULL, anything else as compact JSON.
func formatJSONValue(v json.RawMessage) string {
	v = bytes.TrimSpace(v)
	switch {
	case len(v) == 0 || string(v) == "null":
		return "NULL"
	case v[0] == '"':
		var s string
		if err := json.Unmarshal(v, &s); err == nil {
			return cellText(s)
		}
	case v[0] == '{' || v[0] == '[':
		var b bytes.Buffer
		if err := json.Compact(&b, v); err == nil {
			return cellText(b.String())
		}
	}
	return cellText(string(v))
}
