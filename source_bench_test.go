package meshflow

import (
	"context"
	"errors"
	"fmt"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/actors/natsio"
	"github.com/meshflow/meshflow/internal/logging"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/messages"
)

// sourceBench is a server with a stream "IN" on subject "in", filled with
// the benchmark's events before anything is timed.
type sourceBench struct {
	b   *testing.B
	ctx context.Context
	nc  *nats.Conn
	js  jetstream.JetStream
}

func newSourceBench(b *testing.B) *sourceBench {
	b.Helper()
	srv := natstest.RunJetStream(b)
	nc := natstest.Connect(b, srv)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	b.Cleanup(cancel)
	if _, err := natsio.EnsureStream(ctx, js, "IN", []string{"in"}); err != nil {
		b.Fatal(err)
	}
	return &sourceBench{b: b, ctx: ctx, nc: nc, js: js}
}

func (s *sourceBench) publish(payloads func(yield func([]byte) bool)) {
	s.b.Helper()
	for p := range payloads {
		if _, err := s.js.PublishAsync("in", p, jetstream.WithStallWait(time.Minute)); err != nil {
			s.b.Fatal(err)
		}
	}
	select {
	case <-s.js.PublishAsyncComplete():
	case <-s.ctx.Done():
		s.b.Fatal(s.ctx.Err())
	}
}

// runMeshflow reads the whole stream with a bounded FromJetStream source
// into a counting sink, timed.
func (s *sourceBench) runMeshflow(job string, format natsio.Format, want int64) time.Duration {
	s.b.Helper()
	var rows atomic.Int64
	p := NewPipeline(job)
	p.Source("in", FromJetStream(JetStreamSource{Subjects: []string{"in"}, Schema: burstSchema, Format: format, Bounded: true})).
		To("count", ToOperator(func() Operator { return countSink{&rows} }))
	start := time.Now()
	if err := Run(s.ctx, p, WithNATS(s.nc), WithLogger(logging.Discard()), WithDataDir(s.b.TempDir())); err != nil {
		s.b.Fatal(err)
	}
	d := time.Since(start)
	if rows.Load() != want {
		s.b.Fatalf("meshflow read %d rows, want %d", rows.Load(), want)
	}
	return d
}

// runPlain reads the whole stream with a plain nats.go jetstream consumer
// (Messages, with the source's default prefetch bound in bytes) calling
// decode on every message and acknowledging it, timed.
func (s *sourceBench) runPlain(name string, want int64, decode func(data []byte) int64) time.Duration {
	s.b.Helper()
	start := time.Now()
	cons, err := s.js.CreateOrUpdateConsumer(s.ctx, "IN", jetstream.ConsumerConfig{
		Durable: name, AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 16384,
	})
	if err != nil {
		s.b.Fatal(err)
	}
	// The source's default prefetch bound.
	maxPayload := int(s.nc.MaxPayload())
	it, err := cons.Messages(jetstream.PullMaxBytes(max(min(max(2*maxPayload, 4<<20), 48<<20), maxPayload+64<<10)))
	if err != nil {
		s.b.Fatal(err)
	}
	defer it.Stop()
	var rows int64
	for rows < want {
		m, err := it.Next()
		if err != nil {
			s.b.Fatal(err)
		}
		rows += decode(m.Data())
		if err := m.Ack(); err != nil {
			s.b.Fatal(err)
		}
	}
	return time.Since(start)
}

// benchRounds is how many times each side reads the stream, alternately,
// in one benchmark run, after one untimed read that loads the stream into
// the server's cache; the medians are compared. ns/op covers every round
// of the pipeline.
const benchRounds = 5

// compareRounds runs mf and plain alternately benchRounds times, timing
// only mf, and reports the median rates and their ratio.
func compareRounds(b *testing.B, rows int64, mf func(round int) time.Duration, plain func(round int) time.Duration) {
	var mfs, plains []time.Duration
	plain(-1)
	b.ResetTimer()
	for r := range benchRounds {
		b.StartTimer()
		// Labels tell the two apart in a CPU profile (go tool pprof
		// -tagfocus=side=meshflow).
		pprof.Do(context.Background(), pprof.Labels("side", "meshflow"), func(context.Context) { mfs = append(mfs, mf(r)) })
		b.StopTimer()
		pprof.Do(context.Background(), pprof.Labels("side", "plain"), func(context.Context) { plains = append(plains, plain(r)) })
	}
	slices.Sort(mfs)
	slices.Sort(plains)
	reportVsPlain(b, rows, mfs[benchRounds/2], plains[benchRounds/2])
}

func reportVsPlain(b *testing.B, rows int64, mf, plain time.Duration) {
	mfRate := float64(rows) / mf.Seconds()
	plainRate := float64(rows) / plain.Seconds()
	b.ReportMetric(mfRate, "rows/s")
	b.ReportMetric(plainRate, "plain_rows/s")
	b.ReportMetric(mfRate/plainRate, "x_plain")
}

func jsonEvent(buf []byte, i int, ts int64) []byte {
	return fmt.Appendf(buf[:0], `{"id":%d,"ts":%d,"note":"event number %d"}`, i, ts, i)
}

// BenchmarkJetStreamJSON: events of one JSON object per message, read by a
// pipeline (FromJetStream, default settings, bounded, into a counting
// sink) against a plain consumer decoding them with the same decoder into
// batches of 8192 rows and acknowledging each message, in the same run.
func BenchmarkJetStreamJSON(b *testing.B) {
	s := newSourceBench(b)
	s.publish(func(yield func([]byte) bool) {
		var buf []byte
		for i := range b.N {
			buf = jsonEvent(buf, i, 0)
			if !yield(buf) {
				return
			}
		}
	})
	dec, err := messages.NewJSONDecoder(memory.DefaultAllocator, burstSchema)
	if err != nil {
		b.Fatal(err)
	}
	compareRounds(b, int64(b.N),
		func(r int) time.Duration { return s.runMeshflow(fmt.Sprint("bench", r), natsio.JSON, int64(b.N)) },
		func(r int) time.Duration {
			d := s.runPlain(fmt.Sprint("plain", r), int64(b.N), func(data []byte) int64 {
				n := dec.AppendLines(data, func([]byte, error) { b.Fatal("bad event") })
				if dec.Len() >= 8192 {
					dec.NewBatch().Release()
				}
				return int64(n)
			})
			dec.NewBatch().Release()
			return d
		})
}

// BenchmarkJetStreamArrowIPC: Arrow IPC messages of 1024 rows each, read
// by a pipeline (FromJetStream, default settings, bounded, into a counting
// sink) against a plain consumer decoding, checking and conforming them
// the same way and acknowledging each message, in the same run.
func BenchmarkJetStreamArrowIPC(b *testing.B) {
	const perMsg = 1024
	s := newSourceBench(b)
	msgs := (b.N + perMsg - 1) / perMsg
	bld := array.NewRecordBuilder(memory.DefaultAllocator, burstSchema)
	defer bld.Release()
	for i := range perMsg {
		bld.Field(0).(*array.Int64Builder).Append(int64(i))
		bld.Field(1).(*array.Int64Builder).Append(0)
		bld.Field(2).(*array.StringBuilder).Append(fmt.Sprintf("event number %d", i))
	}
	rec := bld.NewRecordBatch()
	data, err := messages.EncodeIPC(rec)
	rec.Release()
	if err != nil {
		b.Fatal(err)
	}
	s.publish(func(yield func([]byte) bool) {
		for range msgs {
			if !yield(data) {
				return
			}
		}
	})
	rows := int64(msgs * perMsg)
	decode := func(data []byte) int64 {
		recs, schema, err := messages.DecodeIPC(memory.DefaultAllocator, data)
		if err == nil {
			err = messages.CheckSchema(burstSchema, schema)
		}
		if err != nil {
			b.Fatal(err)
		}
		var n int64
		for _, r := range recs {
			c, err := messages.Conform(burstSchema, r)
			if err != nil {
				b.Fatal(err)
			}
			n += c.NumRows()
			c.Release()
			r.Release()
		}
		return n
	}
	compareRounds(b, rows,
		func(r int) time.Duration { return s.runMeshflow(fmt.Sprint("bench", r), natsio.ArrowIPC, rows) },
		func(r int) time.Duration { return s.runPlain(fmt.Sprint("plain", r), rows, decode) })
}

// latencySink records, for every row, the time since its "ts" column (the
// publish time in Unix nanoseconds).
type latencySink struct{ lat *latencies }

type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(ts int64) {
	d := time.Duration(time.Now().UnixNano() - ts)
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.d)
}

func (l *latencies) quantile(q float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := slices.Clone(l.d)
	slices.Sort(d)
	return d[min(int(q*float64(len(d))), len(d)-1)]
}

func (s latencySink) Open(context.Context, actors.OperatorContext) error { return nil }
func (s latencySink) Close(context.Context) error                        { return nil }
func (s latencySink) Process(_ context.Context, in arrow.RecordBatch, _ actors.Emitter) error {
	for _, ts := range in.Column(1).(*array.Int64).Int64Values() {
		s.lat.add(ts)
	}
	return nil
}

// BenchmarkJetStreamLatency: events published at 1,000 per second, each
// carrying its publish time, into a running pipeline with default settings
// (FromJetStream into a sink that notes the time), and, in the same run, to
// a plain consumer on the same stream decoding and acknowledging each
// message as it comes. Reports p50 and p99 of publish→sink in
// milliseconds for both.
func BenchmarkJetStreamLatency(b *testing.B) {
	s := newSourceBench(b)
	var mf, plain latencies
	p := NewPipeline("latency")
	p.Source("in", FromJetStream(JetStreamSource{Subjects: []string{"in"}, Schema: burstSchema})).
		To("sink", ToOperator(func() Operator { return latencySink{&mf} }))
	ctx, stop := context.WithCancel(s.ctx)
	defer stop()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := Run(ctx, p, WithNATS(s.nc), WithLogger(logging.Discard()), WithDataDir(b.TempDir())); err != nil && !errors.Is(err, context.Canceled) {
			errs <- err
		}
	}()
	cons, err := s.js.CreateOrUpdateConsumer(s.ctx, "IN", jetstream.ConsumerConfig{Durable: "plain", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		b.Fatal(err)
	}
	it, err := cons.Messages()
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		defer wg.Done()
		dec, err := messages.NewJSONDecoder(memory.DefaultAllocator, burstSchema)
		if err != nil {
			errs <- err
			return
		}
		for {
			m, err := it.Next()
			if err != nil {
				if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					errs <- err
				}
				return
			}
			dec.AppendLines(m.Data(), func([]byte, error) { errs <- errors.New("bad event") })
			rec := dec.NewBatch()
			for _, ts := range rec.Column(1).(*array.Int64).Int64Values() {
				plain.add(ts)
			}
			rec.Release()
			if err := m.Ack(); err != nil {
				errs <- err
				return
			}
		}
	}()
	// Wait until the pipeline's consumer exists, so no event waits for it.
	for {
		if _, err := s.js.Consumer(s.ctx, "IN", "latency-in"); err == nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	b.ResetTimer()
	var buf []byte
	start := time.Now()
	for i := range b.N {
		time.Sleep(time.Until(start.Add(time.Duration(i) * time.Millisecond)))
		buf = jsonEvent(buf, i, time.Now().UnixNano())
		if _, err := s.js.PublishAsync("in", buf); err != nil {
			b.Fatal(err)
		}
	}
	for mf.len() < b.N || plain.len() < b.N {
		select {
		case err := <-errs:
			b.Fatal(err)
		case <-time.After(time.Millisecond):
		}
	}
	b.StopTimer()
	stop()
	it.Stop()
	wg.Wait()
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(mf.quantile(0.5)), "p50_ms")
	b.ReportMetric(ms(mf.quantile(0.99)), "p99_ms")
	b.ReportMetric(ms(plain.quantile(0.5)), "plain_p50_ms")
	b.ReportMetric(ms(plain.quantile(0.99)), "plain_p99_ms")
}
