package proxy

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/proto/inference"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// Fakes of this file stand for forecast models (no ONNX model here answers in a way a test can
// tell its arms apart by; internal/app's tests route over real ones).

// horizonModel is a fake forecast model whose answers are as long as its horizon: the arm that
// served a call shows in its answer.
func horizonModel(t *testing.T, name string, b backends.Backend, h int) *Model {
	t.Helper()
	sp, _ := bandwidthSpec(t)
	meta := backends.Metadata{Version: name, Props: map[string]string{PropConfidenceScale: "1"},
		Inputs: []backends.TensorInfo{{Name: "features", DType: backends.FP32, Shape: []int64{-1, int64(sp.Window), int64(sp.Width())}}},
		Outputs: []backends.TensorInfo{{Name: "forecast", DType: backends.FP32, Shape: []int64{-1, int64(h)}},
			{Name: "sigma", DType: backends.FP32, Shape: []int64{-1, int64(h)}}}}
	m, err := NewModel(name, TaskForecast, sp, b, meta, Thresholds{})
	if err != nil {
		t.Fatal(err)
	}
	m.CacheTTL = -1
	return m
}

// blockingBackend is a fake model that answers only when its call's context ends (with its
// error): a shadow target that never answers in time.
type blockingBackend struct{ fakeForecaster }

func (blockingBackend) Infer(ctx context.Context, _ *backends.Batch) (*backends.Result, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// failingBackend is a fake model whose every call fails.
type failingBackend struct{ fakeForecaster }

func (failingBackend) Infer(context.Context, *backends.Batch) (*backends.Result, error) {
	return nil, fmt.Errorf("fake failure: %w", backends.ErrUnavailable)
}

// routeRecorder is a RouteObserver that keeps what it sees.
type routeRecorder struct {
	mu       sync.Mutex
	served   map[string]int
	shadowed []*ShadowOutcome
	dropped  int
}

func (r *routeRecorder) Served(route, target string, _ time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.served == nil {
		r.served = map[string]int{}
	}
	r.served[target]++
}
func (r *routeRecorder) Shadowed(o *ShadowOutcome) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.shadowed = append(r.shadowed, o)
}
func (r *routeRecorder) ShadowDropped(route, primary, shadow string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dropped++
}

// armOf names the arm that answered by its answer's length: a (horizon 10) or b (horizon 5).
func armOf(r *aipb.BandwidthResponse) string {
	switch len(r.GetPredictions()) {
	case 10:
		return "a"
	case 5:
		return "b"
	}
	return fmt.Sprintf("unknown (%d steps)", len(r.GetPredictions()))
}

func newRouted(t *testing.T, cfg Config, targets ...Target) *Service {
	t.Helper()
	svc, err := New(cfg, targets, NewMetrics(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	return svc
}

// TestSplitIsSticky: a split sends each VM to one arm, whatever call or batch it comes in, with
// the arm's share of the VMs within statistical bounds; raising the share keeps every VM the arm
// had; a batch's VMs each get their own arm's answer, in order.
func TestSplitIsSticky(t *testing.T) {
	_, raw := bandwidthSpec(t)
	a, b := horizonModel(t, "a", fakeForecaster{10}, 10), horizonModel(t, "b", fakeForecaster{5}, 5)
	rec := &routeRecorder{}
	svc := newRouted(t, Config{Routing: rec, Routes: Routes{RouteBandwidth: {Target: "a", Split: []Arm{{Target: "b", Percent: 30}}}}}, a, b)
	ctx := context.Background()
	const vms = 2000
	armAt := func(pct float64) map[string]string {
		if err := svc.SetRoute(RouteBandwidth, Route{Target: "a", Split: []Arm{{Target: "b", Percent: pct}}}); err != nil {
			t.Fatal(err)
		}
		arms := map[string]string{}
		for i := range vms {
			vm := fmt.Sprintf("vm-%d", i)
			r, err := svc.PredictBandwidth(ctx, &aipb.BandwidthRequest{VmId: vm, HistoricalMetrics: raw})
			if err != nil {
				t.Fatal(err)
			}
			arms[vm] = armOf(r)
		}
		return arms
	}
	at30 := armAt(30)
	again := armAt(30)
	nb := 0
	for vm, arm := range at30 {
		if again[vm] != arm {
			t.Fatalf("%s: arm %s, then %s", vm, arm, again[vm])
		}
		if arm == "b" {
			nb++
		}
	}
	// Binomial(2000, 0.3): mean 600, sd 20.5; 5 sd either side.
	if math.Abs(float64(nb)-600) > 5*20.5 {
		t.Errorf("b serves %d of %d VMs at 30%%; want about 600", nb, vms)
	}
	at50 := armAt(50)
	moved := 0
	for vm, arm := range at30 {
		if arm == "b" && at50[vm] != "b" {
			t.Fatalf("%s left b when its share grew from 30%% to 50%%", vm)
		}
		if arm == "a" && at50[vm] == "b" {
			moved++
		}
	}
	if math.Abs(float64(nb+moved)-1000) > 5*22.4 {
		t.Errorf("b serves %d of %d VMs at 50%%; want about 1000", nb+moved, vms)
	}

	// A batch: every VM answered by its own arm, in order.
	var batch []*aipb.BandwidthRequest
	for i := range 64 {
		batch = append(batch, &aipb.BandwidthRequest{VmId: fmt.Sprintf("vm-%d", i*7), HistoricalMetrics: raw})
	}
	resp, err := svc.PredictBandwidthBatch(ctx, &aipb.BandwidthBatchRequest{Vms: batch})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range resp.Results {
		if r.VmId != batch[i].VmId || armOf(r) != at50[r.VmId] {
			t.Fatalf("batch result %d: vm %s from %s; want vm %s from %s", i, r.VmId, armOf(r), batch[i].VmId, at50[batch[i].VmId])
		}
	}
	// A bad VM of a split batch is named by its index in the batch, whichever arm it went to.
	bad := append([]*aipb.BandwidthRequest(nil), batch...)
	bad[41] = &aipb.BandwidthRequest{VmId: batch[41].VmId, HistoricalMetrics: raw[:3]}
	_, err = svc.PredictBandwidthBatch(ctx, &aipb.BandwidthBatchRequest{Vms: bad})
	if Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "vms[41].historical_metrics") {
		t.Errorf("a bad VM 41: %v; want INVALID_ARGUMENT naming vms[41].historical_metrics", err)
	}
	if got := testutil.ToFloat64(svc.metrics.routeCalls.WithLabelValues(RouteBandwidth, "b")); got < float64(nb) {
		t.Errorf("sidecar_route_calls_total{b} = %v, want at least %d", got, nb)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.served["a"] == 0 || rec.served["b"] == 0 {
		t.Errorf("the observer saw calls served %v; want both arms", rec.served)
	}
}

// TestForcedTarget: the x-sidecar-target header sends a call to the named target, counted, with
// no shadow; a target that is not loaded or of another task is refused.
func TestForcedTarget(t *testing.T) {
	_, raw := bandwidthSpec(t)
	a, b := horizonModel(t, "a", fakeForecaster{10}, 10), horizonModel(t, "b", fakeForecaster{5}, 5)
	an, err := NewModel("an", TaskAnomaly, spec(t, "anomaly"), fakeForecaster{1}, anomalyMeta("normal,spike"), Thresholds{Threshold: 0.5, Medium: 0.6, High: 0.7, Critical: 0.8})
	if err != nil {
		t.Fatal(err)
	}
	rec := &routeRecorder{}
	svc := newRouted(t, Config{Routing: rec, Routes: Routes{RouteBandwidth: {Target: "a", Shadow: []Arm{{Target: "b", Percent: 100}}}}}, a, b, an)
	ctx := withForced(context.Background(), "b")
	r, err := svc.PredictBandwidth(ctx, &aipb.BandwidthRequest{VmId: "vm-1", HistoricalMetrics: raw})
	if err != nil || armOf(r) != "b" {
		t.Fatalf("forced to b: %v from %s", err, armOf(r))
	}
	if got := testutil.ToFloat64(svc.metrics.routeForced.WithLabelValues(RouteBandwidth, "b")); got != 1 {
		t.Errorf("sidecar_route_forced_total{b} = %v, want 1", got)
	}
	svc.Close() // the shadow workers: nothing may have been queued
	rec.mu.Lock()
	if len(rec.shadowed) != 0 || rec.dropped != 0 || len(rec.served) != 0 {
		t.Errorf("a forced call was routed: served %v, %d shadowed, %d dropped", rec.served, len(rec.shadowed), rec.dropped)
	}
	rec.mu.Unlock()
	for _, c := range []struct {
		target string
		code   codes.Code
	}{{"nope", codes.NotFound}, {"an", codes.InvalidArgument}} {
		_, err := svc.PredictBandwidth(withForced(context.Background(), c.target), &aipb.BandwidthRequest{VmId: "vm-1", HistoricalMetrics: raw})
		if Code(err) != c.code || !strings.Contains(err.Error(), TargetHeader) {
			t.Errorf("forced to %q: %v; want %v naming %s", c.target, err, c.code, TargetHeader)
		}
	}
}

// TestShadowNeverHarmsThePrimary: with a shadow that never answers (held until its timeout) and
// one that fails, every caller still gets the primary's answer at once; what the one worker
// cannot take is dropped and counted; the slow shadow's calls end as timeouts, the failing one's
// as errors. Time is synctest's.
func TestShadowNeverHarmsThePrimary(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, raw := bandwidthSpec(t)
		a := horizonModel(t, "a", fakeForecaster{10}, 10)
		slow, failing := horizonModel(t, "slow", blockingBackend{}, 10), horizonModel(t, "failing", failingBackend{}, 10)
		rec := &routeRecorder{}
		svc := newRouted(t, Config{Routing: rec, ShadowQueue: 2, ShadowWorkers: 1, ShadowTimeout: time.Second,
			Routes: Routes{RouteBandwidth: {Target: "a", Shadow: []Arm{{Target: "slow", Percent: 100}, {Target: "failing", Percent: 100}}}}},
			a, slow, failing)
		const calls = 20
		start := time.Now()
		for i := range calls {
			r, err := svc.PredictBandwidth(context.Background(), &aipb.BandwidthRequest{VmId: fmt.Sprintf("vm-%d", i), HistoricalMetrics: raw})
			if err != nil || armOf(r) != "a" || r.Predictions[9] != 10 {
				t.Fatalf("call %d: %v, %v; want the primary's answer", i, err, r)
			}
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("the callers waited %v for their shadows", d)
		}
		time.Sleep(time.Minute) // the shadows' timeouts pass (synctest's clock)
		synctest.Wait()
		rec.mu.Lock()
		defer rec.mu.Unlock()
		var timeouts, errs int
		for _, o := range rec.shadowed {
			switch {
			case o.Shadow == "slow" && errors.Is(o.Err, context.DeadlineExceeded):
				timeouts++
			case o.Shadow == "failing" && errors.Is(o.Err, backends.ErrUnavailable):
				errs++
			default:
				t.Errorf("shadow outcome %s: %v", o.Shadow, o.Err)
			}
			if o.Primary != "a" || o.PrimaryAnswer == nil || o.Answer != nil {
				t.Errorf("shadow outcome: primary %q answer %v, shadow answer %v", o.Primary, o.PrimaryAnswer, o.Answer)
			}
		}
		if len(rec.shadowed)+rec.dropped != 2*calls || rec.dropped == 0 || timeouts == 0 {
			t.Errorf("%d shadowed (%d timeouts, %d errors) + %d dropped; want %d in all, some dropped, some timed out",
				len(rec.shadowed), timeouts, errs, rec.dropped, 2*calls)
		}
	})
}

// TestShadowComparesTheSameCall: a shadow gets the very call the primary served (a copy) and
// both answers reach the observer.
func TestShadowComparesTheSameCall(t *testing.T) {
	_, raw := bandwidthSpec(t)
	a, b := horizonModel(t, "a", fakeForecaster{10}, 10), horizonModel(t, "b", fakeForecaster{5}, 5)
	rec := &routeRecorder{}
	svc := newRouted(t, Config{Routing: rec, Routes: Routes{RouteBandwidth: {Target: "a", Shadow: []Arm{{Target: "b", Percent: 100}}}}}, a, b)
	req := &aipb.BandwidthRequest{VmId: "vm-9", HistoricalMetrics: raw}
	if _, err := svc.PredictBandwidth(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	req.VmId = "changed-after-the-call" // the caller's message is its own again
	svc.Close()                         // waits for the worker
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.shadowed) != 1 {
		t.Fatalf("%d shadow outcomes, want 1", len(rec.shadowed))
	}
	o := rec.shadowed[0]
	q := o.Request.(*aipb.BandwidthBatchRequest)
	pa, sa := o.PrimaryAnswer.(*aipb.BandwidthBatchResponse), o.Answer.(*aipb.BandwidthBatchResponse)
	if o.Err != nil || q.Vms[0].VmId != "vm-9" || armOf(pa.Results[0]) != "a" || armOf(sa.Results[0]) != "b" || sa.Results[0].VmId != "vm-9" {
		t.Errorf("outcome: err %v, request vm %q, primary %s, shadow %s", o.Err, q.Vms[0].VmId, armOf(pa.Results[0]), armOf(sa.Results[0]))
	}
}

// TestValidateRoute names the field of each mistake.
func TestValidateRoute(t *testing.T) {
	for _, c := range []struct {
		r     Route
		field string
	}{
		{Route{Target: "a", Split: []Arm{{Target: "a", Percent: 10}}}, "split[0].target"},
		{Route{Target: "a", Split: []Arm{{Target: "b", Percent: 60}, {Target: "c", Percent: 50}}}, "split"},
		{Route{Target: "a", Split: []Arm{{Target: "b", Percent: -1}}}, "split[0].percent"},
		{Route{Split: []Arm{{Target: "b", Percent: 1}}}, "target"},
		{Route{Target: "a", Shadow: []Arm{{Target: "b", Percent: 101}}}, "shadow[0].percent"},
		{Route{Target: "a", Shadow: []Arm{{Target: "b", Percent: 1}, {Target: "b", Percent: 2}}}, "shadow[1].target"},
		{Route{Target: "a", Key: "workload_id"}, "key"},
	} {
		err := ValidateRoute(RouteBandwidth, c.r)
		if err == nil || !strings.Contains(err.Error(), c.field+":") {
			t.Errorf("%+v: %v; want an error naming %s", c.r, err, c.field)
		}
	}
	if err := ValidateRoute(RoutePlacement, Route{Target: "p", Key: KeyWorkload, Split: []Arm{{Target: "q", Percent: 100}}}); err != nil {
		t.Errorf("a valid route: %v", err)
	}
}

// TestModelRoute: an Open Inference Protocol route splits the calls that name its model by their
// id (sticky), answers under the name asked for with the serving model's version, describes the
// name by its primary target, and shadows a copy of the call whose answer reaches the observer as
// a protocol message.
func TestModelRoute(t *testing.T) {
	sp, raw := bandwidthSpec(t)
	a, b := horizonModel(t, "a", fakeForecaster{10}, 10), horizonModel(t, "b", fakeForecaster{5}, 5)
	c := horizonModel(t, "c", fakeForecaster{10}, 10)
	rec := &routeRecorder{}
	svc := newRouted(t, Config{Routing: rec, Routes: Routes{ModelRoute("fc"): {Target: "a", Key: KeyID,
		Split: []Arm{{Target: "b", Percent: 50}}, Shadow: []Arm{{Target: "c", Percent: 100}}}}}, a, b, c)
	canon := make([]float32, sp.Size())
	if err := sp.Canonicalize(canon, raw); err != nil {
		t.Fatal(err)
	}
	call := func(id string) *InferAnswer {
		t.Helper()
		ans, err := svc.Infer(context.Background(), &InferCall{Model: "fc", ID: id,
			Inputs: []backends.Tensor{backends.F32("features", sp.InputShape(1), canon)}})
		if err != nil {
			t.Fatal(err)
		}
		return ans
	}
	byID := map[string]string{}
	for i := range 200 {
		id := fmt.Sprintf("req-%d", i)
		ans := call(id)
		if ans.Model != "fc" || (ans.Version != "a" && ans.Version != "b") {
			t.Fatalf("answer of model %q version %q; want fc from a or b", ans.Model, ans.Version)
		}
		byID[id] = ans.Version
	}
	nb := 0
	for id, v := range byID {
		if again := call(id); again.Version != v {
			t.Fatalf("%s: %s, then %s", id, v, again.Version)
		}
		if v == "b" {
			nb++
		}
	}
	if nb < 60 || nb > 140 { // Binomial(200, 0.5): 100 ± 7
		t.Errorf("b served %d of 200 ids at 50%%", nb)
	}
	forced, err := svc.Infer(withForced(context.Background(), "c"), &InferCall{Model: "fc", ID: "req-1",
		Inputs: []backends.Tensor{backends.F32("features", sp.InputShape(1), canon)}})
	if err != nil || forced.Version != "c" || forced.Model != "fc" {
		t.Errorf("forced to c: %v, %v", forced, err)
	}
	md, err := svc.ModelMetadata("fc", "")
	if err != nil || md.Name != "fc" || md.Versions[0] != "a" {
		t.Errorf("metadata of fc: %v, %v; want fc described by a", md, err)
	}
	svc.Close()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.shadowed) == 0 {
		t.Fatal("no shadowed call reached the observer")
	}
	for _, o := range rec.shadowed {
		pa, ok1 := o.PrimaryAnswer.(*inference.ModelInferResponse)
		sa, ok2 := o.Answer.(*inference.ModelInferResponse)
		if !ok1 || !ok2 || o.Err != nil || o.Shadow != "c" || o.Route != "models.fc" || len(sa.GetOutputs()) != 2 || pa.GetModelName() != "fc" {
			t.Fatalf("outcome %s -> %s: err %v, primary %T, shadow %T", o.Primary, o.Shadow, o.Err, o.PrimaryAnswer, o.Answer)
		}
	}
}

// TestCallersFaultIsNotTheArms: a routed call that fails by its caller's doing (bad input, or a
// context the caller ended) is not reported against the arm that had it; a target's own failure
// is.
func TestCallersFaultIsNotTheArms(t *testing.T) {
	_, raw := bandwidthSpec(t)
	slow, broken := horizonModel(t, "slow", blockingBackend{}, 10), horizonModel(t, "broken", failingBackend{}, 10)
	rec := &routeRecorder{}
	svc := newRouted(t, Config{Routing: rec, Routes: Routes{RouteBandwidth: {Target: "slow"}}}, slow, broken)
	if _, err := svc.PredictBandwidth(context.Background(), &aipb.BandwidthRequest{VmId: "vm-1", HistoricalMetrics: raw[:5]}); Code(err) != codes.InvalidArgument {
		t.Fatalf("bad input: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := svc.PredictBandwidth(ctx, &aipb.BandwidthRequest{VmId: "vm-1", HistoricalMetrics: raw}); Code(err) != codes.Canceled {
		t.Fatalf("a cancelled call: %v", err)
	}
	if err := svc.SetRoute(RouteBandwidth, Route{Target: "broken"}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.PredictBandwidth(context.Background(), &aipb.BandwidthRequest{VmId: "vm-2", HistoricalMetrics: raw}); Code(err) != codes.Unavailable {
		t.Fatalf("a failing target: %v", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.served["slow"] != 0 || rec.served["broken"] != 1 {
		t.Errorf("the observer saw %v; want slow's two calls (the caller's faults) unseen and broken's failure seen", rec.served)
	}
}
