package actors

import (
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// lineageEmitter is implemented by the runtime's emitter: it records how
// the rows of an emitted batch derive from the rows of the input batch being
// processed, so their positions (see [Positioner]) follow them.
type lineageEmitter interface {
	emitLineage(rec arrow.RecordBatch, how rowMap)
}

// rowMap says which input row each emitted row comes from: all of them in
// order (same), those where mask is true (a filter; null counts as false),
// or the listed rows.
type rowMap struct {
	same bool
	mask *array.Boolean
	rows []int32
}

// EmitSameRows emits rec whose row i is (derived from) row i of the input
// batch being processed, as Map and Project emit. Like Emit, it hands rec
// over.
func EmitSameRows(out Emitter, rec arrow.RecordBatch) {
	if le, ok := out.(lineageEmitter); ok {
		le.emitLineage(rec, rowMap{same: true})
		return
	}
	out.Emit(rec)
}

// EmitSelected emits rec holding the input rows where mask is true (a null
// is false), in order, as a filter emits. mask is borrowed for the call.
func EmitSelected(out Emitter, rec arrow.RecordBatch, mask *array.Boolean) {
	if le, ok := out.(lineageEmitter); ok {
		le.emitLineage(rec, rowMap{mask: mask})
		return
	}
	out.Emit(rec)
}

// EmitTaken emits rec whose row i is (derived from) input row rows[i].
// rows is borrowed for the call.
func EmitTaken(out Emitter, rec arrow.RecordBatch, rows []int32) {
	if le, ok := out.(lineageEmitter); ok {
		le.emitLineage(rec, rowMap{rows: rows})
		return
	}
	out.Emit(rec)
}
