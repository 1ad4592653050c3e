package chain

// Changes exposes the diff used by the debug log to the tests.
var Changes = changes
