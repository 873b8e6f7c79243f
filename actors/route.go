package actors

import (
	"fmt"
	"strconv"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/asynkron/protoactor-go/actor"

	"github.com/meshflow/meshflow/internal/kernels"
	"github.com/meshflow/meshflow/messages"
)

// dispatch routes the batches emitted by the last call to the outputs.
func (s *instance) dispatch(c actor.Context) {
	if len(s.emitted) == 0 {
		return
	}
	s.setIdle(false) // a batch makes its receiver count this instance again
	for i, rec := range s.emitted {
		s.stats.batchesOut.Add(1)
		s.stats.rowsOut.Add(rec.NumRows())
		lin := s.emittedLin[i]
		for _, e := range s.outs {
			el := lin
			if len(s.outs) > 1 {
				el = lin.Branch(strconv.Itoa(e.idx))
			}
			if err := s.route(c, e, rec, el); err != nil {
				for _, r := range s.emitted[i:] {
					r.Release()
				}
				s.emitted = s.emitted[:0]
				s.fail(err)
			}
		}
		rec.Release()
	}
	s.emitted = s.emitted[:0]
	clear(s.emittedLin)
	s.emittedLin = s.emittedLin[:0]
}

// route sends rec (borrowed), whose rows have lineage lin, over one output
// edge.
func (s *instance) route(c actor.Context, e *outEdge, rec arrow.RecordBatch, lin *messages.Lineage) error {
	switch e.edge.Partitioning {
	case Forward:
		rec.Retain()
		s.enqueue(c, e.targets[s.id.Index], messages.LineageEnvelope(rec, lin))
	case Rebalance:
		n := len(e.targets)
		e.rr = (e.rr + 1) % n
		rec.Retain()
		s.enqueue(c, e.targets[e.rr], messages.LineageEnvelope(rec, lin))
	case Broadcast:
		for j, oc := range e.targets {
			rec.Retain()
			s.enqueue(c, oc, messages.LineageEnvelope(rec, lin.Branch("b"+strconv.Itoa(j))))
		}
	case Hash:
		if e.schema != rec.Schema() {
			cols := make([]int, len(e.edge.KeyColumns))
			for i, name := range e.edge.KeyColumns {
				idx := rec.Schema().FieldIndices(name)
				if len(idx) != 1 {
					return fmt.Errorf("key column %q: not in the batch schema %s", name, rec.Schema())
				}
				cols[i] = idx[0]
			}
			e.schema, e.keyCols = rec.Schema(), cols
		}
		parts, rows, err := kernels.PartitionRows(s.mem, rec, e.keyCols, s.part.g.maxParallelism(), len(e.targets))
		if err != nil {
			return fmt.Errorf("partition by %v: %w", e.edge.KeyColumns, err)
		}
		for j, p := range parts {
			if p == nil {
				continue
			}
			pl := lin
			if rows[j] != nil {
				pl = lin.Take(rows[j])
			}
			s.enqueue(c, e.targets[j], messages.LineageEnvelope(p, pl))
		}
	}
	return nil
}
