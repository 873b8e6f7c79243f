package messages

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// colCode is the decoding strategy of one column.
type colCode uint8

const (
	codeInt colCode = iota + 1
	codeUint
	codeFloat
	codeBool
	codeString
	codeBinary
	codeTimestamp
	codeDate32
	codeDate64
)

// jsonColumn stages the values of one column in Go memory until NewBatch
// copies them into Arrow buffers in one pass.
type jsonColumn struct {
	field arrow.Field
	code  colCode
	bytes int // value width of fixed-width columns
	unit  arrow.TimeUnit
	valid []bool
	nulls int
	i64   []int64
	u64   []uint64
	f64   []float64
	b     []bool
	offs  []int64 // variable-length: end offset of each value in data
	data  []byte
}

func newJSONColumn(f arrow.Field) (jsonColumn, error) {
	c := jsonColumn{field: f}
	switch t := f.Type.(type) {
	case *arrow.Int8Type, *arrow.Int16Type, *arrow.Int32Type, *arrow.Int64Type:
		c.code, c.bytes = codeInt, t.(arrow.FixedWidthDataType).BitWidth()/8
	case *arrow.Uint8Type, *arrow.Uint16Type, *arrow.Uint32Type, *arrow.Uint64Type:
		c.code, c.bytes = codeUint, t.(arrow.FixedWidthDataType).BitWidth()/8
	case *arrow.Float32Type, *arrow.Float64Type:
		c.code, c.bytes = codeFloat, t.(arrow.FixedWidthDataType).BitWidth()/8
	case *arrow.BooleanType:
		c.code = codeBool
	case *arrow.StringType, *arrow.LargeStringType:
		c.code = codeString
	case *arrow.BinaryType, *arrow.LargeBinaryType:
		c.code = codeBinary
	case *arrow.TimestampType:
		c.code, c.bytes, c.unit = codeTimestamp, 8, t.Unit
	case *arrow.Date32Type:
		c.code, c.bytes = codeDate32, 4
	case *arrow.Date64Type:
		c.code, c.bytes = codeDate64, 8
	default:
		return c, fmt.Errorf("field %q: type %s is not supported in JSON events", f.Name, f.Type)
	}
	return c, nil
}

// jsonKind is the JSON kind of a parsed value.
type jsonKind uint8

const (
	jsMissing jsonKind = iota
	jsNull
	jsTrue
	jsFalse
	jsNumber
	jsString
	jsNested // object or array
)

func (k jsonKind) String() string {
	return [...]string{"missing", "null", "true", "false", "a number", "a string", "an object or array"}[k]
}

// slot is the parsed, not yet converted value of one field in one event.
type slot struct {
	kind       jsonKind
	gen        uint32
	start, end int  // in the event, or in scratch when escaped
	escaped    bool // text lives in scratch
}

// value is a converted value, ready to be appended.
type value struct {
	null bool
	i    int64
	u    uint64
	f    float64
	b    bool
	s    []byte
}

// JSONDecoder decodes JSON events (one object each) into record batches of
// a declared schema. Each event is appended whole or not at all: a bad
// event leaves the batch being built as it was.
//
// Accepted per column type: integers as JSON numbers or numeric strings,
// in decimal notation and exactly (1e3 and 12.0 are integers, 1.5 and
// 9007199254740993.5 are not; a value outside the column's type is an
// error, never wrapped or rounded); floats as JSON numbers or numeric
// strings, including "NaN", "Infinity" and "-Infinity" (any case, as
// strconv.ParseFloat reads them), a value beyond the type's range being an
// error; booleans as true/false or "true"/"false"; strings as JSON strings
// (valid UTF-8, \u0000 included); binary as base64 strings; timestamps as
// RFC 3339 strings or integers in the column's unit; dates as "2006-01-02"
// or integers (days for date32, milliseconds for date64, a whole number of
// days). Timestamps and dates must lie within 0000-01-01T00:00:00Z ..
// 9999-12-31T23:59:59.999999999Z, the years RFC 3339 can write (and
// timestamp[ns] within int64: 1677-09-21 to 2262-04-11), so that every
// value decoded is written back by [JSONRowEncoder] in a form this decoder
// reads as the same value. An empty string is null for every type
// but string and binary. Keys outside the schema are ignored; a key of the
// schema given twice is an error; a missing key or a null is null, and an
// error for a non-nullable field.
//
// A value nested deeper than 512 levels is refused as the 513th opens,
// without reading further. Errors quote at most 64 bytes of the offending
// text, so a reason stays short whatever the event.
//
// A JSONDecoder is not safe for concurrent use.
type JSONDecoder struct {
	mem     memory.Allocator
	schema  *arrow.Schema
	index   map[string]int
	cols    []jsonColumn
	slots   []slot
	vals    []value
	gen     uint32
	scratch []byte
	keybuf  []byte
	rows    int
}

// NewJSONDecoder returns a decoder producing batches of schema, allocated
// from mem. It fails for column types JSON events cannot carry.
func NewJSONDecoder(mem memory.Allocator, schema *arrow.Schema) (*JSONDecoder, error) {
	if schema == nil {
		return nil, errors.New("messages: JSON decoder needs a schema")
	}
	d := &JSONDecoder{mem: mem, schema: schema, index: make(map[string]int, schema.NumFields())}
	var errs []error
	for i, f := range schema.Fields() {
		c, err := newJSONColumn(f)
		if err != nil {
			errs = append(errs, err)
		}
		if _, dup := d.index[f.Name]; dup {
			errs = append(errs, fmt.Errorf("field %q appears twice", f.Name))
		}
		d.index[f.Name] = i
		d.cols = append(d.cols, c)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("messages: JSON decoder: %w", errors.Join(errs...))
	}
	d.slots = make([]slot, len(d.cols))
	d.vals = make([]value, len(d.cols))
	return d, nil
}

// Schema is the schema of the batches built.
func (d *JSONDecoder) Schema() *arrow.Schema { return d.schema }

// Len is the number of events in the batch being built.
func (d *JSONDecoder) Len() int { return d.rows }

// Append decodes one event and adds it to the batch being built. On error
// nothing is added.
func (d *JSONDecoder) Append(event []byte) error {
	d.gen++
	if d.gen == 0 { // wrapped: forget stale generations
		clear(d.slots)
		d.gen = 1
	}
	d.scratch = d.scratch[:0]
	p := parser{in: event}
	if err := d.parseObject(&p); err != nil {
		return err
	}
	// Convert every field before touching the columns.
	for i := range d.cols {
		c := &d.cols[i]
		s := d.slots[i]
		if s.gen != d.gen {
			s = slot{kind: jsMissing}
		}
		v, err := d.convert(c, s, event)
		if err != nil {
			return fmt.Errorf("field %q: %w", c.field.Name, err)
		}
		if v.null && !c.field.Nullable {
			if s.kind == jsMissing {
				return fmt.Errorf("field %q: missing, and it is not nullable", c.field.Name)
			}
			return fmt.Errorf("field %q: null, and it is not nullable", c.field.Name)
		}
		d.vals[i] = v
	}
	for i := range d.cols {
		d.cols[i].push(d.vals[i])
	}
	d.rows++
	return nil
}

// AppendLines appends every event of a message payload and returns how
// many were added. A payload is a sequence of JSON objects separated by
// white space (JSON lines, or pretty-printed objects); when it does not
// parse as such, each non-blank line is one event. bad is called for each
// event that fails, with the reason.
func (d *JSONDecoder) AppendLines(payload []byte, bad func(event []byte, err error)) int {
	n := 0
	add := func(ev []byte) {
		if err := d.Append(ev); err != nil {
			bad(ev, err)
		} else {
			n++
		}
	}
	body := bytes.TrimSpace(payload)
	if len(body) == 0 {
		bad(payload, errors.New("empty event"))
		return 0
	}
	if bytes.IndexByte(body, '\n') < 0 {
		add(body)
		return n
	}
	if spans, ok := splitObjects(body); ok {
		for _, sp := range spans {
			add(body[sp[0]:sp[1]])
		}
		return n
	}
	for len(body) > 0 {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		if line = bytes.TrimSpace(line); len(line) > 0 {
			add(line)
		}
	}
	return n
}

// splitObjects finds the objects of a whitespace-separated sequence, or
// reports false when b is not such a sequence.
func splitObjects(b []byte) ([][2]int, bool) {
	var spans [][2]int
	p := parser{in: b}
	for {
		p.ws()
		if p.pos == len(b) {
			return spans, true
		}
		if b[p.pos] != '{' {
			return nil, false
		}
		start := p.pos
		if err := p.skipValue(0); err != nil {
			return nil, false
		}
		spans = append(spans, [2]int{start, p.pos})
	}
}

// NewBatch hands over the batch built so far (possibly empty) and starts a
// new one.
func (d *JSONDecoder) NewBatch() arrow.RecordBatch {
	arrs := make([]arrow.Array, len(d.cols))
	for i := range d.cols {
		arrs[i] = d.cols[i].build(d.mem, d.rows)
	}
	rec := array.NewRecordBatch(d.schema, arrs, int64(d.rows))
	for _, a := range arrs {
		a.Release()
	}
	d.rows = 0
	return rec
}

// Release drops the events staged and not handed over.
func (d *JSONDecoder) Release() {
	for i := range d.cols {
		d.cols[i].reset()
	}
	d.rows = 0
}

func (d *JSONDecoder) parseObject(p *parser) error {
	p.ws()
	if p.pos >= len(p.in) || p.in[p.pos] != '{' {
		return errors.New("event is not a JSON object")
	}
	p.pos++
	p.ws()
	if p.peek() == '}' {
		p.pos++
	} else {
		for {
			p.ws()
			if p.peek() != '"' {
				return p.errorf("expected a key")
			}
			ks, ke, esc, err := p.str(&d.keybuf, true)
			if err != nil {
				return err
			}
			var key []byte
			if esc {
				key = d.keybuf[ks:ke]
			} else {
				key = p.in[ks:ke]
			}
			p.ws()
			if p.peek() != ':' {
				return p.errorf("expected ':' after key %s", quote(key))
			}
			p.pos++
			p.ws()
			i, known := d.index[string(key)]
			if known && d.slots[i].gen == d.gen {
				return fmt.Errorf("field %s appears twice", quote(key))
			}
			if !known {
				if err := p.skipValue(1); err != nil {
					return err
				}
			} else {
				s := slot{gen: d.gen}
				switch c := p.peek(); {
				case c == '"':
					s.kind = jsString
					s.start, s.end, s.escaped, err = p.str(&d.scratch, false)
				case c == '{' || c == '[':
					s.kind = jsNested
					err = p.skipValue(1)
				case c == 't':
					s.kind, err = jsTrue, p.lit("true")
				case c == 'f':
					s.kind, err = jsFalse, p.lit("false")
				case c == 'n':
					s.kind, err = jsNull, p.lit("null")
				default:
					s.kind = jsNumber
					s.start = p.pos
					err = p.number()
					s.end = p.pos
				}
				if err != nil {
					return err
				}
				d.slots[i] = s
			}
			p.ws()
			switch p.peek() {
			case ',':
				p.pos++
				continue
			case '}':
				p.pos++
			default:
				return p.errorf("expected ',' or '}'")
			}
			break
		}
	}
	p.ws()
	if p.pos != len(p.in) {
		return p.errorf("unexpected data after the object")
	}
	return nil
}

func (d *JSONDecoder) text(s slot, event []byte) []byte {
	if s.escaped {
		return d.scratch[s.start:s.end]
	}
	return event[s.start:s.end]
}

var errEmpty = errors.New("empty")

func (d *JSONDecoder) convert(c *jsonColumn, s slot, event []byte) (value, error) {
	switch s.kind {
	case jsMissing, jsNull:
		return value{null: true}, nil
	case jsNested:
		return value{}, fmt.Errorf("expected %s, got %s", c.field.Type, s.kind)
	}
	var t []byte
	if s.kind == jsNumber || s.kind == jsString {
		t = d.text(s, event)
		if s.kind == jsString && len(t) == 0 && c.code != codeString && c.code != codeBinary {
			return value{null: true}, nil
		}
	}
	mismatch := func() (value, error) {
		return value{}, fmt.Errorf("expected %s, got %s", c.field.Type, s.kind)
	}
	switch c.code {
	case codeString:
		if s.kind != jsString {
			return mismatch()
		}
		return value{s: t}, nil
	case codeBinary:
		if s.kind != jsString {
			return mismatch()
		}
		n := base64.StdEncoding.DecodedLen(len(t))
		start := len(d.scratch)
		d.scratch = append(d.scratch, make([]byte, n)...)
		m, err := base64.StdEncoding.Decode(d.scratch[start:], t)
		if err != nil {
			return value{}, fmt.Errorf("not base64: %w", err)
		}
		return value{s: d.scratch[start : start+m]}, nil
	case codeBool:
		switch {
		case s.kind == jsTrue || (s.kind == jsString && string(t) == "true"):
			return value{b: true}, nil
		case s.kind == jsFalse || (s.kind == jsString && string(t) == "false"):
			return value{b: false}, nil
		}
		return mismatch()
	case codeInt:
		if s.kind != jsNumber && s.kind != jsString {
			return mismatch()
		}
		v, err := parseInt(t, c.bytes*8)
		if err != nil {
			return value{}, err
		}
		return value{i: v}, nil
	case codeDate32, codeDate64:
		if s.kind != jsNumber && s.kind != jsString {
			return mismatch()
		}
		if s.kind == jsString {
			if tm, err := time.Parse(time.DateOnly, string(t)); err == nil {
				days := tm.Unix() / secondsPerDay // time.Parse reads years 0000 to 9999 only
				if c.code == codeDate64 {
					return value{i: days * msPerDay}, nil
				}
				return value{i: days}, nil
			}
		}
		if c.code == codeDate32 {
			v, err := parseInt(t, 32)
			if err != nil {
				return value{}, err
			}
			if v < minDay || v > maxDay {
				return value{}, fmt.Errorf("%s days is outside the dates 0000-01-01 to 9999-12-31 that JSON events carry", quote(t))
			}
			return value{i: v}, nil
		}
		v, err := parseInt(t, 64)
		if err != nil {
			return value{}, err
		}
		if v%msPerDay != 0 {
			return value{}, fmt.Errorf("%s ms is not a whole number of days", quote(t))
		}
		if v < minDay*msPerDay || v > maxDay*msPerDay {
			return value{}, fmt.Errorf("%s ms is outside the dates 0000-01-01 to 9999-12-31 that JSON events carry", quote(t))
		}
		return value{i: v}, nil
	case codeUint:
		if s.kind != jsNumber && s.kind != jsString {
			return mismatch()
		}
		v, err := strconv.ParseUint(string(t), 10, c.bytes*8)
		if err != nil {
			n, ok := integral(t)
			if ok {
				v, err = strconv.ParseUint(n, 10, c.bytes*8)
			}
			if !ok || err != nil {
				return value{}, fmt.Errorf("%s is not a uint%d", quote(t), c.bytes*8)
			}
		}
		return value{u: v}, nil
	case codeFloat:
		if s.kind != jsNumber && s.kind != jsString {
			return mismatch()
		}
		f, err := strconv.ParseFloat(string(t), c.bytes*8)
		if err != nil {
			return value{}, fmt.Errorf("%s is not a float%d", quote(t), c.bytes*8)
		}
		return value{f: f}, nil
	case codeTimestamp:
		lo, hi := timestampBounds(c.unit)
		switch s.kind {
		case jsNumber, jsString:
			v, err := parseInt(t, 64)
			if err == nil {
				if v < lo || v > hi {
					return value{}, fmt.Errorf("%s %s is outside the times 0000-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z that RFC 3339 can write", quote(t), unitName(c.unit))
				}
				return value{i: v}, nil
			}
			if s.kind == jsNumber {
				return value{}, err
			}
			tm, err := time.Parse(time.RFC3339Nano, string(t))
			if err != nil {
				return value{}, fmt.Errorf("%s is not an RFC 3339 time", quote(t))
			}
			v, ok := fromTime(tm, c.unit)
			if !ok {
				return value{}, fmt.Errorf("%s is outside the times %s to %s that a timestamp[%s] carries", quote(t),
					toTime(lo, c.unit).UTC().Format(time.RFC3339Nano), toTime(hi, c.unit).UTC().Format(time.RFC3339Nano), c.unit)
			}
			return value{i: v}, nil
		}
		return mismatch()
	}
	return mismatch()
}

const (
	secondsPerDay = 86400
	msPerDay      = secondsPerDay * 1000
	// The first and last seconds RFC 3339 can write (four-digit years).
	minSecond = -62167219200 // 0000-01-01T00:00:00Z
	maxSecond = 253402300799 // 9999-12-31T23:59:59Z
	minDay    = minSecond / secondsPerDay
	maxDay    = maxSecond / secondsPerDay
)

// timestampBounds is the range of a timestamp column that RFC 3339 can
// write: years 0000 to 9999, within int64.
func timestampBounds(u arrow.TimeUnit) (lo, hi int64) {
	switch u {
	case arrow.Second:
		return minSecond, maxSecond
	case arrow.Millisecond:
		return minSecond * 1e3, maxSecond*1e3 + 999
	case arrow.Microsecond:
		return minSecond * 1e6, maxSecond*1e6 + 999_999
	default: // int64 nanoseconds span 1677 to 2262
		return math.MinInt64, math.MaxInt64
	}
}

func unitName(u arrow.TimeUnit) string {
	return [...]string{"s", "ms", "µs", "ns"}[u]
}

// fromTime converts t to the unit, reporting false when it lies outside
// timestampBounds.
func fromTime(t time.Time, u arrow.TimeUnit) (int64, bool) {
	sec := t.Unix()
	if sec < minSecond || sec > maxSecond {
		return 0, false
	}
	switch u {
	case arrow.Second:
		return sec, true
	case arrow.Millisecond:
		return t.UnixMilli(), true
	case arrow.Microsecond:
		return t.UnixMicro(), true
	default:
		if t.Before(time.Unix(0, math.MinInt64)) || t.After(time.Unix(0, math.MaxInt64)) {
			return 0, false
		}
		return t.UnixNano(), true
	}
}

// parseInt reads t as an integer of bitsz bits, exactly.
func parseInt(t []byte, bitsz int) (int64, error) {
	v, err := strconv.ParseInt(string(t), 10, bitsz)
	if err == nil {
		return v, nil
	}
	// 1e3 or 12.0 are integers written as floats.
	if n, ok := integral(t); ok {
		if v, err := strconv.ParseInt(n, 10, bitsz); err == nil {
			return v, nil
		}
	}
	return 0, fmt.Errorf("%s is not an int%d", quote(t), bitsz)
}

// integral rewrites a decimal number (sign, digits, fraction, exponent, as
// in JSON but with an optional '+' and digits optional on one side of the
// point) that is an integer as plain digits, exactly. It reports false
// for anything else, and for integers of more than 20 digits, which no
// column holds.
func integral(t []byte) (string, bool) {
	s, sign := t, ""
	if len(s) > 0 && (s[0] == '-' || s[0] == '+') {
		if s[0] == '-' {
			sign = "-"
		}
		s = s[1:]
	}
	digits := func() []byte {
		i := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		d := s[:i]
		s = s[i:]
		return d
	}
	whole := digits()
	var frac []byte
	if len(s) > 0 && s[0] == '.' {
		s = s[1:]
		frac = digits()
	}
	if len(whole)+len(frac) == 0 {
		return "", false
	}
	exp := 0
	if len(s) > 0 && (s[0] == 'e' || s[0] == 'E') {
		s = s[1:]
		neg := false
		if len(s) > 0 && (s[0] == '-' || s[0] == '+') {
			neg = s[0] == '-'
			s = s[1:]
		}
		e := digits()
		if len(e) == 0 {
			return "", false
		}
		for _, c := range e {
			if exp < 1<<20 { // far beyond any integer column: stays "too big" or "a fraction"
				exp = exp*10 + int(c-'0')
			}
		}
		if neg {
			exp = -exp
		}
	}
	if len(s) > 0 {
		return "", false
	}
	// value = mant × 10^exp
	mant := make([]byte, 0, len(whole)+len(frac))
	mant = append(append(mant, whole...), frac...)
	exp -= len(frac)
	for len(mant) > 0 && mant[0] == '0' {
		mant = mant[1:]
	}
	if len(mant) == 0 {
		return "0", true
	}
	for mant[len(mant)-1] == '0' {
		mant = mant[:len(mant)-1]
		exp++
	}
	if exp < 0 || len(mant)+exp > 20 {
		return "", false
	}
	out := make([]byte, 0, len(sign)+len(mant)+exp)
	out = append(append(out, sign...), mant...)
	for range exp {
		out = append(out, '0')
	}
	return string(out), true
}

// quote renders text for an error message, cut to 64 bytes.
func quote(t []byte) string {
	const max = 64
	if len(t) <= max {
		return strconv.Quote(string(t))
	}
	return fmt.Sprintf("%s… (%d bytes)", strconv.Quote(string(t[:max])), len(t))
}

func (c *jsonColumn) push(v value) {
	c.valid = append(c.valid, !v.null)
	if v.null {
		c.nulls++
	}
	switch c.code {
	case codeInt, codeTimestamp, codeDate32, codeDate64:
		c.i64 = append(c.i64, v.i)
	case codeUint:
		c.u64 = append(c.u64, v.u)
	case codeFloat:
		c.f64 = append(c.f64, v.f)
	case codeBool:
		c.b = append(c.b, v.b)
	case codeString, codeBinary:
		c.data = append(c.data, v.s...)
		c.offs = append(c.offs, int64(len(c.data)))
	}
}

func (c *jsonColumn) reset() {
	c.valid, c.nulls = c.valid[:0], 0
	c.i64, c.u64, c.f64, c.b = c.i64[:0], c.u64[:0], c.f64[:0], c.b[:0]
	c.offs, c.data = c.offs[:0], c.data[:0]
}

func newBuffer(mem memory.Allocator, n int) *memory.Buffer {
	b := memory.NewResizableBuffer(mem)
	b.Resize(n)
	return b
}

// build copies the staged values into Arrow buffers and resets c.
func (c *jsonColumn) build(mem memory.Allocator, n int) arrow.Array {
	defer c.reset()
	var validity *memory.Buffer
	if c.nulls > 0 {
		validity = newBuffer(mem, int(bitutil.BytesForBits(int64(n))))
		bm := validity.Bytes()
		clear(bm)
		for i, ok := range c.valid {
			if ok {
				bitutil.SetBit(bm, i)
			}
		}
	}
	var bufs []*memory.Buffer
	switch c.code {
	case codeInt, codeTimestamp, codeDate32, codeDate64:
		vals := newBuffer(mem, n*c.bytes)
		switch c.bytes {
		case 1:
			narrowInto[int8](vals.Bytes(), c.i64)
		case 2:
			narrowInto[int16](vals.Bytes(), c.i64)
		case 4:
			narrowInto[int32](vals.Bytes(), c.i64)
		default:
			narrowInto[int64](vals.Bytes(), c.i64)
		}
		bufs = []*memory.Buffer{validity, vals}
	case codeUint:
		vals := newBuffer(mem, n*c.bytes)
		switch c.bytes {
		case 1:
			narrowInto[uint8](vals.Bytes(), c.u64)
		case 2:
			narrowInto[uint16](vals.Bytes(), c.u64)
		case 4:
			narrowInto[uint32](vals.Bytes(), c.u64)
		default:
			narrowInto[uint64](vals.Bytes(), c.u64)
		}
		bufs = []*memory.Buffer{validity, vals}
	case codeFloat:
		vals := newBuffer(mem, n*c.bytes)
		if c.bytes == 4 {
			narrowInto[float32](vals.Bytes(), c.f64)
		} else {
			narrowInto[float64](vals.Bytes(), c.f64)
		}
		bufs = []*memory.Buffer{validity, vals}
	case codeBool:
		vals := newBuffer(mem, int(bitutil.BytesForBits(int64(n))))
		bm := vals.Bytes()
		clear(bm)
		for i, v := range c.b {
			if v {
				bitutil.SetBit(bm, i)
			}
		}
		bufs = []*memory.Buffer{validity, vals}
	case codeString, codeBinary:
		data := newBuffer(mem, len(c.data))
		copy(data.Bytes(), c.data)
		var offs *memory.Buffer
		if isLarge(c.field.Type) {
			offs = newBuffer(mem, (n+1)*8)
			o := arrow.Int64Traits.CastFromBytes(offs.Bytes())
			o[0] = 0
			copy(o[1:], c.offs)
		} else {
			offs = newBuffer(mem, (n+1)*4)
			o := arrow.Int32Traits.CastFromBytes(offs.Bytes())
			o[0] = 0
			for i, v := range c.offs {
				o[i+1] = int32(v)
			}
		}
		bufs = []*memory.Buffer{validity, offs, data}
	}
	data := array.NewData(c.field.Type, n, bufs, nil, c.nulls, 0)
	for _, b := range bufs {
		if b != nil {
			b.Release()
		}
	}
	arr := array.MakeFromData(data)
	data.Release()
	return arr
}

type fixedNumber interface {
	~int8 | ~int16 | ~int32 | ~int64 | ~uint8 | ~uint16 | ~uint32 | ~uint64 | ~float32 | ~float64
}

// narrowInto converts src into the values buffer buf of element type D.
func narrowInto[D, S fixedNumber](buf []byte, src []S) {
	out := unsafe.Slice((*D)(unsafe.Pointer(unsafe.SliceData(buf))), len(src))
	for i, v := range src {
		out[i] = D(v)
	}
}

func isLarge(t arrow.DataType) bool {
	return t.ID() == arrow.LARGE_STRING || t.ID() == arrow.LARGE_BINARY
}

// parser is a strict JSON scanner over one event (RFC 8259).
type parser struct {
	in  []byte
	pos int
}

// maxDepth bounds the nesting of skipped values.
const maxDepth = 512

func (p *parser) peek() byte {
	if p.pos < len(p.in) {
		return p.in[p.pos]
	}
	return 0
}

func (p *parser) errorf(format string, args ...any) error {
	if p.pos >= len(p.in) {
		return fmt.Errorf("invalid JSON: "+format+" (unexpected end)", args...)
	}
	return fmt.Errorf("invalid JSON at byte %d: "+format, append([]any{p.pos}, args...)...)
}

func (p *parser) ws() {
	for p.pos < len(p.in) {
		switch p.in[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *parser) lit(s string) error {
	if !bytes.HasPrefix(p.in[p.pos:], []byte(s)) {
		return p.errorf("expected %s", s)
	}
	p.pos += len(s)
	return nil
}

func (p *parser) number() error {
	start := p.pos
	if p.peek() == '-' {
		p.pos++
	}
	switch c := p.peek(); {
	case c == '0':
		p.pos++
	case c >= '1' && c <= '9':
		for c := p.peek(); c >= '0' && c <= '9'; c = p.peek() {
			p.pos++
		}
	default:
		p.pos = start
		return p.errorf("expected a value")
	}
	if p.peek() == '.' {
		p.pos++
		if c := p.peek(); c < '0' || c > '9' {
			return p.errorf("expected a digit")
		}
		for c := p.peek(); c >= '0' && c <= '9'; c = p.peek() {
			p.pos++
		}
	}
	if c := p.peek(); c == 'e' || c == 'E' {
		p.pos++
		if c := p.peek(); c == '+' || c == '-' {
			p.pos++
		}
		if c := p.peek(); c < '0' || c > '9' {
			return p.errorf("expected a digit")
		}
		for c := p.peek(); c >= '0' && c <= '9'; c = p.peek() {
			p.pos++
		}
	}
	return nil
}

// str scans the string at p.pos. Without escapes it returns the range of
// its contents in p.in; with escapes it decodes them onto *buf (appending
// unless reset) and returns the range there.
func (p *parser) str(buf *[]byte, reset bool) (start, end int, escaped bool, err error) {
	p.pos++ // opening quote
	begin := p.pos
	for p.pos < len(p.in) {
		c := p.in[p.pos]
		switch {
		case c == '"':
			s := p.in[begin:p.pos]
			p.pos++
			if !utf8.Valid(s) {
				return 0, 0, false, errors.New("invalid JSON: string is not valid UTF-8")
			}
			return begin, p.pos - 1, false, nil
		case c == '\\':
			return p.strEscaped(buf, reset, begin)
		case c < 0x20:
			return 0, 0, false, p.errorf("control character in string")
		}
		p.pos++
	}
	return 0, 0, false, p.errorf("unterminated string")
}

func (p *parser) strEscaped(buf *[]byte, reset bool, begin int) (int, int, bool, error) {
	if reset {
		*buf = (*buf)[:0]
	}
	b := *buf
	start := len(b)
	b = append(b, p.in[begin:p.pos]...)
	for p.pos < len(p.in) {
		c := p.in[p.pos]
		switch {
		case c == '"':
			p.pos++
			*buf = b
			if !utf8.Valid(b[start:]) {
				return 0, 0, false, errors.New("invalid JSON: string is not valid UTF-8")
			}
			return start, len(b), true, nil
		case c < 0x20:
			return 0, 0, false, p.errorf("control character in string")
		case c != '\\':
			b = append(b, c)
			p.pos++
			continue
		}
		p.pos++
		switch p.peek() {
		case '"', '\\', '/':
			b = append(b, p.in[p.pos])
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			r, ok := p.hex4(p.pos + 1)
			if !ok {
				return 0, 0, false, p.errorf("bad \\u escape")
			}
			p.pos += 4
			if utf16.IsSurrogate(r) {
				r2, ok := rune(-1), false
				if p.pos+2 < len(p.in) && p.in[p.pos+1] == '\\' && p.in[p.pos+2] == 'u' {
					r2, ok = p.hex4(p.pos + 3)
				}
				if dec := utf16.DecodeRune(r, r2); ok && dec != utf8.RuneError {
					r = dec
					p.pos += 6
				} else {
					r = utf8.RuneError
				}
			}
			b = utf8.AppendRune(b, r)
		default:
			return 0, 0, false, p.errorf("bad escape")
		}
		p.pos++
	}
	return 0, 0, false, p.errorf("unterminated string")
}

func (p *parser) hex4(at int) (rune, bool) {
	if at+4 > len(p.in) {
		return 0, false
	}
	var r rune
	for _, c := range p.in[at : at+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// skipValue checks and skips one value.
func (p *parser) skipValue(depth int) error {
	if depth > maxDepth {
		return p.errorf("nested deeper than %d", maxDepth)
	}
	p.ws()
	var discard []byte
	switch c := p.peek(); c {
	case '"':
		_, _, _, err := p.str(&discard, true)
		return err
	case 't':
		return p.lit("true")
	case 'f':
		return p.lit("false")
	case 'n':
		return p.lit("null")
	case '{', '[':
		closing := byte('}')
		if c == '[' {
			closing = ']'
		}
		p.pos++
		p.ws()
		if p.peek() == closing {
			p.pos++
			return nil
		}
		for {
			p.ws()
			if c == '{' {
				if p.peek() != '"' {
					return p.errorf("expected a key")
				}
				if _, _, _, err := p.str(&discard, true); err != nil {
					return err
				}
				p.ws()
				if p.peek() != ':' {
					return p.errorf("expected ':'")
				}
				p.pos++
			}
			if err := p.skipValue(depth + 1); err != nil {
				return err
			}
			p.ws()
			switch p.peek() {
			case ',':
				p.pos++
			case closing:
				p.pos++
				return nil
			default:
				return p.errorf("expected ',' or '%c'", closing)
			}
		}
	default:
		return p.number()
	}
}
