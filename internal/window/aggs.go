package window

import (
	"cmp"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// accumulator keeps one aggregate of every group, in slices indexed by
// group id, and folds in a batch at a time: pairs p of (input row
// rows[p], group gids[p]), with the rows' event times in ts. A call per
// batch, a typed loop inside.
type accumulator interface {
	dataType() arrow.DataType
	// grow makes room for n groups (new ones empty).
	grow(n int)
	// reset empties group g for reuse.
	reset(g int32)
	update(col arrow.Array, rows, gids []int32, ts []int64)
	// merge folds group src into group dst (src is left as it was).
	merge(dst, src int32)
	appendTo(b array.Builder, g int32)
	// encode appends group g's state; decode reads it into group g (made
	// room for) and returns the rest of src.
	encode(dst []byte, g int32) []byte
	decode(src []byte, g int32) ([]byte, error)
}

func newAccumulator(k AggKind, in arrow.DataType) (accumulator, error) {
	id := arrow.NULL
	if in != nil {
		id = in.ID()
	}
	switch k {
	case Count:
		return &countAcc{}, nil
	case Sum, Min, Max:
		switch id {
		case arrow.INT64:
			return &numAcc[int64]{kind: k, dt: arrow.PrimitiveTypes.Int64}, nil
		case arrow.FLOAT64:
			return &numAcc[float64]{kind: k, dt: arrow.PrimitiveTypes.Float64}, nil
		}
	case Avg:
		switch id {
		case arrow.INT64:
			return &avgAcc[int64]{}, nil
		case arrow.FLOAT64:
			return &avgAcc[float64]{}, nil
		}
	case CountDistinct:
		switch id {
		case arrow.INT64:
			return &distinctAcc[int64]{c: int64Codec, value: func(c arrow.Array, i int) int64 { return c.(*array.Int64).Value(i) }}, nil
		case arrow.STRING:
			return &distinctAcc[string]{c: stringCodec, value: func(c arrow.Array, i int) string { return c.(*array.String).Value(i) }}, nil
		}
	case First, Last:
		switch id {
		case arrow.INT64:
			return &edgeAcc[int64]{last: k == Last, dt: in, c: int64Codec, value: func(c arrow.Array, i int) int64 { return c.(*array.Int64).Value(i) },
				app: func(b array.Builder, v int64) { b.(*array.Int64Builder).Append(v) }}, nil
		case arrow.FLOAT64:
			return &edgeAcc[float64]{last: k == Last, dt: in, c: float64Codec, value: func(c arrow.Array, i int) float64 { return c.(*array.Float64).Value(i) },
				app: func(b array.Builder, v float64) { b.(*array.Float64Builder).Append(v) }}, nil
		case arrow.STRING:
			return &edgeAcc[string]{last: k == Last, dt: in, c: stringCodec, value: func(c arrow.Array, i int) string { return c.(*array.String).Value(i) },
				app: func(b array.Builder, v string) { b.(*array.StringBuilder).Append(v) }}, nil
		}
	default:
		return nil, fmt.Errorf("unknown aggregate %d", k)
	}
	return nil, fmt.Errorf("%s of %s not supported", k, in)
}

// countAcc counts rows (no column) or non-null values.
type countAcc struct{ n []int64 }

func (a *countAcc) dataType() arrow.DataType { return arrow.PrimitiveTypes.Int64 }
func (a *countAcc) grow(n int)               { a.n = append(a.n, make([]int64, n-len(a.n))...) }
func (a *countAcc) reset(g int32)            { a.n[g] = 0 }
func (a *countAcc) update(col arrow.Array, rows, gids []int32, _ []int64) {
	n := a.n
	if col == nil || col.NullN() == 0 {
		for _, g := range gids {
			n[g]++
		}
		return
	}
	for p, g := range gids {
		if col.IsValid(int(rows[p])) {
			n[g]++
		}
	}
}
func (a *countAcc) merge(dst, src int32)              { a.n[dst] += a.n[src] }
func (a *countAcc) appendTo(b array.Builder, g int32) { b.(*array.Int64Builder).Append(a.n[g]) }

// numAcc is Sum, Min or Max of int64 or float64 values. Sums of int64
// wrap on overflow like Go's; seen marks groups with a value.
type numAcc[T int64 | float64] struct {
	kind AggKind
	dt   arrow.DataType
	v    []T
	seen []bool
}

func (a *numAcc[T]) dataType() arrow.DataType { return a.dt }
func (a *numAcc[T]) grow(n int) {
	a.v = append(a.v, make([]T, n-len(a.v))...)
	a.seen = append(a.seen, make([]bool, n-len(a.seen))...)
}
func (a *numAcc[T]) reset(g int32) { a.v[g], a.seen[g] = 0, false }
func (a *numAcc[T]) update(col arrow.Array, rows, gids []int32, _ []int64) {
	vals := values[T](col)
	v, seen := a.v, a.seen
	nulls := col.NullN() > 0
	switch a.kind {
	case Sum:
		for p, g := range gids {
			r := rows[p]
			if nulls && col.IsNull(int(r)) {
				continue
			}
			v[g] += vals[r]
			seen[g] = true
		}
	case Min:
		for p, g := range gids {
			r := rows[p]
			if nulls && col.IsNull(int(r)) {
				continue
			}
			if x := vals[r]; !seen[g] || x < v[g] || x != x {
				v[g], seen[g] = x, true
			}
		}
	case Max:
		for p, g := range gids {
			r := rows[p]
			if nulls && col.IsNull(int(r)) {
				continue
			}
			if x := vals[r]; !seen[g] || x > v[g] || x != x {
				v[g], seen[g] = x, true
			}
		}
	}
}
func (a *numAcc[T]) merge(dst, src int32) {
	if !a.seen[src] {
		return
	}
	x := a.v[src]
	switch {
	case !a.seen[dst]:
		a.v[dst] = x
	case a.kind == Sum:
		a.v[dst] += x
	case a.kind == Min && (x < a.v[dst] || x != x), a.kind == Max && (x > a.v[dst] || x != x):
		if a.v[dst] == a.v[dst] { // a NaN stays, as in update
			a.v[dst] = x
		}
	}
	a.seen[dst] = true
}
func (a *numAcc[T]) appendTo(b array.Builder, g int32) {
	if !a.seen[g] {
		b.AppendNull()
		return
	}
	switch b := b.(type) {
	case *array.Int64Builder:
		b.Append(int64(a.v[g]))
	case *array.Float64Builder:
		b.Append(float64(a.v[g]))
	}
}

// avgAcc is the float64 mean of int64 or float64 values.
type avgAcc[T int64 | float64] struct {
	sum []float64
	n   []int64
}

func (a *avgAcc[T]) dataType() arrow.DataType { return arrow.PrimitiveTypes.Float64 }
func (a *avgAcc[T]) grow(n int) {
	a.sum = append(a.sum, make([]float64, n-len(a.sum))...)
	a.n = append(a.n, make([]int64, n-len(a.n))...)
}
func (a *avgAcc[T]) reset(g int32) { a.sum[g], a.n[g] = 0, 0 }
func (a *avgAcc[T]) update(col arrow.Array, rows, gids []int32, _ []int64) {
	vals := values[T](col)
	nulls := col.NullN() > 0
	for p, g := range gids {
		r := rows[p]
		if nulls && col.IsNull(int(r)) {
			continue
		}
		a.sum[g] += float64(vals[r])
		a.n[g]++
	}
}
func (a *avgAcc[T]) merge(dst, src int32) {
	a.sum[dst] += a.sum[src]
	a.n[dst] += a.n[src]
}
func (a *avgAcc[T]) appendTo(b array.Builder, g int32) {
	if a.n[g] == 0 {
		b.AppendNull()
		return
	}
	b.(*array.Float64Builder).Append(a.sum[g] / float64(a.n[g]))
}

// distinctAcc counts distinct non-null values exactly, with a set per
// group.
type distinctAcc[T cmp.Ordered] struct {
	c     codec[T]
	value func(arrow.Array, int) T
	sets  []map[T]struct{}
}

func (a *distinctAcc[T]) dataType() arrow.DataType { return arrow.PrimitiveTypes.Int64 }
func (a *distinctAcc[T]) grow(n int) {
	a.sets = append(a.sets, make([]map[T]struct{}, n-len(a.sets))...)
}
func (a *distinctAcc[T]) reset(g int32) { a.sets[g] = nil }
func (a *distinctAcc[T]) update(col arrow.Array, rows, gids []int32, _ []int64) {
	nulls := col.NullN() > 0
	for p, g := range gids {
		r := int(rows[p])
		if nulls && col.IsNull(r) {
			continue
		}
		s := a.sets[g]
		if s == nil {
			s = map[T]struct{}{}
			a.sets[g] = s
		}
		s[a.value(col, r)] = struct{}{}
	}
}
func (a *distinctAcc[T]) merge(dst, src int32) {
	s := a.sets[src]
	if len(s) == 0 {
		return
	}
	d := a.sets[dst]
	if d == nil {
		d = make(map[T]struct{}, len(s))
		a.sets[dst] = d
	}
	for v := range s {
		d[v] = struct{}{}
	}
}
func (a *distinctAcc[T]) appendTo(b array.Builder, g int32) {
	b.(*array.Int64Builder).Append(int64(len(a.sets[g])))
}

// edgeAcc keeps the value of the earliest (First) or latest (Last) row by
// event time.
type edgeAcc[T any] struct {
	c     codec[T]
	last  bool
	dt    arrow.DataType
	value func(arrow.Array, int) T
	app   func(array.Builder, T)
	v     []T
	at    []int64
	seen  []bool
}

func (a *edgeAcc[T]) dataType() arrow.DataType { return a.dt }
func (a *edgeAcc[T]) grow(n int) {
	a.v = append(a.v, make([]T, n-len(a.v))...)
	a.at = append(a.at, make([]int64, n-len(a.at))...)
	a.seen = append(a.seen, make([]bool, n-len(a.seen))...)
}
func (a *edgeAcc[T]) reset(g int32) {
	var zero T
	a.v[g], a.at[g], a.seen[g] = zero, 0, false
}
func (a *edgeAcc[T]) update(col arrow.Array, rows, gids []int32, ts []int64) {
	nulls := col.NullN() > 0
	for p, g := range gids {
		r := int(rows[p])
		if nulls && col.IsNull(r) {
			continue
		}
		t := ts[r]
		if !a.seen[g] || (!a.last && t < a.at[g]) || (a.last && t >= a.at[g]) {
			a.v[g], a.at[g], a.seen[g] = a.value(col, r), t, true
		}
	}
}
func (a *edgeAcc[T]) merge(dst, src int32) {
	if !a.seen[src] {
		return
	}
	t := a.at[src]
	if !a.seen[dst] || (!a.last && t < a.at[dst]) || (a.last && t > a.at[dst]) {
		a.v[dst], a.at[dst], a.seen[dst] = a.v[src], t, true
	}
}
func (a *edgeAcc[T]) appendTo(b array.Builder, g int32) {
	if !a.seen[g] {
		b.AppendNull()
		return
	}
	a.app(b, a.v[g])
}

// values returns the value buffer of an int64 or float64 column.
func values[T int64 | float64](col arrow.Array) []T {
	var zero T
	switch any(zero).(type) {
	case int64:
		v := col.(*array.Int64).Int64Values()
		return any(v).([]T)
	default:
		v := col.(*array.Float64).Float64Values()
		return any(v).([]T)
	}
}
