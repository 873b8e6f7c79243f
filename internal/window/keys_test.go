package window

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/kernels"
)

// TestEncodeKeys: the columnar key encoding of random int64 and string
// columns (with and without nulls; empty and long strings) is, row by
// row, that of the key encoders.
func TestEncodeKeys(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 4))
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	const n = 500
	ib, sb, ib2, sb2 := array.NewInt64Builder(mem), array.NewStringBuilder(mem), array.NewInt64Builder(mem), array.NewStringBuilder(mem)
	for range n {
		if r.IntN(5) == 0 {
			ib.AppendNull()
		} else {
			ib.Append(r.Int64() - r.Int64())
		}
		switch r.IntN(5) {
		case 0:
			sb.AppendNull()
		case 1:
			sb.Append(strings.Repeat("x", r.IntN(300)))
		default:
			sb.Append(string(rune('a' + r.IntN(26))))
		}
		ib2.Append(int64(r.IntN(3)))
		sb2.Append(strings.Repeat("y", r.IntN(200)))
	}
	cols := []arrow.Array{ib.NewArray(), sb.NewArray(), ib2.NewArray(), sb2.NewArray()}
	ib.Release()
	sb.Release()
	ib2.Release()
	sb2.Release()
	if cols[0].NullN() == 0 || cols[1].NullN() == 0 || cols[2].NullN() != 0 || cols[3].NullN() != 0 {
		t.Fatal("want nulls in the first two columns, none in the others")
	}
	defer func() {
		for _, c := range cols {
			c.Release()
		}
	}()
	encs := []keyEncoder{int64Key{}, stringKey{}, int64Key{}, stringKey{}}
	buf, off, _ := encodeKeys(cols, n, nil, nil, nil)
	for i := range n {
		var want []byte
		for j, enc := range encs {
			want = enc.append(want, cols[j], i)
		}
		if got := buf[off[i]:off[i+1]]; !bytes.Equal(got, want) {
			t.Fatalf("row %d: %x, want %x", i, got, want)
		}
	}
}

// TestKeyHasher: the key groups of a few rows (taken out of the columns)
// and of many (every row hashed) are those of kernels.HashColumns over the
// whole columns, modulo the max parallelism; without key columns, 0.
func TestKeyHasher(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 5))
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	const n, maxP = 400, 13
	ib, sb := array.NewInt64Builder(mem), array.NewStringBuilder(mem)
	for range n {
		if r.IntN(6) == 0 {
			ib.AppendNull()
		} else {
			ib.Append(r.Int64N(50))
		}
		if r.IntN(6) == 0 {
			sb.AppendNull()
		} else {
			sb.Append(strings.Repeat("s", r.IntN(4)))
		}
	}
	cols := []arrow.Array{ib.NewArray(), sb.NewArray()}
	ib.Release()
	sb.Release()
	defer func() {
		for _, c := range cols {
			c.Release()
		}
	}()
	for _, keys := range [][]arrow.Array{cols[:1], cols[1:], cols, nil} {
		var want []uint64
		if len(keys) > 0 {
			want = make([]uint64, n)
			if err := kernels.HashColumns(keys, want); err != nil {
				t.Fatal(err)
			}
		}
		h := keyHasher{mem: mem, maxP: maxP}
		for _, m := range []int{0, 1, 7, n/4 - 1, n / 4, n / 2, n} {
			rows := make([]int32, m)
			for i := range rows {
				rows[i] = int32(r.IntN(n))
			}
			got, err := h.of(keys, n, rows)
			if err != nil {
				t.Fatal(err)
			}
			for i, row := range rows {
				w := uint16(0)
				if keys != nil {
					w = uint16(kernels.KeyGroup(want[row], maxP))
				}
				if got[i] != w {
					t.Fatalf("%d key columns, %d rows: row %d: key group %d, want %d", len(keys), m, row, got[i], w)
				}
			}
		}
	}
}
