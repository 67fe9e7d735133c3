// Package features owns the feature spec shared by training and serving: its YAML form, its
// canonical form and SHA-256 fingerprint, and the one function that turns raw values into a model's
// input rows, online (per request) and offline (data files).
//
// Per feature, canonicalization applies, in this order:
//
//  1. the missing-value policy (a raw value that is absent, NaN in the raw slice);
//  2. unit conversion: v = raw*scale + offset (scale 0 in the file means 1);
//  3. clipping to [clip.min, clip.max], in converted units (an absent bound does not clip);
//  4. normalization: zscore (v-mean)/std, minmax (v-min)/(max-min), or none;
//
// computed in float64 and stored as float32, the dtype of every example model's input.
package features

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Input kinds: which request a spec's sources are read from.
const (
	// InputVMMetrics: sources are the fields of VMMetrics (cpu, memory, disk_io, network_io,
	// latency, error_rate); in files, the columns of those names.
	InputVMMetrics = "vm_metrics"
	// InputPlacement: sources are requirements.<key> (PlacementRequest.requirements) and
	// node.cpu_available, node.memory_available (NodeInfo).
	InputPlacement = "placement"
)

// Missing-value policies.
const (
	MissingError    = "error"    // the feature is required; a missing value is refused
	MissingConstant = "constant" // fill with Missing.Value (raw units)
	MissingMean     = "mean"     // fill with the normalization mean (converted units): 0 after zscore
	MissingPrevious = "previous" // sequences: carry the previous step forward; refused at step 0
)

// Normalization methods.
const (
	NormNone   = "none"
	NormZScore = "zscore"
	NormMinMax = "minmax"
)

// Types of features.
const (
	TypeFloat = "float" // any finite number
	TypeBool  = "bool"  // 0 or 1 after conversion: nonzero raw values become 1
)

// Spec is a feature spec as written in YAML. Zero values are documented per field; Load fills the
// defaults and validates.
type Spec struct {
	// Name of the spec, usually the model's.
	Name string `yaml:"name"`
	// Input is the kind of request the sources are read from: vm_metrics or placement.
	Input string `yaml:"input"`
	// Entity and Time name the key and timestamp columns of offline files (vm_metrics input);
	// they are copied to the output matrix. Empty: none.
	Entity string `yaml:"entity,omitempty"`
	Time   string `yaml:"time,omitempty"`
	// Window is the number of steps of a sequence model; 0 and 1 mean one row per request.
	Window int `yaml:"window,omitempty"`
	// Features in model input order.
	Features []Feature `yaml:"features"`
	// Labels are training targets, written by the offline transform only; they never enter a
	// model's input.
	Labels []Label `yaml:"labels,omitempty"`

	// ops is the compiled form of Features, built by Parse.
	ops []op
}

// Feature is one model input column.
type Feature struct {
	Name   string `yaml:"name"`
	Source string `yaml:"source"`
	// Type: float (default) or bool.
	Type string `yaml:"type,omitempty"`
	// Unit documents the unit the source is given in; it does not change values.
	Unit string `yaml:"unit,omitempty"`
	// Convert: v = raw*Scale + Offset. Zero Scale means 1.
	Convert   Convert   `yaml:"convert,omitempty"`
	Clip      Clip      `yaml:"clip,omitempty"`
	Missing   Missing   `yaml:"missing,omitempty"`
	Normalize Normalize `yaml:"normalize,omitempty"`
	// Description is free text, not part of the fingerprint.
	Description string `yaml:"description,omitempty"`
	// MaxAge, for sequence specs served from pushed windows, refuses a window whose newest sample
	// is older than this (FAILED_PRECONDITION naming the feature); zero leaves it to the store's
	// max age. It governs freshness, not values, so it is not part of the fingerprint.
	MaxAge time.Duration `yaml:"max_age,omitempty"`
}

// Convert is a linear unit conversion.
type Convert struct {
	Scale  float64 `yaml:"scale,omitempty"`
	Offset float64 `yaml:"offset,omitempty"`
}

// Clip bounds, in converted units; nil means unbounded on that side.
type Clip struct {
	Min *float64 `yaml:"min,omitempty"`
	Max *float64 `yaml:"max,omitempty"`
}

// Missing is a missing-value policy; empty Policy means error.
type Missing struct {
	Policy string  `yaml:"policy,omitempty"`
	Value  float64 `yaml:"value,omitempty"`
}

// Normalize describes the normalization; empty Method means none.
type Normalize struct {
	Method string  `yaml:"method,omitempty"`
	Mean   float64 `yaml:"mean,omitempty"`
	Std    float64 `yaml:"std,omitempty"`
	Min    float64 `yaml:"min,omitempty"`
	Max    float64 `yaml:"max,omitempty"`
}

// Label is a training target column of the offline transform. With Horizon > 0 (sequence specs) it
// is the source's raw values at the next Horizon steps after the window; otherwise the source
// column copied verbatim.
type Label struct {
	Name    string `yaml:"name"`
	Source  string `yaml:"source"`
	Horizon int    `yaml:"horizon,omitempty"`
}

// Bounds that keep a spec's row size sane.
const (
	maxWindow   = 4096
	maxFeatures = 4096
)

// vmMetricsFields are the sources of the vm_metrics input, in VMMetrics field order.
var vmMetricsFields = [...]string{"cpu", "memory", "disk_io", "network_io", "latency", "error_rate"}

// VMMetricsField returns the index of a vm_metrics source in VMMetrics field order, or -1.
func VMMetricsField(source string) int {
	for i, f := range vmMetricsFields {
		if f == source {
			return i
		}
	}
	return -1
}

// maxSmallFile bounds the spec and golden files LoadFile and the golden functions read.
const maxSmallFile = 1 << 20

// readSmallFile reads a spec or golden file: a regular file of at most maxSmallFile bytes. A FIFO,
// a device or a directory is refused before it is opened (a FIFO would block the open, /dev/zero
// never end).
func readSmallFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file (%v)", path, fi.Mode().Type())
	}
	if fi.Size() > maxSmallFile {
		return nil, fmt.Errorf("%s: %d bytes, over the bound of %d for a spec or golden file", path, fi.Size(), maxSmallFile)
	}
	return os.ReadFile(path)
}

// LoadFile reads, decodes strictly and validates a spec file.
func LoadFile(path string) (*Spec, error) {
	b, err := readSmallFile(path)
	if err != nil {
		return nil, fmt.Errorf("feature spec: %w", err)
	}
	s, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("feature spec %s: %w", path, err)
	}
	return s, nil
}

// Parse decodes a spec strictly (unknown keys are errors, reported with their line) and validates it.
func Parse(b []byte) (*Spec, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var s Spec
	if err := dec.Decode(&s); err != nil {
		return nil, err
	}
	s.setDefaults()
	if err := s.Validate(); err != nil {
		return nil, err
	}
	s.compile()
	return &s, nil
}

func (s *Spec) setDefaults() {
	for i := range s.Features {
		f := &s.Features[i]
		if f.Type == "" {
			f.Type = TypeFloat
		}
		if f.Convert.Scale == 0 {
			f.Convert.Scale = 1
		}
		if f.Missing.Policy == "" {
			f.Missing.Policy = MissingError
		}
		if f.Normalize.Method == "" {
			f.Normalize.Method = NormNone
		}
	}
}

// Steps is the number of steps of one model input: Window, or 1 for row models.
func (s *Spec) Steps() int {
	if s.Window > 1 {
		return s.Window
	}
	return 1
}

// Sequence reports whether the spec describes a sequence (windowed) model.
func (s *Spec) Sequence() bool { return s.Window > 1 }

// InputShape is the shape of the model input of rows canonical rows of this spec: [rows, window,
// width] for a sequence spec, [rows, width] for a row spec. rows -1 stands for a dynamic batch.
func (s *Spec) InputShape(rows int64) []int64 {
	if s.Sequence() {
		return []int64{rows, int64(s.Window), int64(s.Width())}
	}
	return []int64{rows, int64(s.Width())}
}

// Validate checks the spec and returns every problem found, each naming its feature.
func (s *Spec) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if s.Name == "" {
		add("name: required")
	}
	switch s.Input {
	case InputVMMetrics, InputPlacement:
	default:
		add("input: %q is not one of %s, %s", s.Input, InputVMMetrics, InputPlacement)
	}
	if s.Window < 0 || s.Window > maxWindow {
		add("window: %d is not in 0..%d", s.Window, maxWindow)
	}
	if len(s.Features) > maxFeatures {
		add("features: %d features, at most %d", len(s.Features), maxFeatures)
	}
	if len(s.Features) == 0 {
		add("features: at least one feature is required")
	}
	seen := map[string]bool{}
	for i, f := range s.Features {
		at := fmt.Sprintf("features[%d] (%s)", i, f.Name)
		if f.Name == "" {
			add("features[%d].name: required", i)
		} else if seen[f.Name] {
			add("%s.name: duplicate", at)
		}
		seen[f.Name] = true
		if err := validSource(s.Input, f.Source); err != nil {
			add("%s.source: %v", at, err)
		}
		if f.Type != TypeFloat && f.Type != TypeBool {
			add("%s.type: %q is not float or bool", at, f.Type)
		}
		if !finite(f.Convert.Scale) || !finite(f.Convert.Offset) {
			add("%s.convert: scale and offset must be finite", at)
		}
		if f.Clip.Min != nil && f.Clip.Max != nil && !(*f.Clip.Min <= *f.Clip.Max) {
			add("%s.clip: min %v is above max %v", at, *f.Clip.Min, *f.Clip.Max)
		}
		if (f.Clip.Min != nil && !finite(*f.Clip.Min)) || (f.Clip.Max != nil && !finite(*f.Clip.Max)) {
			add("%s.clip: bounds must be finite", at)
		}
		switch f.Missing.Policy {
		case MissingError, MissingConstant, MissingMean:
		case MissingPrevious:
			if !s.Sequence() {
				add("%s.missing.policy: previous needs a sequence spec (window > 1)", at)
			}
		default:
			add("%s.missing.policy: %q is not one of error, constant, mean, previous", at, f.Missing.Policy)
		}
		if f.MaxAge < 0 {
			add("%s.max_age: %v is negative", at, f.MaxAge)
		}
		if !finite(f.Missing.Value) {
			add("%s.missing.value: must be finite", at)
		}
		n := f.Normalize
		switch n.Method {
		case NormNone:
		case NormZScore:
			if !(n.Std > 0) || !finite(n.Std) || !finite(n.Mean) {
				add("%s.normalize: zscore needs a finite mean and a positive std", at)
			}
		case NormMinMax:
			if !finite(n.Min) || !finite(n.Max) || !(n.Max > n.Min) {
				add("%s.normalize: minmax needs finite min < max", at)
			}
		default:
			add("%s.normalize.method: %q is not one of none, zscore, minmax", at, n.Method)
		}
		if f.Missing.Policy == MissingMean && n.Method == NormNone {
			add("%s.missing.policy: mean needs a normalization with a mean (zscore or minmax)", at)
		}
	}
	for i, l := range s.Labels {
		if l.Name == "" || l.Source == "" {
			add("labels[%d]: name and source are required", i)
		}
		if l.Horizon < 0 || (l.Horizon > 0 && !s.Sequence()) {
			add("labels[%d].horizon: %d needs a sequence spec and must not be negative", i, l.Horizon)
		}
	}
	return errors.Join(errs...)
}

func validSource(input, source string) error {
	switch input {
	case InputVMMetrics:
		if VMMetricsField(source) < 0 {
			return fmt.Errorf("%q is not a VMMetrics field (%s)", source, strings.Join(vmMetricsFields[:], ", "))
		}
	case InputPlacement:
		if key, ok := strings.CutPrefix(source, "requirements."); ok && key != "" {
			return nil
		}
		if source == "node.cpu_available" || source == "node.memory_available" {
			return nil
		}
		return fmt.Errorf("%q is not requirements.<key>, node.cpu_available or node.memory_available", source)
	}
	return nil
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// Canonical returns the spec's canonical form: compact JSON with a fixed key order, defaults
// filled, numbers in shortest round-trip form, and free text (units, descriptions) left out. Two
// specs that canonicalize inputs identically have the same canonical form.
func (s *Spec) Canonical() []byte {
	type cf struct {
		Name      string   `json:"name"`
		Source    string   `json:"source"`
		Type      string   `json:"type"`
		Scale     string   `json:"scale"`
		Offset    string   `json:"offset"`
		ClipMin   string   `json:"clip_min"`
		ClipMax   string   `json:"clip_max"`
		Missing   string   `json:"missing"`
		MissingV  string   `json:"missing_value"`
		Norm      string   `json:"normalize"`
		NormParam []string `json:"params"`
	}
	type cl struct {
		Name    string `json:"name"`
		Source  string `json:"source"`
		Horizon int    `json:"horizon"`
	}
	num := func(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
	bound := func(p *float64) string {
		if p == nil {
			return ""
		}
		return num(*p)
	}
	out := struct {
		Format   int    `json:"format"`
		Name     string `json:"name"`
		Input    string `json:"input"`
		Window   int    `json:"window"`
		Features []cf   `json:"features"`
		Labels   []cl   `json:"labels"`
	}{Format: 1, Name: s.Name, Input: s.Input, Window: s.Steps(), Features: []cf{}, Labels: []cl{}}
	for _, f := range s.Features {
		c := cf{Name: f.Name, Source: f.Source, Type: f.Type, Scale: num(f.Convert.Scale), Offset: num(f.Convert.Offset),
			ClipMin: bound(f.Clip.Min), ClipMax: bound(f.Clip.Max), Missing: f.Missing.Policy, Norm: f.Normalize.Method,
			NormParam: []string{}}
		if f.Missing.Policy == MissingConstant {
			c.MissingV = num(f.Missing.Value)
		}
		switch f.Normalize.Method {
		case NormZScore:
			c.NormParam = []string{num(f.Normalize.Mean), num(f.Normalize.Std)}
		case NormMinMax:
			c.NormParam = []string{num(f.Normalize.Min), num(f.Normalize.Max)}
		}
		out.Features = append(out.Features, c)
	}
	for _, l := range s.Labels {
		out.Labels = append(out.Labels, cl{Name: l.Name, Source: l.Source, Horizon: l.Horizon})
	}
	b, err := json.Marshal(out)
	if err != nil {
		panic(err) // only strings and ints: cannot fail
	}
	return b
}

// Fingerprint is the lowercase hex SHA-256 of the canonical form.
func (s *Spec) Fingerprint() string {
	sum := sha256.Sum256(s.Canonical())
	return hex.EncodeToString(sum[:])
}

// FeatureNames returns the feature names in input order.
func (s *Spec) FeatureNames() []string {
	names := make([]string, len(s.Features))
	for i, f := range s.Features {
		names[i] = f.Name
	}
	return names
}
