package app_test

import (
	"context"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/backends/oip"
	"github.com/novacron/sidecar/internal/app"
	"github.com/novacron/sidecar/proto/inference"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
	"github.com/novacron/sidecar/proxy"
)

// seen is one ObserveRows call, copied.
type seen struct {
	model   string
	inputs  []float32
	outputs [][]float32
}

// recorder is a RowObserver that keeps what it is shown.
type recorder struct {
	mu    sync.Mutex
	calls []seen
}

func (r *recorder) ObserveRows(m *proxy.Model, inputs []float32, outputs [][]float32) {
	c := seen{model: m.Name, inputs: slices.Clone(inputs)}
	for _, o := range outputs {
		c.outputs = append(c.outputs, slices.Clone(o))
	}
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
}

// take returns the calls observed since the last take.
func (r *recorder) take() []seen {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.calls
	r.calls = nil
	return c
}

// TestObserverSeesWhatCallersGot: the row pipeline's observer sees, for a call over each front
// end (NovaCron gRPC, NovaCron HTTP/JSON, the Open Inference Protocol over gRPC with canonical
// tensors and over REST with raw features), exactly the canonical rows the model answered and the
// outputs the caller got, a cached answer as well as a computed one.
func TestObserverSeesWhatCallersGot(t *testing.T) {
	rec := &recorder{}
	s := startWith(t, nil, app.WithRowObserver(rec))
	ctx := context.Background()
	models := s.app.Service.Models()
	one := func(front string) seen {
		t.Helper()
		got := rec.take()
		if len(got) != 1 {
			t.Fatalf("%s: the observer saw %d calls, want 1", front, len(got))
		}
		return got[0]
	}
	f32 := func(v float32) float64 { return float64(v) }

	// NovaCron over gRPC: a forecast, computed, then the same again, from the cache.
	bw := models["bandwidth"]
	req := bandwidthReq(5)
	want := make([]float32, bw.Spec.Size())
	if err := bw.Spec.Canonicalize(want, req.HistoricalMetrics); err != nil {
		t.Fatal(err)
	}
	for _, round := range []string{"computed", "cached"} {
		resp, err := s.client.PredictBandwidth(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		c := one("gRPC PredictBandwidth " + round)
		if c.model != "bandwidth" || !slices.Equal(c.inputs, want) || len(c.outputs) != 1 {
			t.Fatalf("gRPC %s: observed model %q, %d outputs, inputs equal to the request's canonical row: %v", round, c.model, len(c.outputs), slices.Equal(c.inputs, want))
		}
		for j, p := range resp.Predictions { // forecast comes first in the row
			if p != f32(c.outputs[0][j]) {
				t.Errorf("gRPC %s: step %d answered %v, observed %v", round, j, p, c.outputs[0][j])
			}
		}
	}

	// NovaCron over HTTP/JSON: an anomaly verdict, score = 1 - P(normal).
	an := anomalyReq(93)
	body, _ := protojson.Marshal(an)
	code, out := s.post(t, "/api/v1/anomaly", "application/json", body)
	var verdict aipb.AnomalyResponse
	if err := protojson.Unmarshal(out, &verdict); code != 200 || err != nil {
		t.Fatalf("HTTP anomaly: %d %s %v", code, out, err)
	}
	c := one("HTTP DetectAnomaly")
	normal := slices.Index(strings.Split(models["anomaly"].Meta.Props[proxy.PropLabels], ","), "normal")
	if c.model != "anomaly" || len(c.outputs) != 1 || normal < 0 || math.Abs(1-f32(c.outputs[0][normal])-verdict.Score) > 1e-6 {
		t.Errorf("HTTP anomaly: observed %q %v (normal is class %d), answered score %v", c.model, c.outputs, normal, verdict.Score)
	}

	// The Open Inference Protocol over gRPC, canonical rows straight to the batcher.
	pl := models["placement"]
	_, canon := oipRows(t, pl.Spec, 3)
	ireq := &inference.ModelInferRequest{ModelName: "placement"}
	oip.SetInputs(ireq, []backends.Tensor{backends.F32("features", canonShape(pl.Spec, 3), canon)}, false)
	iresp, err := inference.NewGRPCInferenceServiceClient(s.conn).ModelInfer(ctx, ireq)
	if err != nil {
		t.Fatal(err)
	}
	c = one("OIP gRPC canonical")
	outs, err := oip.Outputs(iresp, backends.ErrInvalidInput)
	if err != nil {
		t.Fatal(err)
	}
	score := outs[0].Data.([]float32)
	if c.model != "placement" || !slices.Equal(c.inputs, canon) || len(c.outputs) != 3 {
		t.Fatalf("OIP gRPC: observed %q with %d outputs; inputs equal: %v", c.model, len(c.outputs), slices.Equal(c.inputs, canon))
	}
	for i := range score {
		if score[i] != c.outputs[i][0] {
			t.Errorf("OIP gRPC row %d: answered %v, observed %v", i, score[i], c.outputs[i][0])
		}
	}

	// The Open Inference Protocol's REST form with the spec's raw features, through the cache.
	raw, canonAn := oipRows(t, models["anomaly"].Spec, 2)
	code, got, _ := s.restInfer(t, "anomaly", map[string]any{"inputs": restTensors(rawFeatureTensors(models["anomaly"].Spec, 2, raw))})
	if code != http.StatusOK {
		t.Fatalf("REST raw features: %d", code)
	}
	c = one("OIP REST raw features")
	if c.model != "anomaly" || !slices.Equal(c.inputs, canonAn) || len(c.outputs) != 2 {
		t.Fatalf("REST: observed %q with %d outputs; inputs equal to the canonical rows: %v", c.model, len(c.outputs), slices.Equal(c.inputs, canonAn))
	}
	probs := got["probs"]
	width := len(probs) / 2
	for i := range 2 {
		for j := range width {
			if probs[i*width+j] != f32(c.outputs[i][j]) {
				t.Errorf("REST row %d class %d: answered %v, observed %v", i, j, probs[i*width+j], c.outputs[i][j])
			}
		}
	}
}
