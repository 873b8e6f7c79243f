package badgerstore_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshflow/meshflow/persistence"
	"github.com/meshflow/meshflow/persistence/badgerstore"
)

var seedFlag = flag.Uint64("seed", 0, "seed of TestModel (0: $MESHFLOW_SEED, else time-based)")

// TestModel applies random operations to an on-disk store and to a Go map
// model and compares every read. It prints its seed; rerun a failure with
//
//	go test ./persistence/badgerstore -run TestModel -seed=N
//
// or MESHFLOW_SEED=N in the environment (handy with ./...).
func TestModel(t *testing.T) {
	t.Parallel()
	seed := *seedFlag
	if env := os.Getenv("MESHFLOW_SEED"); seed == 0 && env != "" {
		var err error
		if seed, err = strconv.ParseUint(env, 10, 64); err != nil {
			t.Fatalf("MESHFLOW_SEED: %v", err)
		}
	}
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -run TestModel -seed=%d)", seed, seed)
	r := rand.New(rand.NewPCG(seed, seed>>32|seed<<32))
	ctx := context.Background()

	// 1 MiB memtables: a transaction holds 150 KiB, so the large batches
	// below are split into several transactions.
	o := badgerstore.Options{Dir: t.TempDir(), MemTableSize: 1 << 20, BlockCacheSize: 1 << 20}
	s, err := badgerstore.Open(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()

	// Views whose names are prefixes of each other and nest.
	paths := [][]string{nil, {"a"}, {"ab"}, {"a", "b"}, {"\xff"}, {""}}
	viewsOf := func(s persistence.Store) []persistence.Store {
		vs := make([]persistence.Store, len(paths))
		for i, p := range paths {
			vs[i] = s
			for _, n := range p {
				vs[i] = vs[i].Namespace(n)
			}
		}
		return vs
	}
	views := viewsOf(s)
	model := make([]map[string]string, len(paths))
	for i := range model {
		model[i] = map[string]string{}
	}

	// A small alphabet makes collisions, shared prefixes and 0x00/0xff
	// edges frequent.
	alphabet := []byte{0x00, 0x01, 'a', 'b', 0xfe, 0xff}
	randKey := func(maxLen int) []byte {
		k := make([]byte, r.IntN(maxLen+1))
		for i := range k {
			k[i] = alphabet[r.IntN(len(alphabet))]
		}
		return k
	}
	keyDesc := func(v int, k []byte) string { return fmt.Sprintf("view %q key %q", paths[v], k) }

	const steps = 1200
	var b persistence.Batch
	for step := range steps {
		v := r.IntN(len(views))
		m := model[v]
		switch op := r.IntN(100); {
		case op < 40: // a batch of puts and deletes
			b.Reset()
			n := 1 + r.IntN(20)
			if r.IntN(20) == 0 {
				n = 1000 + r.IntN(2000) // larger than one transaction
			}
			pending := maps.Clone(m)
			for range n {
				var k []byte
				if n > 100 { // many keys, and many rewritten within the batch
					k = fmt.Appendf(randKey(1), "%d", r.IntN(500))
				} else {
					k = randKey(4)
				}
				if r.IntN(4) == 0 {
					b.Delete(k)
					delete(pending, string(k))
				} else {
					val := fmt.Sprintf("%d.%d", step, r.IntN(1000))
					b.Put(k, []byte(val))
					pending[string(k)] = val
				}
			}
			if err := views[v].Apply(ctx, &b); err != nil {
				t.Fatalf("step %d: Apply: %v", step, err)
			}
			model[v] = pending
		case op < 70: // get
			k := randKey(4)
			got, err := views[v].Get(ctx, k)
			want, ok := m[string(k)]
			switch {
			case !ok && !errors.Is(err, persistence.ErrNotFound):
				t.Fatalf("step %d: Get(%s) = %q, %v; want ErrNotFound", step, keyDesc(v, k), got, err)
			case ok && (err != nil || string(got) != want):
				t.Fatalf("step %d: Get(%s) = %q, %v; want %q", step, keyDesc(v, k), got, err, want)
			}
		case op < 99: // scan a prefix
			p := randKey(2)
			var keys []string
			for k := range m {
				if strings.HasPrefix(k, string(p)) {
					keys = append(keys, k)
				}
			}
			slices.Sort(keys)
			want := make([]string, 0, len(keys))
			for _, k := range keys {
				want = append(want, k+"="+m[k])
			}
			var got []string
			err := views[v].Scan(ctx, p, func(k, val []byte) error {
				got = append(got, string(k)+"="+string(val))
				return nil
			})
			if err != nil {
				t.Fatalf("step %d: Scan: %v", step, err)
			}
			if !slices.Equal(got, want) {
				i := 0
				for i < min(len(got), len(want)) && got[i] == want[i] {
					i++
				}
				t.Fatalf("step %d: Scan(view %q, prefix %q): %d entries, want %d; first difference at %d:\n got %q\nwant %q",
					step, paths[v], p, len(got), len(want), i, got[i:min(i+3, len(got))], want[i:min(i+3, len(want))])
			}
		default: // close and reopen
			if err := s.Close(); err != nil {
				t.Fatalf("step %d: Close: %v", step, err)
			}
			if s, err = badgerstore.Open(ctx, o); err != nil {
				t.Fatalf("step %d: reopen: %v", step, err)
			}
			views = viewsOf(s)
		}
	}

	// Finally, everything the model holds, view by view.
	for v, m := range model {
		var got [][2]string
		err := views[v].Scan(ctx, nil, func(k, val []byte) error {
			got = append(got, [2]string{string(k), string(val)})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(m) {
			t.Fatalf("view %q: %d keys, model has %d", paths[v], len(got), len(m))
		}
		for i, e := range got {
			if m[e[0]] != e[1] || (i > 0 && bytes.Compare([]byte(got[i-1][0]), []byte(e[0])) >= 0) {
				t.Fatalf("view %q: key %q = %q out of order or not in the model (%q)", paths[v], e[0], e[1], m[e[0]])
			}
		}
	}
}
