// Package proxy holds the sidecar's front ends (gRPC novacron.ai.AIService and HTTP/JSON), the
// request pipeline they share (decode, validate, canonicalize, infer, answer) and the one mapping
// of errors to gRPC codes and HTTP statuses. Both front ends call the same Service methods, so the
// same input gives the same numbers over either protocol.
package proxy

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/novacron/sidecar/batcher"
	"github.com/novacron/sidecar/cache"
	"github.com/novacron/sidecar/features"
	"github.com/novacron/sidecar/features/drift"
)

// The pipeline's code by concern: this file (Config, the Service and its snapshot of targets,
// Swap, Drain, Close), target.go (targets, routes, and resolving a call's target), model.go (the
// tensor model target), legacy.go (the legacy service target), limits.go (request bounds and
// identifiers), pipeline.go (the row pipeline: cache, stale fallback, batcher, backend, output
// checks), priority.go, and one file per task: forecast.go, push.go, anomaly.go, placement.go.

// Config is the pipeline's plain-data configuration. Zero values are documented per field.
type Config struct {
	// Routes say where each RPC family's calls go when they name no model (see Route).
	Routes Routes
	// Routing, when set, sees the routes' calls and their shadows' answers (see RouteObserver).
	Routing RouteObserver
	// ShadowQueue bounds the shadowed calls waiting for a worker, ShadowWorkers run them, each
	// within ShadowTimeout. Zero: DefaultShadowQueue, DefaultShadowWorkers, DefaultShadowTimeout.
	ShadowQueue, ShadowWorkers int
	ShadowTimeout              time.Duration
	// Log receives the Service's rare notes (forced targets, at most one line per route every
	// ForcedLogEvery). Nil: none.
	Log io.Writer
	// RequestTimeout applies to calls without a deadline. Zero: no timeout of the sidecar's own.
	RequestTimeout time.Duration
	// MaxBatchVMs bounds PredictBandwidthBatch; MaxNodes bounds OptimizePlacement. Zero:
	// DefaultMaxBatchVMs, DefaultMaxNodes.
	MaxBatchVMs, MaxNodes int
	// MaxMessageBytes bounds gRPC messages and HTTP bodies. Zero: DefaultMaxMessageBytes.
	MaxMessageBytes int
	// Observer, when set, sees every canonical row answered and its output (see RowObserver).
	Observer RowObserver
	// MaxIDBytes bounds identifiers in requests (vm_id, workload_id, node_id, model names).
	// Zero: DefaultMaxIDBytes.
	MaxIDBytes int
	// MaxConcurrentCalls bounds the gRPC calls in flight (see tap). Zero: DefaultMaxConcurrentCalls.
	MaxConcurrentCalls int
	// MaxPushSamples bounds the samples of one PushMetrics call or StreamMetrics message.
	// Zero: DefaultMaxPushSamples.
	MaxPushSamples int
	// MaxInflightBytes bounds the HTTP request bodies being served at once (see inflight).
	// Zero: DefaultMaxInflightBytes.
	MaxInflightBytes int64
	// MaxConnectionIdle closes a client connection that carried no call for this long (gRPC
	// keepalive's MaxConnectionIdle; the HTTP server's IdleTimeout, see ConnectionIdle). Zero:
	// DefaultMaxConnectionIdle; negative: never.
	MaxConnectionIdle time.Duration
	// Cache, when set, answers repeated rows (see infer); the Service does not close it.
	Cache *cache.Cache[[]float32]
	// Windows bounds the per-VM metric windows each forecast model keeps for PushMetrics.
	Windows features.WindowConfig
	// Now is the clock of the windows (pushes without a timestamp, max-age checks). Nil: time.Now.
	Now func() time.Time
	// MaxStale is how long past its TTL an answer is kept for a model's stale fallback. Zero:
	// DefaultMaxStale.
	MaxStale time.Duration
}

func (c *Config) setDefaults() {
	c.MaxBatchVMs = cmp.Or(c.MaxBatchVMs, DefaultMaxBatchVMs)
	c.MaxNodes = cmp.Or(c.MaxNodes, DefaultMaxNodes)
	c.MaxMessageBytes = cmp.Or(c.MaxMessageBytes, DefaultMaxMessageBytes)
	c.MaxStale = cmp.Or(c.MaxStale, DefaultMaxStale)
	if c.MaxIDBytes == 0 {
		c.MaxIDBytes = DefaultMaxIDBytes
	}
	if c.MaxConcurrentCalls == 0 {
		c.MaxConcurrentCalls = DefaultMaxConcurrentCalls
	}
	if c.MaxPushSamples == 0 {
		c.MaxPushSamples = DefaultMaxPushSamples
	}
	if c.MaxInflightBytes == 0 {
		c.MaxInflightBytes = DefaultMaxInflightBytes
	}
	if c.MaxConnectionIdle == 0 {
		c.MaxConnectionIdle = DefaultMaxConnectionIdle
	}
	c.ShadowQueue = cmp.Or(c.ShadowQueue, DefaultShadowQueue)
	c.ShadowWorkers = cmp.Or(c.ShadowWorkers, DefaultShadowWorkers)
	c.ShadowTimeout = cmp.Or(c.ShadowTimeout, DefaultShadowTimeout)
}

// Service is the request pipeline. Its methods may be called concurrently; they read an immutable
// snapshot of the loaded models and routes, which Swap replaces.
type Service struct {
	cfg     Config
	state   atomic.Pointer[snapshot]
	metrics *Metrics
	cache   *cache.Cache[[]float32] // nil: no prediction cache
	// inflight bounds the HTTP bodies being served at once.
	inflight inflight
	// grpcCalls counts the gRPC calls in flight (see tap).
	grpcCalls atomic.Int64
	// refused holds the requests boundedCodec left undecoded, by message, until the interceptor
	// of their call answers them (see Service.refusal).
	refused sync.Map
	// refusals counts the entries of refused, so that a call need not look when there are none.
	refusals atomic.Int64
	// shadows runs the shadowed calls.
	shadows *shadower
	// draining ends when Drain is called: open streams end.
	draining context.Context
	drain    context.CancelFunc
	// swapMu serializes Swap and Close.
	swapMu sync.Mutex
}

// snapshot is what a call reads: immutable once stored.
type snapshot struct {
	targets map[string]Target
	// names lists the targets' names in order, for messages.
	names []string
	// tensors are the targets that take tensors (the Models): what the Open Inference Protocol
	// serves.
	tensors map[string]*Model
	// routes are the routes by name, as given (config) and as calls read them.
	given  Routes
	routes map[string]*route
	// windows are the forecast targets' pushed windows, which PushMetrics fills, and accuracy
	// their live accuracy trackers, which it feeds the truths.
	windows  []*features.Windows
	accuracy []*drift.Accuracy
	// anyStale is set when some model has a stale fallback: then calls carry a note of it.
	anyStale bool
	// window is the largest Spec.Size of the forecast models: the most values a window may hold.
	window int
}

// New makes a Service over the given targets, starting the batcher of each whose Batching is set.
// metrics may be nil. Close stops the batchers.
func New(cfg Config, targets []Target, metrics *Metrics) (*Service, error) {
	cfg.setDefaults()
	s := &Service{cfg: cfg, metrics: metrics, cache: cfg.Cache}
	s.draining, s.drain = context.WithCancel(context.Background())
	s.inflight.limit = cfg.MaxInflightBytes
	if s.cfg.Now == nil {
		s.cfg.Now = time.Now
	}
	st, err := s.snapshot(targets, cfg.Routes, nil)
	if err != nil {
		return nil, err
	}
	if err := s.prepare(targets, nil); err != nil {
		return nil, err
	}
	st.collectWindows(targets) // those prepare gave
	s.state.Store(st)
	if metrics != nil {
		metrics.setTargets(targets)
	}
	s.shadows = newShadower(s, s.cfg.ShadowQueue, s.cfg.ShadowWorkers, s.cfg.ShadowTimeout, cfg.Routing)
	return s, nil
}

// snapshot makes the snapshot of targets and routes; old, when set, is the one it replaces.
func (s *Service) snapshot(targets []Target, routes Routes, old *snapshot) (*snapshot, error) {
	st := &snapshot{targets: make(map[string]Target, len(targets)), tensors: map[string]*Model{}, given: routes}
	for _, t := range targets {
		b := t.common()
		st.targets[b.Name] = t
		if m, ok := t.(*Model); ok {
			st.tensors[b.Name] = m
			st.anyStale = st.anyStale || (m.StaleFallback && s.cache != nil)
		}
	}
	st.names = sortedNames(st.targets)
	st.collectWindows(targets)
	var oldRoutes map[string]*route
	if old != nil {
		oldRoutes = old.routes
	}
	var err error
	if st.routes, err = s.compileRoutes(routes, st.targets, st.tensors, oldRoutes); err != nil {
		return nil, err
	}
	return st, nil
}

// collectWindows lists the targets' pushed windows (a target has them once prepared).
func (st *snapshot) collectWindows(targets []Target) {
	st.windows, st.window, st.accuracy = nil, 0, nil
	for _, t := range targets {
		b := t.common()
		if b.windows != nil {
			st.windows = append(st.windows, b.windows)
			st.window = max(st.window, b.Spec.Size())
		}
		if b.accuracy != nil {
			st.accuracy = append(st.accuracy, b.accuracy)
		}
	}
}

// SetRoute replaces one route (a migration moving to another stage): calls that start afterwards
// follow it. It fails, changing nothing, when the route is not valid for the loaded targets.
func (s *Service) SetRoute(name string, r Route) error {
	s.swapMu.Lock()
	defer s.swapMu.Unlock()
	old := s.state.Load()
	routes := make(Routes, len(old.given)+1)
	for k, v := range old.given {
		routes[k] = v
	}
	routes[name] = r
	targets := make([]Target, 0, len(old.targets))
	for _, t := range old.targets {
		targets = append(targets, t)
	}
	st, err := s.snapshot(targets, routes, old)
	if err != nil {
		return err
	}
	s.state.Store(st)
	return nil
}

// Routes returns the routes calls follow now.
func (s *Service) Routes() Routes { return s.state.Load().given }

// prepare binds each target to the Service and gives it its windows and live accuracy tracker
// (those of the old target of its name when the spec is the same, so pushed metrics, and answers
// awaiting their truth, survive a reload), its metrics and its started batcher. On error no
// batcher it started is left running.
func (s *Service) prepare(targets []Target, old map[string]Target) error {
	var started []Target
	fail := func(b *base, err error) error {
		for _, t := range started {
			t.stop()
		}
		return fmt.Errorf("model %q: %w", b.Name, err)
	}
	for _, t := range targets {
		b := t.common()
		b.svc = s
		if b.fingerprint == "" {
			b.fingerprint = b.Spec.Fingerprint()
		}
		if o, ok := old[b.Name]; ok && b.windows == nil && o.common().windows != nil && o.common().fingerprint == b.fingerprint {
			b.windows = o.common().windows
		}
		if b.Task == TaskForecast && b.windows == nil {
			w, err := features.NewWindows(b.Spec, s.cfg.Windows)
			if err != nil {
				return fail(b, err)
			}
			b.windows = w
		}
		if o, ok := old[b.Name]; ok && b.accuracy == nil && o.common().accuracy != nil && o.common().fingerprint == b.fingerprint {
			b.accuracy = o.common().accuracy
		}
		if b.Task == TaskForecast && b.accuracy == nil {
			a, err := drift.NewAccuracy(drift.AccuracyConfig{Step: s.cfg.Windows.Step, MaxVMs: s.cfg.Windows.MaxVMs, Now: s.cfg.Now})
			if err != nil {
				return fail(b, err)
			}
			b.accuracy = a
		}
		if o, ok := old[b.Name]; ok && b.labelAccuracy == nil && o.common().labelAccuracy != nil && o.common().fingerprint == b.fingerprint {
			b.labelAccuracy = o.common().labelAccuracy
		}
		if (b.Task == TaskAnomaly || b.Task == TaskPlacement) && b.labelAccuracy == nil {
			l, err := drift.NewLabels(drift.LabelsConfig{Step: s.cfg.Windows.Step, MaxKeys: s.cfg.Windows.MaxVMs, Now: s.cfg.Now})
			if err != nil {
				return fail(b, err)
			}
			b.labelAccuracy = l
		}
		if s.metrics != nil {
			b.metrics = s.metrics.forModel(b.Name)
		}
		opts := []batcher.Option{}
		if b.metrics != nil {
			opts = append(opts, batcher.WithObserver(b.metrics))
		}
		if err := t.start(opts); err != nil {
			return fail(b, fmt.Errorf("batching: %w", err))
		}
		started = append(started, t)
	}
	return nil
}

// Swap replaces the loaded targets and routes (a config reload): the new targets' batchers start
// (a target keeps the pushed windows and the live accuracy of the old target of its name when
// their specs are the same), calls that start afterwards see only the new targets, and the old
// targets' batchers close once the calls they hold have run. Swap returns the old targets; their
// Runners are the caller's to close (those not reused by the new targets). On error nothing
// changes.
func (s *Service) Swap(targets []Target, routes Routes) ([]Target, error) {
	s.swapMu.Lock()
	defer s.swapMu.Unlock()
	old := s.state.Load()
	st, err := s.snapshot(targets, routes, old)
	if err != nil {
		return nil, err
	}
	if err := s.prepare(targets, old.targets); err != nil {
		return nil, err
	}
	st.collectWindows(targets) // those prepare gave
	s.state.Store(st)
	if s.metrics != nil {
		s.metrics.setTargets(targets)
	}
	var out []Target
	for _, t := range old.targets {
		t.stop() // queued calls run on the old target, then its batcher stops
		out = append(out, t)
	}
	return out, nil
}

// Drain ends the calls that would otherwise stay open through a shutdown: each open StreamMetrics
// stream is answered with the count it stored, and the context of every other open stream (a
// health Watch, reflection) ends. Call it when the front ends stop accepting calls.
func (s *Service) Drain() { s.drain() }

// ConnectionIdle is how long a client connection may stay idle (Config.MaxConnectionIdle,
// defaulted); 0: no bound.
func (s *Service) ConnectionIdle() time.Duration { return max(s.cfg.MaxConnectionIdle, 0) }

// Close stops the shadow workers (queued shadowed calls are not run) and the targets' batchers
// once the calls they hold have run. Call it after the front ends have drained and before the
// Runners close.
func (s *Service) Close() {
	s.shadows.close()
	s.swapMu.Lock()
	defer s.swapMu.Unlock()
	if st := s.state.Load(); st != nil {
		for _, t := range st.targets {
			t.stop()
		}
	}
}

// Accuracy returns the live accuracy of each target that has one, by name (a snapshot): a
// forecast target's forecasts against the metrics pushed, an anomaly or placement target's
// answers against the labels pushed (PushLabels).
func (s *Service) Accuracy() map[string]drift.AccuracySource {
	out := map[string]drift.AccuracySource{}
	for name, t := range s.state.Load().targets {
		switch b := t.common(); {
		case b.accuracy != nil:
			out[name] = b.accuracy
		case b.labelAccuracy != nil:
			out[name] = b.labelAccuracy
		}
	}
	return out
}

// Targets returns the loaded targets by name (a snapshot; do not modify).
func (s *Service) Targets() map[string]Target { return s.state.Load().targets }

// Models returns the loaded tensor models by name, the targets the Open Inference Protocol serves
// (a snapshot; do not modify).
func (s *Service) Models() map[string]*Model { return s.state.Load().tensors }

// withTimeout applies the configured default timeout to a call without a deadline.
func (s *Service) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok || s.cfg.RequestTimeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.cfg.RequestTimeout)
}
