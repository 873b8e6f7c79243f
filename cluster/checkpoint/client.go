package checkpoint

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/meshflow/meshflow/messages/pb"
)

// RequestCheckpoint asks the coordinator of job, wherever it runs, for a
// checkpoint (a savepoint if savepoint) over NATS and waits, until ctx
// ends, for its metadata once it is complete. It fails with
// ErrNoCoordinator when no coordinator of job is running, and with
// ErrTriggerFailed wrapping the coordinator's answer when the checkpoint
// failed. ctx should allow for the checkpoint's duration.
func RequestCheckpoint(ctx context.Context, nc *nats.Conn, job string, savepoint bool) (*pb.CheckpointMeta, error) {
	data, err := proto.Marshal(&pb.TriggerRequest{Job: job, Savepoint: savepoint})
	if err != nil {
		return nil, err
	}
	msg, err := nc.RequestWithContext(ctx, TriggerSubject(job), data)
	if errors.Is(err, nats.ErrNoResponders) {
		return nil, fmt.Errorf("%w for job %q", ErrNoCoordinator, job)
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint: trigger job %q: %w", job, err)
	}
	var reply pb.TriggerReply
	if err := proto.Unmarshal(msg.Data, &reply); err != nil {
		return nil, fmt.Errorf("checkpoint: trigger job %q: undecodable reply: %w", job, err)
	}
	if reply.Error != "" {
		return nil, fmt.Errorf("%w: job %q: %s", ErrTriggerFailed, job, reply.Error)
	}
	if reply.Meta == nil {
		return nil, fmt.Errorf("checkpoint: trigger job %q: reply without metadata", job)
	}
	return reply.Meta, nil
}
