// Package config is the sidecar's YAML configuration file: its types, defaults, strict decoding,
// and validation whose errors name the file and line.
//
// A Config is plain data. Zero values mean "use the default" where a field's comment says so;
// Load and Parse fill the defaults before validating, so a Config they return is complete.
package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/batcher"
	"github.com/novacron/sidecar/proxy"
)

// Tasks a model can serve (the pipeline's, see proxy.TaskForecast).
const (
	TaskForecast  = proxy.TaskForecast
	TaskAnomaly   = proxy.TaskAnomaly
	TaskPlacement = proxy.TaskPlacement
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

	// root is the parsed file (nil for a Config built in code): Line finds paths in it.
	root *yaml.Node
}

// Cache configures the prediction cache shared by the models.
type Cache struct {
	// Disabled turns the cache off.
	Disabled bool `yaml:"disabled"`
	// MaxEntries bounds the answers (rows) held. Zero: 100000.
	MaxEntries int64 `yaml:"max_entries"`
	// MaxStale is how old an answer a stale fallback (models[].fallback: stale) may serve. Answers
	// are kept this long past their TTL for it. Zero: proxy.DefaultMaxStale.
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
	// AllowedHosts are the Host header values the HTTP front end answers besides the bound
	// address and the loopback names (localhost, 127.0.0.1, [::1], with or without the port);
	// a request naming another host is refused (403), which keeps web pages from reaching the
	// sidecar through DNS rebinding. A bare "*" allows any host.
	AllowedHosts []string `yaml:"allowed_hosts"`
	// MaxConnectionIdle closes a client connection (gRPC or HTTP keep-alive) that carried no call
	// for this long. Zero: proxy.DefaultMaxConnectionIdle; negative: never.
	MaxConnectionIdle time.Duration `yaml:"max_connection_idle"`
}

// Limits bound what one request may ask.
type Limits struct {
	// MaxMessageBytes is the largest gRPC message or HTTP body accepted. Zero:
	// proxy.DefaultMaxMessageBytes.
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// RequestTimeout applies to calls that bring no deadline of their own. Zero: 5s.
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// MaxBatchVMs is the most VMs one batch call may carry. Zero: proxy.DefaultMaxBatchVMs.
	MaxBatchVMs int `yaml:"max_batch_vms"`
	// MaxNodes is the most available_nodes one placement call may carry. Zero:
	// proxy.DefaultMaxNodes.
	MaxNodes int `yaml:"max_nodes"`
	// MaxIDBytes bounds identifiers in requests (vm_id, workload_id, node_id, model names, metric
	// sample vm_ids). Zero: proxy.DefaultMaxIDBytes.
	MaxIDBytes int `yaml:"max_id_bytes"`
	// MaxConcurrentCalls bounds the gRPC calls in flight at once, across connections (health
	// checks apart); one beyond is refused at once with RESOURCE_EXHAUSTED and a retry hint. Each
	// call's message is read whole (at most MaxMessageBytes) before the sidecar sees it, so this is
	// what bounds the memory of gRPC requests. Zero: proxy.DefaultMaxConcurrentCalls.
	MaxConcurrentCalls int `yaml:"max_concurrent_calls"`
	// MaxPushSamples bounds the samples of one PushMetrics call (or one StreamMetrics message).
	// Zero: proxy.DefaultMaxPushSamples.
	MaxPushSamples int `yaml:"max_push_samples"`
	// MaxInflightBytes bounds the request bodies (HTTP) and messages (gRPC) being decoded and served
	// at once, in bytes; a call beyond it is refused at once (429 / RESOURCE_EXHAUSTED, with a retry
	// hint). Zero: proxy.DefaultMaxInflightBytes.
	MaxInflightBytes int64 `yaml:"max_inflight_bytes"`
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
	// Timeout bounds one attempt on one endpoint (the caller's deadline bounds them all). Zero:
	// backends.DefaultAttemptTimeout.
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
	// Interval between checks of one endpoint. Zero: backends.DefaultHealthInterval. Negative: no
	// active checks.
	Interval time.Duration `yaml:"interval"`
	// Timeout of one check. Zero: backends.DefaultHealthTimeout.
	Timeout time.Duration `yaml:"timeout"`
	// UnhealthyThreshold failed checks in a row mark an endpoint down. Zero:
	// backends.DefaultHealthThreshold.
	UnhealthyThreshold int `yaml:"unhealthy_threshold"`
	// HealthyThreshold passed checks in a row mark it up again. Zero:
	// backends.DefaultHealthThreshold.
	HealthyThreshold int `yaml:"healthy_threshold"`
}

// Breaker configures each endpoint's circuit breaker (sony/gobreaker). Cancellations and bad
// input never count as failures.
type Breaker struct {
	// ConsecutiveFailures open the breaker. Zero: backends.DefaultConsecutiveFailures.
	ConsecutiveFailures int `yaml:"consecutive_failures"`
	// FailureRatio also opens it when at least MinRequests calls of the last Interval failed in
	// this proportion. Zero: off.
	FailureRatio float64 `yaml:"failure_ratio"`
	// MinRequests for FailureRatio. Zero: backends.DefaultMinRequests.
	MinRequests int `yaml:"min_requests"`
	// Interval over which FailureRatio counts. Zero: backends.DefaultFailureWindow.
	Interval time.Duration `yaml:"interval"`
	// OpenTimeout is how long an open breaker refuses before it lets probes through (half-open).
	// Zero: backends.DefaultOpenTimeout.
	OpenTimeout time.Duration `yaml:"open_timeout"`
	// HalfOpenRequests is how many probes a half-open breaker lets through; all must succeed to
	// close it. Zero: backends.DefaultHalfOpenRequests.
	HalfOpenRequests int `yaml:"half_open_requests"`
}

// Retry configures retries of failed attempts on another endpoint. Only failures that are safe to
// retry are (the endpoint down, overloaded, timed out, or answering malformed); never bad input or
// a caller's cancellation, and never past the caller's deadline.
type Retry struct {
	// MaxAttempts per call, the first included. Zero: backends.DefaultMaxAttempts. 1: no retries.
	MaxAttempts int `yaml:"max_attempts"`
	// Budget bounds retries and hedges to this fraction of calls (a sliding window). Zero:
	// backends.DefaultRetryBudget.
	Budget float64 `yaml:"budget"`
	// MinPerSecond retries are always allowed, so that low traffic can retry. Zero:
	// backends.DefaultMinRetriesPerSecond.
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
	// MaxBatchSize is the most rows of one batch; larger calls are split and reassembled. Zero:
	// batcher.DefaultMaxBatchSize.
	MaxBatchSize int `yaml:"max_batch_size"`
	// MaxQueueDelay is how long the oldest waiting row may wait for more to join it. Zero (the
	// default) batches only what is already waiting when a backend slot frees up.
	MaxQueueDelay time.Duration `yaml:"max_queue_delay"`
	// PreferredBatchSizes: a batch of one of these sizes is sent at once, without waiting out the
	// delay.
	PreferredBatchSizes []int `yaml:"preferred_batch_sizes"`
	// MaxQueueSize bounds the rows waiting; a call that would exceed it is refused at once with
	// RESOURCE_EXHAUSTED / 429 and a retry hint. Zero: batcher.DefaultQueueBatches x MaxBatchSize.
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
	if c.Limits.RequestTimeout == 0 {
		c.Limits.RequestTimeout = 5 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.Cache.MaxEntries == 0 {
		c.Cache.MaxEntries = 100000
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
		b := &m.Batching
		// The batcher's own defaults, filled in here because the checks below compare them.
		if b.MaxBatchSize == 0 {
			b.MaxBatchSize = batcher.DefaultMaxBatchSize
		}
		if b.MaxQueueSize == 0 {
			b.MaxQueueSize = batcher.DefaultQueueBatches * b.MaxBatchSize
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
	if c.Limits.MaxIDBytes < 0 {
		add("limits.max_id_bytes", "%d is negative (0: the default)", c.Limits.MaxIDBytes)
	}
	if c.Limits.MaxConcurrentCalls < 0 {
		add("limits.max_concurrent_calls", "%d is negative (0: the default)", c.Limits.MaxConcurrentCalls)
	}
	if c.Limits.MaxPushSamples < 0 {
		add("limits.max_push_samples", "%d is negative (0: the default)", c.Limits.MaxPushSamples)
	}
	if c.Limits.MaxInflightBytes < 0 {
		add("limits.max_inflight_bytes", "%d is negative (0: the default)", c.Limits.MaxInflightBytes)
	} else if msg := cmp.Or(c.Limits.MaxMessageBytes, proxy.DefaultMaxMessageBytes); c.Limits.MaxInflightBytes > 0 && c.Limits.MaxInflightBytes < int64(msg) {
		add("limits.max_inflight_bytes", "%d is below limits.max_message_bytes (%d): one largest call would never fit", c.Limits.MaxInflightBytes, msg)
	}
	for i, h := range c.Listen.AllowedHosts {
		if h == "" || strings.ContainsAny(h, " /") {
			add(fmt.Sprintf("listen.allowed_hosts[%d]", i), "%q is not a host name (or host:port, or *)", h)
		}
	}
	if c.Limits.MaxMessageBytes != 0 && c.Limits.MaxMessageBytes < 1024 {
		add("limits.max_message_bytes", "%d is below 1024 (0: the default)", c.Limits.MaxMessageBytes)
	}
	if c.Limits.RequestTimeout < 0 {
		add("limits.request_timeout", "must not be negative")
	}
	if c.Limits.MaxBatchVMs < 0 {
		add("limits.max_batch_vms", "must be at least 1")
	}
	if c.Limits.MaxNodes < 0 {
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
	if be.Health.UnhealthyThreshold < 0 || be.Health.HealthyThreshold < 0 {
		add(p+".backend.health", "thresholds must be at least 1 (0: the default)")
	}
	if be.Breaker.ConsecutiveFailures < 0 || be.Breaker.HalfOpenRequests < 0 || be.Breaker.MinRequests < 0 {
		add(p+".backend.breaker", "consecutive_failures, half_open_requests and min_requests must be at least 1 (0: the default)")
	}
	if be.Breaker.FailureRatio < 0 || be.Breaker.FailureRatio > 1 {
		add(p+".backend.breaker.failure_ratio", "%v is not in 0..1", be.Breaker.FailureRatio)
	}
	attempts := cmp.Or(be.Retry.MaxAttempts, backends.DefaultMaxAttempts)
	if be.Retry.MaxAttempts < 0 || be.Retry.MaxAttempts > 10 {
		add(p+".backend.retry.max_attempts", "%d is not in 1..10 (0: the default, %d)", be.Retry.MaxAttempts, backends.DefaultMaxAttempts)
	}
	if be.Retry.Budget < 0 || be.Retry.Budget > 1 || be.Retry.MinPerSecond < 0 {
		add(p+".backend.retry", "budget must be in 0..1 and min_per_second not negative")
	}
	if timeout := cmp.Or(be.Timeout, backends.DefaultAttemptTimeout); be.HedgeDelay > 0 && be.HedgeDelay >= timeout {
		add(p+".backend.hedge_delay", "%v is not shorter than the attempt timeout %v", be.HedgeDelay, timeout)
	}
	if be.HedgeDelay > 0 && attempts < 2 {
		add(p+".backend.hedge_delay", "hedging needs retry.max_attempts of 2 or more (a hedge is an attempt), got %d", attempts)
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
	msg := e.Msg
	if e.Path != "" {
		msg = e.Path + ": " + msg
	}
	if e.File != "" && e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, msg)
	}
	return msg
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
// in error messages (the file name). Each error names the file, the line and the YAML path; an
// unknown key comes with the closest known key (or the keys of its level), a value of the wrong
// type with what to write instead (a duration with its unit, such as 5s).
func Parse(name string, b []byte) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, errors.New(name + ":" + lineRE.ReplaceAllString(strings.TrimPrefix(err.Error(), "yaml: "), "$1:"))
	}
	if err := check(name, &root); err != nil {
		return nil, err
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
	c.root = &root
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

// Line is the line of a YAML path such as models[1].pool.sessions in the file c was parsed from,
// or of its nearest ancestor there (for a model added in code: the models key); 0 for a Config
// built in code. Safe for concurrent use (c's file is not changed after Parse).
func (c *Config) Line(path string) int {
	if c.root == nil {
		return 0
	}
	return lineOf(c.root, path)
}

// Pos is where a YAML path is in the file c came from, as an error message's prefix: "file:line",
// or the file alone when no line is known (see Line), or "config" for a Config built in code.
func (c *Config) Pos(path string) string {
	name := c.Source
	if name == "" {
		name = "config"
	}
	if line := c.Line(path); line > 0 {
		return fmt.Sprintf("%s:%d", name, line)
	}
	return name
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

// Bounds of the files a config names, in bytes. They only stop a path that names the wrong thing
// (a log, a disk image) from filling memory: real files are far smaller.
const (
	// MaxFileBytes bounds a config file or a feature spec (ReadFile): 1 MiB. The examples' are
	// under 2 KiB.
	MaxFileBytes = 1 << 20
	// MaxModelBytes bounds a model file (models[].path; ReadFileLimit): 1 GiB. ONNX Runtime is
	// given the whole file, so a model's bytes are in memory while it loads. The examples' models
	// are under 400 KiB.
	MaxModelBytes = 1 << 30
)

// ReadFile reads a file named in a config (the config itself, a feature spec): embedded:NAME from
// embedded, an absolute path as is, a relative one from dir (the config file's folder; "" for the
// working directory). It reads regular files of at most MaxFileBytes only: anything else (a FIFO, a
// device such as /dev/zero, a socket, a directory, a larger file) is refused at once, without
// waiting on it, with an error naming the path and the reason. Safe for concurrent use.
func ReadFile(path, dir string, embedded fs.FS) ([]byte, error) {
	return ReadFileLimit(path, dir, embedded, MaxFileBytes)
}

// ReadFileLimit is ReadFile with a bound of limit bytes (MaxModelBytes for a model file).
func ReadFileLimit(path, dir string, embedded fs.FS, limit int64) ([]byte, error) {
	if name, ok := strings.CutPrefix(path, EmbeddedPrefix); ok {
		if embedded == nil {
			return nil, fmt.Errorf("%s: no embedded files in this build", path)
		}
		f, err := embedded.Open(name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		defer f.Close()
		return readRegular(path, f, limit)
	}
	if !filepath.IsAbs(path) && dir != "" {
		path = filepath.Join(dir, path)
	}
	// O_NONBLOCK: opening a FIFO does not wait for a writer (the file is then refused, by its
	// type, before any read); reads of a regular file are not affected.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err // an *fs.PathError: names the path
	}
	defer f.Close()
	return readRegular(path, f, limit)
}

// readRegular reads f, opened from path, if it is a regular file of at most limit bytes.
func readRegular(path string, f fs.File, limit int64) ([]byte, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if m := fi.Mode(); !m.IsRegular() {
		return nil, fmt.Errorf("%s: %s, not a regular file", path, fileKind(m))
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes, over the bound of %d for this file", path, fi.Size(), limit)
	}
	var buf bytes.Buffer
	buf.Grow(int(fi.Size()) + bytes.MinRead)
	if _, err := buf.ReadFrom(io.LimitReader(f, limit+1)); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if int64(buf.Len()) > limit {
		return nil, fmt.Errorf("%s: grew past the bound of %d bytes for this file while it was read", path, limit)
	}
	return buf.Bytes(), nil
}

// fileKind names the type of a file that is not regular.
func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeDevice != 0:
		return "a device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return fmt.Sprintf("a special file (%v)", m.Type())
}

// Dir is the folder relative paths in c are resolved from: the config file's folder, or "" for
// an embedded config (whose paths are embedded too).
func (c *Config) Dir() string {
	if strings.HasPrefix(c.Source, EmbeddedPrefix) || c.Source == "" {
		return ""
	}
	return filepath.Dir(c.Source)
}

// check walks the parsed file against Config's types and reports, in document order, what strict
// decoding would refuse, in the file's terms: a key no field has (with the closest known key, or
// the keys of that level) and a value that does not fit its field (a duration without a unit,
// text for a number, a list for a mapping...), each with the file, the line and the YAML path.
// What it misses, the decoder still refuses.
func check(name string, root *yaml.Node) error {
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 {
		return nil // empty: the decoder says so
	}
	c := checker{file: name, anchors: map[*yaml.Node]bool{}}
	c.walk(root.Content[0], reflect.TypeFor[Config](), "")
	return errors.Join(c.errs...)
}

// checker holds the state of one check.
type checker struct {
	file string
	errs []error
	// anchors are the anchored nodes walked: aliases to them (and merges of them) are not walked
	// again, so that a mistake is reported once, where it is written.
	anchors map[*yaml.Node]bool
}

func (c *checker) add(n *yaml.Node, path, msg string) {
	c.errs = append(c.errs, &FieldError{Path: path, Msg: msg, File: c.file, Line: n.Line})
}

var durationType = reflect.TypeFor[time.Duration]()

// walk checks the node n, at YAML path path ("" for the top), against the Go type t; see check.
func (c *checker) walk(n *yaml.Node, t reflect.Type, path string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Anchor != "" {
		if c.anchors[n] {
			return
		}
		c.anchors[n] = true
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return // the zero value
	}
	switch {
	case t == durationType:
		if n.Kind != yaml.ScalarNode {
			c.add(n, path, mismatch(n, "a duration (such as 5s or 250ms)"))
			return
		}
		var d time.Duration
		if n.Decode(&d) == nil {
			return
		}
		if tag := n.ShortTag(); tag == "!!int" || tag == "!!float" {
			c.add(n, path, n.Value+" has no unit; write a duration such as 5s or 250ms")
		} else {
			c.add(n, path, fmt.Sprintf("%q is not a duration; write one with a unit, such as 5s or 250ms", n.Value))
		}
	case t.Kind() == reflect.Struct:
		fields := yamlFields(t)
		if n.Kind != yaml.MappingNode {
			want := "a mapping"
			if len(fields) > 0 {
				want += " (keys such as " + fields[0].name + ": ...)"
			}
			c.add(n, path, mismatch(n, want))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.ShortTag() == "!!merge" { // <<: *defaults
				c.walkMerge(v, t, path)
				continue
			}
			at := join(path, k.Value)
			f := slices.IndexFunc(fields, func(f field) bool { return f.name == k.Value })
			if f < 0 {
				c.add(k, at, unknownKey(k.Value, path, fields))
				continue
			}
			c.walk(v, fields[f].typ, at)
		}
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			c.add(n, path, mismatch(n, "a list"))
			return
		}
		for i, e := range n.Content {
			c.walk(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			c.add(n, path, mismatch(n, "a mapping"))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			c.walk(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value))
		}
	default:
		want := scalarKind(t)
		if n.Kind != yaml.ScalarNode {
			c.add(n, path, mismatch(n, want))
			return
		}
		if n.Decode(reflect.New(t).Interface()) != nil {
			if n.ShortTag() == "!!int" && strings.Contains(want, "integer") {
				c.add(n, path, fmt.Sprintf("%s is out of range", n.Value))
			} else {
				c.add(n, path, mismatch(n, want))
			}
		}
	}
}

// walkMerge checks the value of a merge key (<<), a mapping or a list of them, against t.
func (c *checker) walkMerge(v *yaml.Node, t reflect.Type, path string) {
	for v.Kind == yaml.AliasNode && v.Alias != nil {
		v = v.Alias
	}
	if v.Kind == yaml.SequenceNode {
		for _, e := range v.Content {
			c.walk(e, t, path)
		}
		return
	}
	c.walk(v, t, path)
}

// field is a struct field as YAML names it.
type field struct {
	name string
	typ  reflect.Type
}

// yamlFields lists the fields of struct type t that YAML decodes, in order, by their YAML names.
func yamlFields(t reflect.Type) []field {
	var out []field
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case name == "-":
			continue
		case strings.Contains(","+opts+",", ",inline,"):
			out = append(out, yamlFields(f.Type)...)
			continue
		case name == "":
			name = strings.ToLower(f.Name)
		}
		out = append(out, field{name, f.Type})
	}
	return out
}

// unknownKey says that key is not one of fields (the keys at YAML path level), suggesting the
// closest known key when one is close, else listing them.
func unknownKey(key, level string, fields []field) string {
	best, bestD := "", max(1, min(3, len(key)/3))+1
	for _, f := range fields {
		if d := editDistance(strings.ToLower(key), f.name); d < bestD {
			best, bestD = f.name, d
		}
	}
	if best != "" {
		return "unknown key; did you mean " + best + "?"
	}
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.name
	}
	if level == "" {
		return "unknown key; the top-level keys are " + strings.Join(names, ", ")
	}
	return "unknown key; the keys of " + level + " are " + strings.Join(names, ", ")
}

// editDistance is the Levenshtein distance of a and b, in bytes.
func editDistance(a, b string) int {
	prev, cur := make([]int, len(b)+1), make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// mismatch says that node n is not the want (a mapping, a list, an integer...) its field needs.
func mismatch(n *yaml.Node, want string) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping where " + want + " belongs"
	case yaml.SequenceNode:
		return "a list where " + want + " belongs"
	}
	if n.ShortTag() == "!!str" {
		return fmt.Sprintf("%q is not %s", n.Value, want)
	}
	return n.Value + " is not " + want
}

// scalarKind says what a value of scalar type t is written as.
func scalarKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	}
	return "a " + t.String()
}

// join appends key to the YAML path path.
func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
