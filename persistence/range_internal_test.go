package persistence

import (
	"bytes"
	"context"
	"slices"
	"testing"
)

// copySnapshots is a SnapshotBackend without SnapshotRange: its snapshot
// copies the keys of its prefix when opened.
type copySnapshots struct{ *recorder }

type copySnapshot struct{ keys, vals [][]byte }

func (c copySnapshots) Snapshot(prefix []byte) (Snapshot, error) {
	var sn copySnapshot
	err := c.Scan(context.Background(), prefix, func(k, v []byte) error {
		sn.keys = append(sn.keys, bytes.Clone(k[len(prefix):]))
		sn.vals = append(sn.vals, bytes.Clone(v))
		return nil
	})
	return &sn, err
}

func (s *copySnapshot) Scan(_ context.Context, fn func(k, v []byte) error) error {
	for i := range s.keys {
		if err := fn(s.keys[i], s.vals[i]); err != nil {
			return err
		}
	}
	return nil
}

func (s *copySnapshot) Close() error { return nil }

// TestRangeFallbacks: over a backend without SnapshotRange, a range
// snapshot filters a snapshot of the view, and ReplaceRange (also over a
// backend without snapshots) clears the range with a filtered scan.
func TestRangeFallbacks(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		b    func(r *recorder) Backend
	}{
		{"snapshots", func(r *recorder) Backend { return copySnapshots{r} }},
		{"no snapshots", func(r *recorder) Backend { return r }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{vals: map[string][]byte{}}
			ns := NewStore(tc.b(r)).Namespace("keyed")
			var b Batch
			for _, k := range []string{"\x00\x01a", "\x00\x02b", "\x00\x03c", "\x00\x04d"} {
				b.Put([]byte(k), []byte(k[2:]))
			}
			b.Put([]byte("\x00\x02"), []byte("nested?"))
			if err := ns.Apply(ctx, &b); err != nil {
				t.Fatal(err)
			}
			if err := ns.Namespace("sub").Apply(ctx, &b); err != nil {
				t.Fatal(err)
			}
			start, end := []byte{0, 2}, []byte{0, 4}
			if tc.name == "snapshots" {
				snap, err := OpenRangeSnapshot(ns, start, end)
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				if err := snap.Scan(ctx, func(k, v []byte) error { got = append(got, string(k)); return nil }); err != nil {
					t.Fatal(err)
				}
				if want := []string{"\x00\x02", "\x00\x02b", "\x00\x03c"}; !slices.Equal(got, want) {
					t.Fatalf("range snapshot %q, want %q", got, want)
				}
			}
			err := ReplaceRange(ctx, ns, start, end, func(yield func(k, v []byte) error) error {
				return yield([]byte("\x00\x03z"), []byte("new"))
			})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			if err := ns.Scan(ctx, nil, func(k, v []byte) error { got = append(got, string(k)+"="+string(v)); return nil }); err != nil {
				t.Fatal(err)
			}
			if want := []string{"\x00\x01a=a", "\x00\x03z=new", "\x00\x04d=d"}; !slices.Equal(got, want) {
				t.Fatalf("after ReplaceRange %q, want %q", got, want)
			}
			n := 0
			if err := ns.Namespace("sub").Scan(ctx, nil, func(k, v []byte) error { n++; return nil }); err != nil || n != 5 {
				t.Fatalf("nested namespace has %d keys (%v), want 5", n, err)
			}
		})
	}
}
