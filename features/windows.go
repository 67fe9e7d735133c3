package features

import (
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNotReady wraps the errors of a window that cannot be served: too few steps, or too old. Front
// ends map it to FAILED_PRECONDITION.
var ErrNotReady = errors.New("window not ready")

// ErrTooManyVMs: the store holds its maximum of VMs, none idle; a new VM is refused, never an old
// one's state dropped.
var ErrTooManyVMs = errors.New("too many VMs")

// WindowConfig bounds a window store. Zero values are documented per field.
type WindowConfig struct {
	// MaxVMs bounds the VMs tracked. Zero: 100000.
	MaxVMs int
	// IdleExpiry drops a VM that has pushed nothing for this long, when room is needed. Zero: 30m.
	IdleExpiry time.Duration
	// Step is the time between a sequence's steps. Each VM's steps are centred on its first
	// sample's time plus whole steps, and each covers half a step either side of its centre
	// ([centre-Step/2, centre+Step/2)); a step holds the latest sample taken in it. Zero: 1m.
	Step time.Duration
	// MaxAge refuses a window whose newest sample is older than this at read time. Zero: 2 x Step.
	MaxAge time.Duration
}

const windowShards = 64

// Windows keeps, per VM, the last Window steps of raw metrics a sequence spec needs, pushed as the
// agents collect them. Samples are kept by time, not by count: a VM's steps form a grid anchored
// at its first sample (step k is centred on first + k*Step and covers half a step either side),
// and each step holds the latest sample taken in it; a newer sample in the same step replaces the
// older one. So an agent may push at any rate from every few seconds to once a step, its window
// covers Window steps of time, and a VM costs the same memory at any rate. An agent that pushes
// once a step keeps one sample per step under any jitter below half a step, at any phase. A gap of
// a whole window or more (nothing kept can be read again) starts the VM's grid again at the sample
// after it.
//
// It is a sharded map, not a cache: a write is never dropped; a new VM beyond MaxVMs is refused
// unless an idle one can be expired. Reads build the window on the step grid ending at the newest
// sample's step and canonicalize it with the spec, exactly as the offline transform does. Methods
// may be called concurrently.
type Windows struct {
	spec *Spec
	cfg  WindowConfig
	// previous and required name the first feature whose missing-value policy cannot fill the
	// window's first step (policy previous), or any step (policy error); "" if none.
	previous, required string
	seed               maphash.Seed
	count              atomic.Int64 // VMs tracked, across shards: the MaxVMs bound
	shards             [windowShards]windowShard
}

type windowShard struct {
	// mu guards vms and every vmWindow in it.
	mu  sync.Mutex
	vms map[string]*vmWindow
}

// vmWindow is a ring of the last Window steps of one VM: step k lives in slot k mod Window.
type vmWindow struct {
	steps  []int64   // the step each slot holds; -1: none (steps are never negative)
	raw    []float64 // Window x Width values, slot-major
	origin int64     // the first sample's time, unix ns: the centre of step 0
	last   int64     // newest sample time, unix ns
	seen   int64     // last accepted push, unix ns (wall clock of the store)
}

// stepLocked is the step of the grid of vw that holds a sample at t (unix ns); it may be negative.
func (w *Windows) stepLocked(vw *vmWindow, t int64) int64 {
	step := w.cfg.Step.Nanoseconds()
	d := t - vw.origin + step/2
	k := d / step
	if d < 0 && d%step != 0 {
		k-- // floor, not truncation
	}
	return k
}

// The defaults of a WindowConfig's zero fields (MaxAge's is two steps).
const (
	DefaultMaxVMs     = 100000
	DefaultIdleExpiry = 30 * time.Minute
	DefaultStep       = time.Minute
)

// NewWindows makes a store for a sequence spec.
func NewWindows(spec *Spec, cfg WindowConfig) (*Windows, error) {
	if !spec.Sequence() {
		return nil, fmt.Errorf("windows: spec %q is not a sequence spec (window %d)", spec.Name, spec.Window)
	}
	if spec.Input != InputVMMetrics {
		return nil, fmt.Errorf("windows: spec %q reads %s, not vm_metrics", spec.Name, spec.Input)
	}
	if cfg.MaxVMs == 0 {
		cfg.MaxVMs = DefaultMaxVMs
	}
	if cfg.IdleExpiry == 0 {
		cfg.IdleExpiry = DefaultIdleExpiry
	}
	if cfg.Step == 0 {
		cfg.Step = DefaultStep
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = 2 * cfg.Step
	}
	if cfg.MaxVMs < 1 || cfg.IdleExpiry < 0 || cfg.Step < 0 || cfg.MaxAge < 0 {
		return nil, fmt.Errorf("windows: bad config %+v", cfg)
	}
	w := &Windows{spec: spec, cfg: cfg, seed: maphash.MakeSeed()}
	for _, f := range spec.Features {
		switch {
		case f.Missing.Policy == MissingPrevious && w.previous == "":
			w.previous = f.Name
		case f.Missing.Policy == MissingError && w.required == "":
			w.required = f.Name
		}
	}
	for i := range w.shards {
		w.shards[i].vms = map[string]*vmWindow{}
	}
	return w, nil
}

func (w *Windows) shard(vm string) *windowShard {
	return &w.shards[maphash.String(w.seed, vm)%windowShards]
}

// Push stores one sample of a VM's metrics, in VMMetrics field order (cpu, memory, disk_io,
// network_io, latency, error_rate), taken at time at; now is the store's clock, for idle expiry.
//
// Samples arrive in time order, step by step. A sample in a later step than the VM's newest one
// starts that step. One in the newest step replaces the newest sample when it is not earlier than
// it (the latest sample per step is kept); one in the newest step but earlier than the newest
// sample is ignored and Push returns nil, so that the window is the same whatever order the
// samples of one step arrive in and an agent re-sending its latest sample is not refused. A sample
// of an earlier step than the newest one's is refused (a *FieldError): that step may already have
// been read. A sample older than IdleExpiry before now, or more than a step ahead of now, is
// refused too.
func (w *Windows) Push(vm string, at time.Time, metrics [6]float64, now time.Time) error {
	if vm == "" {
		return &FieldError{Field: "vm_id", Reason: "required"}
	}
	for i, v := range metrics {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return &FieldError{Field: "metrics." + vmMetricsFields[i], Reason: fmt.Sprintf("%v is not a finite number", v)}
		}
	}
	if at.Before(now.Add(-w.cfg.IdleExpiry)) {
		return &FieldError{Field: "timestamp", Reason: fmt.Sprintf("vm %q: %s is older than the idle expiry (%v) before the sidecar's clock %s",
			vm, at.UTC().Format(time.RFC3339Nano), w.cfg.IdleExpiry, now.UTC().Format(time.RFC3339Nano))}
	}
	if at.After(now.Add(w.cfg.Step)) {
		// A clock far ahead would make every later sample "older than the newest".
		return &FieldError{Field: "timestamp", Reason: fmt.Sprintf("vm %q: %s is more than a step (%v) ahead of the sidecar's clock %s",
			vm, at.UTC().Format(time.RFC3339Nano), w.cfg.Step, now.UTC().Format(time.RFC3339Nano))}
	}
	t := at.UnixNano()
	for attempt := 0; ; attempt++ {
		err := w.push(vm, t, at, metrics, now)
		if !errors.Is(err, ErrTooManyVMs) || attempt > 0 {
			return err
		}
		w.expireAll(now) // idle VMs in any shard make room; then try once more
	}
}

func (w *Windows) push(vm string, t int64, at time.Time, metrics [6]float64, now time.Time) error {
	sh := w.shard(vm)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	n := int64(w.spec.Window)
	vw, ok := sh.vms[vm]
	if !ok {
		if w.count.Load() >= int64(w.cfg.MaxVMs) {
			return fmt.Errorf("vm %q: %w: %d tracked, none idle for %v (windows max_vms)", vm, ErrTooManyVMs, w.cfg.MaxVMs, w.cfg.IdleExpiry)
		}
		vw = &vmWindow{steps: make([]int64, n), raw: make([]float64, n*int64(w.spec.Width())), origin: t, last: t}
		for i := range vw.steps {
			vw.steps[i] = -1
		}
		sh.vms[vm] = vw
		w.count.Add(1)
	}
	k, newest := w.stepLocked(vw, t), w.stepLocked(vw, vw.last)
	switch {
	case k >= newest+n:
		// Nothing kept is in any window from here on: start the grid again at this sample, so
		// that an agent that comes back at another phase keeps one sample per step.
		vw.origin, k = t, 0
		for i := range vw.steps {
			vw.steps[i] = -1
		}
	case k > newest, k == newest && t >= vw.last:
	case k == newest:
		vw.seen = now.UnixNano() // earlier than the newest sample of its step: ignored
		return nil
	default:
		return &FieldError{Field: "timestamp", Reason: fmt.Sprintf("vm %q: %s is older than the step of its newest sample %s (steps of %v); samples arrive in time order",
			vm, at.UTC().Format(time.RFC3339Nano), time.Unix(0, vw.last).UTC().Format(time.RFC3339Nano), w.cfg.Step)}
	}
	vw.seen = now.UnixNano() // only an accepted sample keeps a VM from idling out
	vw.last = t
	slot := int(k % n)
	vw.steps[slot] = k
	width := w.spec.Width()
	for j, f := range w.spec.Features {
		vw.raw[slot*width+j] = metrics[VMMetricsField(f.Source)]
	}
	return nil
}

// expireAll drops the VMs idle longer than IdleExpiry, one shard at a time.
func (w *Windows) expireAll(now time.Time) {
	cut := now.Add(-w.cfg.IdleExpiry).UnixNano()
	for i := range w.shards {
		sh := &w.shards[i]
		sh.mu.Lock()
		for vm, vw := range sh.vms {
			if vw.seen < cut {
				delete(sh.vms, vm)
				w.count.Add(-1)
			}
		}
		sh.mu.Unlock()
	}
}

// LastStep is the centre of the step of vm's newest sample on its grid: the time a forecast from
// its window is made at (its step i forecasts the step LastStep + (i+1) x Step). False when the
// VM has no window.
func (w *Windows) LastStep(vm string) (time.Time, bool) {
	sh := w.shard(vm)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	vw, ok := sh.vms[vm]
	if !ok {
		return time.Time{}, false
	}
	return time.Unix(0, vw.origin+w.stepLocked(vw, vw.last)*w.cfg.Step.Nanoseconds()), true
}

// Raw returns a VM's window at read time now, in the layout of Canonicalize: the Window steps of
// its step grid ending at the step of its newest sample, oldest first, each the latest sample taken
// in that step, NaN for a step with no sample (a gap), left to the spec's missing-value policy.
// It refuses, with ErrNotReady naming the VM and the cause, a VM it holds nothing of, a window
// whose newest sample is older than MaxAge (or a feature's max_age), and a window with a gap the
// policy cannot fill: the first step empty under policy previous (a VM pushing for less than a
// window, or after a gap), or any step empty under policy error. That error says how many of the
// steps have a sample and for how many more steps the VM must push.
func (w *Windows) Raw(dst []float64, vm string, now time.Time) error {
	sh := w.shard(vm)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	vw, ok := sh.vms[vm]
	if !ok {
		return fmt.Errorf("vm %q: no metrics pushed (PushMetrics or POST /api/v1/metrics), or expired after %v idle: %w", vm, w.cfg.IdleExpiry, ErrNotReady)
	}
	age := now.Sub(time.Unix(0, vw.last))
	if age > w.cfg.MaxAge {
		return fmt.Errorf("vm %q: newest metrics are %v old, max age %v: %w", vm, age.Round(time.Millisecond), w.cfg.MaxAge, ErrNotReady)
	}
	for _, f := range w.spec.Features {
		if f.MaxAge > 0 && age > f.MaxAge {
			return fmt.Errorf("vm %q: newest metrics are %v old, feature %s has max_age %v: %w", vm, age.Round(time.Millisecond), f.Name, f.MaxAge, ErrNotReady)
		}
	}
	n, width := int64(w.spec.Window), w.spec.Width()
	first := w.stepLocked(vw, vw.last) - n + 1 // the window's first step
	have, firstHeld, lastGap := 0, int64(-1), int64(-1)
	for i := int64(0); i < n; i++ {
		k, out := first+i, dst[i*int64(width):(i+1)*int64(width)]
		if slot := k % n; k >= 0 && vw.steps[slot] == k {
			copy(out, vw.raw[slot*int64(width):(slot+1)*int64(width)])
			have++
			if firstHeld < 0 {
				firstHeld = i
			}
			continue
		}
		for j := range out {
			out[j] = math.NaN()
		}
		lastGap = i
	}
	if lastGap < 0 || (w.previous == "" || firstHeld == 0) && w.required == "" {
		return nil // no gap, or one the policy fills
	}
	return w.notReadyLocked(vm, vw, first, have, firstHeld, lastGap)
}

// notReadyLocked explains why the window of vm, whose first step is first, cannot be served (its
// steps first+firstHeld and first+lastGap are the first with a sample and the last without one):
// how many steps have a sample, what is missing, and how long to push for.
func (w *Windows) notReadyLocked(vm string, vw *vmWindow, first int64, have int, firstHeld, lastGap int64) error {
	n, step := int64(w.spec.Window), w.cfg.Step
	centre := func(i int64) string {
		return time.Unix(0, vw.origin).Add(time.Duration(first+i) * step).UTC().Format(time.RFC3339Nano)
	}
	var wait int64 // steps until the window slides past what the policy refuses
	var cause string
	switch {
	case first < 0 && (w.required == "" || lastGap < firstHeld):
		// Warming up: the VM's first sample is inside the window, and no later gap is refused.
		wait = firstHeld
		cause = "the first sample is at " + time.Unix(0, vw.origin).UTC().Format(time.RFC3339Nano)
	case w.previous != "" && firstHeld > 0 && (w.required == "" || lastGap < firstHeld):
		wait = firstHeld
		cause = fmt.Sprintf("the window's first step, at %s, has none, and feature %s's missing policy previous has nothing to carry into it",
			centre(0), w.previous)
	default:
		wait = lastGap + 1
		cause = fmt.Sprintf("the step at %s has none, and feature %s's missing policy error refuses a step with no sample", centre(lastGap), w.required)
		if first < 0 {
			cause = "the first sample is at " + time.Unix(0, vw.origin).UTC().Format(time.RFC3339Nano) + "; " + cause
		}
	}
	steps := "steps"
	if wait == 1 {
		steps = "step"
	}
	return fmt.Errorf("vm %q: %d of the last %d steps (%v each) have a sample; %s: push for %d more %s (%v): %w",
		vm, have, n, step, cause, wait, steps, time.Duration(wait)*step, ErrNotReady)
}

// Len is the number of VMs tracked.
func (w *Windows) Len() int {
	n := 0
	for i := range w.shards {
		w.shards[i].mu.Lock()
		n += len(w.shards[i].vms)
		w.shards[i].mu.Unlock()
	}
	return n
}
