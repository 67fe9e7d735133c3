package features

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strconv"
)

// Golden is a file of golden vectors: raw inputs and the canonical rows a spec makes of them, so
// that any change in canonicalization (code or spec) is seen, by a Go test and by the training
// pipeline before it trains.
type Golden struct {
	Spec        string       `json:"spec"`
	Fingerprint string       `json:"fingerprint"`
	Cases       []GoldenCase `json:"cases"`
}

// GoldenCase is one input: Raw in the layout of Canonicalize (null for a missing value), and
// either the canonical row (as shortest round-trip float32 strings, exact) or the error.
type GoldenCase struct {
	Name      string     `json:"name"`
	Raw       []*float64 `json:"raw"`
	Canonical []string   `json:"canonical,omitempty"`
	Error     string     `json:"error,omitempty"`
}

// goldenInputs are the cases every spec's golden file holds: typical values, both clip bounds and
// beyond, zero, and missing values at the first and a later step.
func (s *Spec) goldenInputs() []struct {
	name string
	raw  []float64
} {
	n := s.Size()
	w := s.Width()
	typical := make([]float64, n)
	for i := range typical {
		f := s.Features[i%w]
		v := 1.0
		if f.Normalize.Method == NormZScore {
			v = f.Normalize.Mean + f.Normalize.Std*float64(i/w%3-1)/2
		}
		typical[i] = v
	}
	with := func(f func(i int, v float64) float64) []float64 {
		out := make([]float64, n)
		for i, v := range typical {
			out[i] = f(i, v)
		}
		return out
	}
	return []struct {
		name string
		raw  []float64
	}{
		{"typical", typical},
		{"zero", with(func(int, float64) float64 { return 0 })},
		{"below clip", with(func(int, float64) float64 { return -1e6 })},
		{"above clip", with(func(int, float64) float64 { return 1e12 })},
		{"fractions", with(func(i int, v float64) float64 { return v*1.000001 + 0.1 })},
		{"missing later", with(func(i int, v float64) float64 {
			if i >= w && i%w == 0 {
				return math.NaN()
			}
			return v
		})},
		{"missing first", with(func(i int, v float64) float64 {
			if i == 0 {
				return math.NaN()
			}
			return v
		})},
	}
}

// MakeGolden computes the golden vectors of a spec.
func (s *Spec) MakeGolden() Golden {
	g := Golden{Spec: s.Name, Fingerprint: s.Fingerprint()}
	for _, in := range s.goldenInputs() {
		c := GoldenCase{Name: in.name}
		for _, v := range in.raw {
			if math.IsNaN(v) {
				c.Raw = append(c.Raw, nil)
			} else {
				v := v
				c.Raw = append(c.Raw, &v)
			}
		}
		dst := make([]float32, len(in.raw))
		if err := s.Canonicalize(dst, in.raw); err != nil {
			c.Error = err.Error()
		} else {
			for _, v := range dst {
				c.Canonical = append(c.Canonical, strconv.FormatFloat(float64(v), 'g', -1, 32))
			}
		}
		g.Cases = append(g.Cases, c)
	}
	return g
}

// CheckGolden canonicalizes the raw inputs of a golden file with the spec as it is now and
// compares every value bit for bit (or the error) with the file's; the file must record the spec's
// name and fingerprint. It returns every difference.
func (s *Spec) CheckGolden(b []byte) error { return s.checkGolden(b, "the golden file") }

// CheckGoldenFile is CheckGolden of the file at path, with errors that name it.
func (s *Spec) CheckGoldenFile(path string) error {
	b, err := readSmallFile(path)
	if err != nil {
		return err
	}
	return s.checkGolden(b, path)
}

// WriteGoldenFile writes the spec's golden vectors (MakeGolden) to path, which may exist only as
// this spec's golden file: one that records another spec's name is refused, not overwritten.
func (s *Spec) WriteGoldenFile(path string) (Golden, error) {
	if b, err := readSmallFile(path); err == nil {
		var old Golden
		if json.Unmarshal(b, &old) == nil && old.Spec != "" && old.Spec != s.Name {
			return Golden{}, fmt.Errorf("%s holds the vectors of spec %q (fingerprint %.12s), not of %q: not overwriting it; give the spec's own golden file (or remove this one first, if the spec was renamed)",
				path, old.Spec, old.Fingerprint, s.Name)
		}
	}
	g := s.MakeGolden()
	b, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		return Golden{}, err
	}
	return g, os.WriteFile(path, append(b, '\n'), 0o644)
}

// checkGolden is CheckGolden; name is the file's, for the errors.
func (s *Spec) checkGolden(b []byte, name string) error {
	var g Golden
	if err := json.Unmarshal(b, &g); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	fp := s.Fingerprint()
	switch {
	case g.Spec != "" && g.Spec != s.Name:
		// Another spec's file: regenerating it from this spec would overwrite that spec's vectors.
		return fmt.Errorf("%s holds the vectors of spec %q (fingerprint %.12s), not of %q: give the spec's own golden file",
			name, g.Spec, g.Fingerprint, s.Name)
	case g.Fingerprint != fp && g.Spec == "":
		return fmt.Errorf("%s is for fingerprint %.12s and names no spec; spec %q has %.12s: give the spec's own golden file, or, if this is it and the spec changed deliberately, regenerate it (sidecar features golden -write) and retrain",
			name, g.Fingerprint, s.Name, fp)
	case g.Fingerprint != fp:
		return fmt.Errorf("%s is for fingerprint %.12s of spec %q, which now has %.12s: the spec changed; if deliberately, regenerate the golden file (sidecar features golden -write) and retrain, otherwise undo the change",
			name, g.Fingerprint, g.Spec, fp)
	}
	if len(g.Cases) == 0 {
		return fmt.Errorf("%s has no cases", name)
	}
	var diffs []string
	for _, c := range g.Cases {
		raw := make([]float64, len(c.Raw))
		for i, p := range c.Raw {
			raw[i] = math.NaN()
			if p != nil {
				raw[i] = *p
			}
		}
		dst := make([]float32, len(raw))
		err := s.Canonicalize(dst, raw)
		switch {
		case err != nil || c.Error != "":
			if err == nil || err.Error() != c.Error {
				diffs = append(diffs, fmt.Sprintf("case %q: error %q, now %v", c.Name, c.Error, err))
			}
		case len(c.Canonical) != len(dst):
			diffs = append(diffs, fmt.Sprintf("case %q: %d values, now %d", c.Name, len(c.Canonical), len(dst)))
		default:
			for j, v := range dst {
				if now := strconv.FormatFloat(float64(v), 'g', -1, 32); now != c.Canonical[j] {
					diffs = append(diffs, fmt.Sprintf("case %q value %d: golden %s, now %s", c.Name, j, c.Canonical[j], now))
					break
				}
			}
		}
	}
	if len(diffs) > 0 {
		return fmt.Errorf("%s: canonicalization differs from the golden vectors (code changed?):\n  %s", name, joinLines(diffs))
	}
	return nil
}

func joinLines(s []string) string {
	out := ""
	for i, l := range s {
		if i > 0 {
			out += "\n  "
		}
		out += l
	}
	return out
}
