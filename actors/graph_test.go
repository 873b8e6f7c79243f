package actors

import (
	"errors"
	"strings"
	"testing"
)

func TestGraphValidate(t *testing.T) {
	src := func(name string, p int) *Vertex {
		return &Vertex{Name: name, Parallelism: p, NewSource: func() Source { return nil }}
	}
	op := func(name string, p int) *Vertex {
		return &Vertex{Name: name, Parallelism: p, NewOperator: func() Operator { return nil }}
	}
	tests := []struct {
		name    string
		g       JobGraph
		wantErr []string
	}{
		{"ok", JobGraph{Name: "j", Vertices: []*Vertex{src("s", 1), op("a", 4)},
			Edges: []Edge{{From: "s", To: "a", Partitioning: Hash, KeyColumns: []string{"k"}}}}, nil},
		{"bad job name", JobGraph{Name: "a.b", Vertices: []*Vertex{src("s", 1), op("a", 1)},
			Edges: []Edge{{From: "s", To: "a", Partitioning: Forward}}}, []string{`job name "a.b"`}},
		{"bad operator name and parallelism", JobGraph{Name: "j", Vertices: []*Vertex{src("s*", 0)}},
			[]string{`operator name "s*"`, "parallelism 0"}},
		{"forward with unequal parallelism", JobGraph{Name: "j", Vertices: []*Vertex{src("s", 1), op("a", 2)},
			Edges: []Edge{{From: "s", To: "a", Partitioning: Forward}}}, []string{"forward needs equal parallelism"}},
		{"hash without keys", JobGraph{Name: "j", Vertices: []*Vertex{src("s", 1), op("a", 2)},
			Edges: []Edge{{From: "s", To: "a", Partitioning: Hash}}}, []string{"needs key columns"}},
		{"operator without input", JobGraph{Name: "j", Vertices: []*Vertex{src("s", 1), op("a", 1), op("b", 1)},
			Edges: []Edge{{From: "s", To: "a", Partitioning: Forward}}}, []string{`operator "b" has no input`}},
		{"edge into a source", JobGraph{Name: "j", Vertices: []*Vertex{src("s", 1), src("t", 1)},
			Edges: []Edge{{From: "s", To: "t", Partitioning: Forward}}}, []string{"a source takes no input"}},
		{"unknown operator", JobGraph{Name: "j", Vertices: []*Vertex{src("s", 1)},
			Edges: []Edge{{From: "s", To: "x", Partitioning: Forward}}}, []string{"unknown operator"}},
		{"cycle", JobGraph{Name: "j", Vertices: []*Vertex{src("s", 1), op("a", 1), op("b", 1)},
			Edges: []Edge{{From: "s", To: "a", Partitioning: Forward}, {From: "a", To: "b", Partitioning: Forward}, {From: "b", To: "a", Partitioning: Forward}}},
			[]string{"cycle through a -> b -> a"}},
		{"duplicate name", JobGraph{Name: "j", Vertices: []*Vertex{src("s", 1), op("s", 1)}}, []string{`"s" used twice`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.g.Validate()
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidGraph) {
				t.Fatalf("error %v does not wrap ErrInvalidGraph", err)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestRestartBackoff(t *testing.T) {
	p := RestartPolicy{InitialBackoff: 10, MaxBackoff: 50}.withDefaults()
	for i, want := range []int64{10, 20, 40, 50, 50} {
		if got := p.backoff(i + 1); int64(got) != want {
			t.Errorf("backoff(%d) = %d, want %d", i+1, got, want)
		}
	}
}
