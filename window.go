package meshflow

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/actors/natsio"
	"github.com/meshflow/meshflow/internal/window"
	"github.com/meshflow/meshflow/messages"
	"github.com/meshflow/meshflow/persistence"
)

// Windows describes event-time windows for [Stream.Window]: their kind
// and size, the time column, the allowed lateness and where late rows go.
type Windows struct {
	spec     window.Spec
	gap      int64 // session windows: the gap (ms)
	time     string
	lateness time.Duration
	late     string
	err      error
}

// TumblingWindows are windows of size, one after the other, aligned on the
// Unix epoch, over the time column (a millisecond timestamp or int64
// milliseconds).
func TumblingWindows(size time.Duration, timeColumn string) Windows {
	return Windows{spec: window.Tumbling(size.Milliseconds()), time: timeColumn}.check(size, size)
}

// SlidingWindows are windows of size starting every slide, over the time
// column: a row is in about size/slide of them.
func SlidingWindows(size, slide time.Duration, timeColumn string) Windows {
	return Windows{spec: window.Sliding(size.Milliseconds(), slide.Milliseconds()), time: timeColumn}.check(size, slide)
}

// SessionWindows are windows of activity per key, over the time column:
// rows of a key less than gap apart are in one session, [first row,
// last row + gap); a row within gap of two sessions merges them into
// one. A session is emitted when the watermark passes its end; a
// session extended or merged by rows within the allowed lateness is
// emitted again, whole (the sessions a merge replaced are not emitted
// again, nor retracted: the merged session covers them).
func SessionWindows(gap time.Duration, timeColumn string) Windows {
	w := Windows{gap: gap.Milliseconds(), time: timeColumn}
	if gap%time.Millisecond != 0 || gap <= 0 {
		w.err = fmt.Errorf("session gap %v: want positive whole milliseconds", gap)
	}
	return w
}

func (w Windows) check(size, slide time.Duration) Windows {
	if size%time.Millisecond != 0 || slide%time.Millisecond != 0 || size <= 0 || slide <= 0 {
		w.err = fmt.Errorf("windows of %v every %v: want positive whole milliseconds", size, slide)
	}
	return w
}

// AllowedLateness keeps each window for d after the watermark passed its
// end: a row arriving meanwhile updates it, and the window is emitted
// again, whole, at the next watermark. Rows later than that are late.
func (w Windows) AllowedLateness(d time.Duration) Windows {
	w.lateness = d
	return w
}

// LateRowsTo publishes late rows (every window holding them closed), as
// JSON, to subject, with the reason in the dead-letter headers (class
// "late"): exactly once with checkpoints. A stream is created for subject
// if none captures it. Without it, late rows go to "<job>.<operator>.late".
func (w Windows) LateRowsTo(subject string) Windows {
	w.late = subject
	return w
}

// Aggregate is one aggregate of [Stream.Window], named with As (default:
// "<function>_<column>", or "count").
type Aggregate struct {
	kind    window.AggKind
	column  string
	name    string
	columns []string
	user    func(in []arrow.DataType) (AggregateFunc, error)
}

// Count counts the rows of a window.
func Count() Aggregate { return Aggregate{kind: window.Count, name: "count"} }

// CountOf counts the non-null values of column.
func CountOf(column string) Aggregate { return agg(window.Count, column) }

// Sum adds the non-null values of an int64 or float64 column (null when
// there are none; int64 sums wrap on overflow).
func Sum(column string) Aggregate { return agg(window.Sum, column) }

// Min and Max keep the least and greatest non-null value of an int64 or
// float64 column.
func Min(column string) Aggregate { return agg(window.Min, column) }

// Max: see [Min].
func Max(column string) Aggregate { return agg(window.Max, column) }

// Avg is the float64 mean of the non-null values of an int64 or float64
// column.
func Avg(column string) Aggregate { return agg(window.Avg, column) }

// CountDistinct counts the distinct non-null values of an int64 or string
// column, exactly.
func CountDistinct(column string) Aggregate { return agg(window.CountDistinct, column) }

// First and Last keep the value of the row with the earliest and the
// latest event time (int64, float64 or string columns).
func First(column string) Aggregate { return agg(window.First, column) }

// Last: see [First].
func Last(column string) Aggregate { return agg(window.Last, column) }

// AggregateFunc is a user-defined aggregate, columnar like the built-in
// ones: one instance per window operator instance keeps an accumulator
// per group (a dense group index, handed out and reused by the window),
// and is called once per batch, never once per row:
//
//   - Grow(n) makes room for n groups, the new ones empty; Reset(g)
//     empties group g for reuse.
//   - Update(cols, rows, groups) folds row rows[p] of cols (the
//     aggregate's input columns, borrowed for the call) into group
//     groups[p], for every p: a typed loop over the column buffers.
//   - Merge(dst, src) folds group src into dst: session windows merge
//     sessions a row bridges.
//   - Result(mem, groups) returns the results of groups, in order, as
//     an array of DataType() (handed over to the caller).
//   - AppendState and ReadState write and read one group's state, for
//     checkpoints: the codec is the aggregate's own; ReadState must
//     return an error, never panic, on damaged bytes.
type AggregateFunc interface {
	DataType() arrow.DataType
	Grow(n int)
	Reset(g int32)
	Update(cols []arrow.Array, rows, groups []int32)
	Merge(dst, src int32)
	Result(mem memory.Allocator, groups []int32) arrow.Array
	AppendState(dst []byte, g int32) []byte
	ReadState(src []byte, g int32) ([]byte, error)
}

// UserAggregate is a user-defined aggregate named name over the input
// columns columns: newFunc is given their types (once per operator
// instance, and by Validate) and returns a fresh AggregateFunc, or an
// error for types it cannot aggregate.
func UserAggregate(name string, columns []string, newFunc func(in []arrow.DataType) (AggregateFunc, error)) Aggregate {
	return Aggregate{kind: window.User, name: name, columns: columns, user: newFunc}
}

func agg(k window.AggKind, column string) Aggregate {
	return Aggregate{kind: k, column: column, name: k.String() + "_" + column}
}

// As names the aggregate's output column.
func (a Aggregate) As(name string) Aggregate {
	a.name = name
	return a
}

// Window aggregates the rows of each key (the columns of the KeyBy before
// it; without KeyBy, all rows, with parallelism 1) in event-time windows,
// and emits one row per key and window when the watermark passes the
// window's end: the key columns, window_start, window_end (millisecond
// timestamps) and one column per aggregate. The input's schema must be
// known (declared by its source). The aggregates live in memory and are
// written to the operator's keyed state at every checkpoint (the windows
// changed since the last one only), each in the key group of its key (a
// window without KeyBy: key group 0), so a recovery resumes them.
func (s *Stream) Window(name string, w Windows, aggs []Aggregate, opts ...Option) *Stream {
	n := &node{name: name, kind: kindOperator, window: &windowNode{w: w, aggs: aggs, keys: s.key}}
	return s.p.add(n, opts, s.in())
}

// windowNode is what a Window node needs to be validated and built.
type windowNode struct {
	w    Windows
	aggs []Aggregate
	keys []string
}

// config is the window table's configuration over the input schema in.
func (wn *windowNode) config(in *arrow.Schema) (window.Config, error) {
	if wn.w.err != nil {
		return window.Config{}, wn.w.err
	}
	if wn.w.lateness < 0 {
		return window.Config{}, fmt.Errorf("allowed lateness %v: must not be negative", wn.w.lateness)
	}
	col := func(name string) (int, error) {
		idx := in.FieldIndices(name)
		if len(idx) != 1 {
			return 0, fmt.Errorf("no column %q in %s", name, fieldNames(in))
		}
		return idx[0], nil
	}
	// The operator sets MaxParallelism to the job's in Open.
	cfg := window.Config{Spec: wn.w.spec, Gap: wn.w.gap, Schema: in, AllowedLateness: wn.w.lateness.Milliseconds(),
		MaxParallelism: actors.DefaultMaxParallelism}
	var err error
	if cfg.Time, err = col(wn.w.time); err != nil {
		return cfg, fmt.Errorf("time column: %w", err)
	}
	for _, k := range wn.keys {
		i, err := col(k)
		if err != nil {
			return cfg, fmt.Errorf("key: %w", err)
		}
		cfg.Keys = append(cfg.Keys, i)
	}
	if len(wn.aggs) == 0 {
		return cfg, fmt.Errorf("a window needs at least one aggregate")
	}
	for _, a := range wn.aggs {
		if a.kind == window.User {
			ua := window.Agg{Kind: window.User, Column: -1, Name: a.name}
			for _, name := range a.columns {
				c, err := col(name)
				if err != nil {
					return cfg, fmt.Errorf("aggregate %s: %w", a.name, err)
				}
				ua.Columns = append(ua.Columns, c)
			}
			user := a.user
			if user != nil {
				ua.User = func(in []arrow.DataType) (window.UDAF, error) {
					f, err := user(in)
					if f == nil || err != nil {
						return nil, err
					}
					return f, nil
				}
			}
			cfg.Aggs = append(cfg.Aggs, ua)
			continue
		}
		c := -1
		if a.column != "" {
			if c, err = col(a.column); err != nil {
				return cfg, fmt.Errorf("aggregate %s: %w", a.name, err)
			}
		}
		cfg.Aggs = append(cfg.Aggs, window.Agg{Kind: a.kind, Column: c, Name: a.name})
	}
	return cfg, nil
}

// validate reports what keeps a Window node from running.
func (wn *windowNode) validate(in *arrow.Schema, parallelism int) error {
	if in == nil {
		return fmt.Errorf("a window needs its input's schema (declare the source's schema, or OutputSchema on a custom operator before it)")
	}
	if len(wn.keys) == 0 && parallelism > 1 {
		return fmt.Errorf("a window without KeyBy runs with parallelism 1, not %d", parallelism)
	}
	cfg, err := wn.config(in)
	if err != nil {
		return err
	}
	_, err = newWindowTable(cfg)
	return err
}

// windowTable is a window.Table or window.Sessions.
type windowTable interface {
	Add(arrow.RecordBatch) error
	Late() []int32
	Fire(memory.Allocator, int64) (arrow.RecordBatch, error)
	Checkpoint(put func(key, value []byte) error, del func(key []byte) error) error
	Restore(key, value []byte) error
	SetWatermark(int64)
	Watermark() int64
	Schema() *arrow.Schema
}

func newWindowTable(cfg window.Config) (windowTable, error) {
	if cfg.Gap > 0 {
		return window.NewSessions(cfg)
	}
	return window.NewTable(cfg)
}

// build returns the factory of the window operator's instances.
func (wn *windowNode) build(env *runEnv, in *arrow.Schema) func() actors.Operator {
	return func() actors.Operator {
		return &windowOp{wn: wn, in: in, nc: env.nc}
	}
}

// windowOp runs a window.Table: Process adds batches, OnWatermark fires,
// PrepareCheckpoint writes the changed windows into the operator's keyed
// state (and the watermark into the instance's Store), and late rows go
// to a dead-letter subject.
type windowOp struct {
	wn *windowNode
	in *arrow.Schema
	nc *nats.Conn

	mem    memory.Allocator
	state  persistence.Store // the windows: keyed state, by key group
	meta   persistence.Store // the watermark: the instance's own
	tab    windowTable
	dl     *natsio.DeadLetters
	enc    *messages.JSONRowEncoder
	prefix string
	batch  persistence.Batch
	buf    []byte
	last   int64 // the last watermark fired
}

// watermarkKey holds, in the window.meta namespace, the table's watermark
// at the last checkpoint.
var watermarkKey = []byte("watermark")

// ClassLate is the dead-letter class of rows later than a window's
// allowed lateness.
const ClassLate = "late"

func (o *windowOp) Open(ctx context.Context, oc actors.OperatorContext) error {
	cfg, err := o.wn.config(o.in)
	if err != nil {
		return err
	}
	cfg.MaxParallelism = oc.MaxParallelism()
	if o.tab, err = newWindowTable(cfg); err != nil {
		return err
	}
	o.mem, o.state, o.meta = oc.Allocator(), oc.KeyedState(), oc.State().Namespace("window.meta")
	o.last = int64(messages.MinWatermark)
	// The windows of the instance's own key groups: those its input
	// routes to it.
	lo, hi := oc.KeyGroups()
	var prefix []byte
	for g := lo; g < hi; g++ {
		prefix = actors.KeyGroupKey(prefix[:0], g)
		if err := o.state.Scan(ctx, prefix, func(k, v []byte) error { return o.tab.Restore(k, v) }); err != nil {
			return fmt.Errorf("window: restore key group %d: %w", g, err)
		}
	}
	// Lateness after a restore is judged by the watermark of the
	// checkpoint, as it was when the rows came the first time.
	switch v, err := o.meta.Get(ctx, watermarkKey); {
	case err == nil && len(v) == 8:
		o.last = int64(binary.BigEndian.Uint64(v))
		o.tab.SetWatermark(o.last)
	case err == nil:
		return fmt.Errorf("window: restore: watermark of %d bytes", len(v))
	case !errors.Is(err, persistence.ErrNotFound):
		return fmt.Errorf("window: restore: %w", err)
	}
	if o.enc, err = messages.NewJSONRowEncoder(o.in); err != nil {
		return err
	}
	subject := o.wn.w.late
	if subject == "" {
		subject = oc.Job() + "." + oc.Operator() + ".late"
	}
	js, err := jetstream.New(o.nc)
	if err != nil {
		return fmt.Errorf("window: %w", err)
	}
	if _, err := natsio.EnsureStream(ctx, js, natsio.StreamName(subject), []string{subject}); err != nil {
		return fmt.Errorf("window: late rows: %w", err)
	}
	dcfg := natsio.DeadLettersConfig{Subject: subject, Job: oc.Job(), Operator: oc.Operator()}
	if oc.Checkpointing() {
		dcfg.Store, dcfg.Instance = oc.State().Namespace("late"), oc.Instance()
	}
	if o.dl, err = natsio.NewDeadLetters(o.nc, dcfg); err != nil {
		return fmt.Errorf("window: %w", err)
	}
	if o.dl.Transactional() && oc.RestoredCheckpoint() > 0 {
		if _, err := o.dl.Recover(ctx); err != nil {
			return fmt.Errorf("window: late rows: %w", err)
		}
	}
	o.prefix = oc.Job() + "." + oc.Operator() + ".late."
	return nil
}

func (o *windowOp) Process(ctx context.Context, in arrow.RecordBatch, _ actors.Emitter) error {
	mark := o.dl.Mark()
	if err := o.tab.Add(in); err != nil {
		return err
	}
	late := o.tab.Late()
	if len(late) == 0 {
		return nil
	}
	lin := actors.InputLineage(ctx)
	if lin == nil {
		lin = &messages.Lineage{Origin: "seq" + strconv.FormatUint(actors.InputSeq(ctx), 36)}
	}
	tcol := in.Column(in.Schema().FieldIndices(o.wn.w.time)[0])
	next := 0
	err := lin.RowIDs(o.prefix, int(in.NumRows()), func(row int, id []byte) error {
		if next == len(late) || int(late[next]) != row {
			return nil
		}
		next++
		o.buf = o.enc.AppendRow(o.buf[:0], in, row)
		what := "every window holding it is closed"
		if o.wn.w.gap > 0 {
			what = fmt.Sprintf("its session (gap %v) would be closed, and it falls in no session held", time.Duration(o.wn.w.gap)*time.Millisecond)
		}
		reason := fmt.Sprintf("late: event time %s is more than the allowed lateness %v behind the watermark %s: %s",
			tcol.ValueStr(row), o.wn.w.lateness, time.UnixMilli(o.last).UTC().Format(time.RFC3339Nano), what)
		return o.dl.Add(ctx, natsio.DeadLetter{ID: string(id), Payload: o.buf, Reason: reason, Class: ClassLate})
	})
	if err == nil && !o.dl.Transactional() {
		err = o.dl.Wait(ctx)
	}
	if err != nil {
		o.dl.Rollback(mark)
		return fmt.Errorf("window: late rows: %w", err)
	}
	return nil
}

func (o *windowOp) OnWatermark(_ context.Context, wm messages.Watermark, out actors.Emitter) error {
	o.last = watermarkMillis(wm)
	rec, err := o.tab.Fire(o.mem, o.last)
	if err != nil {
		return err
	}
	if rec != nil {
		out.Emit(rec)
	}
	return nil
}

func (o *windowOp) PrepareCheckpoint(ctx context.Context, id uint64) error {
	o.batch.Reset()
	err := o.tab.Checkpoint(func(k, v []byte) error {
		o.batch.Put(k, v)
		return nil
	}, func(k []byte) error {
		o.batch.Delete(k)
		return nil
	})
	if err == nil && o.batch.Len() > 0 {
		err = o.state.Apply(ctx, &o.batch)
	}
	if err == nil && o.tab.Watermark() != int64(messages.MinWatermark) {
		var b persistence.Batch
		b.Put(watermarkKey, binary.BigEndian.AppendUint64(nil, uint64(o.tab.Watermark())))
		err = o.meta.Apply(ctx, &b)
	}
	if err == nil && o.dl.Transactional() {
		err = o.dl.Prepare(ctx, id)
	}
	if err != nil {
		return fmt.Errorf("window: checkpoint %d: %w", id, err)
	}
	return nil
}

func (o *windowOp) CheckpointComplete(ctx context.Context, id uint64) error {
	if !o.dl.Transactional() {
		return nil
	}
	return o.dl.Commit(ctx, id)
}

func (o *windowOp) Close(ctx context.Context) error {
	if o.dl == nil {
		return nil
	}
	err := o.dl.Flush(ctx)
	o.dl.Close()
	return err
}

// watermarkMillis converts a watermark (microseconds) to the milliseconds
// of window times, rounding down.
func watermarkMillis(wm messages.Watermark) int64 {
	switch wm {
	case messages.MinWatermark, messages.MaxWatermark:
		return int64(wm)
	}
	ms := int64(wm) / 1000
	if int64(wm)%1000 < 0 {
		ms--
	}
	return ms
}
