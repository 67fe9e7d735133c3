// Package proxy holds the sidecar's front ends (gRPC novacron.ai.AIService and HTTP/JSON), the
// request pipeline they share (decode, validate, canonicalize, infer, answer) and the one mapping
// of errors to gRPC codes and HTTP statuses. Both front ends call the same Service methods, so the
// same input gives the same numbers over either protocol.
package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/batcher"
	"github.com/novacron/sidecar/cache"
	"github.com/novacron/sidecar/features"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

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

// Defaults of the request bounds (Config): the most VMs of a batch call, nodes of a placement
// call, and bytes of a gRPC message or HTTP body; and how long past its TTL an answer is kept for a
// stale fallback.
const (
	DefaultMaxBatchVMs     = 1024
	DefaultMaxNodes        = 1024
	DefaultMaxMessageBytes = 4 << 20
	DefaultMaxStale        = 10 * time.Minute
)

// DefaultMaxIDBytes is the default bound of an identifier in a request (Config.MaxIDBytes): VM,
// workload, node and model names are short; a longer one is refused before it is stored or echoed.
const DefaultMaxIDBytes = 256

// DefaultMaxPushSamples is the default bound of the samples of one push (Config.MaxPushSamples):
// ten steps of a thousand VMs.
const DefaultMaxPushSamples = 10000

// checkID refuses an identifier longer than Config.MaxIDBytes, echoing only its start.
func (s *Service) checkID(field, v string) error {
	if len(v) > s.cfg.MaxIDBytes {
		return invalid(field, fmt.Sprintf("%d bytes (%s), at most %d (limits.max_id_bytes)", len(v), clip(v), s.cfg.MaxIDBytes))
	}
	return nil
}

// clipBytes is how much of a caller's value an error message echoes.
const clipBytes = 40

// clip quotes v for an error message, cut to its first clipBytes bytes (on a rune boundary) with
// the rest counted, so that an error never carries a caller's huge value back (a gRPC status
// travels in a header, which clients bound).
func clip(v string) string {
	if len(v) <= clipBytes {
		return strconv.Quote(v)
	}
	cut := clipBytes
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(v[:cut]), len(v))
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

// rowOut is one answered row: the task's outputs for it (Model.outputs), in order, concatenated.
// It is shared (the cache holds it) and must not be changed.
type rowOut []float32

// out returns the values of one output of an answered row.
func (m *Model) out(r rowOut, name string) []float32 {
	off := 0
	for _, o := range m.outputs {
		if o.name == name {
			return r[off : off+o.width]
		}
		off += o.width
	}
	return nil
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
	for _, o := range m.outputs {
		t, ok := res.Output(o.name)
		if !ok {
			return nil, fmt.Errorf("model %q: no output %q: %w", m.Name, o.name, ErrBadOutput)
		}
		d, err := t.Float32s()
		if err != nil || len(d) != rows*o.width {
			return nil, fmt.Errorf("model %q: output %q has %d values, want %d x %d: %w", m.Name, o.name, len(d), rows, o.width, ErrBadOutput)
		}
		for i, v := range d {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nil, fmt.Errorf("model %q: output %q row %d holds %v: %w", m.Name, o.name, i/o.width, v, ErrBadOutput)
			}
		}
	}
	width := 0
	for _, o := range m.outputs {
		width += o.width
	}
	all := make([]float32, rows*width)
	off := 0
	for _, o := range m.outputs {
		t, _ := res.Output(o.name)
		d := t.Data.([]float32)
		for i := 0; i < rows; i++ {
			copy(all[i*width+off:], d[i*o.width:(i+1)*o.width])
		}
		off += o.width
	}
	out := make([]rowOut, rows)
	for i := range out {
		out[i] = all[i*width : (i+1)*width : (i+1)*width]
	}
	return out, nil
}

// Priorities of queued calls: a caller may set one with the x-priority header (gRPC metadata or
// HTTP), "high" or "low"; otherwise unary calls are high and batch calls low.
const (
	PriorityLow  = 0
	PriorityHigh = 1
)

type priorityKey struct{}

// withPriority records a caller's requested priority (from its header) in ctx.
func withPriority(ctx context.Context, header string) context.Context {
	switch strings.ToLower(header) {
	case "high":
		return context.WithValue(ctx, priorityKey{}, PriorityHigh)
	case "low":
		return context.WithValue(ctx, priorityKey{}, PriorityLow)
	}
	return ctx
}

func priority(ctx context.Context, def int) int {
	if p, ok := ctx.Value(priorityKey{}).(int); ok {
		return p
	}
	return def
}

// checkFinite refuses NaN and infinite request values, naming the field.
func checkFinite(field string, v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return invalid(field, strconv.FormatFloat(v, 'g', -1, 64)+" is not a finite number")
	}
	return nil
}

// ---- PredictBandwidth ----

// PredictBandwidth forecasts one VM's bandwidth from its window of metrics.
func (s *Service) PredictBandwidth(ctx context.Context, req *aipb.BandwidthRequest) (*aipb.BandwidthResponse, error) {
	return acrossSwap(s, func() (*aipb.BandwidthResponse, error) { return s.predictBandwidth(ctx, req) })
}

func (s *Service) predictBandwidth(ctx context.Context, req *aipb.BandwidthRequest) (*aipb.BandwidthResponse, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	if err := s.checkIDs("", req.GetModel(), req.GetVmId()); err != nil {
		return nil, err
	}
	m, err := s.model(req.GetModel(), routeBandwidth, TaskForecast, "PredictBandwidth")
	if err != nil {
		return nil, err
	}
	buf := make([]float32, m.Spec.Size())
	if err := canonWindow(m, buf, req, -1, s.cfg.Now()); err != nil {
		return nil, err
	}
	if m.legacy != nil {
		out, err := s.legacyForecast(ctx, m, []*aipb.BandwidthRequest{req}, priority(ctx, PriorityHigh))
		if err != nil {
			return nil, err
		}
		return out[0], nil
	}
	res, err := s.infer(ctx, m, 1, buf, priority(ctx, PriorityHigh))
	if err != nil {
		return nil, err
	}
	return forecastRows(m, res, []*aipb.BandwidthRequest{req})[0], nil
}

// PredictBandwidthBatch forecasts many VMs as one model batch; results follow the order of vms.
func (s *Service) PredictBandwidthBatch(ctx context.Context, req *aipb.BandwidthBatchRequest) (*aipb.BandwidthBatchResponse, error) {
	return acrossSwap(s, func() (*aipb.BandwidthBatchResponse, error) { return s.predictBandwidthBatch(ctx, req) })
}

func (s *Service) predictBandwidthBatch(ctx context.Context, req *aipb.BandwidthBatchRequest) (*aipb.BandwidthBatchResponse, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	if err := s.checkID("model", req.GetModel()); err != nil {
		return nil, err
	}
	m, err := s.model(req.GetModel(), routeBandwidth, TaskForecast, "PredictBandwidthBatch")
	if err != nil {
		return nil, err
	}
	vms := req.GetVms()
	switch {
	case len(vms) == 0:
		return nil, invalid("vms", "empty: give at least one VM")
	case len(vms) > s.cfg.MaxBatchVMs:
		return nil, invalid("vms", fmt.Sprintf("%d VMs, at most %d per call (limits.max_batch_vms)", len(vms), s.cfg.MaxBatchVMs))
	}
	size := m.Spec.Size()
	buf := make([]float32, len(vms)*size)
	now := s.cfg.Now()
	for i, vm := range vms {
		if err := s.checkIDs(fmt.Sprintf("vms[%d].", i), vm.GetModel(), vm.GetVmId()); err != nil {
			return nil, err
		}
		if vm.GetModel() != "" && vm.GetModel() != m.Name {
			return nil, invalid(fmt.Sprintf("vms[%d].model", i), fmt.Sprintf("%q differs from the batch's model %q; one batch runs one model", vm.GetModel(), m.Name))
		}
		if err := canonWindow(m, buf[i*size:(i+1)*size], vm, i, now); err != nil {
			return nil, err
		}
	}
	if m.legacy != nil {
		out, err := s.legacyForecast(ctx, m, vms, priority(ctx, PriorityLow))
		if err != nil {
			return nil, err
		}
		return &aipb.BandwidthBatchResponse{Results: out}, nil
	}
	res, err := s.infer(ctx, m, len(vms), buf, priority(ctx, PriorityLow))
	if err != nil {
		return nil, err
	}
	return &aipb.BandwidthBatchResponse{Results: forecastRows(m, res, vms)}, nil
}

// checkIDs checks a request's model and vm_id fields (under prefix, such as "vms[3].").
func (s *Service) checkIDs(prefix, model, vm string) error {
	if err := s.checkID(prefix+"model", model); err != nil {
		return err
	}
	return s.checkID(prefix+"vm_id", vm)
}

// canonWindow validates one BandwidthRequest and canonicalizes its window into dst. vm is the
// request's index in a batch call, or -1; it only names fields in errors.
func canonWindow(m *Model, dst []float32, req *aipb.BandwidthRequest, vm int, now time.Time) error {
	if err := canonWindowAt(m, dst, req, now); err != nil {
		if vm >= 0 {
			var fe *features.FieldError
			if errors.As(err, &fe) {
				return invalid(fmt.Sprintf("vms[%d].%s", vm, fe.Field), fe.Reason)
			}
			return fmt.Errorf("vms[%d]: %w", vm, err)
		}
		return err
	}
	return nil
}

// canonStored canonicalizes a VM's pushed window. What keeps it from being served (nothing pushed,
// too old, a gap the spec's policy refuses) is ErrNotReady: FAILED_PRECONDITION, naming the VM.
func canonStored(m *Model, dst []float32, vm string, now time.Time) error {
	raw := make([]float64, m.Spec.Size())
	if err := m.windows.Raw(raw, vm, now); err != nil {
		return err
	}
	if err := m.Spec.Canonicalize(dst, raw); err != nil {
		return fmt.Errorf("vm %q: stored window: %v: %w", vm, err, features.ErrNotReady)
	}
	return nil
}

func canonWindowAt(m *Model, dst []float32, req *aipb.BandwidthRequest, now time.Time) error {
	const prefix = ""
	if req.GetVmId() == "" {
		return invalid(prefix+"vm_id", "required")
	}
	if h := req.GetHorizonMinutes(); h < 0 || int64(h) > int64(m.horizon) {
		return invalid(prefix+"horizon_minutes", fmt.Sprintf("%d is not in 0..%d: give 0 for the model's whole horizon (%d minutes) or 1..%d", h, m.horizon, m.horizon, m.horizon))
	}
	raw := req.GetHistoricalMetrics()
	if len(raw) == 0 && m.windows != nil {
		return canonStored(m, dst, req.GetVmId(), now)
	}
	if len(raw) != m.Spec.Size() {
		return invalid(prefix+"historical_metrics", fmt.Sprintf("got %d values, want %d: %d steps x %d features (%s), oldest step first",
			len(raw), m.Spec.Size(), m.Spec.Steps(), m.Spec.Width(), strings.Join(m.Spec.FeatureNames(), ", ")))
	}
	w := m.Spec.Width()
	for i, v := range raw {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return invalid(fmt.Sprintf("%shistorical_metrics[%d]", prefix, i),
				fmt.Sprintf("%s is not a finite number (step %d, feature %s)", strconv.FormatFloat(v, 'g', -1, 64), i/w, m.Spec.Features[i%w].Name))
		}
	}
	if err := m.Spec.Canonicalize(dst, raw); err != nil {
		var ve *features.ValueError
		if errors.As(err, &ve) && ve.Index >= 0 {
			return invalid(fmt.Sprintf("%shistorical_metrics[%d]", prefix, ve.Index), ve.Error())
		}
		return fmt.Errorf("%shistorical_metrics: %w", prefix, err)
	}
	return nil
}

// forecastRows builds one response per request row. Confidence is 1 / (1 + mean(sigma) / scale)
// over the returned steps, where sigma is the model's predicted standard deviation and scale its
// metadata's novacron.confidence_scale (the held-out median of the target): 1 for a certain
// forecast, 0.5 when the predicted spread equals a typical value.
func forecastRows(m *Model, rows []rowOut, reqs []*aipb.BandwidthRequest) []*aipb.BandwidthResponse {
	h := m.horizon
	out := make([]*aipb.BandwidthResponse, len(reqs))
	for i, req := range reqs {
		fc, sg := m.out(rows[i], outForecast), m.out(rows[i], outSigma)
		n := h
		if hm := int(req.GetHorizonMinutes()); hm > 0 && hm < h {
			n = hm
		}
		preds := make([]float64, n)
		var spread float64
		for j := 0; j < n; j++ {
			preds[j] = float64(fc[j])
			spread += math.Abs(float64(sg[j]))
		}
		conf := 1 / (1 + spread/float64(n)/m.confidenceScale)
		out[i] = &aipb.BandwidthResponse{Predictions: preds, Confidence: conf, ModelVersion: m.Version, VmId: req.GetVmId()}
	}
	return out
}

// ---- PushMetrics ----

// PushMetrics stores samples in the window of every forecast model, in order; it stops at the first
// bad sample (naming it and how many before it were stored). The response's count is set on errors
// too.
func (s *Service) PushMetrics(ctx context.Context, req *aipb.PushMetricsRequest) (*aipb.PushMetricsResponse, error) {
	now := s.cfg.Now()
	resp := &aipb.PushMetricsResponse{}
	var accepted int64
	defer func() { resp.Accepted = accepted }()
	if n := len(req.GetSamples()); n > s.cfg.MaxPushSamples {
		return resp, invalid("samples", fmt.Sprintf("%d samples, at most %d per call (limits.max_push_samples); nothing stored", n, s.cfg.MaxPushSamples))
	}
	for i, smp := range req.GetSamples() {
		at := func() string { return "samples[" + strconv.Itoa(i) + "]" } // for errors only
		if len(smp.GetVmId()) > s.cfg.MaxIDBytes {
			err := s.checkID("vm_id", smp.GetVmId())
			var fe *features.FieldError
			if !errors.As(err, &fe) {
				return resp, fmt.Errorf("%s (%d samples before it stored): %w", at(), accepted, err)
			}
			return resp, invalid(at()+".vm_id", fmt.Sprintf("%s (%d samples before it stored)", fe.Reason, accepted))
		}
		m := smp.GetMetrics()
		if m == nil {
			return resp, invalid(at()+".metrics", fmt.Sprintf("required (%d samples before it stored)", accepted))
		}
		t := now
		if ms := smp.GetTimestampMs(); ms != 0 {
			t = time.UnixMilli(ms)
		}
		values := [6]float64{m.GetCpu(), m.GetMemory(), m.GetDiskIo(), m.GetNetworkIo(), m.GetLatency(), m.GetErrorRate()}
		for _, model := range s.state.Load().models {
			if model.windows == nil {
				continue
			}
			if err := model.windows.Push(smp.GetVmId(), t, values, now); err != nil {
				var fe *features.FieldError
				if errors.As(err, &fe) {
					return resp, invalid(at()+"."+fe.Field, fmt.Sprintf("%s (%d samples before it stored)", fe.Reason, accepted))
				}
				return resp, fmt.Errorf("%s (%d samples before it stored): %w", at(), accepted, err)
			}
		}
		accepted++
	}
	return resp, nil
}

// ---- DetectAnomaly ----

// DetectAnomaly scores one VM's current metrics.
func (s *Service) DetectAnomaly(ctx context.Context, req *aipb.AnomalyRequest) (*aipb.AnomalyResponse, error) {
	return acrossSwap(s, func() (*aipb.AnomalyResponse, error) { return s.detectAnomaly(ctx, req) })
}

func (s *Service) detectAnomaly(ctx context.Context, req *aipb.AnomalyRequest) (*aipb.AnomalyResponse, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	if err := s.checkIDs("", req.GetModel(), req.GetVmId()); err != nil {
		return nil, err
	}
	m, err := s.model(req.GetModel(), func(r Routes) string { return r.Anomaly }, TaskAnomaly, "DetectAnomaly")
	if err != nil {
		return nil, err
	}
	if req.GetVmId() == "" {
		return nil, invalid("vm_id", "required")
	}
	cm := req.GetCurrentMetrics()
	if cm == nil {
		return nil, invalid("current_metrics", "required: the VM's metrics (cpu, memory, disk_io, network_io, latency, error_rate)")
	}
	values := [...]float64{cm.GetCpu(), cm.GetMemory(), cm.GetDiskIo(), cm.GetNetworkIo(), cm.GetLatency(), cm.GetErrorRate()}
	raw := make([]float64, m.Spec.Width())
	for i, f := range m.Spec.Features {
		v := values[features.VMMetricsField(f.Source)]
		if err := checkFinite("current_metrics."+f.Source, v); err != nil {
			return nil, err
		}
		raw[i] = v
	}
	buf := make([]float32, len(raw))
	if err := m.Spec.Canonicalize(buf, raw); err != nil {
		return nil, fmt.Errorf("current_metrics: %w", err)
	}
	if m.legacy != nil {
		out, err := m.legacy.DetectAnomaly(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("model %q: %w", m.Name, err)
		}
		return out, nil
	}
	res, err := s.infer(ctx, m, 1, buf, priority(ctx, PriorityHigh))
	if err != nil {
		return nil, err
	}
	p := m.out(res[0], outProbs)
	for j, pj := range p {
		if pj < 0 || pj > 1 {
			return nil, fmt.Errorf("model %q: output %q class %s is %v, not a probability: %w", m.Name, outProbs, m.labels[j], pj, ErrBadOutput)
		}
	}
	score := 1 - float64(p[m.normalIndex])
	score = math.Min(1, math.Max(0, score))
	best := 0
	if best == m.normalIndex {
		best = 1
	}
	for j, pj := range p {
		if j != m.normalIndex && pj > p[best] {
			best = j
		}
	}
	resp := &aipb.AnomalyResponse{Score: score, IsAnomaly: score >= m.thresholds.Threshold, Severity: m.thresholds.Severity(score),
		AnomalyType: "none", ModelVersion: m.Version}
	if resp.IsAnomaly {
		resp.AnomalyType = m.labels[best]
	}
	return resp, nil
}

// ---- OptimizePlacement ----

// OptimizePlacement scores every available node for a workload in one batch and returns them best
// first. Each node's reasoning names the features that moved its score most: for every feature the
// node is scored again with that feature at its normalization center (an average value), in the
// same batch, and the differences are its contributions.
//
// overall_confidence is the best score times (0.5 + 0.5 * min(1, margin / 0.1)), where margin is the
// best score minus the second best: high when the best node is good and clearly ahead.
func (s *Service) OptimizePlacement(ctx context.Context, req *aipb.PlacementRequest) (*aipb.PlacementResponse, error) {
	return acrossSwap(s, func() (*aipb.PlacementResponse, error) { return s.optimizePlacement(ctx, req) })
}

func (s *Service) optimizePlacement(ctx context.Context, req *aipb.PlacementRequest) (*aipb.PlacementResponse, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	if err := s.checkID("model", req.GetModel()); err != nil {
		return nil, err
	}
	if err := s.checkID("workload_id", req.GetWorkloadId()); err != nil {
		return nil, err
	}
	m, err := s.model(req.GetModel(), func(r Routes) string { return r.Placement }, TaskPlacement, "OptimizePlacement")
	if err != nil {
		return nil, err
	}
	nodes := req.GetAvailableNodes()
	switch {
	case len(nodes) == 0:
		return nil, invalid("available_nodes", "empty: give at least one candidate node")
	case len(nodes) > s.cfg.MaxNodes:
		return nil, invalid("available_nodes", fmt.Sprintf("%d nodes, at most %d per call (limits.max_nodes)", len(nodes), s.cfg.MaxNodes))
	}
	reqs := req.GetRequirements()
	var known []string
	for _, f := range m.Spec.Features {
		if k, ok := strings.CutPrefix(f.Source, "requirements."); ok {
			known = append(known, k)
		}
	}
	keys := slices.Sorted(maps.Keys(reqs))
	for _, k := range keys {
		if !slices.Contains(known, k) {
			return nil, invalid("requirements", fmt.Sprintf("unknown key %s; model %q reads %s (names are case-sensitive)", clip(k), m.Name, strings.Join(known, ", ")))
		}
		v := reqs[k]
		if err := checkFinite("requirements["+strconv.Quote(k)+"]", v); err != nil {
			return nil, err
		}
		if v < 0 {
			return nil, invalid("requirements["+strconv.Quote(k)+"]", fmt.Sprintf("%v is negative", v))
		}
	}
	w := m.Spec.Width()
	per := 1 + w // the node's row, then one row per occluded feature
	buf := make([]float32, len(nodes)*per*w)
	raw := make([]float64, w)
	seen := make(map[string]int, len(nodes))
	for i, n := range nodes {
		at := "available_nodes[" + strconv.Itoa(i) + "]"
		if n.GetNodeId() == "" {
			return nil, invalid(at+".node_id", "required")
		}
		if err := s.checkID(at+".node_id", n.GetNodeId()); err != nil {
			return nil, err
		}
		if j, dup := seen[n.GetNodeId()]; dup {
			return nil, invalid(at+".node_id", fmt.Sprintf("%q repeats available_nodes[%d]", n.GetNodeId(), j))
		}
		seen[n.GetNodeId()] = i
		for j, f := range m.Spec.Features {
			var v float64
			switch {
			case f.Source == "node.cpu_available":
				v = n.GetCpuAvailable()
				if err := checkCapacity(at+".cpu_available", v); err != nil {
					return nil, err
				}
			case f.Source == "node.memory_available":
				v = n.GetMemoryAvailable()
				if err := checkCapacity(at+".memory_available", v); err != nil {
					return nil, err
				}
			default:
				key := strings.TrimPrefix(f.Source, "requirements.")
				var ok bool
				if v, ok = reqs[key]; !ok {
					v = math.NaN() // missing: the spec's policy decides
				}
			}
			raw[j] = v
		}
		base := buf[i*per*w : (i*per+1)*w]
		if err := m.Spec.Canonicalize(base, raw); err != nil {
			var ve *features.ValueError
			if errors.As(err, &ve) && ve.Index >= 0 && strings.HasPrefix(m.Spec.Features[ve.Index%w].Source, "requirements.") {
				return nil, invalid("requirements["+strconv.Quote(strings.TrimPrefix(m.Spec.Features[ve.Index%w].Source, "requirements."))+"]", ve.Reason)
			}
			return nil, fmt.Errorf("%s: %w", at, err)
		}
		for j := 0; j < w; j++ {
			row := buf[(i*per+1+j)*w : (i*per+2+j)*w]
			copy(row, base)
			row[j] = center(m.Spec.Features[j])
		}
	}
	rows := len(nodes) * per
	if m.legacy != nil {
		out, err := m.legacy.OptimizePlacement(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("model %q: %w", m.Name, err)
		}
		return out, nil
	}
	res, err := s.infer(ctx, m, rows, buf, priority(ctx, PriorityHigh))
	if err != nil {
		return nil, err
	}
	sc := make([]float32, rows)
	for i := range sc {
		sc[i] = m.out(res[i], outScore)[0]
	}
	cands := make([]*aipb.PlacementCandidate, len(nodes))
	type contrib struct {
		name  string
		delta float64
	}
	cs := make([]contrib, w)
	for i, n := range nodes {
		score := float64(sc[i*per])
		for j := 0; j < w; j++ {
			cs[j] = contrib{m.Spec.Features[j].Name, score - float64(sc[i*per+1+j])}
		}
		slices.SortStableFunc(cs, func(a, b contrib) int { return cmp.Compare(math.Abs(b.delta), math.Abs(a.delta)) })
		var why strings.Builder
		fmt.Fprintf(&why, "score %.3f; driven by ", score)
		for j := 0; j < min(2, w); j++ {
			if j > 0 {
				why.WriteString(", ")
			}
			fmt.Fprintf(&why, "%s (%+.3f)", cs[j].name, cs[j].delta)
		}
		why.WriteString(" against an average value")
		cands[i] = &aipb.PlacementCandidate{NodeId: n.GetNodeId(), Score: score, Reasoning: why.String()}
	}
	slices.SortStableFunc(cands, func(a, b *aipb.PlacementCandidate) int { return cmp.Compare(b.Score, a.Score) })
	best := cands[0].Score
	margin := 0.1
	if len(cands) > 1 {
		margin = best - cands[1].Score
	}
	overall := best * (0.5 + 0.5*math.Min(1, margin/0.1))
	return &aipb.PlacementResponse{Candidates: cands, OverallConfidence: overall, ModelVersion: m.Version}, nil
}

// checkCapacity refuses a node capacity that is not a finite, non-negative number.
func checkCapacity(field string, v float64) error {
	if err := checkFinite(field, v); err != nil {
		return err
	}
	if v < 0 {
		return invalid(field, fmt.Sprintf("%v is negative; a capacity is 0 or more", v))
	}
	return nil
}

// center is the canonical value of a feature at its normalization center.
func center(f features.Feature) float32 {
	if f.Normalize.Method == features.NormMinMax {
		return 0.5
	}
	return 0
}
