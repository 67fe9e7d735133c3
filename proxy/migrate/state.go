package migrate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// The state file: each migration's stage, kept across restarts. It is JSON, written whole to a
// temporary file beside it, synced and renamed over it, so that a crash leaves the old file or
// the new one, never a part.

// stateVersion is the state file's format.
const stateVersion = 1

// maxStateBytes bounds the state file read at start.
const maxStateBytes = 1 << 20

type stateFile struct {
	Version    int                  `json:"version"`
	Migrations map[string]persisted `json:"migrations"`
}

// persisted is one migration's saved state: its stage applies only to the spec of Fingerprint.
type persisted struct {
	Fingerprint string    `json:"fingerprint"`
	Stage       int       `json:"stage"`
	State       string    `json:"state"`
	Reason      string    `json:"reason"`
	At          time.Time `json:"at"`
}

// readState reads the state file; a missing file (or none configured) holds nothing.
func readState(path string) (map[string]persisted, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state file: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() || fi.Size() > maxStateBytes {
		return nil, fmt.Errorf("state file %s: not a regular file of at most %d bytes; delete it to start every migration at its first stage", path, maxStateBytes)
	}
	var sf stateFile
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sf); err != nil {
		return nil, fmt.Errorf("state file %s: %v; delete it to start every migration at its first stage", path, err)
	}
	if sf.Version != stateVersion {
		return nil, fmt.Errorf("state file %s: version %d, this sidecar writes %d; delete it to start every migration at its first stage", path, sf.Version, stateVersion)
	}
	return sf.Migrations, nil
}

// persist writes every migration's saved state to the state file, atomically.
func (c *Controller) persist() error {
	path := c.cfg.StateFile
	if path == "" {
		return nil
	}
	c.persistMu.Lock()
	defer c.persistMu.Unlock()
	sf := stateFile{Version: stateVersion, Migrations: map[string]persisted{}}
	set := c.set.Load()
	for name, m := range set.byName {
		if p := m.saved.Load(); p != nil {
			sf.Migrations[name] = *p
		}
	}
	b, err := json.MarshalIndent(sf, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(path, append(b, '\n'))
}

// writeAtomic writes b to path by way of a synced temporary file renamed over it, then syncs the
// directory.
func writeAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename: nothing
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("state file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("state file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
