package messages

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"google.golang.org/protobuf/proto"

	"github.com/meshflow/meshflow/messages/pb"
)

// A frame is one data-plane NATS message:
//
//	"MF" | version (1 byte) | uvarint header length | header (pb.Frame) | body
//
// The body is present for batches only: one self-contained Arrow IPC stream
// (schema, one record batch, end-of-stream marker), uncompressed.
const (
	frameMagic0  = 'M'
	frameMagic1  = 'F'
	frameVersion = 1
	// maxHeaderLen bounds the protobuf header: a few dozen bytes plus the
	// batch's lineage, about 1-3 bytes per row.
	maxHeaderLen = 16 << 20
)

// ErrBadFrame is returned (wrapped) for bytes that are not a valid frame.
var ErrBadFrame = errors.New("messages: bad frame")

// FrameEncoder encodes envelopes into frames, reusing its buffer: the bytes
// returned by Encode are valid until the next call. The zero value is ready
// to use; it is not safe for concurrent use.
type FrameEncoder struct {
	buf    bytes.Buffer
	hdr    []byte
	header pb.Frame
	deltas []int64
}

// Encode encodes env as the frame with sequence number seq. env is borrowed.
func (e *FrameEncoder) Encode(seq uint64, env Envelope) ([]byte, error) {
	h := &e.header
	*h = pb.Frame{Seq: seq}
	switch env.Kind {
	case KindBatch:
		if env.Batch == nil {
			return nil, fmt.Errorf("messages: encode frame %d: batch envelope without a batch", seq)
		}
		h.Kind, h.Rows = pb.Kind_KIND_BATCH, env.Batch.NumRows()
		if l := env.Lineage; l != nil {
			h.LineageOrigin, h.LineageBase = l.Origin, l.Base
			if l.Pos != nil {
				h.LineageDeltas = e.deltas[:0]
				prev := uint64(0)
				for _, p := range l.Pos {
					h.LineageDeltas = append(h.LineageDeltas, int64(p-prev))
					prev = p
				}
				e.deltas = h.LineageDeltas
			}
		}
	case KindWatermark:
		h.Kind, h.WatermarkUs = pb.Kind_KIND_WATERMARK, int64(env.Watermark)
	case KindBarrier:
		h.Kind, h.BarrierId, h.BarrierTimestampUs = pb.Kind_KIND_BARRIER, env.Barrier.ID, env.Barrier.TimestampUs
	case KindEndOfStream:
		h.Kind = pb.Kind_KIND_END_OF_STREAM
	default:
		return nil, fmt.Errorf("messages: encode frame %d: unknown envelope kind %s", seq, env.Kind)
	}
	var err error
	e.hdr, err = proto.MarshalOptions{}.MarshalAppend(e.hdr[:0], h)
	if err != nil {
		return nil, fmt.Errorf("messages: encode frame %d header: %w", seq, err)
	}
	e.buf.Reset()
	e.buf.Write([]byte{frameMagic0, frameMagic1, frameVersion})
	var n [binary.MaxVarintLen64]byte
	e.buf.Write(n[:binary.PutUvarint(n[:], uint64(len(e.hdr)))])
	e.buf.Write(e.hdr)
	if env.Kind == KindBatch {
		if err := writeIPC(&e.buf, env.Batch); err != nil {
			return nil, fmt.Errorf("messages: encode frame %d: %w", seq, err)
		}
	}
	return e.buf.Bytes(), nil
}

// EncodeFrame encodes env as the frame with sequence number seq into a new
// byte slice. env is borrowed.
func EncodeFrame(seq uint64, env Envelope) ([]byte, error) {
	var e FrameEncoder
	b, err := e.Encode(seq, env)
	if err != nil {
		return nil, err
	}
	return bytes.Clone(b), nil
}

// DecodeFrame decodes a frame. The batch of a batch envelope is allocated
// from mem and owned by the returned envelope. Untrusted bytes give an error
// wrapping [ErrBadFrame], never a panic, and never a batch whose buffers
// disagree with its lengths.
func DecodeFrame(mem memory.Allocator, data []byte) (seq uint64, env Envelope, err error) {
	if len(data) < 4 || data[0] != frameMagic0 || data[1] != frameMagic1 {
		return 0, Envelope{}, fmt.Errorf("%w: no frame magic", ErrBadFrame)
	}
	if data[2] != frameVersion {
		return 0, Envelope{}, fmt.Errorf("%w: version %d, want %d", ErrBadFrame, data[2], frameVersion)
	}
	hl, n := binary.Uvarint(data[3:])
	if n <= 0 || hl > maxHeaderLen || uint64(len(data)-3-n) < hl {
		return 0, Envelope{}, fmt.Errorf("%w: header length", ErrBadFrame)
	}
	body := data[3+n+int(hl):]
	var h pb.Frame
	if err := proto.Unmarshal(data[3+n:3+n+int(hl)], &h); err != nil {
		return 0, Envelope{}, fmt.Errorf("%w: header: %v", ErrBadFrame, err)
	}
	if h.Kind != pb.Kind_KIND_BATCH && len(body) != 0 {
		return 0, Envelope{}, fmt.Errorf("%w: %s frame with a %d-byte body", ErrBadFrame, h.Kind, len(body))
	}
	switch h.Kind {
	case pb.Kind_KIND_BATCH:
		recs, _, err := DecodeIPC(mem, body)
		if err != nil {
			return 0, Envelope{}, fmt.Errorf("%w: %w", ErrBadFrame, err)
		}
		if len(recs) != 1 || recs[0].NumRows() != h.Rows {
			rows := int64(0)
			for _, r := range recs {
				rows += r.NumRows()
				r.Release()
			}
			return 0, Envelope{}, fmt.Errorf("%w: header says one batch of %d rows, body has %d batches of %d rows", ErrBadFrame, h.Rows, len(recs), rows)
		}
		env := BatchEnvelope(recs[0])
		if h.LineageOrigin != "" {
			l := &Lineage{Origin: h.LineageOrigin, Base: h.LineageBase}
			if len(h.LineageDeltas) > 0 {
				if int64(len(h.LineageDeltas)) != h.Rows {
					env.Release()
					return 0, Envelope{}, fmt.Errorf("%w: %d lineage positions for %d rows", ErrBadFrame, len(h.LineageDeltas), h.Rows)
				}
				l.Pos = make([]uint64, len(h.LineageDeltas))
				prev := uint64(0)
				for i, d := range h.LineageDeltas {
					prev += uint64(d)
					l.Pos[i] = prev
				}
			}
			env.Lineage = l
		} else if len(h.LineageDeltas) > 0 {
			env.Release()
			return 0, Envelope{}, fmt.Errorf("%w: lineage positions without an origin", ErrBadFrame)
		}
		return h.Seq, env, nil
	case pb.Kind_KIND_WATERMARK:
		return h.Seq, WatermarkEnvelope(Watermark(h.WatermarkUs)), nil
	case pb.Kind_KIND_BARRIER:
		return h.Seq, BarrierEnvelope(Barrier{ID: h.BarrierId, TimestampUs: h.BarrierTimestampUs}), nil
	case pb.Kind_KIND_END_OF_STREAM:
		return h.Seq, EndOfStream(), nil
	default:
		return 0, Envelope{}, fmt.Errorf("%w: unknown kind %d", ErrBadFrame, h.Kind)
	}
}
