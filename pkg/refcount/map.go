package refcount

import (
	"errors"
	"sync"
	"sync/atomic"
)

// ErrForced is returned by Acquire when the key was forced to zero while its
// value was being created.
var ErrForced = errors.New("refcount: key forced while its value was created")

// Map holds reference-counted values by key. It is safe for concurrent use.
type Map[K comparable, V any] struct {
	create  func(K) (V, error)
	destroy func(K, V)

	mu      sync.Mutex
	entries map[K]*entry[V]
}

// entry is one generation of a key's value: forcing the key or releasing its
// last reference ends the generation, and the next Acquire starts another.
type entry[V any] struct {
	value V
	err   error
	ready chan struct{} // closed once create returned
	count int           // references, guarded by Map.mu
	dead  bool          // the generation ended, guarded by Map.mu
}

// NewMap returns a map that makes a key's value with create and ends it with
// destroy. create runs without the map's lock held (other keys proceed) and
// once per generation; destroy runs once for every value create returned.
func NewMap[K comparable, V any](create func(K) (V, error), destroy func(K, V)) *Map[K, V] {
	return &Map[K, V]{create: create, destroy: destroy, entries: make(map[K]*entry[V])}
}

// Ref is one reference to a key's value. Release it once; further releases
// do nothing.
type Ref[K comparable, V any] struct {
	m        *Map[K, V]
	key      K
	e        *entry[V]
	released atomic.Bool
}

// Acquire returns a reference to key's value, creating the value when the
// key has none. When create fails, the error is returned to every Acquire
// waiting for that value and the key is left without an entry.
func (m *Map[K, V]) Acquire(key K) (*Ref[K, V], error) {
	for {
		m.mu.Lock()
		e, ok := m.entries[key]
		if !ok {
			e = &entry[V]{ready: make(chan struct{}), count: 1}
			m.entries[key] = e
			m.mu.Unlock()
			return m.createValue(key, e)
		}
		e.count++
		m.mu.Unlock()

		<-e.ready
		m.mu.Lock()
		switch {
		case e.err != nil:
			m.mu.Unlock()
			return nil, e.err
		case e.dead: // forced while we waited: take the next generation
			m.mu.Unlock()
			continue
		}
		m.mu.Unlock()
		return &Ref[K, V]{m: m, key: key, e: e}, nil
	}
}

func (m *Map[K, V]) createValue(key K, e *entry[V]) (*Ref[K, V], error) {
	v, err := m.create(key)
	m.mu.Lock()
	e.value, e.err = v, err
	forced := e.dead
	if err != nil || forced {
		e.dead = true
		if m.entries[key] == e {
			delete(m.entries, key)
		}
		if err == nil {
			e.err = ErrForced
		}
	}
	close(e.ready)
	m.mu.Unlock()
	switch {
	case err != nil:
		return nil, err
	case forced:
		m.destroy(key, v)
		return nil, ErrForced
	}
	return &Ref[K, V]{m: m, key: key, e: e}, nil
}

// Force ends key's value now: it is destroyed, references to it release
// nothing, and the next Acquire creates a fresh value.
func (m *Map[K, V]) Force(key K) {
	m.mu.Lock()
	e, ok := m.entries[key]
	if !ok {
		m.mu.Unlock()
		return
	}
	m.forceLocked(key, e)
}

// forceLocked ends generation e with m.mu held, and unlocks it.
func (m *Map[K, V]) forceLocked(key K, e *entry[V]) {
	e.dead = true
	delete(m.entries, key)
	select {
	case <-e.ready:
		m.mu.Unlock()
		m.destroy(key, e.value)
	default: // still being created: createValue destroys it
		m.mu.Unlock()
	}
}

// Len returns the number of keys that have a value.
func (m *Map[K, V]) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}

// Keys returns the keys that have a value.
func (m *Map[K, V]) Keys() []K {
	m.mu.Lock()
	defer m.mu.Unlock()
	keys := make([]K, 0, len(m.entries))
	for k := range m.entries {
		keys = append(keys, k)
	}
	return keys
}

// Count returns the number of references to key's current value.
func (m *Map[K, V]) Count(key K) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[key]; ok {
		return e.count
	}
	return 0
}

// Key returns the key the reference holds.
func (r *Ref[K, V]) Key() K {
	return r.key
}

// Value returns the referenced value.
func (r *Ref[K, V]) Value() V {
	return r.e.value
}

// Release gives the reference back; the last release of a value destroys it.
func (r *Ref[K, V]) Release() {
	if !r.released.CompareAndSwap(false, true) {
		return
	}
	m := r.m
	m.mu.Lock()
	if r.e.dead {
		m.mu.Unlock()
		return
	}
	r.e.count--
	if r.e.count > 0 {
		m.mu.Unlock()
		return
	}
	r.e.dead = true
	delete(m.entries, r.key)
	m.mu.Unlock()
	m.destroy(r.key, r.e.value)
}

// Force ends the value this reference holds, if it is still the key's
// current value: a holder that found its value broken cannot end a fresh
// one that another holder created since.
func (r *Ref[K, V]) Force() {
	m := r.m
	m.mu.Lock()
	if r.e.dead || m.entries[r.key] != r.e {
		m.mu.Unlock()
		return
	}
	m.forceLocked(r.key, r.e)
}

// Alive reports whether the referenced value is still the key's current one.
func (r *Ref[K, V]) Alive() bool {
	r.m.mu.Lock()
	defer r.m.mu.Unlock()
	return !r.e.dead
}
