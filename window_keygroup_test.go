package meshflow_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/internal/kernels"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
	"github.com/meshflow/meshflow/persistence"
	"github.com/meshflow/meshflow/persistence/badgerstore"
)

// TestWindowKeyGroups: a window keeps its windows in the operator's keyed
// state, by key group. A job is stopped mid-stream (its final checkpoint
// writes the windows open), and then:
//
//   - every stored key starts with the key group of its key, the hash of
//     the keyed edge (kernels.HashColumns over the KeyBy column) modulo the
//     job's max parallelism, key group 0 for a window without KeyBy; so the
//     instance the edge routed the key to, which alone may write the group,
//     wrote it. Every instance of the operator stored windows, and none
//     is in the instances' own namespaces;
//   - the node's Badger database is closed and opened again from the same
//     directory, the job runs again to the end, recovering once from a
//     checkpoint on the way (its sink's commit fails once): the last
//     result of every window equals that of an uninterrupted run.
func TestWindowKeyGroups(t *testing.T) {
	const maxP = 16
	for _, tc := range []struct {
		name        string
		w           meshflow.Windows
		keyed       bool
		parallelism int
		ends        bool
	}{
		{"tumbling/p=2", meshflow.TumblingWindows(100*time.Millisecond, "ts"), true, 2, false},
		{"sliding/p=3", meshflow.SlidingWindows(100*time.Millisecond, 40*time.Millisecond, "ts"), true, 3, false},
		{"session/p=2", meshflow.SessionWindows(20*time.Millisecond, "ts"), true, 2, true},
		{"unkeyed/p=1", meshflow.TumblingWindows(100*time.Millisecond, "ts"), false, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			r := rand.New(rand.NewPCG(testSeed(t), 9))
			srv := natstest.RunJetStream(t)
			nc := natstest.Connect(t, srv)

			// Rows in about time order: none is behind the watermark
			// (the jitter is below the source's out-of-orderness), so
			// both runs take every row and the results do not depend
			// on when watermarks come.
			const batches, perBatch, keys = 40, 60, 40
			const base = int64(1_700_000_000_000)
			recs := make([]arrow.RecordBatch, batches)
			v := int64(0)
			for i := range recs {
				b := array.NewRecordBuilder(mem, winSchema)
				for range perBatch {
					b.Field(0).(*array.StringBuilder).Append("k" + strconv.Itoa(r.IntN(keys)))
					b.Field(1).(*array.TimestampBuilder).Append(arrow.Timestamp(base + int64(i)*40 + int64(r.IntN(100))))
					b.Field(2).(*array.Int64Builder).Append(v)
					v++
				}
				recs[i] = b.NewRecordBatch()
				b.Release()
			}
			defer release(recs)

			build := func(job string, g *gate, reads *atomic.Int64, out *winCollector, fail *atomic.Int64) *meshflow.Pipeline {
				p := meshflow.NewPipeline(job)
				p.SetMaxParallelism(maxP)
				s := p.Source("events", meshflow.FromSource(winSchema, func() actors.Source {
					return &gatedSource{recs: recs, g: g, reads: reads}
				}), meshflow.EventTime("ts", 150*time.Millisecond))
				if tc.keyed {
					s = s.KeyBy("key")
				}
				s.Window("agg", tc.w.AllowedLateness(200*time.Millisecond),
					[]meshflow.Aggregate{meshflow.Count().As("n"), meshflow.Sum("v").As("total"), meshflow.Max("v")},
					meshflow.Parallelism(tc.parallelism)).
					To("out", meshflow.ToOperator(func() meshflow.Operator {
						return winTxSink(out, tc.ends, !tc.keyed, fail)
					}))
				return p
			}

			// The uninterrupted run.
			ref := &winCollector{last: map[string]string{}}
			g := newGate()
			g.release(batches)
			var reads, fail atomic.Int64
			if err := meshflow.Run(testutil.Context(t, time.Minute), build("winkg-ref", g, &reads, ref, &fail),
				ckptOptions(t, nc, mem, testStore(t))...); err != nil {
				t.Fatal(err)
			}
			if len(ref.last) == 0 {
				t.Fatal("the uninterrupted run emitted no window")
			}

			// Stopped mid-stream.
			dir := t.TempDir()
			open := func() *badgerstore.Store {
				st, err := badgerstore.Open(context.Background(), badgerstore.Options{Dir: dir})
				if err != nil {
					t.Fatal(err)
				}
				return st
			}
			const job = "winkg"
			out := &winCollector{last: map[string]string{}}
			g, reads = newGate(), atomic.Int64{}
			g.release(batches / 2)
			st := open()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			wait := runAsync(t, ctx, build(job, g, &reads, out, &fail), ckptOptions(t, nc, mem, st)...)
			testutil.CheckFor(t, 30*time.Second, time.Millisecond, atLeast(&reads, batches/2, "batches read"))
			cancel()
			if err := wait(); err != context.Canceled {
				t.Fatalf("Run returned %v, want context.Canceled after a clean stop", err)
			}
			checkWindowKeyGroups(t, mem, st, job, tc.keyed, maxP, tc.parallelism)
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}

			// Started again from the same directory, with a recovery.
			st = open()
			defer st.Close()
			fail.Store(1)
			g.release(batches)
			if err := meshflow.Run(testutil.Context(t, time.Minute), build(job, g, &reads, out, &fail),
				ckptOptions(t, nc, mem, st)...); err != nil {
				t.Fatalf("restart: %v", err)
			}
			if fail.Load() > 0 {
				t.Fatal("the job ended before its sink's commit failed")
			}
			if !maps.Equal(out.last, ref.last) {
				for name, want := range ref.last {
					if got := out.last[name]; got != want {
						t.Errorf("%s: got %q, want %q", name, got, want)
					}
				}
				for name := range out.last {
					if _, ok := ref.last[name]; !ok {
						t.Errorf("%s emitted, not by the uninterrupted run", name)
					}
				}
			}
			t.Logf("%d windows", len(ref.last))
		})
	}
}

// checkWindowKeyGroups checks the layout of the windows job's operator
// "agg" stored in st (see TestWindowKeyGroups).
func checkWindowKeyGroups(t *testing.T, mem memory.Allocator, st persistence.Store, job string, keyed bool, maxP, parallelism int) {
	t.Helper()
	ctx := testutil.Context(t, time.Minute)
	perInstance := make([]int, parallelism)
	err := st.Namespace(actors.KeyedNamespace(job, "agg")).Scan(ctx, nil, func(k, _ []byte) error {
		if len(k) < 2+8 || !keyed && len(k) != 2+8 {
			return fmt.Errorf("stored key %x: want a key group, a key and a start", k)
		}
		g := int(binary.BigEndian.Uint16(k))
		want := 0
		if keyed {
			// group | 1 | uvarint(len) | key | start (8 bytes)
			l, n := binary.Uvarint(k[3:])
			if len(k) < 2+1+8 || k[2] != 1 || n <= 0 || 3+n+int(l)+8 != len(k) {
				return fmt.Errorf("stored key %x: not a string key and a start", k)
			}
			b := array.NewStringBuilder(mem)
			b.Append(string(k[3+n : 3+n+int(l)]))
			col := b.NewArray()
			b.Release()
			h := make([]uint64, 1)
			err := kernels.HashColumns([]arrow.Array{col}, h)
			col.Release()
			if err != nil {
				return err
			}
			want = kernels.KeyGroup(h[0], maxP)
		}
		if g != want {
			return fmt.Errorf("stored key %x: key group %d, want %d", k, g, want)
		}
		perInstance[kernels.OperatorIndex(g, maxP, parallelism)]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range perInstance {
		if n == 0 {
			t.Errorf("instance %d of %d stored no window", i, parallelism)
		}
	}
	t.Logf("windows stored per instance: %v", perInstance)
	// The instances' own namespaces hold no window (the namespace
	// "window" was where they were kept before they went by key group).
	for i := range parallelism {
		own := st.Namespace(fmt.Sprintf("%s/agg/%d", job, i)).Namespace("window")
		err := own.Scan(ctx, nil, func(k, _ []byte) error {
			return fmt.Errorf("instance %d: key %x in its own namespace", i, k)
		})
		if err != nil {
			t.Error(err)
		}
	}
}
