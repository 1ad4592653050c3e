// Package expire closes connections whose previous hop stopped refreshing
// them: after each Request it arms a timer for the expiry of the previous
// hop's path segment (set by updatepath there), and when the timer fires
// first, it closes the connection from the start of the chain, as a Close
// would. A segment without an expiry gets the default lifetime, and none
// lives longer than the maximum lifetime; either way the deadline is
// written into the previous hop's segment of the response, so that the
// previous hop knows when to refresh (an NSM client sets no expiry itself).
// It needs no goroutine per connection while it waits. Place it right after
// updatepath in every server chain.
package expire
