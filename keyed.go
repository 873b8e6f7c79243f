package meshflow

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/internal/kernels"
	"github.com/meshflow/meshflow/persistence"
)

// Keyed state
//
// A KeyedState holds an operator instance's state per key: values
// ([ValueState]), maps ([MapState]), lists ([ListState]) and timers, for the
// keys of the key groups the instance owns. Rows reach the instance that
// owns their key through a keyed edge (Stream.KeyBy); [KeyRows] computes,
// for a batch, each row's [StateKey] with the same hash, so state lands in
// the instance's own key groups.
//
// Reads and writes work on an in-memory cache. Changed entries go to the
// operator's keyed store (Badger on a node) in batches: at every checkpoint
// barrier, and when the cache's bytes pass KeyedOptions.MemoryBound; then
// cold entries are evicted, and read back on their next use. State larger
// than memory therefore works, within the bound (see docs/state.md).

// Kinds of timers (Timer.Kind).
const (
	EventTimeTimer      = actors.EventTimeTimer
	ProcessingTimeTimer = actors.ProcessingTimeTimer
)

// ErrKeyGroupNotOwned is wrapped by the errors of keyed state used with a
// key of a key group the instance does not own: an input not keyed by the
// key columns given to KeyRows.Compute.
var ErrKeyGroupNotOwned = actors.ErrKeyGroupNotOwned

// DefaultKeyedMemoryBound is the default of KeyedOptions.MemoryBound.
const DefaultKeyedMemoryBound = 64 << 20

// entryOverhead is what a cached entry counts beyond its key and value
// bytes: the map slot, the entry struct and the slice headers.
const entryOverhead = 64

// StateKey is a key of keyed state: its key group as a big-endian uint16,
// then the bytes of the key (see [KeyRows]). It is what timers hand back.
type StateKey []byte

// Group is the key's key group.
func (k StateKey) Group() int { return int(binary.BigEndian.Uint16(k)) }

// Bytes is the key without its key group.
func (k StateKey) Bytes() []byte { return k[2:] }

// KeyedOptions configures a [KeyedState].
type KeyedOptions struct {
	// MemoryBound bounds the bytes the cache holds (keys, values and 64
	// bytes per entry); DefaultKeyedMemoryBound when 0. When a write makes
	// it pass the bound, every changed entry is written to the store in
	// batches and the cache is evicted to half the bound. Writes spilled
	// during one call of the operator are buffered by the runtime until the
	// call returns (see OperatorContext.State), so the memory in use is the
	// bound plus what one call writes. Keyed timers are held in memory
	// outside the bound (see RegisterEventTimer).
	MemoryBound int
	// Now is the clock of TTLs and processing-time timers; time.Now when
	// nil (tests set their own).
	Now func() time.Time
	// OnTimer receives the keyed timers that fire: the key and the timer
	// (its Tag as registered). The operator must implement TimerHandler
	// and pass its timers to [KeyedState.HandleTimer].
	OnTimer func(ctx context.Context, key StateKey, t Timer, out Emitter) error
}

// KeyedState is an operator instance's keyed state. Create it in the
// operator's Open with [NewKeyedState], then its states with
// [NewValueState], [NewMapState] and [NewListState]. It is used from the
// operator's goroutine only, like the operator.
type KeyedState struct {
	oc     OperatorContext
	store  persistence.Store
	lo, hi int
	maxP   int
	opts   KeyedOptions
	now    func() time.Time

	// states are the registered states; each caches its entries in its
	// own map (stateDesc.cache).
	states []*stateDesc
	bytes  int // cached bytes, as MemoryBound counts them
	// dirtyList holds the dirty entries, in the order they became dirty;
	// they stay in the cache until flushed (eviction flushes first).
	dirtyList []*cacheEntry
	names     map[string]bool
	batch     persistence.Batch
	kbuf      []byte // scratch for store keys
	victims   []*cacheEntry
	spills    int
	evicted   int

	// timers
	nextEvent, nextProc int64 // earliest armed, math.MaxInt64: none
	timers              map[string]*keyedTimer
	eventTimers         timerHeap
	procTimers          timerHeap
	timerDirty          []*keyedTimer
	tkbuf               []byte
	fireBuf             []firing
	ttlStates           []*stateDesc
	ttlCursor           int // key group the incremental TTL cleanup is at
}

// cacheEntry is a cached store entry: a value (present) or the knowledge
// that the key has none.
type cacheEntry struct {
	d       *stateDesc
	key     string // its key in d.cache (see stateDesc.cache)
	val     []byte
	present bool
	dirty   bool
	used    bool // set on use, cleared by the eviction sweep
	// Short keys and values are kept in the entry itself (key and val
	// point here), so a lookup touches one object.
	kinl [24]byte
	vinl [32]byte
}

// newEntry returns an entry of cache key key of d, without a value.
func newEntry(d *stateDesc, key []byte) *cacheEntry {
	e := &cacheEntry{d: d}
	if len(key) > 0 && len(key) <= len(e.kinl) {
		n := copy(e.kinl[:], key)
		e.key = unsafe.String(&e.kinl[0], n)
	} else {
		e.key = string(key)
	}
	return e
}

// setVal copies v into the entry's value.
func (e *cacheEntry) setVal(v []byte) {
	if cap(e.val) == 0 && len(v) <= len(e.vinl) {
		e.val = e.vinl[:0]
	}
	e.val = append(e.val[:0], v...)
}

// Timer tags of the runtime timers that wake keyed timers up.
const (
	keyedTimerTag = "meshflow.keyed"
	// timerState is the reserved state name of keyed timers.
	timerState = "\x00timers"
)

// NewKeyedState returns the keyed state of the operator instance of oc,
// registered with the runtime: its changes are written at every checkpoint
// barrier, and a failure of the instance recovers the job from its last
// checkpoint (with checkpoints off, it fails the job) rather than losing
// what the cache held.
func NewKeyedState(ctx context.Context, oc OperatorContext, opts KeyedOptions) (*KeyedState, error) {
	if opts.MemoryBound < 0 {
		return nil, fmt.Errorf("meshflow: keyed state: negative memory bound %d", opts.MemoryBound)
	}
	if opts.MemoryBound == 0 {
		opts.MemoryBound = DefaultKeyedMemoryBound
	}
	ks := &KeyedState{
		oc: oc, store: oc.KeyedState(), maxP: oc.MaxParallelism(), opts: opts,
		now: opts.Now, names: map[string]bool{},
		timers:    map[string]*keyedTimer{},
		nextEvent: math.MaxInt64, nextProc: math.MaxInt64,
	}
	if ks.now == nil {
		ks.now = time.Now
	}
	ks.lo, ks.hi = oc.KeyGroups()
	ks.ttlCursor = ks.lo
	oc.RegisterFlusher(ks)
	if err := ks.loadTimers(ctx); err != nil {
		return nil, err
	}
	return ks, nil
}

// KeyGroups is the range [start, end) of key groups the instance owns.
func (ks *KeyedState) KeyGroups() (start, end int) { return ks.lo, ks.hi }

// CachedBytes is the bytes the cache holds, as MemoryBound counts them.
func (ks *KeyedState) CachedBytes() int { return ks.bytes }

// Spills is the number of times the cache passed its bound, was written
// out and evicted.
func (ks *KeyedState) Spills() int { return ks.spills }

// FlushState writes every changed entry to the store; the runtime calls it
// at every checkpoint barrier (actors.StateFlusher). It also deletes
// expired entries of the states with a TTL from the store, so entries that
// are never read again are cleaned up too: each flush looks at about 4096
// of them, a key group at a time, going on at the next flush where it
// stopped.
func (ks *KeyedState) FlushState(ctx context.Context) error {
	if err := ks.flush(ctx); err != nil {
		return err
	}
	return ks.cleanupExpired(ctx)
}

// flush writes the dirty entries and the timer changes in batches of at
// most 4096 writes or 1 MiB, below Badger's transaction limit.
func (ks *KeyedState) flush(ctx context.Context) error {
	return ks.flushValues(ctx, true)
}

// flushValues writes the dirty entries, and the timer changes when timers
// is true.
func (ks *KeyedState) flushValues(ctx context.Context, timers bool) error {
	if len(ks.dirtyList) == 0 && (!timers || len(ks.timerDirty) == 0) {
		return nil
	}
	b := &ks.batch
	b.Reset()
	for i, e := range ks.dirtyList {
		ks.dirtyList[i] = nil
		ks.kbuf = e.d.appendStoreKey(ks.kbuf[:0], unsafeBytes(e.key))
		if e.present {
			b.Put(ks.kbuf, e.val)
		} else {
			b.Delete(ks.kbuf)
		}
		e.dirty = false
		if err := ks.applyIfFull(ctx); err != nil {
			return err
		}
	}
	ks.dirtyList = ks.dirtyList[:0]
	if timers {
		if err := ks.flushTimers(ctx); err != nil {
			return err
		}
	}
	if b.Len() > 0 {
		if err := ks.store.Apply(ctx, b); err != nil {
			return fmt.Errorf("meshflow: keyed state: flush: %w", err)
		}
		b.Reset()
	}
	return nil
}

// applyIfFull writes the flush batch once it holds 4096 writes or 1 MiB.
func (ks *KeyedState) applyIfFull(ctx context.Context) error {
	b := &ks.batch
	if b.Len() < 4096 && b.Size() < 1<<20 {
		return nil
	}
	if err := ks.store.Apply(ctx, b); err != nil {
		return fmt.Errorf("meshflow: keyed state: flush: %w", err)
	}
	b.Reset()
	return nil
}

// unsafeBytes is the bytes of s without a copy; they must not be
// modified (Batch.Put and Delete copy them).
func unsafeBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// spill runs when the cache passed its bound: it writes the changed values
// (timers wait for the barrier) and
// evicts entries not used since the last sweep (then any) until the cache
// holds half the bound.
func (ks *KeyedState) spill(ctx context.Context) error {
	if err := ks.flushValues(ctx, false); err != nil {
		return err
	}
	ks.spills++
	for _, d := range ks.states {
		d.last = nil
	}
	target := ks.opts.MemoryBound / 2
	for pass := 0; pass < 2 && ks.bytes > target; pass++ {
		for _, d := range ks.states {
			victims := ks.victims[:0]
			for _, s := range d.cache.slots {
				if ks.bytes <= target {
					break
				}
				e := s.e
				if s.h == 0 {
					continue
				}
				if e.used && pass == 0 {
					e.used = false
					continue
				}
				ks.bytes -= len(e.key) + len(e.val) + entryOverhead
				ks.evicted++
				victims = append(victims, e)
			}
			for i, e := range victims {
				d.cache.del(unsafeBytes(e.key))
				victims[i] = nil
			}
			ks.victims = victims[:0]
		}
	}
	return nil
}

// lookup returns the cache entry of key (see stateDesc.cache), reading
// the store on a miss.
func (d *stateDesc) lookup(ctx context.Context, key []byte) (*cacheEntry, error) {
	if e := d.last; e != nil && e.key == string(key) {
		e.used = true
		return e, nil
	}
	if e := d.cache.get(key); e != nil {
		e.used = true
		d.last = e
		return e, nil
	}
	ks := d.ks
	ks.kbuf = d.appendStoreKey(ks.kbuf[:0], key)
	v, err := ks.store.Get(ctx, ks.kbuf)
	e := newEntry(d, key)
	e.used = true
	switch {
	case err == nil:
		e.setVal(v)
		e.present = true
	case errors.Is(err, persistence.ErrNotFound):
	default:
		return nil, fmt.Errorf("meshflow: keyed state: read: %w", err)
	}
	d.cache.put(e)
	ks.bytes += len(key) + len(e.val) + entryOverhead
	d.last = e
	return e, ks.checkBound(ctx)
}

func (ks *KeyedState) checkBound(ctx context.Context) error {
	if ks.bytes > ks.opts.MemoryBound {
		return ks.spill(ctx)
	}
	return nil
}

// set caches a write of key (val nil and present false: a deletion).
func (d *stateDesc) set(ctx context.Context, key, val []byte, present bool) error {
	ks := d.ks
	e := d.last
	if e == nil || e.key != string(key) {
		if e = d.cache.get(key); e == nil {
			e = newEntry(d, key)
			d.cache.put(e)
			ks.bytes += len(key) + entryOverhead
		}
		d.last = e
	}
	ks.bytes += len(val) - len(e.val)
	if !e.dirty {
		ks.dirtyList = append(ks.dirtyList, e)
	}
	// Copied into the entry's buffer: callers pass scratch buffers.
	e.setVal(val)
	e.present, e.dirty, e.used = present, true, true
	return ks.checkBound(ctx)
}

// owned checks that key is in one of the instance's key groups.
func (ks *KeyedState) owned(key StateKey) error {
	if len(key) < 2 {
		return fmt.Errorf("meshflow: keyed state: key %x has no key group", []byte(key))
	}
	if g := key.Group(); g < ks.lo || g >= ks.hi {
		return fmt.Errorf("meshflow: keyed state: %w: key group %d, the instance owns [%d, %d) (is the input keyed by the same columns?)", actors.ErrKeyGroupNotOwned, g, ks.lo, ks.hi)
	}
	return nil
}

// stateDesc is a registered state: its name and TTL, and its cached
// entries.
type stateDesc struct {
	ks   *KeyedState
	name string
	ttl  time.Duration
	// cache holds the state's cached entries by their cache key: for
	// value and list states the StateKey (so a lookup builds no key), for
	// map states (isMap) the store key. last is the entry used last: a
	// read-modify-write looks the map up once. Reset when entries leave
	// the cache.
	cache entryIndex
	last  *cacheEntry
	isMap bool
	// prefix is uvarint(len(name)) | name: what follows the key group in
	// the store keys of the state.
	prefix []byte
	buf    []byte // scratch for store keys
	wbuf   []byte // scratch for values with their expiry
}

func (ks *KeyedState) register(name string, ttl time.Duration) (*stateDesc, error) {
	if name == "" || name[0] == 0 {
		return nil, fmt.Errorf("meshflow: keyed state: invalid state name %q", name)
	}
	if ks.names[name] {
		return nil, fmt.Errorf("meshflow: keyed state: state %q registered twice", name)
	}
	if ttl < 0 {
		return nil, fmt.Errorf("meshflow: keyed state %q: negative TTL", name)
	}
	ks.names[name] = true
	d := &stateDesc{ks: ks, name: name, ttl: ttl, cache: newEntryIndex()}
	ks.states = append(ks.states, d)
	d.prefix = binary.AppendUvarint(nil, uint64(len(name)))
	d.prefix = append(d.prefix, name...)
	if ttl > 0 {
		ks.ttlStates = append(ks.ttlStates, d)
	}
	return d, nil
}

// storeKey returns group | name | uvarint(len(key)) | key | sub in d.buf.
func (d *stateDesc) storeKey(key StateKey, sub []byte) ([]byte, error) {
	if err := d.ks.owned(key); err != nil {
		return nil, err
	}
	kb := key[2:]
	b := append(d.buf[:0], key[:2]...)
	b = append(b, d.prefix...)
	b = binary.AppendUvarint(b, uint64(len(kb)))
	b = append(b, kb...)
	b = append(b, sub...)
	d.buf = b
	return b, nil
}

// appendStoreKey appends to b the store key of cache key ck.
func (d *stateDesc) appendStoreKey(b, ck []byte) []byte {
	if d.isMap {
		return append(b, ck...)
	}
	b = append(b, ck[:2]...)
	b = append(b, d.prefix...)
	b = binary.AppendUvarint(b, uint64(len(ck)-2))
	return append(b, ck[2:]...)
}

// cacheKey returns the cache key of store key k of the state, in buf.
func (d *stateDesc) cacheKey(buf, k []byte) []byte {
	if d.isMap {
		return k
	}
	_, w := binary.Uvarint(k[2+len(d.prefix):])
	return append(append(buf[:0], k[:2]...), k[2+len(d.prefix)+max(w, 0):]...)
}

// key checks key and returns it as the cache key of a value or list
// state.
func (d *stateDesc) key(key StateKey) ([]byte, error) {
	if err := d.ks.owned(key); err != nil {
		return nil, err
	}
	return key, nil
}

// TTL encoding: a value of a state with a TTL starts with its expiry time,
// 8 bytes big-endian microseconds since the Unix epoch.

func (d *stateDesc) wrap(v []byte) []byte {
	if d.ttl == 0 {
		return v
	}
	d.wbuf = binary.BigEndian.AppendUint64(d.wbuf[:0], uint64(d.ks.now().Add(d.ttl).UnixMicro()))
	d.wbuf = append(d.wbuf, v...)
	return d.wbuf
}

// unwrap returns the value, or ok false when it has expired.
func (d *stateDesc) unwrap(v []byte) (_ []byte, ok bool) {
	if d.ttl == 0 {
		return v, true
	}
	if len(v) < 8 || int64(binary.BigEndian.Uint64(v)) <= d.ks.now().UnixMicro() {
		return nil, false
	}
	return v[8:], true
}

// get reads the value of a cache key, nil and false when absent or
// expired (an expired entry is deleted).
func (d *stateDesc) get(ctx context.Context, k []byte) ([]byte, bool, error) {
	e, err := d.lookup(ctx, k)
	if err != nil || !e.present {
		return nil, false, err
	}
	v, ok := d.unwrap(e.val)
	if !ok {
		return nil, false, d.set(ctx, k, nil, false)
	}
	return v, true, nil
}

func (d *stateDesc) put(ctx context.Context, k, v []byte) error {
	return d.set(ctx, k, d.wrap(v), true)
}

func (d *stateDesc) del(ctx context.Context, k []byte) error {
	return d.set(ctx, k, nil, false)
}

// cleanupBudget is about how many entries of states with a TTL one flush
// looks at for expired ones.
const cleanupBudget = 4096

// cleanupExpired deletes the expired entries of the states with a TTL
// from the store, a key group at a time from where the last call stopped,
// until it has looked at about cleanupBudget entries or at every group.
func (ks *KeyedState) cleanupExpired(ctx context.Context) error {
	if len(ks.ttlStates) == 0 {
		return nil
	}
	now := ks.now().UnixMicro()
	var b persistence.Batch
	seen := 0
	for n := 0; n < ks.hi-ks.lo && seen < cleanupBudget; n++ {
		g := ks.ttlCursor
		if ks.ttlCursor++; ks.ttlCursor >= ks.hi {
			ks.ttlCursor = ks.lo
		}
		for _, d := range ks.ttlStates {
			prefix := append(actors.KeyGroupKey(nil, g), d.prefix...)
			err := ks.store.Scan(ctx, prefix, func(k, v []byte) error {
				seen++
				if len(v) >= 8 && int64(binary.BigEndian.Uint64(v)) > now {
					return nil
				}
				ck := d.cacheKey(ks.kbuf, k)
				if !d.isMap {
					ks.kbuf = ck
				}
				if e := d.cache.get(ck); e != nil {
					if e.dirty {
						return nil // a newer value waits in the cache
					}
					ks.bytes -= len(ck) + len(e.val) + entryOverhead
					d.cache.del(ck)
					if d.last == e {
						d.last = nil
					}
				}
				b.Delete(k)
				return nil
			})
			if err != nil {
				return fmt.Errorf("meshflow: keyed state: TTL cleanup: %w", err)
			}
		}
	}
	if b.Len() == 0 {
		return nil
	}
	if err := ks.store.Apply(ctx, &b); err != nil {
		return fmt.Errorf("meshflow: keyed state: TTL cleanup: %w", err)
	}
	return nil
}

// StateOptions configures one state.
type StateOptions[T any] struct {
	// Codec encodes the values; nil selects the default: the built-in
	// codecs for int64, float64, string and []byte, JSON for other types.
	Codec Codec[T]
	// TTL, when positive, makes entries expire TTL after their last write,
	// in processing time (KeyedOptions.Now). An expired entry reads as
	// absent and is deleted.
	TTL time.Duration
}

// ValueState is one value of type T per key.
type ValueState[T any] struct {
	d     *stateDesc
	codec Codec[T]
	enc   []byte
}

// NewValueState registers the value state name of ks.
func NewValueState[T any](ks *KeyedState, name string, opts StateOptions[T]) (*ValueState[T], error) {
	d, err := ks.register(name, opts.TTL)
	if err != nil {
		return nil, err
	}
	return &ValueState[T]{d: d, codec: codecOr(opts.Codec)}, nil
}

// Get returns the value of key, and false when it has none (or it
// expired).
func (s *ValueState[T]) Get(ctx context.Context, key StateKey) (T, bool, error) {
	var zero T
	k, err := s.d.key(key)
	if err != nil {
		return zero, false, err
	}
	v, ok, err := s.d.get(ctx, k)
	if err != nil || !ok {
		return zero, false, err
	}
	out, err := s.codec.Decode(v)
	if err != nil {
		return zero, false, fmt.Errorf("meshflow: keyed state %q: decode: %w", s.d.name, err)
	}
	return out, true, nil
}

// Set sets the value of key.
func (s *ValueState[T]) Set(ctx context.Context, key StateKey, v T) error {
	k, err := s.d.key(key)
	if err != nil {
		return err
	}
	s.enc = s.codec.Append(s.enc[:0], v)
	return s.d.put(ctx, k, s.enc)
}

// Delete removes the value of key.
func (s *ValueState[T]) Delete(ctx context.Context, key StateKey) error {
	k, err := s.d.key(key)
	if err != nil {
		return err
	}
	return s.d.del(ctx, k)
}

// ListState is a list of values of type T per key, stored as one value:
// for short lists (a window's elements); Get and Add cost the list's size.
type ListState[T any] struct {
	d     *stateDesc
	codec Codec[T]
	// Scratch of Add and Update: the encoded element and list (the cache
	// copies the list).
	ebuf, lbuf []byte
}

// NewListState registers the list state name of ks.
func NewListState[T any](ks *KeyedState, name string, opts StateOptions[T]) (*ListState[T], error) {
	d, err := ks.register(name, opts.TTL)
	if err != nil {
		return nil, err
	}
	return &ListState[T]{d: d, codec: codecOr(opts.Codec)}, nil
}

// Get returns the list of key (nil when empty).
func (s *ListState[T]) Get(ctx context.Context, key StateKey) ([]T, error) {
	k, err := s.d.key(key)
	if err != nil {
		return nil, err
	}
	v, ok, err := s.d.get(ctx, k)
	if err != nil || !ok {
		return nil, err
	}
	var out []T
	for len(v) > 0 {
		n, w := binary.Uvarint(v)
		if w <= 0 || uint64(len(v)-w) < n {
			return nil, fmt.Errorf("meshflow: keyed state %q: corrupt list", s.d.name)
		}
		x, err := s.codec.Decode(v[w : w+int(n)])
		if err != nil {
			return nil, fmt.Errorf("meshflow: keyed state %q: decode: %w", s.d.name, err)
		}
		out = append(out, x)
		v = v[w+int(n):]
	}
	return out, nil
}

// Add appends v to the list of key.
func (s *ListState[T]) Add(ctx context.Context, key StateKey, v T) error {
	k, err := s.d.key(key)
	if err != nil {
		return err
	}
	old, _, err := s.d.get(ctx, k)
	if err != nil {
		return err
	}
	s.ebuf = s.codec.Append(s.ebuf[:0], v)
	nv := append(s.lbuf[:0], old...)
	nv = binary.AppendUvarint(nv, uint64(len(s.ebuf)))
	nv = append(nv, s.ebuf...)
	s.lbuf = nv
	return s.d.put(ctx, k, nv)
}

// Update replaces the list of key (an empty list deletes it).
func (s *ListState[T]) Update(ctx context.Context, key StateKey, vs []T) error {
	k, err := s.d.key(key)
	if err != nil {
		return err
	}
	if len(vs) == 0 {
		return s.d.del(ctx, k)
	}
	nv := s.lbuf[:0]
	for _, v := range vs {
		s.ebuf = s.codec.Append(s.ebuf[:0], v)
		nv = binary.AppendUvarint(nv, uint64(len(s.ebuf)))
		nv = append(nv, s.ebuf...)
	}
	s.lbuf = nv
	return s.d.put(ctx, k, nv)
}

// Clear removes the list of key.
func (s *ListState[T]) Clear(ctx context.Context, key StateKey) error {
	return s.Update(ctx, key, nil)
}

// MapState is a map from K to V per key. Every entry is its own store
// entry, so a key's map may be larger than memory.
type MapState[K, V any] struct {
	d    *stateDesc
	kc   Codec[K]
	vc   Codec[V]
	kbuf []byte
	vbuf []byte // scratch of Put (the cache copies the value)
}

// NewMapState registers the map state name of ks. Its map keys are
// encoded with opts' key codec; entries are visited by Range in the order
// of their encoded keys.
func NewMapState[K, V any](ks *KeyedState, name string, keyCodec Codec[K], opts StateOptions[V]) (*MapState[K, V], error) {
	d, err := ks.register(name, opts.TTL)
	if err != nil {
		return nil, err
	}
	d.isMap = true
	return &MapState[K, V]{d: d, kc: codecOr(keyCodec), vc: codecOr(opts.Codec)}, nil
}

func (s *MapState[K, V]) entryKey(key StateKey, mk K) ([]byte, error) {
	s.kbuf = s.kc.Append(s.kbuf[:0], mk)
	return s.d.storeKey(key, s.kbuf)
}

// Get returns the value of mk in the map of key.
func (s *MapState[K, V]) Get(ctx context.Context, key StateKey, mk K) (V, bool, error) {
	var zero V
	k, err := s.entryKey(key, mk)
	if err != nil {
		return zero, false, err
	}
	v, ok, err := s.d.get(ctx, k)
	if err != nil || !ok {
		return zero, false, err
	}
	out, err := s.vc.Decode(v)
	if err != nil {
		return zero, false, fmt.Errorf("meshflow: keyed state %q: decode: %w", s.d.name, err)
	}
	return out, true, nil
}

// Put sets mk to v in the map of key.
func (s *MapState[K, V]) Put(ctx context.Context, key StateKey, mk K, v V) error {
	k, err := s.entryKey(key, mk)
	if err != nil {
		return err
	}
	s.vbuf = s.vc.Append(s.vbuf[:0], v)
	return s.d.put(ctx, k, s.vbuf)
}

// Delete removes mk from the map of key.
func (s *MapState[K, V]) Delete(ctx context.Context, key StateKey, mk K) error {
	k, err := s.entryKey(key, mk)
	if err != nil {
		return err
	}
	return s.d.del(ctx, k)
}

// Range calls fn for every entry of the map of key, in the order of the
// encoded map keys, until fn returns an error (returned as is). It writes
// the cache's changes to the store first, then scans the store.
func (s *MapState[K, V]) Range(ctx context.Context, key StateKey, fn func(k K, v V) error) error {
	prefix, err := s.d.storeKey(key, nil)
	if err != nil {
		return err
	}
	prefix = bytes.Clone(prefix)
	if err := s.d.ks.flushValues(ctx, false); err != nil {
		return err
	}
	return s.d.ks.store.Scan(ctx, prefix, func(k, v []byte) error {
		v, ok := s.d.unwrap(v)
		if !ok {
			return nil
		}
		mk, err := s.kc.Decode(k[len(prefix):])
		if err != nil {
			return fmt.Errorf("meshflow: keyed state %q: decode key: %w", s.d.name, err)
		}
		mv, err := s.vc.Decode(v)
		if err != nil {
			return fmt.Errorf("meshflow: keyed state %q: decode: %w", s.d.name, err)
		}
		return fn(mk, mv)
	})
}

// Codec encodes values of T for keyed state.
type Codec[T any] interface {
	// Append appends the encoding of v to dst.
	Append(dst []byte, v T) []byte
	// Decode decodes a value Append encoded.
	Decode(b []byte) (T, error)
}

// Int64Codec encodes int64 as 8 bytes, big-endian with the sign bit
// flipped, so the encodings sort like the numbers (map keys range in
// numeric order).
type Int64Codec struct{}

func (Int64Codec) Append(dst []byte, v int64) []byte {
	return binary.BigEndian.AppendUint64(dst, uint64(v)^(1<<63))
}

func (Int64Codec) Decode(b []byte) (int64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("int64: %d bytes", len(b))
	}
	return int64(binary.BigEndian.Uint64(b) ^ (1 << 63)), nil
}

// Float64Codec encodes float64 as its 8 IEEE-754 bytes, big-endian.
type Float64Codec struct{}

func (Float64Codec) Append(dst []byte, v float64) []byte {
	return binary.BigEndian.AppendUint64(dst, math.Float64bits(v))
}

func (Float64Codec) Decode(b []byte) (float64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("float64: %d bytes", len(b))
	}
	return math.Float64frombits(binary.BigEndian.Uint64(b)), nil
}

// StringCodec encodes a string as its bytes.
type StringCodec struct{}

func (StringCodec) Append(dst []byte, v string) []byte { return append(dst, v...) }
func (StringCodec) Decode(b []byte) (string, error)    { return string(b), nil }

// BytesCodec encodes a []byte as itself; Decode returns a copy.
type BytesCodec struct{}

func (BytesCodec) Append(dst []byte, v []byte) []byte { return append(dst, v...) }
func (BytesCodec) Decode(b []byte) ([]byte, error)    { return bytes.Clone(b), nil }

// JSONCodec encodes values with encoding/json: the default for types
// without a built-in codec.
type JSONCodec[T any] struct{}

func (JSONCodec[T]) Append(dst []byte, v T) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Types json cannot encode (channels, funcs) cannot be state.
		panic(fmt.Sprintf("meshflow: keyed state: JSON codec: %v", err))
	}
	return append(dst, b...)
}

func (JSONCodec[T]) Decode(b []byte) (T, error) {
	var v T
	err := json.Unmarshal(b, &v)
	return v, err
}

// codecOr returns c, or the default codec of T.
func codecOr[T any](c Codec[T]) Codec[T] {
	if c != nil {
		return c
	}
	var zero T
	var x any
	switch any(zero).(type) {
	case int64:
		x = Int64Codec{}
	case float64:
		x = Float64Codec{}
	case string:
		x = StringCodec{}
	case []byte:
		x = BytesCodec{}
	default:
		return JSONCodec[T]{}
	}
	return x.(Codec[T])
}

// Keyed timers
//
// A keyed timer is stored in keyed state, in its key's group, under
// group | timerState | kind | time | key, with its tag as the value: it is
// checkpointed with the key group and survives restarts. In between, the
// instance keeps all its timers in memory, a min-heap of (time, key) per
// kind, loaded from the store when the KeyedState is created: registering
// and firing touch only the heap and a map, and the timers registered or
// fired since the last flush are written to the store at the next
// checkpoint barrier (FlushState), in the same batches as the cached
// values. A timer registered and fired between two barriers never reaches
// the store. The runtime's own timers (tag "meshflow.keyed") wake the
// KeyedState at the earliest one.

// keyedTimer is a registered timer, or a fired one whose deletion is not
// written yet.
type keyedTimer struct {
	kind   actors.TimerKind
	at     int64
	key    StateKey // group | key bytes; never modified
	sk     string   // its store key, its key in KeyedState.timers
	tag    string
	live   bool // registered and not fired
	stored bool // in the store as of the last flush (with this tag)
	dirty  bool // in KeyedState.timerDirty
}

// timerHeap is a min-heap of timers by (time, key).
type timerHeap []*keyedTimer

func timerLess(a, b *keyedTimer) bool {
	if a.at != b.at {
		return a.at < b.at
	}
	return bytes.Compare(a.key, b.key) < 0
}

func (h *timerHeap) push(t *keyedTimer) {
	*h = append(*h, t)
	q := *h
	i := len(q) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !timerLess(q[i], q[p]) {
			break
		}
		q[i], q[p] = q[p], q[i]
		i = p
	}
}

func (h *timerHeap) pop() *keyedTimer {
	q := *h
	top := q[0]
	n := len(q) - 1
	q[0] = q[n]
	q[n] = nil
	q = q[:n]
	*h = q
	h.down(0)
	return top
}

func (h timerHeap) down(i int) {
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && timerLess(h[r], h[l]) {
			m = r
		}
		if !timerLess(h[m], h[i]) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

func (h timerHeap) init() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

// heapOf is the heap of the timers of kind.
func (ks *KeyedState) heapOf(kind actors.TimerKind) *timerHeap {
	if kind == actors.ProcessingTimeTimer {
		return &ks.procTimers
	}
	return &ks.eventTimers
}

// appendTimerKey appends the store key of a timer to b.
func appendTimerKey(b []byte, kind actors.TimerKind, at int64, key StateKey) []byte {
	b = append(b, key[:2]...)
	b = binary.AppendUvarint(b, uint64(len(timerState)))
	b = append(b, timerState...)
	b = append(b, byte(kind))
	b = binary.BigEndian.AppendUint64(b, uint64(at)^(1<<63))
	return append(b, key[2:]...)
}

func (ks *KeyedState) timerPrefix(group int, kind actors.TimerKind) []byte {
	b := actors.KeyGroupKey(nil, group)
	b = binary.AppendUvarint(b, uint64(len(timerState)))
	b = append(b, timerState...)
	return append(b, byte(kind))
}

// RegisterEventTimer registers a timer of key firing when the watermark
// reaches at. Registering the same (key, time) again replaces its tag.
func (ks *KeyedState) RegisterEventTimer(ctx context.Context, key StateKey, at time.Time, tag string) error {
	return ks.registerTimer(actors.EventTimeTimer, key, at.UnixMicro(), tag)
}

// RegisterProcessingTimer registers a timer of key firing when the clock
// (KeyedOptions.Now) reaches at.
func (ks *KeyedState) RegisterProcessingTimer(ctx context.Context, key StateKey, at time.Time, tag string) error {
	return ks.registerTimer(actors.ProcessingTimeTimer, key, at.UnixMicro(), tag)
}

func (ks *KeyedState) registerTimer(kind actors.TimerKind, key StateKey, at int64, tag string) error {
	if err := ks.owned(key); err != nil {
		return err
	}
	ks.tkbuf = appendTimerKey(ks.tkbuf[:0], kind, at, key)
	t, ok := ks.timers[string(ks.tkbuf)]
	switch {
	case ok && t.live:
		if t.tag == tag {
			return nil
		}
		t.tag, t.stored = tag, false
		ks.markTimer(t)
		return nil
	case ok: // fired, its deletion not written yet: registered again
		t.tag, t.live, t.stored = tag, true, t.stored && t.tag == tag
	default:
		t = &keyedTimer{kind: kind, at: at, key: StateKey(bytes.Clone(key)), sk: string(ks.tkbuf), tag: tag, live: true}
		ks.timers[t.sk] = t
	}
	ks.markTimer(t)
	ks.heapOf(kind).push(t)
	ks.arm(kind, at)
	return nil
}

// markTimer queues t's change for the next flush.
func (ks *KeyedState) markTimer(t *keyedTimer) {
	if t.dirty {
		return
	}
	t.dirty = true
	ks.timerDirty = append(ks.timerDirty, t)
	if n := len(ks.timerDirty); n >= 4096 && n >= 2*len(ks.timers) {
		ks.compactTimerDirty()
	}
}

// compactTimerDirty drops from the dirty list the timers fired before
// they were written: without checkpoints (no flush), the list would
// otherwise keep every timer ever registered.
func (ks *KeyedState) compactTimerDirty() {
	w := 0
	for _, t := range ks.timerDirty {
		if !t.live && !t.stored {
			t.dirty = false
			continue
		}
		ks.timerDirty[w] = t
		w++
	}
	clear(ks.timerDirty[w:])
	ks.timerDirty = ks.timerDirty[:w]
}

// flushTimers adds the timer changes since the last flush to the batch of
// flush.
func (ks *KeyedState) flushTimers(ctx context.Context) error {
	for i, t := range ks.timerDirty {
		ks.timerDirty[i] = nil
		t.dirty = false
		switch {
		case t.live && !t.stored:
			ks.batch.Put([]byte(t.sk), []byte(t.tag))
			t.stored = true
		case !t.live:
			if t.stored {
				ks.batch.Delete([]byte(t.sk))
				t.stored = false
			}
			if ks.timers[t.sk] == t {
				delete(ks.timers, t.sk)
			}
		}
		if err := ks.applyIfFull(ctx); err != nil {
			return err
		}
	}
	ks.timerDirty = ks.timerDirty[:0]
	return nil
}

// arm makes the runtime wake the state up at the earliest timer.
func (ks *KeyedState) arm(kind actors.TimerKind, at int64) {
	switch kind {
	case actors.EventTimeTimer:
		if at < ks.nextEvent {
			ks.nextEvent = at
			ks.oc.Timers().At(Watermark(at), keyedTimerTag)
		}
	case actors.ProcessingTimeTimer:
		if at < ks.nextProc {
			ks.nextProc = at
			ks.oc.Timers().After(time.Duration(at-ks.now().UnixMicro())*time.Microsecond, keyedTimerTag)
		}
	}
}

// loadTimers reads the stored timers of the instance's key groups (after
// a restore) into memory and arms the runtime for the earliest of each
// kind.
func (ks *KeyedState) loadTimers(ctx context.Context) error {
	for _, kind := range []actors.TimerKind{actors.EventTimeTimer, actors.ProcessingTimeTimer} {
		h := ks.heapOf(kind)
		for g := ks.lo; g < ks.hi; g++ {
			p := ks.timerPrefix(g, kind)
			err := ks.store.Scan(ctx, p, func(k, v []byte) error {
				if len(k) < len(p)+8 {
					return fmt.Errorf("timer key %x too short", k)
				}
				t := &keyedTimer{
					kind: kind, at: int64(binary.BigEndian.Uint64(k[len(p):]) ^ (1 << 63)),
					key: StateKey(append(actors.KeyGroupKey(nil, g), k[len(p)+8:]...)),
					sk:  string(k), tag: string(v), live: true, stored: true,
				}
				ks.timers[t.sk] = t
				*h = append(*h, t)
				return nil
			})
			if err != nil {
				return fmt.Errorf("meshflow: keyed timers: %w", err)
			}
		}
		h.init()
		if len(*h) > 0 {
			ks.arm(kind, (*h)[0].at)
		}
	}
	return nil
}

// firing is a due timer of HandleTimer.
type firing struct {
	key StateKey
	t   Timer
}

// HandleTimer fires the keyed timers due at runtime timer t, calling
// KeyedOptions.OnTimer for each in order of (time, key), and reports
// whether t was one of the keyed state's; the operator's OnTimer passes
// every timer to it first. Timers the callbacks register fire at a later
// call, even when already due.
func (ks *KeyedState) HandleTimer(ctx context.Context, t Timer, out Emitter) (bool, error) {
	if t.Tag != keyedTimerTag {
		return false, nil
	}
	kind, now := t.Kind, t.Time
	if kind == actors.ProcessingTimeTimer {
		ks.nextProc = math.MaxInt64
		now = max(now, ks.now().UnixMicro())
	} else {
		// Every timer the watermark passed, not only the one woken for.
		ks.nextEvent = math.MaxInt64
		now = max(now, int64(ks.oc.Timers().Watermark()))
	}
	h := ks.heapOf(kind)
	fire := ks.fireBuf[:0]
	for len(*h) > 0 && (*h)[0].at <= now {
		tm := h.pop()
		tm.live = false
		if tm.stored {
			ks.markTimer(tm)
		} else if ks.timers[tm.sk] == tm {
			delete(ks.timers, tm.sk)
		}
		fire = append(fire, firing{tm.key, Timer{Kind: kind, Time: tm.at, Tag: tm.tag}})
	}
	defer func() {
		clear(fire)
		ks.fireBuf = fire[:0]
	}()
	for _, f := range fire {
		if ks.opts.OnTimer == nil {
			return true, errors.New("meshflow: keyed timer fired without KeyedOptions.OnTimer")
		}
		if err := ks.opts.OnTimer(ctx, f.key, f.t, out); err != nil {
			return true, err
		}
	}
	if len(*h) > 0 {
		ks.arm(kind, (*h)[0].at)
	}
	return true, nil
}

// KeyRows computes, for the rows of a batch, each row's state key: its key
// group, by the hash of the key columns that routes rows on a keyed edge
// (so it is one of the instance's groups when the input is keyed by the
// same columns), and the bytes of the key values. It works a column at a
// time over the Arrow buffers, and reuses its buffers from batch to batch.
type KeyRows struct {
	hashes []uint64
	offs   []int32
	cur    []int32
	buf    []byte
	cols   []arrow.Array
}

// Len is the number of rows of the last Compute.
func (r *KeyRows) Len() int { return max(len(r.offs)-1, 0) }

// Key is the state key of row i: valid until the next Compute.
func (r *KeyRows) Key(i int) StateKey { return StateKey(r.buf[r.offs[i]:r.offs[i+1]:r.offs[i+1]]) }

// Compute computes the keys of rec's rows from the named key columns, for
// the instance of ks. It fails when a row's key group is not the
// instance's (the input is not keyed by these columns) or a column's type
// is not supported: integers, floats, booleans, strings, binaries and the
// temporal types; a null is a key of its own.
//
// A row's key bytes are, for each column in order, a byte 1 and the
// value (fixed-width types: their little-endian bytes, floats normalised
// as the hash does; strings and binaries: uvarint length and bytes), or a
// byte 0 for a null.
func (r *KeyRows) Compute(ks *KeyedState, rec arrow.RecordBatch, columns ...string) error {
	n := int(rec.NumRows())
	r.cols = r.cols[:0]
	for _, name := range columns {
		idx := rec.Schema().FieldIndices(name)
		if len(idx) != 1 {
			return fmt.Errorf("meshflow: key rows: column %q: %d columns of that name", name, len(idx))
		}
		r.cols = append(r.cols, rec.Column(idx[0]))
	}
	if len(r.cols) == 0 {
		return errors.New("meshflow: key rows: no key columns")
	}
	r.hashes = slices.Grow(r.hashes[:0], n)[:n]
	if err := kernels.HashColumns(r.cols, r.hashes); err != nil {
		return fmt.Errorf("meshflow: key rows: %w", err)
	}
	// Sizes, a column at a time, then offsets.
	r.offs = slices.Grow(r.offs[:0], n+1)[:n+1]
	for i := range r.offs {
		r.offs[i] = 2
	}
	for _, c := range r.cols {
		if err := addKeySizes(c, r.offs[1:]); err != nil {
			return err
		}
	}
	r.offs[0] = 0
	for i := 1; i <= n; i++ {
		r.offs[i] += r.offs[i-1]
	}
	r.buf = slices.Grow(r.buf[:0], int(r.offs[n]))[:r.offs[n]]
	maxP := uint64(ks.maxP)
	for i, h := range r.hashes {
		g := int(h % maxP)
		if g < ks.lo || g >= ks.hi {
			return fmt.Errorf("meshflow: key rows: row %d: %w: key group %d, the instance owns [%d, %d) (is the input keyed by %v?)", i, actors.ErrKeyGroupNotOwned, g, ks.lo, ks.hi, columns)
		}
		binary.BigEndian.PutUint16(r.buf[r.offs[i]:], uint16(g))
	}
	// Fill, a column at a time; cur[i] is where row i's next column goes.
	r.cur = slices.Grow(r.cur[:0], n)[:n]
	cur := r.cur
	for i := range cur {
		cur[i] = r.offs[i] + 2
	}
	for _, c := range r.cols {
		writeKeyBytes(c, r.buf, cur)
	}
	return nil
}

// addKeySizes adds the encoded size of every row of c to sizes[i].
func addKeySizes(c arrow.Array, sizes []int32) error {
	switch a := c.(type) {
	case *array.String:
		for i := range sizes {
			sizes[i] += keyVarSize(a.IsValid(i), a.ValueLen(i))
		}
	case *array.Binary:
		for i := range sizes {
			sizes[i] += keyVarSize(a.IsValid(i), a.ValueLen(i))
		}
	case *array.LargeString:
		for i := range sizes {
			sizes[i] += keyVarSize(a.IsValid(i), a.ValueLen(i))
		}
	case *array.Boolean:
		for i := range sizes {
			sizes[i] += keyFixedSize(a.IsValid(i), 1)
		}
	default:
		w, ok := fixedWidth(c.DataType())
		if !ok {
			return fmt.Errorf("meshflow: key rows: unsupported key type %s", c.DataType())
		}
		for i := range sizes {
			sizes[i] += keyFixedSize(c.IsValid(i), w)
		}
	}
	return nil
}

func keyVarSize(valid bool, l int) int32 {
	if !valid {
		return 1
	}
	var tmp [binary.MaxVarintLen64]byte
	return int32(1 + binary.PutUvarint(tmp[:], uint64(l)) + l)
}

func keyFixedSize(valid bool, w int) int32 {
	if !valid {
		return 1
	}
	return int32(1 + w)
}

// fixedWidth returns the byte width of a fixed-width primitive type.
func fixedWidth(dt arrow.DataType) (int, bool) {
	fw, ok := dt.(arrow.FixedWidthDataType)
	if !ok || dt.ID() == arrow.BOOL || dt.ID() == arrow.FIXED_SIZE_BINARY || fw.BitWidth()%8 != 0 || fw.BitWidth() == 0 {
		return 0, false
	}
	return fw.BitWidth() / 8, true
}

// writeKeyBytes writes every row's encoding of c at cur[i] and advances it.
func writeKeyBytes(c arrow.Array, buf []byte, cur []int32) {
	switch a := c.(type) {
	case *array.String:
		for i := range cur {
			cur[i] = putVar(buf, cur[i], a.IsValid(i), a.ValueBytes()[a.ValueOffset(i):a.ValueOffset(i)+a.ValueLen(i)])
		}
	case *array.Binary:
		for i := range cur {
			cur[i] = putVar(buf, cur[i], a.IsValid(i), a.Value(i))
		}
	case *array.LargeString:
		for i := range cur {
			v := a.Value(i)
			p := cur[i]
			if !a.IsValid(i) {
				buf[p] = 0
				cur[i] = p + 1
				continue
			}
			buf[p] = 1
			p++
			p += int32(binary.PutUvarint(buf[p:], uint64(len(v))))
			p += int32(copy(buf[p:], v))
			cur[i] = p
		}
	case *array.Boolean:
		for i := range cur {
			p := cur[i]
			if !a.IsValid(i) {
				buf[p], cur[i] = 0, p+1
				continue
			}
			buf[p] = 1
			buf[p+1] = 0
			if a.Value(i) {
				buf[p+1] = 1
			}
			cur[i] = p + 2
		}
	case *array.Float64:
		vals := a.Float64Values()
		for i := range cur {
			p := cur[i]
			if !a.IsValid(i) {
				buf[p], cur[i] = 0, p+1
				continue
			}
			buf[p] = 1
			binary.LittleEndian.PutUint64(buf[p+1:], math.Float64bits(normFloat64(vals[i])))
			cur[i] = p + 9
		}
	case *array.Float32:
		vals := a.Float32Values()
		for i := range cur {
			p := cur[i]
			if !a.IsValid(i) {
				buf[p], cur[i] = 0, p+1
				continue
			}
			buf[p] = 1
			binary.LittleEndian.PutUint32(buf[p+1:], math.Float32bits(float32(normFloat64(float64(vals[i])))))
			cur[i] = p + 5
		}
	default:
		w, _ := fixedWidth(c.DataType())
		d := c.Data()
		raw := d.Buffers()[1].Bytes()[d.Offset()*w:]
		for i := range cur {
			p := cur[i]
			if !c.IsValid(i) {
				buf[p], cur[i] = 0, p+1
				continue
			}
			buf[p] = 1
			copy(buf[p+1:p+1+int32(w)], raw[i*w:(i+1)*w])
			cur[i] = p + 1 + int32(w)
		}
	}
}

func putVar(buf []byte, p int32, valid bool, v []byte) int32 {
	if !valid {
		buf[p] = 0
		return p + 1
	}
	buf[p] = 1
	p++
	p += int32(binary.PutUvarint(buf[p:], uint64(len(v))))
	p += int32(copy(buf[p:], v))
	return p
}

// normFloat64 maps -0 to +0 and every NaN to one NaN, as the hash does.
func normFloat64(f float64) float64 {
	switch {
	case f == 0:
		return 0
	case f != f:
		return math.NaN()
	}
	return f
}
