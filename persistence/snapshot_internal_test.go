package persistence

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sort"
	"testing"
)

// recorder is a sorted in-memory Backend that records every Write.
type recorder struct {
	keys   []string
	vals   map[string][]byte
	writes [][]Op
}

func (r *recorder) Get(_ context.Context, key []byte) ([]byte, error) {
	v, ok := r.vals[string(key)]
	if !ok {
		return nil, ErrNotFound
	}
	return bytes.Clone(v), nil
}

func (r *recorder) Scan(_ context.Context, prefix []byte, fn func(k, v []byte) error) error {
	i := sort.SearchStrings(r.keys, string(prefix))
	for _, k := range slices.Clone(r.keys[i:]) {
		if !bytes.HasPrefix([]byte(k), prefix) {
			break
		}
		if err := fn([]byte(k), r.vals[k]); err != nil {
			return err
		}
	}
	return nil
}

func (r *recorder) Write(_ context.Context, ops []Op) error {
	rec := make([]Op, len(ops))
	for i, op := range ops {
		rec[i] = Op{Key: bytes.Clone(op.Key), Value: bytes.Clone(op.Value), Delete: op.Delete}
		k := string(op.Key)
		i, found := slices.BinarySearch(r.keys, k)
		switch {
		case op.Delete && found:
			r.keys = slices.Delete(r.keys, i, i+1)
			delete(r.vals, k)
		case !op.Delete && !found:
			r.keys = slices.Insert(r.keys, i, k)
			fallthrough
		case !op.Delete:
			r.vals[k] = bytes.Clone(op.Value)
		}
	}
	r.writes = append(r.writes, rec)
	return nil
}

func (r *recorder) Close() error { return nil }

// TestReplaceNamespaceBounded checks that ReplaceNamespace writes in
// bounded transactions, deletions first, and only in its namespace.
func TestReplaceNamespaceBounded(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name       string
		old, new   int
		valSize    int
		wantWrites int
	}{
		{"empty", 0, 0, 0, 0},
		{"one chunk", 100, 100, 10, 2},
		{"chunks by count", 10000, 9000, 10, 3 + 3},    // 4096 ops a chunk
		{"chunks by bytes", 100, 300, 10 << 10, 1 + 3}, // 1 MiB a chunk: 100 values of 10 KiB each
		{"one large entry", 0, 1, 3 << 20, 1},          // larger than a chunk: a write of its own
		{"clear only", 5000, 0, 1, 2},                  // deleting 5000 keys
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &recorder{vals: map[string][]byte{}}
			s := NewStore(r)
			ns := s.Namespace("ns")
			other := s.Namespace("other")
			val := bytes.Repeat([]byte("v"), tt.valSize)
			var b Batch
			for i := range tt.old {
				b.Put(fmt.Appendf(nil, "old%06d", i), val)
			}
			if err := ns.Apply(ctx, &b); err != nil {
				t.Fatal(err)
			}
			b.Reset()
			b.Put([]byte("k"), []byte("other"))
			if err := other.Apply(ctx, &b); err != nil {
				t.Fatal(err)
			}
			if err := s.Apply(ctx, &b); err != nil {
				t.Fatal(err)
			}
			r.writes = nil

			err := ReplaceNamespace(ctx, ns, func(yield func(k, v []byte) error) error {
				for i := range tt.new {
					if err := yield(fmt.Appendf(nil, "\x00new%06d", i), val); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(r.writes) != tt.wantWrites {
				t.Errorf("%d writes, want %d", len(r.writes), tt.wantWrites)
			}
			prefix := NamespacePrefix("ns")
			deleting := true
			deletes, puts := 0, 0
			for i, w := range r.writes {
				size := 0
				for _, op := range w {
					size += len(op.Key) + len(op.Value)
					if !bytes.HasPrefix(op.Key, prefix) {
						t.Fatalf("write %d: key %q outside the namespace", i, op.Key)
					}
					if op.Delete {
						if !deleting {
							t.Fatalf("write %d: a deletion after the puts began", i)
						}
						deletes++
					} else {
						deleting = false
						puts++
					}
				}
				last := w[len(w)-1]
				if len(w) > replaceMaxOps || size-len(last.Key)-len(last.Value) >= replaceMaxBytes {
					t.Fatalf("write %d: %d ops, %d bytes; bounds %d ops, %d bytes", i, len(w), size, replaceMaxOps, replaceMaxBytes)
				}
			}
			if deletes != tt.old || puts != tt.new {
				t.Fatalf("%d deletes, %d puts; want %d, %d", deletes, puts, tt.old, tt.new)
			}
			n := 0
			if err := ns.Scan(ctx, nil, func(k, v []byte) error { n++; return nil }); err != nil {
				t.Fatal(err)
			}
			if n != tt.new {
				t.Fatalf("namespace has %d keys, want %d", n, tt.new)
			}
			if v, err := other.Get(ctx, []byte("k")); err != nil || string(v) != "other" {
				t.Fatalf("other namespace: %q, %v", v, err)
			}
			if v, err := s.Get(ctx, []byte("k")); err != nil || string(v) != "other" {
				t.Fatalf("root: %q, %v", v, err)
			}
		})
	}
}
