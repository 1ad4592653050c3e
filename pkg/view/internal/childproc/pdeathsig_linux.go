package childproc

import (
	"os/exec"
	"syscall"
)

// setParentDeathSignal kills the child when the test process dies, so that
// no child outlives a crashed or killed test.
func setParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
