package meshflow

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/actors/natsio"
	"github.com/meshflow/meshflow/internal/join"
	"github.com/meshflow/meshflow/internal/kernels"
	"github.com/meshflow/meshflow/internal/window"
	"github.com/meshflow/meshflow/messages"
	"github.com/meshflow/meshflow/persistence"
)

// JoinOn describes the keys of a join and how it treats its rows: the
// pairs of key columns (left, right) that must be equal, the event-time
// columns, the prefixes of clashing output names, and where late rows go.
// Build it with [On].
type JoinOn struct {
	left, right           []string
	leftTime, rightTime   string
	leftPrefix, rightPref string
	late                  string
	retention             time.Duration
	outer                 bool
	deleteCol             string
}

// On joins rows whose left column equals their right column (int64 or
// string, the same type on both sides). Add more key pairs with
// [JoinOn.And].
func On(left, right string) JoinOn {
	return JoinOn{left: []string{left}, right: []string{right}}
}

// And adds a pair of key columns.
func (j JoinOn) And(left, right string) JoinOn {
	j.left = append(append([]string(nil), j.left...), left)
	j.right = append(append([]string(nil), j.right...), right)
	return j
}

// Times names the event-time columns (int64 milliseconds or millisecond
// timestamps) of the left and right inputs: needed by [IntervalJoin] and
// by a [Join] with [JoinOn.Retention]; for [WindowJoin] they replace the
// windows' time column.
func (j JoinOn) Times(left, right string) JoinOn {
	j.leftTime, j.rightTime = left, right
	return j
}

// Prefixes sets what is put in front of an output column name both
// inputs have (default, and for an empty prefix, "left_" and "right_"):
// both clashing columns are renamed, the others keep their names. A name
// that still clashes is a Validate error.
func (j JoinOn) Prefixes(left, right string) JoinOn {
	j.leftPrefix, j.rightPref = left, right
	return j
}

// LateRowsTo publishes the rows too late to join (see each join), as
// JSON, to subject, with the reason in the dead-letter headers (class
// "late"), exactly once with checkpoints. Without it, late rows go to
// "<job>.<operator>.late".
func (j JoinOn) LateRowsTo(subject string) JoinOn {
	j.late = subject
	return j
}

// Retention bounds the state of a [Join]: a row is dropped once the
// watermark passes its time + d, and only pairs whose times are at most d
// apart join (so the result does not depend on when rows arrive). Needs
// [JoinOn.Times].
func (j JoinOn) Retention(d time.Duration) JoinOn {
	j.retention = d
	return j
}

// LeftOuter makes a [LookupJoin] emit the probe rows without a match too,
// with nulls in the table's columns.
func (j JoinOn) LeftOuter() JoinOn {
	j.outer = true
	return j
}

// DeleteWhen names a boolean column of a [LookupJoin]'s table stream: a
// row with true there is a tombstone, deleting its key from the table.
func (j JoinOn) DeleteWhen(column string) JoinOn {
	j.deleteCol = column
	return j
}

type joinKind uint8

const (
	regularJoin joinKind = iota + 1
	intervalJoin
	windowJoin
	lookupJoin
)

func (k joinKind) String() string {
	return [...]string{"", "join", "interval join", "window join", "lookup join"}[k]
}

// joinNode is what a join node needs to be validated and built.
type joinNode struct {
	kind         joinKind
	on           JoinOn
	lower, upper time.Duration
	w            Windows
}

// Join is the regular inner equi-join of two streams: every pair of a
// left and a right row with equal keys is emitted once, when the second
// of the two arrives, whatever their order. Both inputs are kept in
// state — forever, unless [JoinOn.Retention] bounds it — and both are
// hash-partitioned on their key columns, so the join may run with
// [Parallelism]. Output: the left columns, then the right columns (see
// [JoinOn.Prefixes]). The inputs' schemas must be known.
func Join(name string, left, right *Stream, on JoinOn, opts ...Option) *Stream {
	return addJoin(name, left, right, &joinNode{kind: regularJoin, on: on}, opts)
}

// IntervalJoin joins left row l and right row r when their keys are equal
// and r.time is in [l.time+lower, l.time+upper] (times from
// [JoinOn.Times]). A pair is emitted when its second row arrives; the
// watermark drops the rows no later row can join. A row whose time is
// below the watermark when it arrives is late: it may have missed rows
// already dropped, so it joins nothing and goes to the late-rows subject.
func IntervalJoin(name string, left, right *Stream, on JoinOn, lower, upper time.Duration, opts ...Option) *Stream {
	return addJoin(name, left, right, &joinNode{kind: intervalJoin, on: on, lower: lower, upper: upper}, opts)
}

// WindowJoin joins the rows with equal keys in the same event-time window
// of w (tumbling or sliding), and emits the pairs of a window when the
// watermark passes its end: the left columns, the right columns,
// window_start and window_end. A pair of rows sharing several sliding
// windows is emitted once per window. A row every window of which has
// fired is late and goes to the late-rows subject ([Windows.LateRowsTo]
// or [JoinOn.LateRowsTo]); allowed lateness is not supported.
func WindowJoin(name string, left, right *Stream, on JoinOn, w Windows, opts ...Option) *Stream {
	return addJoin(name, left, right, &joinNode{kind: windowJoin, on: on, w: w}, opts)
}

// LookupJoin joins every row of probe with the latest row of table with
// its key (the latest to arrive, whatever its event time; a tombstone of
// [JoinOn.DeleteWhen] deletes the key): an inner join, or with
// [JoinOn.LeftOuter] probe rows without a match are emitted with nulls.
// A probe row is joined with the table as it is when the row arrives, so
// the result depends on the arrival order of the two inputs; table rows
// emit nothing. The table is written at checkpoints and restored.
func LookupJoin(name string, probe, table *Stream, on JoinOn, opts ...Option) *Stream {
	return addJoin(name, probe, table, &joinNode{kind: lookupJoin, on: on}, opts)
}

func addJoin(name string, left, right *Stream, jn *joinNode, opts []Option) *Stream {
	if left == nil || right == nil {
		p := &Pipeline{}
		p.errs = append(p.errs, fmt.Errorf("join %q: nil input stream", name))
		return &Stream{p: p, n: &node{}}
	}
	p := left.p
	if right.p != p {
		p.errs = append(p.errs, fmt.Errorf("join %q: streams of different pipelines", name))
	}
	n := &node{name: name, kind: kindOperator, join: jn}
	return p.add(n, opts, input{from: left.n, key: jn.on.left}, input{from: right.n, key: jn.on.right})
}

// sides returns the kernel's description of the two inputs.
func (jn *joinNode) sides(l, r *arrow.Schema) (join.Side, join.Side, error) {
	on := jn.on
	ls := join.Side{Schema: l, Prefix: on.leftPrefix, Time: -1}
	rs := join.Side{Schema: r, Prefix: on.rightPref, Time: -1}
	if len(on.left) == 0 || len(on.left) != len(on.right) {
		return ls, rs, fmt.Errorf("%d left and %d right key columns: want the same number, at least one", len(on.left), len(on.right))
	}
	col := func(s *arrow.Schema, side, name string) (int, error) {
		idx := s.FieldIndices(name)
		if len(idx) != 1 {
			return 0, fmt.Errorf("no %s column %q in %s", side, name, fieldNames(s))
		}
		return idx[0], nil
	}
	for i := range on.left {
		k, err := col(l, "left", on.left[i])
		if err != nil {
			return ls, rs, err
		}
		ls.Keys = append(ls.Keys, k)
		if k, err = col(r, "right", on.right[i]); err != nil {
			return ls, rs, err
		}
		rs.Keys = append(rs.Keys, k)
	}
	lt, rt := on.leftTime, on.rightTime
	if jn.kind == windowJoin && lt == "" && rt == "" {
		lt, rt = jn.w.time, jn.w.time
	}
	needTime := jn.kind == intervalJoin || jn.kind == windowJoin || (jn.kind == regularJoin && on.retention != 0)
	if needTime {
		if lt == "" || rt == "" {
			return ls, rs, fmt.Errorf("a %s needs the time columns of both inputs (On(...).Times)", jn.kind)
		}
		var err error
		if ls.Time, err = col(l, "left time", lt); err != nil {
			return ls, rs, err
		}
		if rs.Time, err = col(r, "right time", rt); err != nil {
			return ls, rs, err
		}
	}
	return ls, rs, nil
}

// kernel is one instance's join machinery.
type kernel struct {
	interval *join.Interval // regular and interval joins
	window   *join.Window
	lookup   *join.Lookup
}

func (k *kernel) close() {
	switch {
	case k.interval != nil:
		k.interval.Close()
	case k.window != nil:
		k.window.Close()
	case k.lookup != nil:
		k.lookup.Close()
	}
}

func (k *kernel) schema() *arrow.Schema {
	switch {
	case k.interval != nil:
		return k.interval.Schema()
	case k.window != nil:
		return k.window.Schema()
	}
	return k.lookup.Schema()
}

// newKernel builds the join over the input schemas l and r.
func (jn *joinNode) newKernel(mem memory.Allocator, l, r *arrow.Schema) (*kernel, error) {
	ls, rs, err := jn.sides(l, r)
	if err != nil {
		return nil, err
	}
	on := jn.on
	if on.outer && jn.kind != lookupJoin || on.deleteCol != "" && jn.kind != lookupJoin {
		return nil, fmt.Errorf("LeftOuter and DeleteWhen are options of a lookup join, not of a %s", jn.kind)
	}
	if on.retention != 0 && jn.kind != regularJoin {
		return nil, fmt.Errorf("Retention is an option of a regular join, not of a %s", jn.kind)
	}
	k := &kernel{}
	switch jn.kind {
	case regularJoin:
		if on.retention < 0 || on.retention%time.Millisecond != 0 {
			return nil, fmt.Errorf("retention %v: want positive whole milliseconds", on.retention)
		}
		cfg := join.IntervalConfig{Left: ls, Right: rs, Lower: math.MinInt64, Upper: math.MaxInt64}
		if on.retention > 0 {
			cfg.Lower, cfg.Upper = -on.retention.Milliseconds(), on.retention.Milliseconds()
		}
		k.interval, err = join.NewInterval(cfg)
	case intervalJoin:
		if jn.lower%time.Millisecond != 0 || jn.upper%time.Millisecond != 0 {
			return nil, fmt.Errorf("interval [%v, %v]: want whole milliseconds", jn.lower, jn.upper)
		}
		k.interval, err = join.NewInterval(join.IntervalConfig{Left: ls, Right: rs, Lower: jn.lower.Milliseconds(), Upper: jn.upper.Milliseconds()})
	case windowJoin:
		if jn.w.err != nil {
			return nil, jn.w.err
		}
		if jn.w.lateness != 0 {
			return nil, fmt.Errorf("a window join has no allowed lateness")
		}
		k.window, err = join.NewWindow(join.WindowConfig{Spec: jn.w.spec, Left: ls, Right: rs})
	case lookupJoin:
		del := -1
		if on.deleteCol != "" {
			idx := r.FieldIndices(on.deleteCol)
			if len(idx) != 1 {
				return nil, fmt.Errorf("no delete column %q in the table's %s", on.deleteCol, fieldNames(r))
			}
			del = idx[0]
		}
		k.lookup, err = join.NewLookup(mem, join.LookupConfig{Probe: ls, Table: rs, Delete: del, Outer: on.outer})
	}
	if err != nil {
		return nil, err
	}
	return k, nil
}

// validate reports what keeps a join node from running, and returns its
// output schema.
func (jn *joinNode) validate(n *node) (*arrow.Schema, error) {
	l, r := n.inputs[0].from, n.inputs[1].from
	if l == nil || r == nil {
		return nil, nil
	}
	if l == r {
		return nil, fmt.Errorf("a %s of a stream with itself is not supported (Filter it into two streams)", jn.kind)
	}
	if l.schema == nil || r.schema == nil {
		return nil, fmt.Errorf("a %s needs its inputs' schemas (declare the sources' schemas, or OutputSchema on a custom operator before it)", jn.kind)
	}
	mem := memory.NewGoAllocator()
	k, err := jn.newKernel(mem, l.schema, r.schema)
	if err != nil {
		return nil, err
	}
	defer k.close()
	return k.schema(), nil
}

// build returns the factory of the join operator's instances; left and
// right are the names of the vertices its inputs come from.
func (jn *joinNode) build(env *runEnv, n *node, left, right string) func() actors.Operator {
	return func() actors.Operator {
		return &joinOp{jn: jn, schemas: [2]*arrow.Schema{n.inputs[0].from.schema, n.inputs[1].from.schema},
			from: [2]string{left, right}, nc: env.nc}
	}
}

// joinOp runs a join kernel: Process adds the batches of either input
// (told apart by actors.InputFrom), OnWatermark expires or fires,
// PrepareCheckpoint writes what changed in the buffered state into the
// Store in one batch, and late rows go to a dead-letter subject.
type joinOp struct {
	jn      *joinNode
	schemas [2]*arrow.Schema
	from    [2]string
	nc      *nats.Conn

	mem    memory.Allocator
	k      *kernel
	state  persistence.Store
	dl     *natsio.DeadLetters
	enc    [2]*messages.JSONRowEncoder
	times  [2]int
	prefix string
	buf    []byte
	last   int64 // the operator's watermark, ms
	keep   []int32
	late   []int32

	// Interval and window joins: the batches buffered since the last
	// checkpoint (retained, written at the next one), and those written,
	// deleted once the watermark has passed their deadline.
	pending []pendingRows
	stored  []storedRows
	seq     uint64 // the number of the next batch written
	// Lookup joins: the table changed since the last checkpoint.
	dirty bool
}

// pendingRows is a batch of side w the join buffered since the last
// checkpoint.
type pendingRows struct {
	w        join.Which
	rec      arrow.RecordBatch
	deadline int64
}

// storedRows is a batch in the Store, needed until the watermark passes
// deadline.
type storedRows struct {
	key      []byte
	deadline int64
}

// State keys, in the "join" namespace: the watermark, the lookup table,
// and the buffered batches of interval and window joins, keyed by "r",
// their number (8 bytes, big endian) and their side (1 byte), so that a
// scan restores them in arrival order.
var (
	joinWatermarkKey = []byte("watermark")
	joinTableKey     = []byte("table")
	joinRowsPrefix   = []byte("r")
)

func (o *joinOp) Open(ctx context.Context, oc actors.OperatorContext) error {
	var err error
	o.mem = oc.Allocator()
	if o.k, err = o.jn.newKernel(o.mem, o.schemas[0], o.schemas[1]); err != nil {
		return err
	}
	ls, rs, _ := o.jn.sides(o.schemas[0], o.schemas[1])
	o.times = [2]int{ls.Time, rs.Time}
	o.state = oc.State().Namespace("join")
	o.last = int64(messages.MinWatermark)
	if err := o.restore(ctx); err != nil {
		return fmt.Errorf("%s: restore: %w", o.jn.kind, err)
	}
	if o.jn.kind == lookupJoin {
		return nil // nothing is ever late
	}
	for w := range 2 {
		if o.enc[w], err = messages.NewJSONRowEncoder(o.schemas[w]); err != nil {
			return err
		}
	}
	subject := o.jn.on.late
	if o.jn.kind == windowJoin && o.jn.w.late != "" {
		subject = o.jn.w.late
	}
	if subject == "" {
		subject = oc.Job() + "." + oc.Operator() + ".late"
	}
	js, err := jetstream.New(o.nc)
	if err != nil {
		return fmt.Errorf("%s: %w", o.jn.kind, err)
	}
	if _, err := natsio.EnsureStream(ctx, js, natsio.StreamName(subject), []string{subject}); err != nil {
		return fmt.Errorf("%s: late rows: %w", o.jn.kind, err)
	}
	dcfg := natsio.DeadLettersConfig{Subject: subject, Job: oc.Job(), Operator: oc.Operator()}
	if oc.Checkpointing() {
		dcfg.Store, dcfg.Instance = oc.State().Namespace("late"), oc.Instance()
	}
	if o.dl, err = natsio.NewDeadLetters(o.nc, dcfg); err != nil {
		return fmt.Errorf("%s: %w", o.jn.kind, err)
	}
	if o.dl.Transactional() && oc.RestoredCheckpoint() > 0 {
		if _, err := o.dl.Recover(ctx); err != nil {
			return fmt.Errorf("%s: late rows: %w", o.jn.kind, err)
		}
	}
	o.prefix = oc.Job() + "." + oc.Operator() + ".late."
	return nil
}

// restore reads the state of the last checkpoint: the watermark first
// (so that the rows restored are judged by it), then each side's rows.
func (o *joinOp) restore(ctx context.Context) error {
	switch v, err := o.state.Get(ctx, joinWatermarkKey); {
	case err == nil && len(v) == 8:
		o.last = int64(binary.BigEndian.Uint64(v))
		switch {
		case o.k.interval != nil:
			o.k.interval.SetWatermark(o.last)
		case o.k.window != nil:
			o.k.window.SetWatermark(o.last)
		}
	case err == nil:
		return fmt.Errorf("watermark of %d bytes", len(v))
	case !errors.Is(err, persistence.ErrNotFound):
		return err
	}
	if o.k.lookup != nil {
		v, err := o.state.Get(ctx, joinTableKey)
		if errors.Is(err, persistence.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return o.decode(v, func(rec arrow.RecordBatch) error { return o.k.lookup.Restore(o.mem, rec) })
	}
	return o.state.Scan(ctx, joinRowsPrefix, func(k, v []byte) error {
		if len(k) != 10 || k[9] > 1 {
			return fmt.Errorf("rows key %x", k)
		}
		w := join.Which(k[9])
		o.seq = max(o.seq, binary.BigEndian.Uint64(k[1:])+1)
		deadline := int64(math.MinInt64)
		err := o.decode(v, func(rec arrow.RecordBatch) error {
			deadline = max(deadline, o.deadline(w, rec))
			if o.k.interval != nil {
				return o.k.interval.Restore(w, rec)
			}
			return o.k.window.Restore(w, rec)
		})
		if err != nil {
			return fmt.Errorf("%s rows: %w", w, err)
		}
		o.stored = append(o.stored, storedRows{key: bytes.Clone(k), deadline: deadline})
		return nil
	})
}

// decode calls f with each batch of the Arrow IPC bytes v (borrowed).
func (o *joinOp) decode(v []byte, f func(arrow.RecordBatch) error) error {
	recs, _, err := messages.DecodeIPC(o.mem, v)
	if err != nil {
		return err
	}
	for _, rec := range recs {
		if err == nil {
			err = f(rec)
		}
		rec.Release()
	}
	return err
}

// deadline is the last watermark at which a row of rec (side w) may still
// be buffered: its rows are all dropped once the watermark is above it
// (math.MaxInt64: never, math.MinInt64: no row with a time).
func (o *joinOp) deadline(w join.Which, rec arrow.RecordBatch) int64 {
	t := o.times[w]
	if t < 0 {
		return math.MaxInt64
	}
	col := rec.Column(t)
	var hi int64
	var ok bool
	switch c := col.(type) {
	case *array.Int64:
		hi, ok = maxTime(c.Int64Values(), col)
	case *array.Timestamp:
		hi, ok = maxTime(c.TimestampValues(), col)
	}
	if !ok {
		return math.MinInt64
	}
	switch {
	case o.k.window != nil:
		spec := o.jn.w.spec
		return satAdd(spec.LastStart(hi), spec.Size-1)
	case o.jn.kind == regularJoin:
		return satAdd(hi, o.jn.on.retention.Milliseconds())
	case w == join.Left:
		return satAdd(hi, o.jn.upper.Milliseconds())
	default:
		return satAdd(hi, -o.jn.lower.Milliseconds())
	}
}

// maxTime is the greatest non-null time of col (values ts), and whether
// there is one.
func maxTime[T ~int64](ts []T, col arrow.Array) (int64, bool) {
	hi, ok := int64(math.MinInt64), false
	nulls := col.NullN() > 0
	for i, v := range ts {
		if (!nulls || col.IsValid(i)) && int64(v) >= hi {
			hi, ok = int64(v), true
		}
	}
	return hi, ok
}

// satAdd is a+b, clamped to the int64 range.
func satAdd(a, b int64) int64 {
	s := a + b
	if (s > a) != (b > 0) {
		if b > 0 {
			return math.MaxInt64
		}
		return math.MinInt64
	}
	return s
}

func (o *joinOp) side(ctx context.Context) (join.Which, error) {
	switch from := actors.InputFrom(ctx); from {
	case o.from[0]:
		return join.Left, nil
	case o.from[1]:
		return join.Right, nil
	default:
		return 0, fmt.Errorf("%s: a batch from %q, which is neither input (%s, %s)", o.jn.kind, from, o.from[0], o.from[1])
	}
}

func (o *joinOp) Process(ctx context.Context, in arrow.RecordBatch, out actors.Emitter) error {
	w, err := o.side(ctx)
	if err != nil {
		return err
	}
	if in.NumRows() == 0 {
		return nil
	}
	if o.k.lookup != nil {
		if w == join.Right {
			o.dirty = true
			return o.k.lookup.Upsert(o.mem, in)
		}
		rec, err := o.k.lookup.Probe(o.mem, in)
		if rec != nil {
			out.Emit(rec)
		}
		return err
	}
	rec := in
	if o.findLate(w, in) {
		if err := o.sendLate(ctx, w, in); err != nil {
			return err
		}
		if len(o.keep) == 0 {
			return nil
		}
		if rec, err = kernels.Take(o.mem, in, o.keep); err != nil {
			return fmt.Errorf("%s: %w", o.jn.kind, err)
		}
		defer rec.Release()
	}
	if d := o.deadline(w, rec); d >= o.last { // some row may be buffered
		rec.Retain()
		o.pending = append(o.pending, pendingRows{w: w, rec: rec, deadline: d})
	}
	if o.k.window != nil {
		return o.k.window.Add(w, rec)
	}
	res, err := o.k.interval.Add(o.mem, w, rec)
	if res != nil {
		out.Emit(res)
	}
	return err
}

// findLate sets o.late to the late rows of in (side w) and o.keep to the
// others, and reports whether there is a late row. A row is late when its
// time is below the watermark (interval join, regular join with
// retention) or when every window holding it has fired (window join).
func (o *joinOp) findLate(w join.Which, in arrow.RecordBatch) bool {
	o.late, o.keep = o.late[:0], o.keep[:0]
	t := o.times[w]
	if t < 0 || o.last == int64(messages.MinWatermark) {
		return false
	}
	col := in.Column(t)
	// The bound below which a row is late: a time, or for a window join
	// the start of a row's last window.
	bound, starts := o.last, false
	if o.k.window != nil {
		size := o.jn.w.spec.Size
		if o.last < math.MinInt64+size {
			return false
		}
		bound, starts = o.last-size+1, true
	}
	var spec *window.Spec
	if starts {
		spec = &o.jn.w.spec
	}
	switch c := col.(type) {
	case *array.Int64:
		o.late, o.keep = splitLate(c.Int64Values(), col, bound, spec, o.late, o.keep)
	case *array.Timestamp:
		o.late, o.keep = splitLate(c.TimestampValues(), col, bound, spec, o.late, o.keep)
	}
	return len(o.late) > 0
}

// splitLate appends the rows whose time (or, with spec, the start of
// their last window) is below bound to late, the others to keep.
func splitLate[T ~int64](ts []T, col arrow.Array, bound int64, spec *window.Spec, late, keep []int32) ([]int32, []int32) {
	for i, v := range ts {
		t := int64(v)
		if spec != nil {
			t = spec.LastStart(t)
		}
		if t < bound && col.IsValid(i) {
			late = append(late, int32(i))
		} else {
			keep = append(keep, int32(i))
		}
	}
	return late, keep
}

func (o *joinOp) sendLate(ctx context.Context, w join.Which, in arrow.RecordBatch) error {
	mark := o.dl.Mark()
	lin := actors.InputLineage(ctx)
	if lin == nil {
		lin = &messages.Lineage{Origin: "seq" + strconv.FormatUint(actors.InputSeq(ctx), 36)}
	}
	tcol := in.Column(o.times[w])
	why := "its time is below the watermark: rows it could join may be gone"
	if o.k.window != nil {
		why = "every window holding it has fired"
	}
	next := 0
	err := lin.RowIDs(o.prefix+w.String()[:1]+".", int(in.NumRows()), func(row int, id []byte) error {
		if next == len(o.late) || int(o.late[next]) != row {
			return nil
		}
		next++
		o.buf = o.enc[w].AppendRow(o.buf[:0], in, row)
		reason := fmt.Sprintf("late: %s row with event time %s behind the watermark %s: %s",
			w, tcol.ValueStr(row), time.UnixMilli(o.last).UTC().Format(time.RFC3339Nano), why)
		return o.dl.Add(ctx, natsio.DeadLetter{ID: string(id), Payload: o.buf, Reason: reason, Class: ClassLate})
	})
	if err == nil && !o.dl.Transactional() {
		err = o.dl.Wait(ctx)
	}
	if err != nil {
		o.dl.Rollback(mark)
		return fmt.Errorf("%s: late rows: %w", o.jn.kind, err)
	}
	return nil
}

func (o *joinOp) OnWatermark(_ context.Context, wm messages.Watermark, out actors.Emitter) error {
	ms := watermarkMillis(wm)
	if ms <= o.last {
		return nil
	}
	o.last = ms
	switch {
	case o.k.interval != nil:
		if o.jn.kind == intervalJoin || o.jn.on.retention > 0 {
			o.k.interval.Expire(ms)
		}
	case o.k.window != nil:
		rec, err := o.k.window.Fire(o.mem, ms)
		if err != nil {
			return err
		}
		if rec != nil {
			out.Emit(rec)
		}
	}
	return nil
}

// PrepareCheckpoint writes, in one batch, what changed since the last
// checkpoint: for interval and window joins the input batches buffered
// since (each whole, as Arrow IPC, once) and the deletion of the batches
// all of whose rows the watermark has dropped since, and the watermark;
// for a lookup join the whole table, when it changed.
func (o *joinOp) PrepareCheckpoint(ctx context.Context, id uint64) error {
	err := o.checkpoint(ctx)
	if err == nil && o.dl != nil && o.dl.Transactional() {
		err = o.dl.Prepare(ctx, id)
	}
	if err != nil {
		return fmt.Errorf("%s: checkpoint %d: %w", o.jn.kind, id, err)
	}
	return nil
}

func (o *joinOp) checkpoint(ctx context.Context) error {
	var b persistence.Batch
	if o.k.lookup != nil {
		if !o.dirty {
			return nil
		}
		rec, err := o.k.lookup.Buffered(o.mem)
		if err != nil {
			return err
		}
		if rec == nil {
			b.Delete(joinTableKey)
		} else {
			v, err := messages.EncodeIPC(rec)
			rec.Release()
			if err != nil {
				return err
			}
			b.Put(joinTableKey, v)
		}
		if err := o.state.Apply(ctx, &b); err != nil {
			return err
		}
		o.dirty = false
		return nil
	}
	// Delete the batches written before all of whose rows the watermark
	// has dropped since; write those buffered since the last checkpoint.
	kept := o.stored[:0]
	for _, s := range o.stored {
		if s.deadline < o.last {
			b.Delete(s.key)
		} else {
			kept = append(kept, s)
		}
	}
	o.stored = kept
	for _, p := range o.pending {
		if p.deadline < o.last {
			continue
		}
		v, err := messages.EncodeIPC(p.rec)
		if err != nil {
			return err
		}
		key := append(binary.BigEndian.AppendUint64(append([]byte(nil), joinRowsPrefix...), o.seq), byte(p.w))
		o.seq++
		b.Put(key, v)
		o.stored = append(o.stored, storedRows{key: key, deadline: p.deadline})
	}
	o.releasePending()
	if o.last != int64(messages.MinWatermark) {
		b.Put(joinWatermarkKey, binary.BigEndian.AppendUint64(nil, uint64(o.last)))
	}
	if b.Len() == 0 {
		return nil
	}
	return o.state.Apply(ctx, &b)
}

func (o *joinOp) releasePending() {
	for i, p := range o.pending {
		p.rec.Release()
		o.pending[i] = pendingRows{}
	}
	o.pending = o.pending[:0]
}

func (o *joinOp) CheckpointComplete(ctx context.Context, id uint64) error {
	if o.dl == nil || !o.dl.Transactional() {
		return nil
	}
	return o.dl.Commit(ctx, id)
}

func (o *joinOp) Close(ctx context.Context) error {
	o.releasePending()
	if o.k != nil {
		o.k.close()
	}
	if o.dl == nil {
		return nil
	}
	err := o.dl.Flush(ctx)
	o.dl.Close()
	return err
}
