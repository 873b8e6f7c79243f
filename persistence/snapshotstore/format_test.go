package snapshotstore_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/meshflow/meshflow/persistence"
	"github.com/meshflow/meshflow/persistence/memstore"
	"github.com/meshflow/meshflow/persistence/snapshotstore"
)

type kv struct{ k, v string }

// listSnapshot is a persistence.Snapshot over a fixed list of entries, for
// entries no store can hold (an empty key, an oversized key).
type listSnapshot []kv

func (l listSnapshot) Scan(ctx context.Context, fn func(k, v []byte) error) error {
	for _, e := range l {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn([]byte(e.k), []byte(e.v)); err != nil {
			return err
		}
	}
	return nil
}

func (listSnapshot) Close() error { return nil }

func encode(t testing.TB, meta []byte, snap persistence.Snapshot) []byte {
	t.Helper()
	var buf bytes.Buffer
	n, err := snapshotstore.Encode(context.Background(), &buf, meta, snap)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) {
		t.Fatalf("Encode returned %d, wrote %d bytes", n, buf.Len())
	}
	return buf.Bytes()
}

func entries(t testing.TB, r *snapshotstore.Reader) []kv {
	t.Helper()
	var out []kv
	if err := r.Entries(func(k, v []byte) error {
		out = append(out, kv{string(k), string(v)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestEncodeDecode(t *testing.T) {
	big := strings.Repeat("v", 300<<10) // larger than Encode's buffer
	tests := []struct {
		name    string
		meta    string
		entries []kv
	}{
		{"empty", "", nil},
		{"meta only", "timers and watermarks", nil},
		{"one", "m", []kv{{"\x00k", "v"}}},
		{"empty values", "", []kv{{"\x00a", ""}, {"\x00b", ""}}},
		{"binary", "\x00\xff", []kv{{"\x00\x00", "\x00"}, {"\x01\x01a\x00\xff", "\xff\xff"}}},
		{"large value", big, []kv{{"\x00a", big}, {"\x00b", "small"}, {"\x00c", big + big}}},
		{"max key", "", []kv{{strings.Repeat("k", snapshotstore.MaxKeySize), "v"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := encode(t, []byte(tt.meta), listSnapshot(tt.entries))
			r, err := snapshotstore.Decode(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if string(r.Meta()) != tt.meta {
				t.Fatalf("meta = %.20q, want %.20q", r.Meta(), tt.meta)
			}
			if got := entries(t, r); !slices.Equal(got, tt.entries) {
				t.Fatalf("entries differ: got %d, want %d", len(got), len(tt.entries))
			}
			if r.Len() != len(tt.entries) || r.Size() != len(data) {
				t.Fatalf("Len, Size = %d, %d; want %d, %d", r.Len(), r.Size(), len(tt.entries), len(data))
			}
		})
	}
}

// TestEncodeLayout pins the format of the package documentation, byte by
// byte.
func TestEncodeLayout(t *testing.T) {
	data := encode(t, []byte("M"), listSnapshot{{"\x00k", "val"}})
	want := []byte("MFSNAP\x01" + "\x01M" + "\x02\x00k\x03val" + "\x00" + "\x01")
	want = binary.LittleEndian.AppendUint32(want, crc32.Checksum(want, crc32.MakeTable(crc32.Castagnoli)))
	if !bytes.Equal(data, want) {
		t.Fatalf("encoding\n got %q\nwant %q", data, want)
	}
}

// TestEncodeFromStore encodes a snapshot of a namespace of a store.
func TestEncodeFromStore(t *testing.T) {
	ctx := context.Background()
	s := memstore.New()
	defer s.Close()
	ns := s.Namespace("op")
	var b persistence.Batch
	b.Put([]byte("b"), []byte("2"))
	b.Put([]byte("a"), []byte("1"))
	if err := ns.Apply(ctx, &b); err != nil {
		t.Fatal(err)
	}
	snap, err := persistence.OpenSnapshot(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	r, err := snapshotstore.Decode(bytes.NewReader(encode(t, nil, snap)))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := entries(t, r), []kv{{"\x00a", "1"}, {"\x00b", "2"}}; !slices.Equal(got, want) {
		t.Fatalf("entries = %q, want %q", got, want)
	}
}

// TestEncodeStreams: Encode's allocations do not grow with the snapshot
// (a memstore snapshot scan allocates nothing).
func TestEncodeStreams(t *testing.T) {
	ctx := context.Background()
	s := memstore.New()
	defer s.Close()
	var b persistence.Batch
	val := bytes.Repeat([]byte("v"), 100)
	for i := range 50000 {
		b.Put(fmt.Appendf(nil, "key-%08d", i), val)
	}
	if err := s.Apply(ctx, &b); err != nil {
		t.Fatal(err)
	}
	snap, err := persistence.OpenSnapshot(s)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	n, err := snapshotstore.Encode(ctx, io.Discard, nil, snap)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
		t.Fatalf("Encode of %d bytes allocated %d bytes", n, alloc)
	}
}

func TestEncodeErrors(t *testing.T) {
	ctx := context.Background()
	closed, err := persistence.OpenSnapshot(memstore.New())
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	writeErr := errors.New("disk full")
	tests := []struct {
		name string
		ctx  context.Context
		w    func() *failWriter
		snap persistence.Snapshot
		want string
		is   error
	}{
		{"empty key", ctx, nil, listSnapshot{{"\x00a", "1"}, {"", "v"}}, "empty key", nil},
		{"key too large", ctx, nil, listSnapshot{{strings.Repeat("k", snapshotstore.MaxKeySize+1), ""}}, "larger than", nil},
		{"closed snapshot", ctx, nil, closed, "", persistence.ErrClosed},
		{"ctx done", cancelled, nil, listSnapshot{{"\x00a", "1"}}, "", context.Canceled},
		{"write fails", ctx, func() *failWriter { return &failWriter{err: writeErr} }, listSnapshot{{"\x00a", "1"}}, "", writeErr},
		{"write fails late", ctx, func() *failWriter { return &failWriter{after: 200 << 10, err: writeErr} },
			listSnapshot{{"\x00a", strings.Repeat("x", 150<<10)}, {"\x00b", strings.Repeat("x", 150<<10)}}, "", writeErr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &failWriter{after: 1 << 40}
			if tt.w != nil {
				w = tt.w()
			}
			_, err := snapshotstore.Encode(tt.ctx, w, []byte("meta"), tt.snap)
			if err == nil || !strings.Contains(err.Error(), tt.want) || (tt.is != nil && !errors.Is(err, tt.is)) {
				t.Fatalf("Encode = %v, want an error containing %q, wrapping %v", err, tt.want, tt.is)
			}
		})
	}
}

// failWriter accepts after bytes, then fails with err.
type failWriter struct {
	after int
	err   error
}

func (w *failWriter) Write(p []byte) (int, error) {
	if len(p) <= w.after {
		w.after -= len(p)
		return len(p), nil
	}
	n := w.after
	w.after = 0
	return n, w.err
}

// valid is an object with meta and three entries, for the corruption cases.
func valid(t testing.TB) []byte {
	return encode(t, []byte("meta"), listSnapshot{{"\x00a", "1"}, {"\x00bb", "22"}, {"\x01\x01n\x00c", "333"}})
}

// reseal recomputes the checksum of data, so that a change to it is only
// caught by the structure checks.
func reseal(data []byte) []byte {
	body := data[:len(data)-4]
	return binary.LittleEndian.AppendUint32(slices.Clone(body), crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)))
}

func TestDecodeErrors(t *testing.T) {
	v := valid(t)
	with := func(i int, b byte) []byte {
		d := slices.Clone(v)
		d[i] = b
		return d
	}
	metaEnd := 7 + 1 + 4
	tests := []struct {
		name string
		data []byte
		is   error
		want string
	}{
		{"empty", nil, snapshotstore.ErrCorrupt, "not a snapshot object"},
		{"not a snapshot", []byte("{\"json\": true}"), snapshotstore.ErrCorrupt, "not a snapshot object"},
		{"header only", []byte("MFSNAP"), snapshotstore.ErrCorrupt, "truncated"},
		{"version 2", with(6, 2), snapshotstore.ErrVersion, "version 2"},
		{"bit flip in meta", with(9, 'x'), snapshotstore.ErrCorrupt, "checksum mismatch"},
		{"bit flip in a value", with(metaEnd+4, '9'), snapshotstore.ErrCorrupt, "checksum mismatch"},
		{"bit flip in the checksum", with(len(v)-1, v[len(v)-1]^1), snapshotstore.ErrCorrupt, "checksum mismatch"},
		{"meta length lies", reseal(with(7, 0x7f)), snapshotstore.ErrCorrupt, "meta length"},
		{"huge meta length", reseal(slices.Concat(v[:7], binary.AppendUvarint(nil, 1<<40), v[8:])), snapshotstore.ErrCorrupt, "larger than"},
		{"key length lies", reseal(with(metaEnd, 0x70)), snapshotstore.ErrCorrupt, "key length of entry 0"},
		{"bad varint", reseal(slices.Concat(v[:metaEnd], bytes.Repeat([]byte{0xff}, 11), v[metaEnd:])), snapshotstore.ErrCorrupt, "not a valid varint"},
		{"count lies", reseal(with(len(v)-5, 7)), snapshotstore.ErrCorrupt, "trailer says 7"},
		{"trailing bytes", append(slices.Clone(v), 0), snapshotstore.ErrCorrupt, ""},
		{"trailing bytes resealed", reseal(slices.Concat(v[:len(v)-4], []byte{0}, v[len(v)-4:])), snapshotstore.ErrCorrupt, "after the end"},
	}
	for cut := range len(v) {
		tests = append(tests, struct {
			name string
			data []byte
			is   error
			want string
		}{fmt.Sprintf("truncated at %d", cut), v[:cut], snapshotstore.ErrCorrupt, ""})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := snapshotstore.Decode(bytes.NewReader(tt.data))
			if !errors.Is(err, tt.is) || !strings.Contains(fmt.Sprint(err), tt.want) {
				t.Fatalf("Decode = %v, %v; want an error wrapping %v containing %q", r, err, tt.is, tt.want)
			}
		})
	}
	if _, err := snapshotstore.Decode(bytes.NewReader(v)); err != nil {
		t.Fatalf("the valid object does not decode: %v", err)
	}
}

// TestDecodeBoundedAllocation: lengths that lie (up to the format's limits)
// in a small object make Decode allocate nothing near what they announce.
func TestDecodeBoundedAllocation(t *testing.T) {
	v := valid(t)
	metaEnd := 7 + 1 + 4
	for _, tt := range []struct {
		name string
		data []byte
	}{
		{"meta", reseal(slices.Concat(v[:7], binary.AppendUvarint(nil, snapshotstore.MaxMetaSize), v[8:]))},
		{"key", reseal(slices.Concat(v[:metaEnd], binary.AppendUvarint(nil, snapshotstore.MaxKeySize), v[metaEnd+1:]))},
		{"value", reseal(slices.Concat(v[:metaEnd+3], binary.AppendUvarint(nil, snapshotstore.MaxValueSize), v[metaEnd+4:]))},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := snapshotstore.Decode(bytes.NewReader(tt.data))
			runtime.ReadMemStats(&after)
			if !errors.Is(err, snapshotstore.ErrCorrupt) {
				t.Fatalf("Decode = %v, want ErrCorrupt", err)
			}
			if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
				t.Fatalf("Decode of %d bytes allocated %d bytes", len(tt.data), n)
			}
		})
	}
}

// FuzzDecode checks that Decode never panics and, when it accepts an
// object, that its content encodes to an object that decodes to the same
// content. Run it with: go test -fuzz FuzzDecode ./persistence/snapshotstore/
func FuzzDecode(f *testing.F) {
	f.Add(valid(f))
	f.Add(encode(f, nil, listSnapshot(nil)))
	f.Add(encode(f, []byte("m"), listSnapshot{{"\x00" + strings.Repeat("k", 200), strings.Repeat("v", 300)}}))
	f.Add([]byte("MFSNAP\x01"))
	f.Add([]byte("MFSNAP\x01\xff\xff\xff\xff\x0f"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := snapshotstore.Decode(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, snapshotstore.ErrCorrupt) && !errors.Is(err, snapshotstore.ErrVersion) {
				t.Fatalf("error %v wraps neither ErrCorrupt nor ErrVersion", err)
			}
			return
		}
		got := entries(t, r)
		if len(got) != r.Len() {
			t.Fatalf("Entries gave %d, Len = %d", len(got), r.Len())
		}
		again, err := snapshotstore.Decode(bytes.NewReader(encode(t, r.Meta(), listSnapshot(got))))
		if err != nil {
			t.Fatalf("re-encoded object does not decode: %v", err)
		}
		if !bytes.Equal(again.Meta(), r.Meta()) || !slices.Equal(entries(t, again), got) {
			t.Fatal("re-encoded object differs")
		}
	})
}
