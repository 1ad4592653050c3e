// Package updatepath keeps Connection.Path as Network Service Mesh does, so
// that tether's chains and NSM's interoperate.
//
// Every hop owns one path segment: its name, its own connection ID and an
// expiry. On the way down a hop moves the path index onto its segment
// (adding it on the first Request, finding it again by the index on a
// refresh, giving it a fresh ID when a different hop held that place), sets
// the connection ID to its segment's ID, so the next hop sees this hop's ID,
// and sets its segment's expiry: the promise that it refreshes before then.
// On the way back the connection is restored to the caller's segment. A
// Close goes where the last successful Request went: it is put on the path
// that Request left, whatever path it carries, so that a broken or missing
// one cannot keep the hops after this one from releasing the connection.
// Place the server element right after checkrequest; in a client chain,
// place the client element before the elements that talk to the next hop.
package updatepath
