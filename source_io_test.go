package meshflow

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow/actors/natsio"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
)

var burstSchema = arrow.NewSchema([]arrow.Field{
	{Name: "id", Type: arrow.PrimitiveTypes.Int64},
	{Name: "ts", Type: arrow.PrimitiveTypes.Int64},
	{Name: "note", Type: arrow.BinaryTypes.String, Nullable: true},
}, nil)

// publishBurst publishes n events as fast as the client allows
// (asynchronously, a window of 4096) and waits for every acknowledgement.
func publishBurst(ctx context.Context, js jetstream.JetStream, subject string, n int) error {
	var buf []byte
	for i := range n {
		buf = fmt.Appendf(buf[:0], `{"id":%d,"ts":%d,"note":"a burst of events"}`, i, time.Now().UnixNano())
		if _, err := js.PublishAsync(subject, buf, jetstream.WithStallWait(time.Minute)); err != nil {
			return err
		}
	}
	select {
	case <-js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestJetStreamBurst: 200,000 events published as fast as possible into a
// running pipeline all arrive, with no redelivery and no slow consumer on
// either side.
func TestJetStreamBurst(t *testing.T) {
	const n = 200_000
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	var slow atomic.Int64
	nc := natstest.Connect(t, srv, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrSlowConsumer) {
			slow.Add(1)
		}
	}))
	pub := natstest.Connect(t, srv)
	js, err := jetstream.New(pub, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testutil.Context(t, 5*time.Minute)
	if _, err := natsio.EnsureStream(ctx, js, "BURST", []string{"burst"}); err != nil {
		t.Fatal(err)
	}

	var rows atomic.Int64
	p := NewPipeline("burst")
	p.Source("in", FromJetStream(JetStreamSource{Subjects: []string{"burst"}, Schema: burstSchema})).
		To("count", ToOperator(func() Operator { return countSink{&rows} }))
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() {
		done <- Run(runCtx, p, WithNATS(nc), WithAllocator(mem), WithLogger(testutil.TestLogger(t)), WithDataDir(t.TempDir()))
	}()
	var cons jetstream.Consumer
	testutil.CheckFor(t, time.Minute, 5*time.Millisecond, func() error {
		cons, err = js.Consumer(ctx, "BURST", "burst-in")
		return err
	})

	start := time.Now()
	if err := publishBurst(ctx, js, "burst", n); err != nil {
		t.Fatal(err)
	}
	published := time.Since(start)
	testutil.CheckFor(t, 4*time.Minute, 10*time.Millisecond, func() error {
		if got := rows.Load(); got != n {
			return fmt.Errorf("%d of %d rows arrived", got, n)
		}
		return nil
	})
	t.Logf("published in %v, all arrived after %v", published, time.Since(start))
	testutil.CheckFor(t, time.Minute, 10*time.Millisecond, func() error {
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		if info.NumRedelivered != 0 {
			t.Fatalf("%d messages redelivered", info.NumRedelivered)
		}
		if info.NumAckPending != 0 || info.NumPending != 0 {
			return fmt.Errorf("consumer: %d ack pending, %d pending", info.NumAckPending, info.NumPending)
		}
		return nil
	})
	varz, err := srv.NATSServer().Varz(nil)
	if err != nil {
		t.Fatal(err)
	}
	if slow.Load() != 0 || varz.SlowConsumers != 0 {
		t.Fatalf("slow consumers: %d seen by the client, %d by the server", slow.Load(), varz.SlowConsumers)
	}
	stop()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if got := rows.Load(); got != n {
		t.Fatalf("%d rows after stopping, want %d", got, n)
	}
}

// TestJetStreamPoisonEndToEnd: between good events, bad ones (undecodable
// just under max payload, deeply nested, NaN and Infinity literals, wrong
// types) are dead-lettered with a reason by a running pipeline reading
// with FromJetStream and writing with ToJetStream; every good event
// arrives and the pipeline runs on.
func TestJetStreamPoisonEndToEnd(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	js := natstest.JetStream(t, nc)
	ctx := testutil.Context(t, 2*time.Minute)
	if _, err := natsio.EnsureStream(ctx, js, "POISON", []string{"poison"}); err != nil {
		t.Fatal(err)
	}
	max := int(nc.MaxPayload())
	bad := [][]byte{
		append([]byte(`{"id":1,"ts":`), make([]byte, max-100)...),
		[]byte(`{"id":1,"ts":` + string(bytesRepeat('[', 1_000_000))),
		[]byte(`{"id":NaN,"ts":1}`),
		[]byte(`{"id":1,"ts":Infinity}`),
		[]byte(`{"id":"one","ts":1}`),
	}
	good := 0
	for _, b := range bad {
		for _, p := range [][]byte{fmt.Appendf(nil, `{"id":%d,"ts":0}`, good), b} {
			if _, err := js.Publish(ctx, "poison", p); err != nil {
				t.Fatal(err)
			}
		}
		good++
	}

	p := NewPipeline("poison")
	p.Source("in", FromJetStream(JetStreamSource{Subjects: []string{"poison"}, Schema: burstSchema})).
		To("out", ToJetStream(JetStreamSink{Subject: "poison.out"}))
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() {
		done <- Run(runCtx, p, WithNATS(nc), WithAllocator(mem), WithLogger(testutil.TestLogger(t)), WithDataDir(t.TempDir()))
	}()
	count := func(subject string) (uint64, error) {
		name, err := js.StreamNameBySubject(ctx, subject)
		if err != nil {
			return 0, err
		}
		st, err := js.Stream(ctx, name)
		if err != nil {
			return 0, err
		}
		info, err := st.Info(ctx)
		if err != nil {
			return 0, err
		}
		return info.State.Msgs, nil
	}
	testutil.CheckFor(t, time.Minute, 10*time.Millisecond, func() error {
		out, err := count("poison.out")
		if err != nil {
			return err
		}
		dl, err := count("poison.dlq")
		if err != nil {
			return err
		}
		if out != uint64(good) || dl != uint64(len(bad)) {
			return fmt.Errorf("%d of %d good events out, %d of %d dead letters", out, good, dl, len(bad))
		}
		return nil
	})
	dlq, err := js.Stream(ctx, "POISON_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= uint64(len(bad)); seq++ {
		m, err := dlq.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if m.Header.Get(natsio.HeaderError) == "" || m.Header.Get(natsio.HeaderErrorClass) != natsio.ClassDecode ||
			m.Header.Get(natsio.HeaderSourceSeq) != strconv.Itoa(2*int(seq)) {
			t.Errorf("dead letter %d: headers %v", seq, m.Header)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("pipeline ended: %v", err)
	default:
	}
	stop()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

func bytesRepeat(b byte, n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = b
	}
	return out
}
