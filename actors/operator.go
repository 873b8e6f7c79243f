// Package actors is Meshflow's operator runtime: every operator instance runs
// as a supervised Proto.Actor actor, exchanging Arrow record batches with its
// neighbours in memory (same node) or over NATS (other nodes), under
// Meshflow's own credit-based flow control.
//
// Pipeline authors do not use this package directly: the root package
// meshflow builds a [JobGraph] and runs it. Custom operators implement
// [Operator] (re-exported by the root package).
//
// # Arrow ownership
//
// The batch passed to [Operator.Process] is borrowed: the runtime releases it
// after Process returns, so an operator that keeps it must Retain it. A batch
// passed to [Emitter.Emit] is handed over: the runtime releases it once it has
// been delivered, and the operator must not use it afterwards. Batches
// returned by [Source.Read] are handed over likewise.
//
// Released memory is reused: a node's default allocator recycles the
// buffers of released batches for new ones. Values that point into a
// batch (the strings of array.String.Value, the slices of
// array.Binary.Value) change once it is released, so an operator that
// keeps one past Process (a map key, say) keeps a copy (strings.Clone).
//
// # Failure
//
// A panic or error in Open, Process, a hook or Close fails the instance: its
// supervisor restarts it with backoff (a fresh operator from the factory,
// Open called again) and the failed input is processed again by the new
// instance. Outputs emitted by a failed call are discarded, so a retried batch
// is emitted once. After repeated failures the job fails with an
// [*OperatorError] naming the operator; the process itself never crashes.
package actors

import (
	"context"
	"log/slog"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/messages"
	"github.com/meshflow/meshflow/persistence"
)

// Operator is the contract of a user or built-in operator instance.
type Operator interface {
	// Open prepares the instance. It is called again on a fresh instance
	// after every restart.
	Open(ctx context.Context, oc OperatorContext) error
	// Process handles one input batch. in is borrowed; anything passed to
	// out.Emit is handed over.
	Process(ctx context.Context, in arrow.RecordBatch, out Emitter) error
	// Close releases the instance's resources. It is called at the end of
	// the stream, on shutdown and before a restart.
	Close(ctx context.Context) error
}

// WatermarkHandler is implemented by operators that react to event time.
// The runtime forwards the watermark downstream after OnWatermark returns.
type WatermarkHandler interface {
	OnWatermark(ctx context.Context, wm messages.Watermark, out Emitter) error
}

// TimerHandler is implemented by operators that register timers through
// [OperatorContext.Timers].
type TimerHandler interface {
	OnTimer(ctx context.Context, t Timer, out Emitter) error
}

// Finisher is implemented by operators that emit something when their input
// ends (for example a bounded aggregation). Finish runs after the final
// watermark and before Close.
type Finisher interface {
	Finish(ctx context.Context, out Emitter) error
}

// Emitter takes the batches an operator produces.
type Emitter interface {
	// Emit hands rec over to the runtime. Zero-row batches are released and
	// dropped.
	Emit(rec arrow.RecordBatch)
}

// OperatorContext is what the runtime offers an operator instance.
type OperatorContext interface {
	// Job is the job name.
	Job() string
	// Operator is the operator (vertex) name.
	Operator() string
	// Instance is this instance's index in [0, Parallelism()).
	Instance() int
	// Parallelism is the number of instances of this operator.
	Parallelism() int
	// Logger is a logger with job, operator and instance attributes.
	Logger() *slog.Logger
	// Allocator is the Arrow allocator for the batches the operator builds.
	Allocator() memory.Allocator
	// State is this instance's state namespace.
	State() persistence.Store
	// Timers registers timers delivered to [TimerHandler.OnTimer].
	Timers() TimerService
	// Checkpointing reports whether the job takes checkpoints. Sources
	// and sinks that are transactional acknowledge input and publish
	// output on checkpoint completion when it is true (see
	// [CheckpointListener]), and at once when it is false.
	Checkpointing() bool
	// RestoredCheckpoint is the id of the checkpoint (or savepoint) this
	// run of the job was restored from, 0 when it started empty. The
	// instance's Store holds that checkpoint's state when Open is called.
	RestoredCheckpoint() uint64
	// KeyGroups is the range [start, end) of key groups this instance
	// owns: kernels.KeyGroupRange(Instance(), MaxParallelism(),
	// Parallelism()), the groups its hash input routes to it.
	KeyGroups() (start, end int)
	// MaxParallelism is the job's number of key groups.
	MaxParallelism() int
	// KeyedState is the operator's keyed state, shared by its instances
	// and laid out by key group: every key starts with its key group as a
	// big-endian uint16 (see KeyGroupKey). Writes to key groups outside
	// KeyGroups are rejected with an error wrapping ErrKeyGroupNotOwned;
	// it has no namespaces. Checkpoints snapshot and restore the
	// instance's key range with its State. Like State, the writes of a
	// failed call are dropped.
	KeyedState() persistence.Store
	// RegisterFlusher registers state kept in memory in front of the
	// stores; see [StateFlusher]. Call it from Open.
	RegisterFlusher(f StateFlusher)
}

// TimerKind tells event-time timers from processing-time timers.
type TimerKind uint8

const (
	// EventTimeTimer timers fire when the watermark reaches their time.
	EventTimeTimer TimerKind = iota + 1
	// ProcessingTimeTimer timers fire when the wall clock reaches their time.
	ProcessingTimeTimer
)

// Timer is a fired timer.
type Timer struct {
	Kind TimerKind
	// Time is the timer's time in microseconds since the Unix epoch.
	Time int64
	// Tag is the value given when the timer was registered.
	Tag string
}

// TimerService registers timers for one operator instance. Registering the
// same (kind, time, tag) twice registers one timer.
type TimerService interface {
	// At registers an event-time timer.
	At(t messages.Watermark, tag string)
	// After registers a processing-time timer firing d from now.
	After(d time.Duration, tag string)
	// Watermark is the instance's current input watermark.
	Watermark() messages.Watermark
}

// Source produces the batches that enter a job.
type Source interface {
	// Open prepares the source; called again after every restart.
	Open(ctx context.Context, oc OperatorContext) error
	// Read blocks until it has a batch, the input ends (io.EOF) or ctx is
	// done. The batch is handed over. Read is called from a goroutine owned
	// by the source's actor, never concurrently with the other methods.
	// When ctx is done Read must return promptly and keep whatever it holds
	// for the next call: the runtime cancels a Read to take a checkpoint
	// between two batches.
	Read(ctx context.Context) (arrow.RecordBatch, error)
	// Close releases the source's resources.
	Close(ctx context.Context) error
}

// Committer is implemented by sources that acknowledge their input once the
// runtime has taken every batch returned by Read so far (for example by
// acking JetStream messages). The runtime calls Commit between two Reads and
// before Close on a clean end; never after a failed hand-over.
type Committer interface {
	Commit(ctx context.Context) error
}

// Positioner is implemented by sources whose rows have positions in their
// input that stay the same across runs, such as JetStream stream sequences
// (see natsio.Position). The runtime calls Positions right after every Read
// that returned a batch, from the same goroutine: pos[i] is the position of
// row i, and the slice is handed over. Positions travel with the rows
// through the job (see [EmitSameRows], [EmitSelected], [EmitTaken]), so a
// sink can derive from them message ids that recognise a row published
// again after a restart and never mistake a new row for an old one.
//
// Sources that are not Positioners get positions unique to the run.
type Positioner interface {
	Positions() []uint64
}

// PositionRanger is implemented by Positioners whose batches may have
// consecutive positions: the runtime calls PositionBase right after Read,
// before Positions; when it reports ok, row i of the batch is at base+i and
// Positions is not called for that batch. It spares a slice per batch.
type PositionRanger interface {
	PositionBase() (base uint64, ok bool)
}

// Partitioned is implemented by a source that reads several partitions
// (the shards or subjects of its input) and returns batches of one
// partition each. The runtime calls Partition right after a Read that
// returned a batch. With [Vertex.EventTime], the source then keeps a
// watermark per partition and its own watermark is their minimum, so a
// partition that lags holds it back; a partition that has read nothing for
// [Vertex.IdleTimeout] leaves the minimum until it reads again. Partitions
// is the number of partitions, fixed once the source is open; a partition
// that has returned nothing yet holds the watermark at its start.
type Partitioned interface {
	Partitions() int
	// Partition is the partition of the last batch, in [0, Partitions()).
	Partition() int
}

type (
	inputSeqKey     struct{}
	inputLineageKey struct{}
	inputFromKey    struct{}
)

// InputFrom returns the name of the operator the batch being processed
// comes from: an operator with several inputs (a join) tells them apart
// with it. Empty outside Process.
func InputFrom(ctx context.Context) string {
	v, _ := ctx.Value(inputFromKey{}).(string)
	return v
}

// InputLineage returns the lineage of the rows of the batch being processed
// (see [Positioner]): sinks derive their message ids from it, and domain
// boundaries the ids of their dead letters. Never nil inside Process.
func InputLineage(ctx context.Context) *messages.Lineage {
	l, _ := ctx.Value(inputLineageKey{}).(*messages.Lineage)
	return l
}

// InputSeq returns the sequence number of the batch being processed: 1 for
// an instance's first input batch, increasing by one per batch, and the same
// when a failed batch is processed again after a restart. Sinks use it to
// build idempotent message ids.
func InputSeq(ctx context.Context) uint64 {
	v, _ := ctx.Value(inputSeqKey{}).(uint64)
	return v
}
