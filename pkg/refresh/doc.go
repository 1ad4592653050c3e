// Package refresh keeps a client's connection alive: after each Request it
// arms a timer for a third of the time left before its own path segment
// expires, and when the timer fires it requests the connection again from
// the start of the chain. Place it first in a client chain, before
// updatepath.
package refresh
