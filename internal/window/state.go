package window

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
)

// Checkpoint hands over what changed since the last Checkpoint (or since
// the table was made or restored): put(key, value) for every group added
// to or updated, del(key) for every group forgotten. A key is the key
// group of the group's key (big-endian uint16: kernels.HashColumns over
// the key columns modulo Config.MaxParallelism, as the keyed edge routes
// it; 0 without key columns), then its index key (encoded key columns |
// window start); a value encodes the group's state. The keys of a key
// group are thus one contiguous range, and an operator keeps them in its
// keyed state. An operator writes them into its Store in one batch at a
// checkpoint barrier and gives them back to Restore when it is restored:
// the table's state in the Store is then exactly its state at that
// checkpoint. key and value are valid only during the call.
func (t *Table) Checkpoint(put func(key, value []byte) error, del func(key []byte) error) error {
	var buf, kb []byte
	for _, r := range t.removed {
		kb = append(binary.BigEndian.AppendUint16(kb[:0], r.kg), r.key...)
		if err := del(kb); err != nil {
			return err
		}
	}
	t.removed = t.removed[:0]
	for g, key := range t.gkey {
		if key == "" || !t.changed[g] {
			continue
		}
		buf = t.encodeGroup(buf[:0], int32(g))
		kb = append(binary.BigEndian.AppendUint16(kb[:0], t.kgrp[g]), key...)
		if err := put(kb, buf); err != nil {
			return err
		}
		t.changed[g], t.stored[g] = false, true
	}
	return nil
}

// Restore adds one group written by Checkpoint. The key group is taken
// as stored: the operator restores the key groups it owns.
func (t *Table) Restore(key, value []byte) error {
	kg, ik, err := splitStoreKey(key)
	if err != nil {
		return fmt.Errorf("window: restore: group: %w", err)
	}
	if int(kg) >= t.cfg.MaxParallelism {
		return fmt.Errorf("window: restore: group %x: key group %d of %d", key, kg, t.cfg.MaxParallelism)
	}
	if _, ok := t.group(string(ik)); ok {
		return fmt.Errorf("window: restore: group %x twice", key)
	}
	start := int64(binary.LittleEndian.Uint64(ik[len(ik)-8:]))
	g := t.newGroup(string(ik), kg, start)
	rest, err := t.decodeGroup(value, g)
	if err == nil && len(rest) != 0 {
		err = fmt.Errorf("%d bytes left over", len(rest))
	}
	if err != nil {
		return fmt.Errorf("window: restore group %x: %w", key, err)
	}
	t.changed[g], t.stored[g] = false, true
	return nil
}

// encodeGroup: dirty (1 byte) | each accumulator's state.
func (t *Table) encodeGroup(dst []byte, g int32) []byte {
	d := byte(0)
	if t.dirty[g] {
		d = 1
	}
	dst = append(dst, d)
	for _, acc := range t.accs {
		dst = acc.encode(dst, g)
	}
	return dst
}

func (t *Table) decodeGroup(src []byte, g int32) ([]byte, error) {
	dirty, src, err := readBool(src)
	if err != nil {
		return nil, err
	}
	t.dirty[g] = dirty
	for _, acc := range t.accs {
		if src, err = acc.decode(src, g); err != nil {
			return nil, err
		}
	}
	return src, nil
}

// codec writes and reads one value of an accumulator.
type codec[T any] struct {
	enc func(dst []byte, v T) []byte
	dec func(src []byte) (T, []byte, error)
}

var int64Codec = codec[int64]{
	enc: func(dst []byte, v int64) []byte { return binary.AppendVarint(dst, v) },
	dec: func(src []byte) (int64, []byte, error) {
		v, n := binary.Varint(src)
		if n <= 0 {
			return 0, nil, errTruncated
		}
		return v, src[n:], nil
	},
}

var float64Codec = codec[float64]{
	enc: func(dst []byte, v float64) []byte { return binary.LittleEndian.AppendUint64(dst, math.Float64bits(v)) },
	dec: func(src []byte) (float64, []byte, error) {
		if len(src) < 8 {
			return 0, nil, errTruncated
		}
		return math.Float64frombits(binary.LittleEndian.Uint64(src)), src[8:], nil
	},
}

var stringCodec = codec[string]{
	enc: func(dst []byte, v string) []byte { return append(binary.AppendUvarint(dst, uint64(len(v))), v...) },
	dec: func(src []byte) (string, []byte, error) {
		l, n := binary.Uvarint(src)
		if n <= 0 || uint64(len(src)-n) < l {
			return "", nil, errTruncated
		}
		return string(src[n : n+int(l)]), src[n+int(l):], nil
	},
}

func appendBool(dst []byte, b bool) []byte {
	if b {
		return append(dst, 1)
	}
	return append(dst, 0)
}

func readBool(src []byte) (bool, []byte, error) {
	if len(src) < 1 || src[0] > 1 {
		return false, nil, errTruncated
	}
	return src[0] == 1, src[1:], nil
}

var errTruncated = errors.New("truncated or malformed")

func (a *countAcc) encode(dst []byte, g int32) []byte { return binary.AppendVarint(dst, a.n[g]) }
func (a *countAcc) decode(src []byte, g int32) ([]byte, error) {
	v, rest, err := int64Codec.dec(src)
	a.n[g] = v
	return rest, err
}

func (a *numAcc[T]) encode(dst []byte, g int32) []byte {
	dst = appendBool(dst, a.seen[g])
	return binary.LittleEndian.AppendUint64(dst, bitsOf(a.v[g]))
}
func (a *numAcc[T]) decode(src []byte, g int32) ([]byte, error) {
	seen, src, err := readBool(src)
	if err != nil || len(src) < 8 {
		return nil, errTruncated
	}
	a.seen[g], a.v[g] = seen, fromBits[T](binary.LittleEndian.Uint64(src))
	return src[8:], nil
}

func (a *avgAcc[T]) encode(dst []byte, g int32) []byte {
	dst = float64Codec.enc(dst, a.sum[g])
	return binary.AppendVarint(dst, a.n[g])
}
func (a *avgAcc[T]) decode(src []byte, g int32) ([]byte, error) {
	sum, src, err := float64Codec.dec(src)
	if err != nil {
		return nil, err
	}
	n, src, err := int64Codec.dec(src)
	a.sum[g], a.n[g] = sum, n
	return src, err
}

func (a *distinctAcc[T]) encode(dst []byte, g int32) []byte {
	// Sorted: a group's encoding depends on its state only.
	vs := slices.Sorted(maps.Keys(a.sets[g]))
	dst = binary.AppendUvarint(dst, uint64(len(vs)))
	for _, v := range vs {
		dst = a.c.enc(dst, v)
	}
	return dst
}
func (a *distinctAcc[T]) decode(src []byte, g int32) ([]byte, error) {
	n, k := binary.Uvarint(src)
	if k <= 0 || n > uint64(len(src)) {
		return nil, errTruncated
	}
	src = src[k:]
	var s map[T]struct{}
	if n > 0 {
		s = make(map[T]struct{}, n)
	}
	for range n {
		var v T
		var err error
		if v, src, err = a.c.dec(src); err != nil {
			return nil, err
		}
		s[v] = struct{}{}
	}
	a.sets[g] = s
	return src, nil
}

func (a *edgeAcc[T]) encode(dst []byte, g int32) []byte {
	dst = appendBool(dst, a.seen[g])
	if !a.seen[g] {
		return dst
	}
	dst = binary.AppendVarint(dst, a.at[g])
	return a.c.enc(dst, a.v[g])
}
func (a *edgeAcc[T]) decode(src []byte, g int32) ([]byte, error) {
	seen, src, err := readBool(src)
	if err != nil {
		return nil, err
	}
	a.reset(g)
	if !seen {
		return src, nil
	}
	at, src, err := int64Codec.dec(src)
	if err != nil {
		return nil, err
	}
	v, src, err := a.c.dec(src)
	if err != nil {
		return nil, err
	}
	a.v[g], a.at[g], a.seen[g] = v, at, true
	return src, nil
}

func bitsOf[T int64 | float64](v T) uint64 {
	switch x := any(v).(type) {
	case int64:
		return uint64(x)
	case float64:
		return math.Float64bits(x)
	}
	return 0
}

func fromBits[T int64 | float64](b uint64) T {
	var zero T
	switch any(zero).(type) {
	case int64:
		return any(int64(b)).(T)
	default:
		return any(math.Float64frombits(b)).(T)
	}
}
