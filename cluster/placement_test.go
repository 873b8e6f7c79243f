package cluster

import (
	"testing"

	"github.com/meshflow/meshflow/actors"
)

func testGraph() *actors.JobGraph {
	return &actors.JobGraph{Name: "j", Vertices: []*actors.Vertex{
		{Name: "src", Parallelism: 1},
		{Name: "op", Parallelism: 3},
	}}
}

func TestSchedulers(t *testing.T) {
	g := testGraph()
	nodes := []string{"a", "b"}
	tests := []struct {
		name string
		s    Scheduler
		want map[actors.InstanceID]string
	}{
		{"single", SingleNode{}, map[actors.InstanceID]string{{Operator: "src", Index: 0}: "a", {Operator: "op", Index: 0}: "a", {Operator: "op", Index: 1}: "a", {Operator: "op", Index: 2}: "a"}},
		{"spread", Spread{}, map[actors.InstanceID]string{{Operator: "src", Index: 0}: "a", {Operator: "op", Index: 0}: "a", {Operator: "op", Index: 1}: "b", {Operator: "op", Index: 2}: "a"}},
		{"pinned", Pinned{Operators: map[string]string{"op": "b"}, Default: "a"},
			map[actors.InstanceID]string{{Operator: "src", Index: 0}: "a", {Operator: "op", Index: 0}: "b", {Operator: "op", Index: 1}: "b", {Operator: "op", Index: 2}: "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pl, err := tt.s.Place(g, nodes)
			if err != nil {
				t.Fatal(err)
			}
			if len(pl) != len(tt.want) {
				t.Fatalf("placed %d instances, want %d", len(pl), len(tt.want))
			}
			for id, n := range tt.want {
				if pl[id] != n {
					t.Errorf("%s on %q, want %q", id, pl[id], n)
				}
			}
		})
	}
}

func TestSchedulerErrors(t *testing.T) {
	g := testGraph()
	if _, err := (SingleNode{}).Place(g, nil); err == nil {
		t.Error("SingleNode placed on no nodes")
	}
	if _, err := (Pinned{Operators: map[string]string{"nope": "a"}, Default: "a"}).Place(g, []string{"a"}); err == nil {
		t.Error("Pinned accepted an unknown operator")
	}
	if _, err := (Pinned{Operators: map[string]string{"op": "z"}, Default: "a"}).Place(g, []string{"a"}); err == nil {
		t.Error("Pinned accepted an unknown node")
	}
	if _, err := (Pinned{Default: "z"}).Place(g, []string{"a"}); err == nil {
		t.Error("Pinned accepted an unknown default node")
	}
}
