package view

import (
	"bytes"
	"maps"
)

// EndpointGRPC is the key of Member.Endpoints under which a member publishes
// the URL of its gRPC endpoint chain ("unix:///run/member.sock",
// "tcp://10.0.0.7:5001"): where view refresh sends the connections it routes
// to the member. The other keys name channel providers ("shm", "tcp",
// "verbs") and hold the member's address for each.
const EndpointGRPC = "grpc"

// Member is one process of a group as views show it.
type Member struct {
	// ID names the member within its group; at most one live member holds an
	// ID at a time.
	ID string
	// Incarnation is assigned by the provider at every join and increases
	// with every join of the same ID, so that a member that failed and joined
	// again is told from its earlier self. A group's incarnations come from
	// one increasing sequence, so members in rank order have increasing
	// incarnations. Join ignores the value it is given.
	Incarnation uint64
	// Endpoints maps a channel provider name, or EndpointGRPC, to the
	// member's address for it.
	Endpoints map[string]string
	// Labels describe the member for selection (zone, role, version).
	Labels map[string]string
	// Data is the state the member offers when it joins (GCS's exchangeable
	// data), delivered to every observer with the view that adds the member.
	Data []byte
}

// Clone returns a deep copy of m.
func (m Member) Clone() Member {
	m.Endpoints = maps.Clone(m.Endpoints)
	m.Labels = maps.Clone(m.Labels)
	if m.Data != nil {
		m.Data = bytes.Clone(m.Data)
	}
	return m
}

// Same reports whether m and other are the same incarnation of one member.
func (m Member) Same(other Member) bool {
	return m.ID == other.ID && m.Incarnation == other.Incarnation
}

// Equal reports whether m and other are equal in every field; nil and empty
// maps and data are equal.
func (m Member) Equal(other Member) bool {
	return m.Same(other) &&
		maps.Equal(m.Endpoints, other.Endpoints) &&
		maps.Equal(m.Labels, other.Labels) &&
		bytes.Equal(m.Data, other.Data)
}
