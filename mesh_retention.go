package meshflow

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow/actors/natsio"
	"github.com/meshflow/meshflow/domains"
)

// WithRetention sets the retention of a mesh's streams: field by field,
// that of every port that does not set its own (domains.Input.Retention,
// domains.Output.Retention), and that of the domains' dead-letter
// streams. Without it those streams have no limits.
//
// Mesh.Run applies the retention when it creates a stream, and again on
// every later run: a redeployment with other limits updates them. It only
// sets the limits of streams Meshflow owns (see natsio.EnsureOwnedStream);
// a stream made outside Meshflow to capture a port's subject keeps its own.
func WithRetention(r domains.Retention) RunOption {
	return func(c *runConfig) { c.retention = retentionDefaults{r} }
}

type retentionDefaults struct{ domains.Retention }

// StreamStatus is the JetStream stream behind a port and its limits, as
// the server reported them when the mesh started. A limit of 0 is none.
type StreamStatus struct {
	Name string `json:"name"`
	// Managed is true when the stream is Meshflow's and its limits come
	// from the port's retention; false when a stream made outside
	// Meshflow captures the port's subject and keeps its own limits.
	Managed  bool          `json:"managed"`
	MaxAge   time.Duration `json:"max_age"` // in nanoseconds
	MaxBytes int64         `json:"max_bytes"`
	MaxMsgs  int64         `json:"max_msgs"`
	// Discard is what the stream does at a limit: "old" drops its oldest
	// messages, "new" refuses new ones.
	Discard string `json:"discard"`
}

// Retention returns the limits as a domains.Retention, Unlimited where the
// stream has none.
func (s StreamStatus) Retention() domains.Retention {
	r := domains.Retention{MaxAge: s.MaxAge, MaxBytes: s.MaxBytes, MaxMsgs: s.MaxMsgs}
	if r.MaxAge <= 0 {
		r.MaxAge = domains.Unlimited
	}
	if r.MaxBytes <= 0 {
		r.MaxBytes = domains.Unlimited
	}
	if r.MaxMsgs <= 0 {
		r.MaxMsgs = domains.Unlimited
	}
	return r
}

func streamStatus(st natsio.StreamState) StreamStatus {
	l := st.Limits()
	discard := "old"
	if st.Config.Discard == jetstream.DiscardNew {
		discard = "new"
	}
	return StreamStatus{Name: st.Name, Managed: st.Owned, MaxAge: l.MaxAge, MaxBytes: l.MaxBytes, MaxMsgs: l.MaxMsgs, Discard: discard}
}

// ensureStreams creates or updates the streams of d's output ports, of its
// input ports fed by producers, and of its dead letters, with their
// retention, and records them for Status.
func (m *Mesh) ensureStreams(ctx context.Context, js jetstream.JetStream, d *Domain) error {
	def := m.cfg.retention.Retention
	if err := def.Validate(); err != nil {
		return fmt.Errorf("default retention: %w", err)
	}
	type stream struct {
		what, subject string
		r             domains.Retention
	}
	var streams []stream
	for _, o := range d.Outputs {
		streams = append(streams, stream{"output port " + o.Name, domains.ProductSubject(d.Name, o.Name), o.Retention.Or(def)})
	}
	for _, in := range d.Inputs {
		if in.From == "" {
			streams = append(streams, stream{"input port " + in.Name, d.InputSubjectOf(in), in.Retention.Or(def)})
		}
	}
	streams = append(streams, stream{"dead letters", domains.DeadLetterSubject(d.Name), def})
	maxPayload := m.cfg.nc.MaxPayload()
	for _, s := range streams {
		l := natsio.Limits{MaxAge: s.r.MaxAge, MaxBytes: s.r.MaxBytes, MaxMsgs: s.r.MaxMsgs, Duplicates: s.r.DuplicateWindow}
		if l.MaxBytes > 0 && l.MaxBytes < maxPayload {
			return fmt.Errorf("%s: retention of %d bytes is below the server's max payload (%d bytes): a message that large could not be kept", s.what, l.MaxBytes, maxPayload)
		}
		st, err := natsio.EnsureOwnedStream(ctx, js, domains.StreamName(s.subject), s.subject, l)
		if err != nil {
			return fmt.Errorf("%s: %w", s.what, err)
		}
		if !st.Owned {
			m.cfg.logger.Warn("a stream made outside Meshflow captures the subject: its limits stay its own",
				"domain", d.Name, "subject", s.subject, "stream", st.Name)
		}
		m.mu.Lock()
		if m.streams == nil {
			m.streams = map[string]StreamStatus{}
		}
		m.streams[s.subject] = streamStatus(st)
		m.mu.Unlock()
	}
	return nil
}

// streamOf returns the stream status of subject, nil before the mesh
// created it. m.mu is held.
func (m *Mesh) streamOf(subject string) *StreamStatus {
	st, ok := m.streams[subject]
	if !ok {
		return nil
	}
	return &st
}
