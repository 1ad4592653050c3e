package metrics

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tether-mesh/tether/pkg/rdma"
)

// Namespace is the prefix of every metric name of this package.
const Namespace = "tether"

// Directions of channel traffic, the values of the direction label.
const (
	// DirectionSent counts messages this process sent.
	DirectionSent = "sent"
	// DirectionReceived counts messages this process received.
	DirectionReceived = "received"
	// DirectionWritten counts one-sided writes this process made into a
	// peer's memory.
	DirectionWritten = "written"
)

// Channels counts the traffic of peer-to-peer data channels, by provider
// and direction:
//
//	tether_channel_messages_total{provider, direction}  messages (or one-sided writes)
//	tether_channel_bytes_total{provider, direction}     their header and payload bytes
//
// A message counts when Send handed it to the transport or Recv returned it,
// whether or not it is acknowledged later; a retry sent again after a heal
// counts again.
type Channels struct {
	messages *prometheus.CounterVec
	bytes    *prometheus.CounterVec
}

// NewChannels returns the channel collector.
func NewChannels() *Channels {
	labels := []string{"provider", "direction"}
	return &Channels{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "channel", Name: "messages_total",
			Help: "Messages sent and received, and one-sided writes made, on peer-to-peer channels, by channel provider.",
		}, labels),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "channel", Name: "bytes_total",
			Help: "Header and payload bytes of the messages and one-sided writes counted by tether_channel_messages_total.",
		}, labels),
	}
}

// Describe implements prometheus.Collector.
func (c *Channels) Describe(ch chan<- *prometheus.Desc) {
	c.messages.Describe(ch)
	c.bytes.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *Channels) Collect(ch chan<- prometheus.Metric) {
	c.messages.Collect(ch)
	c.bytes.Collect(ch)
}

// Provider returns the counters of one channel provider ("shm", "tcp",
// ...), resolved once so that counting a message is two atomic additions.
// It creates the provider's series at zero.
func (c *Channels) Provider(name string) *ChannelCounters {
	counters := &ChannelCounters{}
	for i, dir := range []string{DirectionSent, DirectionReceived, DirectionWritten} {
		counters.messages[i] = c.messages.WithLabelValues(name, dir)
		counters.bytes[i] = c.bytes.WithLabelValues(name, dir)
	}
	return counters
}

// ChannelCounters are the counters of one provider.
type ChannelCounters struct {
	messages, bytes [3]prometheus.Counter // sent, received, written
}

// Messages returns the message counter of a direction (DirectionSent,
// DirectionReceived, DirectionWritten).
func (cc *ChannelCounters) Messages(direction string) prometheus.Counter {
	return cc.messages[directionIndex(direction)]
}

// Bytes returns the byte counter of a direction.
func (cc *ChannelCounters) Bytes(direction string) prometheus.Counter {
	return cc.bytes[directionIndex(direction)]
}

func directionIndex(direction string) int {
	switch direction {
	case DirectionReceived:
		return 1
	case DirectionWritten:
		return 2
	}
	return 0
}

func (cc *ChannelCounters) add(dir, n int) {
	cc.messages[dir].Inc()
	cc.bytes[dir].Add(float64(n))
}

// Sent counts a message of n header and payload bytes sent.
func (cc *ChannelCounters) Sent(n int) { cc.add(0, n) }

// Received counts a message of n header and payload bytes received.
func (cc *ChannelCounters) Received(n int) { cc.add(1, n) }

// Written counts a one-sided write of n bytes.
func (cc *ChannelCounters) Written(n int) { cc.add(2, n) }

// Wrap returns ch counting every message it sends and receives and every
// one-sided write it makes, under ch.Provider(). Everything else passes
// through to ch. Wrap where a process binds a channel (the member's channel
// handler, the client's bind function) and use the result in place of ch.
func (c *Channels) Wrap(ch rdma.Channel) rdma.Channel {
	return &countedChannel{Channel: ch, counters: c.Provider(ch.Provider())}
}

type countedChannel struct {
	rdma.Channel
	counters *ChannelCounters
}

func (c *countedChannel) Send(ctx context.Context, m *rdma.Message) (uint64, error) {
	seq, err := c.Channel.Send(ctx, m)
	if err == nil {
		c.counters.Sent(len(m.Header) + len(m.Payload))
	}
	return seq, err
}

func (c *countedChannel) Recv(ctx context.Context, m *rdma.Message) error {
	err := c.Channel.Recv(ctx, m)
	if err == nil {
		c.counters.Received(len(m.Header) + len(m.Payload))
	}
	return err
}

func (c *countedChannel) Write(ctx context.Context, key rdma.RegionKey, off uint64, data []byte) (uint64, error) {
	seq, err := c.Channel.Write(ctx, key, off, data)
	if err == nil {
		c.counters.Written(len(data))
	}
	return seq, err
}
