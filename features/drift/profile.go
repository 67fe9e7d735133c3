// Package drift profiles the features a model reads and scores how far live traffic has moved
// from them. A reference Profile is built from training rows with the same canonicalization as
// serving (features.Spec), bound to the spec by its fingerprint; a Monitor keeps mergeable
// sketches of the live canonical rows per time window and scores each feature against the
// profile with fixed thresholds (PSI, Jensen-Shannon distance, normalized Wasserstein distance),
// not p-values, which flag everything on large samples. Scores are deterministic: the same rows
// in any order give the same score.
//
// A feature's value in a row is its canonical value at the row's last step (a sequence model's
// rows overlap step by step, so each step would otherwise count window-length times).
//
// A profile may also hold the model's outputs, each value of an answered row a column of its
// own (OutputColumn): the reference of prediction drift, built by running the model on the
// training rows (sidecar profile build -model).
package drift

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/novacron/sidecar/features"
)

// Defaults, applied where a zero is given.
const (
	// DefaultBins is the number of reference bins per feature (deciles).
	DefaultBins = 10
	// ProfileVersion is the profile format this package writes and reads.
	ProfileVersion = 1
)

// quantileLevels are the levels at which profiles keep their reference quantiles (0.5%, 1.5%,
// ..., 99.5%): the grid of the Wasserstein distance.
var quantileLevels = func() []float64 {
	q := make([]float64, 100)
	for i := range q {
		q[i] = (float64(i) + 0.5) / 100
	}
	return q
}()

// Profile is a model's reference: one Reference per feature of its spec.
type Profile struct {
	Version int `json:"version"`
	// Spec and Fingerprint name the spec the rows were canonicalized with: the sidecar refuses a
	// profile of another spec.
	Spec        string `json:"spec"`
	Fingerprint string `json:"spec_fingerprint"`
	// Rows is the number of rows profiled.
	Rows     int64       `json:"rows"`
	Features []Reference `json:"features"`
	// Outputs are the model's output columns over the same rows (OutputColumn names them); none
	// when the profile was built without the model.
	Outputs []Reference `json:"outputs,omitempty"`
	// ModelDigest identifies the model whose answers Outputs profiles ("sha256:" and the hex of
	// its file's SHA-256): a model retrained on the same spec answers otherwise, and its outputs
	// are not this reference's (see Profile.OutputsFor).
	ModelDigest string `json:"model_digest,omitempty"`
}

// OutputColumn names the value i of a model output of width values per row: the output's name
// when it has one value ("score"), else name[i] ("forecast[0]").
func OutputColumn(output string, i, width int) string {
	if width == 1 {
		return output
	}
	return fmt.Sprintf("%s[%d]", output, i)
}

// columns are the profile's features, then its outputs.
func (p *Profile) columns() []Reference {
	if len(p.Outputs) == 0 {
		return p.Features
	}
	return append(slices.Clip(p.Features), p.Outputs...)
}

// Reference is one feature's reference distribution.
type Reference struct {
	Name string `json:"name"`
	// Edges are the interior bin edges, ascending and distinct: bin 0 holds values <= Edges[0],
	// bin i values in (Edges[i-1], Edges[i]], the last bin values > Edges[len-1]. They are the
	// reference's quantiles at 1/bins, 2/bins, ... (equal ones merged).
	Edges  []float64 `json:"edges"`
	Counts []int64   `json:"counts"`
	// Missing counts the rows whose value was not finite.
	Missing int64 `json:"missing"`
	// Min, Max, Mean and Std are over the finite values.
	Min  float64 `json:"min"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
	Std  float64 `json:"std"`
	// Quantiles are the values at quantileLevels (0.5%, 1.5%, ..., 99.5%).
	Quantiles []float64 `json:"quantiles"`
}

// Total is the number of finite values profiled.
func (r *Reference) Total() int64 {
	var n int64
	for _, c := range r.Counts {
		n += c
	}
	return n
}

// bin returns the bin of v (finite) over edges: the first edge >= v, so v is in
// (edges[i-1], edges[i]]. A scan for the usual ten bins, a binary search beyond.
func bin(edges []float64, v float64) int {
	if len(edges) <= 16 {
		for i, e := range edges {
			if v <= e {
				return i
			}
		}
		return len(edges)
	}
	i, _ := slices.BinarySearch(edges, v)
	return i
}

// Builder accumulates training rows into a Profile. Not safe for concurrent use.
type Builder struct {
	spec  *features.Spec
	bins  int
	feats columns // the features' last-step values
	// outputs are the output columns (SetOutputs) and outs their accumulators.
	outputs []string
	outs    columns
}

// columns accumulates the finite values and the missing count of each of a set of columns.
type columns struct {
	values [][]float64
	miss   []int64
	rows   int64
}

func (c *columns) add(row []float32) {
	for j, v := range row {
		if f := float64(v); math.IsNaN(f) || math.IsInf(f, 0) {
			c.miss[j]++
		} else {
			c.values[j] = append(c.values[j], f)
		}
	}
	c.rows++
}

// NewBuilder makes a Builder of the spec's features with bins bins (0: DefaultBins).
func NewBuilder(spec *features.Spec, bins int) (*Builder, error) {
	if bins == 0 {
		bins = DefaultBins
	}
	if bins < 2 || bins > 1000 {
		return nil, fmt.Errorf("drift: bins %d is not in 2..1000", bins)
	}
	w := spec.Width()
	return &Builder{spec: spec, bins: bins, feats: columns{values: make([][]float64, w), miss: make([]int64, w)}}, nil
}

// Add profiles canonical rows (Spec.Size() values each, as Spec.Canonicalize writes them).
func (b *Builder) Add(rows []float32) error {
	size, w := b.spec.Size(), b.spec.Width()
	if len(rows)%size != 0 {
		return fmt.Errorf("drift: %d values are not whole rows of %d", len(rows), size)
	}
	for off := 0; off < len(rows); off += size {
		b.feats.add(rows[off+size-w : off+size])
	}
	return nil
}

// SetOutputs names the model's output columns (OutputColumn) that AddOutputs profiles, before the
// first AddOutputs.
func (b *Builder) SetOutputs(names []string) error {
	if b.outs.rows > 0 {
		return errors.New("drift: SetOutputs after AddOutputs")
	}
	seen := map[string]bool{}
	for _, n := range names {
		if n == "" || seen[n] {
			return fmt.Errorf("drift: output column %q is empty or named twice", n)
		}
		seen[n] = true
	}
	b.outputs = slices.Clone(names)
	b.outs = columns{values: make([][]float64, len(names)), miss: make([]int64, len(names))}
	return nil
}

// AddOutputs profiles the model's answers: rows of one value per output column (SetOutputs).
func (b *Builder) AddOutputs(rows []float32) error {
	n := len(b.outputs)
	if n == 0 {
		return errors.New("drift: AddOutputs before SetOutputs")
	}
	if len(rows)%n != 0 {
		return fmt.Errorf("drift: %d output values are not whole rows of %d", len(rows), n)
	}
	for off := 0; off < len(rows); off += n {
		b.outs.add(rows[off : off+n])
	}
	return nil
}

// Profile returns the profile of the rows added.
func (b *Builder) Profile() (*Profile, error) {
	if b.feats.rows == 0 {
		return nil, errors.New("drift: no rows to profile")
	}
	p := &Profile{Version: ProfileVersion, Spec: b.spec.Name, Fingerprint: b.spec.Fingerprint(), Rows: b.feats.rows}
	for j, f := range b.spec.Features {
		r, err := reference(f.Name, b.feats.values[j], b.feats.miss[j], b.bins)
		if err != nil {
			return nil, fmt.Errorf("drift: feature %s %w in %d rows", f.Name, err, b.feats.rows)
		}
		p.Features = append(p.Features, r)
	}
	if len(b.outputs) > 0 && b.outs.rows != b.feats.rows {
		return nil, fmt.Errorf("drift: %d rows of outputs for %d rows of features: give AddOutputs the answer of every row", b.outs.rows, b.feats.rows)
	}
	for j, name := range b.outputs {
		r, err := reference(name, b.outs.values[j], b.outs.miss[j], b.bins)
		if err != nil {
			return nil, fmt.Errorf("drift: output %s %w in %d rows", name, err, b.feats.rows)
		}
		p.Outputs = append(p.Outputs, r)
	}
	return p, nil
}

// reference is the Reference of one column's values (finite; sorted in place) and missing count.
func reference(name string, vals []float64, missing int64, bins int) (Reference, error) {
	slices.Sort(vals)
	r := Reference{Name: name, Missing: missing}
	if len(vals) == 0 {
		return r, errors.New("has no finite value")
	}
	for i := 1; i < bins; i++ {
		e := quantileSorted(vals, float64(i)/float64(bins))
		if len(r.Edges) == 0 || e > r.Edges[len(r.Edges)-1] {
			r.Edges = append(r.Edges, e)
		}
	}
	r.Counts = make([]int64, len(r.Edges)+1)
	var sum float64
	for _, v := range vals {
		r.Counts[bin(r.Edges, v)]++
		sum += v
	}
	r.Min, r.Max = vals[0], vals[len(vals)-1]
	r.Mean = sum / float64(len(vals))
	var ss float64
	for _, v := range vals {
		ss += (v - r.Mean) * (v - r.Mean)
	}
	r.Std = math.Sqrt(ss / float64(len(vals)))
	r.Quantiles = make([]float64, len(quantileLevels))
	for i, q := range quantileLevels {
		r.Quantiles[i] = quantileSorted(vals, q)
	}
	return r, nil
}

// quantileSorted is the q-quantile of sorted values, interpolated between closest ranks (numpy's
// default).
func quantileSorted(s []float64, q float64) float64 {
	if len(s) == 1 {
		return s[0]
	}
	h := q * float64(len(s)-1)
	lo := int(math.Floor(h))
	if lo >= len(s)-1 {
		return s[len(s)-1]
	}
	return s[lo] + (h-float64(lo))*(s[lo+1]-s[lo])
}

// Check verifies that p is a profile of spec and well formed.
func (p *Profile) Check(spec *features.Spec) error {
	switch {
	case p.Version != ProfileVersion:
		return fmt.Errorf("drift: profile version %d, this sidecar reads %d: build it again with sidecar profile build", p.Version, ProfileVersion)
	case p.Fingerprint != spec.Fingerprint():
		return fmt.Errorf("drift: the profile is of spec %q %.12s, the model reads spec %q %.12s: build the profile from this spec", p.Spec, p.Fingerprint, spec.Name, spec.Fingerprint())
	case len(p.Features) != spec.Width():
		return fmt.Errorf("drift: the profile has %d features, the spec %d", len(p.Features), spec.Width())
	}
	for j, r := range p.Features {
		if name := spec.Features[j].Name; r.Name != name {
			return fmt.Errorf("drift: profile feature %d is %q, the spec's is %q", j, r.Name, name)
		}
	}
	seen := map[string]bool{}
	for j, r := range p.columns() {
		kind := "feature"
		if j >= len(p.Features) {
			kind = "output"
		}
		switch {
		case seen[r.Name]:
			return fmt.Errorf("drift: profile %s %s is named twice: the file is damaged", kind, r.Name)
		case len(r.Counts) != len(r.Edges)+1 || !slices.IsSorted(r.Edges) || len(r.Quantiles) != len(quantileLevels):
			return fmt.Errorf("drift: profile %s %s: %d counts for %d edges, %d quantiles: the file is damaged", kind, r.Name, len(r.Counts), len(r.Edges), len(r.Quantiles))
		case r.Total() == 0:
			return fmt.Errorf("drift: profile %s %s has no values", kind, r.Name)
		}
		seen[r.Name] = true
	}
	return nil
}

// OutputsFor is the profile to monitor the model of digest (empty: not known) with: p, or, when
// p's outputs are of another model (ModelDigest differs), p without them and the reason. The
// features' reference holds for any model of the spec; the outputs' only for the model profiled.
func (p *Profile) OutputsFor(digest string) (*Profile, string) {
	if len(p.Outputs) == 0 || p.ModelDigest == "" || digest == "" || p.ModelDigest == digest {
		return p, ""
	}
	q := *p
	q.Outputs, q.ModelDigest = nil, ""
	return &q, fmt.Sprintf("its outputs were profiled from model %.19s, the model loaded is %.19s: prediction drift is off until the profile is built again with this model (sidecar profile build -model)", p.ModelDigest, digest)
}

// CheckOutputs verifies that the model answers every output column the profile holds: layout is
// the model's output columns in the order of its answered rows (OutputColumn), nil when they have
// no fixed layout.
func (p *Profile) CheckOutputs(layout []string) error {
	if len(p.Outputs) == 0 {
		return nil
	}
	if layout == nil {
		return fmt.Errorf("drift: the profile holds the outputs %s, and the model's answers have no fixed layout: build the profile without -model", p.Outputs[0].Name)
	}
	for _, r := range p.Outputs {
		if !slices.Contains(layout, r.Name) {
			return fmt.Errorf("drift: the profile holds output %s, which the model does not answer (its outputs: %v): build the profile with this model", r.Name, layout)
		}
	}
	return nil
}

// maxProfileBytes bounds a profile read.
const maxProfileBytes = 16 << 20

// ReadProfile decodes a profile (JSON, strict) and checks it against spec.
func ReadProfile(r io.Reader, spec *features.Spec) (*Profile, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxProfileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("drift: reading the profile: %w", err)
	}
	if len(b) > maxProfileBytes {
		return nil, fmt.Errorf("drift: the profile is larger than %d bytes", maxProfileBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var p Profile
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("drift: the profile: %w", err)
	}
	if err := p.Check(spec); err != nil {
		return nil, err
	}
	return &p, nil
}

// Write encodes p as indented JSON.
func (p *Profile) Write(w io.Writer) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
