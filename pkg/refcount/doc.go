// Package refcount counts references to shared values by key, and guards a
// connection's lifetime in a chain.
//
// Map creates a key's value on its first Acquire and destroys it when the
// last reference is released, or at once when the key is forced; no entry
// remains for a key nobody holds. NewServer is the element, placed early in
// a server chain, that lets the first Request of a connection open it,
// refreshes pass without counting twice, and exactly one Close go down the
// chain.
package refcount
