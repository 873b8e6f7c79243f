package meshflow

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/meshflow/meshflow/internal/testutil"
)

// TestEntryIndex: the cache's open-addressing index agrees with a Go map
// under random puts, gets and deletes of keys of 0 to 40 bytes (many
// sharing a prefix, some colliding in few bits), through its growth and
// the backward shifts of deletion; one hash seed is forced low-entropy
// (zero) to cluster the probes.
func TestEntryIndex(t *testing.T) {
	seed := testutil.Seed(t)
	for _, hashSeed := range []uint64{0, rand.Uint64()} {
		t.Run(fmt.Sprint("hashseed=", hashSeed != 0), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, hashSeed))
			x := entryIndex{seed: hashSeed}
			ref := map[string]*cacheEntry{}
			key := func() []byte {
				b := make([]byte, r.IntN(41))
				for i := range b {
					b[i] = byte(r.IntN(3)) // few distinct bytes: shared prefixes
				}
				return b
			}
			for op := range 200_000 {
				k := key()
				switch r.IntN(4) {
				case 0, 1:
					if ref[string(k)] == nil {
						e := newEntry(nil, k)
						x.put(e)
						ref[e.key] = e
					}
				case 2:
					x.del(k)
					delete(ref, string(k))
				}
				if got, want := x.get(k), ref[string(k)]; got != want {
					t.Fatalf("op %d: get(%x) = %p, want %p", op, k, got, want)
				}
				if x.len() != len(ref) {
					t.Fatalf("op %d: %d entries, want %d", op, x.len(), len(ref))
				}
			}
			n := 0
			for _, s := range x.slots {
				if s.h != 0 {
					n++
					if ref[s.e.key] != s.e {
						t.Fatalf("slot of %x not in the reference", s.e.key)
					}
				}
			}
			for k, e := range ref {
				if x.get([]byte(k)) != e {
					t.Fatalf("%x lost", k)
				}
			}
			if n != len(ref) {
				t.Fatalf("%d slots used, want %d", n, len(ref))
			}
		})
	}
}
