package demoproc

import (
	"os/exec"
	"syscall"
)

// dieWithParent has the kernel SIGKILL cmd's process when the demo dies (even by SIGKILL), so
// that nothing it started outlives it. (Strictly: when the thread that started it exits; Go keeps
// its threads for the life of the process.)
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
