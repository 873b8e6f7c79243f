package kernels

import (
	"bytes"
	"fmt"
	"regexp"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// String kernels over string and large_string arrays (binary and
// large_binary too, as bytes). A null row gives a null result.

// StringMatch is a byte-string predicate.
type StringMatch uint8

// The predicates of MatchString.
const (
	Contains  StringMatch = iota + 1 // the value contains the pattern
	HasPrefix                        // the value starts with the pattern
	HasSuffix                        // the value ends with the pattern
)

func isVarBinary(dt arrow.DataType) bool {
	switch dt.ID() {
	case arrow.STRING, arrow.BINARY, arrow.LARGE_STRING, arrow.LARGE_BINARY:
		return true
	}
	return false
}

func isLarge(dt arrow.DataType) bool {
	return dt.ID() == arrow.LARGE_STRING || dt.ID() == arrow.LARGE_BINARY
}

// varValues returns the offsets (len n+1, with the array offset applied)
// and the data bytes of a string or binary array.
func varValues[O int32 | int64](data arrow.ArrayData) ([]O, []byte) {
	n := data.Len()
	bufs := data.Buffers()
	if n == 0 || bufs[1] == nil {
		return make([]O, 1), nil
	}
	offs := castSlice[O](bufs[1].Bytes())[data.Offset() : data.Offset()+n+1]
	var vals []byte
	if bufs[2] != nil {
		vals = bufs[2].Bytes()
	}
	return offs, vals
}

// MatchString returns, for every row of arr, whether it matches pattern
// under m.
func MatchString(mem memory.Allocator, m StringMatch, arr arrow.Array, pattern []byte) (arrow.Array, error) {
	dt := arr.DataType()
	if !isVarBinary(dt) {
		return nil, fmt.Errorf("match: %w: %s", ErrUnsupportedType, dt)
	}
	if m < Contains || m > HasSuffix {
		return nil, fmt.Errorf("match: %w: predicate %d", ErrInvalidArgument, m)
	}
	d := arr.Data()
	n := d.Len()
	out := newBitmap(mem, n)
	if isLarge(dt) {
		matchLoop(varValuesOf[int64](d), m, pattern, out.Bytes())
	} else {
		matchLoop(varValuesOf[int32](d), m, pattern, out.Bytes())
	}
	valid, nulls := copyValidity(mem, d)
	return makeArray(arrow.FixedWidthTypes.Boolean, n, []*memory.Buffer{valid, out}, nulls), nil
}

type varArray[O int32 | int64] struct {
	offs []O
	vals []byte
}

func varValuesOf[O int32 | int64](d arrow.ArrayData) varArray[O] {
	offs, vals := varValues[O](d)
	return varArray[O]{offs, vals}
}

func (v varArray[O]) len() int { return len(v.offs) - 1 }

func (v varArray[O]) at(i int) []byte { return v.vals[v.offs[i]:v.offs[i+1]] }

func matchLoop[O int32 | int64](a varArray[O], m StringMatch, p []byte, out []byte) {
	var match func([]byte, []byte) bool
	switch m {
	case Contains:
		match = bytes.Contains
	case HasPrefix:
		match = bytes.HasPrefix
	default:
		match = bytes.HasSuffix
	}
	for i := range a.len() {
		if match(a.at(i), p) {
			bitutil.SetBit(out, i)
		}
	}
}

// CaseMap is a case mapping of MapCase.
type CaseMap uint8

// The case mappings.
const (
	Lower CaseMap = iota + 1
	Upper
)

// MapCase returns every row of the string array arr in lower or upper
// case (Unicode case mapping; ASCII rows are mapped byte by byte).
func MapCase(mem memory.Allocator, c CaseMap, arr arrow.Array) (arrow.Array, error) {
	dt := arr.DataType()
	if dt.ID() != arrow.STRING && dt.ID() != arrow.LARGE_STRING {
		return nil, fmt.Errorf("case: %w: %s", ErrUnsupportedType, dt)
	}
	if c != Lower && c != Upper {
		return nil, fmt.Errorf("case: %w: mapping %d", ErrInvalidArgument, c)
	}
	if isLarge(dt) {
		return mapCase[int64](mem, c, arr)
	}
	return mapCase[int32](mem, c, arr)
}

func mapCase[O int32 | int64](mem memory.Allocator, c CaseMap, arr arrow.Array) (arrow.Array, error) {
	d := arr.Data()
	a := varValuesOf[O](d)
	n := a.len()
	lo, hi := a.offs[0], a.offs[n]
	span := a.vals[lo:hi]
	ascii := true
	for _, b := range span {
		if b >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		// Same offsets, rebased to 0; bytes mapped in one pass.
		obuf := newBuffer(mem, (n+1)*int(sizeOf[O]()))
		offs := castSlice[O](obuf.Bytes())[:n+1]
		for i, o := range a.offs {
			offs[i] = o - lo
		}
		vbuf := newBuffer(mem, len(span))
		out := vbuf.Bytes()[:len(span)]
		if c == Lower {
			for i, b := range span {
				out[i] = b + 0x20*boolByte(b >= 'A' && b <= 'Z')
			}
		} else {
			for i, b := range span {
				out[i] = b - 0x20*boolByte(b >= 'a' && b <= 'z')
			}
		}
		valid, nulls := copyValidity(mem, d)
		return makeArray(arr.DataType(), n, []*memory.Buffer{valid, obuf, vbuf}, nulls), nil
	}
	mapped := make([][]byte, n)
	for i := range n {
		if c == Lower {
			mapped[i] = bytes.ToLower(a.at(i))
		} else {
			mapped[i] = bytes.ToUpper(a.at(i))
		}
	}
	valid, nulls := copyValidity(mem, d)
	return newVarArray[O](mem, arr.DataType(), mapped, valid, nulls), nil
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

func sizeOf[O int32 | int64]() uintptr {
	var o O
	switch any(o).(type) {
	case int32:
		return 4
	}
	return 8
}

// newVarArray builds a string or binary array of type dt from vals (nil
// entries are empty), handing over valid.
func newVarArray[O int32 | int64](mem memory.Allocator, dt arrow.DataType, vals [][]byte, valid *memory.Buffer, nulls int) arrow.Array {
	n := len(vals)
	total := 0
	for _, v := range vals {
		total += len(v)
	}
	obuf := newBuffer(mem, (n+1)*int(sizeOf[O]()))
	offs := castSlice[O](obuf.Bytes())[:n+1]
	vbuf := newBuffer(mem, total)
	data := vbuf.Bytes()
	pos := 0
	for i, v := range vals {
		offs[i] = O(pos)
		pos += copy(data[pos:], v)
	}
	offs[n] = O(pos)
	return makeArray(dt, n, []*memory.Buffer{valid, obuf, vbuf}, nulls)
}

// RegexpExtract returns, for every row of the string array arr, the text
// of capture group group (0: the whole match) of the leftmost match of
// re; null where the row is null, re does not match or the group took no
// part in the match.
func RegexpExtract(mem memory.Allocator, arr arrow.Array, re *regexp.Regexp, group int) (arrow.Array, error) {
	dt := arr.DataType()
	if dt.ID() != arrow.STRING && dt.ID() != arrow.LARGE_STRING {
		return nil, fmt.Errorf("regexp extract: %w: %s", ErrUnsupportedType, dt)
	}
	if re == nil || group < 0 || group > re.NumSubexp() {
		return nil, fmt.Errorf("regexp extract: %w: group %d of %v", ErrInvalidArgument, group, re)
	}
	if isLarge(dt) {
		return regexpExtract[int64](mem, arr, re, group), nil
	}
	return regexpExtract[int32](mem, arr, re, group), nil
}

func regexpExtract[O int32 | int64](mem memory.Allocator, arr arrow.Array, re *regexp.Regexp, group int) arrow.Array {
	d := arr.Data()
	a := varValuesOf[O](d)
	n := a.len()
	in, off := validityBits(d), d.Offset()
	valid := newBitmap(mem, n)
	vb := valid.Bytes()
	vals := make([][]byte, n)
	nulls := 0
	for i := range n {
		if !isValid(in, off, i) {
			nulls++
			continue
		}
		v := a.at(i)
		m := re.FindSubmatchIndex(v)
		if m == nil || m[2*group] < 0 {
			nulls++
			continue
		}
		vals[i] = v[m[2*group]:m[2*group+1]]
		bitutil.SetBit(vb, i)
	}
	if nulls == 0 {
		valid.Release()
		valid = nil
	}
	return newVarArray[O](mem, arr.DataType(), vals, valid, nulls)
}
