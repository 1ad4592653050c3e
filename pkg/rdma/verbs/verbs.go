package verbs

import "errors"

// Name is the provider's name.
const Name = "verbs"

// ErrNotBuilt is returned by a provider from a build without the rdmaverbs
// tag or without cgo.
var ErrNotBuilt = errors.New("rdma verbs: not built in (build with -tags rdmaverbs and cgo)")

// ErrNoDevice is returned when the system has no RDMA device.
var ErrNoDevice = errors.New("rdma verbs: no RDMA device")
