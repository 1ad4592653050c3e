package clienturl

import (
	"context"
	"net/url"

	"github.com/tether-mesh/tether/pkg/chain"
)

type clientURLKey struct{}

// urlKey keeps a connection's next hop in its chain metadata.
var urlKey = chain.NewKey[*url.URL]("clienturl")

// WithClientURL returns a context that carries u as the next hop's URL. A
// URL in the context wins over the connection's (SetClientURL).
func WithClientURL(ctx context.Context, u *url.URL) context.Context {
	return context.WithValue(ctx, clientURLKey{}, u)
}

// SetClientURL records u as the next hop of the connection whose chain event
// runs in ctx. Elements of a chain use it rather than WithClientURL: it
// allocates nothing, and the URL stays with the connection for its later
// events (a Close goes where the last Request went) until it is set again.
// It panics outside a chain event.
func SetClientURL(ctx context.Context, u *url.URL) {
	urlKey.Store(ctx, u)
}

// ClientURL returns the next hop's URL: the one the context carries, or else
// the one recorded for the connection, or nil.
func ClientURL(ctx context.Context) *url.URL {
	if u, ok := ctx.Value(clientURLKey{}).(*url.URL); ok {
		return u
	}
	u, _ := urlKey.Load(ctx)
	return u
}
