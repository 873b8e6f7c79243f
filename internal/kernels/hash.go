package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/zeebo/xxh3"
)

// NullHash is the hash of a null key value.
const NullHash uint64 = 0x6e756c6c6b657921

// hashCombineConstant is the odd constant of HashCombine.
const hashCombineConstant uint64 = 0x9e3779b97f4a7c15

// HashCombine folds the hash c of the next key column into the running hash
// h of the previous ones. It is not symmetric, so (x, y) and (y, x) hash
// differently.
func HashCombine(h, c uint64) uint64 {
	return h ^ (c + hashCombineConstant + h<<6 + h>>2)
}

// HashColumns writes the hash of row i of the key columns cols to out[i].
//
// The hash is deterministic across processes, runs and versions of this
// package, because key groups (and with them the placement of keyed state)
// derive from it; it must never change. A single column hashes to
// xxh3.Hash of the row value's bytes: the little-endian value for
// fixed-width types, 0 or 1 (one byte) for booleans, the bytes of strings
// and binaries. Floats are normalised first (-0 to +0, every NaN to one
// NaN). Dictionary-encoded columns hash their values, so they hash like the
// plain column. A null hashes to NullHash. Several columns combine
// left to right with HashCombine.
//
// The value bytes are hashed, not the logical value: int64 5 and int32 5,
// or a timestamp in ms and the same instant in µs, hash differently. Key
// columns must therefore have the same type everywhere they are hashed.
//
// All columns must have len(out) rows. Types other than the primitive,
// string, binary and dictionary ones are ErrUnsupportedType.
func HashColumns(cols []arrow.Array, out []uint64) error {
	if len(cols) == 0 {
		return fmt.Errorf("hash: %w: no key columns", ErrInvalidArgument)
	}
	for i, c := range cols {
		if c.Len() != len(out) {
			return fmt.Errorf("hash: %w: key column %d has %d rows, want %d", ErrLengthMismatch, i, c.Len(), len(out))
		}
	}
	if err := hashArray(cols[0], out); err != nil {
		return err
	}
	if len(cols) == 1 {
		return nil
	}
	p := hashPool.Get().(*[]uint64)
	defer hashPool.Put(p)
	if cap(*p) < len(out) {
		*p = make([]uint64, len(out))
	}
	tmp := (*p)[:len(out)]
	for _, c := range cols[1:] {
		if err := hashArray(c, tmp); err != nil {
			return err
		}
		for i, h := range tmp {
			out[i] = HashCombine(out[i], h)
		}
	}
	return nil
}

var (
	hashPool   = sync.Pool{New: func() any { return new([]uint64) }}
	targetPool = sync.Pool{New: func() any { return new([]uint16) }}
)

// hashArray writes the hash of every row of arr to out (len(out) ==
// arr.Len()).
func hashArray(arr arrow.Array, out []uint64) error {
	d := arr.Data()
	switch arr.DataType().ID() {
	case arrow.NULL:
		for i := range out {
			out[i] = NullHash
		}
		return nil
	case arrow.BOOL:
		hashBool(d, out)
	case arrow.INT8, arrow.UINT8:
		hashFixed(d, 1, out)
	case arrow.INT16, arrow.UINT16, arrow.FLOAT16:
		hashFixed(d, 2, out)
	case arrow.INT32, arrow.UINT32, arrow.DATE32, arrow.TIME32, arrow.INTERVAL_MONTHS, arrow.DECIMAL32:
		hashFixed(d, 4, out)
	case arrow.INT64, arrow.UINT64, arrow.DATE64, arrow.TIME64, arrow.TIMESTAMP, arrow.DURATION,
		arrow.INTERVAL_DAY_TIME, arrow.DECIMAL64:
		hashFixed(d, 8, out)
	case arrow.DECIMAL128, arrow.INTERVAL_MONTH_DAY_NANO:
		hashFixed(d, 16, out)
	case arrow.DECIMAL256:
		hashFixed(d, 32, out)
	case arrow.FIXED_SIZE_BINARY:
		hashFixed(d, d.DataType().(*arrow.FixedSizeBinaryType).ByteWidth, out)
	case arrow.FLOAT32:
		var buf [4]byte
		for i, v := range fixedValues[float32](d) {
			if v == 0 {
				v = 0
			} else if v != v {
				v = float32(math.NaN())
			}
			binary.LittleEndian.PutUint32(buf[:], math.Float32bits(v))
			out[i] = xxh3.Hash(buf[:])
		}
	case arrow.FLOAT64:
		var buf [8]byte
		for i, v := range fixedValues[float64](d) {
			if v == 0 {
				v = 0
			} else if v != v {
				v = math.NaN()
			}
			binary.LittleEndian.PutUint64(buf[:], math.Float64bits(v))
			out[i] = xxh3.Hash(buf[:])
		}
	case arrow.STRING, arrow.BINARY:
		hashBinary(binaryView[int32](d), out)
	case arrow.LARGE_STRING, arrow.LARGE_BINARY:
		hashBinary(binaryView[int64](d), out)
	case arrow.DICTIONARY:
		dict := arr.(*array.Dictionary)
		dh := make([]uint64, dict.Dictionary().Len())
		if err := hashArray(dict.Dictionary(), dh); err != nil {
			return err
		}
		for i := range out {
			if dict.IsValid(i) {
				out[i] = dh[dict.GetValueIndex(i)]
			}
		}
	default:
		return fmt.Errorf("hash: %w: key type %s", ErrUnsupportedType, arr.DataType())
	}
	if valid := validityBits(d); valid != nil {
		off := d.Offset()
		for i := range out {
			if bitutil.BitIsNotSet(valid, off+i) {
				out[i] = NullHash
			}
		}
	}
	return nil
}

// hashable reports whether HashColumns accepts columns of type dt.
func hashable(dt arrow.DataType) bool {
	switch dt.ID() {
	case arrow.NULL, arrow.BOOL, arrow.INT8, arrow.UINT8, arrow.INT16, arrow.UINT16, arrow.FLOAT16,
		arrow.INT32, arrow.UINT32, arrow.DATE32, arrow.TIME32, arrow.INTERVAL_MONTHS, arrow.DECIMAL32,
		arrow.INT64, arrow.UINT64, arrow.DATE64, arrow.TIME64, arrow.TIMESTAMP, arrow.DURATION,
		arrow.INTERVAL_DAY_TIME, arrow.DECIMAL64, arrow.DECIMAL128, arrow.INTERVAL_MONTH_DAY_NANO,
		arrow.DECIMAL256, arrow.FIXED_SIZE_BINARY, arrow.FLOAT32, arrow.FLOAT64,
		arrow.STRING, arrow.BINARY, arrow.LARGE_STRING, arrow.LARGE_BINARY:
		return true
	case arrow.DICTIONARY:
		return hashable(dt.(*arrow.DictionaryType).ValueType)
	}
	return false
}

func hashFixed(d arrow.ArrayData, width int, out []uint64) {
	if len(out) == 0 {
		return
	}
	b := d.Buffers()[1].Bytes()[d.Offset()*width:]
	if width == 8 {
		b = b[:len(out)*8]
		for i := range out {
			out[i] = xxh3.Hash(b[i*8 : i*8+8])
		}
		return
	}
	for i := range out {
		out[i] = xxh3.Hash(b[i*width : (i+1)*width])
	}
}

func hashBool(d arrow.ArrayData, out []uint64) {
	if len(out) == 0 {
		return
	}
	h0, h1 := xxh3.Hash([]byte{0}), xxh3.Hash([]byte{1})
	bits, off := d.Buffers()[1].Bytes(), d.Offset()
	for i := range out {
		if bitutil.BitIsSet(bits, off+i) {
			out[i] = h1
		} else {
			out[i] = h0
		}
	}
}

func hashBinary[O int32 | int64](v binaryValues[O], out []uint64) {
	for i := range out {
		out[i] = xxh3.Hash(v.at(i))
	}
}

// KeyGroup returns the key group of a key hash: hash mod maxParallelism.
// maxParallelism must be positive.
func KeyGroup(hash uint64, maxParallelism int) int {
	return int(hash % uint64(maxParallelism))
}

// OperatorIndex returns the operator instance that owns keyGroup when an
// operator with the given parallelism has maxParallelism key groups:
// keyGroup*parallelism/maxParallelism, so every instance owns one
// contiguous range of key groups (see KeyGroupRange).
func OperatorIndex(keyGroup, maxParallelism, parallelism int) int {
	return keyGroup * parallelism / maxParallelism
}

// KeyGroupRange returns the key groups [start, end) that instance owns,
// consistent with OperatorIndex. With parallelism <= maxParallelism every
// range is non-empty.
func KeyGroupRange(instance, maxParallelism, parallelism int) (start, end int) {
	start = (instance*maxParallelism + parallelism - 1) / parallelism
	end = ((instance+1)*maxParallelism + parallelism - 1) / parallelism
	return start, end
}

// routeCache holds key group → instance tables by (maxParallelism,
// parallelism).
var routeCache sync.Map // [2]int -> []uint16

// maxRouteTable bounds the size of a cached routing table.
const maxRouteTable = 1 << 16

func routeTable(maxParallelism, parallelism int) []uint16 {
	key := [2]int{maxParallelism, parallelism}
	if t, ok := routeCache.Load(key); ok {
		return t.([]uint16)
	}
	t := make([]uint16, maxParallelism)
	for kg := range t {
		t[kg] = uint16(OperatorIndex(kg, maxParallelism, parallelism))
	}
	routeCache.Store(key, t)
	return t
}

// Partition splits rec by the hash of its key columns keyCols into one
// batch per instance of an operator with the given parallelism, routing
// each row to OperatorIndex(KeyGroup(hash, maxParallelism), ...). Rows keep
// their relative order. The result has parallelism entries; entry j is nil
// when no row goes to instance j. When all rows go to one instance, its
// entry is rec itself, retained.
func Partition(mem memory.Allocator, rec arrow.RecordBatch, keyCols []int, maxParallelism, parallelism int) ([]arrow.RecordBatch, error) {
	parts, _, err := partition(mem, rec, keyCols, maxParallelism, parallelism, false)
	return parts, err
}

// PartitionRows is [Partition] that also returns, for every part, which
// rows of rec it holds, in order: rows[t] is nil when part t is rec whole
// (or empty).
func PartitionRows(mem memory.Allocator, rec arrow.RecordBatch, keyCols []int, maxParallelism, parallelism int) ([]arrow.RecordBatch, [][]int32, error) {
	return partition(mem, rec, keyCols, maxParallelism, parallelism, true)
}

func partition(mem memory.Allocator, rec arrow.RecordBatch, keyCols []int, maxParallelism, parallelism int, wantRows bool) ([]arrow.RecordBatch, [][]int32, error) {
	if maxParallelism < 1 || parallelism < 1 || parallelism > maxParallelism || parallelism > math.MaxUint16 {
		return nil, nil, fmt.Errorf("partition: %w: parallelism %d, max parallelism %d", ErrInvalidArgument, parallelism, maxParallelism)
	}
	if len(keyCols) == 0 {
		return nil, nil, fmt.Errorf("partition: %w: no key columns", ErrInvalidArgument)
	}
	cols := make([]arrow.Array, len(keyCols))
	for i, c := range keyCols {
		if c < 0 || c >= int(rec.NumCols()) {
			return nil, nil, fmt.Errorf("partition: %w: key column %d of %d", ErrIndexOutOfRange, c, rec.NumCols())
		}
		cols[i] = rec.Column(c)
		// Checked up front so that an unsupported key type fails on every
		// batch, also on those that need no hashing.
		if !hashable(cols[i].DataType()) {
			return nil, nil, fmt.Errorf("partition: hash: %w: key type %s", ErrUnsupportedType, cols[i].DataType())
		}
	}
	out := make([]arrow.RecordBatch, parallelism)
	var rows [][]int32
	if wantRows {
		rows = make([][]int32, parallelism)
	}
	n := int(rec.NumRows())
	if n == 0 {
		return out, rows, nil
	}
	if parallelism == 1 {
		rec.Retain()
		out[0] = rec
		return out, rows, nil
	}
	hp := hashPool.Get().(*[]uint64)
	defer hashPool.Put(hp)
	if cap(*hp) < n {
		*hp = make([]uint64, n)
	}
	hashes := (*hp)[:n]
	if err := HashColumns(cols, hashes); err != nil {
		return nil, nil, fmt.Errorf("partition: %w", err)
	}

	counts := make([]int32, parallelism+1) // counts[t+1]: rows for instance t
	tp := targetPool.Get().(*[]uint16)
	defer targetPool.Put(tp)
	if cap(*tp) < n {
		*tp = make([]uint16, n)
	}
	targets := (*tp)[:n]
	if maxParallelism <= maxRouteTable && maxParallelism <= 4*n {
		table := routeTable(maxParallelism, parallelism)
		if maxParallelism&(maxParallelism-1) == 0 {
			m := uint64(maxParallelism - 1)
			for i, h := range hashes {
				t := table[h&m]
				targets[i] = t
				counts[t+1]++
			}
		} else {
			for i, h := range hashes {
				t := table[h%uint64(maxParallelism)]
				targets[i] = t
				counts[t+1]++
			}
		}
	} else {
		for i, h := range hashes {
			t := uint16(OperatorIndex(KeyGroup(h, maxParallelism), maxParallelism, parallelism))
			targets[i] = t
			counts[t+1]++
		}
	}
	for t, c := range counts[1:] {
		if int(c) == n {
			rec.Retain()
			out[t] = rec
			return out, rows, nil
		}
	}
	for t := 1; t <= parallelism; t++ {
		counts[t] += counts[t-1]
	}
	ip := pooledIndices(n)
	defer idxPool.Put(ip)
	idx := *ip
	next := append([]int32(nil), counts[:parallelism]...)
	for i, t := range targets {
		idx[next[t]] = int32(i)
		next[t]++
	}
	for t := range parallelism {
		start, end := counts[t], counts[t+1]
		if start == end {
			continue
		}
		part, err := takeUnchecked(mem, rec, idx[start:end])
		if err != nil {
			for _, p := range out {
				if p != nil {
					p.Release()
				}
			}
			return nil, nil, fmt.Errorf("partition: %w", err)
		}
		out[t] = part
		if wantRows {
			rows[t] = append([]int32(nil), idx[start:end]...)
		}
	}
	return out, rows, nil
}
