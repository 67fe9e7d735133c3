package app_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/novacron/sidecar/examples"
	"github.com/novacron/sidecar/features"
	"github.com/novacron/sidecar/features/drift"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// metricsRow draws one VM's raw metrics, cpu moved by shift percentage points.
func metricsRow(r *rand.Rand, shift float64) *aipb.VMMetrics {
	return &aipb.VMMetrics{Cpu: min(100, max(0, 40+10*r.NormFloat64()+shift)), Memory: min(100, max(0, 55+8*r.NormFloat64())),
		DiskIo: max(0, 30+5*r.NormFloat64()), NetworkIo: max(0, 250+30*r.NormFloat64()), Latency: max(0, 9+2*r.NormFloat64()),
		ErrorRate: max(0, 0.002+0.0005*r.NormFloat64())}
}

// TestDriftOverRealCalls: a model's drift monitor sees the rows its calls canonicalized. The
// anomaly model's profile is built from one distribution; calls whose cpu is shifted by two of
// its standard deviations make that feature, and only it, drift, and the gauges and histograms
// of /metrics say so.
func TestDriftOverRealCalls(t *testing.T) {
	b, err := examples.FS.ReadFile("specs/anomaly.yaml")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := features.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	builder, err := drift.NewBuilder(spec, 0)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	row := make([]float32, spec.Size())
	for range 5000 {
		m := metricsRow(r, 0)
		if err := spec.Canonicalize(row, []float64{m.Cpu, m.Memory, m.DiskIo, m.NetworkIo, m.Latency, m.ErrorRate}); err != nil {
			t.Fatal(err)
		}
		if err := builder.Add(row); err != nil {
			t.Fatal(err)
		}
	}
	p, err := builder.Profile()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "anomaly.profile")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Write(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// The example profile as if built from another model of the spec (a retrained one): its
	// features still hold, its outputs do not.
	eb, err := examples.FS.ReadFile("models/anomaly.profile")
	if err != nil {
		t.Fatal(err)
	}
	ep, err := drift.ReadProfile(bytes.NewReader(eb), spec)
	if err != nil {
		t.Fatal(err)
	}
	if len(ep.Outputs) == 0 || !strings.HasPrefix(ep.ModelDigest, "sha256:") {
		t.Fatalf("the example profile has %d outputs and model digest %q", len(ep.Outputs), ep.ModelDigest)
	}
	ep.ModelDigest = "sha256:" + strings.Repeat("0", 64)
	oldPath := filepath.Join(t.TempDir(), "anomaly-old.profile")
	var ob bytes.Buffer
	if err := ep.Write(&ob); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(oldPath, ob.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	yaml := fmt.Sprintf(`listen: {grpc: 127.0.0.1:0, http: "off"}
cache: {disabled: true}
models:
  - name: anomaly
    task: anomaly
    path: embedded:models/anomaly.onnx
    spec: embedded:specs/anomaly.yaml
    drift: {profile: %s}
  - name: anomaly-ref
    task: anomaly
    path: embedded:models/anomaly.onnx
    spec: embedded:specs/anomaly.yaml
    drift: {profile: embedded:models/anomaly.profile}
  - name: anomaly-old
    task: anomaly
    path: embedded:models/anomaly.onnx
    spec: embedded:specs/anomaly.yaml
    drift: {profile: %s}
drift: {min_samples: 100}
`, path, oldPath)
	a, client := startYAML(t, "drift.yaml", yaml)
	ctx := context.Background()
	const calls = 300
	for i := range calls {
		m := metricsRow(r, 20)
		if _, err := client.DetectAnomaly(ctx, &aipb.AnomalyRequest{VmId: fmt.Sprintf("vm-%d", i), CurrentMetrics: m}); err != nil {
			t.Fatal(err)
		}
		if i < calls/2 { // the model whose profile holds its outputs (the training data's)
			for _, model := range []string{"anomaly-ref", "anomaly-old"} {
				if _, err := client.DetectAnomaly(ctx, &aipb.AnomalyRequest{VmId: fmt.Sprintf("vm-%d", i), CurrentMetrics: m, Model: model}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	mfs, err := a.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	psi := map[string]float64{}
	predRows := map[string]float64{}
	var drifted float64
	var histCount uint64
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["model"] == "anomaly-old" {
				if strings.HasPrefix(mf.GetName(), "model_prediction_drift") {
					t.Errorf("%s of anomaly-old, whose profile's outputs are another model's", mf.GetName())
				}
				continue
			}
			if labels["model"] == "anomaly-ref" {
				if mf.GetName() == "model_prediction_drift_window_rows" {
					predRows[labels["output"]] = m.GetGauge().GetValue()
				}
				continue
			}
			switch mf.GetName() {
			case "model_prediction_drift_score", "model_prediction_drift_window_rows":
				t.Errorf("%s of model anomaly, whose profile holds no output", mf.GetName())
			case "model_data_drift_score":
				if labels["method"] == drift.MethodPSI {
					psi[labels["feature"]] = m.GetGauge().GetValue()
				}
			case "model_features_drifted":
				drifted = m.GetGauge().GetValue()
			case "model_feature_values":
				if labels["feature"] == "cpu" {
					histCount = m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	if drifted != 1 || psi["cpu"] <= drift.DefaultPSIThreshold || histCount != calls {
		t.Fatalf("drifted %v, PSI %v, cpu histogram count %d; want cpu alone drifted over %d calls", drifted, psi, histCount, calls)
	}
	for feat, v := range psi {
		if feat != "cpu" && v > drift.DefaultPSIThreshold {
			t.Errorf("feature %s drifted (PSI %v) though only cpu moved", feat, v)
		}
	}
	t.Logf("PSI after %d calls with cpu moved 2 sd: %v", calls, psi)
	// The answers of the model whose profile holds its outputs: each class probability's values.
	if len(predRows) != 7 {
		t.Fatalf("model_prediction_drift_window_rows of anomaly-ref: %v; want the 7 class probabilities", predRows)
	}
	for out, n := range predRows {
		if n != calls/2 {
			t.Errorf("output %s: %v values, want one per call (%d)", out, n, calls/2)
		}
	}
}
