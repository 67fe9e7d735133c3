package proxy

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/novacron/sidecar/batcher"
	"github.com/novacron/sidecar/features"
	"github.com/novacron/sidecar/features/drift"
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
	// Forecast answers each request, answer i for reqs[i], or fails as a whole. at is nil for a
	// PredictBandwidth call; for a PredictBandwidthBatch call (or the part of one a split sends
	// here), at[i] is request i's index in the batch: errors then name its field as
	// vms[at[i]].field, and the call's default priority is low. A request without
	// historical_metrics is served from the VM's pushed window.
	Forecast(ctx context.Context, reqs []*aipb.BandwidthRequest, at []int) ([]*aipb.BandwidthResponse, error)
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
	// Digest identifies the model's exact bytes ("sha256:" and the hex of the file's SHA-256)
	// when its backend knows them (a model run in the process); empty otherwise.
	Digest string
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
	// accuracy scores a forecast target's forecasts from pushed windows against the network_io
	// pushed later (kept, like windows, across a reload that keeps the spec).
	accuracy *drift.Accuracy
	// labelAccuracy scores an anomaly or placement target's answers against the labels pushed
	// later (PushLabels; kept, like accuracy, across a reload that keeps the spec). Not named
	// labels: a Model's labels are its anomaly classes.
	labelAccuracy *drift.Labels
	metrics       *modelMetrics
	// horizon is a forecast target's longest forecast, in steps (minutes).
	horizon int
	// fingerprint is Spec's, computed once when the Service takes the target (it hashes the
	// spec's canonical form: not for every call).
	fingerprint string
	// Batching configures the target's batcher (a Legacy target batches forecasts only); nil
	// sends each call on as one batch. Set it before giving the target to New.
	Batching *batcher.Config
}

func (b *base) common() *base { return b }

// answered records the class a target answered for key (an anomaly verdict for a VM, the best
// node for a workload) with its label tracker, for PushLabels to score; a target without one
// records nothing.
func (b *base) answered(key, class string) {
	if b.labelAccuracy != nil && key != "" && class != "" {
		b.labelAccuracy.Predict(key, time.Time{}, class) // at the tracker's clock: the Service's
	}
}

// wrongTask is the error of a target asked for another task's answer (a route resolves only
// targets of its task, so this is a bug, reported rather than answered with another task's rows).
func (b *base) wrongTask(task string) error {
	return fmt.Errorf("model %q is a %s model, asked for a %s answer: %w", b.Name, b.Task, task, ErrUnknownModel)
}

// family is one RPC family: its route's name (the config's key) and its task.
type family struct {
	name, task string
}

var (
	familyForecast  = family{RouteBandwidth, TaskForecast}
	familyAnomaly   = family{RouteAnomaly, TaskAnomaly}
	familyPlacement = family{RoutePlacement, TaskPlacement}
)

// Where a call's target name came from, for errors.
const (
	fromRequest = iota // the request's model field
	fromRoute          // the family's route
	fromHeader         // the x-sidecar-target header
)

// target resolves a call's target by name and checks that it serves f's task.
func (s *Service) target(st *snapshot, name string, from int, f family, rpc string) (Target, error) {
	t, ok := st.targets[name]
	switch {
	case ok:
	case from == fromRoute && name == "":
		return nil, fmt.Errorf("model: the request names none and %s has no route (config routes.%s); name one of %s: %w",
			rpc, f.name, strings.Join(st.names, ", "), ErrUnknownModel)
	case from == fromRoute:
		return nil, fmt.Errorf("model: the target %q of route %s is not loaded: %w", name, f.name, ErrUnknownModel)
	case from == fromHeader:
		return nil, fmt.Errorf("%s: %q is not loaded (loaded: %s): %w", TargetHeader, clip(name), strings.Join(st.names, ", "), ErrUnknownModel)
	default:
		return nil, fmt.Errorf("model: %q is not loaded (loaded: %s): %w", name, strings.Join(st.names, ", "), ErrUnknownModel)
	}
	if task := t.Info().Task; task != f.task {
		field := "model"
		if from == fromHeader {
			field = TargetHeader
		}
		return nil, invalid(field, fmt.Sprintf("%q is a %s model; %s needs a %s model", name, task, rpc, f.task))
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
