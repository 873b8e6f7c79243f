package natsio

import (
	"maps"
	"sync"
)

// Tally counts dead letters by class (the Class constants). Operators that
// dead-letter for one port share its Tally, so status shows every dead
// letter of the port: decode failures at its source, contract violations at
// its boundary, rows too large at its sink. The zero value is ready; it is
// safe for concurrent use.
type Tally struct {
	mu sync.Mutex
	m  map[string]int64
}

// Add counts n dead letters of class.
func (t *Tally) Add(class string, n int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]int64{}
	}
	t.m[class] += n
}

// Counts returns the counts by class.
func (t *Tally) Counts() map[string]int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.m)
}

// Total is the number of dead letters of every class.
func (t *Tally) Total() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var n int64
	for _, c := range t.m {
		n += c
	}
	return n
}
