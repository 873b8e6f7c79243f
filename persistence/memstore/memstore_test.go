package memstore_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/meshflow/meshflow/persistence"
	"github.com/meshflow/meshflow/persistence/memstore"
	"github.com/meshflow/meshflow/persistence/persistencetest"
)

func TestConformance(t *testing.T) {
	persistencetest.Run(t, func(t *testing.T) persistence.Store { return memstore.New() })
}

// TestBlocks drives the block index through splits and merges.
func TestBlocks(t *testing.T) {
	ctx := context.Background()
	s := memstore.New()
	defer s.Close()
	r := rand.New(rand.NewPCG(3, 4))
	model := map[int]bool{}
	for range 20 {
		var b persistence.Batch
		for range 500 {
			k := r.IntN(5000)
			if r.IntN(3) == 0 {
				b.Delete(fmt.Appendf(nil, "%05d", k))
				delete(model, k)
			} else {
				b.Put(fmt.Appendf(nil, "%05d", k), nil)
				model[k] = true
			}
		}
		if err := s.Apply(ctx, &b); err != nil {
			t.Fatal(err)
		}
		prev, n := -1, 0
		err := s.Scan(ctx, nil, func(k, _ []byte) error {
			var i int
			if _, err := fmt.Sscanf(string(k), "%d", &i); err != nil {
				return err
			}
			if i <= prev || !model[i] {
				return fmt.Errorf("scan: %d after %d, in model: %v", i, prev, model[i])
			}
			prev = i
			n++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n != len(model) || s.Len() != len(model) {
			t.Fatalf("scan saw %d keys, Len = %d, model has %d", n, s.Len(), len(model))
		}
	}
}
