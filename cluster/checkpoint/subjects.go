package checkpoint

// NATS subjects of a job's checkpoints; job is the job's subject name
// ("<job>" or "<domain>.<job>"). They are location-independent: whoever
// runs the coordinator, nodes and the CLI find it by the job's name.
//
//	mf.<job>.ctl.ckpt.cmd      coordinator -> nodes: pb.CheckpointCommand
//	mf.<job>.ctl.ckpt.ack      task -> coordinator: pb.CheckpointAck
//	mf.<job>.ctl.ckpt.trigger  pb.TriggerRequest -> pb.TriggerReply

// CommandSubject is where the coordinator of job publishes its commands.
func CommandSubject(job string) string { return "mf." + job + ".ctl.ckpt.cmd" }

// AckSubject is where the tasks of job send their acks and declines.
func AckSubject(job string) string { return "mf." + job + ".ctl.ckpt.ack" }

// TriggerSubject is where on-demand checkpoints and savepoints of job are
// requested (request/reply).
func TriggerSubject(job string) string { return "mf." + job + ".ctl.ckpt.trigger" }
