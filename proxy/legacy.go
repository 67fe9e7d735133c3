package proxy

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/batcher"
	"github.com/novacron/sidecar/features"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// Forwarder answers a model's NovaCron calls on a legacy AI service (the seed's contract), task by
// task: the service the sidecar replaces, reached during the migration. backends/legacy's clients
// (and pools of them) implement it. All methods may be called concurrently.
type Forwarder interface {
	// PredictBandwidth answers every request, answer i for reqs[i], or fails as a whole.
	PredictBandwidth(ctx context.Context, reqs []*aipb.BandwidthRequest) ([]*aipb.BandwidthResponse, error)
	DetectAnomaly(ctx context.Context, req *aipb.AnomalyRequest) (*aipb.AnomalyResponse, error)
	OptimizePlacement(ctx context.Context, req *aipb.PlacementRequest) (*aipb.PlacementResponse, error)
	Ready(ctx context.Context) error
	Close() error
}

// Legacy is the Target of a legacy AI service. Requests are validated against its spec (the same
// checks, the same errors as a tensor model's) and then forwarded as they came, the stored window
// filled in for a forecast call that sends none. Forecast calls are micro-batched like a tensor
// model's when Batching is set (a batch becomes one call of the service's batch route). Its
// answers are not cached, and the Open Inference Protocol does not reach it (it takes NovaCron
// calls only). A RowObserver sees each call's canonical rows with the answer's values: a
// forecast's predictions, an anomaly's score, each answered node's score.
type Legacy struct {
	base
	f     Forwarder
	batch *batcher.Batcher[*aipb.BandwidthRequest, legacyResult]
}

// NewLegacy makes the target of a legacy AI service.
func NewLegacy(name, task string, spec *features.Spec, f Forwarder) (*Legacy, error) {
	if (task == TaskForecast) != spec.Sequence() {
		return nil, fmt.Errorf("model %q (%s): spec %q has window %d; forecast models need a sequence spec and others a row spec", name, task, spec.Name, spec.Window)
	}
	l := &Legacy{base: base{TargetInfo: TargetInfo{Name: name, Task: task, Spec: spec, Version: "legacy", Platform: "legacy"}}, f: f}
	switch task {
	case TaskForecast:
		l.horizon = maxHorizon
		l.Outputs = []Output{{Name: outForecast}}
	case TaskAnomaly, TaskPlacement:
		l.Outputs = []Output{{Name: outScore, Width: 1}}
	default:
		return nil, fmt.Errorf("model %q: unknown task %q", name, task)
	}
	return l, nil
}

// Runner is the service's Forwarder.
func (l *Legacy) Runner() Runner { return l.f }

// legacyResult is one forecast of a legacy batch: its answer, or the error of its own request.
type legacyResult struct {
	resp *aipb.BandwidthResponse
	err  error
}

// start starts a forecast target's batcher: each batch is one PredictBandwidth of the forwarder.
// When the service refuses a batch of several requests as bad input, each is sent again alone, so
// that only the caller whose request was bad gets the error (and no caller sees another's).
func (l *Legacy) start(opts []batcher.Option) error {
	if l.Batching == nil || l.Task != TaskForecast || l.batch != nil {
		return nil
	}
	b, err := batcher.New(*l.Batching, func(ctx context.Context, reqs []*aipb.BandwidthRequest) ([]legacyResult, error) {
		out := make([]legacyResult, len(reqs))
		resps, err := l.f.PredictBandwidth(ctx, reqs)
		switch {
		case err == nil && len(resps) == len(reqs):
			for i, r := range resps {
				out[i].resp = r
			}
			return out, nil
		case err == nil:
			return nil, fmt.Errorf("%d answers for %d requests: %w", len(resps), len(reqs), backends.ErrBadResponse)
		case len(reqs) == 1 || !errors.Is(err, backends.ErrInvalidInput):
			return nil, err
		}
		for i := range reqs {
			one, err := l.f.PredictBandwidth(ctx, reqs[i:i+1])
			if err == nil && len(one) != 1 {
				err = fmt.Errorf("%d answers for 1 request: %w", len(one), backends.ErrBadResponse)
			}
			out[i] = legacyResult{err: err}
			if err == nil {
				out[i].resp = one[0]
			}
		}
		return out, nil
	}, opts...)
	if err != nil {
		return err
	}
	l.batch = b
	return nil
}

// stop stops the target's batcher once the calls it holds have run.
func (l *Legacy) stop() {
	if l.batch != nil {
		l.batch.Close()
	}
}

// Forecast implements Forecaster: the requests are checked and canonicalized as a tensor model's
// would be, then forwarded (each with its window: the stored one where it sent none), and every
// answer checked to be for its own VM.
func (l *Legacy) Forecast(ctx context.Context, reqs []*aipb.BandwidthRequest, at []int) ([]*aipb.BandwidthResponse, error) {
	if l.Task != TaskForecast {
		return nil, l.wrongTask(TaskForecast)
	}
	rows, err := l.canonWindows(reqs, at)
	if err != nil {
		return nil, err
	}
	fwd := make([]*aipb.BandwidthRequest, len(reqs))
	for i, r := range reqs {
		fwd[i] = r
		if len(r.GetHistoricalMetrics()) == 0 && l.windows != nil {
			raw := make([]float64, l.Spec.Size())
			if err := l.windows.Raw(raw, r.GetVmId(), l.svc.cfg.Now()); err != nil {
				return nil, err
			}
			if slices.ContainsFunc(raw, math.IsNaN) {
				return nil, fmt.Errorf("vm %q: the stored window has gaps, and model %q is a legacy service that needs every step: %w", r.GetVmId(), l.Name, features.ErrNotReady)
			}
			fwd[i] = &aipb.BandwidthRequest{VmId: r.GetVmId(), HistoricalMetrics: raw, HorizonMinutes: r.GetHorizonMinutes()}
		}
	}
	var out []*aipb.BandwidthResponse
	if l.batch != nil {
		var res []legacyResult
		res, err = l.batch.Do(ctx, fwd, forecastPriority(ctx, at != nil))
		for i := 0; err == nil && i < len(res); i++ {
			err = res[i].err
			out = append(out, res[i].resp)
		}
	} else {
		out, err = l.f.PredictBandwidth(ctx, fwd)
	}
	if err != nil {
		return nil, fmt.Errorf("model %q: %w", l.Name, err)
	}
	if len(out) != len(reqs) {
		return nil, fmt.Errorf("model %q: %d answers for %d requests: %w", l.Name, len(out), len(reqs), backends.ErrBadResponse)
	}
	for i, r := range out {
		if r.GetVmId() != "" && r.GetVmId() != reqs[i].GetVmId() {
			return nil, fmt.Errorf("model %q: answer %d is for vm %q, asked for %q: %w", l.Name, i, r.GetVmId(), reqs[i].GetVmId(), backends.ErrBadResponse)
		}
		r.VmId = reqs[i].GetVmId()
	}
	l.track(reqs, out)
	if o := l.svc.cfg.Observer; o != nil {
		outs := make([][]float32, len(out))
		for i, r := range out {
			outs[i] = float32s(r.GetPredictions())
		}
		o.ObserveRows(l, rows, outs)
	}
	return out, nil
}

// Detect implements Detector: the request is checked as a tensor model's would be, then forwarded.
func (l *Legacy) Detect(ctx context.Context, req *aipb.AnomalyRequest) (*aipb.AnomalyResponse, error) {
	if l.Task != TaskAnomaly {
		return nil, l.wrongTask(TaskAnomaly)
	}
	row, err := l.canonAnomaly(req)
	if err != nil {
		return nil, err
	}
	out, err := l.f.DetectAnomaly(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("model %q: %w", l.Name, err)
	}
	l.detected(req, out)
	if o := l.svc.cfg.Observer; o != nil {
		o.ObserveRows(l, row, [][]float32{{float32(out.GetScore())}})
	}
	return out, nil
}

// Place implements Placer: the request is checked as a tensor model's would be, then forwarded.
func (l *Legacy) Place(ctx context.Context, req *aipb.PlacementRequest) (*aipb.PlacementResponse, error) {
	if l.Task != TaskPlacement {
		return nil, l.wrongTask(TaskPlacement)
	}
	rows, err := l.canonPlacement(req)
	if err != nil {
		return nil, err
	}
	out, err := l.f.OptimizePlacement(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("model %q: %w", l.Name, err)
	}
	l.placed(req, out)
	if o := l.svc.cfg.Observer; o != nil {
		// The rows of the nodes the answer scored, in the request's order.
		score := make(map[string]float64, len(out.GetCandidates()))
		for _, c := range out.GetCandidates() {
			score[c.GetNodeId()] = c.GetScore()
		}
		w := l.Spec.Width()
		var in []float32
		var outs [][]float32
		for i, n := range req.GetAvailableNodes() {
			if v, ok := score[n.GetNodeId()]; ok {
				in = append(in, rows[i*w:(i+1)*w]...)
				outs = append(outs, []float32{float32(v)})
			}
		}
		if len(outs) > 0 {
			o.ObserveRows(l, in, outs)
		}
	}
	return out, nil
}

func float32s(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}
