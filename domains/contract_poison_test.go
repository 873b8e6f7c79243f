package domains_test

// Values that a decoder accepts but that must not pass a contract they
// break, nor leave a boundary as something they are not.

import (
	"context"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/actors/natsio"
	"github.com/meshflow/meshflow/domains"
	"github.com/meshflow/meshflow/internal/expr"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
	"github.com/meshflow/meshflow/messages"
)

var floatSchema = arrow.NewSchema([]arrow.Field{
	{Name: "id", Type: arrow.PrimitiveTypes.Int64},
	{Name: "amount", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
	{Name: "weight", Type: arrow.PrimitiveTypes.Float64}, // not nullable, no rule
	{Name: "ratio", Type: arrow.PrimitiveTypes.Float32, Nullable: true},
}, nil)

// decodeFloats decodes events with every column nullable, so nulls reach
// the contract, and presents the batch under floatSchema.
func decodeFloats(t *testing.T, mem memory.Allocator, events ...string) arrow.RecordBatch {
	t.Helper()
	fields := floatSchema.Fields()
	for i := range fields {
		fields[i].Nullable = true
	}
	dec, err := messages.NewJSONDecoder(mem, arrow.NewSchema(fields, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Release()
	for _, ev := range events {
		if err := dec.Append([]byte(ev)); err != nil {
			t.Fatalf("%s: %v", ev, err)
		}
	}
	rec := dec.NewBatch()
	defer rec.Release()
	return array.NewRecordBatch(floatSchema, rec.Columns(), rec.NumRows())
}

// checkRows runs the contract over events and returns, per event, the
// rules it broke ("" for a good row), and the good rows as JSON.
func checkRows(t *testing.T, c domains.Contract, events ...string) (broken []string, good []string) {
	t.Helper()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rec := decodeFloats(t, mem, events...)
	defer rec.Release()
	ok, bad, err := c.Check(context.Background(), mem, rec)
	if err != nil {
		t.Fatal(err)
	}
	defer ok.Release()
	broken = make([]string, len(events))
	for _, v := range bad {
		broken[v.Row] = v.Rules
	}
	enc, err := messages.NewJSONRowEncoder(ok.Schema())
	if err != nil {
		t.Fatal(err)
	}
	for i := range int(ok.NumRows()) {
		good = append(good, string(enc.AppendRow(nil, ok, i)))
	}
	return broken, good
}

func TestContractNonFinite(t *testing.T) {
	cases := []ruleCase{
		{"range", domains.Range("amount", 0.01, 100000), []string{
			`{"id":1,"weight":0,"amount":"NaN"}`,
			`{"id":2,"weight":0,"amount":"Infinity"}`,
			`{"id":3,"weight":0,"amount":"-Infinity"}`,
			`{"id":4,"weight":0,"amount":0.01}`,
			`{"id":5,"weight":0,"amount":100000}`,
			`{"id":6,"weight":0,"amount":0.009}`,
			`{"id":7,"weight":0}`,
			`{"id":8,"weight":0,"amount":-0}`,
		}, []string{
			"amount in [0.01, 100000]", "amount in [0.01, 100000]", "amount in [0.01, 100000]", "", "", "amount in [0.01, 100000]", "", "amount in [0.01, 100000]",
		}},
		{"range with infinite bounds", domains.Range("amount", math.Inf(-1), math.Inf(1)), []string{
			`{"id":1,"weight":0,"amount":"nan"}`,
			`{"id":2,"weight":0,"amount":"+inf"}`,
			`{"id":3,"weight":0,"amount":"-inf"}`,
			`{"id":4,"weight":0,"amount":1.7976931348623157e308}`,
		}, []string{"amount in [-Inf, +Inf]", "amount in [-Inf, +Inf]", "amount in [-Inf, +Inf]", ""}},
		{"range on float32", domains.Range("ratio", 0, 1), []string{
			`{"id":1,"weight":0,"ratio":"NaN"}`,
			`{"id":2,"weight":0,"ratio":"Infinity"}`,
			`{"id":3,"weight":0,"ratio":0.5}`,
		}, []string{"ratio in [0, 1]", "ratio in [0, 1]", ""}},
		{"range on an int column", domains.Range("id", 1, 2), []string{
			`{"id":1,"weight":0}`, `{"id":3,"weight":0}`,
		}, []string{"", "id in [1, 2]"}},
		{"one of", domains.OneOf("amount", 1.5, math.NaN()), []string{
			`{"id":1,"weight":0,"amount":"NaN"}`,
			`{"id":2,"weight":0,"amount":1.5}`,
		}, []string{"amount one of [1.5, NaN]", ""}},
		{"check with a comparison", domains.Check("amount at most 100", expr.Col("amount").Le(100)), []string{
			`{"id":1,"weight":0,"amount":"NaN"}`,
			`{"id":2,"weight":0,"amount":"Infinity"}`,
			`{"id":3,"weight":0,"amount":"-Infinity"}`,
			`{"id":4,"weight":0,"amount":100}`,
		}, []string{"amount at most 100", "amount at most 100", "", ""}},
		// What Check's documentation warns about: a negated comparison
		// lets NaN through, and so does Ne.
		{"check with a negated comparison", domains.Check("amount not above 100", expr.Col("amount").Gt(100).Not()), []string{
			`{"id":1,"weight":0,"amount":"NaN"}`,
			`{"id":2,"weight":0,"amount":101}`,
		}, []string{"", "amount not above 100"}},
		{"check with ne", domains.Check("amount is not 5", expr.Col("amount").Ne(5)), []string{
			`{"id":1,"weight":0,"amount":"NaN"}`,
			`{"id":2,"weight":0,"amount":5}`,
		}, []string{"", "amount is not 5"}},
	}
	runRuleCases(t, cases)
}

// TestContractNonFiniteInNotNullColumn: NaN and ±Inf in a non-nullable
// float column with no rule are values: they pass, and are written as
// strings the decoder reads back, never as null.
func TestContractNonFiniteInNotNullColumn(t *testing.T) {
	c := domains.Contract{Schema: floatSchema, Version: 1}
	broken, good := checkRows(t, c,
		`{"id":1,"weight":"NaN"}`,
		`{"id":2,"weight":"Infinity"}`,
		`{"id":3,"weight":"-Infinity"}`,
		`{"id":4}`,
	)
	if want := []string{"", "", "", "weight not null"}; strings.Join(broken, "|") != strings.Join(want, "|") {
		t.Fatalf("broke %q, want %q", broken, want)
	}
	want := []string{
		`{"id":1,"amount":null,"weight":"NaN","ratio":null}`,
		`{"id":2,"amount":null,"weight":"Infinity","ratio":null}`,
		`{"id":3,"amount":null,"weight":"-Infinity","ratio":null}`,
	}
	if strings.Join(good, "\n") != strings.Join(want, "\n") {
		t.Fatalf("good rows\n%s\nwant\n%s", strings.Join(good, "\n"), strings.Join(want, "\n"))
	}
	// What left the boundary decodes, under the contract's own schema
	// (weight not nullable), to the same values.
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	dec, err := messages.NewJSONDecoder(mem, floatSchema)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Release()
	for _, g := range good {
		if err := dec.Append([]byte(g)); err != nil {
			t.Fatalf("%s: %v", g, err)
		}
	}
	rec := dec.NewBatch()
	defer rec.Release()
	w := rec.Column(2).(*array.Float64)
	if !math.IsNaN(w.Value(0)) || !math.IsInf(w.Value(1), 1) || !math.IsInf(w.Value(2), -1) {
		t.Fatalf("read back %v", w)
	}
}

// TestContractDeadLetterShowsNonFinite: a row refused for NaN or ±Inf is
// written, as boundaries write dead letters, with the value itself.
func TestContractDeadLetterShowsNonFinite(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	c := domains.Contract{Schema: floatSchema, Version: 1, Rules: []domains.Rule{domains.Range("amount", 0.01, 100000)}}
	rec := decodeFloats(t, mem,
		`{"id":1,"weight":1,"amount":"NaN"}`,
		`{"id":2,"weight":1,"amount":"Infinity"}`,
		`{"id":3,"weight":1,"amount":"-Infinity"}`,
	)
	defer rec.Release()
	good, bad, err := c.Check(context.Background(), mem, rec)
	if err != nil {
		t.Fatal(err)
	}
	good.Release()
	enc, err := messages.NewJSONRowEncoder(rec.Schema())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range bad {
		got = append(got, string(enc.AppendRow(nil, rec, v.Row))+" | "+v.Rules)
	}
	want := []string{
		`{"id":1,"amount":"NaN","weight":1,"ratio":null} | amount in [0.01, 100000]`,
		`{"id":2,"amount":"Infinity","weight":1,"ratio":null} | amount in [0.01, 100000]`,
		`{"id":3,"amount":"-Infinity","weight":1,"ratio":null} | amount in [0.01, 100000]`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("dead letters\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestContractSchemaViolations: the schema is held at every depth: nulls
// where a field is not nullable, and invalid UTF-8.
func TestContractSchemaViolations(t *testing.T) {
	point := arrow.StructOf(
		arrow.Field{Name: "x", Type: arrow.PrimitiveTypes.Int64},
		arrow.Field{Name: "label", Type: arrow.BinaryTypes.String, Nullable: true},
	)
	cases := []struct {
		name   string
		field  arrow.Field
		json   string // the column's values, for array.FromJSON
		broken []string
	}{
		{"top-level null", arrow.Field{Name: "n", Type: arrow.PrimitiveTypes.Int64},
			`[1, null]`, []string{"", "n not null"}},
		{"null child of a valid struct", arrow.Field{Name: "p", Type: point, Nullable: true},
			`[{"x": 1}, {"x": null}, null]`, []string{"", "p.x not null", ""}},
		{"null struct", arrow.Field{Name: "p", Type: point},
			`[{"x": 1}, null]`, []string{"", "p not null"}},
		{"null element of a list", arrow.Field{Name: "l", Type: arrow.ListOfNonNullable(arrow.PrimitiveTypes.Int64), Nullable: true},
			`[[1, 2], [3, null], null, []]`, []string{"", "l[] not null", "", ""}},
		{"nullable elements", arrow.Field{Name: "l", Type: arrow.ListOf(arrow.PrimitiveTypes.Int64)},
			`[[1, null]]`, []string{""}},
		{"list of structs", arrow.Field{Name: "l", Type: arrow.ListOf(point)},
			`[[{"x": 1}], [{"x": 2}, {"x": null}], [null]]`, []string{"", "l[].x not null", ""}},
		{"fixed-size list", arrow.Field{Name: "f", Type: arrow.FixedSizeListOfNonNullable(2, arrow.PrimitiveTypes.Int64)},
			`[[1, 2], [null, 4]]`, []string{"", "f[] not null"}},
		{"large list", arrow.Field{Name: "l", Type: arrow.LargeListOfNonNullable(arrow.PrimitiveTypes.Int64)},
			`[[1], [null]]`, []string{"", "l[] not null"}},
		{"map value", arrow.Field{Name: "m", Type: mapNonNullableItems()},
			`[[{"key": "a", "value": 1}], [{"key": "b", "value": null}]]`, []string{"", "m[].value not null"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			arr := fromJSON(t, mem, tc.field.Type, tc.json)
			defer arr.Release()
			checkColumn(t, mem, tc.field, arr, tc.broken)
		})
	}
	t.Run("dictionary value", func(t *testing.T) {
		mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
		defer mem.AssertSize(t, 0)
		dt := &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int8, ValueType: arrow.BinaryTypes.String}
		dict, _, err := array.FromJSON(mem, arrow.BinaryTypes.String, strings.NewReader(`["a", null, "c"]`))
		if err != nil {
			t.Fatal(err)
		}
		defer dict.Release()
		idx, _, err := array.FromJSON(mem, arrow.PrimitiveTypes.Int8, strings.NewReader(`[0, 1, 2, null]`))
		if err != nil {
			t.Fatal(err)
		}
		defer idx.Release()
		arr := array.NewDictionaryArray(dt, idx, dict)
		defer arr.Release()
		checkColumn(t, mem, arrow.Field{Name: "d", Type: dt}, arr, []string{"", "d not null", "", "d not null"})
		checkColumn(t, mem, arrow.Field{Name: "d", Type: dt, Nullable: true}, arr, []string{"", "", "", ""})
	})
	t.Run("invalid UTF-8", func(t *testing.T) {
		mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
		defer mem.AssertSize(t, 0)
		strs := []string{"ok", "a\xffb", "", "\xe2\x82", "é"}
		for _, tc := range []struct {
			name string
			dt   arrow.DataType
		}{{"utf8", arrow.BinaryTypes.String}, {"large_utf8", arrow.BinaryTypes.LargeString}} {
			b := array.NewBuilder(mem, tc.dt)
			for _, s := range strs {
				b.(interface{ Append(string) }).Append(s)
			}
			arr := b.NewArray()
			b.Release()
			checkColumn(t, mem, arrow.Field{Name: "s", Type: tc.dt}, arr, []string{"", "s is valid UTF-8", "", "s is valid UTF-8", ""})
			arr.Release()
		}
		// In a list, and in a dictionary.
		lb := array.NewListBuilder(mem, arrow.BinaryTypes.String)
		vb := lb.ValueBuilder().(*array.StringBuilder)
		lb.Append(true)
		vb.Append("fine")
		lb.Append(true)
		vb.Append("fine")
		vb.Append("\xc3")
		list := lb.NewArray()
		lb.Release()
		defer list.Release()
		checkColumn(t, mem, arrow.Field{Name: "l", Type: list.DataType()}, list, []string{"", "l[] is valid UTF-8"})
		dict, _, err := array.FromJSON(mem, arrow.BinaryTypes.String, strings.NewReader(`["a"]`))
		if err != nil {
			t.Fatal(err)
		}
		sb := array.NewStringBuilder(mem)
		sb.Append("\xff")
		bad := sb.NewArray()
		sb.Release()
		both, err := array.Concatenate([]arrow.Array{dict, bad}, mem)
		dict.Release()
		bad.Release()
		if err != nil {
			t.Fatal(err)
		}
		defer both.Release()
		idx, _, err := array.FromJSON(mem, arrow.PrimitiveTypes.Int8, strings.NewReader(`[1, 0]`))
		if err != nil {
			t.Fatal(err)
		}
		defer idx.Release()
		dt := &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int8, ValueType: arrow.BinaryTypes.String}
		d := array.NewDictionaryArray(dt, idx, both)
		defer d.Release()
		checkColumn(t, mem, arrow.Field{Name: "d", Type: dt}, d, []string{"d is valid UTF-8", ""})
	})
}

// fromJSON builds an array of dt, also when dt forbids the nulls given
// (which Arrow's builders refuse for map items): those are built with
// the nullable form of the type and relabelled.
func fromJSON(t *testing.T, mem memory.Allocator, dt arrow.DataType, js string) arrow.Array {
	t.Helper()
	build := dt
	if m, ok := dt.(*arrow.MapType); ok {
		build = arrow.MapOf(m.KeyType(), m.ItemType())
	}
	arr, _, err := array.FromJSON(mem, build, strings.NewReader(js))
	if err != nil {
		t.Fatal(err)
	}
	if build == dt {
		return arr
	}
	defer arr.Release()
	d := arr.Data()
	data := array.NewData(dt, d.Len(), d.Buffers(), d.Children(), d.NullN(), d.Offset())
	defer data.Release()
	return array.MakeFromData(data)
}

func mapNonNullableItems() *arrow.MapType {
	m := arrow.MapOf(arrow.BinaryTypes.String, arrow.PrimitiveTypes.Int64)
	m.SetItemNullable(false)
	return m
}

// checkColumn checks a one-column batch of arr under field, whole and
// sliced (so that offsets are honoured), against the reasons expected per
// row, and checks that the good rows are the others.
func checkColumn(t *testing.T, mem memory.Allocator, field arrow.Field, arr arrow.Array, broken []string) {
	t.Helper()
	schema := arrow.NewSchema([]arrow.Field{field}, nil)
	c := domains.Contract{Schema: schema, Version: 1}
	whole := array.NewRecordBatch(schema, []arrow.Array{arr}, int64(arr.Len()))
	defer whole.Release()
	for from := range min(2, len(broken)) {
		rec := whole.NewSlice(int64(from), whole.NumRows())
		good, bad, err := c.Check(context.Background(), mem, rec)
		rec.Release()
		if err != nil {
			t.Fatal(err)
		}
		got := make([]string, len(broken)-from)
		for _, v := range bad {
			got[v.Row] = v.Rules
		}
		want := broken[from:]
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("%s from row %d: broke %q, want %q", field.Name, from, got, want)
		}
		if int(good.NumRows())+len(bad) != len(want) {
			t.Errorf("%d good + %d bad rows of %d", good.NumRows(), len(bad), len(want))
		}
		good.Release()
	}
}

// TestBoundaryNonFinite: through a running boundary, NaN and ±Inf amounts
// are dead-lettered showing the value, NaN in a non-nullable column with
// no rule flows, and good events around them all arrive.
func TestBoundaryNonFinite(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	js := natstest.JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	contract := domains.Contract{Schema: floatSchema, Version: 1, Rules: []domains.Rule{domains.Range("amount", 0.01, 100000)}}
	in := arrow.NewSchema(slices.Clone(floatSchema.Fields()), nil)
	var mu sync.Mutex
	var out []string
	p := meshflow.NewPipeline("payments")
	p.Source("events", meshflow.FromJSON(in,
		`{"id":1,"amount":5,"weight":1}`,
		`{"id":2,"amount":"NaN","weight":1}`,
		`{"id":3,"amount":"Infinity","weight":1}`,
		`{"id":4,"amount":7,"weight":"NaN"}`,
		`{"id":5,"amount":"-Infinity","weight":1}`,
		`{"id":6,"amount":9,"weight":1}`,
	)).
		Process("boundary", func() meshflow.Operator {
			return &domains.Boundary{Domain: "payments", Port: "in", Contract: contract, NATS: nc}
		}, meshflow.OutputSchema(floatSchema)).
		To("out", meshflow.ToOperator(func() meshflow.Operator { return rowSink{&mu, &out} }))
	if err := meshflow.Run(ctx, p, meshflow.WithNATS(nc), meshflow.WithAllocator(mem), meshflow.WithLogger(testutil.TestLogger(t))); err != nil {
		t.Fatal(err)
	}
	wantOut := []string{
		`{"id":1,"amount":5,"weight":1,"ratio":null}`,
		`{"id":4,"amount":7,"weight":"NaN","ratio":null}`,
		`{"id":6,"amount":9,"weight":1,"ratio":null}`,
	}
	if strings.Join(out, "\n") != strings.Join(wantOut, "\n") {
		t.Errorf("out:\n%s\nwant:\n%s", strings.Join(out, "\n"), strings.Join(wantOut, "\n"))
	}
	st, err := js.Stream(ctx, domains.StreamName(domains.DeadLetterSubject("payments")))
	if err != nil {
		t.Fatal(err)
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(3, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for m := range batch.Messages() {
		got = append(got, string(m.Data())+" | "+m.Headers().Get(natsio.HeaderError))
	}
	want := []string{
		`{"id":2,"amount":"NaN","weight":1,"ratio":null} | contract broken: amount in [0.01, 100000]`,
		`{"id":3,"amount":"Infinity","weight":1,"ratio":null} | contract broken: amount in [0.01, 100000]`,
		`{"id":5,"amount":"-Infinity","weight":1,"ratio":null} | contract broken: amount in [0.01, 100000]`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("dead letters:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// rowSink keeps every row it is given, as JSON.
type rowSink struct {
	mu   *sync.Mutex
	rows *[]string
}

func (s rowSink) Open(context.Context, meshflow.OperatorContext) error { return nil }
func (s rowSink) Close(context.Context) error                          { return nil }
func (s rowSink) Process(_ context.Context, in arrow.RecordBatch, _ meshflow.Emitter) error {
	enc, err := messages.NewJSONRowEncoder(in.Schema())
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range int(in.NumRows()) {
		*s.rows = append(*s.rows, string(enc.AppendRow(nil, in, i)))
	}
	return nil
}

// TestContractRuleFailsOnAValue: a rule that cannot be evaluated on some
// value (integer overflow, division by zero) refuses that row, with the
// reason, and not the rows around it.
func TestContractRuleFailsOnAValue(t *testing.T) {
	cases := []ruleCase{
		{"overflow", domains.Check("id after next is positive", expr.Col("id").Add(1).Gt(0)), []string{
			`{"id":1,"weight":0}`, `{"id":9223372036854775807,"weight":0}`, `{"id":-5,"weight":0}`, `{"id":2,"weight":0}`,
		}, []string{"", "id after next is positive (9223372036854775807 + 1: kernels: integer overflow)", "id after next is positive", ""}},
		{"division by zero", domains.Check("id divides itself", expr.Col("id").Div(expr.Col("id")).Eq(1)), []string{
			`{"id":3,"weight":0}`, `{"id":0,"weight":0}`, `{"id":4,"weight":0}`,
		}, []string{"", "id divides itself (0 / 0: kernels: integer division by zero)", ""}},
	}
	runRuleCases(t, cases)
}

// TestContractNullsTheCountHides: nulls are found by the validity bitmap,
// which encoders read, even when the batch's null count says none; a
// column of the null type is all nulls.
func TestContractNullsTheCountHides(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	arr, _, err := array.FromJSON(mem, arrow.PrimitiveTypes.Int64, strings.NewReader(`[1, null, 3]`))
	if err != nil {
		t.Fatal(err)
	}
	defer arr.Release()
	d := arr.Data()
	lying := array.NewData(arrow.PrimitiveTypes.Int64, d.Len(), d.Buffers(), nil, 0, 0) // null count 0
	defer lying.Release()
	liar := array.MakeFromData(lying)
	defer liar.Release()
	if liar.NullN() != 0 || !liar.IsNull(1) {
		t.Fatalf("null count %d, row 1 null %v", liar.NullN(), liar.IsNull(1))
	}
	checkColumn(t, mem, arrow.Field{Name: "n", Type: arrow.PrimitiveTypes.Int64}, liar, []string{"", "n not null", ""})
	nulls := array.NewNull(2)
	defer nulls.Release()
	checkColumn(t, mem, arrow.Field{Name: "z", Type: arrow.Null}, nulls, []string{"z not null", "z not null"})
}

// ruleCase is one rule checked on events of floatSchema: broken[i] is what
// event i breaks ("" for nothing).
type ruleCase struct {
	name   string
	rule   domains.Rule
	events []string
	broken []string
}

func runRuleCases(t *testing.T, cases []ruleCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := domains.Contract{Schema: floatSchema, Version: 1, Rules: []domains.Rule{tc.rule}}
			broken, _ := checkRows(t, c, tc.events...)
			for i := range tc.events {
				if broken[i] != tc.broken[i] {
					t.Errorf("%s: broke %q, want %q", tc.events[i], broken[i], tc.broken[i])
				}
			}
		})
	}
}
