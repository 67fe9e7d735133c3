package features

import (
	"encoding/binary"
	"math"
	"os"
	"strings"
	"testing"
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

// FuzzParse: any YAML gives a spec that validates or an error, never a panic.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"bandwidth", "anomaly", "placement"} {
		b, err := os.ReadFile("../examples/specs/" + name + ".yaml")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
	f.Add(base)
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
	})
}
