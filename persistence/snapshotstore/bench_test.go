package snapshotstore_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/meshflow/meshflow/persistence"
	"github.com/meshflow/meshflow/persistence/badgerstore"
	"github.com/meshflow/meshflow/persistence/snapshotstore"
)

// BenchmarkPut measures the upload of one task's state at a checkpoint:
// OpenSnapshot of a namespace of N keys (16-byte keys, 100-byte values) in
// an on-disk Badger with the default options, Encode and Put into the Object Store
// ("snapshot+encode+put"), against the tightest reference: PutBytes of the
// same encoded bytes, built in memory beforehand ("putbytes"), which is
// the Object Store's own cost. "snapshot+encode" (into io.Discard) is the
// part of the first that is not the upload. MB/s counts the encoded bytes. Both delete
// the object after each upload, outside the timer.
//
//	go test -run '^$' -bench BenchmarkPut -benchtime 10x ./persistence/snapshotstore/
func BenchmarkPut(b *testing.B) {
	ctx := context.Background()
	st, js := bucket(b)
	obs, err := js.ObjectStore(ctx, snapshotstore.DefaultBucket)
	if err != nil {
		b.Fatal(err)
	}
	meta := bytes.Repeat([]byte("m"), 256)
	for _, n := range []int{20_000, 200_000} {
		// A node's database: the default options.
		s, err := badgerstore.Open(ctx, badgerstore.Options{Dir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		ns := s.Namespace("job").Namespace("op/0")
		val := bytes.Repeat([]byte("v"), 100)
		var batch persistence.Batch
		for i := range n {
			batch.Put(fmt.Appendf(nil, "key-%012d", i), val)
			if batch.Len() == 10000 || i == n-1 {
				if err := ns.Apply(ctx, &batch); err != nil {
					b.Fatal(err)
				}
				batch.Reset()
			}
		}
		snap, err := persistence.OpenSnapshot(ns)
		if err != nil {
			b.Fatal(err)
		}
		var enc bytes.Buffer
		if _, err := snapshotstore.Encode(ctx, &enc, meta, snap); err != nil {
			b.Fatal(err)
		}
		snap.Close()
		encoded := enc.Bytes()
		name := snapshotstore.ObjectName("bench", 1, "op/0")

		b.Run(fmt.Sprintf("keys=%d/snapshot+encode+put", n), func(b *testing.B) {
			b.SetBytes(int64(len(encoded)))
			for range b.N {
				snap, err := persistence.OpenSnapshot(ns)
				if err != nil {
					b.Fatal(err)
				}
				h, err := st.Put(ctx, "bench", 1, "op/0", meta, snap)
				if err != nil {
					b.Fatal(err)
				}
				if err := snap.Close(); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if h.Size != int64(len(encoded)) {
					b.Fatalf("object of %d bytes, want %d", h.Size, len(encoded))
				}
				if err := st.Delete(ctx, h.Object); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
		b.Run(fmt.Sprintf("keys=%d/snapshot+encode", n), func(b *testing.B) {
			b.SetBytes(int64(len(encoded)))
			for range b.N {
				snap, err := persistence.OpenSnapshot(ns)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := snapshotstore.Encode(ctx, io.Discard, meta, snap); err != nil {
					b.Fatal(err)
				}
				if err := snap.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("keys=%d/putbytes", n), func(b *testing.B) {
			b.SetBytes(int64(len(encoded)))
			for range b.N {
				if _, err := obs.PutBytes(ctx, name, encoded); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := st.Delete(ctx, name); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}
