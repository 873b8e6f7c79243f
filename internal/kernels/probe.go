package kernels

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/arrow/scalar"
)

type probeResult struct {
	dt  arrow.DataType
	err error
}

// probeCache memoises probeOutputType by function name and argument type
// fingerprints.
var probeCache sync.Map // string -> probeResult

// probeOutputType returns the type arrow compute's function fn produces for
// arguments of the given types, by calling it on empty arrays. An error
// means compute has no kernel for those types.
func probeOutputType(fn string, types ...arrow.DataType) (arrow.DataType, error) {
	var key strings.Builder
	key.WriteString(fn)
	for _, t := range types {
		key.WriteByte('|')
		key.WriteString(t.Fingerprint())
	}
	if r, ok := probeCache.Load(key.String()); ok {
		return r.(probeResult).dt, r.(probeResult).err
	}
	dt, err := probe(fn, types)
	probeCache.Store(key.String(), probeResult{dt, err})
	return dt, err
}

func probe(fn string, types []arrow.DataType) (arrow.DataType, error) {
	mem := memory.DefaultAllocator
	args := make([]compute.Datum, len(types))
	for i, t := range types {
		arr := array.MakeArrayOfNull(mem, privateType(t), 0)
		args[i] = compute.NewDatum(arr)
		arr.Release()
		defer args[i].Release()
	}
	res, err := compute.CallFunction(compute.WithAllocator(context.Background(), mem), fn, nil, args...)
	if err != nil {
		return nil, err
	}
	defer res.Release()
	return res.(compute.ArrayLikeDatum).Type(), nil
}

// privateType returns a copy of dt when arrow compute could modify it.
//
// As of arrow-go v18.8.0 the arithmetic functions' type dispatch
// (replaceTemporalTypes) sets the Unit of the *arrow.TimestampType and
// *arrow.DurationType of their arguments in place when the units differ:
// timestamp[ms] + duration[us] would turn the caller's timestamp[ms] type
// (perhaps a schema's, or the shared arrow.FixedWidthTypes.Timestamp_ms)
// into timestamp[us]. Kernels therefore never hand compute's arithmetic a
// type they do not own.
func privateType(dt arrow.DataType) arrow.DataType {
	switch t := dt.(type) {
	case *arrow.TimestampType:
		return &arrow.TimestampType{Unit: t.Unit, TimeZone: t.TimeZone}
	case *arrow.DurationType:
		return &arrow.DurationType{Unit: t.Unit}
	}
	return dt
}

// privateDatum returns d, or for a timestamp or duration argument a datum
// with the same values and a private copy of the type (see privateType).
// The result is a new reference: release it.
func privateDatum(d compute.Datum) compute.Datum {
	switch d := d.(type) {
	case *compute.ArrayDatum:
		v := d.Value
		dt := privateType(v.DataType())
		if dt == v.DataType() {
			v.Retain()
			return &compute.ArrayDatum{Value: v}
		}
		data := array.NewData(dt, v.Len(), v.Buffers(), v.Children(), v.NullN(), v.Offset())
		return &compute.ArrayDatum{Value: data}
	case *compute.ScalarDatum:
		dt := privateType(d.Type())
		switch s := d.Value.(type) {
		case *scalar.Timestamp:
			if dt != d.Type() && s.IsValid() {
				return compute.NewDatum(scalar.NewTimestampScalar(s.Value, dt))
			}
		case *scalar.Duration:
			if dt != d.Type() && s.IsValid() {
				return compute.NewDatum(scalar.NewDurationScalar(s.Value, dt))
			}
		}
		if dt != d.Type() {
			return compute.NewDatum(scalar.MakeNullScalar(dt))
		}
		return compute.NewDatum(d.Value)
	}
	return compute.NewDatum(d)
}

// alignTemporalUnits casts a timestamp or duration operand to the finest
// time unit of the two operands, replacing (and releasing) it.
//
// arrow compute's arithmetic would instead relabel the coarser type in
// place without scaling the values (arrow-go v18.8.0: timestamp[ms] 1000
// plus duration[us] 1 gives timestamp[us] 1001, not 1000001).
func alignTemporalUnits(ctx context.Context, args ...*compute.Datum) error {
	unit, temporal := arrow.Second, false
	for _, a := range args {
		switch dt := (*a).(compute.ArrayLikeDatum).Type().(type) {
		case *arrow.Date64Type:
			unit, temporal = max(unit, arrow.Millisecond), true
		case arrow.TemporalWithUnit:
			unit, temporal = max(unit, dt.TimeUnit()), true
		}
	}
	if !temporal {
		return nil
	}
	for _, a := range args {
		var to arrow.DataType
		switch dt := (*a).(compute.ArrayLikeDatum).Type().(type) {
		case *arrow.TimestampType:
			if dt.Unit != unit {
				to = &arrow.TimestampType{Unit: unit, TimeZone: dt.TimeZone}
			}
		case *arrow.DurationType:
			if dt.Unit != unit {
				to = &arrow.DurationType{Unit: unit}
			}
		}
		if to == nil {
			continue
		}
		res, err := compute.CastDatum(ctx, *a, compute.SafeCastOptions(to))
		if err != nil {
			return fmt.Errorf("cast %s to %s: %w: %w", (*a).(compute.ArrayLikeDatum).Type(), to, ErrOverflow, err)
		}
		(*a).Release()
		*a = res
	}
	return nil
}
