package clienturl

import (
	"context"
	"net/url"
)

type clientURLKey struct{}

// WithClientURL returns a context that carries u as the next hop's URL.
func WithClientURL(ctx context.Context, u *url.URL) context.Context {
	return context.WithValue(ctx, clientURLKey{}, u)
}

// ClientURL returns the next hop's URL carried by ctx, or nil.
func ClientURL(ctx context.Context) *url.URL {
	u, _ := ctx.Value(clientURLKey{}).(*url.URL)
	return u
}
