package actors

import (
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/messages"
)

// TestSelectPositions compares the word-at-a-time selection with a row at
// a time, over masks with nulls, offsets (sliced masks) and lengths around
// word boundaries, for lineages with explicit positions and with a base.
func TestSelectPositions(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	seed := rand.Uint64()
	if v := os.Getenv("MESHFLOW_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("MESHFLOW_SEED: %v", err)
		}
	}
	t.Logf("seed %d (rerun with MESHFLOW_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	for iter := 0; iter < 300; iter++ {
		n := rng.IntN(300)
		b := array.NewBooleanBuilder(mem)
		for range n {
			switch rng.IntN(5) {
			case 0:
				b.AppendNull()
			default:
				b.Append(rng.IntN(2) == 0)
			}
		}
		full := b.NewBooleanArray()
		b.Release()
		lo := 0
		if n > 0 {
			lo = rng.IntN(n + 1)
		}
		hi := lo + rng.IntN(n-lo+1)
		mask := array.NewSlice(full, int64(lo), int64(hi)).(*array.Boolean)
		rows := mask.Len()
		lins := []*messages.Lineage{{Origin: "o", Base: uint64(rng.IntN(1000))}}
		explicit := make([]uint64, rows)
		for i := range explicit {
			explicit[i] = rng.Uint64()
		}
		lins = append(lins, &messages.Lineage{Origin: "o", Pos: explicit})
		for _, in := range lins {
			var want []uint64
			for i := 0; i < rows; i++ {
				if mask.IsValid(i) && mask.Value(i) {
					want = append(want, in.At(i))
				}
			}
			got := selectPositions(in, mask, len(want))
			if !slices.Equal(got, want) {
				t.Fatalf("seed %d iteration %d (rows %d, offset %d): got %v, want %v", seed, iter, rows, lo, got, want)
			}
		}
		mask.Release()
		full.Release()
	}
}
