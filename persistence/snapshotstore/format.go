// Package snapshotstore encodes snapshots of an operator instance's state
// ([persistence.Snapshot]) into objects, keeps them in the JetStream Object
// Store, and restores them into a [persistence.Store].
//
// A checkpoint uploads one object per task (operator instance), named
// `<job>/<id>/<operator>/<index>` in the bucket `meshflow_snapshots`:
//
//	snap, err := persistence.OpenSnapshot(ns) // at the barrier, on the operator's goroutine
//	…
//	h, err := store.Put(ctx, job, id, "count/0", meta, snap) // on another goroutine
//	snap.Close()
//
// and recovery replaces the namespace with an object's content:
//
//	meta, err := store.Restore(ctx, h.Object, ns)
//
// # Object format (version 1)
//
//	magic    "MFSNAP" (6 bytes)
//	version  1 (1 byte)
//	meta     uvarint(len) | len bytes: opaque to this package (the runtime's timers and watermarks)
//	entry*   uvarint(len(key)) | key | uvarint(len(value)) | value
//	end      0x00 (a key length of zero: keys are never empty)
//	count    uvarint(number of entries)
//	checksum CRC-32C (Castagnoli) of every byte before it, 4 bytes little-endian
//
// followed by nothing. Keys are those of [persistence.Snapshot.Scan]: raw
// backend keys relative to the namespace's prefix, in ascending order, so
// an object restores into any namespace. A key is at most [MaxKeySize]
// bytes, a value at most [MaxValueSize], the meta blob at most
// [MaxMetaSize].
//
// # Decoding and restoring
//
// [Decode] reads the whole object into memory, checks its structure, the
// entry count and the checksum, and only then gives access to the entries:
// a corrupt or truncated object is an error wrapping [ErrCorrupt] (or
// [ErrVersion]) and [Store.Restore] changes nothing. Lengths in the object
// are checked against the bytes actually present, so a lying length never
// makes the decoder allocate: memory use is the object's size (plus what
// reading it through an io.Reader costs), which bounds the state one task
// can restore to what fits in memory.
package snapshotstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/meshflow/meshflow/persistence"
)

const (
	magic   = "MFSNAP"
	version = 1
	// trailerMin is the end marker, a one-byte count and the checksum.
	trailerMin = 1 + 1 + 4
)

// Limits of the format.
const (
	MaxKeySize   = 1 << 16
	MaxValueSize = 1 << 30
	MaxMetaSize  = 1 << 30
)

// ErrCorrupt is wrapped by the errors of Decode and Restore for an object
// that is not a complete, intact snapshot: bad magic, truncated, a length
// past the end, a wrong entry count or checksum, trailing bytes.
var ErrCorrupt = errors.New("snapshotstore: corrupt snapshot object")

// ErrVersion is wrapped by the errors of Decode and Restore for an object
// of a format version this package cannot read.
var ErrVersion = errors.New("snapshotstore: unsupported snapshot format version")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encodeBuffer is the size of Encode's write buffer, and so of its writes.
const encodeBuffer = 128 << 10

// Encode writes the object of meta and every entry of snap to w, streaming:
// its memory use is a 128 KiB buffer, whatever the snapshot's size. It
// returns the number of bytes written. An error of snap.Scan (ctx done, the
// snapshot closed) or of w is returned wrapped, and what was written is
// then not a valid object.
func Encode(ctx context.Context, w io.Writer, meta []byte, snap persistence.Snapshot) (int64, error) {
	if len(meta) > MaxMetaSize {
		return 0, fmt.Errorf("snapshotstore: meta of %d bytes is larger than %d", len(meta), MaxMetaSize)
	}
	e := &encoder{w: w, buf: make([]byte, 0, encodeBuffer)}
	e.buf = append(e.buf, magic...)
	e.buf = append(e.buf, version)
	e.buf = binary.AppendUvarint(e.buf, uint64(len(meta)))
	if err := e.write(meta); err != nil {
		return e.n, err
	}
	var count uint64
	err := snap.Scan(ctx, func(key, value []byte) error {
		switch {
		case len(key) == 0:
			return errors.New("snapshotstore: empty key in snapshot")
		case len(key) > MaxKeySize:
			return fmt.Errorf("snapshotstore: key of %d bytes is larger than %d", len(key), MaxKeySize)
		case len(value) > MaxValueSize:
			return fmt.Errorf("snapshotstore: value of %d bytes is larger than %d", len(value), MaxValueSize)
		}
		e.buf = binary.AppendUvarint(e.buf, uint64(len(key)))
		if err := e.write(key); err != nil {
			return err
		}
		e.buf = binary.AppendUvarint(e.buf, uint64(len(value)))
		if err := e.write(value); err != nil {
			return err
		}
		count++
		return nil
	})
	if err != nil {
		return e.n, fmt.Errorf("snapshotstore: encode: %w", err)
	}
	e.buf = append(e.buf, 0)
	e.buf = binary.AppendUvarint(e.buf, count)
	e.crc = crc32.Update(e.crc, castagnoli, e.buf)
	e.buf = binary.LittleEndian.AppendUint32(e.buf, e.crc)
	if err := e.flushNoCRC(); err != nil {
		return e.n, err
	}
	return e.n, nil
}

// encoder buffers the object and checksums what it writes.
type encoder struct {
	w   io.Writer
	buf []byte
	crc uint32
	n   int64
}

// write appends p to the buffer, or writes it directly when it is large,
// flushing the buffer when it is full. It always leaves room in the buffer
// for the next varint.
func (e *encoder) write(p []byte) error {
	if len(e.buf)+len(p) <= cap(e.buf)-2*binary.MaxVarintLen64 {
		e.buf = append(e.buf, p...)
		return nil
	}
	if err := e.flush(); err != nil {
		return err
	}
	if len(p) <= cap(e.buf)/2 {
		e.buf = append(e.buf, p...)
		return nil
	}
	e.crc = crc32.Update(e.crc, castagnoli, p)
	return e.out(p)
}

func (e *encoder) flush() error {
	e.crc = crc32.Update(e.crc, castagnoli, e.buf)
	return e.flushNoCRC()
}

func (e *encoder) flushNoCRC() error {
	err := e.out(e.buf)
	e.buf = e.buf[:0]
	return err
}

func (e *encoder) out(p []byte) error {
	n, err := e.w.Write(p)
	e.n += int64(n)
	if err != nil {
		return fmt.Errorf("snapshotstore: write: %w", err)
	}
	return nil
}

// Reader is a decoded, verified snapshot object.
type Reader struct {
	meta    []byte
	entries []byte // the entries, verified, up to the end marker
	count   uint64
	size    int
}

// Decode reads the object from r to its end and verifies it (see the
// package documentation). Errors about the object's content wrap ErrCorrupt
// or ErrVersion; an error of r is returned wrapped as is.
func Decode(r io.Reader) (*Reader, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("snapshotstore: read: %w", err)
	}
	return decode(data)
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

// decode verifies data and returns a Reader over it; the Reader keeps data.
func decode(data []byte) (*Reader, error) {
	if len(data) < len(magic) || string(data[:len(magic)]) != magic {
		return nil, corrupt("not a snapshot object (no %q header)", magic)
	}
	if len(data) < len(magic)+1 {
		return nil, corrupt("truncated after the header")
	}
	if v := data[len(magic)]; v != version {
		return nil, fmt.Errorf("%w: version %d (this build reads version %d)", ErrVersion, v, version)
	}
	p := len(magic) + 1
	body := data[:max(len(data)-4, p)] // all but the checksum
	metaLen, p, err := uvarint(body, p, MaxMetaSize, "meta length")
	if err != nil {
		return nil, err
	}
	meta := body[p : p+metaLen]
	p += metaLen
	start := p
	var count uint64
	end := p
	for {
		var kl, vl int
		end = p // where the end marker is, once kl is 0
		kl, p, err = uvarint(body, p, MaxKeySize, fmt.Sprintf("key length of entry %d", count))
		if err != nil {
			return nil, err
		}
		if kl == 0 {
			break
		}
		p += kl
		vl, p, err = uvarint(body, p, MaxValueSize, fmt.Sprintf("value length of entry %d", count))
		if err != nil {
			return nil, err
		}
		p += vl
		count++
	}
	n, p, err := uvarintRaw(body, p, "entry count")
	if err != nil {
		return nil, err
	}
	if n != count {
		return nil, corrupt("object has %d entries, its trailer says %d", count, n)
	}
	switch {
	case len(data) < p+4:
		return nil, corrupt("truncated in the checksum")
	case len(data) > p+4:
		return nil, corrupt("%d bytes after the end", len(data)-p-4)
	}
	if want, got := binary.LittleEndian.Uint32(data[p:]), crc32.Checksum(data[:p], castagnoli); got != want {
		return nil, corrupt("checksum mismatch (CRC-32C %08x, object says %08x)", got, want)
	}
	return &Reader{meta: meta, entries: data[start:end], count: count, size: len(data)}, nil
}

// uvarint reads a length at p that must be at most limit and fit, with
// the bytes it announces, in b; it returns the length and the position
// after the varint.
func uvarint(b []byte, p, limit int, what string) (int, int, error) {
	v, p, err := uvarintRaw(b, p, what)
	if err != nil {
		return 0, 0, err
	}
	if v > uint64(limit) {
		return 0, 0, corrupt("%s %d is larger than %d", what, v, limit)
	}
	if v > uint64(len(b)-p) {
		return 0, 0, corrupt("%s %d runs past the end (truncated object?)", what, v)
	}
	return int(v), p, nil
}

func uvarintRaw(b []byte, p int, what string) (uint64, int, error) {
	v, n := binary.Uvarint(b[p:])
	switch {
	case n == 0:
		return 0, 0, corrupt("truncated in the %s", what)
	case n < 0:
		return 0, 0, corrupt("%s is not a valid varint", what)
	}
	return v, p + n, nil
}

// Meta returns the meta blob. It is valid as long as the Reader.
func (r *Reader) Meta() []byte { return r.meta }

// Len is the number of entries.
func (r *Reader) Len() int { return int(r.count) }

// Size is the size of the object in bytes.
func (r *Reader) Size() int { return r.size }

// Entries calls yield for every entry, in order, and returns yield's first
// error as is. The entries were verified by Decode, so it fails only
// through yield. key and value point into the Reader and must not be
// modified. Its signature fits [persistence.ReplaceNamespace].
func (r *Reader) Entries(yield func(key, value []byte) error) error {
	b := r.entries
	for len(b) > 0 {
		kl, n := binary.Uvarint(b)
		b = b[n:]
		key := b[:kl:kl]
		b = b[kl:]
		vl, n := binary.Uvarint(b)
		b = b[n:]
		value := b[:vl:vl]
		b = b[vl:]
		if err := yield(key, value); err != nil {
			return err
		}
	}
	return nil
}
