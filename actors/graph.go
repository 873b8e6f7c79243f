package actors

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Partitioning says how an edge spreads batches over the downstream
// instances.
type Partitioning uint8

const (
	// Forward sends instance i's output to downstream instance i; it needs
	// equal parallelism on both sides.
	Forward Partitioning = iota + 1
	// Rebalance sends batches round-robin over the downstream instances.
	Rebalance
	// Hash routes every row by the hash of its key columns: rows with equal
	// keys always reach the same downstream instance.
	Hash
	// Broadcast sends every batch to every downstream instance.
	Broadcast
)

func (p Partitioning) String() string {
	switch p {
	case Forward:
		return "forward"
	case Rebalance:
		return "rebalance"
	case Hash:
		return "hash"
	case Broadcast:
		return "broadcast"
	default:
		return fmt.Sprintf("partitioning(%d)", uint8(p))
	}
}

// DefaultMaxParallelism is the number of key groups of a hash edge when the
// graph does not set one. Keyed state is kept per key group, so a job can be
// rescaled up to this parallelism.
const DefaultMaxParallelism = 128

// Vertex is one operator of a job graph, run as Parallelism instances.
type Vertex struct {
	// Name identifies the vertex in the job: letters, digits, '_' and '-'.
	Name        string
	Parallelism int
	// NewSource builds a source instance; set for source vertices only.
	NewSource func() Source
	// NewOperator builds an operator instance; set for all other vertices.
	NewOperator func() Operator
	// EventTime, on a source, makes the runtime derive watermarks from a
	// timestamp column of the batches it reads.
	EventTime *EventTime
	// IdleTimeout, on a source, makes an instance that has read no data
	// for this long tell its outputs it is idle, so it stops holding back
	// the watermark downstream until it reads data again (see wmtrack.go).
	// Zero, the default, turns it off: declaring a source idle lets the
	// watermark pass records it may still deliver, which then arrive late,
	// so only the job knows which quiet period means "no data for now".
	IdleTimeout time.Duration
}

// EventTime derives a source's watermarks from a timestamp column: after
// each batch the watermark is the largest timestamp seen minus
// MaxOutOfOrderness, minus one microsecond.
type EventTime struct {
	Column            string
	MaxOutOfOrderness time.Duration
}

// Edge connects two vertices.
type Edge struct {
	From, To     string
	Partitioning Partitioning
	// KeyColumns are the key columns of a Hash edge.
	KeyColumns []string
}

// JobGraph is the logical graph of a job: what runs, not where.
type JobGraph struct {
	Name string
	// Domain, when set, is the data-mesh domain owning the job: its
	// data-plane subjects move under mf.<domain>.<job>, the domain's
	// private namespace.
	Domain string
	// Restart, when set, replaces the node's restart policy for this job.
	Restart *RestartPolicy
	// Checkpoint, when set, makes the job take consistent checkpoints and
	// recover from them (see docs/checkpoints.md).
	Checkpoint     *CheckpointConfig
	Vertices       []*Vertex
	Edges          []Edge
	MaxParallelism int // key groups of hash edges; DefaultMaxParallelism if 0
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ErrInvalidGraph is wrapped by every error [JobGraph.Validate] returns.
var ErrInvalidGraph = errors.New("actors: invalid job graph")

// Validate checks the graph: names, parallelism, edges, no cycles, every
// non-source vertex has an input and sources have none. All problems are
// reported together.
func (g *JobGraph) Validate() error {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidGraph}, args...)...))
	}
	if !nameRE.MatchString(g.Name) {
		add("job name %q: use 1-64 letters, digits, '_' or '-'", g.Name)
	}
	if g.Domain != "" && !nameRE.MatchString(g.Domain) {
		add("domain name %q: use 1-64 letters, digits, '_' or '-'", g.Domain)
	}
	if g.MaxParallelism < 0 || g.MaxParallelism > 1<<15 {
		add("max parallelism %d out of range [1, 32768]", g.MaxParallelism)
	}
	byName := map[string]*Vertex{}
	for _, v := range g.Vertices {
		if !nameRE.MatchString(v.Name) {
			add("operator name %q: use 1-64 letters, digits, '_' or '-'", v.Name)
		}
		if byName[v.Name] != nil {
			add("operator name %q used twice", v.Name)
		}
		byName[v.Name] = v
		if v.Parallelism < 1 || v.Parallelism > g.maxParallelism() {
			add("operator %q: parallelism %d out of range [1, %d]", v.Name, v.Parallelism, g.maxParallelism())
		}
		if (v.NewSource == nil) == (v.NewOperator == nil) {
			add("operator %q: needs exactly one of a source or an operator factory", v.Name)
		}
	}
	inputs := map[string]int{}
	for _, e := range g.Edges {
		from, to := byName[e.From], byName[e.To]
		if from == nil || to == nil {
			add("edge %s->%s: unknown operator", e.From, e.To)
			continue
		}
		if to.NewSource != nil {
			add("edge %s->%s: a source takes no input", e.From, e.To)
		}
		inputs[e.To]++
		switch e.Partitioning {
		case Forward:
			if from.Parallelism != to.Parallelism {
				add("edge %s->%s: forward needs equal parallelism (%d vs %d)", e.From, e.To, from.Parallelism, to.Parallelism)
			}
		case Hash:
			if len(e.KeyColumns) == 0 {
				add("edge %s->%s: hash partitioning needs key columns", e.From, e.To)
			}
		case Rebalance, Broadcast:
		default:
			add("edge %s->%s: unknown partitioning %v", e.From, e.To, e.Partitioning)
		}
	}
	for _, v := range g.Vertices {
		if v.NewOperator != nil && inputs[v.Name] == 0 {
			add("operator %q has no input", v.Name)
		}
	}
	if cyc := g.cycle(); cyc != "" {
		add("cycle through %s", cyc)
	}
	return errors.Join(errs...)
}

func (g *JobGraph) maxParallelism() int {
	if g.MaxParallelism > 0 {
		return g.MaxParallelism
	}
	return DefaultMaxParallelism
}

// SubjectName is the job's part of its NATS subjects: its name, under its
// domain when it has one ("orders.enrich").
func (g *JobGraph) SubjectName() string {
	if g.Domain == "" {
		return g.Name
	}
	return g.Domain + "." + g.Name
}

// Vertex returns the vertex called name, or nil.
func (g *JobGraph) Vertex(name string) *Vertex {
	for _, v := range g.Vertices {
		if v.Name == name {
			return v
		}
	}
	return nil
}

// InEdges returns the indexes into g.Edges of the edges ending at name, in
// graph order.
func (g *JobGraph) InEdges(name string) []int {
	var out []int
	for i, e := range g.Edges {
		if e.To == name {
			out = append(out, i)
		}
	}
	return out
}

// OutEdges returns the indexes into g.Edges of the edges leaving name.
func (g *JobGraph) OutEdges(name string) []int {
	var out []int
	for i, e := range g.Edges {
		if e.From == name {
			out = append(out, i)
		}
	}
	return out
}

func (g *JobGraph) cycle() string {
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var path []string
	var visit func(n string) string
	visit = func(n string) string {
		color[n] = grey
		path = append(path, n)
		for _, i := range g.OutEdges(n) {
			m := g.Edges[i].To
			switch color[m] {
			case grey:
				start := slices.Index(path, m)
				return strings.Join(append(slices.Clone(path[start:]), m), " -> ")
			case white:
				if c := visit(m); c != "" {
					return c
				}
			}
		}
		path = path[:len(path)-1]
		color[n] = black
		return ""
	}
	for _, v := range g.Vertices {
		if color[v.Name] == white {
			if c := visit(v.Name); c != "" {
				return c
			}
		}
	}
	return ""
}

// InstanceID names one operator instance.
type InstanceID struct {
	Operator string
	Index    int
}

func (id InstanceID) String() string { return fmt.Sprintf("%s[%d]", id.Operator, id.Index) }

// Placement maps every operator instance of a job to the node that runs it.
// It is decided outside the operators (see package cluster).
type Placement map[InstanceID]string

// Nodes returns the distinct nodes of p.
func (p Placement) Nodes() []string {
	seen := map[string]bool{}
	var out []string
	for _, n := range p {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}
