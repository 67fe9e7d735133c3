package proxy

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/batcher"
	"github.com/novacron/sidecar/features"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// fakeForwarder stands in for a legacy AI service: it answers each request with its VM's number
// as the prediction, and refuses (bad input) the whole call when one request's vm_id is "bad",
// naming it, as a real service's batch route does.
type fakeForwarder struct{}

func (fakeForwarder) PredictBandwidth(_ context.Context, reqs []*aipb.BandwidthRequest) ([]*aipb.BandwidthResponse, error) {
	for i, r := range reqs {
		if r.GetVmId() == "bad" {
			return nil, fmt.Errorf("upstream rejected reqs[%d] (vm_id %q): %w", i, r.GetVmId(), backends.ErrInvalidInput)
		}
	}
	out := make([]*aipb.BandwidthResponse, len(reqs))
	for i, r := range reqs {
		var n float64
		fmt.Sscanf(r.GetVmId(), "vm-%f", &n)
		out[i] = &aipb.BandwidthResponse{VmId: r.GetVmId(), Predictions: []float64{n}, Confidence: 0.5}
	}
	return out, nil
}
func (fakeForwarder) DetectAnomaly(context.Context, *aipb.AnomalyRequest) (*aipb.AnomalyResponse, error) {
	return nil, backends.ErrUnavailable
}
func (fakeForwarder) OptimizePlacement(context.Context, *aipb.PlacementRequest) (*aipb.PlacementResponse, error) {
	return nil, backends.ErrUnavailable
}
func (fakeForwarder) Ready(context.Context) error { return nil }
func (fakeForwarder) Close() error                { return nil }

// fakeForecaster stands in for a forecast model of horizon h: forecast row = 1..h, sigma = 0.
type fakeForecaster struct{ h int }

func (f fakeForecaster) Infer(_ context.Context, b *backends.Batch) (*backends.Result, error) {
	n := b.Rows()
	fc := make([]float32, n*f.h)
	for i := range fc {
		fc[i] = float32(i%f.h + 1)
	}
	return &backends.Result{Outputs: []backends.Tensor{
		backends.F32("forecast", []int64{int64(n), int64(f.h)}, fc),
		backends.F32("sigma", []int64{int64(n), int64(f.h)}, make([]float32, n*f.h)),
	}}, nil
}
func (fakeForecaster) Metadata(context.Context, string) (backends.Metadata, error) {
	return backends.Metadata{}, nil
}
func (fakeForecaster) Ready(context.Context) error { return nil }
func (fakeForecaster) Close() error                { return nil }

func bandwidthSpec(t *testing.T) (*features.Spec, []float64) {
	t.Helper()
	b, err := os.ReadFile("../examples/specs/bandwidth.yaml")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := features.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	raw := make([]float64, spec.Size())
	for i := range raw {
		raw[i] = 1
	}
	return spec, raw
}

// TestLegacyBatchErrorsStayWithTheirCaller: two calls share one legacy batch and the service
// refuses it because of one of them; only that caller gets the error, and the other its answer.
func TestLegacyBatchErrorsStayWithTheirCaller(t *testing.T) {
	spec, raw := bandwidthSpec(t)
	m, err := NewLegacy("bw", TaskForecast, spec, fakeForwarder{})
	if err != nil {
		t.Fatal(err)
	}
	m.Batching = &batcher.Config{MaxBatchSize: 64, MaxQueueDelay: time.Hour, PreferredBatchSizes: []int{2}, Priorities: 2}
	svc, err := New(Config{Routes: Routes{RouteBandwidth: {Target: "bw"}}}, []Target{m}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	var wg sync.WaitGroup
	errs := map[string]error{}
	var mu sync.Mutex
	for _, vm := range []string{"vm-7", "bad"} {
		wg.Go(func() {
			r, err := svc.PredictBandwidth(context.Background(), &aipb.BandwidthRequest{VmId: vm, HistoricalMetrics: raw})
			if err == nil && (r.GetVmId() != vm || r.Predictions[0] != 7) {
				err = fmt.Errorf("wrong answer %v", r)
			}
			mu.Lock()
			errs[vm] = err
			mu.Unlock()
		})
	}
	wg.Wait()
	if errs["vm-7"] != nil {
		t.Errorf("the good caller: %v", errs["vm-7"])
	}
	if Code(errs["bad"]).String() != "InvalidArgument" || strings.Contains(errs["bad"].Error(), "vm-7") {
		t.Errorf("the bad caller: %v; want INVALID_ARGUMENT about its own request only", errs["bad"])
	}
}

// TestSwapUnderLoad swaps the forecaster thousands of times between a local model (horizon 10)
// and a legacy service while callers run: no call fails and none gets an answer decoded with the
// other model's layout.
func TestSwapUnderLoad(t *testing.T) {
	spec, raw := bandwidthSpec(t)
	meta := backends.Metadata{Version: "1", Props: map[string]string{PropConfidenceScale: "1"},
		Inputs: []backends.TensorInfo{{Name: "features", DType: backends.FP32, Shape: []int64{-1, int64(spec.Window), int64(spec.Width())}}},
		Outputs: []backends.TensorInfo{{Name: "forecast", DType: backends.FP32, Shape: []int64{-1, 10}},
			{Name: "sigma", DType: backends.FP32, Shape: []int64{-1, 10}}}}
	batching := &batcher.Config{MaxBatchSize: 64, Priorities: 2}
	mk := func(i int) Target {
		if i%2 == 0 {
			m, err := NewModel("bw", TaskForecast, spec, fakeForecaster{10}, meta, Thresholds{})
			if err != nil {
				t.Fatal(err)
			}
			m.Batching, m.CacheTTL = batching, -1
			return m
		}
		l, err := NewLegacy("bw", TaskForecast, spec, fakeForwarder{})
		if err != nil {
			t.Fatal(err)
		}
		l.Batching = batching
		return l
	}
	svc, err := New(Config{Routes: Routes{RouteBandwidth: {Target: "bw"}}}, []Target{mk(0)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var calls int
	bad := map[string]int{}
	for w := 0; w < 8; w++ {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				vm := fmt.Sprintf("vm-%d", i)
				r, err := svc.PredictBandwidth(context.Background(), &aipb.BandwidthRequest{VmId: vm, HistoricalMetrics: raw})
				switch {
				case err != nil:
				case len(r.Predictions) == 10 && r.Predictions[9] == 10 && r.Confidence == 1: // the local model
				case len(r.Predictions) == 1 && r.Predictions[0] == float64(i) && r.GetVmId() == vm: // the legacy one
				default:
					err = fmt.Errorf("an answer of neither model: %v", r)
				}
				mu.Lock()
				calls++
				if err != nil {
					bad[err.Error()]++
				}
				mu.Unlock()
			}
		})
	}
	for i := 1; i < 2000; i++ {
		if _, err := svc.Swap([]Target{mk(i)}, Routes{RouteBandwidth: {Target: "bw"}}); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if len(bad) > 0 || calls == 0 {
		t.Errorf("%d calls; failures: %v", calls, bad)
	}
}
