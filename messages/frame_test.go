package messages_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"google.golang.org/protobuf/proto"

	"github.com/meshflow/meshflow/messages"
	"github.com/meshflow/meshflow/messages/pb"
)

var testSchema = arrow.NewSchema([]arrow.Field{
	{Name: "id", Type: arrow.PrimitiveTypes.Int64},
	{Name: "price", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
	{Name: "name", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "ok", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
	{Name: "at", Type: &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}},
	{Name: "small", Type: arrow.PrimitiveTypes.Int16, Nullable: true},
}, nil)

// testBatch builds n rows whose values derive from the row number, with a
// null in every fifth row of the nullable columns.
func testBatch(mem memory.Allocator, n int) arrow.RecordBatch {
	b := array.NewRecordBuilder(mem, testSchema)
	defer b.Release()
	for i := range n {
		b.Field(0).(*array.Int64Builder).Append(int64(i))
		if i%5 == 4 {
			b.Field(1).AppendNull()
			b.Field(2).AppendNull()
			b.Field(3).AppendNull()
			b.Field(5).AppendNull()
		} else {
			b.Field(1).(*array.Float64Builder).Append(float64(i) * 1.5)
			b.Field(2).(*array.StringBuilder).Append(strings.Repeat("x", i%13) + "é\"\n")
			b.Field(3).(*array.BooleanBuilder).Append(i%2 == 0)
			b.Field(5).(*array.Int16Builder).Append(int16(i - 100))
		}
		b.Field(4).(*array.TimestampBuilder).Append(arrow.Timestamp(1_700_000_000_000_000 + int64(i)*1000))
	}
	return b.NewRecordBatch()
}

func newMem(t testing.TB) *memory.CheckedAllocator {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	t.Cleanup(func() { mem.AssertSize(t, 0) })
	return mem
}

// positions returns n positions as a JetStream source makes them: stream
// sequences (shifted) with gaps and several rows of one message.
func positions(n int) []uint64 {
	pos := make([]uint64, n)
	seq := uint64(1000)
	for i := range pos {
		if i%3 == 0 {
			seq += uint64(1 + i%7)
		}
		pos[i] = seq<<24 | uint64(i%3)
	}
	return pos
}

func TestFrameRoundTrip(t *testing.T) {
	mem := newMem(t)
	full := testBatch(mem, 100)
	defer full.Release()
	sliced := full.NewSlice(17, 63)
	defer sliced.Release()
	empty := full.NewSlice(0, 0)
	defer empty.Release()

	cases := []struct {
		name string
		env  messages.Envelope
	}{
		{"batch", messages.Envelope{Kind: messages.KindBatch, Batch: full}},
		{"sliced batch", messages.Envelope{Kind: messages.KindBatch, Batch: sliced}},
		{"empty batch", messages.Envelope{Kind: messages.KindBatch, Batch: empty}},
		{"batch with positions", messages.LineageEnvelope(sliced, &messages.Lineage{Origin: "in", Pos: positions(46)})},
		{"batch with base", messages.LineageEnvelope(full, &messages.Lineage{Origin: "gen~ab12.0", Base: 1 << 40})},
		{"watermark", messages.WatermarkEnvelope(1_700_000_000_123_456)},
		{"min watermark", messages.WatermarkEnvelope(messages.MinWatermark)},
		{"barrier", messages.BarrierEnvelope(messages.Barrier{ID: 42, TimestampUs: 99})},
		{"end of stream", messages.EndOfStream()},
	}
	var enc messages.FrameEncoder
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			seq := uint64(i + 1)
			data, err := enc.Encode(seq, tc.env)
			if err != nil {
				t.Fatal(err)
			}
			gotSeq, got, err := messages.DecodeFrame(mem, data)
			if err != nil {
				t.Fatal(err)
			}
			defer got.Release()
			if gotSeq != seq || got.Kind != tc.env.Kind || got.Watermark != tc.env.Watermark || got.Barrier != tc.env.Barrier {
				t.Fatalf("decoded seq %d %+v, want seq %d %+v", gotSeq, got, seq, tc.env)
			}
			if tc.env.Kind == messages.KindBatch && !array.RecordEqual(got.Batch, tc.env.Batch) {
				t.Fatalf("batch differs after the round trip")
			}
			if want := tc.env.Lineage; want != nil {
				if got.Lineage == nil || got.Lineage.Origin != want.Origin {
					t.Fatalf("lineage %+v, want %+v", got.Lineage, want)
				}
				for r := 0; r < int(tc.env.Rows()); r++ {
					if got.Lineage.At(r) != want.At(r) {
						t.Fatalf("row %d at position %d, want %d", r, got.Lineage.At(r), want.At(r))
					}
				}
			} else if got.Lineage != nil {
				t.Fatalf("lineage %+v appeared", got.Lineage)
			}
		})
	}
}

func TestDecodeFrameRejects(t *testing.T) {
	mem := newMem(t)
	rec := testBatch(mem, 10)
	defer rec.Release()
	good, err := messages.EncodeFrame(3, messages.BatchEnvelope(rec))
	if err != nil {
		t.Fatal(err)
	}
	wm, _ := messages.EncodeFrame(1, messages.WatermarkEnvelope(5))
	two := testBatch(mem, 2)
	defer two.Release()
	body, _ := messages.EncodeIPC(two)
	hdr, _ := proto.Marshal(&pb.Frame{Seq: 3, Kind: pb.Kind_KIND_BATCH, Rows: 10})
	lying := append(append([]byte{'M', 'F', 1, byte(len(hdr))}, hdr...), body...)
	frame := func(h *pb.Frame) []byte {
		b, _ := proto.Marshal(h)
		return append(append([]byte{'M', 'F', 1, byte(len(b))}, b...), body...)
	}
	shortLineage := frame(&pb.Frame{Seq: 3, Kind: pb.Kind_KIND_BATCH, Rows: 2, LineageOrigin: "in", LineageDeltas: []int64{5}})
	noOrigin := frame(&pb.Frame{Seq: 3, Kind: pb.Kind_KIND_BATCH, Rows: 2, LineageDeltas: []int64{5, 1}})
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "no frame magic"},
		{"wrong magic", append([]byte("XX"), good[2:]...), "no frame magic"},
		{"wrong version", append([]byte{'M', 'F', 9}, good[3:]...), "version 9"},
		{"truncated header", good[:5], "header"},
		{"truncated body", good[:len(good)/2], "arrow ipc"},
		{"body on a watermark", append(bytes.Clone(wm), 1, 2, 3), "body"},
		{"rows disagree", lying, "header says one batch of 10 rows"},
		{"positions disagree with rows", shortLineage, "1 lineage positions for 2 rows"},
		{"positions without an origin", noOrigin, "without an origin"},
		{"unknown kind", []byte{'M', 'F', 1, 2, 0x10, 9}, "unknown kind"},
		{"huge header length", []byte{'M', 'F', 1, 0xff, 0xff, 0xff, 0xff, 0x0f}, "header length"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, env, err := messages.DecodeFrame(mem, tc.data)
			if err == nil {
				env.Release()
				t.Fatal("decoded a bad frame")
			}
			if !errors.Is(err, messages.ErrBadFrame) {
				t.Fatalf("error %v does not wrap ErrBadFrame", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

// FuzzDecodeFrame checks that no input makes DecodeFrame panic or leak, and
// that whatever it accepts encodes back to a frame that decodes the same.
func FuzzDecodeFrame(f *testing.F) {
	mem := memory.NewGoAllocator()
	rec := testBatch(mem, 7)
	defer rec.Release()
	for i, env := range []messages.Envelope{
		messages.BatchEnvelope(rec), messages.WatermarkEnvelope(7),
		messages.BarrierEnvelope(messages.Barrier{ID: 1}), messages.EndOfStream(),
	} {
		b, err := messages.EncodeFrame(uint64(i+1), env)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("MF\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
		defer mem.AssertSize(t, 0)
		seq, env, err := messages.DecodeFrame(mem, data)
		if err != nil {
			return
		}
		defer env.Release()
		again, err := messages.EncodeFrame(seq, env)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		seq2, env2, err := messages.DecodeFrame(mem, again)
		if err != nil {
			t.Fatalf("decode of re-encoded frame: %v", err)
		}
		defer env2.Release()
		if seq2 != seq || env2.Kind != env.Kind || env2.Watermark != env.Watermark || env2.Barrier != env.Barrier {
			t.Fatalf("round trip changed the frame")
		}
		if env.Kind == messages.KindBatch {
			// Touch every value: a batch that passed validation must be safe
			// to read.
			enc, err := messages.NewJSONRowEncoder(env.Batch.Schema())
			if err == nil {
				var buf []byte
				for r := range int(env.Batch.NumRows()) {
					buf = enc.AppendRow(buf[:0], env.Batch, r)
				}
			}
		}
	})
}

// FuzzDecodeIPC checks that no input makes DecodeIPC panic or leak.
func FuzzDecodeIPC(f *testing.F) {
	mem := memory.NewGoAllocator()
	rec := testBatch(mem, 9)
	defer rec.Release()
	b, err := messages.EncodeIPC(rec)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add(b[:len(b)/3])
	f.Fuzz(func(t *testing.T, data []byte) {
		mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
		defer mem.AssertSize(t, 0)
		recs, _, err := messages.DecodeIPC(mem, data)
		if err != nil {
			return
		}
		for _, r := range recs {
			if err := messages.Validate(r); err != nil {
				t.Fatalf("accepted an invalid batch: %v", err)
			}
			r.Release()
		}
	})
}

func TestSplitBatch(t *testing.T) {
	mem := newMem(t)
	rec := testBatch(mem, 5000)
	defer rec.Release()
	whole, err := messages.EncodeIPC(rec)
	if err != nil {
		t.Fatal(err)
	}
	for _, max := range []int{len(whole) * 2, len(whole) / 2, len(whole) / 7, 8 << 10, 3 << 10} {
		parts, err := messages.SplitBatch(rec, max)
		if err != nil {
			t.Fatalf("max %d: %v", max, err)
		}
		var rows int64
		var enc messages.FrameEncoder
		for i, p := range parts {
			frame, err := enc.Encode(uint64(i+1), messages.Envelope{Kind: messages.KindBatch, Batch: p})
			if err != nil {
				t.Fatal(err)
			}
			if len(frame) > max {
				t.Errorf("max %d: part %d is a %d-byte frame", max, i, len(frame))
			}
			want := rec.NewSlice(rows, rows+p.NumRows())
			if !array.RecordEqual(want, p) {
				t.Errorf("max %d: part %d differs from rows %d..%d", max, i, rows, rows+p.NumRows())
			}
			want.Release()
			rows += p.NumRows()
			p.Release()
		}
		if rows != rec.NumRows() {
			t.Errorf("max %d: parts hold %d rows, want %d", max, rows, rec.NumRows())
		}
		if max >= len(whole)*2 && len(parts) != 1 {
			t.Errorf("max %d: split a batch that fits into %d parts", max, len(parts))
		}
	}
	if _, err := messages.SplitBatch(rec, 100); err == nil {
		t.Error("split under the frame overhead")
	}
}

func TestSplitBatchRowTooLarge(t *testing.T) {
	mem := newMem(t)
	sch := arrow.NewSchema([]arrow.Field{{Name: "s", Type: arrow.BinaryTypes.String}}, nil)
	b := array.NewRecordBuilder(mem, sch)
	defer b.Release()
	b.Field(0).(*array.StringBuilder).AppendValues([]string{"a", strings.Repeat("b", 20000), "c"}, nil)
	rec := b.NewRecordBatch()
	defer rec.Release()
	_, err := messages.SplitBatch(rec, 10000)
	if err == nil || !strings.Contains(err.Error(), "row 1") {
		t.Fatalf("got %v, want an error naming row 1", err)
	}
}

func TestConform(t *testing.T) {
	mem := newMem(t)
	rec := testBatch(mem, 10)
	defer rec.Release()
	strict := arrow.NewSchema(append([]arrow.Field(nil), testSchema.Fields()...), nil)
	notNull := arrow.NewSchema([]arrow.Field{
		testSchema.Field(0), {Name: "price", Type: arrow.PrimitiveTypes.Float64},
		testSchema.Field(2), testSchema.Field(3), testSchema.Field(4), testSchema.Field(5),
	}, nil)
	retyped := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int32},
		testSchema.Field(1), testSchema.Field(2), testSchema.Field(3), testSchema.Field(4), testSchema.Field(5),
	}, nil)
	renamed := arrow.NewSchema([]arrow.Field{
		{Name: "ident", Type: arrow.PrimitiveTypes.Int64},
		testSchema.Field(1), testSchema.Field(2), testSchema.Field(3), testSchema.Field(4), testSchema.Field(5),
	}, nil)
	short := arrow.NewSchema(testSchema.Fields()[:2], nil)
	cases := []struct {
		name string
		want *arrow.Schema
		err  string
	}{
		{"same", testSchema, ""},
		{"equal copy", strict, ""},
		{"not null with nulls", notNull, `field "price" is not nullable but holds 2 nulls`},
		{"retyped", retyped, `field "id" is int64, want int32`},
		{"renamed", renamed, `field 0 is "id", want "ident"`},
		{"fewer fields", short, "6 fields, want 2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := messages.Conform(tc.want, rec)
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				defer got.Release()
				if got.Schema() != tc.want {
					t.Fatal("conformed batch does not carry the declared schema")
				}
				return
			}
			if err == nil {
				got.Release()
				t.Fatalf("accepted; want %q", tc.err)
			}
			if !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %q does not contain %q", err, tc.err)
			}
		})
	}
}

// TestIdleEnvelope: the idle marker survives a frame round trip and is told
// apart from every real watermark.
func TestIdleEnvelope(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	cases := []struct {
		env  messages.Envelope
		idle bool
	}{
		{messages.IdleEnvelope(), true},
		{messages.WatermarkEnvelope(messages.MinWatermark + 1), false},
		{messages.WatermarkEnvelope(0), false},
		{messages.WatermarkEnvelope(messages.MaxWatermark), false},
		{messages.EndOfStream(), false},
	}
	for _, tc := range cases {
		b, err := messages.EncodeFrame(1, tc.env)
		if err != nil {
			t.Fatal(err)
		}
		_, got, err := messages.DecodeFrame(mem, b)
		if err != nil {
			t.Fatal(err)
		}
		if got.IsIdle() != tc.idle || tc.env.IsIdle() != tc.idle {
			t.Errorf("%v %d: IsIdle %v after the round trip, %v before, want %v", tc.env.Kind, tc.env.Watermark, got.IsIdle(), tc.env.IsIdle(), tc.idle)
		}
	}
}
