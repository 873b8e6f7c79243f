package window

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow/internal/kernels"
)

// encodeKeys writes the encoded key of every row of cols (int64 and
// string key columns: the encoding of int64Key and stringKey) into buf,
// row i's at buf[off[i]:off[i+1]], one typed loop per column: a pass for
// the lengths, a pass for the bytes (pos is scratch). Columns without
// nulls take loops that test none. It returns buf, off and pos, to be
// reused.
func encodeKeys(cols []arrow.Array, n int, buf []byte, off, pos []int32) ([]byte, []int32, []int32) {
	off = slices.Grow(off[:0], n+1)[:n+1]
	clear(off)
	// Lengths, at off[i+1].
	lens := off[1:]
	for _, c := range cols {
		nulls := c.NullN() > 0
		switch c := c.(type) {
		case *array.Int64:
			if !nulls {
				for i := range lens {
					lens[i] += 9
				}
				continue
			}
			for i := range lens {
				if c.IsNull(i) {
					lens[i]++
				} else {
					lens[i] += 9
				}
			}
		case *array.String:
			for i := range lens {
				if nulls && c.IsNull(i) {
					lens[i]++
					continue
				}
				l := c.ValueLen(i)
				lens[i] += int32(1 + uvarintLen(uint64(l)) + l)
			}
		}
	}
	for i := range n {
		off[i+1] += off[i]
	}
	total := int(off[n])
	buf = slices.Grow(buf[:0], total)[:total]
	// Bytes: pos[i] is where row i's next column goes (off[i] to start).
	pos = append(pos[:0], off[:n]...)
	for _, c := range cols {
		nulls := c.NullN() > 0
		switch c := c.(type) {
		case *array.Int64:
			vals := c.Int64Values()
			if !nulls {
				for i, v := range vals {
					p := pos[i]
					buf[p] = 1
					binary.LittleEndian.PutUint64(buf[p+1:], uint64(v))
					pos[i] = p + 9
				}
				continue
			}
			for i, v := range vals {
				p := pos[i]
				if c.IsNull(i) {
					buf[p] = 0
					pos[i]++
					continue
				}
				buf[p] = 1
				binary.LittleEndian.PutUint64(buf[p+1:], uint64(v))
				pos[i] += 9
			}
		case *array.String:
			for i := range n {
				p := pos[i]
				if nulls && c.IsNull(i) {
					buf[p] = 0
					pos[i]++
					continue
				}
				v := c.Value(i)
				buf[p] = 1
				k := binary.PutUvarint(buf[p+1:], uint64(len(v)))
				copy(buf[int(p)+1+k:], v)
				pos[i] += int32(1 + k + len(v))
			}
		}
	}
	return buf, off, pos
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// keyGroupLen is the length of the key group every stored key starts
// with: a big-endian uint16.
const keyGroupLen = 2

// keyHasher computes key groups: the hash of the keyed edge
// (kernels.HashColumns over the key columns) modulo the max parallelism,
// so a window's state lands in the key groups of the instance its rows
// are routed to. Without key columns every row is in key group 0. Its
// buffers are reused from batch to batch.
type keyHasher struct {
	mem    memory.Allocator // for the rows taken (released at once)
	maxP   int
	hashes []uint64
	groups []uint16
	taken  []arrow.Array
}

// of returns the key groups of rows of the key columns cols (of n rows),
// in the order of rows; valid until the next call. Few rows of many are
// taken out of the columns and hashed; otherwise every row is hashed.
func (h *keyHasher) of(cols []arrow.Array, n int, rows []int32) ([]uint16, error) {
	m := len(rows)
	h.groups = slices.Grow(h.groups[:0], m)[:m]
	if len(cols) == 0 {
		clear(h.groups)
		return h.groups, nil
	}
	mp := uint64(h.maxP)
	if m*4 >= n {
		h.hashes = slices.Grow(h.hashes[:0], n)[:n]
		if err := kernels.HashColumns(cols, h.hashes); err != nil {
			return nil, fmt.Errorf("window: key groups: %w", err)
		}
		for i, r := range rows {
			h.groups[i] = uint16(h.hashes[r] % mp)
		}
		return h.groups, nil
	}
	h.taken = h.taken[:0]
	defer func() {
		for _, a := range h.taken {
			a.Release()
		}
		clear(h.taken)
	}()
	for _, c := range cols {
		a, err := kernels.TakeArray(h.mem, c, rows)
		if err != nil {
			return nil, fmt.Errorf("window: key groups: %w", err)
		}
		h.taken = append(h.taken, a)
	}
	h.hashes = slices.Grow(h.hashes[:0], m)[:m]
	if err := kernels.HashColumns(h.taken, h.hashes); err != nil {
		return nil, fmt.Errorf("window: key groups: %w", err)
	}
	for i, x := range h.hashes {
		h.groups[i] = uint16(x % mp)
	}
	return h.groups, nil
}

// splitStoreKey splits a stored key into its key group and index key.
func splitStoreKey(key []byte) (uint16, []byte, error) {
	if len(key) < keyGroupLen+8 {
		return 0, nil, fmt.Errorf("key %x too short", key)
	}
	return binary.BigEndian.Uint16(key), key[keyGroupLen:], nil
}

// checkMaxParallelism reports a number of key groups a key group of two
// bytes cannot hold.
func checkMaxParallelism(maxP int) error {
	if maxP < 1 || maxP > 1<<16 {
		return fmt.Errorf("window: max parallelism %d out of range [1, 65536]", maxP)
	}
	return nil
}
