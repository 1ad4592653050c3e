// Package inproc is the rdma provider for two ends in the same process: the
// reference implementation of the channel semantics and the target of the
// race detector. A message is not copied when sent: the receiver copies it
// straight from the sender's payload into its own Message, so a steady
// exchange allocates nothing. Addresses are names in a process-wide table.
package inproc
