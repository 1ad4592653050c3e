// Package refresh keeps a client's connection alive: after each Request it
// arms a timer for a third of the time left before the first of the path
// segments from its own on expires (every hop after the client closes the
// connection when the segment before it expires, and the client's
// refreshes are what renew them all), and when the timer fires it requests
// the connection again from the start of the chain. Place it first in a
// client chain, before updatepath.
package refresh
