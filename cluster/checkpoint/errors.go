package checkpoint

import "errors"

var (
	// ErrConfig is wrapped by the errors of Config.Validate.
	ErrConfig = errors.New("checkpoint: invalid config")
	// ErrAborted is wrapped by the error answering a trigger whose
	// checkpoint was aborted (declined, timed out, commit failed).
	ErrAborted = errors.New("checkpoint: aborted")
	// ErrStopping answers a trigger that came after Stop.
	ErrStopping = errors.New("checkpoint: coordinator stopping")
	// ErrStopped answers what comes after the coordinator stopped.
	ErrStopped = errors.New("checkpoint: coordinator stopped")
	// ErrJobFailed answers what comes after too many checkpoints failed in
	// a row.
	ErrJobFailed = errors.New("checkpoint: job failed")
	// ErrUnknownJob is returned by the store for a job it has no record of.
	ErrUnknownJob = errors.New("checkpoint: unknown job")
)

var (
	// ErrNotFound is returned by the store for a checkpoint that is not
	// complete or no longer kept.
	ErrNotFound = errors.New("checkpoint: not found")
	// ErrConflict is returned by Store.Commit when the id already holds
	// another checkpoint.
	ErrConflict = errors.New("checkpoint: conflicting commit")
	// ErrSuperseded is returned by Store.Commit and Store.SetAttempt when
	// the record is already at the id or beyond (another coordinator of the
	// job went further).
	ErrSuperseded = errors.New("checkpoint: superseded")
)

var (
	// ErrNoCoordinator is returned by RequestCheckpoint when no coordinator
	// of the job answers.
	ErrNoCoordinator = errors.New("checkpoint: no coordinator running")
	// ErrTriggerFailed wraps a coordinator's answer to a trigger whose
	// checkpoint failed.
	ErrTriggerFailed = errors.New("checkpoint: trigger failed")
)
