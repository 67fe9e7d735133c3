// Package config is the sidecar's YAML configuration file: its types, defaults, strict decoding,
// and validation whose errors name the file and line.
//
// A Config is plain data. Zero values mean "use the default" where a field's comment says so;
// Load and Parse fill the defaults before validating, so a Config they return is complete.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Tasks a model can serve; each NovaCron RPC needs a model of its task.
const (
	TaskForecast  = "forecast"  // PredictBandwidth, PredictBandwidthBatch, /api/v1/predict[/batch]
	TaskAnomaly   = "anomaly"   // DetectAnomaly, /api/v1/anomaly
	TaskPlacement = "placement" // OptimizePlacement, /api/v1/placement
)

// EmbeddedPrefix marks a path inside the binary's embedded examples (models, specs, configs).
const EmbeddedPrefix = "embedded:"

// Config is the whole file.
type Config struct {
	Listen      Listen      `yaml:"listen"`
	Limits      Limits      `yaml:"limits"`
	ONNXRuntime ONNXRuntime `yaml:"onnxruntime"`
	Models      []Model     `yaml:"models"`
	Routes      Routes      `yaml:"routes"`
	Cache       Cache       `yaml:"cache"`
	Windows     Windows     `yaml:"windows"`
	// ShutdownTimeout bounds the drain of in-flight calls on SIGINT/SIGTERM. Zero: 10s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`

	// Source is the file the config came from ("embedded:configs/default.yaml" for the default);
	// not read from YAML.
	Source string `yaml:"-"`
}

// Cache configures the prediction cache shared by the models.
type Cache struct {
	// Disabled turns the cache off.
	Disabled bool `yaml:"disabled"`
	// MaxEntries bounds the answers (rows) held. Zero: 100000.
	MaxEntries int64 `yaml:"max_entries"`
	// MaxStale is how old an answer a stale fallback (models[].fallback: stale) may serve. Answers
	// are kept this long past their TTL for it. Zero: 10m.
	MaxStale time.Duration `yaml:"max_stale"`
}

// Windows bounds the per-VM metric windows kept for PushMetrics (one store per forecast model).
type Windows struct {
	// MaxVMs bounds the VMs tracked; a new VM beyond it is refused unless an idle one expires.
	// Zero: 100000.
	MaxVMs int `yaml:"max_vms"`
	// IdleExpiry lets a VM that pushed nothing for this long be dropped when room is needed.
	// Zero: 30m.
	IdleExpiry time.Duration `yaml:"idle_expiry"`
	// Step is the time between a window's steps. Zero: 1m.
	Step time.Duration `yaml:"step"`
	// MaxAge refuses (FAILED_PRECONDITION) a window whose newest sample is older. Zero: 2 x step.
	MaxAge time.Duration `yaml:"max_age"`
}

// Listen holds the front ends' addresses. Empty disables nothing: zero values take the defaults
// (127.0.0.1:50051 and 127.0.0.1:8080); "off" disables a front end.
type Listen struct {
	GRPC string `yaml:"grpc"`
	HTTP string `yaml:"http"`
}

// Limits bound what one request may ask.
type Limits struct {
	// MaxMessageBytes is the largest gRPC message or HTTP body accepted. Zero: 4 MiB.
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// RequestTimeout applies to calls that bring no deadline of their own. Zero: 5s.
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// MaxBatchVMs is the most VMs one batch call may carry. Zero: 1024.
	MaxBatchVMs int `yaml:"max_batch_vms"`
	// MaxNodes is the most available_nodes one placement call may carry. Zero: 1024.
	MaxNodes int `yaml:"max_nodes"`
}

// ONNXRuntime configures the in-process runtime.
type ONNXRuntime struct {
	// Library is the path of libonnxruntime.so. Empty: $ONNXRUNTIME_LIB, then the repository's
	// .onnxruntime/ cache (filled by scripts/fetch-onnxruntime.sh, which make run calls).
	Library string `yaml:"library"`
}

// Model is one model the sidecar loads.
type Model struct {
	// Name identifies the model in requests (the "model" field) and metrics. Required.
	Name string `yaml:"name"`
	// Task is forecast, anomaly or placement. Required.
	Task string `yaml:"task"`
	// Path of the .onnx file, relative to the config file's folder, or embedded:models/X.onnx.
	Path string `yaml:"path"`
	// Spec is the feature spec file (same rules as Path). Required.
	Spec string `yaml:"spec"`
	// Pool sizes the ONNX Runtime session pool.
	Pool Pool `yaml:"pool"`
	// Batching configures the model's micro-batcher.
	Batching Batching `yaml:"batching"`
	// Anomaly holds the verdict thresholds of an anomaly model.
	Anomaly Anomaly `yaml:"anomaly"`
	// CacheTTL is how long the prediction cache serves this model's answers; a negative value
	// (-1s) keeps them out of the cache. Zero: 1m.
	CacheTTL time.Duration `yaml:"cache_ttl"`
	// Backend says where the model runs: in the process (the default) or on remote servers.
	Backend Backend `yaml:"backend"`
	// Fallback answers when every endpoint of a remote backend is down: none (the default; the
	// call fails UNAVAILABLE), local (the ONNX model at path, run in the process) or stale (the
	// model's last cached answer for the same input, at most cache.max_stale old, marked stale).
	Fallback string `yaml:"fallback"`
}

// Backend kinds.
const (
	BackendONNX       = "onnx"        // ONNX Runtime in the process, from models[].path
	BackendKServe     = "kserve"      // Open Inference Protocol servers over gRPC (Triton, KServe, a sidecar)
	BackendLegacyHTTP = "legacy_http" // the seed's HTTP/JSON AI service (/api/v1/predict...)
	BackendLegacyGRPC = "legacy_grpc" // the seed's gRPC novacron.ai.AIService
)

// Fallback kinds.
const (
	FallbackNone  = "none"
	FallbackLocal = "local"
	FallbackStale = "stale"
)

// Backend is where a model runs. A remote backend balances over its endpoints (least outstanding
// requests of two random choices), with a circuit breaker per endpoint, active health checks,
// retries within a budget, optional hedging, and failover.
type Backend struct {
	// Kind is onnx, kserve, legacy_http or legacy_grpc. Zero: onnx.
	Kind string `yaml:"kind"`
	// Endpoints of a remote backend: host:port (kserve, legacy_grpc) or base URLs such as
	// http://10.0.0.5:8080 (legacy_http). At least one for remote kinds; none for onnx.
	Endpoints []string `yaml:"endpoints"`
	// Model is the model's name on the remote servers (kserve). Zero: the model's name.
	Model string `yaml:"model"`
	// Version asks the remote servers for one version (kserve). Zero: the servers' choice.
	Version string `yaml:"version"`
	// Timeout bounds one attempt on one endpoint (the caller's deadline bounds them all). Zero: 2s.
	Timeout time.Duration `yaml:"timeout"`
	// Metadata gives a remote model's properties that the protocol does not carry
	// (novacron.labels, novacron.confidence_scale, ...). Zero: read from the model at path when
	// one is given.
	Metadata map[string]string `yaml:"metadata"`
	Health   Health            `yaml:"health"`
	Breaker  Breaker           `yaml:"breaker"`
	Retry    Retry             `yaml:"retry"`
	// HedgeDelay sends a second attempt to another endpoint when the first has not answered after
	// this long; the first answer wins. Zero: no hedging.
	HedgeDelay time.Duration `yaml:"hedge_delay"`
}

// Remote reports whether the backend runs on other servers.
func (b Backend) Remote() bool { return b.Kind != BackendONNX }

// Health configures active health checks of each endpoint (gRPC: the protocol's ModelReady or
// grpc.health.v1; HTTP: GET /healthz).
type Health struct {
	// Interval between checks of one endpoint. Zero: 1s. Negative: no active checks.
	Interval time.Duration `yaml:"interval"`
	// Timeout of one check. Zero: 500ms.
	Timeout time.Duration `yaml:"timeout"`
	// UnhealthyThreshold failed checks in a row mark an endpoint down. Zero: 1.
	UnhealthyThreshold int `yaml:"unhealthy_threshold"`
	// HealthyThreshold passed checks in a row mark it up again. Zero: 1.
	HealthyThreshold int `yaml:"healthy_threshold"`
}

// Breaker configures each endpoint's circuit breaker (sony/gobreaker). Cancellations and bad
// input never count as failures.
type Breaker struct {
	// ConsecutiveFailures open the breaker. Zero: 5.
	ConsecutiveFailures int `yaml:"consecutive_failures"`
	// FailureRatio also opens it when at least MinRequests calls of the last Interval failed in
	// this proportion. Zero: off.
	FailureRatio float64 `yaml:"failure_ratio"`
	// MinRequests for FailureRatio. Zero: 10.
	MinRequests int `yaml:"min_requests"`
	// Interval over which FailureRatio counts. Zero: 10s.
	Interval time.Duration `yaml:"interval"`
	// OpenTimeout is how long an open breaker refuses before it lets probes through (half-open).
	// Zero: 1s.
	OpenTimeout time.Duration `yaml:"open_timeout"`
	// HalfOpenRequests is how many probes a half-open breaker lets through; all must succeed to
	// close it. Zero: 1.
	HalfOpenRequests int `yaml:"half_open_requests"`
}

// Retry configures retries of failed attempts on another endpoint. Only failures that are safe to
// retry are (the endpoint down, overloaded, timed out, or answering malformed); never bad input or
// a caller's cancellation, and never past the caller's deadline.
type Retry struct {
	// MaxAttempts per call, the first included. Zero: 3. 1: no retries.
	MaxAttempts int `yaml:"max_attempts"`
	// Budget bounds retries and hedges to this fraction of calls (a sliding 10s window). Zero: 0.1.
	Budget float64 `yaml:"budget"`
	// MinPerSecond retries are always allowed, so that low traffic can retry. Zero: 10.
	MinPerSecond float64 `yaml:"min_per_second"`
}

// Pool sizes an ONNX Runtime session pool.
type Pool struct {
	// Sessions is the number of sessions (concurrent runs). Zero: 2.
	Sessions int `yaml:"sessions"`
	// IntraOpThreads is ORT's intra-op thread count per session. Zero: 1.
	IntraOpThreads int `yaml:"intra_op_threads"`
}

// Batching configures one model's micro-batcher (package batcher), modelled on Triton's dynamic
// batcher. Sizes count rows: a placement call with 40 nodes is 40 rows (times the features it
// scores for its reasoning).
type Batching struct {
	// Disabled sends every call to the backend as its own batch.
	Disabled bool `yaml:"disabled"`
	// MaxBatchSize is the most rows of one batch; larger calls are split and reassembled. Zero: 64.
	MaxBatchSize int `yaml:"max_batch_size"`
	// MaxQueueDelay is how long the oldest waiting row may wait for more to join it. Zero (the
	// default) batches only what is already waiting when a backend slot frees up.
	MaxQueueDelay time.Duration `yaml:"max_queue_delay"`
	// PreferredBatchSizes: a batch of one of these sizes is sent at once, without waiting out the
	// delay.
	PreferredBatchSizes []int `yaml:"preferred_batch_sizes"`
	// MaxQueueSize bounds the rows waiting; a call that would exceed it is refused at once with
	// RESOURCE_EXHAUSTED / 429 and a retry hint. Zero: 64 x MaxBatchSize.
	MaxQueueSize int `yaml:"max_queue_size"`
	// MaxInflightBatches is the number of batches running at once. Zero: pool.sessions, or for a
	// remote backend 4 per endpoint. Without overlap, a batch beyond the first starts only when
	// full, so a backlog (large batch calls) uses more sessions while small batches never run side
	// by side.
	MaxInflightBatches int `yaml:"max_inflight_batches"`
	// Overlap lets batches that are not full run side by side, up to max_inflight_batches: right
	// for a remote backend, whose batch time is mostly the network and the server. Unset: on for
	// remote backends, off for onnx.
	Overlap *bool `yaml:"overlap"`
	// Adaptive chooses the wait per batch from the measured batch-latency curve and arrival rate,
	// never longer than MaxQueueDelay (which then defaults to 2ms).
	Adaptive bool `yaml:"adaptive"`
}

// Anomaly holds the thresholds that turn an anomaly score (1 − P(normal)) into a verdict: the call
// is an anomaly when score >= Threshold; its severity is low from Threshold, medium from Medium,
// high from High, critical from Critical. Zero values: 0.5, 0.7, 0.85, 0.95.
type Anomaly struct {
	Threshold float64 `yaml:"threshold"`
	Medium    float64 `yaml:"medium"`
	High      float64 `yaml:"high"`
	Critical  float64 `yaml:"critical"`
}

// Routes name the default model of each RPC family, used when a request names none. A route left
// empty defaults to the model named bandwidth, anomaly or placement when one is configured, else
// stays empty: then requests of that family must name their model.
type Routes struct {
	PredictBandwidth  string `yaml:"predict_bandwidth"`
	DetectAnomaly     string `yaml:"detect_anomaly"`
	OptimizePlacement string `yaml:"optimize_placement"`
}

// SetDefaults fills every zero value that has a default.
func (c *Config) SetDefaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.Listen.GRPC, "127.0.0.1:50051")
	def(&c.Listen.HTTP, "127.0.0.1:8080")
	if c.Limits.MaxMessageBytes == 0 {
		c.Limits.MaxMessageBytes = 4 << 20
	}
	if c.Limits.RequestTimeout == 0 {
		c.Limits.RequestTimeout = 5 * time.Second
	}
	if c.Limits.MaxBatchVMs == 0 {
		c.Limits.MaxBatchVMs = 1024
	}
	if c.Limits.MaxNodes == 0 {
		c.Limits.MaxNodes = 1024
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.Cache.MaxEntries == 0 {
		c.Cache.MaxEntries = 100000
	}
	if c.Cache.MaxStale == 0 {
		c.Cache.MaxStale = 10 * time.Minute
	}
	has := func(name string) string {
		for _, m := range c.Models {
			if m.Name == name {
				return name
			}
		}
		return ""
	}
	def(&c.Routes.PredictBandwidth, has("bandwidth"))
	def(&c.Routes.DetectAnomaly, has("anomaly"))
	def(&c.Routes.OptimizePlacement, has("placement"))
	for i := range c.Models {
		m := &c.Models[i]
		if m.Pool.Sessions == 0 {
			m.Pool.Sessions = 2
		}
		if m.Pool.IntraOpThreads == 0 {
			m.Pool.IntraOpThreads = 1
		}
		if m.CacheTTL == 0 {
			m.CacheTTL = time.Minute
		}
		be := &m.Backend
		def(&be.Kind, BackendONNX)
		def(&be.Model, m.Name)
		def(&m.Fallback, FallbackNone)
		if be.Remote() {
			dur := func(d *time.Duration, v time.Duration) {
				if *d == 0 {
					*d = v
				}
			}
			num := func(n *int, v int) {
				if *n == 0 {
					*n = v
				}
			}
			dur(&be.Timeout, 2*time.Second)
			dur(&be.Health.Interval, time.Second)
			dur(&be.Health.Timeout, 500*time.Millisecond)
			num(&be.Health.UnhealthyThreshold, 1)
			num(&be.Health.HealthyThreshold, 1)
			num(&be.Breaker.ConsecutiveFailures, 5)
			num(&be.Breaker.MinRequests, 10)
			dur(&be.Breaker.Interval, 10*time.Second)
			dur(&be.Breaker.OpenTimeout, time.Second)
			num(&be.Breaker.HalfOpenRequests, 1)
			num(&be.Retry.MaxAttempts, 3)
			if be.Retry.Budget == 0 {
				be.Retry.Budget = 0.1
			}
			if be.Retry.MinPerSecond == 0 {
				be.Retry.MinPerSecond = 10
			}
		}
		b := &m.Batching
		if b.MaxBatchSize == 0 {
			b.MaxBatchSize = 64
		}
		if b.MaxQueueSize == 0 {
			b.MaxQueueSize = 64 * b.MaxBatchSize
		}
		if b.MaxInflightBatches == 0 {
			b.MaxInflightBatches = m.Pool.Sessions
			if m.Backend.Kind != BackendONNX && m.Backend.Kind != "" {
				b.MaxInflightBatches = min(4*max(len(m.Backend.Endpoints), 1), 1024)
			}
		}
		if b.Overlap == nil {
			on := m.Backend.Kind != BackendONNX && m.Backend.Kind != ""
			b.Overlap = &on
		}
		if b.Adaptive && b.MaxQueueDelay == 0 {
			b.MaxQueueDelay = 2 * time.Millisecond
		}
		if m.Task == TaskAnomaly {
			a := &m.Anomaly
			for _, p := range []struct {
				f *float64
				v float64
			}{{&a.Threshold, 0.5}, {&a.Medium, 0.7}, {&a.High, 0.85}, {&a.Critical, 0.95}} {
				if *p.f == 0 {
					*p.f = p.v
				}
			}
		}
	}
}

// Validate checks a defaulted Config. Each error names its YAML path (models[1].pool.sessions).
func (c *Config) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	for _, l := range []struct{ path, addr string }{{"listen.grpc", c.Listen.GRPC}, {"listen.http", c.Listen.HTTP}} {
		if l.addr == "off" {
			continue
		}
		if _, _, err := net.SplitHostPort(l.addr); err != nil {
			add(l.path, "%q is not host:port (or \"off\"): %v", l.addr, err)
		}
	}
	if c.Listen.GRPC == "off" && c.Listen.HTTP == "off" {
		add("listen", "both front ends are off")
	}
	if c.Limits.MaxMessageBytes < 1024 {
		add("limits.max_message_bytes", "%d is below 1024", c.Limits.MaxMessageBytes)
	}
	if c.Limits.RequestTimeout < 0 {
		add("limits.request_timeout", "must not be negative")
	}
	if c.Limits.MaxBatchVMs < 1 {
		add("limits.max_batch_vms", "must be at least 1")
	}
	if c.Limits.MaxNodes < 1 {
		add("limits.max_nodes", "must be at least 1")
	}
	if c.ShutdownTimeout < 0 {
		add("shutdown_timeout", "must not be negative")
	}
	if c.Windows.MaxVMs < 0 || c.Windows.IdleExpiry < 0 || c.Windows.Step < 0 || c.Windows.MaxAge < 0 {
		add("windows", "values must not be negative")
	}
	if c.Cache.MaxStale < 0 {
		add("cache.max_stale", "must not be negative")
	}
	if c.Cache.MaxEntries < 1 || c.Cache.MaxEntries > 1<<30 {
		add("cache.max_entries", "%d is not in 1..%d", c.Cache.MaxEntries, 1<<30)
	}
	names := map[string]string{}
	for i, m := range c.Models {
		p := fmt.Sprintf("models[%d]", i)
		if !nameRE.MatchString(m.Name) {
			add(p+".name", "%q must match %s", m.Name, nameRE)
		} else if _, dup := names[m.Name]; dup {
			add(p+".name", "%q is used twice", m.Name)
		}
		names[m.Name] = m.Task
		switch m.Task {
		case TaskForecast, TaskAnomaly, TaskPlacement:
		default:
			add(p+".task", "%q is not one of forecast, anomaly, placement", m.Task)
		}
		validateBackend(c, p, m, add)
		if m.Spec == "" {
			add(p+".spec", "required: the feature spec YAML the model was trained with")
		}
		if m.Pool.Sessions < 1 || m.Pool.Sessions > 64 {
			add(p+".pool.sessions", "%d is not in 1..64", m.Pool.Sessions)
		}
		if m.Pool.IntraOpThreads < 1 || m.Pool.IntraOpThreads > 64 {
			add(p+".pool.intra_op_threads", "%d is not in 1..64", m.Pool.IntraOpThreads)
		}
		b := m.Batching
		if b.MaxBatchSize < 1 || b.MaxBatchSize > 65536 {
			add(p+".batching.max_batch_size", "%d is not in 1..65536", b.MaxBatchSize)
		}
		if b.MaxQueueDelay < 0 || b.MaxQueueDelay > time.Second {
			add(p+".batching.max_queue_delay", "%v is not in 0..1s", b.MaxQueueDelay)
		}
		for i, n := range b.PreferredBatchSizes {
			if n < 1 || n > b.MaxBatchSize {
				add(fmt.Sprintf("%s.batching.preferred_batch_sizes[%d]", p, i), "%d is not in 1..max_batch_size (%d)", n, b.MaxBatchSize)
			}
		}
		if b.MaxQueueSize < b.MaxBatchSize {
			add(p+".batching.max_queue_size", "%d is below max_batch_size %d", b.MaxQueueSize, b.MaxBatchSize)
		}
		if b.MaxInflightBatches < 1 || b.MaxInflightBatches > 1024 {
			add(p+".batching.max_inflight_batches", "%d is not in 1..1024", b.MaxInflightBatches)
		}
		if m.Task == TaskAnomaly {
			a := m.Anomaly
			if !(0 < a.Threshold && a.Threshold <= a.Medium && a.Medium <= a.High && a.High <= a.Critical && a.Critical <= 1) {
				add(p+".anomaly", "need 0 < threshold <= medium <= high <= critical <= 1, got %v, %v, %v, %v",
					a.Threshold, a.Medium, a.High, a.Critical)
			}
		} else if m.Anomaly != (Anomaly{}) {
			add(p+".anomaly", "only an anomaly model takes anomaly thresholds")
		}
	}
	for _, r := range []struct{ path, name, task string }{
		{"routes.predict_bandwidth", c.Routes.PredictBandwidth, TaskForecast},
		{"routes.detect_anomaly", c.Routes.DetectAnomaly, TaskAnomaly},
		{"routes.optimize_placement", c.Routes.OptimizePlacement, TaskPlacement},
	} {
		task, ok := names[r.name]
		switch {
		case r.name == "":
		case !ok:
			add(r.path, "model %q is not in models", r.name)
		case task != r.task:
			add(r.path, "model %q has task %s, this route needs a %s model", r.name, task, r.task)
		}
	}
	return errors.Join(errs...)
}

// validateBackend checks a model's backend and fallback.
func validateBackend(c *Config, p string, m Model, add func(path, format string, args ...any)) {
	be := m.Backend
	switch be.Kind {
	case BackendONNX:
		if m.Path == "" {
			add(p+".path", "required: the .onnx file (or embedded:models/NAME.onnx)")
		}
		if len(be.Endpoints) > 0 {
			add(p+".backend.endpoints", "an onnx backend runs in the process; endpoints are for kserve, legacy_http and legacy_grpc")
		}
		if m.Fallback != FallbackNone {
			add(p+".fallback", "%q: only a remote backend takes a fallback", m.Fallback)
		}
		return
	case BackendKServe, BackendLegacyHTTP, BackendLegacyGRPC:
	default:
		add(p+".backend.kind", "%q is not one of onnx, kserve, legacy_http, legacy_grpc", be.Kind)
		return
	}
	if len(be.Endpoints) == 0 {
		add(p+".backend.endpoints", "a %s backend needs at least one endpoint", be.Kind)
	}
	seen := map[string]bool{}
	for i, e := range be.Endpoints {
		ep := fmt.Sprintf("%s.backend.endpoints[%d]", p, i)
		if seen[e] {
			add(ep, "%q is listed twice", e)
		}
		seen[e] = true
		if be.Kind == BackendLegacyHTTP {
			if !strings.HasPrefix(e, "http://") && !strings.HasPrefix(e, "https://") {
				add(ep, "%q is not a base URL such as http://127.0.0.1:8080", e)
			}
		} else if _, _, err := net.SplitHostPort(e); err != nil {
			add(ep, "%q is not host:port: %v", e, err)
		}
	}
	if be.Timeout < 0 || be.HedgeDelay < 0 || be.Health.Timeout < 0 || be.Breaker.OpenTimeout < 0 || be.Breaker.Interval < 0 {
		add(p+".backend", "durations must not be negative")
	}
	if be.Health.UnhealthyThreshold < 1 || be.Health.HealthyThreshold < 1 {
		add(p+".backend.health", "thresholds must be at least 1")
	}
	if be.Breaker.ConsecutiveFailures < 1 || be.Breaker.HalfOpenRequests < 1 || be.Breaker.MinRequests < 1 {
		add(p+".backend.breaker", "consecutive_failures, half_open_requests and min_requests must be at least 1")
	}
	if be.Breaker.FailureRatio < 0 || be.Breaker.FailureRatio > 1 {
		add(p+".backend.breaker.failure_ratio", "%v is not in 0..1", be.Breaker.FailureRatio)
	}
	if be.Retry.MaxAttempts < 1 || be.Retry.MaxAttempts > 10 {
		add(p+".backend.retry.max_attempts", "%d is not in 1..10", be.Retry.MaxAttempts)
	}
	if be.Retry.Budget < 0 || be.Retry.Budget > 1 || be.Retry.MinPerSecond < 0 {
		add(p+".backend.retry", "budget must be in 0..1 and min_per_second not negative")
	}
	if be.HedgeDelay > 0 && be.HedgeDelay >= be.Timeout {
		add(p+".backend.hedge_delay", "%v is not shorter than the attempt timeout %v", be.HedgeDelay, be.Timeout)
	}
	if be.HedgeDelay > 0 && be.Retry.MaxAttempts < 2 {
		add(p+".backend.hedge_delay", "hedging needs retry.max_attempts of 2 or more (a hedge is an attempt), got %d", be.Retry.MaxAttempts)
	}
	if m.Fallback != FallbackNone && be.Kind != BackendKServe {
		add(p+".fallback", "%q: only a kserve backend takes a fallback (a legacy service's answers are not cached, and it has no local equivalent)", m.Fallback)
		return
	}
	switch m.Fallback {
	case FallbackNone:
	case FallbackLocal:
		if m.Path == "" {
			add(p+".fallback", "local needs path: the .onnx model to run when every endpoint is down")
		}
	case FallbackStale:
		if c.Cache.Disabled || m.CacheTTL < 0 {
			add(p+".fallback", "stale serves cached answers; it needs the cache on and cache_ttl not negative")
		}
	default:
		add(p+".fallback", "%q is not one of none, local, stale", m.Fallback)
	}
}

// lineRE matches yaml.v3's "line N: " prefix, rewritten as "N: " after the file name.
var lineRE = regexp.MustCompile(`^line (\d+):`)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// FieldError is a validation error at a YAML path; Load adds the file and line.
type FieldError struct {
	Path string
	Msg  string
	File string
	Line int
}

func (e *FieldError) Error() string {
	if e.File != "" && e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Path, e.Msg)
	}
	return e.Path + ": " + e.Msg
}

// Load reads a config file. An empty path loads the embedded default from embedded (the
// examples' files: configs/default.yaml and what it names).
func Load(path string, embedded fs.FS) (*Config, error) {
	if path == "" {
		path = EmbeddedPrefix + "configs/default.yaml"
	}
	b, err := ReadFile(path, "", embedded)
	if err != nil {
		return nil, err
	}
	c, err := Parse(path, b)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Parse decodes b strictly (unknown keys are errors), fills defaults and validates. name is used
// in error messages (the file name).
func Parse(name string, b []byte) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, errors.New(name + ":" + lineRE.ReplaceAllString(strings.TrimPrefix(err.Error(), "yaml: "), "$1:"))
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: the file is empty", name)
		}
		var te *yaml.TypeError
		if errors.As(err, &te) {
			var errs []error
			for _, e := range te.Errors {
				errs = append(errs, errors.New(name+":"+lineRE.ReplaceAllString(e, "$1:")))
			}
			return nil, errors.Join(errs...)
		}
		return nil, fmt.Errorf("%s: %s", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: holds more than one YAML document (a second ---); give one config", name)
	}
	c.Source = name
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		var out []error
		for _, e := range unjoin(err) {
			var fe *FieldError
			if errors.As(e, &fe) {
				fe.File = name
				fe.Line = lineOf(&root, fe.Path)
			}
			out = append(out, e)
		}
		return nil, errors.Join(out...)
	}
	return &c, nil
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// lineOf finds the line of a path such as models[1].pool.sessions in a YAML document, falling
// back to the nearest ancestor present; 0 when nothing matches.
func lineOf(root *yaml.Node, path string) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, part := range strings.Split(path, ".") {
		key, idx := part, -1
		if i := strings.IndexByte(part, '['); i >= 0 && strings.HasSuffix(part, "]") {
			key = part[:i]
			idx, _ = strconv.Atoi(part[i+1 : len(part)-1])
		}
		next := (*yaml.Node)(nil)
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == key {
					line = n.Content[i].Line
					next = n.Content[i+1]
					break
				}
			}
		}
		if next == nil {
			return line
		}
		n = next
		if idx >= 0 {
			if n.Kind != yaml.SequenceNode || idx >= len(n.Content) {
				return line
			}
			n = n.Content[idx]
			line = n.Line
		}
	}
	return line
}

// ReadFile reads a file named in a config: embedded:NAME from embedded, an absolute path as is,
// a relative one from dir (the config file's folder; "" for the working directory).
func ReadFile(path, dir string, embedded fs.FS) ([]byte, error) {
	if name, ok := strings.CutPrefix(path, EmbeddedPrefix); ok {
		if embedded == nil {
			return nil, fmt.Errorf("%s: no embedded files in this build", path)
		}
		b, err := fs.ReadFile(embedded, name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return b, nil
	}
	if !filepath.IsAbs(path) && dir != "" {
		path = filepath.Join(dir, path)
	}
	return os.ReadFile(path)
}

// Dir is the folder relative paths in c are resolved from: the config file's folder, or "" for
// an embedded config (whose paths are embedded too).
func (c *Config) Dir() string {
	if strings.HasPrefix(c.Source, EmbeddedPrefix) || c.Source == "" {
		return ""
	}
	return filepath.Dir(c.Source)
}
