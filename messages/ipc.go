package messages

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sync"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// EncodeIPC encodes rec as one self-contained, uncompressed Arrow IPC
// stream (schema, batch, end-of-stream marker). rec is borrowed.
func EncodeIPC(rec arrow.RecordBatch) ([]byte, error) {
	var buf bytes.Buffer
	if err := writeIPC(&buf, rec); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeIPC(w io.Writer, rec arrow.RecordBatch) error {
	iw := ipc.NewWriter(w, ipc.WithSchema(rec.Schema()))
	if err := iw.Write(rec); err != nil {
		iw.Close()
		return fmt.Errorf("arrow ipc: %w", err)
	}
	if err := iw.Close(); err != nil {
		return fmt.Errorf("arrow ipc: %w", err)
	}
	return nil
}

// errBudget is the panic value of a budgetAllocator out of budget.
var errBudget = errors.New("allocation budget exceeded")

// budgetAllocator bounds what decoding one untrusted message may allocate,
// so that a forged length (or a compressed body claiming a huge size) gives
// an error instead of exhausting memory. Frees are forwarded, so arrays
// outliving the decode release into the real allocator.
//
// It also tracks live allocations: when decoding fails half-way, the Arrow
// reader may not release what it allocated, and freeLeft returns it.
type budgetAllocator struct {
	mem  memory.Allocator
	left int
	mu   sync.Mutex
	live map[*byte][]byte
}

func (b *budgetAllocator) Allocate(size int) []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	if size < 0 || size > b.left {
		panic(errBudget)
	}
	b.left -= size
	p := b.mem.Allocate(size)
	b.track(nil, p)
	return p
}

func (b *budgetAllocator) Reallocate(size int, p []byte) []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	if grow := size - len(p); size < 0 || grow > b.left {
		panic(errBudget)
	} else if grow > 0 {
		b.left -= grow
	}
	q := b.mem.Reallocate(size, p)
	b.track(p, q)
	return q
}

func (b *budgetAllocator) Free(p []byte) {
	b.mu.Lock()
	b.track(p, nil)
	b.mu.Unlock()
	b.mem.Free(p)
}

func (b *budgetAllocator) track(old, cur []byte) {
	if cap(old) > 0 {
		delete(b.live, unsafe.SliceData(old[:1]))
	}
	if cap(cur) > 0 {
		if b.live == nil {
			b.live = make(map[*byte][]byte)
		}
		b.live[unsafe.SliceData(cur[:1])] = cur
	}
}

// freeLeft frees what is still allocated. Only for failed decodes, after
// every batch decoded so far was released.
func (b *budgetAllocator) freeLeft() {
	b.mu.Lock()
	live := b.live
	b.live = nil
	b.mu.Unlock()
	for _, p := range live {
		b.mem.Free(p)
	}
}

// decodeBudget is what decoding n bytes may allocate.
func decodeBudget(n int) int { return max(64<<20, 32*n) }

// DecodeIPC decodes an Arrow IPC stream holding any number of batches,
// allocating from mem; the caller owns the returned batches. Untrusted
// bytes give an error, never a panic, and every returned batch has passed
// [Validate].
func DecodeIPC(mem memory.Allocator, data []byte) (recs []arrow.RecordBatch, schema *arrow.Schema, err error) {
	if err := verifyIPCStream(data); err != nil {
		return nil, nil, fmt.Errorf("arrow ipc: %w", err)
	}
	bm := &budgetAllocator{mem: mem, left: decodeBudget(len(data))}
	recs, schema, err = decodeIPC(bm, data)
	if err != nil {
		bm.freeLeft()
		return nil, nil, err
	}
	return recs, schema, nil
}

// decodeIPC decodes with the Arrow reader, turning its panics into errors.
// On error every batch is released.
func decodeIPC(bm *budgetAllocator, data []byte) (recs []arrow.RecordBatch, schema *arrow.Schema, err error) {
	var r *ipc.Reader
	defer func() {
		p := recover()
		if p != nil {
			if p == errBudget {
				err = fmt.Errorf("arrow ipc: decoding a %d-byte message would allocate more than %d bytes", len(data), decodeBudget(len(data)))
			} else {
				err = fmt.Errorf("arrow ipc: malformed stream: %v", p)
			}
		}
		if err != nil {
			for _, r := range recs {
				r.Release()
			}
			recs, schema = nil, nil
		}
		if r != nil && p == nil {
			r.Release()
		}
	}()
	r, err = ipc.NewReader(bytes.NewReader(data), ipc.WithAllocator(bm),
		ipc.WithMetadataSizeLimit(int64(len(data))), ipc.WithBodySizeLimit(int64(len(data))))
	if err != nil {
		return nil, nil, fmt.Errorf("arrow ipc: %w", err)
	}
	for r.Next() {
		rec := r.RecordBatch()
		rec.Retain()
		recs = append(recs, rec)
		if err := Validate(rec); err != nil {
			return recs, nil, fmt.Errorf("arrow ipc: batch %d: %w", len(recs), err)
		}
	}
	if err := r.Err(); err != nil && !errors.Is(err, io.EOF) {
		return recs, nil, fmt.Errorf("arrow ipc: %w", err)
	}
	return recs, r.Schema(), nil
}

// Validate checks that every buffer of rec is long enough for its length
// and offset, that variable-length offsets are in bounds and ascending, and
// that null counts agree with validity bitmaps. Batches decoded from
// untrusted bytes pass it before any kernel touches them.
func Validate(rec arrow.RecordBatch) error {
	if rec.NumRows() < 0 {
		return errors.New("negative row count")
	}
	for i, col := range rec.Columns() {
		if int64(col.Len()) != rec.NumRows() {
			return fmt.Errorf("column %q: %d rows in a batch of %d", rec.Schema().Field(i).Name, col.Len(), rec.NumRows())
		}
		if err := validateData(col.Data()); err != nil {
			return fmt.Errorf("column %q: %w", rec.Schema().Field(i).Name, err)
		}
	}
	return nil
}

func bufLen(b *memory.Buffer) int {
	if b == nil {
		return 0
	}
	return b.Len()
}

func validateData(d arrow.ArrayData) error {
	off, n := d.Offset(), d.Len()
	if off < 0 || n < 0 {
		return fmt.Errorf("negative offset %d or length %d", off, n)
	}
	end := off + n
	bufs := d.Buffers()
	dt := d.DataType()
	if dt.ID() == arrow.NULL {
		return nil
	}
	if len(bufs) == 0 {
		return fmt.Errorf("%s array without buffers", dt)
	}
	if v := bufs[0]; v != nil && v.Len() > 0 {
		if int64(v.Len()) < bitutil.BytesForBits(int64(end)) {
			return fmt.Errorf("validity bitmap of %d bytes for %d slots", v.Len(), end)
		}
		if nulls := n - bitutil.CountSetBits(v.Bytes(), off, n); nulls != d.NullN() {
			return fmt.Errorf("null count %d, bitmap has %d nulls", d.NullN(), nulls)
		}
	} else if d.NullN() != 0 {
		return fmt.Errorf("null count %d without a validity bitmap", d.NullN())
	}
	switch t := dt.(type) {
	case *arrow.BooleanType:
		if len(bufs) < 2 || int64(bufLen(bufs[1])) < bitutil.BytesForBits(int64(end)) {
			return fmt.Errorf("boolean values buffer too short for %d slots", end)
		}
	case *arrow.StringType, *arrow.BinaryType:
		return validateOffsets32(bufs, off, n, dataLen(bufs))
	case *arrow.LargeStringType, *arrow.LargeBinaryType:
		return validateOffsets64(bufs, off, n, dataLen(bufs))
	case *arrow.ListType, *arrow.MapType:
		if len(d.Children()) != 1 {
			return fmt.Errorf("%s with %d children", dt, len(d.Children()))
		}
		if err := validateOffsets32(bufs, off, n, int64(d.Children()[0].Len())); err != nil {
			return err
		}
		return validateData(d.Children()[0])
	case *arrow.LargeListType:
		if len(d.Children()) != 1 {
			return fmt.Errorf("%s with %d children", dt, len(d.Children()))
		}
		if err := validateOffsets64(bufs, off, n, int64(d.Children()[0].Len())); err != nil {
			return err
		}
		return validateData(d.Children()[0])
	case *arrow.StructType:
		if len(d.Children()) != t.NumFields() {
			return fmt.Errorf("struct of %d fields with %d children", t.NumFields(), len(d.Children()))
		}
		for i, c := range d.Children() {
			if c.Len() < end {
				return fmt.Errorf("struct field %q: %d slots, need %d", t.Field(i).Name, c.Len(), end)
			}
			if err := validateData(c); err != nil {
				return fmt.Errorf("struct field %q: %w", t.Field(i).Name, err)
			}
		}
	case *arrow.FixedSizeListType:
		if len(d.Children()) != 1 {
			return errors.New("fixed-size list without its child")
		}
		c := d.Children()[0]
		if hi, ov := bits.Mul64(uint64(end), uint64(t.Len())); hi != 0 || ov > uint64(c.Len()) {
			return fmt.Errorf("fixed-size list child of %d slots for %d lists of %d", c.Len(), end, t.Len())
		}
		return validateData(c)
	case *arrow.DictionaryType, *arrow.StringViewType, *arrow.BinaryViewType, arrow.UnionType, *arrow.RunEndEncodedType:
		return fmt.Errorf("type %s is not supported on the wire", dt)
	case arrow.FixedWidthDataType:
		w := t.BitWidth()
		if w <= 0 || w%8 != 0 {
			return fmt.Errorf("unsupported type %s", dt)
		}
		if hi, need := bits.Mul64(uint64(end), uint64(w/8)); len(bufs) < 2 || hi != 0 || need > uint64(bufLen(bufs[1])) {
			return fmt.Errorf("%s values buffer of %d bytes for %d slots", dt, bufLen(bufs[1%len(bufs)]), end)
		}
	default:
		return fmt.Errorf("type %s is not supported on the wire", dt)
	}
	return nil
}

// dataLen is the length of the data buffer of a binary-like array (-1 when
// it is missing, so any non-empty offsets range fails).
func dataLen(bufs []*memory.Buffer) int64 {
	if len(bufs) < 3 {
		return -1
	}
	return int64(bufLen(bufs[2]))
}

func validateOffsets32(bufs []*memory.Buffer, off, n int, limit int64) error {
	if n == 0 {
		return nil
	}
	if len(bufs) < 2 || bufLen(bufs[1]) < (off+n+1)*4 {
		return fmt.Errorf("offsets buffer too short for %d slots", off+n)
	}
	o := arrow.Int32Traits.CastFromBytes(bufs[1].Bytes())[off : off+n+1]
	return checkOffsets(func(i int) int64 { return int64(o[i]) }, n, limit)
}

func validateOffsets64(bufs []*memory.Buffer, off, n int, limit int64) error {
	if n == 0 {
		return nil
	}
	if len(bufs) < 2 || bufLen(bufs[1]) < (off+n+1)*8 {
		return fmt.Errorf("offsets buffer too short for %d slots", off+n)
	}
	o := arrow.Int64Traits.CastFromBytes(bufs[1].Bytes())[off : off+n+1]
	return checkOffsets(func(i int) int64 { return o[i] }, n, limit)
}

func checkOffsets(at func(int) int64, n int, limit int64) error {
	prev := at(0)
	if prev < 0 {
		return fmt.Errorf("negative offset %d", prev)
	}
	for i := 1; i <= n; i++ {
		v := at(i)
		if v < prev {
			return fmt.Errorf("offsets descend at slot %d", i-1)
		}
		prev = v
	}
	if prev > max(limit, 0) || (limit < 0 && prev > at(0)) {
		return fmt.Errorf("offset %d beyond the %d-byte data buffer", prev, limit)
	}
	return nil
}

// CheckSchema reports whether batches of schema got can flow where want is
// declared: same field names in the same order with identical types. A
// nullable field where want says not-null is accepted here and checked row
// by row in [Conform].
func CheckSchema(want, got *arrow.Schema) error {
	if want == nil || got == nil {
		return errors.New("schema mismatch: missing schema")
	}
	if want.NumFields() != got.NumFields() {
		return fmt.Errorf("schema mismatch: %d fields, want %d (%s)", got.NumFields(), want.NumFields(), fieldNames(want))
	}
	for i := range want.NumFields() {
		w, g := want.Field(i), got.Field(i)
		if w.Name != g.Name {
			return fmt.Errorf("schema mismatch: field %d is %q, want %q", i, g.Name, w.Name)
		}
		if !arrow.TypeEqual(w.Type, g.Type) {
			return fmt.Errorf("schema mismatch: field %q is %s, want %s", w.Name, g.Type, w.Type)
		}
	}
	return nil
}

func fieldNames(s *arrow.Schema) string {
	var b bytes.Buffer
	for i, f := range s.Fields() {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %s", f.Name, f.Type)
	}
	return b.String()
}

// Conform returns rec under the declared schema want (a new reference),
// after [CheckSchema] and a check that not-null fields hold no nulls. rec is
// borrowed.
func Conform(want *arrow.Schema, rec arrow.RecordBatch) (arrow.RecordBatch, error) {
	if err := CheckSchema(want, rec.Schema()); err != nil {
		return nil, err
	}
	for i, f := range want.Fields() {
		if !f.Nullable && rec.Column(i).NullN() > 0 {
			return nil, fmt.Errorf("field %q is not nullable but holds %d nulls", f.Name, rec.Column(i).NullN())
		}
	}
	if rec.Schema() == want {
		rec.Retain()
		return rec, nil
	}
	return array.NewRecordBatch(want, rec.Columns(), rec.NumRows()), nil
}
