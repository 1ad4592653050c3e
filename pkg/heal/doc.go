// Package heal keeps a client's connections working when what they run on
// fails. Its client element, first in a client chain, watches for every
// connection:
//
//   - the monitor stream of the server the connection was requested from (one
//     stream per element, for all its connections): an update that moves the
//     connection to another member, or a delete, or the stream breaking;
//   - the connection's channel (pkg/rdma): its end, when it ends by failure
//     or by the member closing it.
//
// On a failure it re-requests the connection from the start of its chain:
// with reselect (member and mechanism cleared, so the server chooses another
// member) when the channel or the member is gone; without, when only the
// control stream broke or the server already moved the connection. Retries
// back off with jitter, stop at once when the connection closes, and never
// run two at a time for one connection. The decisions are a state machine
// without I/O (decide.go).
package heal
