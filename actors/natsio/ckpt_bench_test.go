package natsio

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/messages"
	"github.com/meshflow/meshflow/persistence"
	"github.com/meshflow/meshflow/persistence/badgerstore"
	"github.com/meshflow/meshflow/persistence/memstore"
)

// lineageCtx gives Process the lineage of its input, as the runtime does:
// the runtime's context key is not exported, so it answers for the key
// by its type name (checked by the benchmark before it runs).
type lineageCtx struct {
	context.Context
	lin *messages.Lineage
}

func (c lineageCtx) Value(key any) any {
	if reflect.TypeOf(key).String() == "actors.inputLineageKey" {
		return c.lin
	}
	return c.Context.Value(key)
}

// BenchmarkSinkCheckpointed compares, in one run, a JetStream sink with
// checkpoints (rows staged in memory, written to a Badger Store at each
// checkpoint and published when it completes) with the sink publishing
// directly, as without checkpoints. Both publish the same JSON rows
// (1024 per batch, distinct message ids) to the same stream; the
// checkpoint interval is one second's worth of the direct sink's rows,
// measured before the timed rounds. Each side publishes b.N rows in four
// alternating rounds. Reported: rows/s of each, tx/direct, and the shares
// of the checkpointed sink's time spent in PrepareCheckpoint and in
// CheckpointComplete (the rest is Process: encoding and staging).
//
// The Store is Badger in a directory on the same disk as the JetStream
// store, as on a node, or memstore, which leaves the cost of staging and
// committing alone.
func BenchmarkSinkCheckpointed(b *testing.B) {
	b.Run("store=badger", func(b *testing.B) {
		store, err := badgerstore.Open(context.Background(), badgerstore.Options{Dir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		defer store.Close()
		benchSinkCheckpointed(b, store.Namespace("tx"))
	})
	b.Run("store=memory", func(b *testing.B) {
		benchSinkCheckpointed(b, memstore.New())
	})
}

func benchSinkCheckpointed(b *testing.B, store persistence.Store) {
	srv := natstest.RunJetStream(b)
	nc := natstest.Connect(b, srv)
	js := natstest.JetStream(b, nc)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OUT", Subjects: []string{"out"}, Duplicates: 2 * time.Minute}); err != nil {
		b.Fatal(err)
	}
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(b, 0)
	const batchRows = 1024
	rec := vsBatch(mem, seqVals(0, batchRows), nil)
	defer rec.Release()

	direct := NewSink(nc, SinkConfig{Subject: "out"})
	if err := direct.Open(ctx, testOC{mem: mem, op: "direct"}); err != nil {
		b.Fatal(err)
	}
	tx := NewSink(nc, SinkConfig{Subject: "out"})
	if err := tx.Open(ctx, testOC{mem: mem, op: "tx", store: store, ckpt: true}); err != nil {
		b.Fatal(err)
	}
	var base uint64
	process := func(s *Sink) {
		lin := &messages.Lineage{Origin: "b", Base: base}
		base += batchRows
		if err := s.Process(lineageCtx{ctx, lin}, rec, nil); err != nil {
			b.Fatal(err)
		}
	}
	if actors.InputLineage(lineageCtx{ctx, &messages.Lineage{Origin: "probe"}}).Origin != "probe" {
		b.Fatal("lineageCtx does not reach actors.InputLineage")
	}
	runDirect := func(batches int) time.Duration {
		start := time.Now()
		for range batches {
			process(direct)
		}
		return time.Since(start)
	}
	var id uint64
	var dPrepare, dCommit time.Duration
	checkpoint := func() {
		id++
		start := time.Now()
		if err := tx.PrepareCheckpoint(ctx, id); err != nil {
			b.Fatal(err)
		}
		mid := time.Now()
		if err := complete(ctx, tx, id); err != nil {
			b.Fatal(err)
		}
		dPrepare, dCommit = dPrepare+mid.Sub(start), dCommit+time.Since(mid)
	}
	runTx := func(batches, perEpoch int) time.Duration {
		start := time.Now()
		for i := range batches {
			process(tx)
			if (i+1)%perEpoch == 0 {
				checkpoint()
			}
		}
		if batches%perEpoch != 0 {
			checkpoint()
		}
		return time.Since(start)
	}

	// One second of the direct sink's rows per checkpoint.
	warm := runDirect(64)
	perEpoch := max(1, int(float64(64)/warm.Seconds()))
	b.ResetTimer()
	const rounds = 4
	batches := max(b.N/batchRows/rounds, 1)
	var dDirect, dTx time.Duration
	for range rounds {
		dDirect += runDirect(batches)
		dTx += runTx(batches, perEpoch)
	}
	b.StopTimer()
	rows := float64(rounds * batches * batchRows)
	b.ReportMetric(rows/dDirect.Seconds(), "direct_rows/s")
	b.ReportMetric(rows/dTx.Seconds(), "tx_rows/s")
	b.ReportMetric(dDirect.Seconds()/dTx.Seconds(), "tx/direct")
	b.ReportMetric(float64(perEpoch*batchRows), "rows/epoch")
	b.ReportMetric(dPrepare.Seconds()/dTx.Seconds(), "prepare/tx")
	b.ReportMetric(dCommit.Seconds()/dTx.Seconds(), "commit/tx")
	if st := tx.Stats(); st.Published != int64(rows) || st.Duplicates != 0 {
		b.Fatalf("tx sink: %+v, want %d published", st, int64(rows))
	}
	if st := direct.Stats(); st.Published != int64(rows)+64*batchRows || st.Duplicates != 0 {
		b.Fatalf("direct sink: %+v, want %d published", st, int64(rows)+64*batchRows)
	}
}
