package chain

import (
	"context"
	"fmt"
	"sync/atomic"
)

var keyCount atomic.Int32

// Key names one typed value in a connection's metadata. An element declares
// its keys as unexported package variables, so that no other element can
// reach its values, and the type parameter keeps every value typed:
//
//	var stateKey = chain.NewKey[*state]("heal")
//
//	st, ok := stateKey.Load(ctx)
//
// Metadata belongs to the connection of the event running in ctx: it is
// created with the connection's first Request and deleted with its Close.
// Events of one connection are serialized, so an element reads and writes
// its values without locks, but only during an event: a goroutine that
// outlives the event must not touch them (it re-enters the chain instead).
type Key[T any] struct {
	name  string
	index int
}

// NewKey returns a new key; the name is used in messages only.
func NewKey[T any](name string) *Key[T] {
	return &Key[T]{name: name, index: int(keyCount.Add(1) - 1)}
}

// String returns the key's name.
func (k *Key[T]) String() string {
	return k.name
}

// Load returns the value stored for the connection of ctx.
func (k *Key[T]) Load(ctx context.Context) (value T, ok bool) {
	e := entryFrom(ctx)
	if e == nil || k.index >= len(e.values) {
		return value, false
	}
	value, ok = e.values[k.index].(T)
	return value, ok
}

// Store stores value for the connection of ctx. It panics when ctx carries no
// chain event: metadata exists only inside a chain made by NewServer or
// NewClient.
func (k *Key[T]) Store(ctx context.Context, value T) {
	e := k.entry(ctx)
	if k.index >= len(e.values) {
		grown := make([]any, max(int(keyCount.Load()), k.index+1))
		copy(grown, e.values)
		e.values = grown
	}
	e.values[k.index] = value
}

// LoadOrStore returns the stored value if there is one, and otherwise stores
// and returns value.
func (k *Key[T]) LoadOrStore(ctx context.Context, value T) (actual T, loaded bool) {
	if v, ok := k.Load(ctx); ok {
		return v, true
	}
	k.Store(ctx, value)
	return value, false
}

// LoadAndDelete deletes the stored value and returns it.
func (k *Key[T]) LoadAndDelete(ctx context.Context) (value T, loaded bool) {
	value, loaded = k.Load(ctx)
	if loaded {
		k.entry(ctx).values[k.index] = nil
	}
	return value, loaded
}

// Delete deletes the stored value.
func (k *Key[T]) Delete(ctx context.Context) {
	if e := entryFrom(ctx); e != nil && k.index < len(e.values) {
		e.values[k.index] = nil
	}
}

func (k *Key[T]) entry(ctx context.Context) *entry {
	e := entryFrom(ctx)
	if e == nil {
		panic(fmt.Sprintf("chain: metadata key %q used outside a chain event (build the chain with chain.NewServer or chain.NewClient)", k.name))
	}
	return e
}
