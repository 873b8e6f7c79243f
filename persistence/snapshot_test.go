package persistence_test

import (
	"context"
	"strings"
	"testing"

	"github.com/meshflow/meshflow/persistence"
	"github.com/meshflow/meshflow/persistence/memstore"
)

// flat is a Backend without snapshots.
type flat struct{}

func (flat) Get(context.Context, []byte) ([]byte, error) { return nil, persistence.ErrNotFound }
func (flat) Scan(context.Context, []byte, func(k, v []byte) error) error {
	return nil
}
func (flat) Write(context.Context, []persistence.Op) error { return nil }
func (flat) Close() error                                  { return nil }

// opaque hides the store it embeds: it is not a Wrapper.
type opaque struct{ persistence.Store }

// wrapper wraps a store and says so.
type wrapper struct{ persistence.Store }

func (w wrapper) Unwrap() persistence.Store { return w.Store }

func TestOpenSnapshotUnsupported(t *testing.T) {
	ctx := context.Background()
	noEntries := func(func(k, v []byte) error) error { return nil }
	for _, tt := range []struct {
		name string
		s    persistence.Store
		want string
	}{
		{"backend without snapshots", persistence.NewStore(flat{}).Namespace("ns"), "cannot take snapshots"},
		{"unknown store", opaque{memstore.New()}, "is not a store of persistence.NewStore"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := persistence.OpenSnapshot(tt.s); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("OpenSnapshot = %v, want an error containing %q", err, tt.want)
			}
			if tt.name == "unknown store" {
				if err := persistence.ReplaceNamespace(ctx, tt.s, noEntries); err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("ReplaceNamespace = %v, want an error containing %q", err, tt.want)
				}
			}
		})
	}
}

// TestWrapper: OpenSnapshot and ReplaceNamespace see through Wrappers, to
// the namespace the wrapped view is.
func TestWrapper(t *testing.T) {
	ctx := context.Background()
	s := memstore.New()
	defer s.Close()
	ns := wrapper{wrapper{s.Namespace("a")}}
	var b persistence.Batch
	b.Put([]byte("k"), []byte("v"))
	if err := s.Apply(ctx, &b); err != nil {
		t.Fatal(err)
	}
	if err := ns.Apply(ctx, &b); err != nil {
		t.Fatal(err)
	}
	snap, err := persistence.OpenSnapshot(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	var got []string
	if err := snap.Scan(ctx, func(k, v []byte) error {
		got = append(got, string(k)+"="+string(v))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != "\x00k=v" {
		t.Fatalf("snapshot of the wrapped namespace = %q, want [\"\\x00k=v\"]", got)
	}
	if err := persistence.ReplaceNamespace(ctx, ns, func(func(k, v []byte) error) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Namespace("a").Get(ctx, []byte("k")); err == nil {
		t.Fatal("ReplaceNamespace through a wrapper left the key")
	}
	if v, err := s.Get(ctx, []byte("k")); err != nil || string(v) != "v" {
		t.Fatalf("root key: %q, %v", v, err)
	}
}
