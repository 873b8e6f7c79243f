package badgerstore_test

import (
	"context"
	"encoding/binary"
	"testing"

	"github.com/meshflow/meshflow/persistence"
	"github.com/meshflow/meshflow/persistence/badgerstore"
)

// BenchmarkApply writes batches of 1024 puts (16-byte keys, 100-byte
// values) into a namespace, with the default options.
func BenchmarkApply(b *testing.B) {
	for _, bc := range []struct {
		name string
		o    badgerstore.Options
	}{
		{"OnDisk", badgerstore.Options{Dir: b.TempDir()}},
		{"InMemory", badgerstore.Options{InMemory: true}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := open(b, bc.o)
			ns := s.Namespace("job").Namespace("op/0")
			ctx := context.Background()
			const n = 1024
			var batch persistence.Batch
			key, val := make([]byte, 16), make([]byte, 100)
			var seq uint64
			b.SetBytes(n * int64(len(key)+len(val)))
			b.ReportAllocs()
			for b.Loop() {
				batch.Reset()
				for range n {
					seq++
					binary.BigEndian.PutUint64(key[8:], seq*0x9e3779b97f4a7c15) // spread keys
					batch.Put(key, val)
				}
				if err := ns.Apply(ctx, &batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(seq)/b.Elapsed().Seconds(), "keys/s")
		})
	}
}
