package persistence_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/meshflow/meshflow/persistence"
	"github.com/meshflow/meshflow/persistence/badgerstore"
	"github.com/meshflow/meshflow/persistence/memstore"
)

// BenchmarkOpenSnapshot measures OpenSnapshot and Close of a namespace of
// N keys, then one write to it (in memstore, the copy of one block of 512
// entries). Its time must not grow with N.
//
//	go test -run '^$' -bench BenchmarkOpenSnapshot ./persistence/
func BenchmarkOpenSnapshot(b *testing.B) {
	ctx := context.Background()
	backends := []struct {
		name string
		open func(b *testing.B) persistence.Store
	}{
		{"memstore", func(b *testing.B) persistence.Store { return memstore.New() }},
		{"badger", func(b *testing.B) persistence.Store {
			s, err := badgerstore.Open(ctx, badgerstore.Options{Dir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			return s
		}},
	}
	for _, be := range backends {
		for _, n := range []int{1_000, 100_000} {
			b.Run(fmt.Sprintf("%s/keys=%d", be.name, n), func(b *testing.B) {
				s := be.open(b)
				defer s.Close()
				ns := s.Namespace("op")
				var batch persistence.Batch
				for i := range n {
					batch.Put(fmt.Appendf(nil, "key-%08d", i), []byte("value"))
				}
				if err := ns.Apply(ctx, &batch); err != nil {
					b.Fatal(err)
				}
				var w persistence.Batch
				w.Put([]byte("key-00000000"), []byte("changed"))
				b.ResetTimer()
				for range b.N {
					snap, err := persistence.OpenSnapshot(ns)
					if err != nil {
						b.Fatal(err)
					}
					if err := ns.Apply(ctx, &w); err != nil {
						b.Fatal(err)
					}
					if err := snap.Close(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
