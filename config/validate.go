package config

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/proxy"
)

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
