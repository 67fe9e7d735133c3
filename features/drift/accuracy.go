package drift

import (
	"encoding/json"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/novacron/sidecar/features"
)

// The defaults of an AccuracyConfig's zero fields. Step's is features.DefaultStep and MaxVMs's
// features.DefaultMaxVMs, the window store's, so that forecasts, pushes and the tracker share one
// grid and one bound.
const (
	DefaultMaxPerVM       = 16
	DefaultAccuracyWindow = time.Hour
)

// MaxForecastSteps bounds the points kept of one forecast: later predictions are ignored. The
// example bandwidth model forecasts 10 steps.
const MaxForecastSteps = 64

// AccuracyConfig bounds an Accuracy tracker. It is plain data; zero values are documented per
// field and applied by NewAccuracy.
type AccuracyConfig struct {
	// Step is the grid step of forecasts and pushes: a forecast's point i is for Step*(i+1) after
	// its time. Zero: features.DefaultStep (1m), as the window store's.
	Step time.Duration
	// MaxPerVM bounds the forecasts kept per VM awaiting their truth; a new forecast beyond it
	// pushes out the one recorded first (counted as Dropped). Zero: DefaultMaxPerVM (16), room for
	// a forecast a step over a 10-step horizon with jitter.
	MaxPerVM int
	// MaxVMs bounds the VMs tracked (those with a forecast pending); beyond it a new VM's forecast
	// is not kept (counted as Dropped). Zero: features.DefaultMaxVMs (100000).
	MaxVMs int
	// Window is the rolling window the report is computed over, in whole steps of the tracker's
	// clock (rounded up; at most a week of steps). Zero: DefaultAccuracyWindow (1h).
	Window time.Duration
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
}

// withDefaults returns c with its zero fields set to their defaults.
func (c AccuracyConfig) withDefaults() AccuracyConfig {
	if c.Step == 0 {
		c.Step = features.DefaultStep
	}
	if c.MaxPerVM == 0 {
		c.MaxPerVM = DefaultMaxPerVM
	}
	if c.MaxVMs == 0 {
		c.MaxVMs = features.DefaultMaxVMs
	}
	if c.Window == 0 {
		c.Window = DefaultAccuracyWindow
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports the first bad field of c, its zero values taken as their defaults.
func (c AccuracyConfig) Validate() error {
	switch {
	case c.Step < 0:
		return fmt.Errorf("drift: accuracy: Step: %v is negative", c.Step)
	case c.MaxPerVM < 0:
		return fmt.Errorf("drift: accuracy: MaxPerVM: %d is negative", c.MaxPerVM)
	case c.MaxVMs < 0:
		return fmt.Errorf("drift: accuracy: MaxVMs: %d is negative", c.MaxVMs)
	case c.Window < 0:
		return fmt.Errorf("drift: accuracy: Window: %v is negative", c.Window)
	}
	d := c.withDefaults()
	return checkWindow("accuracy", d.Window, d.Step)
}

// AccuracyReport is the live accuracy of the forecasts over the rolling window, at the time of the
// report.
//
// A point (one prediction of one forecast) is in the window when its truth was recorded (Actual
// was called, by the tracker's clock) in the window: the last ceil(Window/Step) steps of the
// tracker's clock, counted from NewAccuracy, the current partial step included. A forecast is in
// Forecasts when it was recorded in the window, in Evaluated when its first point was evaluated in
// the window, and in Dropped when it was refused or pushed out in the window. So, at a steady
// rate, Evaluated/Forecasts is the share of forecasts evaluated, lagging the forecasts by the
// time of their first truth (a step); it may exceed 1 for a while when the rate of forecasts
// falls.
type AccuracyReport struct {
	// Accuracy is 1 − WAPE over the points in the window, WAPE = Σ|y − ŷ| / Σ|y| (y the
	// network_io pushed, ŷ the forecast, both Mbit/s): the metric the example bandwidth model was
	// trained and reported on (examples/training/train.py, "PBA accuracy"). NaN when no point was
	// evaluated; −Inf when every truth was 0 and some error was not (NaN if none was).
	Accuracy float64 `json:"accuracy"`
	// MAE is the mean |y − ŷ| over the points in the window, in the unit of the values (Mbit/s).
	// NaN when no point was evaluated.
	MAE float64 `json:"mae"`
	// Points is the number of points evaluated in the window.
	Points int64 `json:"points"`
	// Forecasts is the number of forecasts kept (those later pushed out included); Evaluated the
	// number with at least one point evaluated.
	Forecasts int64 `json:"forecasts"`
	Evaluated int64 `json:"evaluated"`
	// Dropped is the number of forecasts not kept: refused because MaxVMs VMs were tracked, or
	// pushed out by MaxPerVM before all their points were resolved.
	Dropped int64 `json:"dropped"`
}

// MarshalJSON writes Accuracy and MAE as null when they are not numbers (nothing scored; a
// labelled classifier's MAE), which JSON cannot carry.
func (r AccuracyReport) MarshalJSON() ([]byte, error) {
	type plain AccuracyReport
	return json.Marshal(struct {
		plain
		Accuracy *float64 `json:"accuracy"`
		MAE      *float64 `json:"mae"`
	}{plain(r), finiteOrNil(r.Accuracy), finiteOrNil(r.MAE)})
}

// UnmarshalJSON reads MarshalJSON's form: a null Accuracy or MAE is NaN.
func (r *AccuracyReport) UnmarshalJSON(b []byte) error {
	type plain AccuracyReport
	var v struct {
		plain
		Accuracy *float64 `json:"accuracy"`
		MAE      *float64 `json:"mae"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*r = AccuracyReport(v.plain)
	r.Accuracy, r.MAE = orNaN(v.Accuracy), orNaN(v.MAE)
	return nil
}

// AccuracySource is a live accuracy tracker of one model: a forecast model's Accuracy, or an
// anomaly or placement model's Labels.
type AccuracySource interface {
	Report() AccuracyReport
}

// Accuracy tracks the live accuracy of forecasts against the truth pushed later: it keeps each
// forecast until the truth for each of its points has arrived (or can no longer arrive) and sums
// the errors per step of a rolling window. Memory is bounded: at most MaxPerVM forecasts of
// MaxForecastSteps points for each of at most MaxVMs VMs, and O(Window/Step) sums. A VM's
// forecasts are freed when resolved, on its next Forecast or Actual; when MaxVMs are tracked and a
// new VM comes, a sweep of every shard (at most once a step) frees the others'. All methods may be
// called concurrently; Forecast and Actual take one of 16 shard locks, never a global one, and
// allocate only while a VM's slots grow (its first forecasts).
//
// The join. A forecast made at `at` has point i (from 0) for the target time at + (i+1)*Step and
// the step around it, [target − Step/2, target − Step/2 + Step): the step of features.Windows'
// grid (centred on the VM's first sample plus whole steps) when `at` is the centre of the
// window's last step (with the newest sample's own time instead, the grid shifts by its jitter
// and a truth near a step's edge scores the neighbouring point). Then the truth of a point is
// what Windows holds for that step, and what the offline transform labels it with: the latest
// sample taken in the step. So a truth at t in a point's step scores the point if no truth later
// than t in that step has (a later one replaces the earlier's contribution, an equal time too; an
// earlier one arriving after it is ignored, as Windows does); a truth at or after the end of a
// point's step makes it final (Windows refuses samples of an earlier step than its newest): it is
// never scored again. A forecast is resolved when all its
// points are final, or when its last point's step ended Window or more before the clock; then it
// is freed, and a VM with nothing pending is forgotten.
//
// Non-finite inputs are ignored and counted nowhere: a forecast with a NaN or ±Inf prediction
// (among its first MaxForecastSteps), and a NaN or ±Inf truth. The row pipeline's output checks
// are where a non-finite forecast is counted.
type Accuracy struct {
	rolling                // the window on the clock from NewAccuracy; the VMs tracked (MaxVMs)
	cfg     AccuracyConfig // defaults applied
	half    int64          // half of Step (rounded down), ns
	shards  [accuracyShards]accShard
}

type accShard struct {
	// mu guards vms, every accVM in it, and buckets.
	mu      sync.Mutex
	vms     map[string]*accVM
	buckets ring[accBucket] // the window's sums
	_       [64]byte        // keeps the next shard's lock off this one's cache line
}

// accBucket sums what happened in one step of the tracker's clock.
type accBucket struct {
	absErr, absY float64 // Σ|y − ŷ|, Σ|y| of the points scored in it
	points       int64
	forecasts    int64
	evaluated    int64
	dropped      int64
}

// accVM holds one VM's pending forecasts.
type accVM struct {
	fs []accForecast // fs[:n] pending, in the order recorded; fs[n:] spare, their points reused
	n  int
}

type accForecast struct {
	at        int64 // unix ns
	done      int   // points[:done] are final
	evaluated bool  // some point was scored
	points    []accPoint
}

type accPoint struct {
	pred   float64
	y      float64 // the truth scored, if bucket != noBucket
	t      int64   // its time, unix ns
	bucket int64   // the bucket holding its contribution; noBucket: not scored
}

// NewAccuracy makes a tracker; cfg's zero fields take their defaults.
func NewAccuracy(cfg AccuracyConfig) (*Accuracy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	a := &Accuracy{cfg: cfg, half: cfg.Step.Nanoseconds() / 2}
	a.init(cfg.Step, cfg.Window, cfg.Now())
	for i := range a.shards {
		sh := &a.shards[i]
		sh.vms = map[string]*accVM{}
		sh.buckets = newRing[accBucket](a.steps)
	}
	return a, nil
}

func (a *Accuracy) shard(vm string) *accShard {
	return &a.shards[a.shardOf(vm)]
}

// Forecast records a forecast for vm made at `at`, the time of the window's last step (the centre
// of that step on features.Windows' grid, for the join to be Windows' steps): predictions[i] is
// for at + (i+1)*Step. Only the first MaxForecastSteps predictions are kept; the slice is not
// retained. A forecast with a non-finite prediction, or none, is ignored.
func (a *Accuracy) Forecast(vm string, at time.Time, predictions []float64) {
	if len(predictions) > MaxForecastSteps {
		predictions = predictions[:MaxForecastSteps]
	}
	if len(predictions) == 0 {
		return
	}
	for _, p := range predictions {
		if math.IsNaN(p) || math.IsInf(p, 0) {
			return
		}
	}
	now := a.cfg.Now()
	b := a.bucketOf(now)
	sh := a.shard(vm)
	sh.mu.Lock()
	kept := a.forecastLocked(sh, vm, at.UnixNano(), predictions, now.UnixNano(), b)
	sh.mu.Unlock()
	if kept {
		return
	}
	swept := a.sweep(now, b) // without a shard lock: it takes each in turn
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if swept && a.forecastLocked(sh, vm, at.UnixNano(), predictions, now.UnixNano(), b) {
		return
	}
	if bk := sh.buckets.bucketLocked(b); bk != nil {
		bk.dropped++
	}
}

// forecastLocked keeps a forecast; false if vm is new and MaxVMs VMs are tracked (then the caller
// unlocks, sweeps for room and may call again).
func (a *Accuracy) forecastLocked(sh *accShard, vm string, at int64, predictions []float64, now, b int64) bool {
	v := sh.vms[vm]
	if v == nil {
		if !a.reserve(a.cfg.MaxVMs) {
			return false
		}
		v = &accVM{}
		sh.vms[vm] = v
	}
	a.expireLocked(v, now)
	bk := sh.buckets.bucketLocked(b)
	if v.n >= a.cfg.MaxPerVM {
		v.removeLocked(0) // unresolved: resolved ones were just freed
		if bk != nil {
			bk.dropped++
		}
	}
	if v.n == len(v.fs) {
		v.fs = append(v.fs, accForecast{points: make([]accPoint, 0, len(predictions))})
	}
	f := &v.fs[v.n]
	v.n++
	f.at, f.done, f.evaluated = at, 0, false
	f.points = f.points[:0]
	for _, p := range predictions {
		f.points = append(f.points, accPoint{pred: p, bucket: noBucket})
	}
	if bk != nil {
		bk.forecasts++
	}
	return true
}

// sweep frees, in every shard, the resolved forecasts and the VMs left with none, to make room for
// a new VM; at most once per step of the clock (b), so that a tracker full of live VMs does not
// walk them all on every refused forecast. It reports whether it swept. The caller holds no shard
// lock.
func (a *Accuracy) sweep(now time.Time, b int64) bool {
	if !a.claimSweep(b) {
		return false
	}
	t := now.UnixNano()
	for i := range a.shards {
		sh := &a.shards[i]
		sh.mu.Lock()
		for vm, v := range sh.vms {
			a.expireLocked(v, t)
			if v.n == 0 {
				delete(sh.vms, vm)
				a.count.Add(-1)
			}
		}
		sh.mu.Unlock()
	}
	return true
}

// expireLocked frees v's resolved forecasts: all points final, or the last point's step ended
// Window or more before now (unix ns).
func (a *Accuracy) expireLocked(v *accVM, now int64) {
	for i := 0; i < v.n; {
		f := &v.fs[i]
		end := f.at + int64(len(f.points))*a.step - a.half + a.step
		if f.done == len(f.points) || end <= now-a.window {
			v.removeLocked(i)
			continue
		}
		i++
	}
}

// removeLocked removes pending forecast i, keeping the order of the others; its slot becomes
// spare.
func (v *accVM) removeLocked(i int) {
	f := v.fs[i]
	copy(v.fs[i:v.n-1], v.fs[i+1:v.n])
	v.fs[v.n-1] = f
	v.n--
}

// Actual records a truth pushed for vm: its network_io at time t (the sample's time, as pushed).
// It scores every pending forecast point of vm whose step holds t (see Accuracy for the rule),
// and makes final those whose step ended at or before t. Call it with the samples
// features.Windows accepted, in the order pushed. A truth for a VM with nothing pending, or that
// falls in no pending point's step, changes nothing; a non-finite one is ignored.
func (a *Accuracy) Actual(vm string, t time.Time, networkIO float64) {
	if math.IsNaN(networkIO) || math.IsInf(networkIO, 0) {
		return
	}
	now := a.cfg.Now()
	b := a.bucketOf(now)
	ts := t.UnixNano()
	sh := a.shard(vm)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	v := sh.vms[vm]
	if v == nil {
		return
	}
	a.expireLocked(v, now.UnixNano()) // an expired forecast is never scored
	for i := 0; i < v.n; i++ {
		a.scoreLocked(sh, &v.fs[i], ts, networkIO, b)
	}
	a.expireLocked(v, now.UnixNano()) // and those made final now are freed
	if v.n == 0 {
		delete(sh.vms, vm)
		a.count.Add(-1)
	}
}

// scoreLocked applies a truth y at ts (unix ns), recorded in bucket b, to forecast f.
func (a *Accuracy) scoreLocked(sh *accShard, f *accForecast, ts int64, y float64, b int64) {
	for j := f.done; j < len(f.points); j++ {
		lo := f.at + int64(j+1)*a.step - a.half // the point's step: [lo, lo+step)
		if ts >= lo+a.step {
			f.done = j + 1 // its step is over: final
			continue
		}
		if ts < lo {
			return // before this point's step, so before every later one's
		}
		p := &f.points[j]
		if p.bucket != noBucket && ts < p.t {
			return // earlier than the truth scored for this step: ignored, as Windows does
		}
		bk := sh.buckets.bucketLocked(b)
		if bk == nil {
			return
		}
		if p.bucket != noBucket {
			if old := sh.buckets.heldLocked(p.bucket); old != nil {
				old.absErr -= math.Abs(p.y - p.pred)
				old.absY -= math.Abs(p.y)
				old.points--
			}
		}
		bk.absErr += math.Abs(y - p.pred)
		bk.absY += math.Abs(y)
		bk.points++
		p.y, p.t, p.bucket = y, ts, b
		if !f.evaluated {
			f.evaluated = true
			bk.evaluated++
		}
		return // steps do not overlap: no later point holds ts
	}
}

// Report sums the window at the tracker's clock. It takes each shard's lock in turn.
func (a *Accuracy) Report() AccuracyReport {
	b := a.bucketOf(a.cfg.Now())
	var absErr, absY float64
	var r AccuracyReport
	for i := range a.shards {
		sh := &a.shards[i]
		sh.mu.Lock()
		for bk := range sh.buckets.windowLocked(b) {
			absErr += bk.absErr
			absY += bk.absY
			r.Points += bk.points
			r.Forecasts += bk.forecasts
			r.Evaluated += bk.evaluated
			r.Dropped += bk.dropped
		}
		sh.mu.Unlock()
	}
	r.Accuracy, r.MAE = math.NaN(), math.NaN()
	if r.Points > 0 {
		r.Accuracy = 1 - absErr/absY
		r.MAE = absErr / float64(r.Points)
	}
	return r
}

// Len is the number of VMs tracked: those with a forecast pending, or not yet freed.
func (a *Accuracy) Len() int {
	return int(a.count.Load())
}
