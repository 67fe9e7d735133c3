package app_test

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/backends/oip"
	"github.com/novacron/sidecar/config"
	"github.com/novacron/sidecar/examples"
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

func (r *recorder) ObserveRows(t proxy.Target, inputs []float32, outputs [][]float32) {
	c := seen{model: t.Info().Name, inputs: slices.Clone(inputs)}
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

	// A NovaCron placement: the nodes' rows, in the request's order, not the occluded copies
	// its reasoning runs.
	pr := placementReq()
	placed, err := s.client.OptimizePlacement(ctx, pr)
	if err != nil {
		t.Fatal(err)
	}
	c = one("gRPC OptimizePlacement")
	if len(c.outputs) != len(pr.AvailableNodes) || len(c.inputs) != len(pr.AvailableNodes)*pl.Spec.Size() {
		t.Fatalf("placement: observed %d rows (%d values) for %d nodes", len(c.outputs), len(c.inputs), len(pr.AvailableNodes))
	}
	for i, n := range pr.AvailableNodes {
		for _, cand := range placed.Candidates {
			if cand.NodeId == n.NodeId && f32(c.outputs[i][0]) != cand.Score {
				t.Errorf("node %s: answered %v, observed %v", n.NodeId, cand.Score, c.outputs[i][0])
			}
		}
	}
}

// TestObserverSeesLegacyRows: a legacy AI service is a target like any other, and the observer
// sees its calls too: each call's canonical rows (as a tensor model of the same spec would get
// them) with the values of the answer the caller got. The legacy service here is a second
// sidecar, which serves the seed's novacron.ai.AIService contract, reached over legacy_grpc.
func TestObserverSeesLegacyRows(t *testing.T) {
	up := start(t, nil)
	yaml := fmt.Sprintf(`listen: {grpc: 127.0.0.1:0, http: "off"}
cache: {disabled: true}
models:
  - {name: bandwidth, task: forecast, spec: embedded:specs/bandwidth.yaml, backend: {kind: legacy_grpc, endpoints: [%[1]s]}}
  - {name: anomaly, task: anomaly, spec: embedded:specs/anomaly.yaml, backend: {kind: legacy_grpc, endpoints: [%[1]s]}}
  - {name: placement, task: placement, spec: embedded:specs/placement.yaml, backend: {kind: legacy_grpc, endpoints: [%[1]s]}}
routes: {predict_bandwidth: bandwidth, detect_anomaly: anomaly, optimize_placement: placement}
`, up.app.GRPCAddr)
	cfg, err := config.Parse("legacy-observer.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	a, err := app.Start(context.Background(), cfg, examples.FS, io.Discard, app.WithRowObserver(rec))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	conn, err := grpc.NewClient(a.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := aipb.NewAIServiceClient(conn)
	ctx := context.Background()
	targets := a.Service.Targets()
	for name, tg := range targets {
		if tg.Info().Platform != "legacy" {
			t.Fatalf("target %s runs on %q, want a legacy service", name, tg.Info().Platform)
		}
	}
	if len(a.Service.Models()) != 0 {
		t.Errorf("%d tensor models; a legacy service is not one", len(a.Service.Models()))
	}
	one := func(what string) seen {
		t.Helper()
		got := rec.take()
		if len(got) != 1 {
			t.Fatalf("%s: the observer saw %d calls, want 1", what, len(got))
		}
		return got[0]
	}
	canon := func(name string, raw []float64) []float32 {
		spec := targets[name].Info().Spec
		row := make([]float32, spec.Size())
		if err := spec.Canonicalize(row, raw); err != nil {
			t.Fatal(err)
		}
		return row
	}

	// A batch of two forecasts: two rows, each with the predictions its VM was answered.
	reqs := []*aipb.BandwidthRequest{bandwidthReq(3), bandwidthReq(4)}
	batch, err := client.PredictBandwidthBatch(ctx, &aipb.BandwidthBatchRequest{Vms: reqs})
	if err != nil {
		t.Fatal(err)
	}
	c := one("PredictBandwidthBatch")
	want := append(canon("bandwidth", reqs[0].HistoricalMetrics), canon("bandwidth", reqs[1].HistoricalMetrics)...)
	if c.model != "bandwidth" || !slices.Equal(c.inputs, want) || len(c.outputs) != 2 {
		t.Fatalf("forecast: observed %q, %d outputs; inputs equal to the canonical rows: %v", c.model, len(c.outputs), slices.Equal(c.inputs, want))
	}
	for i, r := range batch.Results {
		if len(r.Predictions) != len(c.outputs[i]) || len(r.Predictions) == 0 {
			t.Fatalf("forecast %d: answered %d steps, observed %d", i, len(r.Predictions), len(c.outputs[i]))
		}
		for j, p := range r.Predictions {
			if float32(p) != c.outputs[i][j] {
				t.Errorf("forecast %d step %d: answered %v, observed %v", i, j, p, c.outputs[i][j])
			}
		}
	}

	// An anomaly verdict: its row and its score.
	an := anomalyReq(97)
	verdict, err := client.DetectAnomaly(ctx, an)
	if err != nil {
		t.Fatal(err)
	}
	c = one("DetectAnomaly")
	cm := an.CurrentMetrics
	wantAn := canon("anomaly", []float64{cm.Cpu, cm.Memory, cm.DiskIo, cm.NetworkIo, cm.Latency, cm.ErrorRate})
	if c.model != "anomaly" || !slices.Equal(c.inputs, wantAn) || len(c.outputs) != 1 || c.outputs[0][0] != float32(verdict.Score) {
		t.Errorf("anomaly: observed %q %v (inputs equal: %v), answered score %v", c.model, c.outputs, slices.Equal(c.inputs, wantAn), verdict.Score)
	}

	// A placement: one row per scored node, in the request's order, with the node's score.
	pr := placementReq()
	placed, err := client.OptimizePlacement(ctx, pr)
	if err != nil {
		t.Fatal(err)
	}
	c = one("OptimizePlacement")
	score := map[string]float64{}
	for _, cand := range placed.Candidates {
		score[cand.NodeId] = cand.Score
	}
	if c.model != "placement" || len(c.outputs) != len(pr.AvailableNodes) || len(score) != len(pr.AvailableNodes) {
		t.Fatalf("placement: observed %q with %d rows for %d nodes (%d answered)", c.model, len(c.outputs), len(pr.AvailableNodes), len(score))
	}
	spec := targets["placement"].Info().Spec
	var wantPl []float32
	for i, n := range pr.AvailableNodes {
		if c.outputs[i][0] != float32(score[n.NodeId]) {
			t.Errorf("placement node %s: answered %v, observed %v", n.NodeId, score[n.NodeId], c.outputs[i][0])
		}
		var raw []float64
		for _, f := range spec.Features {
			switch f.Source {
			case "node.cpu_available":
				raw = append(raw, n.CpuAvailable)
			case "node.memory_available":
				raw = append(raw, n.MemoryAvailable)
			default:
				v, ok := pr.Requirements[strings.TrimPrefix(f.Source, "requirements.")]
				if !ok {
					v = math.NaN()
				}
				raw = append(raw, v)
			}
		}
		wantPl = append(wantPl, canon("placement", raw)...)
	}
	if !slices.Equal(c.inputs, wantPl) {
		t.Errorf("placement: observed rows %v, want the nodes' canonical rows %v", c.inputs, wantPl)
	}
}
