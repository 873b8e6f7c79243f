package kernels_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/zeebo/xxh3"

	"github.com/meshflow/meshflow/internal/kernels"
)

// refHashValue is the documented hash of one non-null value of type dt:
// xxh3 of its little-endian bytes (floats normalised), of 0 or 1 for
// booleans, of the bytes of strings and binaries.
func refHashValue(dt arrow.DataType, v any) uint64 {
	if v == nil {
		return kernels.NullHash
	}
	var b []byte
	switch id := dt.ID(); {
	case id == arrow.DICTIONARY:
		return refHashValue(dt.(*arrow.DictionaryType).ValueType, v)
	case id == arrow.FLOAT64 || id == arrow.FLOAT32:
		f := v.(float64)
		if f == 0 {
			f = 0
		} else if math.IsNaN(f) {
			f = math.NaN()
		}
		if id == arrow.FLOAT32 {
			b = binary.LittleEndian.AppendUint32(nil, math.Float32bits(float32(f)))
		} else {
			b = binary.LittleEndian.AppendUint64(nil, math.Float64bits(f))
		}
	case id == arrow.DECIMAL128:
		x := v.(int64)
		b = binary.LittleEndian.AppendUint64(nil, uint64(x))
		b = binary.LittleEndian.AppendUint64(b, uint64(x>>63))
	case id == arrow.FLOAT16:
		b = nil // compared through the array; see refHashes
	case isSigned(id) || isUnsigned(id):
		var u uint64
		if x, ok := v.(int64); ok {
			u = uint64(x)
		} else {
			u = v.(uint64)
		}
		b = binary.LittleEndian.AppendUint64(nil, u)[:bitWidth(dt)/8]
	case id == arrow.BOOL:
		b = []byte{0}
		if v.(bool) {
			b[0] = 1
		}
	default:
		b = []byte(v.(string))
	}
	return xxh3.Hash(b)
}

// refHashes is the documented hash of rows of key columns.
func refHashes(types []arrow.DataType, cols [][]any, n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		for c, dt := range types {
			h := refHashValue(dt, cols[c][i])
			if c == 0 {
				out[i] = h
			} else {
				out[i] = kernels.HashCombine(out[i], h)
			}
		}
	}
	return out
}

// hashTypes are the key types of the hash tests (float16 aside, whose
// byte form the reference does not rebuild).
var hashTypes = []arrow.DataType{
	arrow.PrimitiveTypes.Int8, arrow.PrimitiveTypes.Int16, arrow.PrimitiveTypes.Int32, arrow.PrimitiveTypes.Int64,
	arrow.PrimitiveTypes.Uint8, arrow.PrimitiveTypes.Uint16, arrow.PrimitiveTypes.Uint32, arrow.PrimitiveTypes.Uint64,
	arrow.PrimitiveTypes.Float32, arrow.PrimitiveTypes.Float64,
	arrow.FixedWidthTypes.Date32, arrow.FixedWidthTypes.Date64, tsMs, durNs,
	arrow.BinaryTypes.String, arrow.BinaryTypes.LargeString, arrow.BinaryTypes.Binary, arrow.BinaryTypes.LargeBinary,
	arrow.FixedWidthTypes.Boolean, fsb3, dictStr, dec128,
}

func TestHashColumns(t *testing.T) {
	rng := newRand(t)
	g := valueGen{nullPct: 20}
	for _, dt := range hashTypes {
		t.Run(dt.String(), func(t *testing.T) {
			mem := newTestAllocator()
			defer mem.AssertSize(t, 0)
			for _, n := range []int{0, 1, 9, 100} {
				a, av := randArray(mem, rng, g, dt, n, n%4)
				b, bv := randArray(mem, rng, g, arrow.BinaryTypes.String, n, 1)
				got := make([]uint64, n)
				if err := kernels.HashColumns([]arrow.Array{a}, got); err != nil {
					t.Fatal(err)
				}
				want := refHashes([]arrow.DataType{dt}, [][]any{av}, n)
				for i := range want {
					if got[i] != want[i] {
						t.Fatalf("n=%d row %d (%s): hash %#x, want %#x", n, i, show(av[i]), got[i], want[i])
					}
				}
				if err := kernels.HashColumns([]arrow.Array{a, b}, got); err != nil {
					t.Fatal(err)
				}
				want = refHashes([]arrow.DataType{dt, arrow.BinaryTypes.String}, [][]any{av, bv}, n)
				for i := range want {
					if got[i] != want[i] {
						t.Fatalf("n=%d row %d (%s, %s): hash %#x, want %#x", n, i, show(av[i]), show(bv[i]), got[i], want[i])
					}
				}
				a.Release()
				b.Release()
			}
		})
	}
}

// TestHashStable pins hash values: key groups, and with them the placement
// of keyed state in checkpoints, derive from them, so they must never
// change.
func TestHashStable(t *testing.T) {
	mem := newTestAllocator()
	defer mem.AssertSize(t, 0)
	cases := []struct {
		dt   arrow.DataType
		vals []any
		want []uint64
	}{
		{arrow.PrimitiveTypes.Int64, []any{int64(0), int64(1), int64(-1), nil},
			[]uint64{0xc77b3abb6f87acd9, 0x2fbc593564db792e, 0x5111c7e47d784413, kernels.NullHash}},
		{arrow.BinaryTypes.String, []any{"", "web", "auction-42"},
			[]uint64{0x2d06800538d394c2, 0x22fd8ad0bcfe2d1f, 0x580086a8714085f6}},
		{arrow.PrimitiveTypes.Float64, []any{0.0, math.Copysign(0, -1), 1.5},
			[]uint64{0xc77b3abb6f87acd9, 0xc77b3abb6f87acd9, 0x2561a4889ff63458}},
		{arrow.FixedWidthTypes.Boolean, []any{false, true},
			[]uint64{0xc44bdff4074eecdb, 0xe12ef9d2eb86ceeb}},
	}
	for _, c := range cases {
		a := build(mem, c.dt, c.vals)
		got := make([]uint64, len(c.vals))
		if err := kernels.HashColumns([]arrow.Array{a}, got); err != nil {
			t.Fatal(err)
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("%s %s: hash %#x, pinned %#x", c.dt, show(c.vals[i]), got[i], c.want[i])
			}
		}
		a.Release()
	}
	if got := kernels.HashCombine(1, 2); got != 0x9e3779b97f4a7c56 {
		t.Errorf("HashCombine(1, 2) = %#x", got)
	}
}

// TestHashDictionary checks that a dictionary column hashes like the plain
// column of its values, whatever the dictionary order.
func TestHashDictionary(t *testing.T) {
	mem := newTestAllocator()
	defer mem.AssertSize(t, 0)
	vals := []any{"b", "a", nil, "b", "c", "a"}
	plain := build(mem, arrow.BinaryTypes.String, vals)
	defer plain.Release()
	dict := build(mem, dictStr, vals)
	defer dict.Release()
	sliced := array.NewSlice(dict, 1, 5)
	defer sliced.Release()
	want, got := make([]uint64, len(vals)), make([]uint64, len(vals))
	if err := kernels.HashColumns([]arrow.Array{plain}, want); err != nil {
		t.Fatal(err)
	}
	if err := kernels.HashColumns([]arrow.Array{dict}, got); err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("row %d: dictionary hash %#x, plain %#x", i, got[i], want[i])
		}
	}
	got = got[:4]
	if err := kernels.HashColumns([]arrow.Array{sliced}, got); err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if got[i] != want[i+1] {
			t.Errorf("sliced row %d: dictionary hash %#x, plain %#x", i, got[i], want[i+1])
		}
	}
}

func TestHashColumnsErrors(t *testing.T) {
	mem := newTestAllocator()
	defer mem.AssertSize(t, 0)
	a := build(mem, arrow.PrimitiveTypes.Int64, []any{int64(1), int64(2)})
	defer a.Release()
	l := build(mem, listI32, []any{[]int32{1}, []int32{}})
	defer l.Release()
	if err := kernels.HashColumns(nil, nil); !errors.Is(err, kernels.ErrInvalidArgument) {
		t.Errorf("no columns: %v", err)
	}
	if err := kernels.HashColumns([]arrow.Array{a}, make([]uint64, 3)); !errors.Is(err, kernels.ErrLengthMismatch) {
		t.Errorf("length: %v", err)
	}
	if err := kernels.HashColumns([]arrow.Array{a, l}, make([]uint64, 2)); !errors.Is(err, kernels.ErrUnsupportedType) {
		t.Errorf("list key: %v", err)
	}
}

// TestKeyGroups checks KeyGroup, OperatorIndex and KeyGroupRange against
// each other and against Flink's KeyGroupRangeAssignment formulas.
func TestKeyGroups(t *testing.T) {
	check := func(maxP, p int) {
		t.Helper()
		next := 0
		for i := range p {
			start, end := kernels.KeyGroupRange(i, maxP, p)
			// Flink: computeKeyGroupRangeForOperatorIndex (end inclusive).
			fStart := (i*maxP + p - 1) / p
			fEnd := ((i+1)*maxP - 1) / p
			if start != fStart || end != fEnd+1 {
				t.Fatalf("maxP=%d p=%d instance %d: [%d, %d), Flink [%d, %d]", maxP, p, i, start, end, fStart, fEnd)
			}
			if start != next || end <= start {
				t.Fatalf("maxP=%d p=%d instance %d: range [%d, %d) after %d", maxP, p, i, start, end, next)
			}
			next = end
			for kg := start; kg < end; kg++ {
				if got := kernels.OperatorIndex(kg, maxP, p); got != i {
					t.Fatalf("maxP=%d p=%d: key group %d is in the range of %d but OperatorIndex says %d", maxP, p, kg, i, got)
				}
			}
		}
		if next != maxP {
			t.Fatalf("maxP=%d p=%d: ranges end at %d", maxP, p, next)
		}
	}
	for maxP := 1; maxP <= 130; maxP++ {
		for p := 1; p <= maxP; p++ {
			check(maxP, p)
		}
	}
	for _, c := range [][2]int{{1 << 15, 1}, {1 << 15, 7}, {1 << 15, 1 << 15}, {1000, 999}} {
		check(c[0], c[1])
	}
	for _, h := range []uint64{0, 1, 127, 128, math.MaxUint64} {
		for _, maxP := range []int{1, 7, 128} {
			if kg := kernels.KeyGroup(h, maxP); kg != int(h%uint64(maxP)) || kg < 0 || kg >= maxP {
				t.Errorf("KeyGroup(%d, %d) = %d", h, maxP, kg)
			}
		}
	}
}

// partitionSetup is a batch for the partition tests: an id column (the
// row number) followed by key columns.
type partitionSetup struct {
	keyTypes []arrow.DataType
	distinct int // distinct values per key column (0: random values)
	nullPct  int
}

func (s partitionSetup) batch(mem memory.Allocator, rng *rand.Rand, n, off int) testBatch {
	types := append([]arrow.DataType{arrow.PrimitiveTypes.Int64}, s.keyTypes...)
	b := randBatch(mem, rng, valueGen{nullPct: s.nullPct}, types, n, off)
	// Rebuild the columns: the row number, then keys drawn from a few
	// distinct values (so that equal keys occur) or random ones.
	cols := []arrow.Array{}
	fields := b.rec.Schema().Fields()
	idVals := make([]any, n)
	for i := range idVals {
		idVals[i] = int64(i)
	}
	cols = append(cols, slicedArray(mem, fields[0].Type, append(make([]any, off), idVals...), off, n))
	b.cols[0] = idVals
	for c, dt := range s.keyTypes {
		vals := valueGen{nullPct: s.nullPct}.values(rng, dt, n)
		if s.distinct > 0 {
			pool := valueGen{nullPct: s.nullPct}.values(rng, dt, s.distinct)
			for i := range vals {
				vals[i] = pool[rng.IntN(len(pool))]
			}
		}
		b.cols[c+1] = vals
		cols = append(cols, slicedArray(mem, dt, append(valueGen{}.values(rng, dt, off), vals...), off, n))
	}
	b.rec.Release()
	b.rec = array.NewRecordBatch(arrow.NewSchema(fields, nil), cols, int64(n))
	for _, c := range cols {
		c.Release()
	}
	return b
}

// checkPartition checks Partition's output for a batch whose first column
// is the row number.
func checkPartition(t testing.TB, what string, b testBatch, keyCols []int, maxP, p int, out []arrow.RecordBatch) {
	t.Helper()
	n := int(b.rec.NumRows())
	if len(out) != p {
		t.Fatalf("%s: %d outputs, want %d", what, len(out), p)
	}
	types := make([]arrow.DataType, len(keyCols))
	keyVals := make([][]any, len(keyCols))
	for i, c := range keyCols {
		types[i], keyVals[i] = b.rec.Schema().Field(c).Type, b.cols[c]
	}
	hashes := refHashes(types, keyVals, n)
	seen := make([]bool, n)
	keyOwner := map[string]int{}
	total := 0
	for inst, part := range out {
		if part == nil {
			continue
		}
		if part.NumRows() == 0 {
			t.Errorf("%s: instance %d got an empty batch instead of nil", what, inst)
		}
		if !part.Schema().Equal(b.rec.Schema()) {
			t.Fatalf("%s: instance %d: schema %s", what, inst, part.Schema())
		}
		start, end := kernels.KeyGroupRange(inst, maxP, p)
		ids := valuesOf(part.Column(0))
		prev := int64(-1)
		for r, v := range ids {
			id := v.(int64)
			if id <= prev {
				t.Fatalf("%s: instance %d row %d: id %d after %d, order lost", what, inst, r, id, prev)
			}
			prev = id
			if seen[id] {
				t.Fatalf("%s: row %d sent twice", what, id)
			}
			seen[id] = true
			kg := kernels.KeyGroup(hashes[id], maxP)
			if kg < start || kg >= end || kernels.OperatorIndex(kg, maxP, p) != inst {
				t.Fatalf("%s: row %d (key group %d) went to instance %d, which owns [%d, %d)", what, id, kg, inst, start, end)
			}
			var key strings.Builder
			for _, kv := range keyVals {
				fmt.Fprintf(&key, "%#v|", kv[id])
			}
			if o, ok := keyOwner[key.String()]; ok && o != inst {
				t.Fatalf("%s: key %s went to instances %d and %d", what, key.String(), o, inst)
			}
			keyOwner[key.String()] = inst
		}
		for c := range b.cols {
			want := make([]any, len(ids))
			for r, v := range ids {
				want[r] = b.cols[c][v.(int64)]
			}
			checkValues(t, fmt.Sprintf("%s instance %d column %d", what, inst, c), part.Column(c), want)
		}
		total += len(ids)
		if int(part.NumRows()) == n && part != b.rec {
			t.Errorf("%s: all rows went to instance %d but the batch was copied", what, inst)
		}
	}
	if total != n {
		t.Fatalf("%s: %d rows out of %d", what, total, n)
	}
}

func releaseAll(recs []arrow.RecordBatch) {
	for _, r := range recs {
		if r != nil {
			r.Release()
		}
	}
}

func TestPartition(t *testing.T) {
	rng := newRand(t)
	setups := map[string]partitionSetup{
		"int64":             {keyTypes: []arrow.DataType{arrow.PrimitiveTypes.Int64}},
		"int64-few-nulls":   {keyTypes: []arrow.DataType{arrow.PrimitiveTypes.Int64}, distinct: 5, nullPct: 20},
		"string":            {keyTypes: []arrow.DataType{arrow.BinaryTypes.String}, distinct: 20},
		"dict":              {keyTypes: []arrow.DataType{dictStr}, distinct: 4, nullPct: 10},
		"float64":           {keyTypes: []arrow.DataType{arrow.PrimitiveTypes.Float64}, distinct: 6},
		"bool":              {keyTypes: []arrow.DataType{arrow.FixedWidthTypes.Boolean}, distinct: 2},
		"int32,string,bool": {keyTypes: []arrow.DataType{arrow.PrimitiveTypes.Int32, arrow.BinaryTypes.String, arrow.FixedWidthTypes.Boolean}, distinct: 3, nullPct: 10},
		"one-key":           {keyTypes: []arrow.DataType{arrow.PrimitiveTypes.Int64}, distinct: 1},
	}
	params := [][2]int{{128, 4}, {128, 1}, {7, 3}, {1000, 7}, {1 << 17, 5}, {4, 4}, {128, 128}}
	for name, s := range setups {
		t.Run(name, func(t *testing.T) {
			mem := newTestAllocator()
			defer mem.AssertSize(t, 0)
			for _, n := range []int{0, 1, 50, 700} {
				b := s.batch(mem, rng, n, n%7)
				keyCols := make([]int, len(s.keyTypes))
				for i := range keyCols {
					keyCols[i] = i + 1
				}
				for _, pr := range params {
					what := fmt.Sprintf("n=%d maxP=%d p=%d", n, pr[0], pr[1])
					out, err := kernels.Partition(mem, b.rec, keyCols, pr[0], pr[1])
					if err != nil {
						t.Fatalf("%s: %v", what, err)
					}
					checkPartition(t, what, b, keyCols, pr[0], pr[1], out)
					releaseAll(out)
				}
				b.rec.Release()
			}
		})
	}
}

func TestPartitionErrors(t *testing.T) {
	mem := newTestAllocator()
	defer mem.AssertSize(t, 0)
	rng := newRand(t)
	b := randBatch(mem, rng, valueGen{}, []arrow.DataType{arrow.PrimitiveTypes.Int64, listI32}, 10, 0)
	defer b.rec.Release()
	cases := []struct {
		keys    []int
		maxP, p int
		want    error
	}{
		{[]int{0}, 4, 8, kernels.ErrInvalidArgument},
		{[]int{0}, 4, 0, kernels.ErrInvalidArgument},
		{[]int{0}, 0, 1, kernels.ErrInvalidArgument},
		{[]int{0}, 1 << 20, 1 << 17, kernels.ErrInvalidArgument},
		{nil, 4, 2, kernels.ErrInvalidArgument},
		{[]int{2}, 4, 2, kernels.ErrIndexOutOfRange},
		{[]int{-1}, 4, 2, kernels.ErrIndexOutOfRange},
		{[]int{1}, 4, 2, kernels.ErrUnsupportedType},
		{[]int{1}, 4, 1, kernels.ErrUnsupportedType},
	}
	empty := b.rec.NewSlice(0, 0)
	defer empty.Release()
	for _, rec := range []arrow.RecordBatch{b.rec, empty} {
		for _, c := range cases {
			out, err := kernels.Partition(mem, rec, c.keys, c.maxP, c.p)
			if !errors.Is(err, c.want) {
				releaseAll(out)
				t.Errorf("%d rows, keys %v maxP %d p %d: %v, want %v", rec.NumRows(), c.keys, c.maxP, c.p, err, c.want)
			}
		}
	}
}
