//go:build !linux

package childproc

import "os/exec"

// setParentDeathSignal does nothing where there is no parent death signal;
// the child still ends when its stdin closes.
func setParentDeathSignal(*exec.Cmd) {}
