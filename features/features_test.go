package features

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func mustLoad(t testing.TB, path string) *Spec {
	t.Helper()
	s, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestExampleSpecsLoad(t *testing.T) {
	for _, name := range []string{"bandwidth", "anomaly", "placement"} {
		s := mustLoad(t, "../examples/specs/"+name+".yaml")
		if s.Name != name {
			t.Errorf("%s: name %q", name, s.Name)
		}
		if len(s.Fingerprint()) != 64 {
			t.Errorf("%s: fingerprint %q", name, s.Fingerprint())
		}
	}
	bw := mustLoad(t, "../examples/specs/bandwidth.yaml")
	if bw.Size() != 60 || bw.Window != 10 {
		t.Errorf("bandwidth: size %d window %d, want 60 and 10 (the seed's sequence_length)", bw.Size(), bw.Window)
	}
	want := []string{"cpu", "memory", "disk_io", "network_io", "latency", "error_rate"}
	if got := bw.FeatureNames(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("bandwidth features %v, want VMMetrics order %v", got, want)
	}
}

const base = `name: t
input: vm_metrics
window: 3
features:
  - name: cpu
    source: cpu
    unit: percent
    clip: {min: 0, max: 100}
    missing: {policy: previous}
    normalize: {method: zscore, mean: 50, std: 25}
  - name: net
    source: network_io
    convert: {scale: 0.001}
    missing: {policy: constant, value: 1000}
    normalize: {method: minmax, min: 0, max: 10}
  - name: err
    source: error_rate
    type: bool
    missing: {policy: error}
`

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"unknown key with line", strings.Replace(base, "    unit: percent\n", "    unit: percent\n    bogus: 1\n", 1), []string{"line 8", "bogus"}},
		{"bad source", strings.Replace(base, "source: cpu", "source: gpu", 1), []string{"features[0] (cpu).source", `"gpu" is not a VMMetrics field`}},
		{"bad policy", strings.Replace(base, "policy: error", "policy: zero", 1), []string{"features[2] (err).missing.policy", `"zero"`}},
		{"zscore without std", strings.Replace(base, "std: 25", "std: 0", 1), []string{"features[0] (cpu).normalize", "positive std"}},
		{"clip inverted", strings.Replace(base, "{min: 0, max: 100}", "{min: 100, max: 0}", 1), []string{"clip: min 100 is above max 0"}},
		{"previous on a row spec", strings.Replace(base, "window: 3", "window: 1", 1), []string{"previous needs a sequence spec"}},
		{"duplicate", strings.Replace(base, "name: net", "name: cpu", 1), []string{"duplicate"}},
		{"bad input", strings.Replace(base, "input: vm_metrics", "input: disks", 1), []string{`input: "disks"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	if _, err := Parse([]byte(base)); err != nil {
		t.Fatalf("base spec: %v", err)
	}
}

func TestFingerprint(t *testing.T) {
	s, err := Parse([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	fp := s.Fingerprint()
	same := map[string]string{
		"comments and layout": "# a comment\n" + strings.ReplaceAll(base, "{min: 0, max: 100}", "\n      min: 0\n      max: 100"),
		"unit text":           strings.Replace(base, "unit: percent", "unit: pct", 1),
		"description":         strings.Replace(base, "    unit: percent\n", "    unit: percent\n    description: load\n", 1),
		"explicit defaults":   strings.Replace(base, "    source: cpu\n", "    source: cpu\n    type: float\n    convert: {scale: 1, offset: 0}\n", 1),
		"number spelling":     strings.Replace(base, "mean: 50", "mean: 5.0e1", 1),
	}
	for name, y := range same {
		s2, err := Parse([]byte(y))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if s2.Fingerprint() != fp {
			t.Errorf("%s changed the fingerprint:\n%s\n%s", name, s.Canonical(), s2.Canonical())
		}
	}
	differ := map[string]string{
		"normalization mean": strings.Replace(base, "mean: 50", "mean: 51", 1),
		"clip bound":         strings.Replace(base, "max: 100", "max: 99", 1),
		"window":             strings.Replace(base, "window: 3", "window: 4", 1),
		"feature order":      swapFirstTwoFeatures(base),
		"missing value":      strings.Replace(base, "value: 1000", "value: 999", 1),
		"unit conversion":    strings.Replace(base, "scale: 0.001", "scale: 0.002", 1),
	}
	for name, y := range differ {
		s2, err := Parse([]byte(y))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if s2.Fingerprint() == fp {
			t.Errorf("%s did not change the fingerprint", name)
		}
	}
}

// swapFirstTwoFeatures swaps the first two feature blocks of a spec, unchanged.
func swapFirstTwoFeatures(spec string) string {
	parts := strings.Split(spec, "  - name: ")
	parts[1], parts[2] = parts[2], parts[1]
	return strings.Join(parts, "  - name: ")
}

func TestCanonicalize(t *testing.T) {
	s, err := Parse([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	nan := math.NaN()
	cases := []struct {
		name    string
		raw     []float64
		want    []float32
		wantErr string
	}{
		{"plain", []float64{50, 5000, 0, 75, 10000, 0.5, 0, 0, 0},
			[]float32{0, 0.5, 0, 1, 1, 1, -2, 0, 0}, ""},
		{"clip", []float64{150, 50000, 0, -20, 5000, 0, 50, 5000, 0},
			[]float32{2, 5, 0, -2, 0.5, 0, 0, 0.5, 0}, ""},
		{"previous carries the step before", []float64{75, 5000, 0, nan, 5000, 0, nan, 5000, 0},
			[]float32{1, 0.5, 0, 1, 0.5, 0, 1, 0.5, 0}, ""},
		{"constant fill", []float64{50, nan, 0, 50, 5000, 0, 50, 5000, 0},
			[]float32{0, 0.1, 0, 0, 0.5, 0, 0, 0.5, 0}, ""},
		{"previous at step 0", []float64{nan, 5000, 0, 50, 5000, 0, 50, 5000, 0}, nil, "step 0 feature cpu: missing at the first step"},
		{"required missing", []float64{50, 5000, 0, 50, 5000, nan, 50, 5000, 0}, nil, "step 1 feature err: missing"},
		{"infinite", []float64{50, 5000, 0, 50, math.Inf(1), 0, 50, 5000, 0}, nil, "step 1 feature net: value +Inf is not finite"},
		{"short", []float64{1, 2}, nil, "got 2 values"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dst := make([]float32, len(c.raw))
			err := s.Canonicalize(dst, c.raw)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) || !errors.Is(err, ErrInvalid) {
					t.Fatalf("err = %v, want %q wrapping ErrInvalid", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i := range dst {
				if math.Abs(float64(dst[i]-c.want[i])) > 1e-6 {
					t.Fatalf("got %v, want %v", dst, c.want)
				}
			}
		})
	}
}

// TestTransformEqualsOnline: every row of the offline matrix equals, bit for bit, what the online
// canonicalizer makes of the same raw window; entities interleave in the file.
func TestTransformEqualsOnline(t *testing.T) {
	spec := mustLoad(t, "../examples/specs/bandwidth.yaml")
	rng := rand.New(rand.NewPCG(1, 2))
	var in bytes.Buffer
	in.WriteString("vm_id,timestamp,cpu,memory,disk_io,network_io,latency,error_rate,anomaly_type\n")
	type rawRow struct{ v []float64 }
	perVM := map[string][]rawRow{}
	const steps = 40
	for step := 0; step < steps; step++ {
		for _, vm := range []string{"vm-a", "vm-b", "vm-c"} {
			v := []float64{rng.Float64() * 120, rng.Float64() * 100, rng.ExpFloat64() * 50, rng.Float64() * 1e6 / 3, rng.Float64() * 40, rng.Float64() * 0.1}
			cells := make([]string, len(v))
			for i, x := range v {
				cells[i] = strconv.FormatFloat(x, 'g', -1, 64)
			}
			if vm == "vm-b" && step == 17 {
				cells[1], v[1] = "", math.NaN() // a gap: policy previous, the same online and offline
			}
			perVM[vm] = append(perVM[vm], rawRow{v})
			fmt.Fprintf(&in, "%s,%d,%s,normal\n", vm, step, strings.Join(cells, ","))
		}
	}
	var out bytes.Buffer
	st, err := spec.Transform(&in, &out, TransformOptions{})
	if err != nil {
		t.Fatal(err)
	}
	horizon := 10
	// The window that starts at vm-b's gap has nothing to carry forward: skipped, and counted.
	wantRows := 3*(steps-spec.Window-horizon+1) - 1
	if st.Skipped["memory: missing at the first step, where policy previous has nothing to carry"] != 1 {
		t.Errorf("skipped %v, want the one window starting at the gap", st.Skipped)
	}
	if st.OutputRows != wantRows || st.InputRows != 3*steps {
		t.Fatalf("rows in %d out %d, want %d and %d", st.InputRows, st.OutputRows, 3*steps, wantRows)
	}
	recs, err := csv.NewReader(&out).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(recs[0], ","); got != strings.Join(spec.Columns(), ",") {
		t.Fatalf("header %s", got)
	}
	online := make([]float32, spec.Size())
	for _, rec := range recs[1:] {
		vm := rec[0]
		last, _ := strconv.Atoi(rec[1])
		k := last - spec.Window + 1 // the window's first step
		raw := make([]float64, 0, spec.Size())
		for _, r := range perVM[vm][k : k+spec.Window] {
			raw = append(raw, r.v...)
		}
		if err := spec.Canonicalize(online, raw); err != nil {
			t.Fatal(err)
		}
		for i, cell := range rec[2 : 2+spec.Size()] {
			f, err := strconv.ParseFloat(cell, 32)
			if err != nil {
				t.Fatal(err)
			}
			if math.Float32bits(float32(f)) != math.Float32bits(online[i]) {
				t.Fatalf("%s window %d value %d: offline %s, online %v", vm, k, i, cell, online[i])
			}
		}
		// Labels: network_io at the next 10 steps, as written in the file.
		lab := rec[2+spec.Size():]
		for h := 1; h <= horizon; h++ {
			want := strconv.FormatFloat(perVM[vm][k+spec.Window-1+h].v[3], 'g', -1, 64)
			if lab[h-1] != want {
				t.Fatalf("%s window %d label +%d = %s, want %s", vm, k, h, lab[h-1], want)
			}
		}
	}
}

func TestTransformErrors(t *testing.T) {
	spec := mustLoad(t, "../examples/specs/anomaly.yaml")
	cases := map[string]struct{ in, want string }{
		"missing column": {"vm_id,timestamp,cpu\n", `no column "memory"`},
		"bad number":     {"vm_id,timestamp,cpu,memory,disk_io,network_io,latency,error_rate,anomaly_type\nv,1,1,2,3,4,5,0,normal\nv,2,abc,2,3,4,5,0,normal\n", `line 3 column cpu: "abc" is not a finite number`},
		"NaN text":       {"vm_id,timestamp,cpu,memory,disk_io,network_io,latency,error_rate,anomaly_type\nv,1,NaN,2,3,4,5,0,normal\n", `line 2 column cpu: "NaN"`},
	}
	for name, c := range cases {
		_, err := spec.Transform(strings.NewReader(c.in), &bytes.Buffer{}, TransformOptions{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", name, err, c.want)
		}
	}
	// A missing required value skips the row and is counted, never filled differently than online.
	in := "vm_id,timestamp,cpu,memory,disk_io,network_io,latency,error_rate,anomaly_type\nv,1,1,,3,4,5,0,normal\nv,2,1,2,3,4,5,,cpu_spike\n"
	var out bytes.Buffer
	st, err := spec.Transform(strings.NewReader(in), &out, TransformOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.OutputRows != 1 || st.Skipped["memory: missing, and the feature is required (policy error)"] != 1 {
		t.Fatalf("stats %+v", st)
	}
	if !strings.HasSuffix(strings.TrimSpace(out.String()), ",cpu_spike") {
		t.Fatalf("output %q: the row with error_rate missing should be kept (policy constant) with its label", out.String())
	}
}

func BenchmarkCanonicalizeBandwidth(b *testing.B) {
	spec := mustLoad(b, "../examples/specs/bandwidth.yaml")
	raw := make([]float64, spec.Size())
	for i := range raw {
		raw[i] = float64(i%6) * 10
	}
	dst := make([]float32, spec.Size())
	b.ReportAllocs()
	for b.Loop() {
		if err := spec.Canonicalize(dst, raw); err != nil {
			b.Fatal(err)
		}
	}
}

func TestMain(m *testing.M) { os.Exit(m.Run()) }

// TestGoldenVectors: the committed golden vectors hold, bit for bit, for each example spec; and the
// check fails when a value, or the spec, changes.
func TestGoldenVectors(t *testing.T) {
	for _, name := range []string{"bandwidth", "anomaly", "placement"} {
		spec := mustLoad(t, "../examples/specs/"+name+".yaml")
		b, err := os.ReadFile("../examples/specs/golden/" + name + ".json")
		if err != nil {
			t.Fatal(err)
		}
		if err := spec.CheckGolden(b); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	spec := mustLoad(t, "../examples/specs/anomaly.yaml")
	b, _ := os.ReadFile("../examples/specs/golden/anomaly.json")
	tampered := strings.Replace(string(b), `"-0.5"`, `"-0.49999997"`, 1)
	if err := spec.CheckGolden([]byte(tampered)); err == nil || !strings.Contains(err.Error(), "golden -0.49999997, now -0.5") {
		t.Errorf("a changed value: %v", err)
	}
	// Another spec's file is the wrong file, not a reason to regenerate it.
	other, err := Parse([]byte(strings.Replace(base, "window: 3", "window: 4", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if err := other.CheckGolden(b); err == nil || !strings.Contains(err.Error(), `holds the vectors of spec "anomaly"`) || strings.Contains(err.Error(), "-write") {
		t.Errorf("another spec: %v", err)
	}
	// The same spec, changed: regenerate if deliberate.
	changed := strings.Replace(string(b), `"fingerprint": "`, `"fingerprint": "0`, 1)
	if err := spec.CheckGolden([]byte(changed)); err == nil || !strings.Contains(err.Error(), "the spec changed") || !strings.Contains(err.Error(), "-write") {
		t.Errorf("a changed spec: %v", err)
	}
}

// TestLoadFileRefusesWhatIsNoSpec: a FIFO or a device named as a spec or golden file is refused at
// once (a FIFO would block the open until a writer came; /dev/zero would never end).
func TestLoadFileRefusesWhatIsNoSpec(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "spec.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{fifo, "/dev/zero", t.TempDir()} {
		if _, err := LoadFile(path); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("LoadFile(%s): %v, want a refusal naming it not a regular file", path, err)
		}
	}
	s := mustLoad(t, "../examples/specs/anomaly.yaml")
	if err := s.CheckGoldenFile(fifo); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("CheckGoldenFile(fifo): %v", err)
	}
}
