package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/meshflow/meshflow/messages"
)

// maxLineBytes bounds one line of JSON input.
const maxLineBytes = 64 << 20

// maxPendingAcks bounds the JetStream publishes awaiting their ack.
const maxPendingAcks = 4096

type injectOptions struct {
	subject   string
	file      string
	format    string
	jetstream bool
	rate      string
	nats      *natsFlags
}

func newInjectCmd(env *Env) *cobra.Command {
	o := &injectOptions{}
	cmd := &cobra.Command{
		Use:   "inject --subject SUBJECT [--file FILE]",
		Short: "Publish events from a file or stdin to a NATS subject",
		Long: `Publish events to a NATS subject, one message per event.

JSON input is JSON lines: one object per line; blank lines are skipped. CSV
input has a header row; every other row becomes one JSON object. The format
is taken from --format, else from the file name (.csv), else JSON.

A file is checked completely before anything is sent, so a bad line sends
nothing. Standard input is streamed: a bad line stops the command after the
events before it were sent.

With --jetstream every event is acknowledged by the stream that captures the
subject; otherwise events are published with core NATS and the command waits
for the server to have received them.`,
		Example: `  meshflow inject --subject bids.in --file bids.json --jetstream
  meshflow inject -s nats://host:4222 --subject bids.in --format csv < bids.csv
  meshflow inject --subject bids.in --file bids.json --rate 1000/s`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runInject(cmd.Context(), env, o)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.subject, "subject", "", "subject to publish to (required)")
	fs.StringVarP(&o.file, "file", "f", "", `input file ("-" or none: stdin)`)
	fs.StringVar(&o.format, "format", "", "input format: json (JSON lines) or csv")
	fs.BoolVar(&o.jetstream, "jetstream", false, "publish with JetStream acknowledgements")
	fs.StringVar(&o.rate, "rate", "", `maximum publish rate, e.g. "1000" or "1000/s", "50/100ms" (default unlimited)`)
	o.nats = addNATSFlags(cmd, env)
	return cmd
}

func runInject(ctx context.Context, env *Env, o *injectOptions) error {
	if o.subject == "" {
		return usageErrorf("inject: --subject is required")
	}
	if strings.ContainsAny(o.subject, "*> \t") {
		return usageErrorf("inject: --subject %q: must be a subject without wildcards or spaces", o.subject)
	}
	format := strings.ToLower(o.format)
	switch format {
	case "json", "csv":
	case "":
		format = "json"
		if strings.EqualFold(filepath.Ext(o.file), ".csv") {
			format = "csv"
		}
	default:
		return usageErrorf("inject: --format %q: want json or csv", o.format)
	}
	perSecond, err := parseRate(o.rate)
	if err != nil {
		return usageErrorf("inject: --rate %q: %v", o.rate, err)
	}
	var scan scanFunc = scanJSONLines
	if format == "csv" {
		scan = scanCSV
	}

	// A file is checked in full first, so that a bad line sends nothing.
	var (
		in        io.Reader = env.Stdin
		file      *os.File
		fileStats inputStats
	)
	if o.file != "" && o.file != "-" {
		if file, err = os.Open(o.file); err != nil {
			return fmt.Errorf("inject: %w", err)
		}
		defer file.Close()
		if err := scan(ctx, file, fileStats.add); err != nil {
			return fmt.Errorf("inject: %s: %w", o.file, err)
		}
		if _, err := file.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("inject: %w", err)
		}
		in = file
	}

	nc, err := connect(ctx, o.nats)
	if err != nil {
		return fmt.Errorf("inject: %w", err)
	}
	defer nc.Close()
	if file != nil && fileStats.maxLen > nc.MaxPayload() {
		return fmt.Errorf("inject: %s: %s: event of %d bytes exceeds the server's maximum payload of %d bytes",
			o.file, fileStats.maxAt, fileStats.maxLen, nc.MaxPayload())
	}

	var pub publisher
	if o.jetstream {
		p, err := newJSPublisher(ctx, nc, o.subject, o.nats.timeout)
		if err != nil {
			return fmt.Errorf("inject: %w", err)
		}
		env.Logger.Debug("publishing with jetstream", "subject", o.subject, "stream", p.stream)
		pub = p
	} else {
		pub = &corePublisher{nc: nc, subject: o.subject, timeout: o.nats.timeout}
	}

	pace := newPacer(perSecond)
	sent := 0
	start := time.Now()
	scanErr := scan(ctx, in, func(line int, event []byte) error {
		if err := pace.wait(ctx, sent); err != nil {
			return err
		}
		if err := pub.publish(event); err != nil {
			return fmt.Errorf("publish event %d: %w", sent+1, err)
		}
		sent++
		return nil
	})
	// What was sent is finished (flushed or acknowledged) even when the
	// input turned out bad half way.
	finishErr := pub.finish(ctx)
	elapsed := time.Since(start)
	if err := errors.Join(scanErr, finishErr); err != nil {
		if file == nil && sent > 0 {
			return fmt.Errorf("inject: after publishing %d events to %s: %w", sent, o.subject, err)
		}
		return fmt.Errorf("inject: %w", err)
	}
	_, err = fmt.Fprintf(env.Stdout, "published %d events to %s in %v (%.0f events/s)\n",
		sent, o.subject, roundDuration(elapsed), float64(sent)/max(elapsed.Seconds(), 1e-9))
	return err
}

// inputStats are gathered while checking a file.
type inputStats struct {
	events int
	maxLen int64  // size of the largest event
	maxAt  string // where it is
}

func (s *inputStats) add(line int, event []byte) error {
	s.events++
	if int64(len(event)) > s.maxLen {
		s.maxLen = int64(len(event))
		if line > 0 {
			s.maxAt = fmt.Sprintf("line %d", line)
		} else {
			s.maxAt = fmt.Sprintf("event %d", s.events)
		}
	}
	return nil
}

// scanFunc reads events from r and calls emit with each; line is the line
// number of the event in r (from 1), or 0 when unknown. emit must not
// retain event.
type scanFunc func(ctx context.Context, r io.Reader, emit func(line int, event []byte) error) error

// scanJSONLines reads JSON lines: one JSON object per line, blank lines
// skipped. An invalid line is an error naming the line.
func scanJSONLines(ctx context.Context, r io.Reader, emit func(line int, event []byte) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLineBytes)
	line := 0
	for sc.Scan() {
		line++
		if line%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		event := bytes.TrimSpace(sc.Bytes())
		if len(event) == 0 {
			continue
		}
		if err := checkJSONObject(event); err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
		if err := emit(line, event); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("line %d: longer than %d bytes", line+1, maxLineBytes)
		}
		return fmt.Errorf("line %d: %w", line+1, err)
	}
	return nil
}

// checkJSONObject reports whether event is one valid JSON object.
func checkJSONObject(event []byte) error {
	if !json.Valid(event) {
		var v json.RawMessage
		if err := json.Unmarshal(event, &v); err != nil {
			return fmt.Errorf("invalid JSON: %w", err)
		}
		return errors.New("invalid JSON")
	}
	if event[0] != '{' {
		return errors.New("not a JSON object")
	}
	return nil
}

// scanCSV reads CSV with a header row, one JSON object per record.
func scanCSV(ctx context.Context, r io.Reader, emit func(line int, event []byte) error) error {
	return messages.CSVToJSON(r, func(event []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return emit(0, event)
	})
}

// publisher sends events to one subject.
type publisher interface {
	// publish sends one event. It does not retain data.
	publish(data []byte) error
	// finish waits until everything published has reached the server (and,
	// with JetStream, was acknowledged).
	finish(ctx context.Context) error
}

type corePublisher struct {
	nc      *nats.Conn
	subject string
	timeout time.Duration
}

func (p *corePublisher) publish(data []byte) error { return p.nc.Publish(p.subject, data) }

func (p *corePublisher) finish(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	if err := p.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	// Errors such as a permissions violation arrive before the flush's
	// reply.
	if err := p.nc.LastError(); err != nil {
		return err
	}
	return nil
}

// jsPublisher publishes asynchronously with at most maxPendingAcks
// publishes awaiting their ack.
type jsPublisher struct {
	js      jetstream.JetStream
	subject string
	stream  string
	timeout time.Duration

	mu       sync.Mutex
	failed   int
	firstErr error
}

func newJSPublisher(ctx context.Context, nc *nats.Conn, subject string, timeout time.Duration) (*jsPublisher, error) {
	p := &jsPublisher{subject: subject, timeout: timeout}
	js, err := jetstream.New(nc,
		jetstream.WithDefaultTimeout(timeout),
		jetstream.WithPublishAsyncMaxPending(maxPendingAcks),
		jetstream.WithPublishAsyncTimeout(timeout),
		jetstream.WithPublishAsyncErrHandler(p.onError),
	)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	p.js = js
	p.stream, err = js.StreamNameBySubject(ctx, subject)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("no JetStream stream captures subject %q", subject)
	}
	if err != nil {
		return nil, fmt.Errorf("find the stream for subject %q: %w", subject, err)
	}
	return p, nil
}

func (p *jsPublisher) onError(_ jetstream.JetStream, _ *nats.Msg, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failed++
	if p.firstErr == nil {
		p.firstErr = err
	}
}

func (p *jsPublisher) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.firstErr == nil {
		return nil
	}
	return fmt.Errorf("%d events not acknowledged by stream %s: %w", p.failed, p.stream, p.firstErr)
}

func (p *jsPublisher) publish(data []byte) error {
	if err := p.err(); err != nil {
		return err
	}
	// The client keeps the message until it is acknowledged, so it gets
	// its own copy.
	_, err := p.js.PublishAsync(p.subject, bytes.Clone(data), jetstream.WithStallWait(p.timeout))
	return err
}

func (p *jsPublisher) finish(ctx context.Context) error {
	// Every pending publish resolves within the ack timeout.
	select {
	case <-p.js.PublishAsyncComplete():
	case <-ctx.Done():
		return fmt.Errorf("waiting for %d acknowledgements: %w", p.js.PublishAsyncPending(), ctx.Err())
	}
	return p.err()
}

// parseRate parses --rate: "N" or "N/UNIT" events, where UNIT is a
// duration ("s", "ms", "100ms", "1m"). It returns events per second, 0 for
// unlimited.
func parseRate(s string) (float64, error) {
	if s == "" {
		return 0, nil
	}
	num, unit, hasUnit := strings.Cut(s, "/")
	n, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || n <= 0 || math.IsInf(n, 0) {
		return 0, errors.New("want a positive number of events, e.g. 1000/s")
	}
	per := time.Second
	if hasUnit {
		unit = strings.TrimSpace(unit)
		if unit != "" && (unit[0] < '0' || unit[0] > '9') {
			unit = "1" + unit
		}
		if per, err = time.ParseDuration(unit); err != nil || per <= 0 {
			return 0, fmt.Errorf("bad unit %q: want a duration such as s, ms or 100ms", unit)
		}
	}
	return n / per.Seconds(), nil
}

// pacer spaces events at a fixed rate.
type pacer struct {
	start    time.Time
	interval float64 // nanoseconds between events; 0: no limit
}

func newPacer(perSecond float64) *pacer {
	p := &pacer{start: time.Now()}
	if perSecond > 0 {
		p.interval = 1e9 / perSecond
	}
	return p
}

// wait blocks until event n (from 0) is due. Waits shorter than a
// millisecond are skipped, so fast rates are sent in short bursts.
func (p *pacer) wait(ctx context.Context, n int) error {
	if p.interval == 0 {
		return nil
	}
	d := time.Until(p.start.Add(time.Duration(float64(n) * p.interval)))
	if d < time.Millisecond {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// roundDuration rounds d for a summary line.
func roundDuration(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(100 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(time.Millisecond)
	default:
		return d.Round(time.Microsecond)
	}
}
