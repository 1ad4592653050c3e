package connect

import "context"

type cancelKey struct{}

func withCancel(ctx context.Context, cancel func()) context.Context {
	return context.WithValue(ctx, cancelKey{}, cancel)
}

// Cancel returns, to an element of a client sub-chain, the function that
// ends the shared connection its call goes over: the gRPC connection is
// closed and the URL's count forced to zero, so that the next Request to the
// URL dials again. Heal calls it when the far end is gone. It returns nil
// outside a connect client sub-chain. Calling it after the connection was
// replaced does nothing to the new one.
func Cancel(ctx context.Context) func() {
	cancel, _ := ctx.Value(cancelKey{}).(func())
	return cancel
}
