package memstore_test

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
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

// TestSnapshotModel writes at random while snapshots of different ages are
// open, and checks each against a copy of the model taken when it opened:
// copy-on-write must hold across generations, splits and merges of blocks,
// and after older snapshots close.
func TestSnapshotModel(t *testing.T) {
	ctx := context.Background()
	s := memstore.New()
	defer s.Close()
	r := rand.New(rand.NewPCG(5, 6))
	model := map[string]string{}
	type open struct {
		snap persistence.Snapshot
		want map[string]string
	}
	var snaps []open
	check := func(o open) {
		t.Helper()
		got := map[string]string{}
		err := o.snap.Scan(ctx, func(k, v []byte) error {
			got[string(k[1:])] = string(v) // k[0] is the tag of a key of the root
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(got, o.want) {
			t.Fatalf("snapshot has %d keys, want %d (or values differ)", len(got), len(o.want))
		}
	}
	for round := range 60 {
		var b persistence.Batch
		for range 300 {
			k := fmt.Sprintf("%05d", r.IntN(3000))
			if r.IntN(3) == 0 {
				b.Delete([]byte(k))
				delete(model, k)
			} else {
				v := fmt.Sprint(round)
				b.Put([]byte(k), []byte(v))
				model[k] = v
			}
		}
		if err := s.Apply(ctx, &b); err != nil {
			t.Fatal(err)
		}
		switch r.IntN(4) {
		case 0:
			snap, err := persistence.OpenSnapshot(s)
			if err != nil {
				t.Fatal(err)
			}
			snaps = append(snaps, open{snap, maps.Clone(model)})
		case 1:
			if len(snaps) > 0 {
				i := r.IntN(len(snaps))
				check(snaps[i])
				if err := snaps[i].snap.Close(); err != nil {
					t.Fatal(err)
				}
				snaps = slices.Delete(snaps, i, i+1)
			}
		}
		for _, o := range snaps {
			check(o)
		}
	}
	for _, o := range snaps {
		o.snap.Close()
	}
}
