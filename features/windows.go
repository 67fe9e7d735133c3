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
	// Step is the time between a sequence's steps; a sample more than half a step away from a
	// step's time leaves that step missing (the spec's policy fills or refuses it). Zero: 1m.
	Step time.Duration
	// MaxAge refuses a window whose newest step is older than this at read time. Zero: 2 x Step.
	MaxAge time.Duration
}

const windowShards = 64

// Windows keeps, per VM, the last Window steps of raw metrics a sequence spec needs, pushed as the
// agents collect them. It is a sharded map, not a cache: a write is never dropped; a new VM beyond
// MaxVMs is refused unless an idle one can be expired. Reads build the window on the step grid
// ending at the newest sample and canonicalize it with the spec, exactly as the offline transform
// does. Methods may be called concurrently.
type Windows struct {
	spec   *Spec
	cfg    WindowConfig
	seed   maphash.Seed
	count  atomic.Int64 // VMs tracked, across shards: the MaxVMs bound
	shards [windowShards]windowShard
}

type windowShard struct {
	// mu guards vms and every vmWindow in it.
	mu  sync.Mutex
	vms map[string]*vmWindow
}

// vmWindow is a ring of the last Window samples of one VM.
type vmWindow struct {
	at   []int64   // sample times, unix ns; 0: empty slot
	raw  []float64 // Window x Width values, slot-major
	head int       // the next slot to write
	last int64     // newest sample time
	seen int64     // last push, unix ns (wall clock of the store)
}

// NewWindows makes a store for a sequence spec.
func NewWindows(spec *Spec, cfg WindowConfig) (*Windows, error) {
	if !spec.Sequence() {
		return nil, fmt.Errorf("windows: spec %q is not a sequence spec (window %d)", spec.Name, spec.Window)
	}
	if spec.Input != InputVMMetrics {
		return nil, fmt.Errorf("windows: spec %q reads %s, not vm_metrics", spec.Name, spec.Input)
	}
	if cfg.MaxVMs == 0 {
		cfg.MaxVMs = 100000
	}
	if cfg.IdleExpiry == 0 {
		cfg.IdleExpiry = 30 * time.Minute
	}
	if cfg.Step == 0 {
		cfg.Step = time.Minute
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = 2 * cfg.Step
	}
	if cfg.MaxVMs < 1 || cfg.IdleExpiry < 0 || cfg.Step < 0 || cfg.MaxAge < 0 {
		return nil, fmt.Errorf("windows: bad config %+v", cfg)
	}
	w := &Windows{spec: spec, cfg: cfg, seed: maphash.MakeSeed()}
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
// A sample at the time of the newest replaces it; an older one, or one more than a step ahead of
// now, is refused.
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
	vw, ok := sh.vms[vm]
	if !ok {
		if w.count.Load() >= int64(w.cfg.MaxVMs) {
			return fmt.Errorf("vm %q: %w: %d tracked, none idle for %v (windows max_vms)", vm, ErrTooManyVMs, w.cfg.MaxVMs, w.cfg.IdleExpiry)
		}
		n := w.spec.Window
		vw = &vmWindow{at: make([]int64, n), raw: make([]float64, n*w.spec.Width())}
		sh.vms[vm] = vw
		w.count.Add(1)
	}
	slot := vw.head
	switch {
	case vw.last == 0 || t > vw.last:
		vw.head = (vw.head + 1) % len(vw.at)
	case t == vw.last:
		slot = (vw.head + len(vw.at) - 1) % len(vw.at) // replace the newest
	default:
		return &FieldError{Field: "timestamp", Reason: fmt.Sprintf("vm %q: %s is older than its newest sample %s; samples arrive in time order",
			vm, at.UTC().Format(time.RFC3339Nano), time.Unix(0, vw.last).UTC().Format(time.RFC3339Nano))}
	}
	vw.seen = now.UnixNano() // only an accepted sample keeps a VM from idling out
	vw.at[slot] = t
	vw.last = max(vw.last, t)
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

// Raw returns a VM's window at read time now, in the layout of Canonicalize: the Window steps of
// the step grid ending at its newest sample, oldest first, NaN where no sample falls within half a
// step of a step's time (the spec's missing-value policy then fills or refuses it). It refuses, with
// ErrNotReady naming the VM and the age, a window whose newest sample is older than MaxAge, and a VM
// it holds nothing of.
func (w *Windows) Raw(dst []float64, vm string, now time.Time) error {
	sh := w.shard(vm)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	vw, ok := sh.vms[vm]
	if !ok || vw.last == 0 {
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
	n, width := w.spec.Window, w.spec.Width()
	step, half := w.cfg.Step.Nanoseconds(), w.cfg.Step.Nanoseconds()/2
	for i := range dst {
		dst[i] = math.NaN()
	}
	// Oldest slot first, so that of two samples on one step the newer wins.
	for i := range vw.at {
		slot := (vw.head + i) % len(vw.at)
		t := vw.at[slot]
		if t == 0 {
			continue
		}
		// Which step of the grid (0 oldest .. n-1 newest) this sample stands for.
		back := (vw.last - t + half) / step
		if back < 0 || back >= int64(n) || abs(vw.last-back*step-t) > half {
			continue
		}
		k := n - 1 - int(back)
		copy(dst[k*width:(k+1)*width], vw.raw[slot*width:(slot+1)*width])
	}
	return nil
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
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
