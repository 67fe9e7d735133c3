package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/novacron/sidecar/features"
	"github.com/novacron/sidecar/features/drift"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// Traffic's shape.
const (
	vms = 256
	// callTimeout bounds one data-plane call.
	callTimeout = 5 * time.Second
	// keptErrors is how many failed calls are kept, to print.
	keptErrors = 5
)

// sampler draws raw VM metrics like the training data's, feature by feature: a feature's
// canonical value is drawn from the reference profile's quantile function (linear between its
// 100 quantiles, at 0.5%, 1.5%, ..., 99.5%; below the first and above the last it continues
// the slope of the nearest interval, within the reference's min and max), then mapped back
// through the spec's normalization to the metric's own units. Each feature's distribution is then the one the
// profile was built from, up to the profile's resolution; the features are drawn independently
// (the training data's correlations, CPU with network say, are not reproduced: drift is scored
// feature by feature). Plain data; its methods may be called concurrently.
type sampler struct {
	feats []invFeature
}

// invFeature is one feature's quantile function and its way back to raw units.
type invFeature struct {
	f              features.Feature
	levels, values []float64 // the quantile function's knots, ascending
	std            float64   // the reference's standard deviation, canonical
}

// newSampler makes the sampler of profile p, whose features spec canonicalizes.
func newSampler(spec *features.Spec, p *drift.Profile) (*sampler, error) {
	if p.Fingerprint != spec.Fingerprint() || len(p.Features) != len(spec.Features) {
		return nil, fmt.Errorf("the profile is of spec %s %.12s, the spec file is %s %.12s: pass the spec the sidecar serves (-spec)",
			p.Spec, p.Fingerprint, spec.Name, spec.Fingerprint())
	}
	s := &sampler{}
	for j, r := range p.Features {
		f := spec.Features[j]
		if f.Type == features.TypeBool {
			return nil, fmt.Errorf("feature %s is a bool: the demo draws numeric features only", f.Name)
		}
		if _, err := setMetric(&aipb.VMMetrics{}, f.Source, 0); err != nil {
			return nil, err
		}
		q, n := r.Quantiles, len(r.Quantiles)
		if n < 2 {
			return nil, fmt.Errorf("feature %s: the profile has %d quantiles", f.Name, n)
		}
		// The tails: half an interval beyond the extreme quantiles, at the slope of the last
		// interval. (Extending to the min and max instead gives the top 0.5% of a heavy-tailed
		// feature, latency say, a flat density up to its largest outlier: a tail far heavier
		// than the training data's, whose noise then dominates the Wasserstein column.)
		inv := invFeature{f: f, std: r.Std, levels: make([]float64, 0, n+2), values: make([]float64, 0, n+2)}
		inv.levels, inv.values = append(inv.levels, 0), append(inv.values, max(r.Min, q[0]-(q[1]-q[0])/2))
		for i, v := range q {
			inv.levels, inv.values = append(inv.levels, (float64(i)+0.5)/float64(n)), append(inv.values, v)
		}
		inv.levels, inv.values = append(inv.levels, 1), append(inv.values, min(r.Max, q[n-1]+(q[n-1]-q[n-2])/2))
		s.feats = append(s.feats, inv)
	}
	return s, nil
}

// index returns the index of the feature named name.
func (s *sampler) index(name string) (int, bool) {
	for j, f := range s.feats {
		if f.f.Name == name {
			return j, true
		}
	}
	return 0, false
}

// draw returns one VM's metrics; with shifted, feature shift's canonical value is moved by by
// reference standard deviations (then clipped to the spec's bounds, in the metric's units).
func (s *sampler) draw(rng *rand.Rand, shifted bool, shift int, by float64) *aipb.VMMetrics {
	m := &aipb.VMMetrics{}
	for j, inv := range s.feats {
		c := interp(inv.levels, inv.values, rng.Float64())
		if shifted && j == shift {
			c += by * inv.std
		}
		setMetric(m, inv.f.Source, raw(inv.f, c))
	}
	return m
}

// interp is the piecewise linear function through (xs[i], ys[i]) at x in [xs[0], xs[len-1]].
func interp(xs, ys []float64, x float64) float64 {
	i := 1
	for i < len(xs)-1 && xs[i] < x {
		i++
	}
	t := (x - xs[i-1]) / (xs[i] - xs[i-1])
	return ys[i-1] + t*(ys[i]-ys[i-1])
}

// raw inverts the spec's canonicalization of a present value: canonical c back to the source's
// units, within the clip bounds (what features.Spec.Canonicalize maps to c again).
func raw(f features.Feature, c float64) float64 {
	v := c
	switch f.Normalize.Method {
	case features.NormZScore:
		v = c*f.Normalize.Std + f.Normalize.Mean
	case features.NormMinMax:
		v = c*(f.Normalize.Max-f.Normalize.Min) + f.Normalize.Min
	}
	if f.Clip.Min != nil {
		v = max(v, *f.Clip.Min)
	}
	if f.Clip.Max != nil {
		v = min(v, *f.Clip.Max)
	}
	scale := f.Convert.Scale
	if scale == 0 {
		scale = 1
	}
	return (v - f.Convert.Offset) / scale
}

// setMetric sets m's field of the spec source name.
func setMetric(m *aipb.VMMetrics, source string, v float64) (*aipb.VMMetrics, error) {
	switch source {
	case "cpu":
		m.Cpu = v
	case "memory":
		m.Memory = v
	case "disk_io":
		m.DiskIo = v
	case "network_io":
		m.NetworkIo = v
	case "latency":
		m.Latency = v
	case "error_rate":
		m.ErrorRate = v
	default:
		return nil, fmt.Errorf("the spec's source %q is not a field of VMMetrics", source)
	}
	return m, nil
}

// Phases of the traffic.
const (
	before = iota // drawn like the training data
	after         // one feature shifted
)

// traffic drives DetectAnomaly calls at a bounded rate from a few goroutines, and checks each
// answer. Its counters may be read while it runs.
type traffic struct {
	// calls, failed and flagged (is_anomaly) count the answers of each phase.
	calls, failed, flagged [2]atomic.Int64
	// shifted is set once the shift starts; shiftedAt is then when.
	shifted   atomic.Bool
	shiftedAt time.Time
	stop      func() // ends the calls and waits for the goroutines; idempotent

	// mu guards errs.
	mu   sync.Mutex
	errs []string
}

// drive starts workers goroutines calling client at rate calls per second in all, each row drawn
// by s (feature shift moved by by standard deviations once t.startShift is called), until stop
// or ctx's end.
func drive(ctx context.Context, client aipb.AIServiceClient, s *sampler, shift int, by float64, rate, workers int, seed uint64) *traffic {
	t := &traffic{}
	stop := make(chan struct{})
	tick := time.NewTicker(time.Second / time.Duration(rate))
	var wg sync.WaitGroup
	for w := range workers {
		rng := rand.New(rand.NewPCG(seed, uint64(w)))
		wg.Go(func() {
			for i := w; ; i += workers {
				select {
				case <-stop:
					return
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				shifted := t.shifted.Load()
				t.call(ctx, client, i%vms, s.draw(rng, shifted, shift, by), shifted)
			}
		})
	}
	var once sync.Once
	t.stop = func() {
		once.Do(func() {
			close(stop)
			wg.Wait()
			tick.Stop()
		})
	}
	return t
}

// startShift shifts the rows drawn from now on. Only the demo's goroutine calls it, once.
func (t *traffic) startShift() {
	t.shiftedAt = time.Now()
	t.shifted.Store(true)
}

// call makes one call and checks its answer: a score in [0, 1] and a model_version.
func (t *traffic) call(ctx context.Context, client aipb.AIServiceClient, vm int, m *aipb.VMMetrics, shifted bool) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := client.DetectAnomaly(cctx, &aipb.AnomalyRequest{VmId: fmt.Sprintf("vm-%03d", vm), CurrentMetrics: m})
	if ctx.Err() != nil {
		return // the demo is ending: the call does not count
	}
	ph := before
	if shifted {
		ph = after
	}
	t.calls[ph].Add(1)
	if err == nil {
		switch {
		case !(resp.Score >= 0 && resp.Score <= 1) || math.IsNaN(resp.Score):
			err = fmt.Errorf("score %v is not in [0, 1]", resp.Score)
		case resp.ModelVersion == "":
			err = fmt.Errorf("no model_version")
		}
	}
	if err != nil {
		t.failed[ph].Add(1)
		t.mu.Lock()
		if len(t.errs) < keptErrors {
			t.errs = append(t.errs, fmt.Sprintf("vm-%03d: %v", vm, err))
		}
		t.mu.Unlock()
		return
	}
	if resp.IsAnomaly {
		t.flagged[ph].Add(1)
	}
}

// errors returns the first failures kept.
func (t *traffic) errors() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.errs...)
}
