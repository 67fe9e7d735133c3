package proxy

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/batcher"
	"github.com/novacron/sidecar/cache"
)

// rowOut is one answered row: the task's outputs for it (TargetInfo.Outputs), in order, concatenated.
// It is shared (the cache holds it) and must not be changed.
type rowOut []float32

// out returns the values of one output of an answered row.
func (m *Model) out(r rowOut, name string) []float32 {
	off := 0
	for _, o := range m.Outputs {
		if o.Name == name {
			return r[off : off+o.Width]
		}
		off += o.Width
	}
	return nil
}

// RowObserver sees every canonical row a target answered and its output row, whichever front end
// the call came by (the NovaCron RPCs over gRPC or HTTP/JSON, the Open Inference Protocol with raw
// features or canonical tensors), whether the answer came from the cache or a run, and whatever
// runs the target (a tensor model or a legacy service): the drift sketches hang here. A placement
// shows its nodes' rows, not the occluded copies its reasoning runs.
// ObserveRows is called on the caller's goroutine, once per call that got its rows, before they
// are shaped into its answer (a legacy service's: after its answer is checked), concurrently with
// other calls; it must not block, and must copy what it keeps (inputs and outputs are the
// pipeline's). inputs holds len(outputs) rows of the target's Spec.Size() values each; outputs[i]
// holds row i's values of t.Info().Outputs, in order.
type RowObserver interface {
	ObserveRows(t Target, inputs []float32, outputs [][]float32)
}

// rows is the one row pipeline: every front end's canonical rows reach the model through it. With
// cached, the prediction cache answers the rows it holds (infer); without, the rows go to the
// model's batcher as they are (compute). The observer, when set, sees the rows and their answers:
// every one, or with every > 1 rows 0, every, 2*every, ... (a placement's nodes, not the
// occluded copies its reasoning runs).
func (s *Service) rows(ctx context.Context, m *Model, n int, data []float32, priority int, cached bool, every int) ([]rowOut, error) {
	var out []rowOut
	var err error
	if cached {
		out, err = s.infer(ctx, m, n, data, priority)
	} else {
		out, err = s.compute(ctx, m, n, data, priority)
	}
	if err == nil && s.cfg.Observer != nil {
		in := data
		if every > 1 {
			size := m.Spec.Size()
			in = make([]float32, 0, (n+every-1)/every*size)
			for i := 0; i < n; i += every {
				in = append(in, data[i*size:(i+1)*size]...)
			}
		}
		views := make([][]float32, 0, (len(out)+max(every, 1)-1)/max(every, 1))
		for i := 0; i < len(out); i += max(every, 1) {
			views = append(views, out[i])
		}
		s.cfg.Observer.ObserveRows(m, in, views)
	}
	return out, err
}

// infer answers rows canonical input rows (data holds rows x Spec.Size() values), one answer per
// row, in order: from the prediction cache where it holds them, else through the model's batcher
// (or straight to its backend when batching is off). A single row's concurrent misses run the
// model once. The cache key hashes the model's name, version and spec fingerprint with the row's
// exact bits, so an answer of another model or spec can never be served. priority orders queued
// calls (higher first).
func (s *Service) infer(ctx context.Context, m *Model, rows int, data []float32, priority int) ([]rowOut, error) {
	if s.cache == nil || m.CacheTTL < 0 {
		return s.compute(ctx, m, rows, data, priority)
	}
	size := m.Spec.Size()
	buf := make([]byte, 0, 4*size)
	key := func(row []float32) cache.Key {
		buf = cache.AppendFloat32s(buf[:0], row)
		return s.cache.Key(m.keyPrefix[0], m.keyPrefix[1], m.keyPrefix[2], buf)
	}
	// With a stale fallback, answers are kept MaxStale past their TTL but served fresh only
	// within it.
	keep, fresh := m.CacheTTL, time.Duration(0)
	if m.StaleFallback {
		ttl := m.CacheTTL
		if ttl <= 0 {
			ttl = time.Minute
		}
		keep, fresh = ttl+s.cfg.MaxStale, ttl
	}
	if rows == 1 {
		k := key(data)
		v, _, err := s.cache.DoFresh(ctx, k, keep, fresh, func(ctx context.Context) ([]float32, error) {
			r, err := s.compute(ctx, m, 1, data, priority)
			if err != nil {
				return nil, err
			}
			return r[0], nil
		})
		if err != nil {
			if st, ok := s.stale(ctx, m, err, []cache.Key{k}); ok {
				return st, nil
			}
			return nil, err
		}
		return []rowOut{v}, nil
	}
	out := make([]rowOut, rows)
	keys := make([]cache.Key, rows)
	var missing []int
	for i := range out {
		keys[i] = key(data[i*size : (i+1)*size])
		if v, ok := s.cache.GetFresh(keys[i], fresh); ok {
			out[i] = v
		} else {
			missing = append(missing, i)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	miss := data
	if len(missing) < rows {
		miss = make([]float32, 0, len(missing)*size)
		for _, i := range missing {
			miss = append(miss, data[i*size:(i+1)*size]...)
		}
	}
	res, err := s.compute(ctx, m, len(missing), miss, priority)
	if err != nil {
		mk := make([]cache.Key, len(missing))
		for j, i := range missing {
			mk[j] = keys[i]
		}
		st, ok := s.stale(ctx, m, err, mk)
		if !ok {
			return nil, err
		}
		for j, i := range missing {
			out[i] = st[j]
		}
		return out, nil
	}
	for j, i := range missing {
		out[i] = res[j]
		s.cache.Set(keys[i], res[j], keep)
	}
	return out, nil
}

// stale answers keys from the cache whatever their age, when m has a stale fallback, err says
// the backend is unavailable, the caller still waits, and every key is held. The call is marked
// stale (see StaleAge) and counted.
func (s *Service) stale(ctx context.Context, m *Model, err error, keys []cache.Key) ([]rowOut, bool) {
	if !m.StaleFallback || ctx.Err() != nil || !(errors.Is(err, backends.ErrUnavailable) || errors.Is(err, backends.ErrBadResponse)) {
		return nil, false
	}
	out := make([]rowOut, len(keys))
	var oldest time.Duration
	for i, k := range keys {
		v, age, ok := s.cache.GetStale(k)
		if !ok {
			return nil, false
		}
		out[i], oldest = v, max(oldest, age)
	}
	markStale(ctx, oldest)
	s.metrics.Fallback(m.Name, "stale")
	return out, true
}

// staleNote records, for one call, the age of the oldest stale answer it was given.
type staleNote struct{ age atomic.Int64 }

type staleKey struct{}

// withStaleNote prepares ctx to record a stale answer; StaleAge reads it after the call.
func withStaleNote(ctx context.Context) context.Context {
	return context.WithValue(ctx, staleKey{}, &staleNote{})
}

func markStale(ctx context.Context, age time.Duration) {
	if n, ok := ctx.Value(staleKey{}).(*staleNote); ok {
		for {
			cur := n.age.Load()
			if int64(age) <= cur || n.age.CompareAndSwap(cur, int64(max(age, 1))) {
				return
			}
		}
	}
}

// StaleAge reports whether a call made with ctx (prepared by the front end) was answered, in part,
// from stale cached answers, and the oldest one's age.
func StaleAge(ctx context.Context) (time.Duration, bool) {
	if n, ok := ctx.Value(staleKey{}).(*staleNote); ok {
		if a := n.age.Load(); a > 0 {
			return time.Duration(a), true
		}
	}
	return 0, false
}

// compute runs rows through the model's batcher, or straight to its backend as one batch when
// batching is off.
func (s *Service) compute(ctx context.Context, m *Model, rows int, data []float32, priority int) ([]rowOut, error) {
	if m.batch == nil {
		return m.runBatch(ctx, data, rows)
	}
	size := m.Spec.Size()
	views := make([][]float32, rows)
	for i := range views {
		views[i] = data[i*size : (i+1)*size : (i+1)*size]
	}
	out, err := m.batch.Do(ctx, views, priority)
	if err != nil {
		return nil, fmt.Errorf("model %q: %w", m.Name, err)
	}
	return out, nil
}

// acrossSwap runs call, and again when it failed because a Swap (a config reload) closed what it
// was using while it ran (a batcher, a backend): the next run resolves the model anew, in the new
// snapshot, and decodes its own answer. It stops at the first run that no Swap overtook (at most
// maxSwapRuns). Inference calls are idempotent, so running one again is safe.
func acrossSwap[T any](s *Service, call func() (T, error)) (T, error) {
	for run := 1; ; run++ {
		st := s.state.Load()
		v, err := call()
		if err == nil || run == maxSwapRuns || !(errors.Is(err, batcher.ErrClosed) || errors.Is(err, backends.ErrUnavailable)) || s.state.Load() == st {
			return v, err
		}
	}
}

// maxSwapRuns bounds the runs of one call across reloads that keep overtaking it.
const maxSwapRuns = 8

// runBatch runs one backend batch and checks every output the task reads: present, rows x width
// float32 values, all finite. Only checked results reach the answers.
func (m *Model) runBatch(ctx context.Context, data []float32, rows int) ([]rowOut, error) {
	shape := m.Spec.InputShape(int64(rows))
	start := time.Now()
	res, err := m.Backend.Infer(ctx, &backends.Batch{Model: m.Name, Inputs: []backends.Tensor{backends.F32(inputFeatures, shape, data)}})
	if m.metrics != nil {
		m.metrics.infer(rows, time.Since(start), err)
	}
	if err != nil {
		return nil, fmt.Errorf("model %q: %w", m.Name, err)
	}
	for _, o := range m.Outputs {
		t, ok := res.Output(o.Name)
		if !ok {
			return nil, fmt.Errorf("model %q: no output %q: %w", m.Name, o.Name, ErrBadOutput)
		}
		d, err := t.Float32s()
		if err != nil || len(d) != rows*o.Width {
			return nil, fmt.Errorf("model %q: output %q has %d values, want %d x %d: %w", m.Name, o.Name, len(d), rows, o.Width, ErrBadOutput)
		}
		for i, v := range d {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nil, fmt.Errorf("model %q: output %q row %d holds %v: %w", m.Name, o.Name, i/o.Width, v, ErrBadOutput)
			}
		}
	}
	width := 0
	for _, o := range m.Outputs {
		width += o.Width
	}
	all := make([]float32, rows*width)
	off := 0
	for _, o := range m.Outputs {
		t, _ := res.Output(o.Name)
		d := t.Data.([]float32)
		for i := 0; i < rows; i++ {
			copy(all[i*width+off:], d[i*o.Width:(i+1)*o.Width])
		}
		off += o.Width
	}
	out := make([]rowOut, rows)
	for i := range out {
		out[i] = all[i*width : (i+1)*width : (i+1)*width]
	}
	return out, nil
}
