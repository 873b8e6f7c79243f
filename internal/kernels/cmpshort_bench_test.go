package kernels

import (
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// BenchmarkCompareShortScalar compares a string column of event types
// (bid 92%, auction 6%, person 2%, as Nexmark's mix) with "bid".
func BenchmarkCompareShortScalar(b *testing.B) {
	mem := memory.NewGoAllocator()
	bld := array.NewStringBuilder(mem)
	types := []string{"person", "auction", "auction", "auction"}
	for i := range 4096 {
		if i%50 < 4 {
			bld.Append(types[i%4])
		} else {
			bld.Append("bid")
		}
	}
	arr := bld.NewStringArray()
	defer arr.Release()
	vals := binaryView[int32](arr.Data())
	out := make([]byte, (arr.Len()+7)/8)
	b.SetBytes(int64(arr.Len()))
	for b.Loop() {
		cmpShortScalar(true, vals, []byte("bid"), out)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(arr.Len()), "ns/row")
}

// TestCompareShortScalarForgedOffsets: offsets out of the data (as a
// forged IPC frame may carry) give some result, never a read outside the
// data (under -race, checkptr stops the test on such a read).
func TestCompareShortScalarForgedOffsets(t *testing.T) {
	data := []byte(strings.Repeat("bid", 30))
	for _, bad := range []int32{1 << 30, -1 << 30, 89, 88} {
		offs := make([]int32, 31)
		for i := range offs {
			offs[i] = int32(3 * i)
		}
		offs[2] = bad
		out := make([]byte, 4)
		v := binaryValues[int32]{data: data, offs: offs}
		func() {
			defer func() { _ = recover() }() // the tail's slicing may panic: caught
			cmpShortScalar(true, v, []byte("bid"), out)
		}()
		if out[0]&1 != 1 || out[1] != 0xff {
			t.Errorf("offset %d: well-formed values compared wrong: %08b", bad, out)
		}
	}
	short := binaryValues[int32]{data: []byte("bid"), offs: []int32{0, 3, 1 << 20, -5, 3, 3, 3, 3, 3, 3}}
	func() {
		defer func() { _ = recover() }()
		cmpShortScalar(true, short, []byte("bid"), make([]byte, 2))
	}()
}
