package badgerstore

import (
	"context"
	"errors"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/meshflow/meshflow/persistence"
)

// TestSnapshotReleasesTxn checks that a snapshot holds one Badger read
// transaction until it is closed, by Snapshot.Close or by closing the
// store, and that closing discards it (which releases its read mark, so
// Badger may drop the versions it kept).
func TestSnapshotReleasesTxn(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, Options{InMemory: true, MemTableSize: 4 << 20, BlockCacheSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var b persistence.Batch
	b.Put([]byte("k"), []byte("v"))
	if err := s.Namespace("ns").Apply(ctx, &b); err != nil {
		t.Fatal(err)
	}
	open := func() (persistence.Snapshot, *badger.Txn) {
		t.Helper()
		snap, err := persistence.OpenSnapshot(s.Namespace("ns"))
		if err != nil {
			t.Fatal(err)
		}
		sn := snap.(*snapshot)
		if _, err := sn.txn.Get([]byte("absent")); !errors.Is(err, badger.ErrKeyNotFound) {
			t.Fatalf("open snapshot's transaction: Get = %v, want ErrKeyNotFound", err)
		}
		return snap, sn.txn
	}
	discarded := func(txn *badger.Txn) bool {
		_, err := txn.Get([]byte("absent"))
		return errors.Is(err, badger.ErrDiscardedTxn)
	}

	snap, txn := open()
	if err := snap.Close(); err != nil {
		t.Fatal(err)
	}
	if !discarded(txn) {
		t.Fatal("Snapshot.Close did not discard the read transaction")
	}
	if n := len(s.kv.snaps); n != 0 {
		t.Fatalf("%d snapshots registered after Close, want 0", n)
	}

	// Closing the store discards the transactions of open snapshots.
	_, txn1 := open()
	_, txn2 := open()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if !discarded(txn1) || !discarded(txn2) {
		t.Fatal("closing the store did not discard the snapshots' read transactions")
	}
}
