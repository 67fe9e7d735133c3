package proxy

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/batcher"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// Regression tests of the shadow path, each from a defect a review found (with a fake model
// where an ONNX one cannot show it).

// gateBackend is a fake model that answers once open is closed.
type gateBackend struct {
	fakeForecaster
	open chan struct{}
}

func (g gateBackend) Infer(ctx context.Context, b *backends.Batch) (*backends.Result, error) {
	<-g.open
	return g.fakeForecaster.Infer(ctx, b)
}

// echoBackend is a fake model whose forecast, at every step, is the sum of its input row: the
// answer shows the window it read.
type echoBackend struct{ fakeForecaster }

func (echoBackend) Infer(_ context.Context, b *backends.Batch) (*backends.Result, error) {
	n := b.Rows()
	d, _ := b.Inputs[0].Float32s()
	size := len(d) / n
	fc := make([]float32, n*10)
	for i := range n {
		var s float32
		for _, v := range d[i*size : (i+1)*size] {
			s += v
		}
		for j := range 10 {
			fc[i*10+j] = s
		}
	}
	return &backends.Result{Outputs: []backends.Tensor{
		backends.F32("forecast", []int64{int64(n), 10}, fc),
		backends.F32("sigma", []int64{int64(n), 10}, make([]float32, n*10)),
	}}, nil
}

// panickingBackend is a fake model with a bug.
type panickingBackend struct{ fakeForecaster }

func (panickingBackend) Infer(context.Context, *backends.Batch) (*backends.Result, error) {
	panic("a bug in a backend")
}

// TestShadowErrorIsNotATimeout: a shadow that fails at once is an error, not a timeout.
func TestShadowErrorIsNotATimeout(t *testing.T) {
	_, raw := bandwidthSpec(t)
	a, failing := horizonModel(t, "a", fakeForecaster{10}, 10), horizonModel(t, "failing", failingBackend{}, 10)
	rec := &routeRecorder{}
	svc := newRouted(t, Config{Routing: rec, ShadowTimeout: time.Hour,
		Routes: Routes{RouteBandwidth: {Target: "a", Shadow: []Arm{{Target: "failing", Percent: 100}}}}}, a, failing)
	if _, err := svc.PredictBandwidth(context.Background(), &aipb.BandwidthRequest{VmId: "vm", HistoricalMetrics: raw}); err != nil {
		t.Fatal(err)
	}
	svc.Close()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.shadowed) != 1 || errors.Is(rec.shadowed[0].Err, context.DeadlineExceeded) || !errors.Is(rec.shadowed[0].Err, backends.ErrUnavailable) {
		t.Errorf("outcomes %v; want one error, not a timeout", rec.shadowed)
	}
}

// TestShadowsSurviveAReload: shadowed calls queued before a reload run on the targets that
// replaced theirs, and none fails because of it.
func TestShadowsSurviveAReload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, raw := bandwidthSpec(t)
		open := make(chan struct{})
		mk := func() []Target {
			a := horizonModel(t, "a", fakeForecaster{10}, 10)
			b := horizonModel(t, "b", gateBackend{fakeForecaster{10}, open}, 10)
			for _, m := range []*Model{a, b} {
				m.Batching = &batcher.Config{MaxBatchSize: 8, MaxQueueSize: 64}
			}
			return []Target{a, b}
		}
		routes := Routes{RouteBandwidth: {Target: "a", Shadow: []Arm{{Target: "b", Percent: 100}}}}
		rec := &routeRecorder{}
		svc := newRouted(t, Config{Routing: rec, ShadowWorkers: 1, ShadowQueue: 16, ShadowTimeout: time.Hour, Routes: routes}, mk()...)
		const calls = 5
		for i := range calls {
			if _, err := svc.PredictBandwidth(context.Background(), &aipb.BandwidthRequest{VmId: fmt.Sprintf("vm-%d", i), HistoricalMetrics: raw}); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait() // the worker holds the first shadowed call at the gate; four wait
		time.AfterFunc(time.Second, func() { close(open) })
		if _, err := svc.Swap(mk(), routes); err != nil { // the same models and routes: a no-op reload
			t.Fatal(err)
		}
		synctest.Wait() // every queued shadowed call has run
		rec.mu.Lock()
		defer rec.mu.Unlock()
		for _, o := range rec.shadowed {
			if o.Err != nil {
				t.Errorf("a shadowed call failed across the reload: %v", o.Err)
			}
		}
		if len(rec.shadowed)+rec.dropped != calls {
			t.Errorf("%d shadowed and %d dropped of %d", len(rec.shadowed), rec.dropped, calls)
		}
	})
}

// TestShadowReadsThePrimarysWindow: a forecast served from the VM's pushed window is shadowed
// with that window, not with the one a later push has changed by the time the shadow runs, so
// identical models agree.
func TestShadowReadsThePrimarysWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		open := make(chan struct{})
		a := horizonModel(t, "a", echoBackend{fakeForecaster{10}}, 10)
		b := horizonModel(t, "b", echoBackend{fakeForecaster{10}}, 10)       // the same model as a
		g := horizonModel(t, "g", gateBackend{fakeForecaster{10}, open}, 10) // holds the one worker
		t0 := time.Now()
		rec := &routeRecorder{}
		svc := newRouted(t, Config{Routing: rec, ShadowWorkers: 1,
			Routes: Routes{RouteBandwidth: {Target: "a", Shadow: []Arm{{Target: "g", Percent: 100}, {Target: "b", Percent: 100}}}}}, a, b, g)
		ctx := context.Background()
		push := func(at time.Time, i int) {
			if _, err := svc.PushMetrics(ctx, &aipb.PushMetricsRequest{Samples: []*aipb.MetricsSample{{VmId: "vm", TimestampMs: at.UnixMilli(), Metrics: metricsAt(i)}}}); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 10 {
			push(t0.Add(time.Duration(i-9)*time.Minute), i)
		}
		if _, err := svc.PredictBandwidth(ctx, &aipb.BandwidthRequest{VmId: "vm"}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(15 * time.Second) // synctest's clock: the agent's next sample, in the same step
		push(time.Now(), 99)
		close(open)
		synctest.Wait()
		rec.mu.Lock()
		defer rec.mu.Unlock()
		n := 0
		for _, o := range rec.shadowed {
			if o.Shadow != "b" {
				continue
			}
			n++
			p := o.PrimaryAnswer.(*aipb.BandwidthBatchResponse).Results[0].Predictions[0]
			if o.Err != nil || o.Answer.(*aipb.BandwidthBatchResponse).Results[0].Predictions[0] != p {
				t.Errorf("identical models disagree: primary %v, shadow %v (%v)", p, o.Answer, o.Err)
			}
		}
		if n != 1 {
			t.Errorf("%d outcomes of b, want 1", n)
		}
	})
}

// TestSplitPartPanicIsAnError: a panic in a split batch's part run on its own goroutine is that
// call's error, as on the first part's.
func TestSplitPartPanicIsAnError(t *testing.T) {
	_, raw := bandwidthSpec(t)
	a, b := horizonModel(t, "a", fakeForecaster{10}, 10), horizonModel(t, "b", panickingBackend{fakeForecaster{10}}, 10)
	svc := newRouted(t, Config{Routes: Routes{RouteBandwidth: {Target: "a", Split: []Arm{{Target: "b", Percent: 50}}}}}, a, b)
	r := svc.state.Load().routes[RouteBandwidth]
	var vms []*aipb.BandwidthRequest
	for i := 0; len(vms) < 2; i++ {
		id := fmt.Sprintf("vm-%d", i)
		if (len(vms) == 0) == (r.arm(id) == "a") { // the first VM on a, the second on b
			vms = append(vms, &aipb.BandwidthRequest{VmId: id, HistoricalMetrics: raw})
		}
	}
	if _, err := svc.PredictBandwidthBatch(context.Background(), &aipb.BandwidthBatchRequest{Vms: vms}); Code(err) != codes.Internal {
		t.Errorf("a panic on the second part: %v; want INTERNAL", err)
	}
}

// BenchmarkShadowOverhead measures what a shadow at 100% costs a PredictBandwidth in the process,
// with fakes that cost nothing (a fake model, and a fake legacy service as the shadow): the
// clone of the call and its answer, the queue, the worker, the shadow target's own request
// checks and its answer's checks. (The network and the shadow target's work are not in it:
// make bench's shadow rows measure them.) Each call sends its own VM and window.
func BenchmarkShadowOverhead(b *testing.B) {
	for _, shadow := range []bool{false, true} {
		b.Run(fmt.Sprintf("shadow=%v", shadow), func(b *testing.B) {
			sp, raw := bandwidthSpec(&testing.T{})
			meta := backends.Metadata{Version: "a", Props: map[string]string{PropConfidenceScale: "1"},
				Inputs: []backends.TensorInfo{{Name: "features", DType: backends.FP32, Shape: []int64{-1, int64(sp.Window), int64(sp.Width())}}},
				Outputs: []backends.TensorInfo{{Name: "forecast", DType: backends.FP32, Shape: []int64{-1, 10}},
					{Name: "sigma", DType: backends.FP32, Shape: []int64{-1, 10}}}}
			a, err := NewModel("a", TaskForecast, sp, fakeForecaster{10}, meta, Thresholds{})
			if err != nil {
				b.Fatal(err)
			}
			a.CacheTTL = -1
			l, err := NewLegacy("l", TaskForecast, sp, fakeForwarder{})
			if err != nil {
				b.Fatal(err)
			}
			route := Route{Target: "a"}
			if shadow {
				route.Shadow = []Arm{{Target: "l", Percent: 100}}
			}
			rec := &countingObserver{}
			svc, err := New(Config{Routing: rec, ShadowQueue: 1 << 16, Routes: Routes{RouteBandwidth: route}}, []Target{a, l}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer svc.Close()
			reqs := make([]*aipb.BandwidthRequest, 1024)
			for i := range reqs {
				w := append([]float64(nil), raw...)
				w[0] = float64(i)
				reqs[i] = &aipb.BandwidthRequest{VmId: fmt.Sprintf("vm-%d", i), HistoricalMetrics: w}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if _, err := svc.PredictBandwidth(context.Background(), reqs[i%len(reqs)]); err != nil {
					b.Fatal(err)
				}
			}
			svc.Close() // the shadowed calls run before the clock stops
		})
	}
}

// countingObserver is a RouteObserver that only counts.
type countingObserver struct{ served, shadowed, dropped atomicCounter }

type atomicCounter struct{ n int64 }

func (c *countingObserver) Served(string, string, time.Duration, error) {}
func (c *countingObserver) Shadowed(*ShadowOutcome)                     {}
func (c *countingObserver) ShadowDropped(string, string, string)        {}
