package join

import (
	"math/rand/v2"
	"testing"
)

// TestHashIndex: random swaps and clears against a Go map, with few
// distinct hashes (and hash 0) so that chains are emptied and refilled.
func TestHashIndex(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 5))
	var x hashIndex
	ref := map[uint64]int32{}
	for i := range 20000 {
		h := uint64(r.IntN(500)) << (r.IntN(2) * 40)
		switch r.IntN(4) {
		case 0:
			if _, ok := ref[h]; ok {
				x.set(h, -1)
				delete(ref, h)
			}
		case 1:
			if r.IntN(100) == 0 {
				x.reset()
				clear(ref)
			}
		default:
			old, ok := ref[h]
			if !ok {
				old = -1
			}
			if got := x.swap(h, int32(i)); got != old {
				t.Fatalf("swap(%d): old %d, want %d", h, got, old)
			}
			ref[h] = int32(i)
		}
		probe := uint64(r.IntN(500)) << (r.IntN(2) * 40)
		want, ok := ref[probe]
		if got := x.get(probe); (got >= 0) != ok || (ok && got != want) {
			t.Fatalf("get(%d) = %d, want %d (%v)", probe, got, want, ok)
		}
		if x.live != len(ref) {
			t.Fatalf("%d live, want %d", x.live, len(ref))
		}
	}
}
