package messages

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// verifyIPCStream walks the framing and flatbuffer metadata of an Arrow IPC
// stream before the Arrow reader sees it. The reader trusts vector lengths
// and offsets in the metadata (it sizes slices by them), so a forged count
// could make it allocate without bound; here every offset, vector and
// string is checked against the message, and only the layouts Meshflow
// sends are let through (no dictionaries, unions, views or tensors).
func verifyIPCStream(data []byte) error {
	pos := 0
	for n := 0; ; n++ {
		if pos == len(data) {
			return nil // a stream may end without its end-of-stream marker
		}
		if len(data)-pos < 4 {
			return errors.New("truncated message length")
		}
		l := binary.LittleEndian.Uint32(data[pos:])
		pos += 4
		if l == 0xFFFFFFFF { // continuation marker
			if len(data)-pos < 4 {
				return errors.New("truncated message length")
			}
			l = binary.LittleEndian.Uint32(data[pos:])
			pos += 4
		}
		if l == 0 {
			return nil // end of stream
		}
		if uint64(l) > uint64(len(data)-pos) {
			return fmt.Errorf("message %d: metadata of %d bytes beyond the stream", n, l)
		}
		fb := fbuf(data[pos : pos+int(l)])
		body, err := fb.verifyMessage(n == 0)
		if err != nil {
			return fmt.Errorf("message %d: %w", n, err)
		}
		pos += int(l)
		if body < 0 || body > int64(len(data)-pos) {
			return fmt.Errorf("message %d: body of %d bytes beyond the stream", n, body)
		}
		pos += int(body)
	}
}

// fbuf reads a flatbuffer with every access checked.
type fbuf []byte

var errFB = errors.New("malformed flatbuffer")

func (b fbuf) u32(at int) (uint32, bool) {
	if at < 0 || at > len(b)-4 {
		return 0, false
	}
	return binary.LittleEndian.Uint32(b[at:]), true
}

// table returns the position of the table referenced at at and its
// vtable position and size.
func (b fbuf) table(at int) (t, vt, vtLen int, err error) {
	t = at
	so, ok := b.u32(t)
	if !ok {
		return 0, 0, 0, errFB
	}
	vt = t - int(int32(so))
	if vt < 0 || vt > len(b)-4 {
		return 0, 0, 0, errFB
	}
	vtLen = int(binary.LittleEndian.Uint16(b[vt:]))
	if vtLen < 4 || vtLen%2 != 0 || vt+vtLen > len(b) {
		return 0, 0, 0, errFB
	}
	return t, vt, vtLen, nil
}

// field returns the absolute position of field i of a table, or 0 when the
// field is absent.
func (b fbuf) field(t, vt, vtLen, i, size int) (int, error) {
	o := 4 + 2*i
	if o+2 > vtLen {
		return 0, nil
	}
	fo := int(binary.LittleEndian.Uint16(b[vt+o:]))
	if fo == 0 {
		return 0, nil
	}
	if t+fo+size > len(b) {
		return 0, errFB
	}
	return t + fo, nil
}

// ref follows the offset stored at at.
func (b fbuf) ref(at int) (int, error) {
	u, ok := b.u32(at)
	if !ok || uint64(at)+uint64(u) > uint64(len(b)) {
		return 0, errFB
	}
	return at + int(u), nil
}

// vector checks a vector of n elements of size bytes at the offset stored
// at at, and returns the position of its first element and its length.
func (b fbuf) vector(at, size int) (start, n int, err error) {
	v, err := b.ref(at)
	if err != nil {
		return 0, 0, err
	}
	l, ok := b.u32(v)
	if !ok || uint64(l)*uint64(size) > uint64(len(b)-v-4) {
		return 0, 0, fmt.Errorf("vector of %d elements beyond the metadata", l)
	}
	return v + 4, int(l), nil
}

// subTable follows the table reference in field i of a table.
func (b fbuf) subTable(t, vt, vtLen, i int) (st, svt, svtLen int, present bool, err error) {
	f, err := b.field(t, vt, vtLen, i, 4)
	if err != nil || f == 0 {
		return 0, 0, 0, false, err
	}
	p, err := b.ref(f)
	if err != nil {
		return 0, 0, 0, false, err
	}
	st, svt, svtLen, err = b.table(p)
	return st, svt, svtLen, err == nil, err
}

func (b fbuf) u8(t, vt, vtLen, i int) (uint8, error) {
	f, err := b.field(t, vt, vtLen, i, 1)
	if err != nil || f == 0 {
		return 0, err
	}
	return b[f], nil
}

func (b fbuf) i64(t, vt, vtLen, i int) (int64, error) {
	f, err := b.field(t, vt, vtLen, i, 8)
	if err != nil || f == 0 {
		return 0, err
	}
	return int64(binary.LittleEndian.Uint64(b[f:])), nil
}

// stringField checks the string in field i of a table, if present.
func (b fbuf) stringField(t, vt, vtLen, i int) error {
	f, err := b.field(t, vt, vtLen, i, 4)
	if err != nil || f == 0 {
		return err
	}
	_, _, err = b.vector(f, 1)
	return err
}

// tables checks a vector of tables in field i and calls fn on each.
func (b fbuf) tables(t, vt, vtLen, i int, fn func(t, vt, vtLen int) error) error {
	f, err := b.field(t, vt, vtLen, i, 4)
	if err != nil || f == 0 {
		return err
	}
	start, n, err := b.vector(f, 4)
	if err != nil {
		return err
	}
	for k := range n {
		p, err := b.ref(start + 4*k)
		if err != nil {
			return err
		}
		st, svt, svtLen, err := b.table(p)
		if err != nil {
			return err
		}
		if err := fn(st, svt, svtLen); err != nil {
			return err
		}
	}
	return nil
}

func (b fbuf) keyValues(t, vt, vtLen, i int) error {
	return b.tables(t, vt, vtLen, i, func(t, vt, vtLen int) error {
		if err := b.stringField(t, vt, vtLen, 0); err != nil {
			return err
		}
		return b.stringField(t, vt, vtLen, 1)
	})
}

// Message header kinds (Message.fbs).
const (
	headerSchema      = 1
	headerRecordBatch = 3
)

// verifyMessage checks a Message table and returns its body length.
func (b fbuf) verifyMessage(first bool) (int64, error) {
	root, err := b.ref(0)
	if err != nil {
		return 0, err
	}
	t, vt, vtLen, err := b.table(root)
	if err != nil {
		return 0, err
	}
	kind, err := b.u8(t, vt, vtLen, 1)
	if err != nil {
		return 0, err
	}
	if first != (kind == headerSchema) {
		return 0, fmt.Errorf("unexpected message type %d", kind)
	}
	body, err := b.i64(t, vt, vtLen, 3)
	if err != nil {
		return 0, err
	}
	if err := b.keyValues(t, vt, vtLen, 4); err != nil {
		return 0, err
	}
	ht, hvt, hvtLen, ok, err := b.subTable(t, vt, vtLen, 2)
	if err != nil || !ok {
		return 0, errors.Join(errFB, err)
	}
	switch kind {
	case headerSchema:
		if err := b.tables(ht, hvt, hvtLen, 1, func(t, vt, vtLen int) error { return b.verifyField(t, vt, vtLen, 0) }); err != nil {
			return 0, fmt.Errorf("schema: %w", err)
		}
		if err := b.keyValues(ht, hvt, hvtLen, 2); err != nil {
			return 0, err
		}
		if f, err := b.field(ht, hvt, hvtLen, 3, 4); err != nil {
			return 0, err
		} else if f != 0 {
			if _, _, err := b.vector(f, 8); err != nil {
				return 0, err
			}
		}
	case headerRecordBatch:
		if err := b.verifyRecordBatch(ht, hvt, hvtLen, body); err != nil {
			return 0, fmt.Errorf("record batch: %w", err)
		}
	default:
		return 0, fmt.Errorf("message type %d is not supported", kind)
	}
	return body, nil
}

// Type union ids (Schema.fbs) that Meshflow accepts on the wire.
var wireTypes = map[uint8]bool{
	1: true, 2: true, 3: true, 4: true, 5: true, 6: true, 7: true, 8: true, 9: true, 10: true,
	11: true, 12: true, 13: true, 15: true, 16: true, 17: true, 18: true, 19: true, 20: true, 21: true,
}

const maxFieldDepth = 32

func (b fbuf) verifyField(t, vt, vtLen, depth int) error {
	if depth > maxFieldDepth {
		return fmt.Errorf("fields nested deeper than %d", maxFieldDepth)
	}
	if err := b.stringField(t, vt, vtLen, 0); err != nil {
		return err
	}
	typ, err := b.u8(t, vt, vtLen, 2)
	if err != nil {
		return err
	}
	if !wireTypes[typ] {
		return fmt.Errorf("field type %d is not supported on the wire", typ)
	}
	tt, tvt, tvtLen, ok, err := b.subTable(t, vt, vtLen, 3)
	if err != nil || !ok {
		return errors.Join(errFB, err)
	}
	if typ == 10 { // Timestamp: unit, timezone
		if err := b.stringField(tt, tvt, tvtLen, 1); err != nil {
			return err
		}
	}
	if f, err := b.field(t, vt, vtLen, 4, 4); err != nil {
		return err
	} else if f != 0 {
		return errors.New("dictionary-encoded fields are not supported")
	}
	if err := b.tables(t, vt, vtLen, 5, func(t, vt, vtLen int) error { return b.verifyField(t, vt, vtLen, depth+1) }); err != nil {
		return err
	}
	return b.keyValues(t, vt, vtLen, 6)
}

func (b fbuf) verifyRecordBatch(t, vt, vtLen int, body int64) error {
	rows, err := b.i64(t, vt, vtLen, 0)
	if err != nil {
		return err
	}
	// Every real column takes at least one bit per row; batches of only
	// null-typed columns are the exception and are kept small too.
	if rows < 0 || rows > 8*body+(1<<16) {
		return fmt.Errorf("%d rows in a %d-byte body", rows, body)
	}
	for i, size := range map[int]int{1: 16, 2: 16, 4: 8} {
		f, err := b.field(t, vt, vtLen, i, 4)
		if err != nil {
			return err
		}
		if f == 0 {
			continue
		}
		if _, _, err := b.vector(f, size); err != nil {
			return err
		}
	}
	if _, _, _, _, err := b.subTable(t, vt, vtLen, 3); err != nil {
		return err
	}
	return nil
}
