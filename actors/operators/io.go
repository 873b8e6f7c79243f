package operators

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/messages"
)

// PrintFormat is how [Print] writes rows.
type PrintFormat uint8

const (
	// JSONLines writes one JSON object per row.
	JSONLines PrintFormat = iota + 1
	// Table writes aligned columns under a header, one block per batch.
	Table
)

// Print is a sink writing rows to a writer. Instances sharing a writer
// serialise their writes on Mu.
type Print struct {
	W      io.Writer
	Mu     *sync.Mutex
	Format PrintFormat

	enc    *messages.JSONRowEncoder
	schema *arrow.Schema
	buf    []byte
}

func (p *Print) Open(context.Context, actors.OperatorContext) error { return nil }
func (p *Print) Close(context.Context) error                        { return nil }

func (p *Print) Process(_ context.Context, in arrow.RecordBatch, _ actors.Emitter) error {
	if p.enc == nil || p.schema != in.Schema() {
		enc, err := messages.NewJSONRowEncoder(in.Schema())
		if err != nil {
			return fmt.Errorf("print: %w", err)
		}
		p.enc, p.schema = enc, in.Schema()
	}
	p.buf = p.buf[:0]
	n := int(in.NumRows())
	if p.Format == Table {
		var sb strings.Builder
		tw := tabwriter.NewWriter(&sb, 0, 4, 2, ' ', 0)
		for i, f := range in.Schema().Fields() {
			if i > 0 {
				fmt.Fprint(tw, "\t")
			}
			fmt.Fprint(tw, strings.ToUpper(f.Name))
		}
		fmt.Fprintln(tw)
		for row := 0; row < n; row++ {
			for c := 0; c < int(in.NumCols()); c++ {
				if c > 0 {
					fmt.Fprint(tw, "\t")
				}
				col := in.Column(c)
				if col.IsNull(row) {
					fmt.Fprint(tw, "NULL")
				} else {
					fmt.Fprint(tw, col.ValueStr(row))
				}
			}
			fmt.Fprintln(tw)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		p.buf = append(p.buf, sb.String()...)
	} else {
		for row := 0; row < n; row++ {
			p.buf = p.enc.AppendRow(p.buf, in, row)
			p.buf = append(p.buf, '\n')
		}
	}
	if p.Mu != nil {
		p.Mu.Lock()
		defer p.Mu.Unlock()
	}
	_, err := p.W.Write(p.buf)
	return err
}

// Batches is a bounded source emitting copies of fixed batches; instance i
// of n emits the batches whose index modulo n is i.
type Batches struct {
	Recs []arrow.RecordBatch
	i, n int
	next int
}

func (b *Batches) Open(_ context.Context, oc actors.OperatorContext) error {
	b.i, b.n, b.next = oc.Instance(), oc.Parallelism(), oc.Instance()
	return nil
}

func (b *Batches) Read(ctx context.Context) (arrow.RecordBatch, error) {
	if b.next >= len(b.Recs) {
		return nil, io.EOF
	}
	rec := b.Recs[b.next]
	b.next += b.n
	rec.Retain()
	return rec, nil
}

func (b *Batches) Close(context.Context) error { return nil }

// JSONSource is a bounded source decoding fixed JSON lines into batches of
// Schema, BatchSize rows at most; instance i of n decodes the lines whose
// index modulo n is i. A line that does not decode fails the source.
type JSONSource struct {
	Schema    *arrow.Schema
	Lines     []string
	BatchSize int

	mem  memory.Allocator
	i, n int
	next int
}

func (s *JSONSource) Open(_ context.Context, oc actors.OperatorContext) error {
	s.mem, s.i, s.n, s.next = oc.Allocator(), oc.Instance(), oc.Parallelism(), oc.Instance()
	if s.BatchSize <= 0 {
		s.BatchSize = 8192
	}
	return nil
}

func (s *JSONSource) Read(ctx context.Context) (arrow.RecordBatch, error) {
	if s.next >= len(s.Lines) {
		return nil, io.EOF
	}
	dec, err := messages.NewJSONDecoder(s.mem, s.Schema)
	if err != nil {
		return nil, err
	}
	defer dec.Release()
	for s.next < len(s.Lines) && dec.Len() < s.BatchSize {
		if err := dec.Append([]byte(s.Lines[s.next])); err != nil {
			return nil, fmt.Errorf("line %d: %w", s.next+1, err)
		}
		s.next += s.n
	}
	return dec.NewBatch(), nil
}

func (s *JSONSource) Close(context.Context) error { return nil }
