// Package proxy holds the sidecar's front ends (gRPC novacron.ai.AIService and HTTP/JSON), the
// request pipeline they share (decode, validate, canonicalize, infer, answer) and the one mapping
// of errors to gRPC codes and HTTP statuses. Both front ends call the same Service methods, so the
// same input gives the same numbers over either protocol.
package proxy

import (
	"cmp"
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/novacron/sidecar/batcher"
	"github.com/novacron/sidecar/cache"
	"github.com/novacron/sidecar/features"
)

// The pipeline's code by concern: this file (Config, the Service and its snapshot of models,
// Swap, Drain, Close, model lookup), limits.go (request bounds and identifiers), pipeline.go (the
// row pipeline: cache, stale fallback, batcher, backend, output checks), priority.go, and one file
// per task: forecast.go, push.go, anomaly.go, placement.go.

// Config is the pipeline's plain-data configuration. Zero values are documented per field.
type Config struct {
	// Routes name each RPC family's default model.
	Routes Routes
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

// Routes name the default model of each RPC family.
type Routes struct {
	Bandwidth, Anomaly, Placement string
}

func routeBandwidth(r Routes) string { return r.Bandwidth }

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
	// draining ends when Drain is called: open streams end.
	draining context.Context
	drain    context.CancelFunc
	// swapMu serializes Swap and Close.
	swapMu sync.Mutex
}

// snapshot is what a call reads: immutable once stored.
type snapshot struct {
	models map[string]*Model
	routes Routes
	// anyStale is set when some model has a stale fallback: then calls carry a note of it.
	anyStale bool
	// window is the largest Spec.Size of the forecast models: the most values a window may hold.
	window int
}

// New makes a Service over the given models, starting the batcher of each model whose Batching is
// set. metrics may be nil. Close stops the batchers.
func New(cfg Config, models []*Model, metrics *Metrics) (*Service, error) {
	cfg.setDefaults()
	s := &Service{cfg: cfg, metrics: metrics, cache: cfg.Cache}
	s.draining, s.drain = context.WithCancel(context.Background())
	s.inflight.limit = cfg.MaxInflightBytes
	if s.cfg.Now == nil {
		s.cfg.Now = time.Now
	}
	if err := s.prepare(models, nil); err != nil {
		return nil, err
	}
	s.state.Store(s.snapshot(models, cfg.Routes))
	if metrics != nil {
		metrics.setModels(models)
	}
	return s, nil
}

func (s *Service) snapshot(models []*Model, routes Routes) *snapshot {
	st := &snapshot{models: make(map[string]*Model, len(models)), routes: routes}
	for _, x := range models {
		st.models[x.Name] = x
		st.anyStale = st.anyStale || (x.StaleFallback && s.cache != nil)
		if x.Task == TaskForecast {
			st.window = max(st.window, x.Spec.Size())
		}
	}
	return st
}

// prepare gives each model its windows (those of the old model of its name when the spec is the
// same, so pushed metrics survive a reload), its metrics and its started batchers. On error no
// batcher it started is left running.
func (s *Service) prepare(models []*Model, old map[string]*Model) error {
	var started []*Model
	fail := func(m *Model, err error) error {
		for _, sm := range started {
			sm.closeBatchers()
		}
		return fmt.Errorf("model %q: %w", m.Name, err)
	}
	for _, m := range models {
		if o, ok := old[m.Name]; ok && m.windows == nil && o.windows != nil && o.Spec.Fingerprint() == m.Spec.Fingerprint() {
			m.windows = o.windows
		}
		if m.Task == TaskForecast && m.windows == nil {
			w, err := features.NewWindows(m.Spec, s.cfg.Windows)
			if err != nil {
				return fail(m, err)
			}
			m.windows = w
		}
		if s.metrics != nil {
			m.metrics = s.metrics.forModel(m.Name)
		}
		opts := []batcher.Option{}
		if m.metrics != nil {
			opts = append(opts, batcher.WithObserver(m.metrics))
		}
		if m.legacy != nil {
			if err := m.startLegacyBatcher(opts); err != nil {
				return fail(m, fmt.Errorf("batching: %w", err))
			}
			started = append(started, m)
			continue
		}
		if m.Batching == nil || m.batch != nil {
			continue
		}
		size := m.Spec.Size()
		b, err := batcher.New(*m.Batching, func(ctx context.Context, rows [][]float32) ([]rowOut, error) {
			buf := make([]float32, len(rows)*size)
			for i, r := range rows {
				copy(buf[i*size:], r)
			}
			return m.runBatch(ctx, buf, len(rows))
		}, opts...)
		if err != nil {
			return fail(m, fmt.Errorf("batching: %w", err))
		}
		m.batch = b
		started = append(started, m)
	}
	return nil
}

// Swap replaces the loaded models and routes (a config reload): the new models' batchers start
// (a forecast model keeps the pushed windows of the old model of its name when their specs are
// the same), calls that start afterwards see only the new models, and the old models' batchers
// close once the calls they hold have run. Swap returns the old models; their backends are the
// caller's to close (those not reused by the new models). On error nothing changes.
func (s *Service) Swap(models []*Model, routes Routes) ([]*Model, error) {
	s.swapMu.Lock()
	defer s.swapMu.Unlock()
	old := s.state.Load()
	if err := s.prepare(models, old.models); err != nil {
		return nil, err
	}
	s.state.Store(s.snapshot(models, routes))
	if s.metrics != nil {
		s.metrics.setModels(models)
	}
	var out []*Model
	for _, m := range old.models {
		m.closeBatchers() // queued calls run on the old model, then its batcher stops
		out = append(out, m)
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

// Close stops the models' batchers once the calls they hold have run. Call it after the front ends
// have drained and before the backends close.
func (s *Service) Close() {
	s.swapMu.Lock()
	defer s.swapMu.Unlock()
	if st := s.state.Load(); st != nil {
		for _, m := range st.models {
			m.closeBatchers()
		}
	}
}

// closeBatchers stops the model's batchers once the calls they hold have run.
func (m *Model) closeBatchers() {
	if m.batch != nil {
		m.batch.Close()
	}
	if m.legacyBatch != nil {
		m.legacyBatch.Close()
	}
}

// Models returns the loaded models by name (a snapshot; do not modify).
func (s *Service) Models() map[string]*Model { return s.state.Load().models }

// model resolves a requested model name (empty: the route's default) and checks its task.
func (s *Service) model(requested string, route func(Routes) string, task, rpc string) (*Model, error) {
	st := s.state.Load()
	name := requested
	if name == "" {
		name = route(st.routes)
	}
	if name == "" {
		return nil, fmt.Errorf("model: the request names none and %s has no default model (config routes); name one of %s: %w",
			rpc, strings.Join(s.modelNames(), ", "), ErrUnknownModel)
	}
	m, ok := st.models[name]
	if !ok {
		if requested == "" {
			return nil, fmt.Errorf("model: the default model %q of %s is not loaded: %w", name, rpc, ErrUnknownModel)
		}
		return nil, fmt.Errorf("model: %q is not loaded (loaded: %s): %w", name, strings.Join(s.modelNames(), ", "), ErrUnknownModel)
	}
	if m.Task != task {
		return nil, invalid("model", fmt.Sprintf("%q is a %s model; %s needs a %s model", name, m.Task, rpc, task))
	}
	return m, nil
}

func (s *Service) modelNames() []string {
	var n []string
	for k := range s.state.Load().models {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// withTimeout applies the configured default timeout to a call without a deadline.
func (s *Service) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok || s.cfg.RequestTimeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.cfg.RequestTimeout)
}
