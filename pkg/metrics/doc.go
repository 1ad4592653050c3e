// Package metrics holds tether's Prometheus collectors, for any process to
// register on its own registry: the forwarder, a group member, a client.
//
//   - Channels counts the traffic of peer-to-peer data channels by provider
//     (tether_channel_messages_total, tether_channel_bytes_total). Channels
//     run directly between a client and a member, never through a
//     forwarder, so these series come from the processes that own channels:
//     wrap each channel with Channels.Wrap where it is bound, or count with
//     the counters of Channels.Provider.
//   - GRPC counts the calls a gRPC server handled, by service, method and
//     status code (tether_<subsystem>_requests_total), with interceptors.
//   - Heals counts connections that healed and how long each heal took
//     (tether_<subsystem>_heals_total, tether_<subsystem>_heal_duration_seconds);
//     what a heal is, and what its duration measures, is up to the process
//     that observes it and is documented there.
//   - Views reports, for the groups a process follows, the members of the
//     current view and the counters its view provider keeps
//     (tether_view_members, tether_view_installed_total,
//     tether_view_member_events_total).
//
// Every collector is a prometheus.Collector with fixed metric names; create
// one of each per registry.
package metrics
