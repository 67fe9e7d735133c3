package main

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// Traffic's shape: distinct VMs (a split is sticky by vm_id, so a 10% split needs many), each with
// its own window, and the forecast length the example ONNX model has.
const (
	vms     = 256
	steps   = 10 // the bandwidth spec's window
	horizon = 10
	// callTimeout bounds one data-plane call.
	callTimeout = 5 * time.Second
	// keptErrors is how many failed calls are kept, to print.
	keptErrors = 5
)

// window is VM vm's metric window: steps x (cpu, memory, disk_io, network_io, latency,
// error_rate), oldest first, in the spec's units and ranges, which both the heuristic and the
// ONNX model take.
func window(vm int) []float64 {
	w := make([]float64, 0, steps*6)
	phase, level := float64(vm%17)/3, 150+float64(vm%40)*10
	for s := range steps {
		x := float64(s)/3 + phase
		w = append(w, 40+20*math.Sin(x), 55+float64(vm%9), 20+float64(vm%13), level+80*math.Sin(x), 5+float64(vm%7), 0.001)
	}
	return w
}

// traffic drives PredictBandwidth calls at a bounded rate from a few goroutines, and checks each
// answer. Its counters may be read while it runs.
type traffic struct {
	calls, failed atomic.Int64
	stop          func() // ends the calls and waits for the goroutines

	// mu guards errs and versions.
	mu       sync.Mutex
	errs     []string
	versions map[string]int64 // answers by model_version
}

// drive starts workers goroutines calling client at rate calls per second in all, until stop
// or ctx's end. stop lets the calls in flight finish: a cancelled call would count as a failure
// of the arm that served it, in the migration's report.
func drive(ctx context.Context, client aipb.AIServiceClient, rate, workers int) *traffic {
	t := &traffic{versions: map[string]int64{}}
	stop := make(chan struct{})
	tick := time.NewTicker(time.Second / time.Duration(rate))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; ; i += workers {
				select {
				case <-stop:
					return
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				t.call(ctx, client, i%vms)
			}
		})
	}
	t.stop = func() {
		close(stop)
		wg.Wait()
		tick.Stop()
	}
	return t
}

// call makes one call and checks its answer: horizon finite predictions, a confidence in [0, 1],
// a model_version.
func (t *traffic) call(ctx context.Context, client aipb.AIServiceClient, vm int) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := client.PredictBandwidth(cctx, &aipb.BandwidthRequest{VmId: fmt.Sprintf("vm-%03d", vm), HistoricalMetrics: window(vm), HorizonMinutes: horizon})
	if ctx.Err() != nil {
		return // the demo is ending: the call does not count
	}
	t.calls.Add(1)
	if err == nil {
		err = check(resp)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		t.failed.Add(1)
		if len(t.errs) < keptErrors {
			t.errs = append(t.errs, fmt.Sprintf("vm-%03d: %v", vm, err))
		}
		return
	}
	t.versions[resp.ModelVersion]++
}

func check(r *aipb.BandwidthResponse) error {
	if len(r.Predictions) != horizon {
		return fmt.Errorf("%d predictions, want %d", len(r.Predictions), horizon)
	}
	for i, v := range r.Predictions {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("predictions[%d] is %v", i, v)
		}
	}
	if !(r.Confidence >= 0 && r.Confidence <= 1) {
		return fmt.Errorf("confidence %v is not in [0, 1]", r.Confidence)
	}
	if r.ModelVersion == "" {
		return fmt.Errorf("no model_version")
	}
	return nil
}

// answeredBy lists the answers by model_version, most first: "legacy-heuristic-1 5000, ...".
func (t *traffic) answeredBy() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var vs []string
	for v := range t.versions {
		vs = append(vs, v)
	}
	sort.Slice(vs, func(i, j int) bool { return t.versions[vs[i]] > t.versions[vs[j]] })
	for i, v := range vs {
		vs[i] = fmt.Sprintf("%s %d", v, t.versions[v])
	}
	if len(vs) == 0 {
		return "none"
	}
	return strings.Join(vs, ", ")
}
