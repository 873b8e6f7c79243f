package persistence

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
)

func TestBatchArena(t *testing.T) {
	var b Batch
	big := bytes.Repeat([]byte("x"), 3*maxChunk)
	var want []Op
	for i := range 3000 {
		k, v := fmt.Appendf(nil, "key%d", i), fmt.Appendf(nil, "value%d", i)
		switch {
		case i%100 == 7:
			v = big
		case i%3 == 0:
			b.Delete(k)
			want = append(want, Op{Key: k, Delete: true})
			continue
		}
		b.Put(k, v)
		want = append(want, Op{Key: k, Value: v})
	}
	if b.Len() != len(want) {
		t.Fatalf("Len = %d, want %d", b.Len(), len(want))
	}
	size := 0
	for i, op := range b.ops {
		w := want[i]
		if !bytes.Equal(op.Key, w.Key) || !bytes.Equal(op.Value, w.Value) || op.Delete != w.Delete {
			t.Fatalf("op %d = %q %.10q %v, want %q %.10q %v", i, op.Key, op.Value, op.Delete, w.Key, w.Value, w.Delete)
		}
		if cap(op.Key) != len(op.Key) || cap(op.Value) != len(op.Value) {
			t.Fatalf("op %d: slices must be capped so that appending cannot overwrite a neighbour", i)
		}
		size += len(op.Key) + len(op.Value)
	}
	if b.Size() != size {
		t.Fatalf("Size = %d, want %d", b.Size(), size)
	}
	if cap(b.arena) > 3*maxChunk+maxChunk {
		t.Fatalf("arena chunk of %d bytes", cap(b.arena))
	}
}

func TestBatchResetAllocs(t *testing.T) {
	var b Batch
	key, val := []byte("key"), bytes.Repeat([]byte("v"), 100)
	fill := func() {
		b.Reset()
		for range 1000 {
			b.Put(key, val)
		}
	}
	fill()
	fill()
	if n := testing.AllocsPerRun(10, fill); n != 0 {
		t.Fatalf("refilling a reset batch allocates %v times", n)
	}
}

// TestKeyEncoding checks that distinct (namespace path, key) pairs never
// share an encoding and that a view's scan prefix covers only its own keys.
func TestKeyEncoding(t *testing.T) {
	names := []string{"", "a", "ab", "\x00", "\x01", "\x01a", "\xff"}
	keys := []string{"", "a", "\x00", "\x01", "\x01\x01a", "\x01\x01a\x00k", "\xff"}
	var paths [][]string
	paths = append(paths, nil)
	for _, a := range names {
		paths = append(paths, []string{a})
		for _, b := range names {
			paths = append(paths, []string{a, b})
		}
	}
	views := make([]*view, len(paths))
	for i, p := range paths {
		var s Store = NewStore(nil)
		for _, n := range p {
			s = s.Namespace(n)
		}
		views[i] = s.(*view)
		if !bytes.Equal(views[i].path, NamespacePrefix(p...)) {
			t.Fatalf("path %q: view prefix %q, NamespacePrefix %q", p, views[i].path, NamespacePrefix(p...))
		}
	}
	seen := map[string]string{}
	for i, v := range views {
		for _, k := range keys {
			enc := string(v.key([]byte(k)))
			id := fmt.Sprintf("%q/%q", paths[i], k)
			if other, ok := seen[enc]; ok {
				t.Fatalf("%s and %s both encode to %q", id, other, enc)
			}
			seen[enc] = id
			for j, w := range views {
				inScan := bytes.HasPrefix([]byte(enc), w.keyPrefix)
				inRange := bytes.HasPrefix([]byte(enc), w.path)
				if inScan != (i == j) {
					t.Fatalf("%s: in the scan range of %q: %v", id, paths[j], inScan)
				}
				isBelow := len(paths[i]) >= len(paths[j]) && slices.Equal(paths[i][:len(paths[j])], paths[j])
				if inRange != isBelow {
					t.Fatalf("%s: in the namespace range of %q: %v", id, paths[j], inRange)
				}
			}
		}
	}
}
