package badgerstore

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"

	"github.com/meshflow/meshflow/persistence"
)

// Snapshot implements [persistence.SnapshotBackend]: a snapshot is a Badger
// read transaction (an MVCC view at its read timestamp), opened in O(1) and
// held until Close. While it is open Badger keeps the versions it reads, so
// a snapshot should be closed as soon as it is uploaded. Closing the store
// closes its open snapshots.
func (s *kv) Snapshot(prefix []byte) (persistence.Snapshot, error) {
	return s.SnapshotRange(prefix, nil, nil)
}

// SnapshotRange implements [persistence.RangeSnapshotBackend]: a snapshot
// whose scans seek to prefix|start and stop before prefix|end.
func (s *kv) SnapshotRange(prefix, start, end []byte) (persistence.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, persistence.ErrClosed
	}
	sn := &snapshot{kv: s, txn: s.db.NewTransaction(false), prefix: bytes.Clone(prefix)}
	sn.seek = append(bytes.Clone(prefix), start...)
	if end != nil {
		sn.end = append(bytes.Clone(prefix), end...)
	}
	sn.idle.L = &sn.mu
	s.snaps[sn] = struct{}{}
	return sn, nil
}

// snapshot is a read transaction. Lock order: kv.mu before snapshot.mu;
// Close takes them one after the other, never both.
type snapshot struct {
	kv     *kv
	txn    *badger.Txn
	prefix []byte
	seek   []byte      // prefix|start: where scans begin
	end    []byte      // prefix|end: where they stop; nil for the whole prefix
	stop   atomic.Bool // set by Close: a running scan stops

	mu     sync.Mutex
	idle   sync.Cond // signalled when scans drops to 0
	scans  int
	closed bool
}

func (sn *snapshot) Scan(ctx context.Context, fn func(key, value []byte) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	sn.mu.Lock()
	if sn.closed {
		sn.mu.Unlock()
		return persistence.ErrClosed
	}
	sn.scans++
	sn.mu.Unlock()
	defer func() {
		sn.mu.Lock()
		sn.scans--
		if sn.scans == 0 {
			sn.idle.Broadcast()
		}
		sn.mu.Unlock()
	}()
	n := len(sn.prefix)
	it := sn.txn.NewIterator(badger.IteratorOptions{Prefix: sn.prefix})
	defer it.Close()
	for it.Seek(sn.seek); it.ValidForPrefix(sn.prefix); it.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		if sn.end != nil && bytes.Compare(it.Item().Key(), sn.end) >= 0 {
			return nil
		}
		if sn.stop.Load() {
			return persistence.ErrClosed
		}
		item := it.Item()
		key := item.Key()[n:]
		var fnErr error
		err := item.Value(func(v []byte) error {
			fnErr = fn(key, v)
			return fnErr
		})
		if fnErr != nil {
			return fnErr
		}
		if err != nil {
			return fmt.Errorf("badgerstore: snapshot: read value: %w", err)
		}
	}
	return nil
}

func (sn *snapshot) Close() error {
	sn.mu.Lock()
	if sn.closed {
		sn.mu.Unlock()
		return nil
	}
	sn.closed = true
	sn.stop.Store(true)
	for sn.scans > 0 {
		sn.idle.Wait()
	}
	sn.mu.Unlock()
	sn.txn.Discard()
	sn.kv.mu.Lock()
	delete(sn.kv.snaps, sn)
	if len(sn.kv.snaps) == 0 && sn.kv.closed {
		sn.kv.idle.Broadcast()
	}
	sn.kv.mu.Unlock()
	return nil
}
