package e2e

import (
	"context"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tether-mesh/tether/pkg/call"
	"github.com/tether-mesh/tether/pkg/client"
	"github.com/tether-mesh/tether/pkg/member"
	"github.com/tether-mesh/tether/pkg/rdma"
	"github.com/tether-mesh/tether/pkg/rdma/rdmatest"
	"github.com/tether-mesh/tether/pkg/sandbox"
	"github.com/tether-mesh/tether/pkg/view/membership"
)

// reportLatencies reports the median and the 99th percentile of samples.
func reportLatencies(b *testing.B, samples []time.Duration, prefix string) {
	b.Helper()
	if len(samples) == 0 {
		return
	}
	slices.Sort(samples)
	q := func(f float64) float64 {
		return float64(samples[min(int(f*float64(len(samples))), len(samples)-1)].Nanoseconds())
	}
	b.ReportMetric(q(0.50)/1e3, prefix+"p50-µs")
	b.ReportMetric(q(0.99)/1e3, prefix+"p99-µs")
}

// BenchmarkConnectClose is a whole connection end to end: the client's
// Request through the forwarder chain to a member process, the channel's
// handshake, and the Close on all three sides, over unix sockets. (With
// the inproc provider the member runs in this process.)
func BenchmarkConnectClose(b *testing.B) {
	for _, p := range providers {
		b.Run(p.name, func(b *testing.B) {
			sb := sandbox.New(b)
			fwd := sb.Forwarder()
			sb.Member(fwd, "echo", "m1", sandbox.WithChannels(p.name)) // a process, but for inproc
			sb.WaitMembers(fwd, "echo", 1)
			c := sb.Client(fwd, client.WithProviders(p.make()))
			ctx := sb.Context()
			// One connection stays open, as in a forwarder with traffic: the
			// forwarder's gRPC connection to the member stays up.
			keep, err := c.Connect(ctx, "echo")
			if err != nil {
				b.Fatal(err)
			}
			defer keep.Close(ctx)
			samples := make([]time.Duration, 0, 4096)
			b.ReportAllocs()
			for b.Loop() {
				start := time.Now()
				conn, err := c.Connect(ctx, "echo")
				if err != nil {
					b.Fatal(err)
				}
				if err := conn.Close(ctx); err != nil {
					b.Fatal(err)
				}
				samples = append(samples, time.Since(start))
			}
			reportLatencies(b, samples, "")
		})
	}
}

// BenchmarkCall compares a call over an established connection with a bare
// round trip of the same provider, in one run: kind=bare is the channels'
// own ping-pong benchmark (rdmatest.ChannelPingPong, 64-byte messages and an
// echo loop), kind=call the same payload through the client library's
// AppendCall to a member's handler, kind=call-new through Call, which
// returns each answer in a new slice. kind=interleaved alternates blocks
// of bare round trips and AppendCalls (rdmatest.Interleaved) and reports
// their ratio, call/bare: on a shared machine, whose neighbours come and
// go, it is the steadier measure of the two. The member and the bare echo
// both run in this process, so that both measure the same hops; compare
// with benchstat -col /kind.
func BenchmarkCall(b *testing.B) {
	for _, p := range providers {
		b.Run(p.name, func(b *testing.B) {
			sb := sandbox.New(b)
			fwd := sb.Forwarder()
			echoMember(b, sb, fwd, p.make())
			sb.WaitMembers(fwd, "echo", 1)
			c := sb.Client(fwd, client.WithProviders(p.make()))
			ctx := sb.Context()
			conn, err := c.Connect(ctx, "echo")
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close(ctx)

			payload := make([]byte, 64)
			b.Run("kind=bare", func(b *testing.B) {
				client, server := rdmatest.Pair(b, p.make(), bareAddr(p.name))
				rdmatest.ChannelPingPong(b, client, server, len(payload))
			})
			b.Run("kind=call", func(b *testing.B) {
				reply := make([]byte, 0, len(payload))
				b.ReportAllocs()
				for b.Loop() {
					var err error
					if reply, err = conn.AppendCall(ctx, reply[:0], nil, payload); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("kind=interleaved", func(b *testing.B) {
				client, server := rdmatest.Pair(b, p.make(), bareAddr(p.name))
				reply := make([]byte, 0, len(payload))
				rdmatest.Interleaved(b, client, server, len(payload), func(k int) error {
					for range k {
						var err error
						if reply, err = conn.AppendCall(ctx, reply[:0], nil, payload); err != nil {
							return err
						}
					}
					return nil
				})
			})
			b.Run("kind=call-new", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := conn.Call(ctx, payload); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// bareAddr is the listening address the bare round trip of a provider uses.
func bareAddr(provider string) string {
	if provider == "tcp" {
		return "127.0.0.1:0"
	}
	return ""
}

// echoMember runs a member in this process whose handler only echoes.
func echoMember(b *testing.B, sb *sandbox.Sandbox, fwd *sandbox.Forwarder, p rdma.Provider) {
	b.Helper()
	views, err := membership.Dial(fwd.URL())
	if err != nil {
		b.Fatal(err)
	}
	addr := bareAddr(p.Name())
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	m, err := member.Start(sb.Context(), member.Config{
		Group: "echo", ID: "m1", Views: views, ListenURL: "unix://" + sb.Dir() + "/m1.sock",
		Channels: []member.Channel{{Provider: p, Addr: addr}},
		Handler:  func(_ context.Context, req *call.Request) ([]byte, error) { return req.Payload, nil },
		Log:      logrus.NewEntry(quiet),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = m.Stop(context.Background())
		_ = views.Close()
	})
}

// BenchmarkHeal measures, for one connection, the time from its member's
// SIGKILL to the first answered call on another member: the channel breaks,
// heal re-requests with reselect, the forwarder routes to a live member, the
// new channel opens and the call goes again. The killed member restarts
// between iterations.
func BenchmarkHeal(b *testing.B) {
	for _, p := range providers[1:] {
		b.Run(p.name, func(b *testing.B) {
			sb := sandbox.New(b)
			fwd := sb.Forwarder()
			for _, id := range []string{"m1", "m2", "m3"} {
				sb.Member(fwd, "echo", id, sandbox.WithChannels(p.name))
			}
			sb.WaitMembers(fwd, "echo", 3)
			c := sb.Client(fwd, client.WithProviders(p.make()))
			ctx := sb.Context()
			conn, err := c.Connect(ctx, "echo")
			if err != nil {
				b.Fatal(err)
			}
			samples := make([]time.Duration, 0, 256)
			for b.Loop() {
				if _, err := conn.Call(ctx, []byte("before")); err != nil {
					b.Fatal(err)
				}
				victim := sb.Members()[conn.Member()]
				start := time.Now()
				victim.Kill()
				for {
					callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
					_, err := conn.Call(callCtx, []byte("after"))
					cancel()
					if err == nil && conn.Member() != victim.ID() {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				samples = append(samples, time.Since(start))
				b.StopTimer()
				victim.Restart()
				sb.WaitMembers(fwd, "echo", 3)
				b.StartTimer()
			}
			reportLatencies(b, samples, "heal-")
		})
	}
}

// BenchmarkHealPartition measures the time from a partition of a
// connection's member (no reset: only missed heartbeats tell) to the first
// answered call on another member, against the bound of the lease time
// plus three heartbeat intervals; kind=netns drops packets on a veth pair
// (as root), kind=proxy stops proxies.
func BenchmarkHealPartition(b *testing.B) {
	const heartbeat, lease = 50 * time.Millisecond, 250 * time.Millisecond
	for _, kind := range []struct {
		name string
		opt  sandbox.MemberOption
	}{{"netns", sandbox.Partitionable()}, {"proxy", sandbox.PartitionByProxy()}} {
		b.Run("kind="+kind.name, func(b *testing.B) {
			if kind.name == "netns" && !sandbox.NetnsAvailable() {
				b.Skip("needs root and the ip and tc commands")
			}
			sb := sandbox.New(b)
			fwd := sb.Forwarder(sandbox.WithLease(heartbeat, lease))
			for _, id := range []string{"m1", "m2", "m3"} {
				sb.Member(fwd, "echo", id, kind.opt)
			}
			sb.WaitMembers(fwd, "echo", 3)
			c := sb.Client(fwd, client.WithProviders(providers[2].make()))
			ctx := sb.Context()
			conn, err := c.Connect(ctx, "echo")
			if err != nil {
				b.Fatal(err)
			}
			samples := make([]time.Duration, 0, 64)
			for b.Loop() {
				if _, err := conn.Call(ctx, []byte("before")); err != nil {
					b.Fatal(err)
				}
				victim := sb.Members()[conn.Member()]
				start := time.Now()
				victim.Partition()
				for {
					callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
					_, err := conn.Call(callCtx, []byte("after"))
					cancel()
					if err != nil {
						b.Fatal(err)
					}
					if conn.Member() != victim.ID() {
						break
					}
				}
				samples = append(samples, time.Since(start))
				b.StopTimer()
				victim.Heal()
				sb.WaitMembers(fwd, "echo", 3)
				b.StartTimer()
			}
			reportLatencies(b, samples, "heal-")
			b.ReportMetric(float64((lease + 3*heartbeat).Microseconds()), "bound-µs")
		})
	}
}
