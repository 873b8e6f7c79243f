package badgerstore_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/meshflow/meshflow/persistence"
	"github.com/meshflow/meshflow/persistence/badgerstore"
	"github.com/meshflow/meshflow/persistence/persistencetest"
)

func open(t testing.TB, o badgerstore.Options) *badgerstore.Store {
	t.Helper()
	s, err := badgerstore.Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformanceInMemory(t *testing.T) {
	persistencetest.Run(t, func(t *testing.T) persistence.Store {
		return open(t, badgerstore.Options{InMemory: true})
	})
}

func TestConformanceOnDisk(t *testing.T) {
	persistencetest.Run(t, func(t *testing.T) persistence.Store {
		return open(t, badgerstore.Options{Dir: t.TempDir()})
	})
}

func TestReopen(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state")
	s, err := badgerstore.Open(ctx, badgerstore.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	var b persistence.Batch
	b.Put([]byte("k"), []byte("v"))
	if err := s.Namespace("op").Apply(ctx, &b); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, badgerstore.Options{Dir: dir})
	got, err := s.Namespace("op").Get(ctx, []byte("k"))
	if err != nil || string(got) != "v" {
		t.Fatalf("after reopen: %q, %v", got, err)
	}
}

func TestOpenErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, o := range []badgerstore.Options{{}, {Dir: file}} {
		if s, err := badgerstore.Open(context.Background(), o); err == nil {
			s.Close()
			t.Errorf("opened %+v", o)
		}
	}
}

// TestRandomized applies random batches and checks the store against a map.
func TestRandomized(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("MESHFLOW_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (rerun with MESHFLOW_SEED=%[1]d)", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	ctx := context.Background()
	s := open(t, badgerstore.Options{InMemory: true})
	ns := []persistence.Store{s.Namespace("a"), s.Namespace("ab"), s.Namespace("a").Namespace("b")}
	model := make([]map[string]string, len(ns))
	for i := range model {
		model[i] = map[string]string{}
	}
	for round := range 200 {
		i := rng.IntN(len(ns))
		var b persistence.Batch
		for range 1 + rng.IntN(20) {
			k := fmt.Sprintf("k%02d", rng.IntN(40))
			if rng.IntN(4) == 0 {
				b.Delete([]byte(k))
				delete(model[i], k)
			} else {
				v := strconv.Itoa(rng.Int())
				b.Put([]byte(k), []byte(v))
				model[i][k] = v
			}
		}
		if err := ns[i].Apply(ctx, &b); err != nil {
			t.Fatal(err)
		}
		// Check one namespace fully.
		j := rng.IntN(len(ns))
		var want []string
		for k, v := range model[j] {
			want = append(want, k+"="+v)
		}
		sort.Strings(want)
		var got []string
		err := ns[j].Scan(ctx, []byte("k"), func(k, v []byte) error {
			got = append(got, string(k)+"="+string(v))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("round %d, namespace %d: scan %v, model %v", round, j, got, want)
		}
		for k, v := range model[j] {
			if g, err := ns[j].Get(ctx, []byte(k)); err != nil || string(g) != v {
				t.Fatalf("round %d: get %s = %q, %v; want %q", round, k, g, err, v)
			}
		}
		if _, err := ns[j].Get(ctx, []byte("absent")); !errors.Is(err, persistence.ErrNotFound) {
			t.Fatal(err)
		}
	}
}

func BenchmarkApply(b *testing.B) {
	s := open(b, badgerstore.Options{Dir: b.TempDir()})
	ctx := context.Background()
	var batch persistence.Batch
	val := make([]byte, 64)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		batch.Reset()
		for j := range 1024 {
			batch.Put([]byte(fmt.Sprintf("key-%d-%d", i, j)), val)
		}
		if err := s.Apply(ctx, &batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*1024)/b.Elapsed().Seconds(), "writes/s")
}
