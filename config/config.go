// Package config is the sidecar's YAML configuration file: its types, defaults, strict decoding,
// and validation whose errors name the file and line.
//
// A Config is plain data. Zero values mean "use the default" where a field's comment says so;
// Load and Parse fill the defaults before validating, so a Config they return is complete.
package config

import (
	"time"

	"go.yaml.in/yaml/v3"

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
	// Shadow configures the workers that run shadowed calls (routes' shadow targets and
	// migrations' comparisons).
	Shadow Shadow `yaml:"shadow"`
	// Migrations move routes from one target to another by stages and gates (see Migration).
	Migrations []Migration `yaml:"migrations"`
	// StateFile keeps each migration's stage across restarts; required with migrations.
	StateFile string `yaml:"state_file"`
	// Admin is the admin listener (migration status and actions).
	Admin Admin `yaml:"admin"`
	// Drift configures the drift monitors of the models that name a profile.
	Drift Drift `yaml:"drift"`
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
	// Drift names the model's reference profile and how its features are scored.
	Drift ModelDrift `yaml:"drift"`
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

// Routes say where each NovaCron RPC family's calls go when a request names no model. A route left
// empty defaults to the model named bandwidth, anomaly or placement when one is configured, else
// stays empty: then requests of that family must name their model.
type Routes struct {
	// PredictBandwidth routes PredictBandwidth and PredictBandwidthBatch.
	PredictBandwidth  Route `yaml:"predict_bandwidth"`
	DetectAnomaly     Route `yaml:"detect_anomaly"`
	OptimizePlacement Route `yaml:"optimize_placement"`
	// Models route the Open Inference Protocol's calls by the model name they ask for (route
	// models.NAME): to tensor models of one task, split by the request's id (key: id) or per call.
	Models map[string]Route `yaml:"models"`
}

// Route is one family's route (see proxy.Route), written as its target's name
// (routes.predict_bandwidth: bandwidth) or as a mapping.
type Route struct {
	// Target is the primary target, a model's name: it serves the calls no split arm takes.
	Target string `yaml:"target"`
	// Split sends percent (0..100) of the keys to each other target, sticky by key.
	Split []Arm `yaml:"split"`
	// Shadow also sends percent (0..100) of the calls to each shadow target, detached, and
	// compares the answers.
	Shadow []Arm `yaml:"shadow"`
	// Key is what the split hashes: vm_id (forecasts and anomalies), workload_id (placements) or
	// call (no stickiness). Empty: the family's identifier (proxy.DefaultKey).
	Key string `yaml:"key"`
	// Compare says when a shadow's answer agrees with the serving target's (migrate.Tolerances).
	Compare Compare `yaml:"compare"`
}

func (Route) shorthand() {}

// UnmarshalYAML takes a route written as a name or as a mapping. (check has refused unknown keys
// already, with the file's line.)
func (r *Route) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*r = Route{Target: n.Value}
		return nil
	}
	type plain Route
	return n.Decode((*plain)(r))
}

// Arm is a target with a share of a route's calls, in percent.
type Arm struct {
	Target  string  `yaml:"target"`
	Percent float64 `yaml:"percent"`
}

// Compare holds a route's comparison tolerances; zero values take migrate's defaults
// (migrate.DefaultAbs, DefaultRel, DefaultScore, DefaultMinTau).
type Compare struct {
	// Abs and Rel: a forecast step agrees when |a - b| <= abs + rel * |a| (a: the baseline's).
	Abs float64 `yaml:"abs"`
	Rel float64 `yaml:"rel"`
	// Score: anomaly scores agree within this absolute difference.
	Score float64 `yaml:"score"`
	// MinTau: placements agree when their best node is the same and Kendall's tau of the two
	// rankings is at least this.
	MinTau float64 `yaml:"min_tau"`
}

// Shadow configures the shadow workers (proxy.Config's Shadow* fields).
type Shadow struct {
	// Queue bounds the shadowed calls waiting; a call that finds it full is dropped and counted.
	// Zero: proxy.DefaultShadowQueue.
	Queue int `yaml:"queue"`
	// Workers run shadowed calls at once. Zero: proxy.DefaultShadowWorkers.
	Workers int `yaml:"workers"`
	// Timeout bounds each shadowed call. Zero: proxy.DefaultShadowTimeout.
	Timeout time.Duration `yaml:"timeout"`
}

// Migration moves a route from its target (the baseline) to another (the candidate) through
// stages, advancing when its gates hold and rolling back when one fails (see migrate.Spec).
type Migration struct {
	// Name identifies it (admin API, metrics, state file).
	Name string `yaml:"name"`
	// Route is the route it drives: predict_bandwidth, detect_anomaly or optimize_placement. The
	// route's target is the baseline; the route may not have a split or shadows of its own.
	Route string `yaml:"route"`
	// To is the candidate, a model of the route's task.
	To string `yaml:"to"`
	// Stages in order. Empty: migrate.DefaultStages.
	Stages []Stage `yaml:"stages"`
	Gates  Gates   `yaml:"gates"`
}

// Stage is one step of a migration (percents 0..100).
type Stage struct {
	// Split is the share of the route's keys the candidate serves.
	Split float64 `yaml:"split"`
	// Shadow is the share of calls also sent to the other target and compared.
	Shadow float64 `yaml:"shadow"`
	// MinDuration and MinCalls (compared calls) bound the stage from below. Zero:
	// migrate.DefaultMinDuration, migrate.DefaultMinCalls.
	MinDuration time.Duration `yaml:"min_duration"`
	MinCalls    int64         `yaml:"min_calls"`
}

// Gates are a migration's conditions to advance (zero: migrate's Default* values).
type Gates struct {
	// MaxDisagreement is the largest share (0..1) of compared calls that may disagree.
	MaxDisagreement float64 `yaml:"max_disagreement"`
	// MaxShadowErrors is the largest share (0..1) of the candidate's calls that may fail.
	MaxShadowErrors float64 `yaml:"max_shadow_errors"`
	// MaxP99Delta bounds the p99 of the candidate's latency minus the baseline's.
	MaxP99Delta time.Duration `yaml:"max_p99_delta"`
	// Confidence of the rates' bounds, in (0, 1).
	Confidence float64 `yaml:"confidence"`
}

// ModelDrift is a model's drift monitoring.
type ModelDrift struct {
	// Profile is the model's reference profile (sidecar profile build); empty: not monitored.
	Profile string `yaml:"profile"`
	// Methods gives a feature's (or an output value's, "forecast[0]") method (psi, js or
	// wasserstein) by its name; others: psi.
	Methods map[string]string `yaml:"methods"`
}

// Drift configures the drift monitors (package features/drift). Zero values take its defaults.
type Drift struct {
	// Window is the length of a scored window (drift.DefaultWindow); Keep how many are kept
	// (drift.DefaultKeep).
	Window time.Duration `yaml:"window"`
	Keep   int           `yaml:"keep"`
	// MinSamples: below this many rows in a window, no verdict (drift.DefaultMinSamples).
	MinSamples int64 `yaml:"min_samples"`
	// Share: a model drifts when more than this share of its features drift (drift.DefaultShare).
	Share float64 `yaml:"share"`
	// Thresholds by method (psi, js, wasserstein); missing: drift.DefaultThreshold.
	Thresholds map[string]float64 `yaml:"thresholds"`
	// AccuracyFloor: a forecast model whose live accuracy is below it is alerted
	// (drift.DefaultAccuracyFloor, the seed's 0.80); negative: never.
	AccuracyFloor float64 `yaml:"accuracy_floor"`
	// Webhook receives the alerts (drift.Alert as JSON): when a model drifts, or its accuracy is
	// below the floor, at most once per model, kind and window.
	Webhook Webhook `yaml:"webhook"`
}

// Webhook is where drift alerts go (drift.AlertConfig).
type Webhook struct {
	// URL: an http(s) URL; empty: no alerts.
	URL string `yaml:"url"`
	// Timeout bounds each attempt, Attempts the attempts of one alert. Zero:
	// drift.DefaultAlertTimeout, drift.DefaultAlertAttempts.
	Timeout  time.Duration `yaml:"timeout"`
	Attempts int           `yaml:"attempts"`
}

// Admin is the admin listener: migration status and actions, over HTTP, apart from the data ports.
type Admin struct {
	// Listen is a loopback host:port or unix:/path/to/socket. Empty: no admin listener.
	Listen string `yaml:"listen"`
	// TokenFile holds the bearer token every admin call must carry; required for host:port.
	TokenFile string `yaml:"token_file"`
}
