package config

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/features"
	"github.com/novacron/sidecar/features/drift"
	"github.com/novacron/sidecar/proxy"
	"github.com/novacron/sidecar/proxy/admin"
	"github.com/novacron/sidecar/proxy/migrate"
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
	validateRoutes(c, names, add)
	validateMigrations(c, names, add)
	validateDrift(c, add)
	if c.Admin.Listen != "" {
		for _, e := range unjoin(c.Admin.Options().Validate()) {
			if e == nil {
				continue
			}
			path, msg, ok := strings.Cut(e.Error(), ": ")
			if !ok || !strings.HasPrefix(path, "admin.") {
				path, msg = "admin", e.Error()
			}
			add(path, "%s", msg)
		}
	}
	if c.Shadow.Queue < 0 || c.Shadow.Workers < 0 || c.Shadow.Timeout < 0 {
		add("shadow", "queue %d, workers %d, timeout %v: none may be negative (0: the default)", c.Shadow.Queue, c.Shadow.Workers, c.Shadow.Timeout)
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

// Options are the admin listener's settings as package admin takes them.
func (a Admin) Options() admin.Config { return admin.Config{Listen: a.Listen, TokenFile: a.TokenFile} }

// RouteOf returns the route a Routes holds under a route name (proxy.RouteBandwidth, ...,
// or models.NAME), and whether it has one.
func (r *Routes) RouteOf(name string) (Route, bool) {
	switch name {
	case proxy.RouteBandwidth:
		return r.PredictBandwidth, true
	case proxy.RouteAnomaly:
		return r.DetectAnomaly, true
	case proxy.RoutePlacement:
		return r.OptimizePlacement, true
	}
	if model, ok := strings.CutPrefix(name, proxy.ModelRoutePrefix); ok {
		rt, ok := r.Models[model]
		return rt, ok
	}
	return Route{}, false
}

// Names lists the routes' names: the NovaCron families', then the Open Inference Protocol's
// (models.NAME), in order.
func (r *Routes) Names() []string {
	out := append([]string(nil), proxy.RouteNames...)
	for _, m := range slices.Sorted(maps.Keys(r.Models)) {
		out = append(out, proxy.ModelRoute(m))
	}
	return out
}

// Proxy is the route as the pipeline takes it.
func (r Route) Proxy() proxy.Route {
	out := proxy.Route{Target: r.Target, Key: r.Key}
	for _, a := range r.Split {
		out.Split = append(out.Split, proxy.Arm{Target: a.Target, Percent: a.Percent})
	}
	for _, a := range r.Shadow {
		out.Shadow = append(out.Shadow, proxy.Arm{Target: a.Target, Percent: a.Percent})
	}
	return out
}

// Tolerances are the route's comparison tolerances as package migrate takes them.
func (r Route) Tolerances() migrate.Tolerances {
	return migrate.Tolerances{Abs: r.Compare.Abs, Rel: r.Compare.Rel, Score: r.Compare.Score, MinTau: r.Compare.MinTau}
}

// validateRoutes checks each route: its shape (proxy.ValidateRoute), that it names loaded models
// of its task (names: model name to task; an Open Inference Protocol route's task is its
// target's, and its models must take tensors), and its tolerances.
func validateRoutes(c *Config, names map[string]string, add func(path, format string, args ...any)) {
	legacy := legacyModels(c)
	for _, name := range c.Routes.Names() {
		r, _ := c.Routes.RouteOf(name)
		p := "routes." + name
		if err := proxy.ValidateRoute(name, r.Proxy()); err != nil {
			var fe *features.FieldError
			if errors.As(err, &fe) {
				add(p+"."+fe.Field, "%s", fe.Reason)
			} else {
				add(p, "%v", err)
			}
		}
		task := proxy.TaskOfRoute(name)
		oip := task == ""
		if oip {
			task = names[r.Target]
		}
		check := func(path, model string) {
			t, ok := names[model]
			switch {
			case model == "":
			case !ok:
				add(path, "model %q is not in models", model)
			case t != task:
				add(path, "model %q has task %s, this route needs a %s model", model, t, task)
			case oip && legacy[model]:
				add(path, "model %q is a legacy service, which takes NovaCron calls, not the Open Inference Protocol's tensors", model)
			}
		}
		check(p+".target", r.Target)
		for i, a := range r.Split {
			check(fmt.Sprintf("%s.split[%d].target", p, i), a.Target)
		}
		for i, a := range r.Shadow {
			check(fmt.Sprintf("%s.shadow[%d].target", p, i), a.Target)
		}
		if err := r.Tolerances().Validate(); err != nil {
			add(p+".compare", "%v", err)
		}
	}
}

// legacyModels says, by name, which models are legacy services (which take no tensors).
func legacyModels(c *Config) map[string]bool {
	legacy := map[string]bool{}
	for _, m := range c.Models {
		legacy[m.Name] = m.Backend.Kind == BackendLegacyHTTP || m.Backend.Kind == BackendLegacyGRPC
	}
	return legacy
}

// Spec is the migration as package migrate takes it, its baseline the route's target.
func (m Migration) Spec(routes *Routes) migrate.Spec {
	sp := migrate.Spec{Name: m.Name, Route: m.Route, To: m.To,
		Gates: migrate.Gates{MaxDisagreement: m.Gates.MaxDisagreement, MaxShadowErrors: m.Gates.MaxShadowErrors,
			MaxP99Delta: m.Gates.MaxP99Delta, Confidence: m.Gates.Confidence}}
	if r, ok := routes.RouteOf(m.Route); ok {
		sp.From, sp.Key = r.Target, r.Key
	}
	for _, st := range m.Stages {
		sp.Stages = append(sp.Stages, migrate.Stage{Split: st.Split, Shadow: st.Shadow, MinDuration: st.MinDuration, MinCalls: st.MinCalls})
	}
	return sp
}

// Specs are the migrations as package migrate takes them.
func (c *Config) Specs() []migrate.Spec {
	var out []migrate.Spec
	for _, m := range c.Migrations {
		out = append(out, m.Spec(&c.Routes))
	}
	return out
}

// validateMigrations checks each migration: its name, its route (one migration per route; the
// route has a target and no split or shadow of its own), its candidate, its stages and gates
// (migrate.Spec.Validate), and that state_file is set.
func validateMigrations(c *Config, names map[string]string, add func(path, format string, args ...any)) {
	seen, routes := map[string]bool{}, map[string]bool{}
	legacy := legacyModels(c)
	for i, m := range c.Migrations {
		p := fmt.Sprintf("migrations[%d]", i)
		switch {
		case !nameRE.MatchString(m.Name):
			add(p+".name", "%q must match %s", m.Name, nameRE)
		case seen[m.Name]:
			add(p+".name", "%q is used twice", m.Name)
		}
		seen[m.Name] = true
		r, ok := c.Routes.RouteOf(m.Route)
		switch {
		case !ok:
			add(p+".route", "%q is not a route; routes are %s, or models.NAME for a route under routes.models", m.Route, strings.Join(proxy.RouteNames, ", "))
			continue
		case routes[m.Route]:
			add(p+".route", "%s has a migration already; one migration per route", m.Route)
		case r.Target == "":
			add(p+".route", "routes.%s has no target: the migration starts from it", m.Route)
		case len(r.Split) > 0 || len(r.Shadow) > 0:
			add(p+".route", "routes.%s has a split or shadows of its own; a migration sets them by its stages", m.Route)
		}
		routes[m.Route] = true
		task := proxy.TaskOfRoute(m.Route)
		oip := task == ""
		if oip {
			task = names[r.Target]
		}
		if t, ok := names[m.To]; m.To != "" && !ok {
			add(p+".to", "model %q is not in models", m.To)
		} else if ok && t != task {
			add(p+".to", "model %q has task %s, route %s needs a %s model", m.To, t, m.Route, task)
		} else if ok && oip && legacy[m.To] {
			add(p+".to", "model %q is a legacy service, which takes NovaCron calls, not the Open Inference Protocol's tensors", m.To)
		}
		if err := m.Spec(&c.Routes).Validate(); err != nil {
			for _, e := range unjoin(err) {
				add(p, "%v", e)
			}
		}
	}
	if len(c.Migrations) > 0 && c.StateFile == "" {
		add("state_file", "required with migrations: the file that keeps each migration's stage across restarts (such as /var/lib/novacron-sidecar/state.json)")
	}
}

// validateDrift checks the drift section and each model's: durations and counts not negative,
// shares in 0..1, methods and thresholds known. (A profile is checked against its model's spec
// when the model loads.)
func validateDrift(c *Config, add func(path, format string, args ...any)) {
	d := c.Drift
	if d.Window < 0 || d.Keep < 0 || d.MinSamples < 0 {
		add("drift", "window %v, keep %d, min_samples %d: none may be negative (0: the default)", d.Window, d.Keep, d.MinSamples)
	}
	if !(d.Share >= 0 && d.Share <= 1) {
		add("drift.share", "%v is not a share in 0..1", d.Share)
	}
	for _, m := range slices.Sorted(maps.Keys(d.Thresholds)) {
		if err := drift.CheckMethod(m); err != nil {
			add("drift.thresholds."+m, "%v", err)
		} else if !(d.Thresholds[m] > 0) {
			add("drift.thresholds."+m, "%v is not positive", d.Thresholds[m])
		}
	}
	if c.Drift.Webhook.URL != "" {
		if err := c.AlertConfig("").Validate(); err != nil {
			add("drift.webhook", "%v", err)
		}
	} else if c.Drift.Webhook != (Webhook{}) {
		add("drift.webhook.url", "required with the webhook's other settings")
	}
	for i, m := range c.Models {
		p := fmt.Sprintf("models[%d].drift", i)
		if len(m.Drift.Methods) > 0 && m.Drift.Profile == "" {
			add(p+".methods", "methods without a profile score nothing: name the model's profile (sidecar profile build)")
		}
		for _, f := range slices.Sorted(maps.Keys(m.Drift.Methods)) {
			if err := drift.CheckMethod(m.Drift.Methods[f]); err != nil {
				add(p+".methods."+f, "%v", err)
			}
		}
	}
}

// DriftConfig is the drift monitor's configuration of model mc, as package drift takes it.
func (c *Config) DriftConfig(mc Model) drift.Config {
	return drift.Config{Window: c.Drift.Window, Keep: c.Drift.Keep, MinSamples: c.Drift.MinSamples, Share: c.Drift.Share,
		Thresholds: c.Drift.Thresholds, Methods: mc.Drift.Methods}
}

// AlertConfig is the drift alerts' configuration as package drift takes it; node names the
// sending node.
func (c *Config) AlertConfig(node string) drift.AlertConfig {
	w := c.Drift.Webhook
	return drift.AlertConfig{URL: w.URL, Timeout: w.Timeout, Attempts: w.Attempts, AccuracyFloor: c.Drift.AccuracyFloor, Node: node}
}
