package checkrequest

// Limits bounds what a request may carry. The defaults are generous for any
// real deployment and small enough that no peer can make a chain hold much
// memory per connection.
type Limits struct {
	// MaxRequestBytes bounds the encoded size of a whole request or
	// connection (the gRPC server's own limit is 4 MiB).
	MaxRequestBytes int
	// MaxIDBytes bounds a connection ID and a path segment ID.
	MaxIDBytes int
	// MaxNameBytes bounds the network service, endpoint, path segment,
	// mechanism type and class names.
	MaxNameBytes int
	// MaxEntries bounds the entries of the connection's labels, of each
	// mechanism's parameters and of each path segment's metrics.
	MaxEntries int
	// MaxKeyBytes and MaxValueBytes bound each of those entries.
	MaxKeyBytes   int
	MaxValueBytes int
	// MaxMechanisms bounds the mechanism preferences of a request.
	MaxMechanisms int
	// MaxPathSegments bounds the hops of a connection's path.
	MaxPathSegments int
}

// DefaultLimits are the limits NewServer applies unless told otherwise.
var DefaultLimits = Limits{
	MaxRequestBytes: 64 << 10,
	MaxIDBytes:      256,
	MaxNameBytes:    253,
	MaxEntries:      64,
	MaxKeyBytes:     256,
	MaxValueBytes:   4096,
	MaxMechanisms:   16,
	MaxPathSegments: 32,
}

// Option changes the limits of NewServer.
type Option func(*Limits)

// WithLimits replaces all limits at once.
func WithLimits(l Limits) Option {
	return func(dst *Limits) { *dst = l }
}

// WithMaxRequestBytes sets Limits.MaxRequestBytes.
func WithMaxRequestBytes(n int) Option {
	return func(l *Limits) { l.MaxRequestBytes = n }
}

// WithMaxEntries sets Limits.MaxEntries.
func WithMaxEntries(n int) Option {
	return func(l *Limits) { l.MaxEntries = n }
}

// WithMaxValueBytes sets Limits.MaxValueBytes.
func WithMaxValueBytes(n int) Option {
	return func(l *Limits) { l.MaxValueBytes = n }
}
