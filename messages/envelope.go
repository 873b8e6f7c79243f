// Package messages defines what flows on an edge between operator instances
// (the data-plane [Envelope]) and its encodings: Arrow IPC plus a protobuf
// frame header for NATS, JSON events for sources, JSON rows for sinks.
//
// Inside one process an envelope is handed over in memory and its batch is
// never serialised. Across processes it travels as one NATS message built by
// [EncodeFrame] and read back by [DecodeFrame], which never panics on
// untrusted bytes.
//
// # Ownership
//
// An [Envelope] of kind [KindBatch] owns one reference to its Batch. Whoever
// holds the envelope either passes it on (handing the reference over) or
// calls [Envelope.Release].
package messages

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
)

// Kind says what an [Envelope] carries.
type Kind uint8

const (
	// KindBatch carries an Arrow record batch.
	KindBatch Kind = iota + 1
	// KindWatermark says no later record on this edge has an event time
	// below Watermark.
	KindWatermark
	// KindBarrier is a checkpoint barrier: every record before it belongs to
	// checkpoint Barrier.ID, every record after it to a later one.
	KindBarrier
	// KindEndOfStream says the sender will send nothing more on this edge.
	KindEndOfStream
)

func (k Kind) String() string {
	switch k {
	case KindBatch:
		return "batch"
	case KindWatermark:
		return "watermark"
	case KindBarrier:
		return "barrier"
	case KindEndOfStream:
		return "end-of-stream"
	default:
		return fmt.Sprintf("kind(%d)", uint8(k))
	}
}

// Watermark is an event time in microseconds since the Unix epoch.
type Watermark int64

// MinWatermark is the watermark before any event time is known.
const MinWatermark Watermark = -1 << 63

// MaxWatermark is the watermark at the end of a stream: every event time is
// below it.
const MaxWatermark Watermark = 1<<63 - 1

// Barrier is a checkpoint barrier.
type Barrier struct {
	// ID is the checkpoint id, increasing within a job.
	ID uint64
	// TimestampUs is when the coordinator started the checkpoint, in
	// microseconds since the Unix epoch.
	TimestampUs int64
}

// Envelope is one element on an edge.
type Envelope struct {
	Kind      Kind
	Batch     arrow.RecordBatch // KindBatch only; owned by the envelope
	Watermark Watermark         // KindWatermark only
	Barrier   Barrier           // KindBarrier only
	// Lineage of the batch's rows (KindBatch; nil when unknown).
	Lineage *Lineage
}

// BatchEnvelope wraps rec, taking over the caller's reference.
func BatchEnvelope(rec arrow.RecordBatch) Envelope {
	return Envelope{Kind: KindBatch, Batch: rec}
}

// LineageEnvelope wraps rec with the lineage of its rows, taking over the
// caller's reference to rec.
func LineageEnvelope(rec arrow.RecordBatch, l *Lineage) Envelope {
	return Envelope{Kind: KindBatch, Batch: rec, Lineage: l}
}

// WatermarkEnvelope returns a watermark envelope.
func WatermarkEnvelope(wm Watermark) Envelope {
	return Envelope{Kind: KindWatermark, Watermark: wm}
}

// IdleEnvelope returns the idle marker: a watermark envelope carrying
// [MinWatermark], which is never sent as a watermark (watermarks only move up
// from it). It says the sender has had no data for a while: the receiver
// leaves that input out of its watermark until a batch or a watermark
// arrives on it again.
func IdleEnvelope() Envelope {
	return Envelope{Kind: KindWatermark, Watermark: MinWatermark}
}

// IsIdle reports whether e is the idle marker (see [IdleEnvelope]).
func (e Envelope) IsIdle() bool {
	return e.Kind == KindWatermark && e.Watermark == MinWatermark
}

// BarrierEnvelope returns a checkpoint barrier envelope.
func BarrierEnvelope(b Barrier) Envelope {
	return Envelope{Kind: KindBarrier, Barrier: b}
}

// EndOfStream returns an end-of-stream envelope.
func EndOfStream() Envelope { return Envelope{Kind: KindEndOfStream} }

// Release releases the batch reference held by e, if any.
func (e *Envelope) Release() {
	if e.Batch != nil {
		e.Batch.Release()
		e.Batch = nil
	}
}

// Rows is the number of rows carried by e (0 unless it is a batch).
func (e *Envelope) Rows() int64 {
	if e.Batch == nil {
		return 0
	}
	return e.Batch.NumRows()
}
