package kernels

import (
	"context"
	"strings"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"
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
		arr := array.MakeArrayOfNull(mem, t, 0)
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
