package window

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

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

// keyGroups sets groups[i] to the key group of row i of the key columns
// cols: the hash of the keyed edge (kernels.HashColumns) modulo maxP, so
// a window's state lands in the key groups of the instance its rows are
// routed to. Without key columns every row is in key group 0. It returns
// hashes and groups, reused from batch to batch.
func keyGroups(cols []arrow.Array, n, maxP int, hashes []uint64, groups []uint16) ([]uint64, []uint16, error) {
	groups = slices.Grow(groups[:0], n)[:n]
	if len(cols) == 0 {
		clear(groups)
		return hashes, groups, nil
	}
	hashes = slices.Grow(hashes[:0], n)[:n]
	if err := kernels.HashColumns(cols, hashes); err != nil {
		return hashes, groups, fmt.Errorf("window: key groups: %w", err)
	}
	m := uint64(maxP)
	for i, h := range hashes {
		groups[i] = uint16(h % m)
	}
	return hashes, groups, nil
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
