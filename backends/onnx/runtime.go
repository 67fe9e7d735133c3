// Package onnx runs ONNX models in the process with ONNX Runtime, through
// github.com/yalue/onnxruntime_go (cgo, the shared library loaded at run time).
//
// A [Runtime] stands for the loaded library and its process-wide environment; [Runtime.Load] turns
// a model into a [Session], a pool of ONNX Runtime sessions that implements [backends.Backend]:
//
//	path, err := onnx.LibraryPath(cfg.Library) // "" searches $ONNXRUNTIME_LIB and the repo cache
//	rt, err := onnx.Open(path)
//	defer rt.Close()
//	s, err := rt.LoadFile("bandwidth", "models/bandwidth.onnx", onnx.Config{Sessions: 2, Fingerprint: spec.Fingerprint()})
//	res, err := s.Infer(ctx, batch)
//
// Models must have a dynamic first (batch) dimension on every input and output, and, when
// [Config.Fingerprint] is set, carry the same feature spec fingerprint in their metadata_props
// under [MetaFingerprint].
package onnx

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// Version is the ONNX Runtime release the sidecar is built and tested with; the fetch script caches
// it as CacheFile.
const Version = "1.30.0"

// CacheFile is where scripts/fetch-onnxruntime.sh caches the library, relative to the repository
// root. [LibraryPath] looks for it in the working directory and each of its parents.
const CacheFile = ".onnxruntime/libonnxruntime.so." + Version

// EnvLibrary names the environment variable that may point at the library.
const EnvLibrary = "ONNXRUNTIME_LIB"

// LibraryPath resolves the path of the ONNX Runtime shared library: the configured path when it is
// not empty, else $ONNXRUNTIME_LIB when set, else [CacheFile] in the working directory or the
// nearest parent that has it (so tests in any package of the repository find the repository's
// cache). A configured or $ONNXRUNTIME_LIB path must exist; it is never silently passed over. The
// error says where it looked and how to get the library. The result is absolute.
func LibraryPath(configured string) (string, error) {
	if configured != "" {
		return existing(configured, "configured ONNX Runtime library")
	}
	if p := os.Getenv(EnvLibrary); p != "" {
		return existing(p, "$"+EnvLibrary)
	}
	var looked []string
	if dir, err := os.Getwd(); err == nil {
		for {
			p := filepath.Join(dir, CacheFile)
			looked = append(looked, p)
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
				return p, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", fmt.Errorf("ONNX Runtime library not found: $%s is not set and %s is in none of: %s; "+
		"run scripts/fetch-onnxruntime.sh (it caches the library there) or set %s to a libonnxruntime.so %s",
		EnvLibrary, CacheFile, strings.Join(looked, ", "), EnvLibrary, Version)
}

func existing(p, what string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", what, p, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w; run scripts/fetch-onnxruntime.sh or point it at a libonnxruntime.so %s", what, p, err, Version)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s %s is not a regular file", what, p)
	}
	return abs, nil
}

// env guards onnxruntime_go's process-global state: the library keeps one loaded shared library
// and one OrtEnv per process, so every Runtime in the process shares them. It is the package's only
// mutable package-level state, forced by the library's design.
var env struct {
	// mu guards the fields below and every initialization and destruction of the environment.
	mu sync.Mutex
	// refs counts open Runtimes; the environment exists while refs > 0.
	refs int
	// path is the library loaded while refs > 0.
	path string
}

// Runtime is the loaded ONNX Runtime library and its environment. Any number of Runtimes may be
// open in one process (tests open one each), as long as they name the same library: the first
// Open loads it and the last Close unloads it. Methods may be called concurrently.
type Runtime struct {
	path    string
	version string

	// loads counts Load calls in progress; Close waits for them.
	loads sync.WaitGroup
	// mu guards closed and sessions.
	mu       sync.Mutex
	closed   bool
	sessions map[*Session]struct{}
}

// Open loads the ONNX Runtime shared library at libPath (an empty libPath is resolved with
// [LibraryPath]) and initializes its environment, unless an open Runtime already did; a second,
// different library cannot be loaded into the same process.
func Open(libPath string) (*Runtime, error) {
	path, err := LibraryPath(libPath)
	if err != nil {
		return nil, err
	}
	env.mu.Lock()
	defer env.mu.Unlock()
	switch {
	case env.refs == 0:
		ort.SetSharedLibraryPath(path)
		if err := ort.InitializeEnvironment(); err != nil {
			return nil, fmt.Errorf("loading ONNX Runtime from %s: %w", path, err)
		}
		env.path = path
	case env.path != path:
		return nil, fmt.Errorf("ONNX Runtime is already loaded from %s in this process; cannot also load %s", env.path, path)
	}
	env.refs++
	return &Runtime{path: path, version: ort.GetVersion(), sessions: make(map[*Session]struct{})}, nil
}

// Path is the absolute path of the loaded library.
func (rt *Runtime) Path() string { return rt.path }

// Version is the version the loaded library reports, such as "1.30.0".
func (rt *Runtime) Version() string { return rt.version }

// Close closes the Sessions loaded from rt that are still open (each waits for its in-flight Infer
// calls), waits for Load calls in progress, and releases the environment, which the last open
// Runtime destroys. Load fails with [backends.ErrUnavailable] once Close has begun. Close is
// idempotent.
func (rt *Runtime) Close() error {
	rt.mu.Lock()
	if rt.closed {
		rt.mu.Unlock()
		return nil
	}
	rt.closed = true
	rt.mu.Unlock()

	rt.loads.Wait()
	rt.mu.Lock()
	open := make([]*Session, 0, len(rt.sessions))
	for s := range rt.sessions {
		open = append(open, s)
	}
	rt.mu.Unlock()
	var errs []error
	for _, s := range open {
		errs = append(errs, s.Close())
	}

	env.mu.Lock()
	defer env.mu.Unlock()
	env.refs--
	if env.refs == 0 {
		env.path = ""
		if err := ort.DestroyEnvironment(); err != nil {
			errs = append(errs, fmt.Errorf("destroying the ONNX Runtime environment: %w", err))
		}
	}
	return errors.Join(errs...)
}

// beginLoad registers a Load in progress; it fails once Close has begun.
func (rt *Runtime) beginLoad() bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.closed {
		return false
	}
	rt.loads.Add(1)
	return true
}

// track records a loaded session, so that Close can close it.
func (rt *Runtime) track(s *Session) {
	rt.mu.Lock()
	rt.sessions[s] = struct{}{}
	rt.mu.Unlock()
}

// forget drops a closed session.
func (rt *Runtime) forget(s *Session) {
	rt.mu.Lock()
	delete(rt.sessions, s)
	rt.mu.Unlock()
}
