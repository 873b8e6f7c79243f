package actors

import "context"

// Checkpoints
//
// A job with checkpoints on takes consistent snapshots of every operator
// instance, aligned by barriers (see docs/checkpoints.md). The runtime does
// the snapshot of each instance's Store and timers by itself; operators and
// sources that keep state elsewhere, or that talk to the outside world,
// take part through the two interfaces below.

// CheckpointHandler is implemented by operators and sources that hold state
// outside their Store between checkpoints (hot state in memory, a source's
// read position, a sink's staged output). PrepareCheckpoint is called on
// the instance's goroutine when it has processed every input before
// barrier id and none after it; it writes to the instance's Store
// (OperatorContext.State) whatever checkpoint id must hold. The runtime
// snapshots the Store when it returns, while later input is processed.
//
// An instance implementing CheckpointHandler or CheckpointListener keeps
// state a restart of the instance alone would lose, so when such an
// instance fails, the whole job recovers from its last complete
// checkpoint instead.
type CheckpointHandler interface {
	PrepareCheckpoint(ctx context.Context, id uint64) error
}

// CheckpointListener is implemented by operators and sources that act when
// a checkpoint is complete: durable everywhere and recorded. Sources
// acknowledge the input the checkpoint covers; sinks publish the output
// they staged for it. Calls come in increasing id order on the instance's
// goroutine; a notification may be skipped when a later checkpoint
// completes first, and CheckpointComplete(id) covers every checkpoint up
// to id that this instance prepared. What an instance prepared for a
// checkpoint that was aborted (timed out, declined) is still in its Store
// at the next checkpoint, so the next CheckpointComplete covers it.
type CheckpointListener interface {
	CheckpointComplete(ctx context.Context, id uint64) error
}
