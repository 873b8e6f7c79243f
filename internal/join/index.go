package join

// hashIndex maps a 64-bit key hash to the head of a chain of entries (an
// int32 >= 0): open addressing with linear probing, which costs one probe
// sequence per insert where a Go map costs a lookup and an assignment.
// An empty slot holds -1; a slot whose chain was emptied holds -2 until
// the table is rebuilt.
type hashIndex struct {
	keys []uint64
	vals []int32
	used int // slots not -1
	live int // slots >= 0
}

const (
	slotEmpty   = -1
	slotCleared = -2
)

func (x *hashIndex) slot(h uint64) int {
	mask := uint64(len(x.keys) - 1)
	// The hashes are xxh3 outputs or combinations of them: mix anyway, so
	// that structured low bits do not cluster.
	i := (h * 0x9e3779b97f4a7c15) >> 7 & mask
	for {
		if x.vals[i] == slotEmpty || x.keys[i] == h {
			return int(i)
		}
		i = (i + 1) & mask
	}
}

// get returns the head of h's chain, or a negative value when there is
// none.
func (x *hashIndex) get(h uint64) int32 {
	if len(x.keys) == 0 {
		return slotEmpty
	}
	return x.vals[x.slot(h)]
}

// swap makes e the head of h's chain and returns the old head (-1: none).
func (x *hashIndex) swap(h uint64, e int32) int32 {
	if 2*(x.used+1) > len(x.keys) {
		x.rehash(2 * (x.live + 1))
	}
	i := x.slot(h)
	old := x.vals[i]
	switch old {
	case slotEmpty:
		x.keys[i] = h
		x.used++
		x.live++
	case slotCleared:
		x.live++
	}
	x.vals[i] = e
	return max(old, slotEmpty)
}

// set replaces the head of h's chain, which must exist; e < 0 empties it.
func (x *hashIndex) set(h uint64, e int32) {
	i := x.slot(h)
	if e < 0 {
		e = slotCleared
		x.live--
	}
	x.vals[i] = e
}

// reserve makes room for n more chains without rehashing.
func (x *hashIndex) reserve(n int) {
	if 2*(x.used+n) > len(x.keys) {
		x.rehash(x.live + n)
	}
}

// rehash rebuilds the table with room for n chains at most half full,
// dropping cleared slots.
func (x *hashIndex) rehash(n int) {
	size := 16
	for size < 2*n {
		size *= 2
	}
	keys, vals := x.keys, x.vals
	x.keys, x.vals = make([]uint64, size), make([]int32, size)
	for i := range x.vals {
		x.vals[i] = slotEmpty
	}
	x.used, x.live = 0, 0
	for i, v := range vals {
		if v >= 0 {
			j := x.slot(keys[i])
			x.keys[j], x.vals[j] = keys[i], v
			x.used++
			x.live++
		}
	}
}

// reset empties the index, keeping its memory.
func (x *hashIndex) reset() {
	for i := range x.vals {
		x.vals[i] = slotEmpty
	}
	x.used, x.live = 0, 0
}
