package proxy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Routes. A route says where the calls of one RPC family go when the request names no model: its
// primary target, a weighted split of the calls across other targets (sticky: one key, such as a
// VM, always reaches the same arm while the weights stay), and shadow targets that also get a
// sampled share of the calls, detached from the caller, whose answers are compared with the
// serving target's and thrown away (see shadow.go). A request that names its model, or forces a
// target with the x-sidecar-target header, goes to that target alone.

// Route names: the config's keys under routes, and the route label of metrics.
const (
	RouteBandwidth = "predict_bandwidth"  // PredictBandwidth and PredictBandwidthBatch
	RouteAnomaly   = "detect_anomaly"     // DetectAnomaly
	RoutePlacement = "optimize_placement" // OptimizePlacement
)

// RouteNames lists the NovaCron RPC families' routes in order.
var RouteNames = []string{RouteBandwidth, RouteAnomaly, RoutePlacement}

// ModelRoutePrefix begins the name of an Open Inference Protocol route: "models.NAME" routes the
// v2 calls (ModelInfer, ModelMetadata, ModelReady) that name the model NAME, which need not be a
// loaded model itself. Its targets are tensor models of one task.
const ModelRoutePrefix = "models."

// ModelRoute is the name of the Open Inference Protocol route of the model name model.
func ModelRoute(model string) string { return ModelRoutePrefix + model }

// isModelRoute reports whether name is an Open Inference Protocol route's.
func isModelRoute(name string) bool {
	return strings.HasPrefix(name, ModelRoutePrefix) && len(name) > len(ModelRoutePrefix)
}

// TargetHeader (gRPC metadata or HTTP header) forces a call's target, for debugging: the call
// goes to the named target of the route's task, without split or shadow; it is counted
// (sidecar_route_forced_total) and logged, at most once per route every ForcedLogEvery.
const TargetHeader = "x-sidecar-target"

// ForcedLogEvery bounds the log lines of forced calls, per route.
const ForcedLogEvery = 10 * time.Second

// Keys a split may hash, so that one key always reaches the same arm.
const (
	KeyVM       = "vm_id"       // the default of predict_bandwidth and detect_anomaly
	KeyWorkload = "workload_id" // the default of optimize_placement
	KeyCall     = "call"        // no stickiness: each call (each VM of a batch) is drawn at random;
	// the default of Open Inference Protocol routes
	KeyID = "id" // an Open Inference Protocol route: the request's id (a call without one is drawn)
)

// Route is one RPC family's route.
type Route struct {
	// Target is the primary target: it serves the calls no split arm takes.
	Target string
	// Split sends a share of the calls to other targets. Each arm takes Percent (0..100) of the
	// keys; the arms take at most 100 together and Target the rest. An arm's keys are the lowest
	// hash buckets after those of the arms before it, so raising the first arm's Percent keeps
	// every key it had.
	Split []Arm
	// Shadow also sends Percent (0..100) of the calls, drawn at random, to each shadow target,
	// detached from the caller; the caller's answer is always the serving target's. A shadow that
	// names the target serving the call is skipped for that call (so a migration can shadow each
	// arm onto the other).
	Shadow []Arm
	// Key is what a split hashes: KeyVM, KeyWorkload or KeyCall. Empty: the family's default
	// (DefaultKey).
	Key string
}

// Arm is a target with a share of a route's calls, in percent.
type Arm struct {
	Target  string
	Percent float64
}

// Routes hold the routes by name (RouteBandwidth, RouteAnomaly, RoutePlacement).
type Routes map[string]Route

// DefaultKey is the key a route's split hashes when Route.Key is empty: the family's identifier,
// or KeyCall for an Open Inference Protocol route.
func DefaultKey(route string) string {
	switch {
	case route == RoutePlacement:
		return KeyWorkload
	case isModelRoute(route):
		return KeyCall
	}
	return KeyVM
}

// ValidateRoute checks a route of the given name: its percents, its key, and that no target is
// named twice in one role. Whether its targets are loaded and of its task is checked when the
// Service takes it. Errors are *features.FieldError naming the field as the config does (target,
// split[1].percent, key), or say the route name is unknown.
func ValidateRoute(name string, r Route) error {
	if !slices.Contains(RouteNames, name) && !isModelRoute(name) {
		return fmt.Errorf("unknown route %q: routes are %v, or %sNAME for the Open Inference Protocol's model NAME", name, RouteNames, ModelRoutePrefix)
	}
	sum := 0.0
	for i, a := range r.Split {
		switch {
		case a.Target == "":
			return invalid(fmt.Sprintf("split[%d].target", i), "required")
		case a.Target == r.Target:
			return invalid(fmt.Sprintf("split[%d].target", i), fmt.Sprintf("%q is the route's own target, which takes what the arms leave", a.Target))
		case slices.ContainsFunc(r.Split[:i], func(b Arm) bool { return b.Target == a.Target }):
			return invalid(fmt.Sprintf("split[%d].target", i), fmt.Sprintf("%q is named twice", a.Target))
		case !(a.Percent >= 0 && a.Percent <= 100):
			return invalid(fmt.Sprintf("split[%d].percent", i), fmt.Sprintf("%v is not in 0..100", a.Percent))
		}
		sum += a.Percent
	}
	if sum > 100+1e-9 {
		return invalid("split", fmt.Sprintf("the arms take %v percent together, more than 100", sum))
	}
	if len(r.Split) > 0 && r.Target == "" {
		return invalid("target", "required with a split (it takes what the arms leave)")
	}
	for i, a := range r.Shadow {
		switch {
		case a.Target == "":
			return invalid(fmt.Sprintf("shadow[%d].target", i), "required")
		case slices.ContainsFunc(r.Shadow[:i], func(b Arm) bool { return b.Target == a.Target }):
			return invalid(fmt.Sprintf("shadow[%d].target", i), fmt.Sprintf("%q is named twice", a.Target))
		case !(a.Percent >= 0 && a.Percent <= 100):
			return invalid(fmt.Sprintf("shadow[%d].percent", i), fmt.Sprintf("%v is not in 0..100", a.Percent))
		}
	}
	switch {
	case isModelRoute(name) && r.Target == "":
		return invalid("target", "required: a tensor model's name")
	case isModelRoute(name) && (r.Key == "" || r.Key == KeyCall || r.Key == KeyID):
	case isModelRoute(name):
		return invalid("key", fmt.Sprintf("%q is not a key of an Open Inference Protocol route; use %s or %s", r.Key, KeyID, KeyCall))
	case r.Key == "" || r.Key == KeyCall || r.Key == DefaultKey(name):
	default:
		return invalid("key", fmt.Sprintf("%q is not a key of %s; use %s or %s", r.Key, name, DefaultKey(name), KeyCall))
	}
	return nil
}

// splitBuckets is the resolution of a split: 0.01 percent.
const splitBuckets = 10000

// route is a Route as a call reads it: checked and with its arms' bounds and counters resolved.
type route struct {
	name string
	Route
	key string
	// bounds[i] is the first bucket past split arm i.
	bounds []uint32
	// calls counts the calls each target served by this route, forced the forced ones.
	calls, forced map[string]prometheus.Counter
	// lastForcedLog is the time (UnixNano) of the route's last log line of a forced call, shared
	// by the route's snapshots (see ForcedLogEvery); suppressed counts the lines not written.
	lastForcedLog *atomic.Int64
	suppressed    *atomic.Int64
}

// compileRoutes checks the routes against the targets and resolves them. old carries the log
// limiter of each route across snapshots.
func (s *Service) compileRoutes(rs Routes, targets map[string]Target, tensors map[string]*Model, old map[string]*route) (map[string]*route, error) {
	out := make(map[string]*route, len(rs))
	for name, r := range rs {
		if err := ValidateRoute(name, r); err != nil {
			return nil, fmt.Errorf("routes.%s: %w", name, err)
		}
		task := TaskOfRoute(name)
		if isModelRoute(name) {
			if t, ok := targets[r.Target]; ok {
				task = t.Info().Task // the route's targets share its target's task
			}
		}
		check := func(field, target string) error {
			t, ok := targets[target]
			if !ok {
				return fmt.Errorf("routes.%s.%s: %q is not a loaded model", name, field, target)
			}
			if t.Info().Task != task {
				return fmt.Errorf("routes.%s.%s: %q is a %s model; %s needs a %s model", name, field, target, t.Info().Task, name, task)
			}
			if _, ok := tensors[target]; isModelRoute(name) && !ok {
				return fmt.Errorf("routes.%s.%s: %q is a legacy service, which takes NovaCron calls, not the Open Inference Protocol's tensors", name, field, target)
			}
			return nil
		}
		if r.Target != "" {
			if err := check("target", r.Target); err != nil {
				return nil, err
			}
		}
		c := &route{name: name, Route: r, key: r.Key, calls: map[string]prometheus.Counter{}, forced: map[string]prometheus.Counter{}}
		if c.key == "" {
			c.key = DefaultKey(name)
		}
		if o := old[name]; o != nil {
			c.lastForcedLog, c.suppressed = o.lastForcedLog, o.suppressed
		} else {
			c.lastForcedLog, c.suppressed = new(atomic.Int64), new(atomic.Int64)
		}
		sum := 0.0
		for i, a := range r.Split {
			if err := check(fmt.Sprintf("split[%d].target", i), a.Target); err != nil {
				return nil, err
			}
			sum += a.Percent
			c.bounds = append(c.bounds, uint32(min(sum, 100)*splitBuckets/100+0.5))
		}
		for i, a := range r.Shadow {
			if err := check(fmt.Sprintf("shadow[%d].target", i), a.Target); err != nil {
				return nil, err
			}
		}
		for t, tg := range targets {
			if tg.Info().Task == task && s.metrics != nil {
				c.calls[t] = s.metrics.routeCalls.WithLabelValues(name, t)
				c.forced[t] = s.metrics.routeForced.WithLabelValues(name, t)
			}
		}
		out[name] = c
	}
	return out, nil
}

// TaskOfRoute is the task of a NovaCron route's targets ("" for an Open Inference Protocol route,
// whose targets share its target's task).
func TaskOfRoute(name string) string {
	if isModelRoute(name) {
		return ""
	}
	return familyOf(name).task
}

// familyOf returns the family of a route name.
func familyOf(name string) family {
	switch name {
	case RouteAnomaly:
		return familyAnomaly
	case RoutePlacement:
		return familyPlacement
	}
	return familyForecast
}

// arm returns the target serving a call with the given key.
func (r *route) arm(key string) string {
	if len(r.bounds) == 0 {
		return r.Target
	}
	var b uint32
	if r.key == KeyCall || key == "" {
		b = rand.Uint32N(splitBuckets)
	} else {
		b = uint32(fnv64a(key) % splitBuckets)
	}
	for i, bound := range r.bounds {
		if b < bound {
			return r.Split[i].Target
		}
	}
	return r.Target
}

// fnv64a is FNV-1a of s, without allocating.
func fnv64a(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// decision is where one call goes.
type decision struct {
	serve Target
	// route is the route that chose serve; nil when the request named its model or the header
	// forced it (then there is no shadow).
	route *route
}

// decide resolves the target of a call of family f: the model the request names, else the one
// the x-sidecar-target header forces, else the route's arm for key.
func (s *Service) decide(ctx context.Context, st *snapshot, requested string, f family, rpc, key string) (decision, error) {
	if requested != "" {
		t, err := s.target(st, requested, fromRequest, f, rpc)
		return decision{serve: t}, err
	}
	r := st.routes[f.name]
	if forced, ok := ctx.Value(forcedKey{}).(string); ok {
		if err := s.checkID(TargetHeader, forced); err != nil {
			return decision{}, err
		}
		t, err := s.target(st, forced, fromHeader, f, rpc)
		if err != nil {
			return decision{}, err
		}
		if r != nil {
			r.noteForced(s, forced)
		}
		return decision{serve: t}, nil
	}
	if r == nil {
		_, err := s.target(st, "", fromRoute, f, rpc)
		return decision{}, err
	}
	t, err := s.target(st, r.arm(key), fromRoute, f, rpc)
	if err != nil {
		return decision{}, err
	}
	return decision{serve: t, route: r}, nil
}

// count counts n calls (VMs) a route sent to the decision's target.
func (d decision) count(n int) {
	if d.route != nil {
		if c := d.route.calls[d.serve.Info().Name]; c != nil {
			c.Add(float64(n))
		}
	}
}

// noteForced counts a forced call and logs it, at most once per ForcedLogEvery.
func (r *route) noteForced(s *Service, target string) {
	if c := r.forced[target]; c != nil {
		c.Inc()
	}
	if s.cfg.Log == nil {
		return
	}
	now := time.Now().UnixNano()
	last := r.lastForcedLog.Load()
	if now-last < int64(ForcedLogEvery) || !r.lastForcedLog.CompareAndSwap(last, now) {
		r.suppressed.Add(1)
		return
	}
	fmt.Fprintf(s.cfg.Log, "route %s: a call forced to target %q by %s (%d more forced calls since the last line)\n",
		r.name, target, TargetHeader, r.suppressed.Swap(0))
}

// shadows returns the shadow targets drawn for one call served by serve (nil: none).
func (r *route) shadows(st *snapshot, serve string) []Target {
	var out []Target
	for _, a := range r.Shadow {
		if a.Target == serve || a.Percent <= 0 || (a.Percent < 100 && rand.Float64()*100 >= a.Percent) {
			continue
		}
		if t, ok := st.targets[a.Target]; ok {
			out = append(out, t)
		}
	}
	return out
}

type forcedKey struct{}

// withForced records the target a caller's x-sidecar-target header forces.
func withForced(ctx context.Context, target string) context.Context {
	return context.WithValue(ctx, forcedKey{}, target)
}
