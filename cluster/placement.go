// Package cluster decides where operator instances run. Placement is made
// here, outside the operators, so the same job graph runs on one node or
// spread over many without change: edges between instances on one node are
// handed over in memory, edges between nodes travel over NATS.
//
// Membership, the checkpoint coordinator and multi-node scheduling build on
// this package.
package cluster

import (
	"errors"
	"fmt"
	"slices"

	"github.com/meshflow/meshflow/actors"
)

// Scheduler places every instance of a job graph on one of the given nodes.
type Scheduler interface {
	Place(g *actors.JobGraph, nodes []string) (actors.Placement, error)
}

// ErrNoNodes is returned when a scheduler is given no node.
var ErrNoNodes = errors.New("cluster: no nodes to place on")

// SingleNode places everything on the first node.
type SingleNode struct{}

// Place implements Scheduler.
func (SingleNode) Place(g *actors.JobGraph, nodes []string) (actors.Placement, error) {
	if len(nodes) == 0 {
		return nil, ErrNoNodes
	}
	return place(g, func(string, int) string { return nodes[0] }), nil
}

// Spread places the instances of every operator round-robin over the
// nodes, so parallel instances land on different nodes.
type Spread struct{}

// Place implements Scheduler.
func (Spread) Place(g *actors.JobGraph, nodes []string) (actors.Placement, error) {
	if len(nodes) == 0 {
		return nil, ErrNoNodes
	}
	return place(g, func(_ string, i int) string { return nodes[i%len(nodes)] }), nil
}

// Pinned places the instances of the named operators on the given nodes and
// every other instance on Default.
type Pinned struct {
	Operators map[string]string
	Default   string
}

// Place implements Scheduler.
func (p Pinned) Place(g *actors.JobGraph, nodes []string) (actors.Placement, error) {
	if !slices.Contains(nodes, p.Default) {
		return nil, fmt.Errorf("cluster: default node %q is not among %v", p.Default, nodes)
	}
	for op, n := range p.Operators {
		if g.Vertex(op) == nil {
			return nil, fmt.Errorf("cluster: pinned operator %q is not in job %q", op, g.Name)
		}
		if !slices.Contains(nodes, n) {
			return nil, fmt.Errorf("cluster: operator %q pinned to unknown node %q", op, n)
		}
	}
	return place(g, func(op string, _ int) string {
		if n, ok := p.Operators[op]; ok {
			return n
		}
		return p.Default
	}), nil
}

func place(g *actors.JobGraph, node func(op string, i int) string) actors.Placement {
	pl := actors.Placement{}
	for _, v := range g.Vertices {
		for i := 0; i < v.Parallelism; i++ {
			pl[actors.InstanceID{Operator: v.Name, Index: i}] = node(v.Name, i)
		}
	}
	return pl
}
