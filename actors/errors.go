package actors

import (
	"errors"
	"fmt"
)

var (
	// ErrSequenceGap is wrapped by the job failure raised when a cross-node
	// channel misses or repeats a frame.
	ErrSequenceGap = errors.New("actors: sequence gap on a NATS channel")
	// ErrSlowConsumer is wrapped by the job failure raised when NATS reports
	// that a subscription of the job dropped messages.
	ErrSlowConsumer = errors.New("actors: NATS slow consumer")
	// ErrRemoteFailure is wrapped by the error of a job part whose job
	// failed on another node.
	ErrRemoteFailure = errors.New("actors: job failed on another node")
	// ErrNotPlaced is returned when a placement misses an instance.
	ErrNotPlaced = errors.New("actors: instance not placed")
)

// OperatorError is the error of a job that failed because an operator
// instance kept failing.
type OperatorError struct {
	Job      string
	Operator string
	Instance int
	// Failures is how many times the instance failed before the job gave up.
	Failures int
	Err      error
}

func (e *OperatorError) Error() string {
	return fmt.Sprintf("job %q: operator %q instance %d failed %d times: %v", e.Job, e.Operator, e.Instance, e.Failures, e.Err)
}

func (e *OperatorError) Unwrap() error { return e.Err }

// PanicError is the error made of a panic in user code.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }
