package onnx

import (
	"errors"
	"fmt"

	"github.com/novacron/sidecar/backends"
)

// Keys of the model's custom metadata (ONNX metadata_props) that the sidecar reads.
const (
	// MetaFingerprint holds the lowercase hex SHA-256 fingerprint of the feature spec the model was
	// trained with (features.Spec.Fingerprint).
	MetaFingerprint = backends.PropFingerprint
	// MetaVersion holds the model's version, reported by Metadata. Without it the ONNX
	// model_version is used, or "unknown" when that is 0.
	MetaVersion = backends.PropVersion
)

// Config is how one model is served. The zero value is valid: one session, one intra-op and one
// inter-op thread, no fingerprint check.
type Config struct {
	// Sessions is the number of ONNX Runtime sessions in the pool, that is the number of batches
	// that run at once. 0 means 1.
	Sessions int
	// IntraOpThreads is the number of threads one session uses inside an operator. 0 means 1 (not
	// ONNX Runtime's default of one per core): the sidecar scales with Sessions and batching.
	IntraOpThreads int
	// InterOpThreads is the number of threads one session uses to run independent operators at
	// once. 0 means 1.
	InterOpThreads int
	// Fingerprint is the lowercase hex SHA-256 fingerprint of the feature spec the model must have
	// been trained with (features.Spec.Fingerprint). When set, Load refuses a model whose
	// metadata_props lack MetaFingerprint or hold another value. Empty means no check.
	Fingerprint string
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	switch {
	case c.Sessions < 0:
		return fmt.Errorf("Sessions: %d is negative (0 means 1)", c.Sessions)
	case c.IntraOpThreads < 0:
		return fmt.Errorf("IntraOpThreads: %d is negative (0 means 1)", c.IntraOpThreads)
	case c.InterOpThreads < 0:
		return fmt.Errorf("InterOpThreads: %d is negative (0 means 1)", c.InterOpThreads)
	}
	if c.Fingerprint != "" {
		if err := checkFingerprint(c.Fingerprint); err != nil {
			return fmt.Errorf("Fingerprint: %w", err)
		}
	}
	return nil
}

func checkFingerprint(f string) error {
	if len(f) != 64 {
		return fmt.Errorf("%q is %d characters long, want 64 (lowercase hex SHA-256)", f, len(f))
	}
	for _, r := range f {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return errors.New("not lowercase hex: " + f)
		}
	}
	return nil
}

func (c Config) sessions() int { return max(c.Sessions, 1) }
func (c Config) intraOp() int  { return max(c.IntraOpThreads, 1) }
func (c Config) interOp() int  { return max(c.InterOpThreads, 1) }
