package meshflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/cluster"
	"github.com/meshflow/meshflow/domains"
)

// Domain is a data-mesh domain: its declaration (owner, ports and their
// contracts), its own restart policy, and its pipeline between its ports.
type Domain struct {
	domains.Domain
	// Restart is the domain's restart policy; nil: the node's.
	Restart *RestartPolicy
	// Build declares the domain's pipeline on b, from b.Input streams to
	// b.Output ports.
	Build func(b *DomainPipeline)
}

// DomainPipeline is the pipeline of one domain. Its inputs arrive checked
// against their contracts; its outputs are checked before they are
// published as data products.
type DomainPipeline struct {
	*Pipeline
	d    *Domain
	m    *Mesh
	nc   *nats.Conn
	errs []error
}

// Input is the stream of input port name: read from its subject, rows that
// break the port's contract dead-lettered.
func (b *DomainPipeline) Input(name string, opts ...Option) *Stream {
	i := slices.IndexFunc(b.d.Inputs, func(in domains.Input) bool { return in.Name == name })
	if i < 0 {
		b.errs = append(b.errs, fmt.Errorf("domain %s: no input port %q", b.d.Name, name))
		return b.Source("in-"+name, FromBatches())
	}
	in := b.d.Inputs[i]
	subject := b.d.InputSubjectOf(in)
	src := b.Source("in-"+name, FromJetStream(JetStreamSource{
		Subjects:        []string{subject},
		Stream:          domains.StreamName(subject),
		Consumer:        b.d.Name + "_" + name,
		Schema:          in.Contract.Schema,
		Format:          in.Format,
		DeadLetter:      domains.DeadLetterSubject(b.d.Name),
		DeadLetterTally: &b.m.counts(b.d.Name, name).DeadLettered,
	}), opts...)
	return src.Process("check-"+name, b.boundary(name, in.Contract), OutputSchema(in.Contract.Schema))
}

// Output publishes s as output port name, after checking its contract.
func (b *DomainPipeline) Output(name string, s *Stream) {
	i := slices.IndexFunc(b.d.Outputs, func(out domains.Output) bool { return out.Name == name })
	if i < 0 {
		b.errs = append(b.errs, fmt.Errorf("domain %s: no output port %q", b.d.Name, name))
		return
	}
	out := b.d.Outputs[i]
	subject := domains.ProductSubject(b.d.Name, name)
	s.Process("check-out-"+name, b.boundary("out."+name, out.Contract), OutputSchema(out.Contract.Schema)).
		To("publish-"+name, ToJetStream(JetStreamSink{Subject: subject, Stream: domains.StreamName(subject), Format: out.Format,
			DeadLetter: domains.DeadLetterSubject(b.d.Name), DeadLetterTally: &b.m.counts(b.d.Name, "out."+name).DeadLettered}))
}

func (b *DomainPipeline) boundary(port string, c domains.Contract) func() Operator {
	counts := b.m.counts(b.d.Name, port)
	sources := map[string]string{}
	for _, in := range b.d.Inputs {
		sources["in-"+in.Name] = b.d.InputSubjectOf(in)
	}
	return func() Operator {
		return &domains.Boundary{Domain: b.d.Name, Port: port, Contract: c, NATS: b.nc, Counts: counts, Sources: sources}
	}
}

// DomainState is where a domain is in its life.
type DomainState string

const (
	DomainStarting DomainState = "starting"
	DomainRunning  DomainState = "running"
	DomainFinished DomainState = "finished"
	DomainFailed   DomainState = "failed"
)

// PortStatus is the live view of one port.
type PortStatus struct {
	Name        string        `json:"name"`
	Kind        string        `json:"kind"` // input or output
	Subject     string        `json:"subject"`
	From        string        `json:"from,omitempty"` // the data product an input reads
	Description string        `json:"description,omitempty"`
	Version     int           `json:"version"`
	Schema      []FieldStatus `json:"schema"`
	Rules       []string      `json:"rules,omitempty"`
	// Stream holding the port's messages, with its retention.
	Stream *StreamStatus `json:"stream,omitempty"`
	// Counts at the port's boundary.
	RowsIn       int64 `json:"rows_in"`
	RowsOut      int64 `json:"rows_out"`
	DeadLettered int64 `json:"dead_lettered"`
	// DeadLetteredBy counts the port's dead letters by class: decode,
	// schema, contract, oversize.
	DeadLetteredBy map[string]int64 `json:"dead_lettered_by_class,omitempty"`
}

// FieldStatus is one column of a port's contract.
type FieldStatus struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	Nullable bool   `json:"nullable"`
}

// DomainStatus is the live view of one domain.
type DomainStatus struct {
	Name        string       `json:"name"`
	Owner       string       `json:"owner"`
	Description string       `json:"description,omitempty"`
	State       DomainState  `json:"state"`
	Error       string       `json:"error,omitempty"`
	Ports       []PortStatus `json:"ports"`
	// DeadLetters is the stream of the domain's dead letters.
	DeadLetters *StreamStatus `json:"dead_letters,omitempty"`
}

// CatalogSubject is where a running mesh answers requests with the JSON
// of its Status: what `meshflow domains` reads.
const CatalogSubject = "mf._catalog.domains"

// DomainConnect opens the NATS connection a domain's sources, sinks and
// boundaries use, for example as the domain's own user (see
// domains.Domain.User).
type DomainConnect func(d *domains.Domain) (*nats.Conn, error)

// WithDomainConnect makes each domain of a mesh do its NATS I/O over its
// own connection, so the server's permissions hold it to its own subjects
// and declared inputs. Without it, domains share the node's connection.
func WithDomainConnect(f DomainConnect) RunOption {
	return func(c *runConfig) { c.domainConnect = f }
}

// Mesh runs several domains on one node, each as its own job under its own
// supervisor, restart policy and state namespace: a domain that fails or
// crash-loops is contained and reported, and the others go on.
type Mesh struct {
	cfg     runConfig
	domains []*Domain

	mu         sync.Mutex
	state      map[string]DomainState
	errs       map[string]error
	portCounts map[string]*domains.Counts
	streams    map[string]StreamStatus // by subject
}

// NewMesh checks the domains and their references to each other.
func NewMesh(ds []*Domain, opts ...RunOption) (*Mesh, error) {
	m := &Mesh{cfg: newRunConfig(opts), domains: ds, state: map[string]DomainState{},
		errs: map[string]error{}, portCounts: map[string]*domains.Counts{}}
	var errs []error
	byName := map[string]*Domain{}
	for _, d := range ds {
		if err := d.Validate(); err != nil {
			errs = append(errs, err)
		}
		if byName[d.Name] != nil {
			errs = append(errs, fmt.Errorf("domain %q declared twice", d.Name))
		}
		byName[d.Name] = d
		if d.Build == nil {
			errs = append(errs, fmt.Errorf("domain %q has no pipeline", d.Name))
		}
	}
	for _, d := range ds {
		for _, in := range d.Inputs {
			if in.From == "" {
				continue
			}
			dom, port, _ := strings.Cut(in.From, ".")
			src := byName[dom]
			if src == nil {
				errs = append(errs, fmt.Errorf("domain %s: input %q reads %s, but domain %q is not in the mesh", d.Name, in.Name, in.From, dom))
				continue
			}
			i := slices.IndexFunc(src.Outputs, func(o domains.Output) bool { return o.Name == port })
			if i < 0 {
				errs = append(errs, fmt.Errorf("domain %s: input %q reads %s, which domain %s does not publish", d.Name, in.Name, in.From, dom))
				continue
			}
			if published := src.Outputs[i].Contract.Schema; published != nil && !published.Equal(in.Contract.Schema) {
				errs = append(errs, fmt.Errorf("domain %s: input %q expects a different schema than %s v%d publishes", d.Name, in.Name, in.From, src.Outputs[i].Contract.Version))
			}
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("meshflow: %w", errors.Join(errs...))
	}
	return m, nil
}

func (m *Mesh) counts(domain, port string) *domains.Counts {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := domain + "/" + port
	if m.portCounts[k] == nil {
		m.portCounts[k] = &domains.Counts{}
	}
	return m.portCounts[k]
}

func (m *Mesh) setState(d string, s DomainState, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.state[d] = s
	if err != nil {
		m.errs[d] = err
	}
}

// Status returns the live status of every domain.
func (m *Mesh) Status() []DomainStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []DomainStatus
	for _, d := range m.domains {
		st := DomainStatus{Name: d.Name, Owner: d.Owner, Description: d.Description, State: m.state[d.Name]}
		if st.State == "" {
			st.State = DomainStarting
		}
		if err := m.errs[d.Name]; err != nil {
			st.Error = err.Error()
		}
		port := func(ps PortStatus, c domains.Contract, key string) {
			ps.Version = c.Version
			for _, f := range c.Schema.Fields() {
				ps.Schema = append(ps.Schema, FieldStatus{Name: f.Name, Type: f.Type.String(), Nullable: f.Nullable})
			}
			for _, r := range c.Rules {
				ps.Rules = append(ps.Rules, r.Name)
			}
			ps.Stream = m.streamOf(ps.Subject)
			if c := m.portCounts[d.Name+"/"+key]; c != nil {
				ps.RowsIn, ps.RowsOut = c.RowsIn.Load(), c.RowsOut.Load()
				ps.DeadLetteredBy = c.DeadLettered.Counts()
				for _, n := range ps.DeadLetteredBy {
					ps.DeadLettered += n
				}
			}
			st.Ports = append(st.Ports, ps)
		}
		for _, in := range d.Inputs {
			port(PortStatus{Name: in.Name, Kind: "input", Subject: d.InputSubjectOf(in), From: in.From}, in.Contract, in.Name)
		}
		for _, o := range d.Outputs {
			port(PortStatus{Name: o.Name, Kind: "output", Subject: domains.ProductSubject(d.Name, o.Name), Description: o.Description}, o.Contract, "out."+o.Name)
		}
		st.DeadLetters = m.streamOf(domains.DeadLetterSubject(d.Name))
		out = append(out, st)
	}
	return out
}

// Run checks the mesh's output contracts against those of the previous
// deployment on the same NATS server (see domains.CheckEvolution) and
// refuses to start on an incompatible change. Then it runs every domain
// until ctx is done (then each drains) or every
// domain has finished or failed. A failing domain does not stop the
// others; Run's error names every domain that failed.
func (m *Mesh) Run(ctx context.Context) (err error) {
	closeEnv, err := m.cfg.open(ctx, "meshflow-mesh")
	if err != nil {
		return err
	}
	defer func() {
		if cerr := closeEnv(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	catalog, err := m.cfg.nc.Subscribe(CatalogSubject, func(msg *nats.Msg) {
		data, err := json.Marshal(m.Status())
		if err == nil {
			err = msg.Respond(data)
		}
		if err != nil {
			m.cfg.logger.Warn("catalog request", "error", err)
		}
	})
	if err != nil {
		return fmt.Errorf("meshflow: catalog: %w", err)
	}
	defer catalog.Unsubscribe()
	js, err := jetstream.New(m.cfg.nc)
	if err != nil {
		return fmt.Errorf("meshflow: %w", err)
	}
	if err := m.checkDeployment(ctx, js); err != nil {
		return fmt.Errorf("meshflow: deployment refused: %w", err)
	}
	// Output streams exist before any consumer looks for them.
	type job struct {
		d *Domain
		g *actors.JobGraph
	}
	var jobs []job
	for _, d := range m.domains {
		if err := m.ensureStreams(ctx, js, d); err != nil {
			return fmt.Errorf("meshflow: domain %s: %w", d.Name, err)
		}
		nc := m.cfg.nc
		if m.cfg.domainConnect != nil {
			if nc, err = m.cfg.domainConnect(&d.Domain); err != nil {
				return fmt.Errorf("meshflow: domain %s: connect: %w", d.Name, err)
			}
			defer nc.Close()
		}
		b := &DomainPipeline{Pipeline: NewPipeline(domains.JobName), d: d, m: m, nc: nc}
		d.Build(b)
		if err := errors.Join(append(b.errs, b.Validate())...); err != nil {
			return fmt.Errorf("meshflow: domain %s: %w", d.Name, err)
		}
		g, err := b.graph(&runEnv{nc: nc})
		if err != nil {
			return fmt.Errorf("meshflow: domain %s: %w", d.Name, err)
		}
		g.Domain, g.Restart = d.Name, d.Restart
		g.Checkpoint = m.cfg.checkpointConfig(g.SubjectName())
		jobs = append(jobs, job{d, g})
	}
	node, err := m.cfg.newNode()
	if err != nil {
		return err
	}
	defer node.Close()
	var wg sync.WaitGroup
	errs := make([]error, len(jobs))
	for i, j := range jobs {
		pl, err := cluster.SingleNode{}.Place(j.g, []string{node.ID()})
		if err != nil {
			return fmt.Errorf("meshflow: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.setState(j.d.Name, DomainRunning, nil)
			err := node.Run(ctx, j.g, pl)
			switch {
			case err == nil || (ctx.Err() != nil && errors.Is(err, ctx.Err())):
				m.setState(j.d.Name, DomainFinished, nil)
			default:
				m.setState(j.d.Name, DomainFailed, err)
				m.cfg.logger.Error("domain failed", "domain", j.d.Name, "error", err)
				errs[i] = fmt.Errorf("domain %s: %w", j.d.Name, err)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return ctx.Err()
}
