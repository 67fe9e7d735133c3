// Package admin is the sidecar's admin listener, apart from its data ports: a small JSON API over
// the traffic migrations (proxy/migrate) for `sidecar migration` and for people with curl.
//
//	GET  /admin/migrations                   {"migrations": [Status...]}
//	GET  /admin/migrations/{name}            Status and "disagreements": [Sample...] (newest first)
//	POST /admin/migrations/{name}/pause      {"reason": "..."} (optional)  -> the new Status
//	POST /admin/migrations/{name}/resume     likewise
//	POST /admin/migrations/{name}/advance    likewise
//	POST /admin/migrations/{name}/rollback   likewise
//
// It listens on a loopback address, with a bearer token, or on a unix socket (mode 0600), where
// the token is optional. Errors are {"error": "message"}: 401 for a missing or wrong token, 403 for
// a Host that is not loopback (DNS rebinding), 404 for an unknown migration or path, 405 for a
// wrong method (with Allow), 409 for an action the migration's state refuses, 413 for a body over
// 4 KiB.
package admin

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultListen is the listen address the config defaults to when admin is enabled (a zero
// Config.Listen), and the address `sidecar migration` calls by default.
const DefaultListen = "127.0.0.1:9464"

// Bounds of a token file.
const (
	// MinTokenBytes is the shortest token accepted (after trimming whitespace).
	MinTokenBytes = 16
	// MaxTokenFileBytes is the largest token file read.
	MaxTokenFileBytes = 4 << 10
)

// maxSocketPath is the longest unix socket path accepted: sun_path holds 108 bytes with its NUL
// on Linux, 104 on the BSDs and macOS.
const maxSocketPath = 103

// Config is the admin listener's configuration (the YAML's admin section). Plain data.
type Config struct {
	// Listen is where the admin API listens: "host:port" on a loopback address (127.0.0.0/8,
	// ::1 or localhost; port 0 picks a free one) or "unix:/absolute/path/to/socket". Empty:
	// DefaultListen.
	Listen string
	// TokenFile names a file holding the bearer token every request must carry (whitespace
	// trimmed; at least MinTokenBytes of visible ASCII; a regular file of at most
	// MaxTokenFileBytes). Required for a TCP address. Optional for a unix socket, whose mode 0600
	// then is the only protection; when set, the token is required on the socket too. The file
	// is read once, by New: a changed token takes a new Server.
	TokenFile string
}

// Validate checks c without touching the filesystem (New reads the token file). Its errors name
// the YAML field: admin.listen, admin.token_file.
func (c Config) Validate() error {
	network, _, err := SplitListen(cmp.Or(c.Listen, DefaultListen))
	if err != nil {
		return fmt.Errorf("admin.listen: %w", err)
	}
	if network == "tcp" && strings.TrimSpace(c.TokenFile) == "" {
		return fmt.Errorf("admin.token_file: required when admin.listen is a TCP address (%s): name a file holding a random token (openssl rand -hex 32 > FILE; chmod 600 FILE), or set admin.listen to a unix socket (unix:/run/sidecar/admin.sock)",
			cmp.Or(c.Listen, DefaultListen))
	}
	return nil
}

// SplitListen parses a listen address (Config.Listen, or the -admin flag of `sidecar migration`)
// into what net.Listen and net.Dial take: ("tcp", "127.0.0.1:9464") or ("unix", "/path"). It
// refuses a TCP address that is not loopback, a named port, and a socket path that is not
// absolute (a Linux abstract socket, "@name", has no file mode to protect it) or is too long.
func SplitListen(listen string) (network, address string, err error) {
	if path, ok := strings.CutPrefix(listen, "unix:"); ok {
		switch {
		case path == "":
			return "", "", errors.New(`"unix:" names no socket: want unix:/absolute/path/to/socket`)
		case !filepath.IsAbs(path):
			return "", "", fmt.Errorf("unix socket %q is not an absolute path: want unix:/absolute/path/to/socket", path)
		case len(path) > maxSocketPath:
			return "", "", fmt.Errorf("unix socket path %s is %d bytes, longer than the %d a socket address holds: choose a shorter path", path, len(path), maxSocketPath)
		}
		return "unix", filepath.Clean(path), nil
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", "", fmt.Errorf("%q: want a loopback host:port (%s) or unix:/path/to/socket", listen, DefaultListen)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "", "", fmt.Errorf("%q: port %q is not a number in 0..65535", listen, port)
	}
	if !IsLoopbackHost(host) {
		what := fmt.Sprintf("%q is not a loopback address", host)
		if host == "" {
			what = "an empty host listens on every interface"
		}
		return "", "", fmt.Errorf("%q: %s, and the admin API must not be reachable from other hosts: use a loopback address (%s) or a unix socket (unix:/run/sidecar/admin.sock)",
			listen, what, DefaultListen)
	}
	return "tcp", listen, nil
}

// IsLoopbackHost reports whether host (no port; an IPv6 address with or without brackets) is
// "localhost" or a loopback IP address.
func IsLoopbackHost(host string) bool {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ReadToken reads a bearer token from the file at path (see Config.TokenFile). Its errors name
// the file and say what to do.
func ReadToken(path string) (string, error) {
	const fix = "write a random token to it: openssl rand -hex 32 > FILE; chmod 600 FILE"
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%w: %s", err, fix)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file (%s): name the file that holds the token", path, fi.Mode().Type())
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxTokenFileBytes+1))
	if err != nil {
		return "", err
	}
	if len(b) > MaxTokenFileBytes {
		return "", fmt.Errorf("%s is larger than %d bytes: it should hold the token alone", path, MaxTokenFileBytes)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < MinTokenBytes {
		return "", fmt.Errorf("%s holds %d bytes of token, fewer than %d: %s", path, len(tok), MinTokenBytes, fix)
	}
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; c < 0x21 || c > 0x7e {
			return "", fmt.Errorf("%s: the token has a byte (%q at %d) that is not visible ASCII, and cannot be sent in a header: %s", path, c, i, fix)
		}
	}
	return tok, nil
}
