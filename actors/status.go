package actors

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/meshflow/meshflow/messages/pb"
)

// StatusSubject is the subject on which every node running a part of job
// answers a pb.StatusRequest with a pb.StatusReply: the status of its own
// instances of the job. A requester gathers the replies (scatter-gather)
// until they cover StatusReply.JobInstances instances.
func StatusSubject(job string) string {
	return fmt.Sprintf("%s.%s.ctl.status", subjectPrefix, job)
}

// statusReply is this part's answer to a status request.
func (p *jobPart) statusReply() *pb.StatusReply {
	vertex := make(map[string]int32, len(p.g.Vertices))
	total := 0
	for i, v := range p.g.Vertices {
		vertex[v.Name] = int32(i)
		total += v.Parallelism
	}
	r := &pb.StatusReply{Job: p.g.SubjectName(), Node: p.node.cfg.ID, JobInstances: int32(total)}
	for _, st := range p.stats() {
		r.Instances = append(r.Instances, &pb.InstanceStatus{
			Operator:    st.ID.Operator,
			Instance:    int32(st.ID.Index),
			Vertex:      vertex[st.ID.Operator],
			BatchesIn:   st.BatchesIn,
			RowsIn:      st.RowsIn,
			BatchesOut:  st.BatchesOut,
			RowsOut:     st.RowsOut,
			Failures:    st.Failures,
			WatermarkUs: int64(st.Watermark),
			Idle:        st.Idle,
		})
	}
	return r
}

// subscribeStatus answers status requests for the job while the part runs.
// The subscription is not one of the job's channels: a requester that
// misbehaves (a flood of requests, an undecodable one) never fails the
// job, it gets no answer.
func (p *jobPart) subscribeStatus() error {
	sub, err := p.node.cfg.NATS.Subscribe(StatusSubject(p.g.SubjectName()), func(m *nats.Msg) {
		p.cbMu.RLock()
		defer p.cbMu.RUnlock()
		if p.cbClosed || m.Reply == "" {
			return
		}
		var req pb.StatusRequest
		if err := proto.Unmarshal(m.Data, &req); err != nil {
			p.log.Debug("undecodable status request", "error", err)
			return
		}
		b, err := proto.Marshal(p.statusReply())
		if err != nil {
			p.log.Warn("cannot encode status reply", "error", err)
			return
		}
		if err := m.Respond(b); err != nil {
			p.log.Debug("cannot answer status request", "error", err)
		}
	})
	if err != nil {
		return fmt.Errorf("actors: subscribe %s: %w", StatusSubject(p.g.SubjectName()), err)
	}
	p.subs = append(p.subs, sub)
	return nil
}

var (
	// ErrJobNotRunning is returned by [RequestStatus] when no node runs
	// the job.
	ErrJobNotRunning = errors.New("actors: no node runs the job")
	// ErrStatusIncomplete is returned by [RequestStatus] when the replies
	// gathered before its context ended do not cover every instance.
	ErrStatusIncomplete = errors.New("actors: not every instance answered")
)

// RequestStatus asks every node running job (its subject name) for the
// status of its instances and gathers the replies, one per node, until they
// cover every instance of the job. When ctx ends first it returns the
// replies gathered so far and an error wrapping [ErrStatusIncomplete];
// when no node answers at all, one wrapping [ErrJobNotRunning].
func RequestStatus(ctx context.Context, nc *nats.Conn, job string) ([]*pb.StatusReply, error) {
	req, err := proto.Marshal(&pb.StatusRequest{Job: job})
	if err != nil {
		return nil, err
	}
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("actors: status of %q: %w", job, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(StatusSubject(job), inbox, req); err != nil {
		return nil, fmt.Errorf("actors: status of %q: %w", job, err)
	}
	var (
		replies []*pb.StatusReply
		nodes   = map[string]bool{}
		have    int
	)
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			if len(replies) == 0 {
				return nil, fmt.Errorf("%w %q: no node answered: %w", ErrJobNotRunning, job, err)
			}
			want := replies[0].JobInstances
			return replies, fmt.Errorf("%w: job %q: %d of %d instances answered (nodes %s): %w",
				ErrStatusIncomplete, job, have, want, nodeList(replies), err)
		}
		if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
			// The server says nobody is subscribed.
			return nil, fmt.Errorf("%w %q", ErrJobNotRunning, job)
		}
		var r pb.StatusReply
		if err := proto.Unmarshal(m.Data, &r); err != nil {
			return nil, fmt.Errorf("actors: status of %q: undecodable reply: %w", job, err)
		}
		if nodes[r.Node] {
			continue
		}
		nodes[r.Node] = true
		replies = append(replies, &r)
		have += len(r.Instances)
		if have >= int(r.JobInstances) {
			return replies, nil
		}
	}
}

func nodeList(rs []*pb.StatusReply) string {
	s := ""
	for i, r := range rs {
		if i > 0 {
			s += ", "
		}
		s += r.Node
	}
	return s
}
