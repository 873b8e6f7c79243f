package actors

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/meshflow/meshflow/internal/kernels"
	"github.com/meshflow/meshflow/persistence"
	"github.com/meshflow/meshflow/persistence/badgerstore"
	"github.com/meshflow/meshflow/persistence/snapshotstore"
)

func openBadger(t *testing.T) *badgerstore.Store {
	t.Helper()
	st, err := badgerstore.Open(context.Background(), badgerstore.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// keyedInstance is an instance of operator "op" of job "job" with the
// given parallelism, over root, set up as newInstance sets up its stores.
func keyedInstance(root persistence.Store, maxP, par, idx int) *instance {
	v := &Vertex{Name: "op", Parallelism: par, NewOperator: func() Operator { return nil }}
	g := &JobGraph{Name: "job", MaxParallelism: maxP, Vertices: []*Vertex{v}}
	s := &instance{part: &jobPart{g: g}, v: v, id: InstanceID{"op", idx}}
	s.state = root.Namespace(fmt.Sprintf("job/op/%d", idx))
	s.keyed = root.Namespace(KeyedNamespace("job", "op"))
	lo, hi := s.keyGroups()
	s.keyedView = &keyedStore{s: s.keyed, lo: lo, hi: hi}
	return s
}

func keyedKey(group int, rest string) []byte { return append(KeyGroupKey(nil, group), rest...) }

func TestKeyedStateRejectsUnownedGroups(t *testing.T) {
	ctx := context.Background()
	s := keyedInstance(openBadger(t), 128, 4, 1) // owns [32, 64)
	if lo, hi := s.KeyGroups(); lo != 32 || hi != 64 {
		t.Fatalf("KeyGroups = [%d, %d), want [32, 64)", lo, hi)
	}
	for _, tc := range []struct {
		name string
		key  []byte
		del  bool
		ok   bool
	}{
		{"first owned group", keyedKey(32, "k"), false, true},
		{"last owned group", keyedKey(63, "k"), false, true},
		{"group only", keyedKey(40, ""), false, true},
		{"delete in owned group", keyedKey(40, "k"), true, true},
		{"group before", keyedKey(31, "k"), false, false},
		{"group after", keyedKey(64, "k"), false, false},
		{"delete in other group", keyedKey(0, "k"), true, false},
		{"one byte", []byte{0}, false, false},
		{"empty", nil, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b persistence.Batch
			b.Put(keyedKey(33, "fine"), []byte("v")) // a bad key fails the whole batch
			if tc.del {
				b.Delete(tc.key)
			} else {
				b.Put(tc.key, []byte("v"))
			}
			err := s.KeyedState().Apply(ctx, &b)
			if tc.ok != (err == nil) || (!tc.ok && !errors.Is(err, ErrKeyGroupNotOwned)) {
				t.Fatalf("Apply = %v, want ok=%v", err, tc.ok)
			}
			_, gerr := s.keyed.Get(ctx, keyedKey(33, "fine"))
			if tc.ok != (gerr == nil) {
				t.Fatalf("after Apply = %v the batch's good key: %v", err, gerr)
			}
			del := persistence.Batch{}
			del.Delete(keyedKey(33, "fine"))
			if err := s.keyed.Apply(ctx, &del); err != nil {
				t.Fatal(err)
			}
		})
	}
	ns := s.KeyedState().Namespace("x")
	var b persistence.Batch
	b.Put(keyedKey(40, "k"), nil)
	if err := ns.Apply(ctx, &b); err == nil {
		t.Fatal("Apply on a namespace of keyed state: no error")
	}
	if _, err := ns.Get(ctx, []byte("k")); err == nil || errors.Is(err, persistence.ErrNotFound) {
		t.Fatalf("Get on a namespace of keyed state = %v, want an error", err)
	}
}

type entry struct{ k, v string }

func putAll(t *testing.T, s persistence.Store, es ...entry) {
	t.Helper()
	var b persistence.Batch
	for _, e := range es {
		b.Put([]byte(e.k), []byte(e.v))
	}
	if err := s.Apply(context.Background(), &b); err != nil {
		t.Fatal(err)
	}
}

func scanAll(t *testing.T, s persistence.Store) []entry {
	t.Helper()
	var out []entry
	err := s.Scan(context.Background(), nil, func(k, v []byte) error {
		out = append(out, entry{string(k), string(v)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// encodeSnapshot encodes an instance's snapshot as a checkpoint uploads it
// and decodes it as recovery reads it.
func encodeSnapshot(t *testing.T, s *instance) *snapshotstore.Reader {
	t.Helper()
	snap, err := s.openSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	var buf bytes.Buffer
	if _, err := snapshotstore.Encode(context.Background(), &buf, []byte("meta"), snap); err != nil {
		t.Fatal(err)
	}
	r, err := snapshotstore.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestKeyedCheckpointRestore: an instance's snapshot holds its namespace
// and exactly its key range of keyed state, at the time it was opened;
// restoring it replaces both and leaves the other instances' key groups
// alone.
func TestKeyedCheckpointRestore(t *testing.T) {
	ctx := context.Background()
	root := openBadger(t)
	a, b := keyedInstance(root, 8, 2, 0), keyedInstance(root, 8, 2, 1) // [0, 4) and [4, 8)
	putAll(t, a.state, entry{"own", "a1"})
	putAll(t, a.KeyedState(), entry{string(keyedKey(0, "x")), "a x"}, entry{string(keyedKey(3, "y")), "a y"})
	putAll(t, b.KeyedState(), entry{string(keyedKey(4, "x")), "b x"}, entry{string(keyedKey(7, "z")), "b z"})
	snap, err := a.openSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Writes after the barrier are not in the checkpoint.
	putAll(t, a.state, entry{"own", "a2"}, entry{"later", "l"})
	putAll(t, a.KeyedState(), entry{string(keyedKey(0, "x")), "a x2"}, entry{string(keyedKey(1, "new")), "n"})
	var buf bytes.Buffer
	if _, err := snapshotstore.Encode(ctx, &buf, nil, snap); err != nil {
		t.Fatal(err)
	}
	snap.Close()
	r, err := snapshotstore.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	putAll(t, b.KeyedState(), entry{string(keyedKey(5, "after")), "b after"})
	if err := a.restoreState(ctx, r.Entries); err != nil {
		t.Fatal(err)
	}
	if got, want := scanAll(t, a.state), []entry{{"own", "a1"}}; !slices.Equal(got, want) {
		t.Errorf("instance namespace = %q, want %q", got, want)
	}
	want := []entry{
		{string(keyedKey(0, "x")), "a x"}, {string(keyedKey(3, "y")), "a y"},
		{string(keyedKey(4, "x")), "b x"}, {string(keyedKey(5, "after")), "b after"}, {string(keyedKey(7, "z")), "b z"},
	}
	if got := scanAll(t, a.keyed); !slices.Equal(got, want) {
		t.Errorf("keyed state = %q\nwant %q", got, want)
	}
	// No checkpoint: both are cleared, the other instance's groups kept.
	if err := a.restoreState(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if got := scanAll(t, a.state); len(got) != 0 {
		t.Errorf("instance namespace after clearing = %q", got)
	}
	if got := scanAll(t, a.keyed); !slices.Equal(got, want[2:]) {
		t.Errorf("keyed state after clearing = %q, want %q", got, want[2:])
	}
}

// TestKeyedRescaleByKeyRange: the keyed state checkpointed by 2 instances
// restores into 4 by key range. Every new instance takes, from the
// snapshot of each old instance whose key groups overlap its own, the
// entries of its groups: a contiguous run of the sorted snapshot, since
// keys start with their key group.
func TestKeyedRescaleByKeyRange(t *testing.T) {
	ctx := context.Background()
	const maxP, keys = 128, 2000
	old := openBadger(t)
	want := map[string]string{}
	var olds []*instance
	for i := range 2 {
		olds = append(olds, keyedInstance(old, maxP, 2, i))
	}
	hashes := make([]uint64, keys)
	for k := range keys {
		hashes[k] = uint64(k) * 0x9e3779b97f4a7c15
	}
	batches := make([]persistence.Batch, 2)
	for k, h := range hashes {
		g := kernels.KeyGroup(h, maxP)
		key := string(keyedKey(g, fmt.Sprintf("key%05d", k)))
		want[key] = fmt.Sprint(k)
		batches[kernels.OperatorIndex(g, maxP, 2)].Put([]byte(key), []byte(want[key]))
	}
	var snaps []*snapshotstore.Reader
	for i, s := range olds {
		if err := s.KeyedState().Apply(ctx, &batches[i]); err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, encodeSnapshot(t, s))
	}

	// A fresh store, parallelism 4.
	st := openBadger(t)
	for i := range 4 {
		s := keyedInstance(st, maxP, 4, i)
		lo, hi := s.keyGroups()
		start, end := keyRange(lo, hi)
		var from []*snapshotstore.Reader
		for j := kernels.OperatorIndex(lo, maxP, 2); j <= kernels.OperatorIndex(hi-1, maxP, 2); j++ {
			from = append(from, snaps[j])
		}
		err := persistence.ReplaceRange(ctx, s.keyed, start, end, func(yield func(k, v []byte) error) error {
			for _, r := range from {
				err := r.Entries(func(k, v []byte) error {
					if len(k) > 0 && k[0] == tagKeyed && persistence.InRange(k[1:], start, end) {
						return yield(k[1:], v)
					}
					return nil
				})
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("instance %d: %v", i, err)
		}
		// Each new instance owns and can write what it restored.
		var b persistence.Batch
		b.Put(keyedKey(lo, "written after rescale"), []byte{byte(i)})
		if err := s.KeyedState().Apply(ctx, &b); err != nil {
			t.Fatalf("instance %d: %v", i, err)
		}
		want[string(keyedKey(lo, "written after rescale"))] = string([]byte{byte(i)})
	}
	got := map[string]string{}
	for _, e := range scanAll(t, st.Namespace(KeyedNamespace("job", "op"))) {
		got[e.k] = e.v
	}
	if len(got) != len(want) {
		t.Fatalf("%d keys after rescale, want %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("key %x = %q, want %q", k, got[k], v)
		}
	}
}
