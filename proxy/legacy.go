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

// NewLegacyModel makes a model served by a legacy AI service. Requests are still validated against
// spec (the same checks, the same errors as a local model's) and then forwarded as they came, the
// stored window filled in for a forecast call that sends none. Forecast calls are micro-batched
// like a local model's when Batching is set (a batch becomes one call of the service's batch
// route). Its answers are not cached, and the Open Inference Protocol does not reach it (it takes
// NovaCron calls only).
func NewLegacyModel(name, task string, spec *features.Spec, f Forwarder) (*Model, error) {
	if (task == TaskForecast) != spec.Sequence() {
		return nil, fmt.Errorf("model %q (%s): spec %q has window %d; forecast models need a sequence spec and others a row spec", name, task, spec.Name, spec.Window)
	}
	m := &Model{Name: name, Task: task, Spec: spec, Version: "legacy", legacy: f, CacheTTL: -1,
		Backend: legacyBackend{f}, Meta: backends.Metadata{Name: name, Version: "legacy", Platform: "legacy"}}
	if task == TaskForecast {
		m.horizon = maxHorizon
	}
	m.keyPrefix = [3][]byte{[]byte(m.Name), []byte(m.Version), []byte(spec.Fingerprint())}
	return m, nil
}

// Legacy returns the forwarder of a model served by a legacy AI service, or nil.
func (m *Model) Legacy() Forwarder { return m.legacy }

// legacyBackend gives a legacy model the Backend the rest of the sidecar (health, readiness,
// shutdown) uses; tensors do not reach it.
type legacyBackend struct{ f Forwarder }

func (l legacyBackend) Infer(context.Context, *backends.Batch) (*backends.Result, error) {
	return nil, fmt.Errorf("a legacy AI service takes NovaCron calls, not tensors: %w", backends.ErrInvalidInput)
}

func (l legacyBackend) Metadata(_ context.Context, model string) (backends.Metadata, error) {
	return backends.Metadata{Name: model, Version: "legacy", Platform: "legacy"}, nil
}

func (l legacyBackend) Ready(ctx context.Context) error { return l.f.Ready(ctx) }
func (l legacyBackend) Close() error                    { return l.f.Close() }

// legacyResult is one forecast of a legacy batch: its answer, or the error of its own request.
type legacyResult struct {
	resp *aipb.BandwidthResponse
	err  error
}

// startLegacyBatcher starts a legacy forecast model's batcher: each batch is one PredictBandwidth
// of the forwarder. When the service refuses a batch of several requests as bad input, each is
// sent again alone, so that only the caller whose request was bad gets the error (and no caller
// sees another's).
func (m *Model) startLegacyBatcher(opts []batcher.Option) error {
	if m.Batching == nil || m.Task != TaskForecast || m.legacyBatch != nil {
		return nil
	}
	b, err := batcher.New(*m.Batching, func(ctx context.Context, reqs []*aipb.BandwidthRequest) ([]legacyResult, error) {
		out := make([]legacyResult, len(reqs))
		resps, err := m.legacy.PredictBandwidth(ctx, reqs)
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
			one, err := m.legacy.PredictBandwidth(ctx, reqs[i:i+1])
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
	m.legacyBatch = b
	return nil
}

// legacyForecast forwards validated requests (a stored window filled in where a request sent
// none) and checks that every answer is for its own VM.
func (s *Service) legacyForecast(ctx context.Context, m *Model, reqs []*aipb.BandwidthRequest, prio int) ([]*aipb.BandwidthResponse, error) {
	fwd := make([]*aipb.BandwidthRequest, len(reqs))
	for i, r := range reqs {
		fwd[i] = r
		if len(r.GetHistoricalMetrics()) == 0 && m.windows != nil {
			raw := make([]float64, m.Spec.Size())
			if err := m.windows.Raw(raw, r.GetVmId(), s.cfg.Now()); err != nil {
				return nil, err
			}
			if slices.ContainsFunc(raw, math.IsNaN) {
				return nil, fmt.Errorf("vm %q: the stored window has gaps, and model %q is a legacy service that needs every step: %w", r.GetVmId(), m.Name, features.ErrNotReady)
			}
			fwd[i] = &aipb.BandwidthRequest{VmId: r.GetVmId(), HistoricalMetrics: raw, HorizonMinutes: r.GetHorizonMinutes()}
		}
	}
	var out []*aipb.BandwidthResponse
	var err error
	if m.legacyBatch != nil {
		var res []legacyResult
		res, err = m.legacyBatch.Do(ctx, fwd, prio)
		for i := 0; err == nil && i < len(res); i++ {
			err = res[i].err
			out = append(out, res[i].resp)
		}
	} else {
		out, err = m.legacy.PredictBandwidth(ctx, fwd)
	}
	if err != nil {
		return nil, fmt.Errorf("model %q: %w", m.Name, err)
	}
	if len(out) != len(reqs) {
		return nil, fmt.Errorf("model %q: %d answers for %d requests: %w", m.Name, len(out), len(reqs), backends.ErrBadResponse)
	}
	for i, r := range out {
		if r.GetVmId() != "" && r.GetVmId() != reqs[i].GetVmId() {
			return nil, fmt.Errorf("model %q: answer %d is for vm %q, asked for %q: %w", m.Name, i, r.GetVmId(), reqs[i].GetVmId(), backends.ErrBadResponse)
		}
		r.VmId = reqs[i].GetVmId()
	}
	return out, nil
}
