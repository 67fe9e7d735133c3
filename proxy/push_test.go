package proxy

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/novacron/sidecar/backends/onnx"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// bandwidthService is a Service over the example bandwidth model in ONNX Runtime ($ONNXRUNTIME_LIB
// or the repository's cache), whose windows read the clock *now (unix ns).
func bandwidthService(t *testing.T, now *atomic.Int64) *Service {
	t.Helper()
	rt, err := onnx.Open("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	sp := spec(t, "bandwidth")
	sess, err := rt.LoadFile("bandwidth", "../examples/models/bandwidth.onnx", onnx.Config{Fingerprint: sp.Fingerprint()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	meta, err := sess.Metadata(context.Background(), "bandwidth")
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewModel("bandwidth", TaskForecast, sp, sess, meta, Thresholds{})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(Config{Routes: Routes{RouteBandwidth: {Target: "bandwidth"}}, Now: func() time.Time { return time.Unix(0, now.Load()) }}, []Target{m}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	return svc
}

// metricsAt are a VM's metrics for sample i: plausible values that change from sample to sample.
func metricsAt(i int) *aipb.VMMetrics {
	x := float64(i)
	return &aipb.VMMetrics{
		Cpu: 45 + 30*math.Sin(x/7), Memory: 55 + 10*math.Cos(x/11), DiskIo: 60 + 40*math.Sin(x/5),
		NetworkIo: 250 + 150*math.Sin(x/9) + float64(i%4)*12.5, Latency: 20 + 5*math.Cos(x/3), ErrorRate: 0.01 * float64(i%3),
	}
}

// TestPushedWindowForecast pushes one VM's metrics every 15 s and every 30 s (with jitter, one
// sample or a minute of samples per call, timestamped or "now") for 15 simulated minutes. A
// PredictBandwidth without historical_metrics is refused with FAILED_PRECONDITION, naming the steps
// that have a sample, until the VM has pushed for 9 steps; from then on its forecast equals, bit
// for bit, the forecast of the same values sent as historical_metrics: the latest sample of each of
// the last 10 one-minute steps.
func TestPushedWindowForecast(t *testing.T) {
	const step = time.Minute
	for _, c := range []struct {
		name     string
		every    time.Duration
		perCall  int  // samples per PushMetrics call
		nowStamp bool // odd samples of one-sample calls carry timestamp_ms 0: the clock's now
	}{
		{"every 15s", 15 * time.Second, 1, true},
		{"every 15s, a minute per call", 15 * time.Second, 4, false},
		{"every 30s", 30 * time.Second, 1, true},
		{"every 30s, a minute per call", 30 * time.Second, 2, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var clock atomic.Int64
			svc := bandwidthService(t, &clock)
			ctx := context.Background()
			t0 := time.Date(2026, 11, 28, 1, 0, 17, 0, time.UTC)
			jitter := []time.Duration{0, 3 * time.Second, -2 * time.Second, 1500 * time.Millisecond, -3 * time.Second}
			type pushed struct {
				at time.Time
				m  *aipb.VMMetrics
			}
			var all []pushed
			var pending []*aipb.MetricsSample
			stepOf := func(at time.Time) int64 { // the grid is centred on the first sample
				return int64((at.Sub(t0) + step/2) / step)
			}
			refused, served := 0, 0
			for i := 0; ; i++ {
				at := t0.Add(time.Duration(i)*c.every + jitter[i%len(jitter)]).Truncate(time.Millisecond)
				if at.Sub(t0) > 15*time.Minute {
					break
				}
				smp := &aipb.MetricsSample{VmId: "vm-7", TimestampMs: at.UnixMilli(), Metrics: metricsAt(i)}
				if c.nowStamp && i%2 == 1 {
					smp.TimestampMs = 0
				}
				all = append(all, pushed{at, smp.Metrics})
				if pending = append(pending, smp); len(pending) < c.perCall {
					continue
				}
				clock.Store(at.UnixNano())
				r, err := svc.PushMetrics(ctx, &aipb.PushMetricsRequest{Samples: pending})
				if err != nil || r.GetAccepted() != int64(len(pending)) {
					t.Fatalf("push %d at %v: %v, %v", i, at.Sub(t0), r, err)
				}
				pending = pending[:0]

				got, err := svc.PredictBandwidth(ctx, &aipb.BandwidthRequest{VmId: "vm-7"})
				newest := stepOf(at)
				if newest < 9 {
					want := fmt.Sprintf(`vm "vm-7": %d of the last 10 steps (1m0s each) have a sample; the first sample is at 2026-11-28T01:00:17Z: push for %d more step`, newest+1, 9-newest)
					if Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), want) {
						t.Fatalf("push %d at %v: %v, %v; want FAILED_PRECONDITION %q", i, at.Sub(t0), got, err, want)
					}
					refused++
					continue
				}
				if err != nil {
					t.Fatalf("push %d at %v (step %d): %v", i, at.Sub(t0), newest, err)
				}
				// The same window, sent: the latest sample of each of the steps newest-9..newest.
				var hist []float64
				for k := newest - 9; k <= newest; k++ {
					var latest *aipb.VMMetrics
					for _, p := range all {
						if stepOf(p.at) == k {
							latest = p.m
						}
					}
					if latest == nil {
						t.Fatalf("step %d has no sample", k)
					}
					hist = append(hist, latest.Cpu, latest.Memory, latest.DiskIo, latest.NetworkIo, latest.Latency, latest.ErrorRate)
				}
				want, err := svc.PredictBandwidth(ctx, &aipb.BandwidthRequest{VmId: "vm-7", HistoricalMetrics: hist})
				if err != nil {
					t.Fatal(err)
				}
				if len(got.Predictions) == 0 || fmt.Sprint(got.Predictions) != fmt.Sprint(want.Predictions) || got.Confidence != want.Confidence {
					t.Fatalf("push %d at %v: from the pushed window %v (confidence %v), from the sent window %v (confidence %v)",
						i, at.Sub(t0), got.Predictions, got.Confidence, want.Predictions, want.Confidence)
				}
				served++
			}
			// Served from 8m30s after the first sample on (step 9 starts then), within the 15 minutes.
			if refused == 0 || served < int((6*time.Minute)/c.every)/c.perCall {
				t.Errorf("refused %d, served %d forecasts", refused, served)
			}
		})
	}
}

// TestAccuracyJoin: a forecast served from a VM's pushed window is scored against the network_io
// pushed later for its horizon; the live accuracy equals the offline 1 - WAPE and MAE of the same
// forecast and truths. (A forecast from a window the caller sent is not tracked: it has no time.)
func TestAccuracyJoin(t *testing.T) {
	var now atomic.Int64
	t0 := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
	svc := bandwidthService(t, &now)
	ctx := context.Background()
	push := func(i int, truth float64) {
		at := t0.Add(time.Duration(i) * time.Minute)
		now.Store(at.UnixNano())
		m := metricsAt(i)
		if truth >= 0 {
			m.NetworkIo = truth
		}
		if _, err := svc.PushMetrics(ctx, &aipb.PushMetricsRequest{Samples: []*aipb.MetricsSample{{VmId: "vm-1", TimestampMs: at.UnixMilli(), Metrics: m}}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 {
		push(i, -1)
	}
	resp, err := svc.PredictBandwidth(ctx, &aipb.BandwidthRequest{VmId: "vm-1"})
	if err != nil {
		t.Fatal(err)
	}
	raw := make([]float64, 60)
	for i := range raw {
		raw[i] = 1
	}
	if _, err := svc.PredictBandwidth(ctx, &aipb.BandwidthRequest{VmId: "vm-1", HistoricalMetrics: raw}); err != nil {
		t.Fatal(err)
	}
	var absErr, absTruth float64
	for k, p := range resp.Predictions {
		truth := 200 + 10*float64(k)
		push(10+k, truth)
		absErr += math.Abs(truth - p)
		absTruth += math.Abs(truth)
	}
	r := svc.Accuracy()["bandwidth"].Report()
	n := float64(len(resp.Predictions))
	if r.Points != int64(n) || r.Forecasts != 1 || r.Evaluated != 1 {
		t.Fatalf("report %+v; want %v points of the one forecast from the pushed window", r, n)
	}
	if want := 1 - absErr/absTruth; math.Abs(r.Accuracy-want) > 1e-12 || math.Abs(r.MAE-absErr/n) > 1e-9 {
		t.Errorf("accuracy %v MAE %v; offline %v and %v", r.Accuracy, r.MAE, want, absErr/n)
	}
}
