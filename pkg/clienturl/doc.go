// Package clienturl carries the URL of a chain's next hop in the context:
// an element that decides where a connection goes (a fixed URL, view
// refresh) sets it, and connect, later in the chain, dials it.
package clienturl
