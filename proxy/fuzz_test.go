package proxy

import (
	"context"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/novacron/sidecar/backends"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// fuzzService is a Service over the three example specs with fake backends (brokenBackend with
// sane outputs): what is fuzzed is decoding, validation and canonicalization, not a model.
func fuzzService(t *testing.T) *Service {
	th := Thresholds{0.5, 0.7, 0.85, 0.95}
	forecast := backends.Metadata{Version: "f", Props: map[string]string{PropConfidenceScale: "250"},
		Inputs:  []backends.TensorInfo{{Name: "features", DType: backends.FP32, Shape: []int64{-1, 10, 6}}},
		Outputs: []backends.TensorInfo{{Name: "forecast", DType: backends.FP32, Shape: []int64{-1, 10}}, {Name: "sigma", DType: backends.FP32, Shape: []int64{-1, 10}}}}
	place := backends.Metadata{Version: "p",
		Inputs:  []backends.TensorInfo{{Name: "features", DType: backends.FP32, Shape: []int64{-1, 4}}},
		Outputs: []backends.TensorInfo{{Name: "score", DType: backends.FP32, Shape: []int64{-1, 1}}}}
	ten := make([]float32, 10)
	bw, err := NewModel("bandwidth", TaskForecast, spec(t, "bandwidth"), &brokenBackend{out: []backends.Tensor{backends.F32("forecast", nil, ten), backends.F32("sigma", nil, ten)}}, forecast, th)
	if err != nil {
		t.Fatal(err)
	}
	an, err := NewModel("anomaly", TaskAnomaly, spec(t, "anomaly"), &brokenBackend{out: []backends.Tensor{backends.F32("probs", nil, []float32{0.5, 0.25, 0.25})}}, anomalyMeta("normal,a,b"), th)
	if err != nil {
		t.Fatal(err)
	}
	pl, err := NewModel("placement", TaskPlacement, spec(t, "placement"), &brokenBackend{out: []backends.Tensor{backends.F32("score", nil, []float32{0.5})}}, place, th)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(Config{Routes: Routes{RouteBandwidth: {Target: "bandwidth"}, RouteAnomaly: {Target: "anomaly"}, RoutePlacement: {Target: "placement"}}, MaxNodes: 64, MaxBatchVMs: 64}, []Target{bw, an, pl}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// FuzzProtoRequests: any bytes, decoded as each request message, give an answer or an error from
// the pipeline, never a panic.
func FuzzProtoRequests(f *testing.F) {
	seed := func(m proto.Message) { b, _ := proto.Marshal(m); f.Add(b) }
	w := make([]float64, 60)
	seed(&aipb.BandwidthRequest{VmId: "v", HistoricalMetrics: w, HorizonMinutes: 3})
	seed(&aipb.AnomalyRequest{VmId: "v", CurrentMetrics: &aipb.VMMetrics{Cpu: 1}})
	seed(&aipb.PlacementRequest{Requirements: map[string]float64{"cpu": 2}, AvailableNodes: []*aipb.NodeInfo{{NodeId: "n", CpuAvailable: 4}}})
	seed(&aipb.BandwidthBatchRequest{Vms: []*aipb.BandwidthRequest{{VmId: "v", HistoricalMetrics: w}}})
	seed(&aipb.PushMetricsRequest{Samples: []*aipb.MetricsSample{{VmId: "v", Metrics: &aipb.VMMetrics{}}}})
	f.Fuzz(func(t *testing.T, b []byte) {
		svc := fuzzService(t)
		defer svc.Close()
		ctx := context.Background()
		var br aipb.BandwidthRequest
		if proto.Unmarshal(b, &br) == nil {
			svc.PredictBandwidth(ctx, &br)
		}
		var ar aipb.AnomalyRequest
		if proto.Unmarshal(b, &ar) == nil {
			svc.DetectAnomaly(ctx, &ar)
		}
		var pr aipb.PlacementRequest
		if proto.Unmarshal(b, &pr) == nil {
			svc.OptimizePlacement(ctx, &pr)
		}
		var bb aipb.BandwidthBatchRequest
		if proto.Unmarshal(b, &bb) == nil {
			svc.PredictBandwidthBatch(ctx, &bb)
		}
		var pm aipb.PushMetricsRequest
		if proto.Unmarshal(b, &pm) == nil {
			svc.PushMetrics(ctx, &pm)
		}
	})
}
