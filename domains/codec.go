// Package domains makes the data-mesh domain the unit of ownership,
// isolation and contract: a domain declares input and output ports, each
// with a versioned contract (an Arrow schema and row rules), and runs its
// pipelines under its own supervisor.
//
// This file holds the typed form of a contract: a Go struct whose fields
// map to Arrow columns, with conversion both ways between []T and record
// batches.
package domains

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Codec converts between []T and Arrow record batches. T is a struct; each
// exported field is a column named by its `arrow:"name"` tag (default: the
// field name in snake_case; "-" skips the field). Pointer fields are
// nullable columns. Supported field types: bool, int, int8…int64, uint8…
// uint64, float32, float64, string, []byte, time.Time (timestamp µs, UTC),
// and pointers to them.
type Codec[T any] struct {
	schema *arrow.Schema
	fields []codecField
}

type codecField struct {
	index   []int
	kind    reflect.Kind
	isTime  bool
	isBytes bool
	ptr     bool
}

var timeType = reflect.TypeFor[time.Time]()

// NewCodec derives the codec, and so the Arrow schema, of T. A field of an
// unsupported type is an error naming it.
func NewCodec[T any]() (*Codec[T], error) {
	t := reflect.TypeFor[T]()
	if t.Kind() != reflect.Struct {
		return nil, fmt.Errorf("domains: %s is not a struct", t)
	}
	c := &Codec[T]{}
	var arrowFields []arrow.Field
	var errs []error
	seen := map[string]bool{}
	for _, sf := range reflect.VisibleFields(t) {
		if !sf.IsExported() || sf.Anonymous {
			continue
		}
		name := snake(sf.Name)
		if tag, ok := sf.Tag.Lookup("arrow"); ok {
			if tag == "-" {
				continue
			}
			if n, _, _ := strings.Cut(tag, ","); n != "" {
				name = n
			}
		}
		ft := sf.Type
		f := codecField{index: sf.Index}
		if ft.Kind() == reflect.Pointer {
			f.ptr, ft = true, ft.Elem()
		}
		dt, err := arrowType(ft)
		if err != nil {
			errs = append(errs, fmt.Errorf("field %s: %w", sf.Name, err))
			continue
		}
		if seen[name] {
			errs = append(errs, fmt.Errorf("field %s: column %q appears twice", sf.Name, name))
			continue
		}
		seen[name] = true
		f.kind, f.isTime = ft.Kind(), ft == timeType
		f.isBytes = ft.Kind() == reflect.Slice
		c.fields = append(c.fields, f)
		arrowFields = append(arrowFields, arrow.Field{Name: name, Type: dt, Nullable: f.ptr})
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("domains: %s: %w", t, errors.Join(errs...))
	}
	if len(c.fields) == 0 {
		return nil, fmt.Errorf("domains: %s has no exported fields", t)
	}
	c.schema = arrow.NewSchema(arrowFields, nil)
	return c, nil
}

func arrowType(t reflect.Type) (arrow.DataType, error) {
	if t == timeType {
		return &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}, nil
	}
	switch t.Kind() {
	case reflect.Bool:
		return arrow.FixedWidthTypes.Boolean, nil
	case reflect.Int, reflect.Int64:
		return arrow.PrimitiveTypes.Int64, nil
	case reflect.Int8:
		return arrow.PrimitiveTypes.Int8, nil
	case reflect.Int16:
		return arrow.PrimitiveTypes.Int16, nil
	case reflect.Int32:
		return arrow.PrimitiveTypes.Int32, nil
	case reflect.Uint8:
		return arrow.PrimitiveTypes.Uint8, nil
	case reflect.Uint16:
		return arrow.PrimitiveTypes.Uint16, nil
	case reflect.Uint32:
		return arrow.PrimitiveTypes.Uint32, nil
	case reflect.Uint64:
		return arrow.PrimitiveTypes.Uint64, nil
	case reflect.Float32:
		return arrow.PrimitiveTypes.Float32, nil
	case reflect.Float64:
		return arrow.PrimitiveTypes.Float64, nil
	case reflect.String:
		return arrow.BinaryTypes.String, nil
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return arrow.BinaryTypes.Binary, nil
		}
	}
	return nil, fmt.Errorf("type %s has no Arrow column type", t)
}

// snake turns a Go field name into snake_case: OrderID -> order_id.
func snake(s string) string {
	var b strings.Builder
	rs := []rune(s)
	for i, r := range rs {
		upper := r >= 'A' && r <= 'Z'
		if upper && i > 0 {
			prevLower := rs[i-1] >= 'a' && rs[i-1] <= 'z' || rs[i-1] >= '0' && rs[i-1] <= '9'
			nextLower := i+1 < len(rs) && rs[i+1] >= 'a' && rs[i+1] <= 'z'
			if prevLower || (nextLower && rs[i-1] >= 'A' && rs[i-1] <= 'Z') {
				b.WriteByte('_')
			}
		}
		if upper {
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Schema is the Arrow schema of T.
func (c *Codec[T]) Schema() *arrow.Schema { return c.schema }

// Encode builds a record batch of rows, allocated from mem; the caller owns
// it.
func (c *Codec[T]) Encode(mem memory.Allocator, rows []T) arrow.RecordBatch {
	b := array.NewRecordBuilder(mem, c.schema)
	defer b.Release()
	b.Reserve(len(rows))
	vals := reflect.ValueOf(rows)
	for j, f := range c.fields {
		fb := b.Field(j)
		for i := range rows {
			v := vals.Index(i).FieldByIndex(f.index)
			if f.ptr {
				if v.IsNil() {
					fb.AppendNull()
					continue
				}
				v = v.Elem()
			}
			appendValue(fb, f, v)
		}
	}
	return b.NewRecordBatch()
}

func appendValue(fb array.Builder, f codecField, v reflect.Value) {
	switch bb := fb.(type) {
	case *array.BooleanBuilder:
		bb.Append(v.Bool())
	case *array.Int8Builder:
		bb.Append(int8(v.Int()))
	case *array.Int16Builder:
		bb.Append(int16(v.Int()))
	case *array.Int32Builder:
		bb.Append(int32(v.Int()))
	case *array.Int64Builder:
		bb.Append(v.Int())
	case *array.Uint8Builder:
		bb.Append(uint8(v.Uint()))
	case *array.Uint16Builder:
		bb.Append(uint16(v.Uint()))
	case *array.Uint32Builder:
		bb.Append(uint32(v.Uint()))
	case *array.Uint64Builder:
		bb.Append(v.Uint())
	case *array.Float32Builder:
		bb.Append(float32(v.Float()))
	case *array.Float64Builder:
		bb.Append(v.Float())
	case *array.StringBuilder:
		bb.Append(v.String())
	case *array.BinaryBuilder:
		bb.Append(v.Bytes())
	case *array.TimestampBuilder:
		bb.Append(arrow.Timestamp(v.Interface().(time.Time).UnixMicro()))
	}
}

// Decode appends the rows of rec to dst. rec must have T's schema in field
// names and types (nullability may be stricter); otherwise the error names
// the first difference. rec is borrowed.
func (c *Codec[T]) Decode(dst []T, rec arrow.RecordBatch) ([]T, error) {
	if err := c.Compatible(rec.Schema()); err != nil {
		return dst, err
	}
	n := int(rec.NumRows())
	start := len(dst)
	dst = append(dst, make([]T, n)...)
	vals := reflect.ValueOf(dst[start:])
	for j, f := range c.fields {
		col := rec.Column(j)
		for i := range n {
			v := vals.Index(i).FieldByIndex(f.index)
			if col.IsNull(i) {
				if !f.ptr {
					return dst[:start], fmt.Errorf("domains: column %q row %d is null and field is not a pointer", c.schema.Field(j).Name, i)
				}
				continue
			}
			if f.ptr {
				p := reflect.New(v.Type().Elem())
				v.Set(p)
				v = p.Elem()
			}
			setValue(v, col, i)
		}
	}
	return dst, nil
}

func setValue(v reflect.Value, col arrow.Array, i int) {
	switch a := col.(type) {
	case *array.Boolean:
		v.SetBool(a.Value(i))
	case *array.Int8:
		v.SetInt(int64(a.Value(i)))
	case *array.Int16:
		v.SetInt(int64(a.Value(i)))
	case *array.Int32:
		v.SetInt(int64(a.Value(i)))
	case *array.Int64:
		v.SetInt(a.Value(i))
	case *array.Uint8:
		v.SetUint(uint64(a.Value(i)))
	case *array.Uint16:
		v.SetUint(uint64(a.Value(i)))
	case *array.Uint32:
		v.SetUint(uint64(a.Value(i)))
	case *array.Uint64:
		v.SetUint(a.Value(i))
	case *array.Float32:
		v.SetFloat(float64(a.Value(i)))
	case *array.Float64:
		v.SetFloat(a.Value(i))
	case *array.String:
		v.SetString(a.Value(i))
	case *array.Binary:
		v.SetBytes(bytes.Clone(a.Value(i)))
	case *array.Timestamp:
		v.Set(reflect.ValueOf(time.UnixMicro(int64(a.Value(i))).UTC()))
	}
}

// Compatible reports whether batches of schema s decode into T: the same
// column names in the same order with the same types, and no nullable
// column where T's field is not a pointer.
func (c *Codec[T]) Compatible(s *arrow.Schema) error {
	if s.NumFields() != c.schema.NumFields() {
		return fmt.Errorf("domains: schema has %d columns, %s has %d", s.NumFields(), reflect.TypeFor[T](), c.schema.NumFields())
	}
	for i, want := range c.schema.Fields() {
		got := s.Field(i)
		switch {
		case got.Name != want.Name:
			return fmt.Errorf("domains: column %d is %q, %s expects %q", i, got.Name, reflect.TypeFor[T](), want.Name)
		case !arrow.TypeEqual(got.Type, want.Type):
			return fmt.Errorf("domains: column %q is %s, %s expects %s", got.Name, got.Type, reflect.TypeFor[T](), want.Type)
		case got.Nullable && !want.Nullable:
			return fmt.Errorf("domains: column %q is nullable, %s's field is not a pointer", got.Name, reflect.TypeFor[T]())
		}
	}
	return nil
}

// ContractOf derives a contract from T: its schema, the given version and
// rules, and the codec converting between []T and the port's batches. A
// field type with no Arrow column type is an error here, at registration.
func ContractOf[T any](version int, rules ...Rule) (Contract, *Codec[T], error) {
	c, err := NewCodec[T]()
	if err != nil {
		return Contract{}, nil, err
	}
	return Contract{Schema: c.Schema(), Version: version, Rules: rules}, c, nil
}
