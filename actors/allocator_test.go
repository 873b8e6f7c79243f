package actors_test

import (
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/recycle"
)

// TestNodeAllocator: a node without an allocator builds its batches with
// a recycling one; one given is used as it is.
func TestNodeAllocator(t *testing.T) {
	nc := natstest.Connect(t, natstest.RunJetStream(t))
	checked := memory.NewCheckedAllocator(memory.NewGoAllocator())
	for _, tc := range []struct {
		name string
		mem  memory.Allocator
		want func(memory.Allocator) bool
	}{
		{"default", nil, func(m memory.Allocator) bool { _, ok := m.(*recycle.Allocator); return ok }},
		{"given", checked, func(m memory.Allocator) bool { return m == checked }},
	} {
		n, err := actors.NewNode(actors.NodeConfig{ID: "a", NATS: nc, Allocator: tc.mem})
		if err != nil {
			t.Fatal(err)
		}
		if got := actors.NodeAllocator(n); !tc.want(got) {
			t.Errorf("%s: allocator %T", tc.name, got)
		}
		n.Close()
	}
}

// TestNodesShareAllocator: the nodes given no allocator share one.
func TestNodesShareAllocator(t *testing.T) {
	nc := natstest.Connect(t, natstest.RunJetStream(t))
	var mems []memory.Allocator
	for range 2 {
		n, err := actors.NewNode(actors.NodeConfig{ID: "a", NATS: nc})
		if err != nil {
			t.Fatal(err)
		}
		mems = append(mems, actors.NodeAllocator(n))
		n.Close()
	}
	if mems[0] != mems[1] {
		t.Errorf("two nodes got allocators %p and %p", mems[0], mems[1])
	}
}
