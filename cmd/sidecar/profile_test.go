package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/novacron/sidecar/features"
	"github.com/novacron/sidecar/features/drift"
	"github.com/parquet-go/parquet-go"
)

const (
	anomalySpec   = "../../examples/specs/anomaly.yaml"
	bandwidthSpec = "../../examples/specs/bandwidth.yaml"
)

// metricsRow is one raw record of metrics.csv's layout, for Parquet.
type metricsRow struct {
	VMID      string  `parquet:"vm_id"`
	Timestamp string  `parquet:"timestamp"`
	CPU       float64 `parquet:"cpu"`
	Memory    float64 `parquet:"memory"`
	DiskIO    float64 `parquet:"disk_io"`
	NetworkIO float64 `parquet:"network_io"`
	Latency   float64 `parquet:"latency"`
	ErrorRate float64 `parquet:"error_rate"`
	Anomaly   string  `parquet:"anomaly_type"`
}

// rawProfileData writes raw metrics as CSV and as Parquet: 100 rows of one VM, cpu 0..99 (the
// anomaly spec's canonical cpu: (cpu-45)/25), and one more row with memory empty, which the
// anomaly spec refuses (policy error) and the CSV alone has.
func rawProfileData(t *testing.T, dir string) (csvPath, pqPath string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("vm_id,timestamp,cpu,memory,disk_io,network_io,latency,error_rate,anomaly_type\n")
	var rows []metricsRow
	for i := 0; i < 100; i++ {
		r := metricsRow{VMID: "vm-1", Timestamp: fmt.Sprint(i), CPU: float64(i), Memory: 55, DiskIO: float64(i % 7), NetworkIO: 100 + float64(i*3%50), Latency: 20, ErrorRate: 0.01, Anomaly: "normal"}
		rows = append(rows, r)
		fmt.Fprintf(&b, "%s,%s,%g,%g,%g,%g,%g,%g,%s\n", r.VMID, r.Timestamp, r.CPU, r.Memory, r.DiskIO, r.NetworkIO, r.Latency, r.ErrorRate, r.Anomaly)
	}
	csvPath, pqPath = filepath.Join(dir, "raw.csv"), filepath.Join(dir, "raw.parquet")
	if err := os.WriteFile(csvPath, []byte(b.String()+"vm-1,100,50,,1,1,1,0,normal\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(pqPath)
	if err != nil {
		t.Fatal(err)
	}
	w := parquet.NewGenericWriter[metricsRow](f)
	if _, err := w.Write(rows); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return csvPath, pqPath
}

// fileDigest is a file's digest as backends.Metadata.Digest gives it.
func fileDigest(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func loadProfile(t *testing.T, path, specPath string) *drift.Profile {
	t.Helper()
	spec, err := features.LoadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := drift.ReadProfile(f, spec)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return p
}

// tableOf is the feature table at the end of build's and show's output.
func tableOf(out string) string {
	if i := strings.Index(out, "\nfeature "); i >= 0 {
		return out[i+1:]
	}
	return ""
}

func TestProfileBuildAndShow(t *testing.T) {
	dir := t.TempDir()
	csvIn, pqIn := rawProfileData(t, dir)
	out := filepath.Join(dir, "anomaly.profile")
	code, stdout, errs := runArgs("profile", "build", "-spec", anomalySpec, "-in", csvIn, "-out", out)
	if code != 0 {
		t.Fatalf("build: exit %d\n%s%s", code, stdout, errs)
	}
	// cpu 0..99 is (cpu-45)/25 online: min -1.8, mean 0.18, std sqrt((100²-1)/12)/25 = 1.15464,
	// max 2.16; memory is one value: one edge, so two bins (the upper one empty).
	wantTable := `feature     bins         min        mean         std         max  missing
cpu           10     -1.8000      0.1800      1.1546      2.1600  0
memory         2      0.0000      0.0000      0.0000      0.0000  0
`
	if table := tableOf(stdout); !strings.HasPrefix(table, wantTable) || strings.Count(table, "\n") != 7 {
		t.Errorf("table:\n%s\nwant it to start with\n%s", table, wantTable)
	}
	for _, want := range []string{"spec          anomaly\n", "input rows    101\n", "profiled      100 rows\n",
		"1  memory: missing, and the feature is required (policy error)", "wrote         " + out + "\n"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("build output lacks %q:\n%s", want, stdout)
		}
	}
	p := loadProfile(t, out, anomalySpec)
	if p.Rows != 100 || p.Spec != "anomaly" || len(p.Features) != 6 || p.Features[0].Total() != 100 {
		t.Errorf("profile: %d rows, spec %s, %d features", p.Rows, p.Spec, len(p.Features))
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}

	// The same records from Parquet give the same profile, byte for byte (the CSV's extra row is
	// refused anyway); -bins changes the bins.
	pqOut := filepath.Join(dir, "pq.profile")
	if code, stdout, errs := runArgs("profile", "build", "-quiet", "-spec", anomalySpec, "-in", pqIn, "-out", pqOut); code != 0 {
		t.Fatalf("build from parquet: exit %d\n%s%s", code, stdout, errs)
	}
	a, _ := os.ReadFile(out)
	b, _ := os.ReadFile(pqOut)
	if !bytes.Equal(a, b) {
		t.Error("CSV and Parquet inputs of the same records gave different profiles")
	}
	if code, _, errs := runArgs("profile", "build", "-spec", anomalySpec, "-in", csvIn, "-out", pqOut, "-bins", "4"); code != 0 {
		t.Fatalf("-bins 4: %d %s", code, errs)
	}
	if p := loadProfile(t, pqOut, anomalySpec); len(p.Features[0].Counts) != 4 {
		t.Errorf("-bins 4: cpu has %d bins", len(p.Features[0].Counts))
	}

	// show prints the same table, for the spec the profile is of; flags before or after the file.
	for _, args := range [][]string{{"-spec", anomalySpec, out}, {out, "-spec", anomalySpec}} {
		code, shown, errs := runArgs(append([]string{"profile", "show"}, args...)...)
		if code != 0 || tableOf(shown) != tableOf(stdout) || !strings.Contains(shown, "profile       "+out+"\n") {
			t.Errorf("show %v: exit %d\n%s%s\nwant the table\n%s", args, code, shown, errs, tableOf(stdout))
		}
	}

	// -model: the model's answers to the same rows, per output value; the features as without.
	modelOut := filepath.Join(dir, "with-model.profile")
	code, stdout, errs = runArgs("profile", "build", "-quiet", "-spec", anomalySpec, "-in", csvIn, "-model", "../../examples/models/anomaly.onnx", "-out", modelOut)
	if code != 0 || !strings.Contains(stdout, "outputs       7 values per row") || !strings.Contains(stdout, "\noutput probs[6] ") {
		t.Fatalf("build -model: exit %d\n%s%s", code, stdout, errs)
	}
	pm := loadProfile(t, modelOut, anomalySpec)
	if want := fileDigest(t, "../../examples/models/anomaly.onnx"); pm.ModelDigest != want || !strings.Contains(stdout, "model         "+want+"\n") {
		t.Errorf("model digest %q; want %q, printed", pm.ModelDigest, want)
	}
	var sumMeans float64
	for k, r := range pm.Outputs {
		if r.Name != fmt.Sprintf("probs[%d]", k) || r.Total() != 100 || r.Min < 0 || r.Max > 1 {
			t.Errorf("output %d: %s, %d values in %v..%v", k, r.Name, r.Total(), r.Min, r.Max)
		}
		sumMeans += r.Mean
	}
	if len(pm.Outputs) != 7 || sumMeans < 0.999 || sumMeans > 1.001 {
		t.Errorf("%d outputs whose means add up to %v; want the 7 class probabilities, adding up to 1", len(pm.Outputs), sumMeans)
	}
	if !slices.EqualFunc(pm.Features, p.Features, func(a, b drift.Reference) bool { return slices.Equal(a.Counts, b.Counts) && a.Mean == b.Mean }) {
		t.Error("-model changed the features' profile")
	}
	// A model of another spec is refused by its fingerprint.
	code, _, errs = runArgs("profile", "build", "-quiet", "-spec", anomalySpec, "-in", csvIn, "-model", "../../examples/models/placement.onnx", "-out", modelOut)
	if code != 1 || !strings.Contains(errs, "-model ../../examples/models/placement.onnx") || !strings.Contains(errs, "fingerprint") {
		t.Errorf("a model of another spec: exit %d: %s", code, errs)
	}

	// A sequence spec: windows, each at its last step.
	bwOut := filepath.Join(dir, "bandwidth.profile")
	code, stdout, errs = runArgs("profile", "build", "-spec", bandwidthSpec, "-in", pqIn, "-out", bwOut)
	// 100 steps of one VM, window 10 and horizon 10: 81 windows.
	if code != 0 || !strings.Contains(stdout, "profiled      81 windows of 10 steps") {
		t.Fatalf("bandwidth: exit %d\n%s%s", code, stdout, errs)
	}
	if p := loadProfile(t, bwOut, bandwidthSpec); p.Rows != 81 || p.Features[0].Min != float64(float32(9-45)/25) {
		t.Errorf("bandwidth profile: %d rows, cpu min %v (want the last step of the first window, cpu 9)", p.Rows, p.Features[0].Min)
	}
}

func TestProfileErrors(t *testing.T) {
	dir := t.TempDir()
	csvIn, _ := rawProfileData(t, dir)
	out := filepath.Join(dir, "anomaly.profile")
	if code, _, errs := runArgs("profile", "build", "-quiet", "-spec", anomalySpec, "-in", csvIn, "-out", out); code != 0 {
		t.Fatalf("build: %d %s", code, errs)
	}
	before, _ := os.ReadFile(out)
	header := "vm_id,timestamp,cpu,memory,disk_io,network_io,latency,error_rate,anomaly_type\n"
	write := func(name, text string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	empty := write("empty.csv", header)
	refused := write("refused.csv", header+"v,1,1,,3,4,5,0,normal\n")
	short := write("short.csv", header+"v,1,1,2,3,4,5,0,normal\nv,2,1,2,3,4,5,0,normal\n")
	noMemory := write("nomem.csv", "vm_id,timestamp,cpu\nv,1,2\n")
	damaged := write("damaged.profile", strings.Replace(string(before), `"counts": [`, `"counts": [1, `, 1))
	changed := write("changed.profile", strings.Replace(string(before), `"spec_fingerprint": "`, `"spec_fingerprint": "0`, 1))

	cases := []struct {
		name string
		args []string
		code int
		want string // in stderr
	}{
		{"no command", nil, 2, "usage: sidecar profile <command>"},
		{"unknown command", []string{"frob"}, 2, `unknown command "frob"`},
		{"build without -out", []string{"build", "-spec", anomalySpec, "-in", csvIn}, 2, "-spec, -in and -out are required"},
		{"build bad -bins", []string{"build", "-spec", anomalySpec, "-in", csvIn, "-out", out, "-bins", "1"}, 2, "-bins 1: give 2 to 1000"},
		{"build unknown flag", []string{"build", "-spec", anomalySpec, "-in", csvIn, "-out", out, "-bin", "5"}, 2, "flag provided but not defined: -bin"},
		{"build extra argument", []string{"build", "-spec", anomalySpec, "-in", csvIn, "-out", out, "extra"}, 2, `unexpected argument "extra"`},
		{"show without file", []string{"show", "-spec", anomalySpec}, 2, "give -spec and one profile file"},
		{"show without -spec", []string{"show", out}, 2, "give -spec and one profile file"},
		{"missing input", []string{"build", "-spec", anomalySpec, "-in", filepath.Join(dir, "none.csv"), "-out", out}, 1, "none.csv: it does not exist; -in is the model's raw training data"},
		{"missing column", []string{"build", "-spec", anomalySpec, "-in", noMemory, "-out", out}, 1, `nomem.csv: header: no column "memory"`},
		{"no data rows", []string{"build", "-spec", anomalySpec, "-in", empty, "-out", out}, 1, "empty.csv has no data rows"},
		{"all rows refused", []string{"build", "-spec", anomalySpec, "-in", refused, "-out", out}, 1, "refused all 1 rows (1 memory: missing, and the feature is required (policy error))"},
		{"no complete window", []string{"build", "-spec", bandwidthSpec, "-in", short, "-out", out}, 1, "2 records gave no complete window: spec bandwidth needs 20 consecutive rows of one vm_id"},
		{"output folder missing", []string{"build", "-spec", anomalySpec, "-in", csvIn, "-out", filepath.Join(dir, "no", "a.profile")}, 1, "cannot write " + filepath.Join(dir, "no", "a.profile")},
		{"show another spec's profile", []string{"show", "-spec", bandwidthSpec, out}, 1,
			out + ` is the profile of spec "anomaly" (fingerprint 56a8af774cd2), not of "bandwidth"`},
		{"show a changed spec's profile", []string{"show", "-spec", anomalySpec, changed}, 1, "the spec changed; rebuild the profile from the training data (sidecar profile build"},
		{"show a damaged profile", []string{"show", "-spec", anomalySpec, damaged}, 1, "damaged.profile: drift: profile feature cpu: 11 counts for 9 edges"},
		{"show a missing profile", []string{"show", "-spec", anomalySpec, filepath.Join(dir, "none.profile")}, 1, "none.profile does not exist: build it"},
	}
	for _, c := range cases {
		code, stdout, errs := runArgs(append([]string{"profile"}, c.args...)...)
		if code != c.code || !strings.Contains(errs, c.want) {
			t.Errorf("%s: exit %d, stderr %q; want %d and %q (stdout %q)", c.name, code, errs, c.code, c.want, stdout)
		}
	}
	// Failed builds left the profile written before as it was.
	if after, _ := os.ReadFile(out); !bytes.Equal(after, before) {
		t.Error("a failed build changed the existing profile")
	}
	for _, args := range [][]string{{"help"}, {"-h"}} {
		if code, stdout, _ := runArgs(append([]string{"profile"}, args...)...); code != 0 || !strings.Contains(stdout, "sidecar profile show -spec") {
			t.Errorf("profile %v: %d %q", args, code, stdout)
		}
	}
	if code, _, errs := runArgs("profile", "build", "-h"); code != 0 || !strings.Contains(errs, "-bins") {
		t.Errorf("build -h: %d %q", code, errs)
	}
	if code, out, _ := runArgs("help"); code != 0 || !strings.Contains(out, "profile build|show") {
		t.Errorf("sidecar help does not name profile: %q", out)
	}

	// Interrupted: exit 1, nothing written.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var so, se bytes.Buffer
	fresh := filepath.Join(dir, "fresh.profile")
	if code := run(ctx, []string{"profile", "build", "-spec", anomalySpec, "-in", csvIn, "-out", fresh}, &so, &se); code != 1 || !strings.Contains(se.String(), "interrupted") {
		t.Errorf("interrupted: exit %d, %q", code, se.String())
	}
	if _, err := os.Stat(fresh); !os.IsNotExist(err) {
		t.Errorf("an interrupted build wrote %s", fresh)
	}
}

// TestExampleProfiles: the committed profiles load against their specs (as the sidecar loads
// them), are built from the training data (hundreds of thousands of rows, ten bins where the
// feature has ten distinct deciles) and are refused by the other specs.
func TestExampleProfiles(t *testing.T) {
	names := []string{"bandwidth", "anomaly", "placement"}
	for _, name := range names {
		path := "../../examples/models/" + name + ".profile"
		p := loadProfile(t, path, "../../examples/specs/"+name+".yaml")
		if p.Rows < 100000 {
			t.Errorf("%s: %d rows profiled, want the full training data", path, p.Rows)
		}
		for _, r := range p.Features {
			if r.Missing != 0 || len(r.Counts) < 2 || r.Std <= 0 {
				t.Errorf("%s: feature %s: %d bins, std %v, %d missing", path, r.Name, len(r.Counts), r.Std, r.Missing)
			}
		}
		// The model's outputs, as the sidecar names the values of its answers.
		want := map[string]int{"bandwidth": 20, "anomaly": 7, "placement": 1}[name]
		if len(p.Outputs) != want {
			t.Errorf("%s: %d outputs profiled, want %d (sidecar profile build -model)", path, len(p.Outputs), want)
		}
		if d := fileDigest(t, "../../examples/models/"+name+".onnx"); p.ModelDigest != d {
			t.Errorf("%s: outputs of model %s, the committed model is %s: build the profile again (examples/training/run.sh)", path, p.ModelDigest, d)
		}
		for _, r := range p.Outputs {
			if r.Missing != 0 || r.Total() != p.Rows {
				t.Errorf("%s: output %s: %d values of %d rows, %d missing", path, r.Name, r.Total(), p.Rows, r.Missing)
			}
		}
		code, stdout, errs := runArgs("profile", "show", "-spec", "../../examples/specs/"+name+".yaml", path)
		if code != 0 || strings.Count(tableOf(stdout), "\n") != len(p.Features)+len(p.Outputs)+1 {
			t.Errorf("show %s: %d\n%s%s", path, code, stdout, errs)
		}
		for _, other := range names {
			if other == name {
				continue
			}
			spec, err := features.LoadFile("../../examples/specs/" + other + ".yaml")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := os.ReadFile(path)
			if _, err := drift.ReadProfile(bytes.NewReader(b), spec); err == nil {
				t.Errorf("%s loads against spec %s", path, other)
			}
		}
	}
}
