package window

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// UDAF is a user-defined aggregate, columnar like the built-in ones: it
// keeps one accumulator per group (a dense group index the table hands
// out and reuses), folds in a whole batch per call, merges groups (for
// sliding and session windows) and produces its results as an Arrow
// array. A table owns one UDAF and calls it from one goroutine.
type UDAF interface {
	// DataType is the type of the results.
	DataType() arrow.DataType
	// Grow makes room for n groups; the new ones (from the old count up)
	// are empty.
	Grow(n int)
	// Reset empties group g, for reuse.
	Reset(g int32)
	// Update folds row rows[p] of cols (the aggregate's input columns,
	// borrowed for the call) into group groups[p], for every p.
	Update(cols []arrow.Array, rows, groups []int32)
	// Merge folds group src into group dst; src is reset or reused after.
	Merge(dst, src int32)
	// Result returns the results of groups, in their order, as an array
	// of DataType, handed over to the caller.
	Result(mem memory.Allocator, groups []int32) arrow.Array
	// AppendState appends group g's state to dst; ReadState reads one
	// written by AppendState into group g (made room for, empty) and
	// returns the bytes after it. ReadState must return an error, never
	// panic, on damaged bytes.
	AppendState(dst []byte, g int32) []byte
	ReadState(src []byte, g int32) ([]byte, error)
}

// udafAcc runs a UDAF as an accumulator, on its input columns.
type udafAcc struct {
	u    UDAF
	cols []int
	in   []arrow.Array
}

func (a *udafAcc) dataType() arrow.DataType { return a.u.DataType() }
func (a *udafAcc) grow(n int)               { a.u.Grow(n) }
func (a *udafAcc) reset(g int32)            { a.u.Reset(g) }
func (a *udafAcc) update(arrow.Array, []int32, []int32, []int64) {
	panic("window: a user-defined aggregate is updated with updateBatch")
}
func (a *udafAcc) updateBatch(rec arrow.RecordBatch, rows, gids []int32) {
	a.in = a.in[:0]
	for _, c := range a.cols {
		a.in = append(a.in, rec.Column(c))
	}
	a.u.Update(a.in, rows, gids)
	clear(a.in)
}
func (a *udafAcc) merge(dst, src int32) { a.u.Merge(dst, src) }
func (a *udafAcc) appendTo(array.Builder, int32) {
	panic("window: the results of a user-defined aggregate come from Result")
}
func (a *udafAcc) encode(dst []byte, g int32) []byte { return a.u.AppendState(dst, g) }
func (a *udafAcc) decode(src []byte, g int32) (rest []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			rest, err = nil, fmt.Errorf("reading the state of a user-defined aggregate: %v", r)
		}
	}()
	return a.u.ReadState(src, g)
}

// updateAccs folds the pairs (rows[p], gids[p]) of rec into every
// accumulator: one call per accumulator and batch.
func updateAccs(cfg *Config, accs []accumulator, rec arrow.RecordBatch, rows, gids []int32, ts []int64) {
	for i, acc := range accs {
		if u, ok := acc.(*udafAcc); ok {
			u.updateBatch(rec, rows, gids)
			continue
		}
		var col arrow.Array
		if c := cfg.Aggs[i].Column; c >= 0 {
			col = rec.Column(c)
		}
		acc.update(col, rows, gids, ts)
	}
}

// outputs checks cfg's key and aggregate columns against its schema and
// returns the key encoders, the accumulators and the schema of the
// results: the key columns, window_start, window_end, one column per
// aggregate.
func outputs(cfg *Config) ([]keyEncoder, []accumulator, *arrow.Schema, error) {
	s := cfg.Schema
	if cfg.Time < 0 || cfg.Time >= s.NumFields() || !isTime(s.Field(cfg.Time).Type) {
		return nil, nil, nil, fmt.Errorf("window: time column %d: want an int64 or millisecond timestamp column", cfg.Time)
	}
	if cfg.AllowedLateness < 0 {
		return nil, nil, nil, fmt.Errorf("window: allowed lateness %d ms: must not be negative", cfg.AllowedLateness)
	}
	if err := checkMaxParallelism(cfg.MaxParallelism); err != nil {
		return nil, nil, nil, err
	}
	var (
		encs   []keyEncoder
		accs   []accumulator
		fields []arrow.Field
	)
	for _, k := range cfg.Keys {
		if k < 0 || k >= s.NumFields() {
			return nil, nil, nil, fmt.Errorf("window: key column %d of %d", k, s.NumFields())
		}
		enc, err := newKeyEncoder(s.Field(k).Type)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("window: key %s: %w", s.Field(k).Name, err)
		}
		encs = append(encs, enc)
		fields = append(fields, arrow.Field{Name: s.Field(k).Name, Type: s.Field(k).Type, Nullable: true})
	}
	ts := &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}
	fields = append(fields, arrow.Field{Name: "window_start", Type: ts}, arrow.Field{Name: "window_end", Type: ts})
	for _, a := range cfg.Aggs {
		var acc accumulator
		if a.Kind == User {
			if a.User == nil {
				return nil, nil, nil, fmt.Errorf("window: %s: a user-defined aggregate without a constructor", a.Name)
			}
			var in []arrow.DataType
			for _, c := range a.Columns {
				if c < 0 || c >= s.NumFields() {
					return nil, nil, nil, fmt.Errorf("window: %s: column %d of %d", a.Name, c, s.NumFields())
				}
				in = append(in, s.Field(c).Type)
			}
			u, err := a.User(in)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("window: %s: %w", a.Name, err)
			}
			if u == nil || u.DataType() == nil {
				return nil, nil, nil, fmt.Errorf("window: %s: no aggregate or no result type", a.Name)
			}
			acc = &udafAcc{u: u, cols: a.Columns}
		} else {
			var in arrow.DataType
			if a.Column >= 0 {
				if a.Column >= s.NumFields() {
					return nil, nil, nil, fmt.Errorf("window: %s: column %d of %d", a.Name, a.Column, s.NumFields())
				}
				in = s.Field(a.Column).Type
			} else if a.Kind != Count {
				return nil, nil, nil, fmt.Errorf("window: %s: %s needs a column", a.Name, a.Kind)
			}
			var err error
			if acc, err = newAccumulator(a.Kind, in); err != nil {
				return nil, nil, nil, fmt.Errorf("window: %s: %w", a.Name, err)
			}
		}
		accs = append(accs, acc)
		fields = append(fields, arrow.Field{Name: a.Name, Type: acc.dataType(), Nullable: true})
	}
	return encs, accs, arrow.NewSchema(fields, nil), nil
}

// emit returns the batch of the groups due, in their order: their keys
// (decoded from key(g), the encoded key columns, or, when fastKeys is not
// nil, the values of the one int64 key column, none null), bounds and
// aggregates. Built-in aggregates append to a builder in a loop over the
// groups; a user-defined one gives its array.
func emit(mem memory.Allocator, out *arrow.Schema, encs []keyEncoder, accs []accumulator, due []int32,
	key func(g int32) []byte, bounds func(g int32) (start, end int64), fastKeys []int64) (arrow.RecordBatch, error) {
	cols := make([]arrow.Array, 0, out.NumFields())
	defer func() {
		for _, c := range cols {
			c.Release()
		}
	}()
	nk := len(encs)
	kb := make([]array.Builder, nk+2)
	for i := range kb {
		kb[i] = array.NewBuilder(mem, out.Field(i).Type)
		defer kb[i].Release()
		kb[i].Reserve(len(due))
	}
	if fastKeys != nil {
		kb[0].(*array.Int64Builder).AppendValues(fastKeys, nil)
	}
	sb, eb := kb[nk].(*array.TimestampBuilder), kb[nk+1].(*array.TimestampBuilder)
	for _, g := range due {
		if fastKeys == nil {
			b := key(g)
			for i, enc := range encs {
				var err error
				if b, err = enc.appendValue(kb[i], b); err != nil {
					return nil, fmt.Errorf("window: group key: %w", err)
				}
			}
		}
		start, end := bounds(g)
		sb.UnsafeAppend(arrow.Timestamp(start))
		eb.UnsafeAppend(arrow.Timestamp(end))
	}
	for _, b := range kb {
		cols = append(cols, b.NewArray())
	}
	for i, acc := range accs {
		var col arrow.Array
		if u, ok := acc.(*udafAcc); ok {
			col = u.u.Result(mem, due)
			if col == nil || col.Len() != len(due) || !arrow.TypeEqual(col.DataType(), out.Field(nk+2+i).Type) {
				if col != nil {
					col.Release()
				}
				return nil, fmt.Errorf("window: %s: Result is not %d values of %s", out.Field(nk+2+i).Name, len(due), out.Field(nk+2+i).Type)
			}
		} else {
			b := array.NewBuilder(mem, out.Field(nk+2+i).Type)
			b.Reserve(len(due))
			for _, g := range due {
				acc.appendTo(b, g)
			}
			col = b.NewArray()
			b.Release()
		}
		cols = append(cols, col)
	}
	return array.NewRecordBatch(out, cols, int64(len(due))), nil
}
