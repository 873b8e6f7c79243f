package kernels_test

import (
	"errors"
	"math"
	"regexp"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/kernels"
)

func TestStringKernels(t *testing.T) {
	str, large := arrow.BinaryTypes.String, arrow.BinaryTypes.LargeString
	re := regexp.MustCompile(`/item/(\d+)(?:\?q=(\w+))?`)
	in := []any{"http://x/item/12?q=ab", nil, "", "HeLLo Wörld", "http://x/item/7", "none"}
	cases := []struct {
		name string
		run  func(mem memory.Allocator, a arrow.Array) (arrow.Array, error)
		want []any
	}{
		{"contains", func(mem memory.Allocator, a arrow.Array) (arrow.Array, error) {
			return kernels.MatchString(mem, kernels.Contains, a, []byte("item"))
		}, []any{true, nil, false, false, true, false}},
		{"contains empty", func(mem memory.Allocator, a arrow.Array) (arrow.Array, error) {
			return kernels.MatchString(mem, kernels.Contains, a, nil)
		}, []any{true, nil, true, true, true, true}},
		{"prefix", func(mem memory.Allocator, a arrow.Array) (arrow.Array, error) {
			return kernels.MatchString(mem, kernels.HasPrefix, a, []byte("http:"))
		}, []any{true, nil, false, false, true, false}},
		{"suffix", func(mem memory.Allocator, a arrow.Array) (arrow.Array, error) {
			return kernels.MatchString(mem, kernels.HasSuffix, a, []byte("ne"))
		}, []any{false, nil, false, false, false, true}},
		{"lower", func(mem memory.Allocator, a arrow.Array) (arrow.Array, error) {
			return kernels.MapCase(mem, kernels.Lower, a)
		}, []any{"http://x/item/12?q=ab", nil, "", "hello wörld", "http://x/item/7", "none"}},
		{"upper", func(mem memory.Allocator, a arrow.Array) (arrow.Array, error) {
			return kernels.MapCase(mem, kernels.Upper, a)
		}, []any{"HTTP://X/ITEM/12?Q=AB", nil, "", "HELLO WÖRLD", "HTTP://X/ITEM/7", "NONE"}},
		{"extract 1", func(mem memory.Allocator, a arrow.Array) (arrow.Array, error) {
			return kernels.RegexpExtract(mem, a, re, 1)
		}, []any{"12", nil, nil, nil, "7", nil}},
		{"extract 2 unmatched group", func(mem memory.Allocator, a arrow.Array) (arrow.Array, error) {
			return kernels.RegexpExtract(mem, a, re, 2)
		}, []any{"ab", nil, nil, nil, nil, nil}},
	}
	for _, dt := range []arrow.DataType{str, large} {
		for _, c := range cases {
			for _, off := range []int{0, 1} {
				t.Run(dt.String()+"/"+c.name, func(t *testing.T) {
					mem := newTestAllocator()
					defer mem.AssertSize(t, 0)
					vals := append([]any{"pad"}, in...)[1-off:]
					a := slicedArray(mem, dt, vals, off, len(in))
					defer a.Release()
					got, err := c.run(mem, a)
					if err != nil {
						t.Fatal(err)
					}
					defer got.Release()
					checkValues(t, c.name, got, c.want)
					empty := slicedArray(mem, dt, vals, 0, 0)
					defer empty.Release()
					e, err := c.run(mem, empty)
					if err != nil {
						t.Fatal(err)
					}
					checkValues(t, c.name+" empty", e, []any{})
					e.Release()
				})
			}
		}
	}
}

// TestMapCaseASCII checks the byte-wise path on every ASCII byte.
func TestMapCaseASCII(t *testing.T) {
	mem := newTestAllocator()
	defer mem.AssertSize(t, 0)
	var b strings.Builder
	for c := range 128 {
		b.WriteByte(byte(c))
	}
	s := b.String()
	a := build(mem, arrow.BinaryTypes.String, []any{s, s[:60]})
	defer a.Release()
	for _, c := range []struct {
		m kernels.CaseMap
		f func(string) string
	}{{kernels.Lower, strings.ToLower}, {kernels.Upper, strings.ToUpper}} {
		got, err := kernels.MapCase(mem, c.m, a)
		if err != nil {
			t.Fatal(err)
		}
		checkValues(t, "case", got, []any{c.f(s), c.f(s[:60])})
		got.Release()
	}
}

func TestStringKernelErrors(t *testing.T) {
	mem := newTestAllocator()
	defer mem.AssertSize(t, 0)
	ints := build(mem, i64, []any{int64(1)})
	defer ints.Release()
	if _, err := kernels.MatchString(mem, kernels.Contains, ints, nil); !errors.Is(err, kernels.ErrUnsupportedType) {
		t.Errorf("contains on int64: %v", err)
	}
	if _, err := kernels.MapCase(mem, kernels.Lower, ints); !errors.Is(err, kernels.ErrUnsupportedType) {
		t.Errorf("lower on int64: %v", err)
	}
	s := build(mem, arrow.BinaryTypes.String, []any{"a"})
	defer s.Release()
	if _, err := kernels.RegexpExtract(mem, s, regexp.MustCompile("a"), 1); !errors.Is(err, kernels.ErrInvalidArgument) {
		t.Errorf("group 1 of a group-less regexp: %v", err)
	}
}

func TestTruncateTime(t *testing.T) {
	cases := []struct {
		name    string
		step    int64
		in      []any
		want    []any
		wantErr error
	}{
		{"minute", 60000, []any{int64(45296789), int64(60000), int64(0), nil}, []any{int64(45240000), int64(60000), int64(0), nil}, nil},
		{"before epoch floors", 1000, []any{int64(-1), int64(-1000), int64(-1001)}, []any{int64(-1000), int64(-1000), int64(-2000)}, nil},
		{"step 1", 1, []any{int64(5)}, []any{int64(5)}, nil},
		{"max", 10, []any{int64(math.MaxInt64)}, []any{int64(math.MaxInt64 - 7)}, nil},
		{"wraps", 10, []any{int64(math.MinInt64)}, nil, kernels.ErrOverflow},
		{"empty", 1000, []any{}, []any{}, nil},
		{"bad step", 0, []any{int64(1)}, nil, kernels.ErrInvalidArgument},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mem := newTestAllocator()
			defer mem.AssertSize(t, 0)
			a := build(mem, tsMs, c.in)
			defer a.Release()
			got, err := kernels.TruncateTime(mem, a, c.step)
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("err = %v, want %v", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer got.Release()
			if !arrow.TypeEqual(got.DataType(), tsMs) {
				t.Fatalf("type %s", got.DataType())
			}
			checkValues(t, "truncate", got, c.want)
		})
	}
}

// TestTruncateTimeNullRowWraps: a value under a null that would wrap is
// not an error.
func TestTruncateTimeNullRowWraps(t *testing.T) {
	mem := newTestAllocator()
	defer mem.AssertSize(t, 0)
	vals := memory.NewResizableBuffer(mem)
	vals.Resize(16)
	copy(vals.Bytes(), arrow.Int64Traits.CastToBytes([]int64{math.MinInt64, 15}))
	valid := memory.NewResizableBuffer(mem)
	valid.Resize(1)
	valid.Bytes()[0] = 0b10
	data := array.NewData(tsMs, 2, []*memory.Buffer{valid, vals}, nil, 1, 0)
	vals.Release()
	valid.Release()
	a := array.MakeFromData(data)
	data.Release()
	defer a.Release()
	got, err := kernels.TruncateTime(mem, a, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Release()
	checkValues(t, "truncate", got, []any{nil, int64(10)})
}
