package operators

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/messages"
	"github.com/meshflow/meshflow/persistence"
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
// of n emits the batches whose index modulo n is i. Row r of batch b is at
// position b<<32 | r, and a checkpoint records the next batch to read, so
// a job restored from a checkpoint goes on from there.
type Batches struct {
	Recs  []arrow.RecordBatch
	i, n  int
	next  int
	last  int // index of the batch Read returned last
	state persistence.Store
}

var (
	_ actors.PositionRanger    = (*Batches)(nil)
	_ actors.Positioner        = (*Batches)(nil)
	_ actors.CheckpointHandler = (*Batches)(nil)
)

func (b *Batches) Open(ctx context.Context, oc actors.OperatorContext) error {
	b.i, b.n, b.next = oc.Instance(), oc.Parallelism(), oc.Instance()
	b.state = oc.State()
	next, err := restoreIndex(ctx, oc)
	if err != nil {
		return err
	}
	if next >= 0 {
		b.next = next
	}
	return nil
}

func (b *Batches) Read(ctx context.Context) (arrow.RecordBatch, error) {
	if b.next >= len(b.Recs) {
		return nil, io.EOF
	}
	rec := b.Recs[b.next]
	b.last = b.next
	b.next += b.n
	rec.Retain()
	return rec, nil
}

// PositionBase implements actors.PositionRanger.
func (b *Batches) PositionBase() (uint64, bool) { return uint64(b.last) << 32, true }

// Positions implements actors.Positioner (PositionBase always applies).
func (b *Batches) Positions() []uint64 { return nil }

// PrepareCheckpoint records the next batch to read.
func (b *Batches) PrepareCheckpoint(ctx context.Context, _ uint64) error {
	return saveIndex(ctx, b.state, b.next)
}

func (b *Batches) Close(context.Context) error { return nil }

// JSONSource is a bounded source decoding fixed JSON lines into batches of
// Schema, BatchSize rows at most; instance i of n decodes the lines whose
// index modulo n is i. A line that does not decode fails the source. A
// row's position is its line's index, and a checkpoint records the next
// line to read.
type JSONSource struct {
	Schema    *arrow.Schema
	Lines     []string
	BatchSize int

	mem   memory.Allocator
	i, n  int
	next  int
	pos   []uint64
	state persistence.Store
}

var (
	_ actors.Positioner        = (*JSONSource)(nil)
	_ actors.CheckpointHandler = (*JSONSource)(nil)
)

func (s *JSONSource) Open(ctx context.Context, oc actors.OperatorContext) error {
	s.mem, s.i, s.n, s.next = oc.Allocator(), oc.Instance(), oc.Parallelism(), oc.Instance()
	if s.BatchSize <= 0 {
		s.BatchSize = 8192
	}
	s.state = oc.State()
	next, err := restoreIndex(ctx, oc)
	if err != nil {
		return err
	}
	if next >= 0 {
		s.next = next
	}
	return nil
}

// Positions implements actors.Positioner.
func (s *JSONSource) Positions() []uint64 {
	p := s.pos
	s.pos = nil
	return p
}

// PrepareCheckpoint records the next line to read.
func (s *JSONSource) PrepareCheckpoint(ctx context.Context, _ uint64) error {
	return saveIndex(ctx, s.state, s.next)
}

// indexKey is where the bounded sources record their next index.
var indexKey = []byte("next")

func saveIndex(ctx context.Context, st persistence.Store, next int) error {
	var b persistence.Batch
	b.Put(indexKey, binary.AppendUvarint(nil, uint64(next)))
	return st.Apply(ctx, &b)
}

// restoreIndex returns the index recorded by the checkpoint the job was
// restored from, or -1.
func restoreIndex(ctx context.Context, oc actors.OperatorContext) (int, error) {
	if oc.RestoredCheckpoint() == 0 {
		return -1, nil
	}
	v, err := oc.State().Get(ctx, indexKey)
	if errors.Is(err, persistence.ErrNotFound) {
		return -1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("restore position: %w", err)
	}
	next, n := binary.Uvarint(v)
	if n <= 0 || next > 1<<40 {
		return 0, fmt.Errorf("restore position: bad value %x", v)
	}
	return int(next), nil
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
	start := s.next
	s.pos = s.pos[:0]
	for s.next < len(s.Lines) && dec.Len() < s.BatchSize {
		if err := dec.Append([]byte(s.Lines[s.next])); err != nil {
			s.next = start
			return nil, fmt.Errorf("line %d: %w", s.next+1, err)
		}
		s.pos = append(s.pos, uint64(s.next))
		s.next += s.n
	}
	return dec.NewBatch(), nil
}

func (s *JSONSource) Close(context.Context) error { return nil }
