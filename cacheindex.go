package meshflow

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
)

// entryIndex is the cache of one state: its entries by cache key, in an
// open-addressing hash table with linear probing (at most half full).
// Each slot holds the key's hash next to the entry, so a lookup compares
// keys only on a full hash match, and hashes the key (a few bytes: a key
// group and the key values) with a seeded multiply-xorshift mix rather
// than through the runtime's map.
type entryIndex struct {
	slots []indexSlot // len a power of two, or 0
	n     int
	seed  uint64
}

type indexSlot struct {
	h uint64 // the key's hash, never 0; 0: empty slot
	e *cacheEntry
}

func newEntryIndex() entryIndex { return entryIndex{seed: rand.Uint64()} }

// hash hashes key; the result is never 0.
func (x *entryIndex) hash(key []byte) uint64 {
	h := x.seed ^ uint64(len(key))*0x9e3779b97f4a7c15
	for len(key) >= 8 {
		h = mix(h ^ binary.LittleEndian.Uint64(key))
		key = key[8:]
	}
	var t uint64
	for i, c := range key {
		t |= uint64(c) << (8 * i)
	}
	return mix(h^t) | 1
}

func mix(h uint64) uint64 {
	hi, lo := bits.Mul64(h, 0xbf58476d1ce4e5b9)
	return hi ^ lo
}

// get returns the entry of key, or nil.
func (x *entryIndex) get(key []byte) *cacheEntry {
	if x.n == 0 {
		return nil
	}
	h := x.hash(key)
	mask := uint64(len(x.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		s := &x.slots[i]
		if s.h == h && s.e.key == string(key) {
			return s.e
		}
		if s.h == 0 {
			return nil
		}
	}
}

// put adds e, whose key is not in the index.
func (x *entryIndex) put(e *cacheEntry) {
	if 2*(x.n+1) > len(x.slots) {
		x.grow()
	}
	x.insert(x.hash(unsafeBytes(e.key)), e)
	x.n++
}

func (x *entryIndex) insert(h uint64, e *cacheEntry) {
	mask := uint64(len(x.slots) - 1)
	i := h & mask
	for x.slots[i].h != 0 {
		i = (i + 1) & mask
	}
	x.slots[i] = indexSlot{h, e}
}

func (x *entryIndex) grow() {
	old := x.slots
	x.slots = make([]indexSlot, max(16, 2*len(old)))
	for _, s := range old {
		if s.h != 0 {
			x.insert(s.h, s.e)
		}
	}
}

// del removes the entry of key, if any, shifting the entries after it
// back so that no probe sequence is broken.
func (x *entryIndex) del(key []byte) {
	if x.n == 0 {
		return
	}
	h := x.hash(key)
	mask := uint64(len(x.slots) - 1)
	i := h & mask
	for {
		s := &x.slots[i]
		if s.h == 0 {
			return
		}
		if s.h == h && s.e.key == string(key) {
			break
		}
		i = (i + 1) & mask
	}
	x.n--
	// Backward shift: move up every later entry of the run whose home
	// slot is not in (i, j].
	for j := (i + 1) & mask; x.slots[j].h != 0; j = (j + 1) & mask {
		home := x.slots[j].h & mask
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			x.slots[i] = x.slots[j]
			i = j
		}
	}
	x.slots[i] = indexSlot{}
}

// len is the number of entries.
func (x *entryIndex) len() int { return x.n }
