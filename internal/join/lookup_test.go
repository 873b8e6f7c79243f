package join

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

var tableSchema = arrow.NewSchema(append(rightSchema.Fields(),
	arrow.Field{Name: "del", Type: arrow.FixedWidthTypes.Boolean, Nullable: true}), nil)

// trow is a row of the table stream; del deletes its key.
type trow struct {
	row
	del bool
}

func buildTable(mem memory.Allocator, rows []trow) arrow.RecordBatch {
	plain := make([]row, len(rows))
	db := array.NewBooleanBuilder(mem)
	defer db.Release()
	for i, r := range rows {
		plain[i] = r.row
		if i%7 == 3 && !r.del {
			db.AppendNull() // null: not a delete
		} else {
			db.Append(r.del)
		}
	}
	rec := build(mem, rightSchema, plain)
	defer rec.Release()
	del := db.NewArray()
	defer del.Release()
	return array.NewRecordBatch(tableSchema, append(slices.Clone(rec.Columns()), del), rec.NumRows())
}

func lookupCfg(outer bool) LookupConfig {
	return LookupConfig{
		Probe:  Side{Schema: leftSchema, Keys: []int{0}},
		Table:  Side{Schema: tableSchema, Keys: []int{0}},
		Delete: 4,
		Outer:  outer,
	}
}

func TestLookupCases(t *testing.T) {
	a, b := sp("a"), sp("b")
	for _, tc := range []struct {
		name         string
		table        [][]trow
		probe        []row
		inner, outer []string
		keys         int
	}{
		{"match", [][]trow{{{row{a, nil, 1}, false}}}, []row{{a, nil, 10}, {b, nil, 11}}, []string{"10-1"}, []string{"10-1", "11-"}, 1},
		{"later replaces", [][]trow{{{row{a, nil, 1}, false}, {row{a, nil, 2}, false}}, {{row{b, nil, 3}, false}}, {{row{a, nil, 4}, false}}},
			[]row{{a, nil, 10}, {b, nil, 11}, {a, nil, 12}}, []string{"10-4", "11-3", "12-4"}, []string{"10-4", "11-3", "12-4"}, 2},
		{"delete", [][]trow{{{row{a, nil, 1}, false}, {row{b, nil, 2}, false}}, {{row{a, nil, 3}, true}}},
			[]row{{a, nil, 10}, {b, nil, 11}}, []string{"11-2"}, []string{"10-", "11-2"}, 1},
		{"delete then insert in one batch", [][]trow{{{row{a, nil, 1}, false}, {row{a, nil, 2}, true}, {row{a, nil, 3}, false}}},
			[]row{{a, nil, 10}}, []string{"10-3"}, []string{"10-3"}, 1},
		{"delete of a missing key", [][]trow{{{row{a, nil, 1}, true}}}, []row{{a, nil, 10}}, nil, []string{"10-"}, 0},
		{"null keys never join", [][]trow{{{row{nil, nil, 1}, false}}}, []row{{nil, nil, 10}}, nil, []string{"10-"}, 0},
		{"empty", nil, nil, nil, nil, 0},
		{"empty table", nil, []row{{a, nil, 10}}, nil, []string{"10-"}, 0},
	} {
		for _, outer := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/outer=%v", tc.name, outer), func(t *testing.T) {
				mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
				defer mem.AssertSize(t, 0)
				j, err := NewLookup(mem, lookupCfg(outer))
				if err != nil {
					t.Fatal(err)
				}
				defer j.Close()
				for _, batch := range tc.table {
					rec := buildTable(mem, batch)
					err := j.Upsert(mem, rec)
					rec.Release()
					if err != nil {
						t.Fatal(err)
					}
				}
				if j.Len() != tc.keys {
					t.Fatalf("%d keys, want %d", j.Len(), tc.keys)
				}
				p := build(mem, leftSchema, tc.probe)
				defer p.Release()
				out, err := j.Probe(mem, p)
				if err != nil {
					t.Fatal(err)
				}
				got := pairsOf(t, out, "left_id", "right_id")
				if out != nil {
					out.Release()
				}
				want := tc.inner
				if outer {
					want = tc.outer
				}
				if !slices.Equal(got, want) {
					t.Fatalf("got %v, want %v", got, want)
				}
			})
		}
	}
}

func TestLookupConfig(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	for _, c := range []LookupConfig{
		func() LookupConfig { c := lookupCfg(false); c.Delete = 2; return c }(),
		func() LookupConfig { c := lookupCfg(false); c.Delete = 9; return c }(),
		func() LookupConfig { c := lookupCfg(false); c.Probe.Keys = []int{2}; return c }(),
	} {
		if j, err := NewLookup(mem, c); err == nil {
			j.Close()
			t.Errorf("%+v: no error", c)
		}
	}
}

// TestLookupRandom: random upserts and deletes over a few keys in random
// batches, interleaved with random probes: every probe's output is, row
// for row in the probe's order, what a map of the latest row per key
// gives, for inner and left-outer joins; the rows retained stay bounded by
// the compaction rule; checkpoints and restores (Buffered, Restore) among
// them change nothing.
func TestLookupRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 4))
	for _, outer := range []bool{false, true} {
		t.Run(fmt.Sprintf("outer=%v", outer), func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			j, err := NewLookup(mem, lookupCfg(outer))
			if err != nil {
				t.Fatal(err)
			}
			defer func() { j.Close() }()
			j.compactMin = 64 // compact often
			ref := map[string]int64{}
			id := int64(0)
			key := func() *string {
				if r.IntN(30) == 0 {
					return nil
				}
				return sp("k" + strconv.Itoa(r.IntN(200)))
			}
			matched := 0
			restores := 0
			for step := range 300 {
				if step%40 == 39 {
					// A checkpoint and a restore: the new table answers as
					// the old one would have.
					j = restoredLookup(t, mem, j, lookupCfg(outer))
					j.compactMin = 64
					if j.Len() != len(ref) {
						t.Fatalf("restored: %d keys, want %d", j.Len(), len(ref))
					}
					restores++
				}
				if r.IntN(2) == 0 {
					batch := make([]trow, r.IntN(100))
					for i := range batch {
						id++
						batch[i] = trow{row{key(), nil, id}, r.IntN(6) == 0}
						if k := batch[i].key; k != nil {
							if batch[i].del {
								delete(ref, *k)
							} else {
								ref[*k] = id
							}
						}
					}
					rec := buildTable(mem, batch)
					err := j.Upsert(mem, rec)
					rec.Release()
					if err != nil {
						t.Fatal(err)
					}
					if j.Len() != len(ref) {
						t.Fatalf("%d keys, want %d", j.Len(), len(ref))
					}
					if n := j.segs.retainedRows(); n > max(j.compactMin, 2*int64(len(ref))+1)+1 {
						t.Fatalf("%d rows retained for %d keys", n, len(ref))
					}
					continue
				}
				probe := make([]row, r.IntN(100))
				var want []string
				for i := range probe {
					probe[i] = row{key(), nil, int64(1e6 + i)}
					if probe[i].key != nil {
						if v, ok := ref[*probe[i].key]; ok {
							want = append(want, fmt.Sprintf("%d-%d", probe[i].id, v))
							matched++
							continue
						}
					}
					if outer {
						want = append(want, fmt.Sprintf("%d-", probe[i].id))
					}
				}
				p := build(mem, leftSchema, probe)
				out, err := j.Probe(mem, p)
				p.Release()
				if err != nil {
					t.Fatal(err)
				}
				got := pairsOf(t, out, "left_id", "right_id")
				if out != nil {
					out.Release()
				}
				if !slices.Equal(got, want) {
					t.Fatalf("probe: got %v\nwant %v", got, want)
				}
			}
			if matched == 0 || restores == 0 {
				t.Fatal("no probe row matched or no restore: the test would prove nothing")
			}
		})
	}
}

// restoredLookup is a new table restored from a checkpoint of j, which it
// closes.
func restoredLookup(t *testing.T, mem memory.Allocator, j *Lookup, cfg LookupConfig) *Lookup {
	t.Helper()
	rec, err := j.Buffered(mem)
	j.Close()
	if err != nil {
		t.Fatal(err)
	}
	n, err := NewLookup(mem, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rec != nil {
		err = n.Restore(mem, rec)
		rec.Release()
		if err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// TestLookupInt64Keys: two key columns, int64 and string, as in a join of
// auctions with their sellers.
func TestLookupInt64Keys(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	persons := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "state", Type: arrow.BinaryTypes.String},
		{Name: "name", Type: arrow.BinaryTypes.String},
	}, nil)
	auctions := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "seller", Type: arrow.PrimitiveTypes.Int64},
		{Name: "state", Type: arrow.BinaryTypes.String},
	}, nil)
	j, err := NewLookup(mem, LookupConfig{
		Probe:  Side{Schema: auctions, Keys: []int{1, 2}, Prefix: "a_"},
		Table:  Side{Schema: persons, Keys: []int{0, 1}, Prefix: "p_"},
		Delete: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	pb := array.NewRecordBuilder(mem, persons)
	defer pb.Release()
	for _, p := range []struct {
		id          int64
		state, name string
	}{{1, "OR", "ann"}, {2, "ID", "bob"}, {1, "CA", "cid"}, {3, "OR", "dee"}} {
		pb.Field(0).(*array.Int64Builder).Append(p.id)
		pb.Field(1).(*array.StringBuilder).Append(p.state)
		pb.Field(2).(*array.StringBuilder).Append(p.name)
	}
	prec := pb.NewRecordBatch()
	defer prec.Release()
	if err := j.Upsert(mem, prec); err != nil {
		t.Fatal(err)
	}
	ab := array.NewRecordBuilder(mem, auctions)
	defer ab.Release()
	for i, a := range []struct {
		seller int64
		state  string
	}{{1, "CA"}, {1, "ID"}, {2, "ID"}, {3, "OR"}, {4, "OR"}} {
		ab.Field(0).(*array.Int64Builder).Append(int64(100 + i))
		ab.Field(1).(*array.Int64Builder).Append(a.seller)
		ab.Field(2).(*array.StringBuilder).Append(a.state)
	}
	arec := ab.NewRecordBatch()
	defer arec.Release()
	out, err := j.Probe(mem, arec)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Release()
	var names []string
	for _, f := range out.Schema().Fields() {
		names = append(names, f.Name)
	}
	if want := []string{"a_id", "seller", "a_state", "p_id", "p_state", "name"}; !slices.Equal(names, want) {
		t.Fatalf("fields %v, want %v", names, want)
	}
	var got []string
	for i := range int(out.NumRows()) {
		got = append(got, fmt.Sprintf("%d:%s", out.Column(0).(*array.Int64).Value(i), out.Column(5).(*array.String).Value(i)))
	}
	if want := []string{"100:cid", "102:bob", "103:dee"}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}
