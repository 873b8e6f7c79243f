package meshflow

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/actors/natsio"
	"github.com/meshflow/meshflow/actors/operators"
	"github.com/meshflow/meshflow/messages"
)

// Source is where a pipeline's data comes from: [FromJetStream],
// [FromJSON], [FromBatches] or [FromSource].
type Source interface {
	schema() *arrow.Schema
	validate() error
	build(env *runEnv) func() actors.Source
}

// Sink is where a pipeline's results go: [ToJetStream], [Print] or
// [ToOperator].
type Sink interface {
	validate(in *arrow.Schema) error
	build(env *runEnv) func() actors.Operator
}

// JetStreamSource configures a source reading events from NATS JetStream.
type JetStreamSource = natsio.SourceConfig

// JetStreamSink configures a sink publishing to NATS JetStream.
type JetStreamSink = natsio.SinkConfig

// Formats of JetStream sources and sinks.
const (
	JSON     = natsio.JSON
	ArrowIPC = natsio.ArrowIPC
)

// FromJetStream reads events (JSON or Arrow IPC) from JetStream subjects
// into batches of cfg.Schema. Events that do not decode go to the
// dead-letter subject with the reason.
func FromJetStream(cfg JetStreamSource) Source { return jsSource{cfg} }

type jsSource struct{ cfg natsio.SourceConfig }

func (s jsSource) schema() *arrow.Schema { return s.cfg.Schema }
func (s jsSource) validate() error       { return s.cfg.Validate() }
func (s jsSource) build(env *runEnv) func() actors.Source {
	return func() actors.Source { return natsio.NewSource(env.nc, s.cfg) }
}

// ToJetStream publishes results to a JetStream subject as JSON rows or Arrow
// IPC batches; a stream is created for the subject when none covers it.
func ToJetStream(cfg JetStreamSink) Sink { return jsSink{cfg} }

type jsSink struct{ cfg natsio.SinkConfig }

func (s jsSink) validate(in *arrow.Schema) error {
	if err := s.cfg.Validate(); err != nil {
		return err
	}
	if in != nil && s.cfg.Format != natsio.ArrowIPC {
		if _, err := messages.NewJSONRowEncoder(in); err != nil {
			return err
		}
	}
	return nil
}

func (s jsSink) build(env *runEnv) func() actors.Operator {
	return func() actors.Operator { return natsio.NewSink(env.nc, s.cfg) }
}

// PrintFormat is how [Print] writes rows.
type PrintFormat = operators.PrintFormat

// Print formats.
const (
	JSONLines = operators.JSONLines
	Table     = operators.Table
)

// Print writes results to w, one JSON object per row or as tables.
// Parallel instances share w; their writes do not interleave.
func Print(w io.Writer, format PrintFormat) Sink {
	return printSink{w: w, format: format, mu: &sync.Mutex{}}
}

type printSink struct {
	w      io.Writer
	format PrintFormat
	mu     *sync.Mutex
}

func (s printSink) validate(in *arrow.Schema) error {
	if s.w == nil {
		return errors.New("print: nil writer")
	}
	if in != nil {
		if _, err := messages.NewJSONRowEncoder(in); err != nil {
			return err
		}
	}
	return nil
}

func (s printSink) build(*runEnv) func() actors.Operator {
	return func() actors.Operator { return &operators.Print{W: s.w, Mu: s.mu, Format: s.format} }
}

// ToOperator uses a custom operator as a sink; whatever it emits is
// dropped.
func ToOperator(factory func() Operator) Sink { return opSink{factory} }

type opSink struct{ f func() Operator }

func (s opSink) validate(*arrow.Schema) error {
	if s.f == nil {
		return errors.New("nil operator factory")
	}
	return nil
}
func (s opSink) build(*runEnv) func() actors.Operator {
	return func() actors.Operator { return s.f() }
}

// FromJSON is a bounded source of JSON lines decoded into batches of
// schema: for examples and tests. Parallel instances split the lines.
func FromJSON(schema *arrow.Schema, lines ...string) Source {
	return jsonSource{sch: schema, lines: lines}
}

type jsonSource struct {
	sch   *arrow.Schema
	lines []string
}

func (s jsonSource) schema() *arrow.Schema { return s.sch }

func (s jsonSource) validate() error {
	if s.sch == nil {
		return errors.New("json source: nil schema")
	}
	dec, err := messages.NewJSONDecoder(memory.DefaultAllocator, s.sch)
	if err != nil {
		return err
	}
	defer dec.Release()
	for i, l := range s.lines {
		if err := dec.Append([]byte(l)); err != nil {
			return fmt.Errorf("json source: line %d: %w", i+1, err)
		}
	}
	return nil
}

func (s jsonSource) build(*runEnv) func() actors.Source {
	return func() actors.Source { return &operators.JSONSource{Schema: s.sch, Lines: s.lines} }
}

// FromBatches is a bounded source of fixed batches (the caller keeps its
// references). Parallel instances split the batches.
func FromBatches(recs ...arrow.RecordBatch) Source { return batchSource{recs} }

type batchSource struct{ recs []arrow.RecordBatch }

func (s batchSource) schema() *arrow.Schema {
	if len(s.recs) == 0 {
		return nil
	}
	return s.recs[0].Schema()
}

func (s batchSource) validate() error {
	for i, r := range s.recs {
		if r == nil {
			return fmt.Errorf("batch source: batch %d is nil", i)
		}
		if !sameFields(r.Schema(), s.recs[0].Schema()) {
			return fmt.Errorf("batch source: batch %d has another schema", i)
		}
	}
	return nil
}

func (s batchSource) build(*runEnv) func() actors.Source {
	return func() actors.Source { return &operators.Batches{Recs: s.recs} }
}

// FromSource uses a custom source; factory builds one instance per
// parallel instance and restart. schema may be nil when unknown.
func FromSource(schema *arrow.Schema, factory func() actors.Source) Source {
	return customSource{sch: schema, f: factory}
}

type customSource struct {
	sch *arrow.Schema
	f   func() actors.Source
}

func (s customSource) schema() *arrow.Schema { return s.sch }

func (s customSource) validate() error {
	if s.f == nil {
		return errors.New("nil source factory")
	}
	return nil
}

func (s customSource) build(*runEnv) func() actors.Source { return s.f }
