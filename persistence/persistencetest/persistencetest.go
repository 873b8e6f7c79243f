// Package persistencetest is a conformance suite for implementations of
// persistence.Store.
package persistencetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/meshflow/meshflow/persistence"
)

// Run runs the suite; open returns a new, empty store.
func Run(t *testing.T, open func(t *testing.T) persistence.Store) {
	ctx := context.Background()
	t.Run("get put delete", func(t *testing.T) {
		s := open(t)
		if _, err := s.Get(ctx, []byte("k")); !errors.Is(err, persistence.ErrNotFound) {
			t.Fatalf("get of absent key: %v", err)
		}
		var b persistence.Batch
		b.Put([]byte("k"), []byte("v1"))
		b.Put([]byte("k"), []byte("v2"))
		b.Put([]byte("empty"), nil)
		mustApply(t, s, &b)
		expect(t, s, "k", "v2")
		expect(t, s, "empty", "")
		b.Reset()
		b.Delete([]byte("k"))
		b.Delete([]byte("never"))
		mustApply(t, s, &b)
		if _, err := s.Get(ctx, []byte("k")); !errors.Is(err, persistence.ErrNotFound) {
			t.Fatalf("get of deleted key: %v", err)
		}
	})
	t.Run("batch copies its input", func(t *testing.T) {
		s := open(t)
		var b persistence.Batch
		k, v := []byte("key"), []byte("value")
		b.Put(k, v)
		k[0], v[0] = 'X', 'X'
		mustApply(t, s, &b)
		expect(t, s, "key", "value")
	})
	t.Run("get returns a copy", func(t *testing.T) {
		s := open(t)
		put(t, s, "k", "v")
		got, _ := s.Get(ctx, []byte("k"))
		got[0] = 'X'
		expect(t, s, "k", "v")
	})
	t.Run("scan order and bounds", func(t *testing.T) {
		s := open(t)
		keys := []string{"a", "b\x00", "b", "b\xff", "b\xff\xff", "ba", "c", "\xff", "\xff\xff"}
		for _, k := range keys {
			put(t, s, k, "v"+k)
		}
		cases := []struct {
			prefix string
			want   []string
		}{
			{"", []string{"a", "b", "b\x00", "ba", "b\xff", "b\xff\xff", "c", "\xff", "\xff\xff"}},
			{"b", []string{"b", "b\x00", "ba", "b\xff", "b\xff\xff"}},
			{"b\xff", []string{"b\xff", "b\xff\xff"}},
			{"\xff", []string{"\xff", "\xff\xff"}},
			{"z", nil},
		}
		for _, tc := range cases {
			got := scan(t, s, tc.prefix)
			if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tc.want) {
				t.Errorf("scan %q: got %q, want %q", tc.prefix, got, tc.want)
			}
		}
	})
	t.Run("scan stops on error", func(t *testing.T) {
		s := open(t)
		put(t, s, "a", "1")
		put(t, s, "b", "2")
		stop := errors.New("stop")
		n := 0
		err := s.Scan(ctx, nil, func(k, v []byte) error { n++; return stop })
		if !errors.Is(err, stop) || n != 1 {
			t.Fatalf("scan returned %v after %d calls", err, n)
		}
	})
	t.Run("namespaces", func(t *testing.T) {
		s := open(t)
		a, ab := s.Namespace("a"), s.Namespace("ab")
		nested := a.Namespace("b")
		put(t, a, "bk", "from a")
		put(t, ab, "k", "from ab")
		put(t, nested, "k", "from a/b")
		put(t, s, "k", "from root")
		expect(t, a, "bk", "from a")
		expect(t, ab, "k", "from ab")
		expect(t, nested, "k", "from a/b")
		expect(t, s, "k", "from root")
		if _, err := a.Get(ctx, []byte("k")); !errors.Is(err, persistence.ErrNotFound) {
			t.Errorf("namespace a sees key k of another namespace: %v", err)
		}
		// a holds its own key and, under the nested namespace's prefix
		// (length 1, "b"), the nested key; never the keys of "ab".
		if got := fmt.Sprintf("%q", scan(t, a, "")); got != `["\x01bk" "bk"]` {
			t.Errorf("scan of a: %s", got)
		}
		if got := scan(t, ab, ""); fmt.Sprint(got) != "[k]" {
			t.Errorf("scan of ab: %q", got)
		}
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		expect(t, ab, "k", "from ab") // closing a view leaves the store open
	})
	t.Run("cancelled context", func(t *testing.T) {
		s := open(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := s.Get(cctx, []byte("k")); !errors.Is(err, context.Canceled) {
			t.Errorf("get: %v", err)
		}
		var b persistence.Batch
		b.Put([]byte("k"), []byte("v"))
		if err := s.Apply(cctx, &b); !errors.Is(err, context.Canceled) {
			t.Errorf("apply: %v", err)
		}
		if _, err := s.Get(ctx, []byte("k")); !errors.Is(err, persistence.ErrNotFound) {
			t.Errorf("a cancelled apply wrote: %v", err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		s := open(t)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, []byte("k")); !errors.Is(err, persistence.ErrClosed) {
			t.Errorf("get after close: %v", err)
		}
		var b persistence.Batch
		b.Put([]byte("k"), []byte("v"))
		if err := s.Apply(ctx, &b); !errors.Is(err, persistence.ErrClosed) {
			t.Errorf("apply after close: %v", err)
		}
	})
}

func mustApply(t *testing.T, s persistence.Store, b *persistence.Batch) {
	t.Helper()
	if err := s.Apply(context.Background(), b); err != nil {
		t.Fatal(err)
	}
}

func put(t *testing.T, s persistence.Store, k, v string) {
	t.Helper()
	var b persistence.Batch
	b.Put([]byte(k), []byte(v))
	mustApply(t, s, &b)
}

func expect(t *testing.T, s persistence.Store, k, want string) {
	t.Helper()
	got, err := s.Get(context.Background(), []byte(k))
	if err != nil {
		t.Fatalf("get %q: %v", k, err)
	}
	if !bytes.Equal(got, []byte(want)) {
		t.Fatalf("get %q = %q, want %q", k, got, want)
	}
}

func scan(t *testing.T, s persistence.Store, prefix string) []string {
	t.Helper()
	var keys []string
	err := s.Scan(context.Background(), []byte(prefix), func(k, v []byte) error {
		keys = append(keys, string(k))
		return nil
	})
	if err != nil {
		t.Fatalf("scan %q: %v", prefix, err)
	}
	return keys
}
