package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/meshflow/meshflow/actors/natsio"
	"github.com/meshflow/meshflow/messages"
)

type tailOptions struct {
	count     int
	output    *outputFormat
	jetstream bool
	stream    string
	from      string
	nats      *natsFlags
}

func newTailCmd(env *Env) *cobra.Command {
	o := &tailOptions{}
	cmd := &cobra.Command{
		Use:   "tail SUBJECT",
		Short: "Print the messages published to a NATS subject",
		Long: `Print the messages published to a NATS subject (wildcards allowed).

A Meshflow data-plane frame or an Arrow IPC stream prints the rows of its
record batch; any other message is taken as one JSON object, one row. In
table mode the columns of JSON rows are the keys of the first message; in
json mode every message is printed as it is.

By default tail subscribes with core NATS and sees new messages only. With
--jetstream (the stream that captures SUBJECT) or --stream NAME it reads the
stream through an ordered consumer, from the first message or only new ones
(--from).

A dead-lettered event (one carrying a Meshflow-Error header) is printed
like any message, with the reason it was refused logged to stderr.

tail stops after --count messages, or on Ctrl-C.`,
		Example: `  meshflow tail bids.top
  meshflow tail bids.in --jetstream --count 10 -o json
  meshflow tail 'bids.>' --stream BIDS --from new`,
		Args: exactArgs(1, "one SUBJECT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runTail(cmd.Context(), env, o, args[0], cmd.Flags().Changed("from"))
		},
	}
	fs := cmd.Flags()
	fs.IntVarP(&o.count, "count", "c", 0, "stop after this many messages (0: no limit)")
	o.output = addOutputFlag(cmd)
	fs.BoolVar(&o.jetstream, "jetstream", false, "read the JetStream stream that captures SUBJECT")
	fs.StringVar(&o.stream, "stream", "", "read this JetStream stream (implies --jetstream)")
	fs.StringVar(&o.from, "from", "first", "with a stream: start at the first message or only new ones (first|new)")
	o.nats = addNATSFlags(cmd, env)
	return cmd
}

func runTail(ctx context.Context, env *Env, o *tailOptions, subject string, fromSet bool) error {
	if o.count < 0 {
		return usageErrorf("tail: --count %d: must not be negative", o.count)
	}
	useJS := o.jetstream || o.stream != ""
	var deliver jetstream.DeliverPolicy
	switch strings.ToLower(o.from) {
	case "first":
		deliver = jetstream.DeliverAllPolicy
	case "new":
		deliver = jetstream.DeliverNewPolicy
	default:
		return usageErrorf("tail: --from %q: want first or new", o.from)
	}
	if fromSet && !useJS {
		return usageErrorf("tail: --from needs --jetstream or --stream")
	}

	nc, err := connect(ctx, o.nats)
	if err != nil {
		return fmt.Errorf("tail: %w", err)
	}
	defer nc.Close()

	p := &msgPrinter{
		mem:     memory.NewGoAllocator(),
		rows:    newRowPrinter(env.Stdout, *o.output),
		log:     env.Logger.With("subject", subject),
		subject: subject,
	}
	var next func(context.Context) ([]byte, nats.Header, error)
	if useJS {
		next, err = jetStreamSource(ctx, env.Logger, nc, o, subject, deliver)
	} else {
		next, err = coreSource(ctx, env.Logger, nc, o.nats.timeout, subject)
	}
	if err != nil {
		return fmt.Errorf("tail: %w", err)
	}
	for n := 0; o.count == 0 || n < o.count; n++ {
		data, hdr, err := next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				// Interrupted: a normal way to stop.
				return nil
			}
			return fmt.Errorf("tail: %w", err)
		}
		if reason := hdr.Get(natsio.HeaderError); reason != "" {
			// A dead letter: its reason goes to the log (stderr), the
			// refused event itself is printed like any message.
			p.log.Warn("dead letter", "reason", reason,
				"source_subject", hdr.Get(natsio.HeaderSourceSubject),
				"source_seq", hdr.Get(natsio.HeaderSourceSeq),
				"job", hdr.Get(natsio.HeaderJob), "operator", hdr.Get(natsio.HeaderOperator))
		}
		if err := p.print(data); err != nil {
			return fmt.Errorf("tail: %w", err)
		}
	}
	return nil
}

// coreSource subscribes to subject with core NATS. It returns once the
// server has registered the subscription.
func coreSource(ctx context.Context, log *slog.Logger, nc *nats.Conn, timeout time.Duration, subject string) (func(context.Context) ([]byte, nats.Header, error), error) {
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		return nil, fmt.Errorf("subscribe to %q: %w", subject, err)
	}
	fctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := nc.FlushWithContext(fctx); err != nil {
		return nil, fmt.Errorf("subscribe to %q: %w", subject, err)
	}
	if err := nc.LastError(); err != nil {
		return nil, fmt.Errorf("subscribe to %q: %w", subject, err)
	}
	log.Info("tailing", "subject", subject)
	return func(ctx context.Context) ([]byte, nats.Header, error) {
		msg, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return nil, nil, err
		}
		return msg.Data, msg.Header, nil
	}, nil
}

// jetStreamSource reads subject from a stream with an ordered consumer.
func jetStreamSource(ctx context.Context, log *slog.Logger, nc *nats.Conn, o *tailOptions, subject string, deliver jetstream.DeliverPolicy) (func(context.Context) ([]byte, nats.Header, error), error) {
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(o.nats.timeout))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	stream := o.stream
	if stream == "" {
		stream, err = js.StreamNameBySubject(ctx, subject)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("no JetStream stream captures subject %q", subject)
		}
		if err != nil {
			return nil, fmt.Errorf("find the stream for subject %q: %w", subject, err)
		}
	}
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject},
		DeliverPolicy:  deliver,
	})
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	// The iterator lives as long as the connection: closing the connection
	// (deferred by the caller) stops it.
	log.Info("tailing", "subject", subject, "stream", stream)
	return func(ctx context.Context) ([]byte, nats.Header, error) {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return nil, nil, err
		}
		return msg.Data(), msg.Headers(), nil
	}, nil
}

// msgPrinter prints messages of any of the payloads tail understands.
type msgPrinter struct {
	mem     memory.Allocator
	rows    rowPrinter
	log     *slog.Logger
	subject string
}

// ipcContinuation starts every message of an Arrow IPC stream.
var ipcContinuation = []byte{0xff, 0xff, 0xff, 0xff}

func (p *msgPrinter) print(data []byte) error {
	switch {
	case len(data) >= 2 && data[0] == 'M' && data[1] == 'F':
		if err := p.printFrame(data); err != nil {
			return err
		}
	case len(data) >= 8 && bytes.HasPrefix(data, ipcContinuation):
		if err := p.printIPC(data); err != nil {
			return err
		}
	default:
		if err := p.rows.Object(data); err != nil {
			return err
		}
	}
	return p.rows.Flush()
}

func (p *msgPrinter) printFrame(data []byte) error {
	seq, env, err := messages.DecodeFrame(p.mem, data)
	if err != nil {
		p.log.Warn("skipping undecodable frame", "err", err)
		return nil
	}
	defer env.Release()
	if env.Kind != messages.KindBatch {
		if p.log.Enabled(context.Background(), slog.LevelDebug) {
			p.log.Debug("control message", "seq", seq, "kind", env.Kind.String(),
				"watermark", int64(env.Watermark), "barrier", env.Barrier.ID)
		}
		return nil
	}
	return p.rows.Batch(env.Batch)
}

func (p *msgPrinter) printIPC(data []byte) error {
	recs, _, err := messages.DecodeIPC(p.mem, data)
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	if err != nil {
		p.log.Warn("skipping undecodable Arrow IPC message", "err", err)
		return nil
	}
	for _, rec := range recs {
		if err := p.rows.Batch(rec); err != nil {
			return err
		}
	}
	return nil
}
