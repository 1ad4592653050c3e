package rdma

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
)

// The RDMA mechanism as it travels in a connection's MechanismPreferences
// and Mechanism: type MechanismType, class cls.LOCAL or cls.REMOTE, and
// these parameters.
const (
	// MechanismType is the type of every tether channel mechanism.
	MechanismType = "RDMA"
	// ParamProvider names the channel provider ("inproc", "shm", "tcp",
	// "verbs"). A client puts one preference per provider it can use.
	ParamProvider = "provider"
	// ParamLocality, in a LOCAL preference, says where the client runs: the
	// process for inproc, the host for shm. An endpoint accepts a LOCAL
	// preference only from its own process or host.
	ParamLocality = "locality"
	// ParamAddress, ParamConnID and ParamSecret are what the endpoint
	// returns: the listener's address, the connection ID to dial with and
	// the connection's secret (Secret.Encode), which the handshake proves
	// without sending. The debug log of a chain never shows the secret.
	ParamAddress = "address"
	ParamConnID  = "conn_id"
	ParamSecret  = "secret"
)

// Scope is where a provider's channels can reach.
type Scope int

// Scopes of the providers.
const (
	// ScopeAny reaches any host (tcp, verbs): the REMOTE class.
	ScopeAny Scope = iota
	// ScopeHost reaches processes of one host (shm).
	ScopeHost
	// ScopeProcess reaches one process (inproc).
	ScopeProcess
)

// ProviderScope returns the scope of a provider by its name.
func ProviderScope(provider string) Scope {
	switch provider {
	case "inproc":
		return ScopeProcess
	case "shm":
		return ScopeHost
	}
	return ScopeAny
}

var (
	processToken = sync.OnceValue(func() string {
		var b [16]byte
		_, _ = rand.Read(b[:])
		return "process:" + hex.EncodeToString(b[:])
	})
	hostToken = sync.OnceValue(func() string {
		// The boot ID names the running kernel: the processes that share it
		// share /dev/shm and memfds passed over unix sockets.
		if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
			return "host:" + strings.TrimSpace(string(b))
		}
		name, _ := os.Hostname()
		return "host:" + name
	})
)

// Locality returns this process's locality token for a scope: the value of
// ParamLocality that an endpoint in this process accepts ("" for ScopeAny).
func Locality(s Scope) string {
	switch s {
	case ScopeProcess:
		return processToken()
	case ScopeHost:
		return hostToken()
	}
	return ""
}

// Preference returns the mechanism preference a client in this process
// offers for a provider: class LOCAL with the locality for the providers
// that need one, REMOTE otherwise.
func Preference(provider string) *networkservice.Mechanism {
	m := &networkservice.Mechanism{Type: MechanismType, Cls: cls.REMOTE, Parameters: map[string]string{ParamProvider: provider}}
	if s := ProviderScope(provider); s != ScopeAny {
		m.Cls = cls.LOCAL
		m.Parameters[ParamLocality] = Locality(s)
	}
	return m
}

// Binding is what a client needs to open a connection's channel.
type Binding struct {
	Provider string
	Address  string
	ConnID   string
	Secret   Secret
}

// Mechanism returns the binding as the mechanism an endpoint answers with.
func (b Binding) Mechanism() *networkservice.Mechanism {
	c := cls.REMOTE
	if ProviderScope(b.Provider) != ScopeAny {
		c = cls.LOCAL
	}
	return &networkservice.Mechanism{Type: MechanismType, Cls: c, Parameters: map[string]string{
		ParamProvider: b.Provider,
		ParamAddress:  b.Address,
		ParamConnID:   b.ConnID,
		ParamSecret:   b.Secret.Encode(),
	}}
}

// ParseBinding reads the binding out of the mechanism an endpoint returned.
func ParseBinding(m *networkservice.Mechanism) (Binding, error) {
	if m.GetType() != MechanismType {
		return Binding{}, fmt.Errorf("%w: mechanism type %q is not %s", ErrInvalidArgument, m.GetType(), MechanismType)
	}
	p := m.GetParameters()
	b := Binding{Provider: p[ParamProvider], Address: p[ParamAddress], ConnID: p[ParamConnID]}
	switch {
	case b.Provider == "":
		return Binding{}, fmt.Errorf("%w: mechanism without %s", ErrInvalidArgument, ParamProvider)
	case b.Address == "":
		return Binding{}, fmt.Errorf("%w: mechanism without %s", ErrInvalidArgument, ParamAddress)
	case b.ConnID == "" || len(b.ConnID) > MaxConnIDSize:
		return Binding{}, fmt.Errorf("%w: mechanism %s is empty or longer than %d bytes", ErrInvalidArgument, ParamConnID, MaxConnIDSize)
	}
	secret, err := ParseSecret(p[ParamSecret])
	if err != nil {
		return Binding{}, err
	}
	b.Secret = secret
	return b, nil
}
