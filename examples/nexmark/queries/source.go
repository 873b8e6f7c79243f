package queries

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/internal/nexmark"
	"github.com/meshflow/meshflow/messages"
)

// FromFile is a bounded source reading the Nexmark events of a JSON-lines
// file into batches of nexmark.EventSchema; see [FileSource].
func FromFile(path string) meshflow.Source {
	return meshflow.FromSource(nexmark.EventSchema, func() actors.Source { return &FileSource{Path: path} })
}

// FileSource reads a file of JSON lines, one Nexmark event a line (blank
// lines are skipped), into batches of nexmark.EventSchema of at most
// BatchSize rows, and ends at the end of the file. A line that is not an
// event (not JSON, a field of the wrong type, an unknown "type", a field
// of its type missing) fails the source with an error naming the file and
// the line.
type FileSource struct {
	Path      string
	BatchSize int // default 8192

	f     *os.File
	r     *bufio.Reader
	dec   *messages.JSONDecoder
	line  int   // lines read
	lines []int // line number of each row of the batch being built
	long  []byte
	eof   bool
}

var _ actors.Source = (*FileSource)(nil)

// Open implements actors.Source.
func (s *FileSource) Open(_ context.Context, oc actors.OperatorContext) error {
	if s.BatchSize <= 0 {
		s.BatchSize = 8192
	}
	dec, err := messages.NewJSONDecoder(oc.Allocator(), nexmark.EventSchema)
	if err != nil {
		return err
	}
	f, err := os.Open(s.Path)
	if err != nil {
		dec.Release()
		return err
	}
	s.f, s.r, s.dec = f, bufio.NewReaderSize(f, 1<<20), dec
	return nil
}

// Read implements actors.Source. When ctx is done it returns ctx's error
// and keeps the rows decoded so far for the next call.
func (s *FileSource) Read(ctx context.Context) (arrow.RecordBatch, error) {
	for !s.eof && s.dec.Len() < s.BatchSize {
		if s.line%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		l, err := s.readLine()
		if err == io.EOF {
			s.eof = true
		} else if err != nil {
			return nil, fmt.Errorf("%s: %w", s.Path, err)
		}
		if len(bytes.TrimSpace(l)) == 0 {
			continue
		}
		if err := s.dec.Append(l); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", s.Path, s.line, err)
		}
		s.lines = append(s.lines, s.line)
	}
	if s.dec.Len() == 0 {
		return nil, io.EOF
	}
	rec := s.dec.NewBatch()
	lines := s.lines
	s.lines = s.lines[:0]
	if err := nexmark.CheckEvents(rec); err != nil {
		rec.Release()
		var re *nexmark.RowError
		if errors.As(err, &re) {
			return nil, fmt.Errorf("%s:%d: %w", s.Path, lines[re.Row], re.Err)
		}
		return nil, err
	}
	return rec, nil
}

// readLine returns the next line without its newline (valid until the
// next call), or io.EOF after the last one.
func (s *FileSource) readLine() ([]byte, error) {
	l, err := s.r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		s.long = append(s.long[:0], l...)
		for err == bufio.ErrBufferFull {
			l, err = s.r.ReadSlice('\n')
			s.long = append(s.long, l...)
		}
		l = s.long
	}
	if err != nil && err != io.EOF {
		return nil, err
	}
	if len(l) == 0 && err == io.EOF {
		return nil, io.EOF
	}
	s.line++
	return bytes.TrimSuffix(l, []byte("\n")), nil
}

// Close implements actors.Source.
func (s *FileSource) Close(context.Context) error {
	if s.dec != nil {
		s.dec.Release()
		s.dec = nil
	}
	if s.f != nil {
		err := s.f.Close()
		s.f = nil
		return err
	}
	return nil
}
