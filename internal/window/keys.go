package window

import (
	"encoding/binary"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// encodeKeys writes the encoded key of every row of cols (int64 and
// string key columns: the encoding of int64Key and stringKey) into buf,
// row i's at buf[off[i]:off[i+1]], one typed loop per column: a pass for
// the lengths, a pass for the bytes. It returns buf and off.
func encodeKeys(cols []arrow.Array, n int, buf []byte, off []int32) ([]byte, []int32) {
	off = append(off[:0], make([]int32, n+1)...)
	// Lengths, at off[i+1].
	for _, c := range cols {
		switch c := c.(type) {
		case *array.Int64:
			for i := range n {
				if c.IsNull(i) {
					off[i+1]++
				} else {
					off[i+1] += 9
				}
			}
		case *array.String:
			for i := range n {
				if c.IsNull(i) {
					off[i+1]++
					continue
				}
				l := c.ValueLen(i)
				off[i+1] += int32(1 + uvarintLen(uint64(l)) + l)
			}
		}
	}
	for i := range n {
		off[i+1] += off[i]
	}
	total := int(off[n])
	if cap(buf) < total {
		buf = make([]byte, total)
	}
	buf = buf[:total]
	// Bytes: pos[i] is where row i's next column goes (off[i] to start).
	pos := make([]int32, n)
	copy(pos, off[:n])
	for _, c := range cols {
		switch c := c.(type) {
		case *array.Int64:
			vals := c.Int64Values()
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
				if c.IsNull(i) {
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
	return buf, off
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}
