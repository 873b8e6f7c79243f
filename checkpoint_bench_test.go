package meshflow

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/actors/natsio"
	"github.com/meshflow/meshflow/cluster/checkpoint"
	"github.com/meshflow/meshflow/internal/logging"
	"github.com/meshflow/meshflow/messages/pb"
	"github.com/meshflow/meshflow/persistence"
	"github.com/meshflow/meshflow/persistence/badgerstore"
)

// BenchmarkCheckpointOverhead runs the same job with checkpoints every
// second (the default) and with checkpoints off, alternately, in one run,
// on the same pre-loaded input: a bounded JetStream JSON source, keyed by
// "key", into runningTotals (a per-key running count and sum kept in
// memory and written to its Badger Store at every checkpoint), into a
// JetStream sink, one output message per input row.
//
// Each round of a side reads the whole input stream with its own durable
// consumer and writes to its own output stream. Two rates are measured:
//
//   - throughput (rows/s, off_rows/s, their ratio x_off): the rate at
//     which the job takes in its input in steady state, from the moment
//     its consumer has delivered 20% of the input to the moment it has
//     delivered 90% (polled every 5 ms). The source can only read as fast
//     as the whole job goes: channel credits and, with checkpoints, the
//     sink (which waits at each checkpoint for the previous one's output
//     to be published) hold it back.
//   - end to end (e2e_rows/s, e2e_off_rows/s, e2e_x_off): from the start
//     of Run until the output stream holds every row. With checkpoints
//     this includes, once the input is read, the job's last checkpoint
//     and the publishing of the output it covers: a fixed latency of about
//     a checkpoint interval that weighs on short runs.
//
// The input has max(b.N, checkpointBenchMinRows) rows, so a run spans
// several checkpoints; ns/op is the end-to-end time per input row and
// side-round.
//
// Also reported, over the checkpoints taken while the sources were reading
// (read back from the checkpoint metadata in the KV bucket): their count
// per run, median and longest duration, median size and longest barrier
// alignment.
//
//	go test -run '^$' -bench 'CheckpointOverhead/keys=100$' -benchtime 1200000x .
func BenchmarkCheckpointOverhead(b *testing.B) {
	for _, keys := range []int{100, 10000} {
		b.Run(fmt.Sprintf("keys=%d", keys), func(b *testing.B) { benchCheckpointOverhead(b, keys) })
	}
}

// ckBenchSide runs one side of BenchmarkCheckpointOverhead alone, to
// profile it (the NATS server's goroutines carry no profiler labels):
//
//	go test -run '^$' -bench 'CheckpointOverhead/keys=100$' -benchtime 600000x -cpuprofile cpu.prof . -args -ckbench.side=checkpoints
var ckBenchSide = flag.String("ckbench.side", "", `run only one side of BenchmarkCheckpointOverhead: "checkpoints" or "off"`)

// checkpointBenchMinRows is the least input: twice what a source with
// checkpoints may read before its first checkpoint completes, so at least
// one checkpoint is taken while it reads (and several on the development
// machine).
const checkpointBenchMinRows = 2 * natsio.CheckpointMaxAckPending

// checkpointBenchRounds is how many times each side runs, alternately.
const checkpointBenchRounds = 3

var totalsInSchema = arrow.NewSchema([]arrow.Field{
	{Name: "id", Type: arrow.PrimitiveTypes.Int64},
	{Name: "key", Type: arrow.BinaryTypes.String},
	{Name: "amount", Type: arrow.PrimitiveTypes.Int64},
}, nil)

var totalsOutSchema = arrow.NewSchema([]arrow.Field{
	{Name: "id", Type: arrow.PrimitiveTypes.Int64},
	{Name: "key", Type: arrow.BinaryTypes.String},
	{Name: "count", Type: arrow.PrimitiveTypes.Int64},
	{Name: "sum", Type: arrow.PrimitiveTypes.Int64},
}, nil)

func benchCheckpointOverhead(b *testing.B, keys int) {
	if s := *ckBenchSide; s != "" && s != "checkpoints" && s != "off" {
		b.Fatalf("-ckbench.side=%q: want checkpoints or off", s)
	}
	rows := max(b.N, checkpointBenchMinRows)
	s := newSourceBench(b)
	s.publish(func(yield func([]byte) bool) {
		var buf []byte
		for i := range rows {
			buf = fmt.Appendf(buf[:0], `{"id":%d,"key":"k%d","amount":%d}`, i, i%keys, i%1000)
			if !yield(buf) {
				return
			}
		}
	})
	meta, err := checkpoint.OpenStore(s.ctx, s.js)
	if err != nil {
		b.Fatal(err)
	}
	kv, err := s.js.KeyValue(s.ctx, checkpoint.Bucket)
	if err != nil {
		b.Fatal(err)
	}
	store, err := badgerstore.Open(s.ctx, badgerstore.Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := store.Close(); err != nil {
			b.Error(err)
		}
	}()

	// run runs one side once, timed, and returns its end-to-end duration,
	// its steady-state rate and, with checkpoints, the metadata of every
	// checkpoint it completed.
	run := func(job string, ckpt bool) (time.Duration, float64, []*pb.CheckpointMeta) {
		out := "out." + job
		stream, err := natsio.EnsureStream(s.ctx, s.js, strings.ToUpper("OUT_"+job), []string{out})
		if err != nil {
			b.Fatal(err)
		}
		p := NewPipeline(job)
		p.Source("in", FromJetStream(JetStreamSource{Subjects: []string{"in"}, Schema: totalsInSchema, Bounded: true})).
			KeyBy("key").
			Process("totals", func() Operator { return &runningTotals{} }, OutputSchema(totalsOutSchema)).
			To("out", ToJetStream(JetStreamSink{Subject: out}))
		opts := []RunOption{WithNATS(s.nc), WithState(store), WithLogger(logging.Discard())}
		var w *metaWatch
		if ckpt {
			opts = append(opts, WithCheckpoints(CheckpointConfig{Interval: time.Second}))
			if w, err = watchMeta(s.ctx, kv, job); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { w.stop() }) // if the run fails; stop may be called again
		} else {
			opts = append(opts, WithoutCheckpoints())
		}
		steady := watchDelivered(s.ctx, s.js, "IN", job+"-in", uint64(rows)/5, uint64(rows)*9/10)
		b.StartTimer()
		start := time.Now()
		side := map[bool]string{true: "checkpoints", false: "off"}[ckpt]
		// Labels tell the sides apart in a CPU profile (go tool pprof
		// -tagfocus=side=checkpoints).
		pprof.Do(s.ctx, pprof.Labels("side", side), func(ctx context.Context) {
			err = Run(ctx, p, opts...)
		})
		if err != nil {
			b.Fatal(err)
		}
		if err := waitStreamMsgs(s.ctx, s.js, stream, uint64(rows)); err != nil {
			b.Fatal(err)
		}
		d := time.Since(start)
		b.StopTimer()
		rate, err := steady()
		if err != nil {
			b.Fatal(err)
		}
		if !ckpt {
			return d, rate, nil
		}
		metas := w.stop()
		// The watch saw what the store lists (retention keeps the newest).
		listed, err := meta.List(s.ctx, job)
		if err != nil {
			b.Fatal(err)
		}
		if len(listed) == 0 || len(metas) < len(listed) || metas[len(metas)-1].Id != listed[len(listed)-1].Id {
			b.Fatalf("job %s: watched %d checkpoints, the store lists %d", job, len(metas), len(listed))
		}
		return d, rate, metas
	}

	b.ResetTimer()
	b.StopTimer()
	var on, off []time.Duration
	var onRates, offRates []float64
	var metas []*pb.CheckpointMeta
	for r := range checkpointBenchRounds {
		if *ckBenchSide != "off" {
			d, rate, m := run(fmt.Sprintf("ckon%d", r), true)
			on, onRates = append(on, d), append(onRates, rate)
			metas = append(metas, m...)
		}
		if *ckBenchSide != "checkpoints" {
			d, rate, _ := run(fmt.Sprintf("ckoff%d", r), false)
			off, offRates = append(off, d), append(offRates, rate)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(rows*(len(on)+len(off))), "ns/op")
	if *ckBenchSide != "off" {
		b.ReportMetric(medianRate(onRates), "rows/s")
		b.ReportMetric(float64(rows)/medianDuration(on).Seconds(), "e2e_rows/s")
		reportCheckpoints(b, metas)
	}
	if *ckBenchSide != "checkpoints" {
		b.ReportMetric(medianRate(offRates), "off_rows/s")
		b.ReportMetric(float64(rows)/medianDuration(off).Seconds(), "e2e_off_rows/s")
	}
	if *ckBenchSide == "" {
		b.ReportMetric(medianRate(onRates)/medianRate(offRates), "x_off")
		b.ReportMetric(medianDuration(off).Seconds()/medianDuration(on).Seconds(), "e2e_x_off")
	}
}

func medianRate(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

// watchDelivered polls the consumer every 5 ms from now on and returns a
// function that waits for the poll to end and returns the rate at which
// it delivered stream sequences lo to hi: (hi-lo) over the time between
// the first polls that saw its delivered sequence at or past each.
func watchDelivered(ctx context.Context, js jetstream.JetStream, stream, consumer string, lo, hi uint64) func() (float64, error) {
	type result struct {
		rate float64
		err  error
	}
	res := make(chan result, 1)
	go func() {
		var tLo time.Time
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				res <- result{err: ctx.Err()}
				return
			case <-tick.C:
			}
			c, err := js.Consumer(ctx, stream, consumer)
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				continue // not created yet
			}
			if err != nil {
				res <- result{err: err}
				return
			}
			now, seq := time.Now(), c.CachedInfo().Delivered.Stream
			if seq >= lo && tLo.IsZero() {
				tLo = now
			}
			if seq >= hi {
				if d := now.Sub(tLo); d > 0 {
					res <- result{rate: float64(hi-lo) / d.Seconds()}
				} else {
					res <- result{err: fmt.Errorf("consumer %s delivered %d to %d between two polls", consumer, lo, hi)}
				}
				return
			}
		}
	}()
	return func() (float64, error) {
		r := <-res
		return r.rate, r.err
	}
}

func medianDuration(d []time.Duration) time.Duration {
	d = slices.Clone(d)
	slices.Sort(d)
	return d[len(d)/2]
}

// reportCheckpoints reports the checkpoints taken while the sources were
// reading: not the job's last one, taken once they had finished.
func reportCheckpoints(b *testing.B, metas []*pb.CheckpointMeta) {
	var dur, size []int64
	var align int64
	for _, m := range metas {
		if slices.ContainsFunc(m.Tasks, func(t *pb.TaskSnapshot) bool { return t.Finished || t.Paused }) {
			continue
		}
		dur = append(dur, m.DurationUs)
		size = append(size, int64(m.Size))
		align = max(align, m.MaxAlignmentUs)
	}
	if len(dur) == 0 {
		b.Fatalf("no checkpoint completed while the sources were reading (%d in all)", len(metas))
	}
	slices.Sort(dur)
	slices.Sort(size)
	b.ReportMetric(float64(len(dur))/checkpointBenchRounds, "ckpts/run")
	b.ReportMetric(float64(dur[len(dur)/2])/1e3, "ckpt_ms")
	b.ReportMetric(float64(dur[len(dur)-1])/1e3, "ckpt_max_ms")
	b.ReportMetric(float64(size[len(size)/2]), "ckpt_B")
	b.ReportMetric(float64(align)/1e3, "align_max_ms")
}

// waitStreamMsgs waits until stream holds want messages (more is an error).
func waitStreamMsgs(ctx context.Context, js jetstream.JetStream, stream string, want uint64) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	for {
		info, err := st.Info(ctx)
		if err != nil {
			return err
		}
		switch n := info.State.Msgs; {
		case n == want:
			return nil
		case n > want:
			return fmt.Errorf("stream %s holds %d messages, want %d", stream, n, want)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stream %s holds %d messages, want %d: %w", stream, info.State.Msgs, want, ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

// metaWatch collects the checkpoint metadata of a job as the coordinator
// writes it, so that every checkpoint is seen, not only those retention
// keeps.
type metaWatch struct {
	w     jetstream.KeyWatcher
	done  chan struct{}
	mu    sync.Mutex
	byID  map[uint64]*pb.CheckpointMeta
	fails []error
}

func watchMeta(ctx context.Context, kv jetstream.KeyValue, job string) (*metaWatch, error) {
	prefix := job + ".meta."
	w, err := kv.Watch(ctx, prefix+"*", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	mw := &metaWatch{w: w, done: make(chan struct{}), byID: map[uint64]*pb.CheckpointMeta{}}
	go func() {
		defer close(mw.done)
		for e := range w.Updates() {
			if e == nil {
				continue
			}
			id, err := strconv.ParseUint(strings.TrimPrefix(e.Key(), prefix), 10, 64)
			if err != nil {
				continue
			}
			var m pb.CheckpointMeta
			mw.mu.Lock()
			if err := proto.Unmarshal(e.Value(), &m); err != nil {
				mw.fails = append(mw.fails, fmt.Errorf("%s: %w", e.Key(), err))
			} else {
				mw.byID[id] = &m
			}
			mw.mu.Unlock()
		}
	}()
	return mw, nil
}

// stop ends the watch and returns what it saw, by id. It must be called
// once the job's last checkpoint is written (after Run returned).
func (mw *metaWatch) stop() []*pb.CheckpointMeta {
	_ = mw.w.Stop()
	<-mw.done
	var ms []*pb.CheckpointMeta
	for _, m := range mw.byID {
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b *pb.CheckpointMeta) int { return int(a.Id) - int(b.Id) })
	return ms
}

// runningTotals keeps, per key, the count and the sum of "amount" in
// memory, emits them with every row, and writes the keys that changed to
// its Store in one batch at every checkpoint.
type runningTotals struct {
	mem    memory.Allocator
	state  persistence.Store
	totals map[string][2]int64
	dirty  map[string]struct{}
	batch  persistence.Batch
}

func (t *runningTotals) Open(ctx context.Context, oc actors.OperatorContext) error {
	t.mem, t.state = oc.Allocator(), oc.State()
	t.totals, t.dirty = map[string][2]int64{}, map[string]struct{}{}
	return t.state.Scan(ctx, nil, func(k, v []byte) error {
		if len(v) != 16 {
			return fmt.Errorf("running totals: bad state for %q", k)
		}
		t.totals[string(k)] = [2]int64{int64(binary.LittleEndian.Uint64(v)), int64(binary.LittleEndian.Uint64(v[8:]))}
		return nil
	})
}

func (t *runningTotals) Process(_ context.Context, in arrow.RecordBatch, out actors.Emitter) error {
	ids := in.Column(0).(*array.Int64)
	keys := in.Column(1).(*array.String)
	amounts := in.Column(2).(*array.Int64)
	bld := array.NewRecordBuilder(t.mem, totalsOutSchema)
	defer bld.Release()
	bld.Field(0).(*array.Int64Builder).AppendValues(ids.Int64Values(), nil)
	kb := bld.Field(1).(*array.StringBuilder)
	cb := bld.Field(2).(*array.Int64Builder)
	sb := bld.Field(3).(*array.Int64Builder)
	n := int(in.NumRows())
	cb.Reserve(n)
	sb.Reserve(n)
	for i := range n {
		k := keys.Value(i)
		tt := t.totals[k]
		tt[0]++
		tt[1] += amounts.Value(i)
		t.totals[k] = tt
		if _, ok := t.dirty[k]; !ok {
			t.dirty[k] = struct{}{}
		}
		kb.Append(k)
		cb.UnsafeAppend(tt[0])
		sb.UnsafeAppend(tt[1])
	}
	actors.EmitSameRows(out, bld.NewRecordBatch())
	return nil
}

func (t *runningTotals) PrepareCheckpoint(ctx context.Context, _ uint64) error {
	if len(t.dirty) == 0 {
		return nil
	}
	t.batch.Reset()
	var v [16]byte
	for k := range t.dirty {
		tt := t.totals[k]
		binary.LittleEndian.PutUint64(v[:], uint64(tt[0]))
		binary.LittleEndian.PutUint64(v[8:], uint64(tt[1]))
		t.batch.Put([]byte(k), v[:])
	}
	if err := t.state.Apply(ctx, &t.batch); err != nil {
		return fmt.Errorf("running totals: %w", err)
	}
	clear(t.dirty)
	return nil
}

func (t *runningTotals) Close(context.Context) error { return nil }
