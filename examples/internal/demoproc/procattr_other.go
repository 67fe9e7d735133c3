//go:build !linux

package demoproc

import "os/exec"

// dieWithParent does nothing here: only Linux has a parent-death signal. The demo still stops
// every process it started when it ends, unless it is killed.
func dieWithParent(*exec.Cmd) {}
