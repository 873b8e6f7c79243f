package queries

import (
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
)

// TestDivisibility compares the multiplicative divisibility test with %,
// on edge values and random ones (MESHFLOW_SEED replays a run).
func TestDivisibility(t *testing.T) {
	seed := uint64(rand.Int64())
	if s := os.Getenv("MESHFLOW_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		seed = v
	}
	t.Logf("MESHFLOW_SEED=%d", seed)
	r := rand.New(rand.NewPCG(seed, seed))
	divisors := []int64{1, 2, 3, 7, 64, 96, 123, -123, 1 << 40, math.MaxInt64, math.MinInt64, -1}
	values := []int64{0, 1, -1, 123, -123, 246, 122, 124, math.MaxInt64, math.MinInt64, math.MinInt64 + 1, 1 << 62}
	for range 200 {
		divisors = append(divisors, r.Int64N(1000)+1, -r.Int64N(1<<20)-1, r.Int64())
	}
	for _, m := range divisors {
		div := newDivisibility(m)
		vals := append([]int64(nil), values...)
		for range 200 {
			vals = append(vals, r.Int64(), r.Int64N(1000)*m, -r.Int64N(1000)*m+1)
		}
		for _, a := range vals {
			if got, want := div.divides(a), a%m == 0; got != want {
				t.Fatalf("%d divides %d: got %v, want %v", m, a, got, want)
			}
		}
	}
}
