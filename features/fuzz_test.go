package features

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// FuzzCanonicalize: any raw values give either a clear error (a *ValueError wrapping ErrInvalid)
// or finite values, never a panic.
func FuzzCanonicalize(f *testing.F) {
	spec := mustLoad(f, "../examples/specs/bandwidth.yaml")
	f.Add(make([]byte, 8*spec.Size()))
	f.Add([]byte{0xff, 0xf8, 0, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		raw := make([]float64, len(b)/8)
		for i := range raw {
			raw[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[i*8:]))
		}
		dst := make([]float32, len(raw))
		err := spec.Canonicalize(dst, raw)
		if err != nil {
			if _, ok := err.(*ValueError); !ok {
				t.Fatalf("error %T %v is not a *ValueError", err, err)
			}
			return
		}
		for i, v := range dst {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("value %d is %v for raw %v", i, v, raw[i])
			}
		}
	})
}

// FuzzParse: any YAML gives a spec that validates or an error, never a panic. A spec that parses
// survives a round trip with its fingerprint: written back out as YAML, it parses to the same
// fingerprint; rebuilt from its canonical form alone, it parses to the same fingerprint and turns
// every golden input into the same row, bit for bit (so the canonical form, and the fingerprint
// made of it, leave out nothing that changes a row).
func FuzzParse(f *testing.F) {
	for _, name := range []string{"bandwidth", "anomaly", "placement"} {
		b, err := os.ReadFile("../examples/specs/" + name + ".yaml")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
	f.Add(base)
	// Numbers that need all their digits: a canonical form that rounds them loses the difference.
	f.Add("name: digits\ninput: vm_metrics\nfeatures:\n  - {name: cpu, source: cpu, convert: {scale: 0.0123456789, offset: -1.00000000001},\n" +
		"     clip: {min: 0.1, max: 99.99999999}, normalize: {method: zscore, mean: 50.123456789, std: 25.987654321}}\n")
	f.Fuzz(func(t *testing.T, y string) {
		s, err := Parse([]byte(y))
		if err != nil {
			return
		}
		if len(s.Fingerprint()) != 64 || strings.TrimSpace(string(s.Canonical())) == "" {
			t.Fatal("a parsed spec without a fingerprint")
		}
		raw := make([]float64, s.Size())
		dst := make([]float32, s.Size())
		_ = s.Canonicalize(dst, raw)

		out, err := yaml.Marshal(s)
		if err != nil {
			t.Fatalf("the parsed spec does not marshal: %v", err)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("the parsed spec, written out, does not parse: %v\n%s", err, out)
		}
		if again.Fingerprint() != s.Fingerprint() {
			t.Fatalf("the fingerprint changed over a YAML round trip:\n%s\n%s", s.Canonical(), again.Canonical())
		}

		rebuilt, err := fromCanonical(s.Canonical())
		if err != nil {
			t.Fatalf("the canonical form does not rebuild a spec: %v\n%s", err, s.Canonical())
		}
		if rebuilt.Fingerprint() != s.Fingerprint() {
			t.Fatalf("the fingerprint changed over a round trip through the canonical form:\n%s\n%s", s.Canonical(), rebuilt.Canonical())
		}
		for _, in := range s.goldenInputs() {
			if a, b := canonRow(s, in.raw), canonRow(rebuilt, in.raw); a != b {
				t.Fatalf("input %s: the spec gives %s, the spec rebuilt from its canonical form %s\n%s", in.name, a, b, s.Canonical())
			}
		}
	})
}

// canonRow is Canonicalize's row of raw as exact bits, or its error.
func canonRow(s *Spec, raw []float64) string {
	dst := make([]float32, len(raw))
	if err := s.Canonicalize(dst, raw); err != nil {
		return "error: " + err.Error()
	}
	var b strings.Builder
	for _, v := range dst {
		fmt.Fprintf(&b, "%08x ", math.Float32bits(v))
	}
	return b.String()
}

// fromCanonical parses the spec that Canonical's JSON describes: it writes that spec's YAML from
// the canonical form alone and parses it.
func fromCanonical(canon []byte) (*Spec, error) {
	var c struct {
		Format   int    `json:"format"`
		Name     string `json:"name"`
		Input    string `json:"input"`
		Window   int    `json:"window"`
		Features []struct {
			Name, Source, Type, Scale, Offset string
			ClipMin                           string   `json:"clip_min"`
			ClipMax                           string   `json:"clip_max"`
			Missing                           string   `json:"missing"`
			MissingValue                      string   `json:"missing_value"`
			Normalize                         string   `json:"normalize"`
			Params                            []string `json:"params"`
		} `json:"features"`
		Labels []Label `json:"labels"`
	}
	dec := json.NewDecoder(strings.NewReader(string(canon)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, err
	}
	if c.Format != 1 {
		return nil, fmt.Errorf("format %d, want 1", c.Format)
	}
	var errs []error
	num := func(v string) float64 {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			errs = append(errs, err)
		}
		return f
	}
	bound := func(v string) *float64 {
		if v == "" {
			return nil
		}
		f := num(v)
		return &f
	}
	s := Spec{Name: c.Name, Input: c.Input, Window: c.Window, Labels: c.Labels}
	for _, cf := range c.Features {
		f := Feature{Name: cf.Name, Source: cf.Source, Type: cf.Type, Convert: Convert{Scale: num(cf.Scale), Offset: num(cf.Offset)},
			Clip: Clip{Min: bound(cf.ClipMin), Max: bound(cf.ClipMax)}, Missing: Missing{Policy: cf.Missing}, Normalize: Normalize{Method: cf.Normalize}}
		if cf.MissingValue != "" {
			f.Missing.Value = num(cf.MissingValue)
		}
		switch {
		case cf.Normalize == NormZScore && len(cf.Params) == 2:
			f.Normalize.Mean, f.Normalize.Std = num(cf.Params[0]), num(cf.Params[1])
		case cf.Normalize == NormMinMax && len(cf.Params) == 2:
			f.Normalize.Min, f.Normalize.Max = num(cf.Params[0]), num(cf.Params[1])
		case len(cf.Params) != 0:
			errs = append(errs, fmt.Errorf("feature %s: params %v for normalize %s", cf.Name, cf.Params, cf.Normalize))
		}
		s.Features = append(s.Features, f)
	}
	if len(errs) > 0 {
		return nil, errs[0]
	}
	y, err := yaml.Marshal(&s)
	if err != nil {
		return nil, err
	}
	return Parse(y)
}
