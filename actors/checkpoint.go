package actors

import (
	"context"
	"time"
)

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
// For a source, PrepareCheckpoint is never called while Read runs, and the
// checkpoint covers exactly the batches Read returned before it: the
// position it records is the one after the last of them.
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

// CheckpointConfig turns checkpoints on for a job (JobGraph.Checkpoint).
// Zero fields take the defaults.
type CheckpointConfig struct {
	// Interval between the starts of two checkpoints. Default 1 s; values
	// from 100 ms are accepted.
	Interval time.Duration
	// Timeout aborts a checkpoint not complete after it. Default 10 min.
	Timeout time.Duration
	// MinPause is the least time between the end of a checkpoint and the
	// start of the next. Default 0.
	MinPause time.Duration
	// Retain is how many complete checkpoints are kept (savepoints are
	// never deleted). Default 3.
	Retain int
	// TolerableFailures is how many checkpoints in a row may fail before
	// the job recovers; -1 (or 0, the default) tolerates any number.
	TolerableFailures int
	// Restore, when not 0, is the checkpoint or savepoint id the job's
	// first run starts from, in place of the latest complete checkpoint.
	Restore uint64
	// Recovery says how often the job restarts from its last checkpoint
	// after a failure before it fails for good.
	Recovery RecoveryPolicy
}

func (c CheckpointConfig) withDefaults() CheckpointConfig {
	if c.Interval <= 0 {
		c.Interval = time.Second
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Minute
	}
	if c.Retain <= 0 {
		c.Retain = 3
	}
	if c.TolerableFailures == 0 {
		c.TolerableFailures = -1
	}
	c.Recovery = c.Recovery.withDefaults()
	return c
}

// RecoveryPolicy says how a job with checkpoints recovers: after a failure
// its instances are stopped, their state is restored from the last
// complete checkpoint, its sources rewind, and it runs again.
type RecoveryPolicy struct {
	// MaxRecoveries within Window make the job fail instead of recovering
	// once more. -1 recovers forever.
	MaxRecoveries int
	Window        time.Duration
	// InitialBackoff is the delay before the first recovery; it doubles
	// with every recovery within Window, up to MaxBackoff.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
}

// DefaultRecoveryPolicy recovers a job up to 3 times within 5 minutes,
// waiting 200 ms, 400 ms, 800 ms (at most 10 s) before each.
var DefaultRecoveryPolicy = RecoveryPolicy{
	MaxRecoveries:  3,
	Window:         5 * time.Minute,
	InitialBackoff: 200 * time.Millisecond,
	MaxBackoff:     10 * time.Second,
}

func (p RecoveryPolicy) withDefaults() RecoveryPolicy {
	d := DefaultRecoveryPolicy
	if p.MaxRecoveries != 0 {
		d.MaxRecoveries = p.MaxRecoveries
	}
	if p.Window > 0 {
		d.Window = p.Window
	}
	if p.InitialBackoff > 0 {
		d.InitialBackoff = p.InitialBackoff
	}
	if p.MaxBackoff > 0 {
		d.MaxBackoff = p.MaxBackoff
	}
	return d
}
