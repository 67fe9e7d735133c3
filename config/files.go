package config

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Bounds of the files a config names, in bytes. They only stop a path that names the wrong thing
// (a log, a disk image) from filling memory: real files are far smaller.
const (
	// MaxFileBytes bounds a config file or a feature spec (ReadFile): 1 MiB. The examples' are
	// under 2 KiB.
	MaxFileBytes = 1 << 20
	// MaxModelBytes bounds a model file (models[].path; ReadFileLimit): 1 GiB. ONNX Runtime is
	// given the whole file, so a model's bytes are in memory while it loads. The examples' models
	// are under 400 KiB.
	MaxModelBytes = 1 << 30
)

// ReadFile reads a file named in a config (the config itself, a feature spec): embedded:NAME from
// embedded, an absolute path as is, a relative one from dir (the config file's folder; "" for the
// working directory). It reads regular files of at most MaxFileBytes only: anything else (a FIFO, a
// device such as /dev/zero, a socket, a directory, a larger file) is refused at once, without
// waiting on it, with an error naming the path and the reason. Safe for concurrent use.
func ReadFile(path, dir string, embedded fs.FS) ([]byte, error) {
	return ReadFileLimit(path, dir, embedded, MaxFileBytes)
}

// ReadFileLimit is ReadFile with a bound of limit bytes (MaxModelBytes for a model file).
func ReadFileLimit(path, dir string, embedded fs.FS, limit int64) ([]byte, error) {
	if name, ok := strings.CutPrefix(path, EmbeddedPrefix); ok {
		if embedded == nil {
			return nil, fmt.Errorf("%s: no embedded files in this build", path)
		}
		f, err := embedded.Open(name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		defer f.Close()
		return readRegular(path, f, limit)
	}
	if !filepath.IsAbs(path) && dir != "" {
		path = filepath.Join(dir, path)
	}
	// O_NONBLOCK: opening a FIFO does not wait for a writer (the file is then refused, by its
	// type, before any read); reads of a regular file are not affected.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err // an *fs.PathError: names the path
	}
	defer f.Close()
	return readRegular(path, f, limit)
}

// readRegular reads f, opened from path, if it is a regular file of at most limit bytes.
func readRegular(path string, f fs.File, limit int64) ([]byte, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if m := fi.Mode(); !m.IsRegular() {
		return nil, fmt.Errorf("%s: %s, not a regular file", path, fileKind(m))
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes, over the bound of %d for this file", path, fi.Size(), limit)
	}
	var buf bytes.Buffer
	buf.Grow(int(fi.Size()) + bytes.MinRead)
	if _, err := buf.ReadFrom(io.LimitReader(f, limit+1)); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if int64(buf.Len()) > limit {
		return nil, fmt.Errorf("%s: grew past the bound of %d bytes for this file while it was read", path, limit)
	}
	return buf.Bytes(), nil
}

// fileKind names the type of a file that is not regular.
func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeDevice != 0:
		return "a device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return fmt.Sprintf("a special file (%v)", m.Type())
}

// File resolves a path the config names (state_file, admin.token_file) against the config's
// directory: an absolute path, or "", stays as it is.
func (c *Config) File(path string) string {
	if path == "" || filepath.IsAbs(path) || c.Dir() == "" {
		return path
	}
	return filepath.Join(c.Dir(), path)
}

// Dir is the folder relative paths in c are resolved from: the config file's folder, or "" for
// an embedded config (whose paths are embedded too).
func (c *Config) Dir() string {
	if strings.HasPrefix(c.Source, EmbeddedPrefix) || c.Source == "" {
		return ""
	}
	return filepath.Dir(c.Source)
}
