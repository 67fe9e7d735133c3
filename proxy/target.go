package proxy

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/novacron/sidecar/batcher"
	"github.com/novacron/sidecar/features"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// Targets and routes. A Target is one configured model, whatever runs it: a tensor Model (ONNX
// Runtime in the process or remote KServe v2 servers, reached through the row pipeline) or a
// Legacy AI service (the seed's HTTP/JSON or gRPC service the sidecar replaces). Each answers its
// task's NovaCron calls through one small interface (Forecaster, Detector, Placer), taking the
// request as it came and returning the response; requests are validated against the target's own
// feature spec, so a target of another spec (a model-to-model migration) checks what it reads. A
// Route names the target of an RPC family; a handler asks the route for a target and never asks
// what kind it is.

// Target is one configured model a route can name.
type Target interface {
	// Info describes the target; it does not change.
	Info() *TargetInfo
	// Runner is what runs the target: a backends.Backend or a legacy Forwarder. The target's maker
	// owns it and closes it when no target uses it any more (a reload may hand it to the target
	// that replaces this one).
	Runner() Runner

	// common is the state every kind of target keeps; start starts its batcher (once the Service
	// has set its common state) and stop stops it once the calls it holds have run.
	common() *base
	start(opts []batcher.Option) error
	stop()
}

// Forecaster answers bandwidth forecasts (PredictBandwidth, PredictBandwidthBatch,
// /api/v1/predict[/batch]).
type Forecaster interface {
	Target
	// Forecast answers each request, answer i for reqs[i], or fails as a whole. batch says the
	// requests came in one PredictBandwidthBatch: errors then name their field as vms[i].field,
	// and the call's default priority is low. A request without historical_metrics is served from
	// the VM's pushed window.
	Forecast(ctx context.Context, reqs []*aipb.BandwidthRequest, batch bool) ([]*aipb.BandwidthResponse, error)
}

// Detector answers anomaly verdicts (DetectAnomaly, /api/v1/anomaly).
type Detector interface {
	Target
	Detect(ctx context.Context, req *aipb.AnomalyRequest) (*aipb.AnomalyResponse, error)
}

// Placer answers placement scores (OptimizePlacement, /api/v1/placement).
type Placer interface {
	Target
	Place(ctx context.Context, req *aipb.PlacementRequest) (*aipb.PlacementResponse, error)
}

// Runner is what runs a target; backends.Backend and Forwarder are Runners.
type Runner interface {
	Ready(ctx context.Context) error
	Close() error
}

// TargetInfo describes a target.
type TargetInfo struct {
	Name, Task string
	// Version is the model's version (from its metadata; "legacy" for a legacy service).
	Version string
	// Spec is the feature spec the target's requests are checked and canonicalized by.
	Spec *features.Spec
	// Platform says what runs it: the backend's platform ("onnxruntime", "remote:..."), or
	// "legacy".
	Platform string
	// Outputs are the values of one answered row, in order, as a RowObserver sees them.
	Outputs []Output
}

// Info returns i: every kind of target embeds its TargetInfo.
func (i *TargetInfo) Info() *TargetInfo { return i }

// Output is one output of a target's answered rows. Width 0: as many values as each answer holds
// (a legacy forecast's predictions, up to its horizon).
type Output struct {
	Name  string
	Width int
}

// base is the state every kind of target keeps: its description, the Service it answers in (set
// when the Service takes it), the pushed windows of a forecast target and its metrics.
type base struct {
	TargetInfo
	svc     *Service
	windows *features.Windows
	metrics *modelMetrics
	// horizon is a forecast target's longest forecast, in steps (minutes).
	horizon int
	// Batching configures the target's batcher (a Legacy target batches forecasts only); nil
	// sends each call on as one batch. Set it before giving the target to New.
	Batching *batcher.Config
}

func (b *base) common() *base { return b }

// wrongTask is the error of a target asked for another task's answer (a route resolves only
// targets of its task, so this is a bug, reported rather than answered with another task's rows).
func (b *base) wrongTask(task string) error {
	return fmt.Errorf("model %q is a %s model, asked for a %s answer: %w", b.Name, b.Task, task, ErrUnknownModel)
}

// Route is where an RPC family's calls go when the request names no model: its target, by name.
type Route struct {
	Target string
}

// Routes hold the route of each RPC family.
type Routes struct {
	Bandwidth, Anomaly, Placement Route
}

// family is one RPC family: its task and its route in Routes.
type family struct {
	task  string
	route func(*Routes) Route
}

var (
	familyForecast  = family{TaskForecast, func(r *Routes) Route { return r.Bandwidth }}
	familyAnomaly   = family{TaskAnomaly, func(r *Routes) Route { return r.Anomaly }}
	familyPlacement = family{TaskPlacement, func(r *Routes) Route { return r.Placement }}
)

// target resolves the target of a call of family f made by rpc: the one the request names, or
// else its route's. It checks that the target serves f's task.
func (s *Service) target(requested string, f family, rpc string) (Target, error) {
	st := s.state.Load()
	name := requested
	if name == "" {
		name = f.route(&st.routes).Target
	}
	if name == "" {
		return nil, fmt.Errorf("model: the request names none and %s has no default model (config routes); name one of %s: %w",
			rpc, strings.Join(st.names, ", "), ErrUnknownModel)
	}
	t, ok := st.targets[name]
	if !ok {
		if requested == "" {
			return nil, fmt.Errorf("model: the default model %q of %s is not loaded: %w", name, rpc, ErrUnknownModel)
		}
		return nil, fmt.Errorf("model: %q is not loaded (loaded: %s): %w", name, strings.Join(st.names, ", "), ErrUnknownModel)
	}
	if task := t.Info().Task; task != f.task {
		return nil, invalid("model", fmt.Sprintf("%q is a %s model; %s needs a %s model", name, task, rpc, f.task))
	}
	return t, nil
}

// as returns the target as the interface its task serves. Every kind of target serves every
// task's interface (refusing the tasks it is not), so this fails only on a bug.
func as[T Target](t Target, err error) (T, error) {
	var zero T
	if err != nil {
		return zero, err
	}
	v, ok := t.(T)
	if !ok {
		return zero, fmt.Errorf("model %q: %T serves no %s calls: %w", t.Info().Name, t, t.Info().Task, ErrUnknownModel)
	}
	return v, nil
}

// sortedNames lists the targets' names in order.
func sortedNames(targets map[string]Target) []string {
	n := make([]string, 0, len(targets))
	for k := range targets {
		n = append(n, k)
	}
	slices.Sort(n)
	return n
}
