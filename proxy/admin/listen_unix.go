//go:build unix

package admin

import (
	"net"
	"sync"
	"syscall"
)

// umaskMu serializes the changes of the process's umask by listenPrivate: two at once would
// restore each other's value.
var umaskMu sync.Mutex

// listenPrivate creates a unix socket at path that only its owner can connect to from the
// start: the umask clears the group's and others' bits while it is bound (the caller then sets
// the exact mode). The umask is the process's: files other goroutines create meanwhile are
// owner-only too, which is stricter, never looser.
func listenPrivate(path string) (net.Listener, error) {
	umaskMu.Lock()
	defer umaskMu.Unlock()
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	return net.Listen("unix", path)
}
