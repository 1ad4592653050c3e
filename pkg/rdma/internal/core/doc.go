// Package core holds the pieces that every rdma provider shares: the table
// of expected connection IDs behind a listener (Table, Endpoint), the record
// of sent but unacknowledged messages (Retention), a channel's end state
// (Life), and small synchronisation helpers (Sem, Notifier).
package core
