//go:build !unix

package admin

import "net"

// listenPrivate creates a unix socket at path (the caller sets its mode).
func listenPrivate(path string) (net.Listener, error) {
	return net.Listen("unix", path)
}
