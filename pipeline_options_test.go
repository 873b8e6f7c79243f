package meshflow

import (
	"io"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/meshflow/meshflow/actors"
)

// TestMapProjectOptions: Map and ProjectWith take options like the other
// operators; the job graph has the requested number of instances, with
// the edges that follow from it, and a projection after a filter of the
// same parallelism is still fused into it.
func TestMapProjectOptions(t *testing.T) {
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "auction", Type: arrow.PrimitiveTypes.Int64},
		{Name: "price", Type: arrow.PrimitiveTypes.Int64},
	}, nil)
	cases := []struct {
		name      string
		build     func(s *Stream) *Stream
		vertices  map[string]int // name -> parallelism; absent: fused away
		partition map[string]actors.Partitioning
	}{
		{"map", func(s *Stream) *Stream {
			return s.Map("m", Set("x", Col("price").Mod(7)), Parallelism(3), Set("y", Col("auction").Add(1)))
		}, map[string]int{"m": 3}, map[string]actors.Partitioning{"m": actors.Rebalance, "out": actors.Rebalance}},
		{"map without options", func(s *Stream) *Stream {
			return s.Map("m", Set("x", Col("price")))
		}, map[string]int{"m": 1}, map[string]actors.Partitioning{"m": actors.Forward}},
		{"project", func(s *Stream) *Stream {
			return s.ProjectWith("p", []string{"auction"}, Parallelism(2))
		}, map[string]int{"p": 2}, map[string]actors.Partitioning{"p": actors.Rebalance}},
		{"filter and project fused", func(s *Stream) *Stream {
			return s.Filter("f", Col("auction").Mod(123).Eq(0), Parallelism(4)).
				ProjectWith("p", []string{"auction", "price"}, Parallelism(4))
		}, map[string]int{"f": 4}, map[string]actors.Partitioning{"f": actors.Rebalance}},
		{"filter and project apart", func(s *Stream) *Stream {
			return s.Filter("f", Col("auction").Mod(123).Eq(0), Parallelism(4)).
				ProjectWith("p", []string{"auction", "price"}, Parallelism(2))
		}, map[string]int{"f": 4, "p": 2}, map[string]actors.Partitioning{"p": actors.Rebalance}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := NewPipeline("opts")
			c.build(p.Source("in", FromJSON(schema))).To("out", Print(io.Discard, JSONLines))
			if err := p.Validate(); err != nil {
				t.Fatal(err)
			}
			g, err := p.graph(nil)
			if err != nil {
				t.Fatal(err)
			}
			for name, par := range c.vertices {
				v := g.Vertex(name)
				if v == nil {
					t.Fatalf("no vertex %q", name)
				}
				if v.Parallelism != par {
					t.Errorf("vertex %q: parallelism %d, want %d", name, v.Parallelism, par)
				}
			}
			if c.name == "filter and project fused" && g.Vertex("p") != nil {
				t.Errorf("projection not fused into the filter")
			}
			for to, part := range c.partition {
				found := false
				for _, e := range g.Edges {
					if e.To == to {
						found = true
						if e.Partitioning != part {
							t.Errorf("edge %s -> %s: partitioning %v, want %v", e.From, e.To, e.Partitioning, part)
						}
					}
				}
				if !found {
					t.Errorf("no edge into %q", to)
				}
			}
		})
	}
}

func TestMapProjectArgErrors(t *testing.T) {
	p := NewPipeline("bad")
	schema := arrow.NewSchema([]arrow.Field{{Name: "a", Type: arrow.PrimitiveTypes.Int64}}, nil)
	in := p.Source("in", FromJSON(schema))
	in.Map("m", nil, Set("b", Col("a"))).To("o1", Print(io.Discard, JSONLines))
	in.ProjectWith("p", nil).To("o2", Print(io.Discard, JSONLines))
	in.Filter("f", Col("a").Lower().Eq("x")).To("o3", Print(io.Discard, JSONLines))
	err := p.Validate()
	for _, want := range []string{`operator "m": nil map argument`, `"p": project needs at least one column`, `"f": expr (lower(a) = "x"): lower: a is int64, not a string`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to say %s", err, want)
		}
	}
}
