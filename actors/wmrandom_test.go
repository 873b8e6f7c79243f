package actors

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/meshflow/meshflow/internal/testutil"
	"github.com/meshflow/meshflow/messages"
)

// Randomized test of watermarks and idle inputs in a running job: sources
// (one plain, two Partitioned) with an idle timeout, each on a clock of its
// own that the test moves, feed one union operator. A model written from
// docs/watermarks.md predicts, after every step, each instance's
// watermark and idleness; the job must reach exactly that.

// rndClock is a source's clock: it moves only when the test says.
type rndClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *rndClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *rndClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// rndSource reads the batches the test sends it, batch b of partition
// b.part; it runs its instance's idle checks on clock (set in Open, on the
// instance's goroutine).
type rndSource struct {
	in    chan partBatch
	clock *rndClock
	parts int
	last  int
}

func (s *rndSource) Open(_ context.Context, oc OperatorContext) error {
	oc.(*instance).timers.now = s.clock.now
	return nil
}
func (s *rndSource) Close(context.Context) error { return nil }
func (s *rndSource) Read(ctx context.Context) (arrow.RecordBatch, error) {
	select {
	case b, ok := <-s.in:
		if !ok {
			return nil, io.EOF
		}
		s.last = b.part
		return b.rec, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type rndPartitioned struct{ *rndSource }

func (s rndPartitioned) Partitions() int { return s.parts }
func (s rndPartitioned) Partition() int  { return s.last }

// rndUnion passes its input on; it counts the rows at or below its
// watermark when they arrive (late rows) and records every watermark it
// is given.
type rndUnion struct {
	oc  OperatorContext
	mu  *sync.Mutex
	log *rndUnionLog
}

type rndUnionLog struct {
	late int64
	wms  []messages.Watermark
}

func (u *rndUnion) Open(_ context.Context, oc OperatorContext) error { u.oc = oc; return nil }
func (u *rndUnion) Close(context.Context) error                      { return nil }
func (u *rndUnion) Process(_ context.Context, in arrow.RecordBatch, out Emitter) error {
	wm := int64(u.oc.Timers().Watermark())
	late := int64(0)
	for _, ts := range in.Column(1).(*array.Timestamp).TimestampValues() {
		if int64(ts) <= wm {
			late++
		}
	}
	u.mu.Lock()
	u.log.late += late
	u.mu.Unlock()
	in.Retain()
	out.Emit(in)
	return nil
}

func (u *rndUnion) OnWatermark(_ context.Context, wm messages.Watermark, _ Emitter) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.log.wms = append(u.log.wms, wm)
	return nil
}

// Model of the documented rules.

type mPart struct {
	wm       messages.Watermark
	idle     bool
	lastData time.Duration
}

type mSource struct {
	partitioned bool
	nparts      int
	parts       []mPart // a Partitioned source's, from its first batch
	plain       mPart   // a plain source's lastData
	clock       time.Duration
	wm          messages.Watermark
	idleOut     bool
}

type mChan struct {
	wm   messages.Watermark
	idle bool
}

type wmModel struct {
	srcs     []*mSource
	chans    []mChan
	wm       messages.Watermark
	idleOut  bool
	rowsIn   int64
	late     int64
	lateRows int64 // late rows after their input rejoined
	timeout  time.Duration
	bound    int64
}

// combine is combineWatermarks over parts or channels (wmtrack.go): the
// minimum over the active ones; ok false when none is active and some idle.
func combine(wms []messages.Watermark, idle []bool) (wm messages.Watermark, ok, allIdle bool) {
	wm = messages.MaxWatermark
	active, idles := 0, 0
	for i := range wms {
		if idle[i] {
			idles++
			continue
		}
		active++
		wm = min(wm, wms[i])
	}
	if active == 0 && idles > 0 {
		return 0, false, true
	}
	return wm, true, false
}

// union recomputes the union's watermark after an event on its inputs.
func (m *wmModel) union() {
	wms := make([]messages.Watermark, len(m.chans))
	idle := make([]bool, len(m.chans))
	for i, c := range m.chans {
		wms[i], idle[i] = c.wm, c.idle
	}
	wm, ok, allIdle := combine(wms, idle)
	if allIdle {
		m.idleOut = true
		return
	}
	if ok && wm > m.wm {
		m.wm, m.idleOut = wm, false
	}
}

// sourceWM raises source i's watermark to wm and sends it on.
func (m *wmModel) sourceWM(i int, wm messages.Watermark) {
	s := m.srcs[i]
	if wm <= s.wm {
		return
	}
	s.wm, s.idleOut = wm, false
	c := &m.chans[i]
	c.idle = false
	c.wm = max(c.wm, wm)
	m.union()
}

func (m *wmModel) partsMin(s *mSource) (messages.Watermark, bool) {
	wms := make([]messages.Watermark, len(s.parts))
	idle := make([]bool, len(s.parts))
	for i, p := range s.parts {
		wms[i], idle[i] = p.wm, p.idle
	}
	wm, ok, _ := combine(wms, idle)
	return wm, ok && wm != messages.MinWatermark
}

// data: source i reads a batch of partition part with times ts.
func (m *wmModel) data(i, part int, ts []int64) {
	s := m.srcs[i]
	maxTS := ts[0]
	for _, v := range ts {
		maxTS = max(maxTS, v)
	}
	bwm := messages.Watermark(maxTS - m.bound - 1)
	wm, has := bwm, true
	if s.partitioned {
		if s.parts == nil {
			s.parts = make([]mPart, s.nparts)
			for p := range s.parts {
				s.parts[p] = mPart{wm: messages.MinWatermark, lastData: s.clock}
			}
		}
		p := &s.parts[part]
		p.idle, p.lastData = false, s.clock
		p.wm = max(p.wm, bwm)
		wm, has = m.partsMin(s)
	}
	s.plain.lastData = s.clock
	// The batch goes out first (the source is active again), then the
	// watermark.
	s.idleOut = false
	c := &m.chans[i]
	rejoin := c.idle
	c.idle = false
	late := int64(0)
	for _, v := range ts {
		if messages.Watermark(v) <= m.wm {
			late++
		}
	}
	m.late += late
	if rejoin {
		m.lateRows += late
	}
	m.rowsIn += int64(len(ts))
	m.idleOut = false // the union passes the batch on
	m.union()         // an input that rejoins counts again at once
	if has {
		m.sourceWM(i, wm)
	}
}

// idleCheck is a source's idle check (watermark.go, partitions.go).
func (m *wmModel) idleCheck(i int) {
	s := m.srcs[i]
	if s.idleOut {
		return
	}
	if s.parts == nil {
		if s.clock-s.plain.lastData >= m.timeout {
			m.goIdle(i)
		}
		return
	}
	all := true
	for p := range s.parts {
		if s.clock-s.parts[p].lastData >= m.timeout {
			s.parts[p].idle = true
		}
		all = all && s.parts[p].idle
	}
	if all {
		m.goIdle(i)
		return
	}
	if wm, ok := m.partsMin(s); ok {
		m.sourceWM(i, wm)
	}
}

func (m *wmModel) goIdle(i int) {
	m.srcs[i].idleOut = true
	m.chans[i].idle = true
	m.union()
}

func (m *wmModel) String() string {
	var b strings.Builder
	for i, s := range m.srcs {
		fmt.Fprintf(&b, "src%d: wm %d idle %v clock %v;", i, s.wm, s.idleOut, s.clock)
		for p, pt := range s.parts {
			fmt.Fprintf(&b, " p%d wm %d idle %v last %v;", p, pt.wm, pt.idle, pt.lastData)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "union: wm %d idle %v rows %d late %d", m.wm, m.idleOut, m.rowsIn, m.late)
	return b.String()
}

// TestIdleWatermarksRandom: three sources (plain, 2 and 3 partitions), with
// an idle timeout, feed a union. Each step either sends one source a batch
// of one partition, its rows out of order within the out-of-orderness
// bound of the partition's largest time so far (partitions and sources
// advancing at different speeds), or moves one source's clock by half the
// idle timeout (its partitions that read nothing for the timeout go idle,
// the source when all are). After each step every instance's watermark
// and idleness (Node.Stats) must be the model's: a source's the minimum
// over its active partitions, the union's the minimum over its active
// inputs, neither ever going back (the union's OnWatermark calls strictly
// rise); an input rejoining with rows below the union's watermark has them
// processed as late rows, and the union's watermark stays until the
// minimum passes it again.
func TestIdleWatermarksRandom(t *testing.T) {
	seed := testutil.Seed(t)
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	mem, nc, _ := ckEnv(t)
	const (
		bound   = 5_000 // µs
		timeout = 40 * time.Millisecond
		steps   = 150
	)
	t0 := time.Unix(1_700_000_000, 0)
	nparts := []int{1, 2, 3}
	m := &wmModel{wm: messages.MinWatermark, timeout: timeout, bound: bound}
	var ins []chan partBatch
	var clocks []*rndClock
	var verts []*Vertex
	var edges []Edge
	for i, n := range nparts {
		in := make(chan partBatch, 4)
		clock := &rndClock{t: t0}
		ins, clocks = append(ins, in), append(clocks, clock)
		partitioned := n > 1
		name := fmt.Sprintf("src%d", i)
		verts = append(verts, &Vertex{Name: name, Parallelism: 1, EventTime: &EventTime{Column: "ts", MaxOutOfOrderness: bound * time.Microsecond},
			IdleTimeout: timeout,
			NewSource: func() Source {
				s := &rndSource{in: in, clock: clock, parts: n}
				if partitioned {
					return rndPartitioned{s}
				}
				return s
			}})
		edges = append(edges, Edge{From: name, To: "union", Partitioning: Forward})
		m.srcs = append(m.srcs, &mSource{partitioned: partitioned, nparts: n, wm: messages.MinWatermark})
		m.chans = append(m.chans, mChan{wm: messages.MinWatermark})
	}
	var umu sync.Mutex
	ulog := &rndUnionLog{}
	verts = append(verts, &Vertex{Name: "union", Parallelism: 1, NewOperator: func() Operator { return &rndUnion{mu: &umu, log: ulog} }})
	graph := &JobGraph{Name: "wm-random", Vertices: verts, Edges: edges}
	pl := Placement{}
	for _, v := range verts {
		pl[InstanceID{v.Name, 0}] = "local"
	}
	n, err := NewNode(NodeConfig{ID: "local", NATS: nc, Allocator: mem, Logger: testutil.TestLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithCancel(testutil.Context(t, 2*time.Minute))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	done := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		done <- n.Run(ctx, graph, pl)
	}()
	defer func() {
		// Batches the sources did not read (a failed check).
		for _, in := range ins {
			for drained := false; !drained; {
				select {
				case b, ok := <-in:
					if ok {
						b.rec.Release()
					} else {
						drained = true
					}
				default:
					drained = true
				}
			}
		}
	}()

	// Each partition advances at a speed of its own: up to speed bounds
	// per batch.
	speed := map[[2]int]int64{}
	for i, np := range nparts {
		for p := range np {
			speed[[2]int{i, p}] = 1 + rng.Int64N(4)
		}
	}
	his := map[[2]int]int64{} // the largest time sent on each partition
	var history []string
	check := func(step int) {
		t.Helper()
		testutil.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
			select {
			case err := <-done:
				done <- err
				t.Fatalf("the job ended: %v", err)
			default:
			}
			var errs []string
			stats := n.Stats(graph.Name)
			if len(stats) != len(verts) {
				return fmt.Errorf("%d instances run, want %d", len(stats), len(verts))
			}
			for _, is := range stats {
				var wantWM messages.Watermark
				var wantIdle bool
				if is.ID.Operator == "union" {
					wantWM, wantIdle = m.wm, m.idleOut
					if is.RowsIn != m.rowsIn {
						errs = append(errs, fmt.Sprintf("union: %d rows in, want %d", is.RowsIn, m.rowsIn))
					}
				} else {
					var i int
					fmt.Sscanf(is.ID.Operator, "src%d", &i)
					wantWM, wantIdle = m.srcs[i].wm, m.srcs[i].idleOut
				}
				if is.Watermark != wantWM || is.Idle != wantIdle {
					errs = append(errs, fmt.Sprintf("%s: watermark %d idle %v, want %d idle %v", is.ID.Operator, is.Watermark, is.Idle, wantWM, wantIdle))
				}
			}
			umu.Lock()
			late, wms := ulog.late, append([]messages.Watermark(nil), ulog.wms...)
			umu.Unlock()
			if late != m.late {
				errs = append(errs, fmt.Sprintf("union: %d late rows, want %d", late, m.late))
			}
			for k := 1; k < len(wms); k++ {
				if wms[k] <= wms[k-1] {
					t.Fatalf("step %d: the union's watermark went from %d to %d (seed %d)", step, wms[k-1], wms[k], seed)
				}
			}
			if len(errs) > 0 {
				return fmt.Errorf("step %d (seed %d): %s\nmodel:\n%s\nsteps:\n%s", step, seed, strings.Join(errs, "; "), m, strings.Join(history, "\n"))
			}
			return nil
		})
	}
	send := func(step, i, part int, ts ...int64) {
		b := array.NewRecordBuilder(mem, wmSchema)
		for _, v := range ts {
			b.Field(0).(*array.Int64Builder).Append(int64(step))
			b.Field(1).(*array.TimestampBuilder).Append(arrow.Timestamp(v))
		}
		rec := b.NewRecordBatch()
		b.Release()
		key := [2]int{i, part}
		for _, v := range ts {
			his[key] = max(his[key], v)
		}
		history = append(history, fmt.Sprintf("%d: src%d partition %d: rows %v", step, i, part, ts))
		m.data(i, part, ts)
		m.idleCheck(i)
		ins[i] <- partBatch{rec: rec, part: part}
		check(step)
	}
	advance := func(step, i int) {
		clocks[i].advance(timeout / 2)
		m.srcs[i].clock += timeout / 2
		history = append(history, fmt.Sprintf("%d: src%d clock +%v", step, i, timeout/2))
		m.idleCheck(i)
		check(step)
	}
	check(-1)
	// First a fixed scenario: every input idle, the union holding its
	// watermark where the last one left it; then an input rejoins with a
	// batch that does not raise its own watermark: the union counts it
	// again at once.
	T := t0.UnixMicro()
	send(-1, 0, 0, T+100_000)
	send(-1, 1, 0, T+100_000)
	send(-1, 1, 1, T+100_000)
	for p := range 3 {
		send(-1, 2, p, T+60_000)
	}
	for i := range 3 {
		advance(-1, i)
		advance(-1, i)
	}
	if !m.idleOut || m.wm != messages.Watermark(T+60_000-bound-1) {
		t.Fatalf("the scenario's model went wrong: %s", m)
	}
	send(-1, 0, 0, T+99_000)
	if m.wm != messages.Watermark(T+100_000-bound-1) {
		t.Fatalf("the scenario's model went wrong: %s", m)
	}
	for step := range steps {
		i := rng.IntN(len(nparts))
		if rng.IntN(100) >= 55 {
			advance(step, i)
			continue
		}
		part := rng.IntN(nparts[i])
		key := [2]int{i, part}
		hi, seen := his[key]
		if seen {
			hi += rng.Int64N(speed[key]*bound + 1)
		} else {
			hi = T + rng.Int64N(20*bound)
		}
		ts := make([]int64, 1+rng.IntN(3))
		for r := range ts {
			ts[r] = hi - rng.Int64N(bound+1)
		}
		ts[rng.IntN(len(ts))] = hi
		send(step, i, part, ts...)
	}
	if m.lateRows == 0 {
		t.Errorf("no input rejoined with rows below the union's watermark in %d steps (seed %d): the test did not exercise it", steps, seed)
	}
	t.Logf("%d rows, %d late after a rejoin, %d late in all; union watermark %d", m.rowsIn, m.lateRows, m.late, m.wm)
	for _, in := range ins {
		close(in)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
