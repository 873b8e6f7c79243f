package operators

import (
	"context"
	"errors"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/internal/expr"
	"github.com/meshflow/meshflow/internal/kernels"
)

type stageKind uint8

const (
	stageFilter stageKind = iota + 1
	stageProject
)

// Stage is one operator of a [Fused] chain, made by [FilterStage] or
// [ProjectStage].
type Stage struct {
	kind    stageKind
	pred    expr.Expr
	columns []string
}

// FilterStage is a [Filter] on pred.
func FilterStage(pred expr.Expr) Stage { return Stage{kind: stageFilter, pred: pred} }

// ProjectStage is a [Project] to columns.
func ProjectStage(columns ...string) Stage { return Stage{kind: stageProject, columns: columns} }

// Fused runs a chain of filters and projections, each fed by the one
// before it alone, as one operator whose output is that of the last, row
// for row and position for position (lineage), as if they ran one after
// another: every predicate is evaluated over the input batch (through the
// projections before it, which copy nothing) and the masks are ANDed, so a
// row is kept where every predicate is true (a null drops it, as in
// [Filter]); then only the columns of the last projection are gathered,
// once, from the kept rows.
//
// A predicate that fails over the whole batch (an overflow, a division by
// zero) may fail on rows an earlier filter drops: the chain then runs
// again filter by filter, each predicate over the rows the filters before
// it kept, and fails only where the filters run apart would, with their
// error.
type Fused struct {
	base
	head []fusedStage
}

type fusedStage struct {
	kind    stageKind
	pred    boundCache
	columns []string
	proj    projection
}

// NewFused returns the operator running stages in order.
func NewFused(stages ...Stage) (*Fused, error) {
	f := &Fused{}
	if len(stages) == 0 {
		return nil, errors.New("fused chain: no stages")
	}
	for _, s := range stages {
		fs := fusedStage{kind: s.kind}
		switch s.kind {
		case stageFilter:
			fs.pred = boundCache{e: s.pred}
		case stageProject:
			fs.columns = s.columns
		default:
			return nil, errors.New("fused chain: zero Stage")
		}
		f.head = append(f.head, fs)
	}
	return f, nil
}

func (f *Fused) Process(ctx context.Context, in arrow.RecordBatch, out actors.Emitter) error {
	view := in
	view.Retain()
	defer func() { view.Release() }()
	var mask *array.Boolean
	defer func() {
		if mask != nil {
			mask.Release()
		}
	}()
	for i := range f.head {
		s := &f.head[i]
		if s.kind == stageProject {
			p, err := s.proj.apply(view, s.columns)
			if err != nil {
				return err
			}
			view.Release()
			view = p
			continue
		}
		m, err := s.evalMask(ctx, view)
		if err != nil {
			if mask != nil && !errors.Is(err, errNotBoolean) {
				// Maybe only rows an earlier filter drops fail.
				return f.stepwise(ctx, in, out)
			}
			return err
		}
		if mask == nil {
			mask = m
			continue
		}
		both, err := kernels.And(expr.Scratch(), mask, m)
		m.Release()
		if err != nil {
			return fmt.Errorf("filter %s: %w", s.pred.e, err)
		}
		mask.Release()
		mask = both
	}
	var res arrow.RecordBatch
	if mask == nil {
		view.Retain()
		res = view
	} else {
		var err error
		if res, err = kernels.Filter(f.mem, view, mask); err != nil {
			return fmt.Errorf("filter: %w", err)
		}
	}
	if mask == nil {
		actors.EmitSameRows(out, res)
	} else {
		actors.EmitSelected(out, res, mask)
	}
	return nil
}

var errNotBoolean = errors.New("predicate is not boolean")

// evalMask evaluates the stage's predicate over rec into a mask from the
// scratch allocator, which the caller releases.
func (s *fusedStage) evalMask(ctx context.Context, rec arrow.RecordBatch) (*array.Boolean, error) {
	b, err := s.pred.get(rec.Schema())
	if err != nil {
		return nil, err
	}
	m, err := b.Eval(ctx, expr.Scratch(), rec)
	if err != nil {
		return nil, fmt.Errorf("filter %s: %w", s.pred.e, err)
	}
	mask, ok := m.(*array.Boolean)
	if !ok {
		m.Release()
		return nil, fmt.Errorf("filter %s: %w: %s", s.pred.e, errNotBoolean, m.DataType())
	}
	return mask, nil
}

// stepwise runs the chain one filter after another, each over the rows the
// ones before kept.
func (f *Fused) stepwise(ctx context.Context, in arrow.RecordBatch, out actors.Emitter) error {
	cur := in
	cur.Retain()
	defer func() { cur.Release() }()
	var rows []int32 // input position of each row of cur; nil: all, in order
	for i := range f.head {
		s := &f.head[i]
		var next arrow.RecordBatch
		if s.kind == stageProject {
			p, err := s.proj.apply(cur, s.columns)
			if err != nil {
				return err
			}
			next = p
		} else {
			m, err := s.evalMask(ctx, cur)
			if err != nil {
				return err
			}
			next, err = kernels.Filter(f.mem, cur, m)
			if err == nil {
				rows = keptRows(rows, m)
			}
			m.Release()
			if err != nil {
				return fmt.Errorf("filter %s: %w", s.pred.e, err)
			}
		}
		cur.Release()
		cur = next
	}
	cur.Retain()
	actors.EmitTaken(out, cur, rows)
	return nil
}

// keptRows returns the entries of rows (nil: 0, 1, …) where mask is true.
func keptRows(rows []int32, mask *array.Boolean) []int32 {
	n := mask.Len()
	bits := mask.Data().Buffers()[1].Bytes()
	off := mask.Data().Offset()
	kept := make([]int32, 0, n)
	for j := range n {
		if bitutil.BitIsSet(bits, off+j) && mask.IsValid(j) {
			if rows == nil {
				kept = append(kept, int32(j))
			} else {
				kept = append(kept, rows[j])
			}
		}
	}
	return kept
}
