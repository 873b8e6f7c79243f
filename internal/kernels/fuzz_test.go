package kernels_test

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/meshflow/meshflow/internal/kernels"
)

// The fuzz targets take the shape of their input from the fuzzer (row
// count, offsets, the mask bit by bit, parallelism) and the column values
// from a generator seeded with the input. Run one with, for example:
//
//	go test -run '^$' -fuzz FuzzFilter ./internal/kernels/

func seededRand(data []byte) *rand.Rand {
	h := fnv.New64a()
	h.Write(data)
	return rand.New(rand.NewPCG(h.Sum64(), uint64(len(data))))
}

// fuzzTypes keeps the fuzz targets fast while covering every gather path:
// fixed-width, boolean, binary, fixed-size binary and arrow compute.
var fuzzTypes = []arrow.DataType{
	arrow.PrimitiveTypes.Int8, arrow.PrimitiveTypes.Int64, arrow.PrimitiveTypes.Float64,
	arrow.BinaryTypes.String, arrow.BinaryTypes.LargeBinary, arrow.FixedWidthTypes.Boolean,
	fsb3, dec128, listI32, dictStr,
}

func FuzzFilter(f *testing.F) {
	f.Add([]byte{0xff, 0x00, 0xf0, 0x0f}, uint8(0), uint8(0))
	f.Add([]byte("a mask with some true and some false bits"), uint8(3), uint8(5))
	f.Add(make([]byte, 200), uint8(64), uint8(1))
	f.Add([]byte{}, uint8(7), uint8(0))
	runs := make([]byte, 300)
	for i := range runs {
		if i/40%2 == 0 {
			runs[i] = 0xff
		}
	}
	f.Add(runs, uint8(1), uint8(9))
	f.Fuzz(func(t *testing.T, maskBytes []byte, off, maskOff uint8) {
		if len(maskBytes) > 512 {
			maskBytes = maskBytes[:512]
		}
		mem := newTestAllocator()
		defer mem.AssertSize(t, 0)
		rng := seededRand(maskBytes)
		// Each mask byte gives a row: bit 0 the value, bits 1-3 == 0 a
		// null.
		n := len(maskBytes)
		mv := make([]any, int(maskOff)+n)
		for i, c := range maskBytes {
			if c&0x0e != 0 {
				mv[int(maskOff)+i] = c&1 == 1
			}
		}
		mask := slicedArray(mem, arrow.FixedWidthTypes.Boolean, mv, int(maskOff), n).(*array.Boolean)
		defer mask.Release()
		b := randBatch(mem, rng, valueGen{nullPct: 20}, fuzzTypes, n, int(off))
		defer b.rec.Release()
		got, err := kernels.Filter(mem, b.rec, mask)
		if err != nil {
			t.Fatal(err)
		}
		defer got.Release()
		for c := range b.cols {
			checkValues(t, fmt.Sprintf("column %s", got.Schema().Field(c).Name), got.Column(c), refFilter(b.cols[c], mv[maskOff:]))
		}
	})
}

func FuzzPartition(f *testing.F) {
	f.Add([]byte("keys keys keys"), uint16(128), uint16(4), uint8(0))
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, uint16(7), uint16(3), uint8(5))
	f.Add(make([]byte, 100), uint16(1000), uint16(7), uint8(1))
	f.Add([]byte{}, uint16(4), uint16(4), uint8(0))
	f.Fuzz(func(t *testing.T, keys []byte, maxP, p uint16, off uint8) {
		if len(keys) > 1024 {
			keys = keys[:1024]
		}
		maxPar := 1 + int(maxP)
		par := 1 + int(p)%min(maxPar, 64)
		mem := newTestAllocator()
		defer mem.AssertSize(t, 0)
		n := len(keys)
		// Row i: id i, an int64 key from keys[i] (null when it is 0) and
		// a string key from its low bits.
		ids, k1, k2 := make([]any, n), make([]any, n), make([]any, n)
		for i, k := range keys {
			ids[i] = int64(i)
			if k != 0 {
				k1[i] = int64(k)
			}
			k2[i] = string("abcd"[k&3])
		}
		types := []arrow.DataType{arrow.PrimitiveTypes.Int64, arrow.PrimitiveTypes.Int64, arrow.BinaryTypes.String}
		cols := [][]any{ids, k1, k2}
		fields := make([]arrow.Field, len(types))
		arrs := make([]arrow.Array, len(types))
		for c, dt := range types {
			fields[c] = arrow.Field{Name: fmt.Sprint("c", c), Type: dt, Nullable: true}
			arrs[c] = slicedArray(mem, dt, append(valueGen{}.values(seededRand(keys), dt, int(off)), cols[c]...), int(off), n)
		}
		rec := array.NewRecordBatch(arrow.NewSchema(fields, nil), arrs, int64(n))
		for _, a := range arrs {
			a.Release()
		}
		defer rec.Release()
		for _, keyCols := range [][]int{{1}, {1, 2}, {2}} {
			out, err := kernels.Partition(mem, rec, keyCols, maxPar, par)
			if err != nil {
				t.Fatal(err)
			}
			checkPartition(t, fmt.Sprintf("keys %v maxP=%d p=%d", keyCols, maxPar, par), testBatch{rec: rec, cols: cols}, keyCols, maxPar, par, out)
			releaseAll(out)
		}
	})
}
