package messages_test

import (
	"slices"
	"testing"

	"github.com/meshflow/meshflow/messages"
)

func TestLineageRowIDs(t *testing.T) {
	cases := []struct {
		name string
		l    *messages.Lineage
		n    int
		want []string
	}{
		{"positions", &messages.Lineage{Origin: "in", Pos: []uint64{5, 36, 37}}, 3, []string{"j.in:5", "j.in:10", "j.in:11"}},
		{"base", &messages.Lineage{Origin: "gen~x", Base: 35}, 2, []string{"j.gen~x:z", "j.gen~x:10"}},
		{"shared positions", &messages.Lineage{Origin: "in", Pos: []uint64{7, 9, 7, 7}}, 4, []string{"j.in:7", "j.in:9", "j.in:7+1", "j.in:7+2"}},
		{"slice", (&messages.Lineage{Origin: "in", Pos: []uint64{1, 2, 3, 4}}).Slice(1, 3), 2, []string{"j.in:2", "j.in:3"}},
		{"slice of base", (&messages.Lineage{Origin: "in", Base: 10}).Slice(2, 4), 2, []string{"j.in:c", "j.in:d"}},
		{"take", (&messages.Lineage{Origin: "in", Base: 10}).Take([]int32{3, 0, 3}), 3, []string{"j.in:d", "j.in:a", "j.in:d+1"}},
		{"branch", (&messages.Lineage{Origin: "in", Pos: []uint64{1}}).Branch("2"), 1, []string{"j.in/2:1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			err := tc.l.RowIDs("j.", tc.n, func(row int, id []byte) error {
				if row != len(got) {
					t.Fatalf("row %d out of order", row)
				}
				got = append(got, string(id))
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("ids %q, want %q", got, tc.want)
			}
		})
	}
}
