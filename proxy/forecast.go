package proxy

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/novacron/sidecar/features"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// PredictBandwidth forecasts one VM's bandwidth from its window of metrics.
func (s *Service) PredictBandwidth(ctx context.Context, req *aipb.BandwidthRequest) (*aipb.BandwidthResponse, error) {
	return acrossSwap(s, func() (*aipb.BandwidthResponse, error) { return s.predictBandwidth(ctx, req) })
}

func (s *Service) predictBandwidth(ctx context.Context, req *aipb.BandwidthRequest) (*aipb.BandwidthResponse, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	if err := s.checkIDs("", req.GetModel(), req.GetVmId()); err != nil {
		return nil, err
	}
	m, err := s.model(req.GetModel(), routeBandwidth, TaskForecast, "PredictBandwidth")
	if err != nil {
		return nil, err
	}
	buf := make([]float32, m.Spec.Size())
	if err := canonWindow(m, buf, req, -1, s.cfg.Now()); err != nil {
		return nil, err
	}
	if m.legacy != nil {
		out, err := s.legacyForecast(ctx, m, []*aipb.BandwidthRequest{req}, priority(ctx, PriorityHigh))
		if err != nil {
			return nil, err
		}
		return out[0], nil
	}
	res, err := s.rows(ctx, m, 1, buf, priority(ctx, PriorityHigh), true)
	if err != nil {
		return nil, err
	}
	return forecastRows(m, res, []*aipb.BandwidthRequest{req})[0], nil
}

// PredictBandwidthBatch forecasts many VMs as one model batch; results follow the order of vms.
func (s *Service) PredictBandwidthBatch(ctx context.Context, req *aipb.BandwidthBatchRequest) (*aipb.BandwidthBatchResponse, error) {
	return acrossSwap(s, func() (*aipb.BandwidthBatchResponse, error) { return s.predictBandwidthBatch(ctx, req) })
}

func (s *Service) predictBandwidthBatch(ctx context.Context, req *aipb.BandwidthBatchRequest) (*aipb.BandwidthBatchResponse, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	if err := s.checkID("model", req.GetModel()); err != nil {
		return nil, err
	}
	m, err := s.model(req.GetModel(), routeBandwidth, TaskForecast, "PredictBandwidthBatch")
	if err != nil {
		return nil, err
	}
	vms := req.GetVms()
	switch {
	case len(vms) == 0:
		return nil, invalid("vms", "empty: give at least one VM")
	case len(vms) > s.cfg.MaxBatchVMs:
		return nil, invalid("vms", fmt.Sprintf("%d VMs, at most %d per call (limits.max_batch_vms)", len(vms), s.cfg.MaxBatchVMs))
	}
	size := m.Spec.Size()
	buf := make([]float32, len(vms)*size)
	now := s.cfg.Now()
	for i, vm := range vms {
		if err := s.checkIDs(fmt.Sprintf("vms[%d].", i), vm.GetModel(), vm.GetVmId()); err != nil {
			return nil, err
		}
		if vm.GetModel() != "" && vm.GetModel() != m.Name {
			return nil, invalid(fmt.Sprintf("vms[%d].model", i), fmt.Sprintf("%q differs from the batch's model %q; one batch runs one model", vm.GetModel(), m.Name))
		}
		if err := canonWindow(m, buf[i*size:(i+1)*size], vm, i, now); err != nil {
			return nil, err
		}
	}
	if m.legacy != nil {
		out, err := s.legacyForecast(ctx, m, vms, priority(ctx, PriorityLow))
		if err != nil {
			return nil, err
		}
		return &aipb.BandwidthBatchResponse{Results: out}, nil
	}
	res, err := s.rows(ctx, m, len(vms), buf, priority(ctx, PriorityLow), true)
	if err != nil {
		return nil, err
	}
	return &aipb.BandwidthBatchResponse{Results: forecastRows(m, res, vms)}, nil
}

// checkIDs checks a request's model and vm_id fields (under prefix, such as "vms[3].").
func (s *Service) checkIDs(prefix, model, vm string) error {
	if err := s.checkID(prefix+"model", model); err != nil {
		return err
	}
	return s.checkID(prefix+"vm_id", vm)
}

// canonWindow validates one BandwidthRequest and canonicalizes its window into dst. vm is the
// request's index in a batch call, or -1; it only names fields in errors.
func canonWindow(m *Model, dst []float32, req *aipb.BandwidthRequest, vm int, now time.Time) error {
	if err := canonWindowAt(m, dst, req, now); err != nil {
		if vm >= 0 {
			var fe *features.FieldError
			if errors.As(err, &fe) {
				return invalid(fmt.Sprintf("vms[%d].%s", vm, fe.Field), fe.Reason)
			}
			return fmt.Errorf("vms[%d]: %w", vm, err)
		}
		return err
	}
	return nil
}

// canonStored canonicalizes a VM's pushed window. What keeps it from being served (nothing pushed,
// too old, a gap the spec's policy refuses) is ErrNotReady: FAILED_PRECONDITION, naming the VM.
func canonStored(m *Model, dst []float32, vm string, now time.Time) error {
	raw := make([]float64, m.Spec.Size())
	if err := m.windows.Raw(raw, vm, now); err != nil {
		return err
	}
	if err := m.Spec.Canonicalize(dst, raw); err != nil {
		return fmt.Errorf("vm %q: stored window: %v: %w", vm, err, features.ErrNotReady)
	}
	return nil
}

func canonWindowAt(m *Model, dst []float32, req *aipb.BandwidthRequest, now time.Time) error {
	const prefix = ""
	if req.GetVmId() == "" {
		return invalid(prefix+"vm_id", "required")
	}
	if h := req.GetHorizonMinutes(); h < 0 || int64(h) > int64(m.horizon) {
		return invalid(prefix+"horizon_minutes", fmt.Sprintf("%d is not in 0..%d: give 0 for the model's whole horizon (%d minutes) or 1..%d", h, m.horizon, m.horizon, m.horizon))
	}
	raw := req.GetHistoricalMetrics()
	if len(raw) == 0 && m.windows != nil {
		return canonStored(m, dst, req.GetVmId(), now)
	}
	if len(raw) != m.Spec.Size() {
		return invalid(prefix+"historical_metrics", fmt.Sprintf("got %d values, want %d: %d steps x %d features (%s), oldest step first",
			len(raw), m.Spec.Size(), m.Spec.Steps(), m.Spec.Width(), strings.Join(m.Spec.FeatureNames(), ", ")))
	}
	w := m.Spec.Width()
	for i, v := range raw {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return invalid(fmt.Sprintf("%shistorical_metrics[%d]", prefix, i),
				fmt.Sprintf("%s is not a finite number (step %d, feature %s)", strconv.FormatFloat(v, 'g', -1, 64), i/w, m.Spec.Features[i%w].Name))
		}
	}
	if err := m.Spec.Canonicalize(dst, raw); err != nil {
		var ve *features.ValueError
		if errors.As(err, &ve) && ve.Index >= 0 {
			return invalid(fmt.Sprintf("%shistorical_metrics[%d]", prefix, ve.Index), ve.Error())
		}
		return fmt.Errorf("%shistorical_metrics: %w", prefix, err)
	}
	return nil
}

// forecastRows builds one response per request row. Confidence is 1 / (1 + mean(sigma) / scale)
// over the returned steps, where sigma is the model's predicted standard deviation and scale its
// metadata's novacron.confidence_scale (the held-out median of the target): 1 for a certain
// forecast, 0.5 when the predicted spread equals a typical value.
func forecastRows(m *Model, rows []rowOut, reqs []*aipb.BandwidthRequest) []*aipb.BandwidthResponse {
	h := m.horizon
	out := make([]*aipb.BandwidthResponse, len(reqs))
	for i, req := range reqs {
		fc, sg := m.out(rows[i], outForecast), m.out(rows[i], outSigma)
		n := h
		if hm := int(req.GetHorizonMinutes()); hm > 0 && hm < h {
			n = hm
		}
		preds := make([]float64, n)
		var spread float64
		for j := 0; j < n; j++ {
			preds[j] = float64(fc[j])
			spread += math.Abs(float64(sg[j]))
		}
		conf := 1 / (1 + spread/float64(n)/m.confidenceScale)
		out[i] = &aipb.BandwidthResponse{Predictions: preds, Confidence: conf, ModelVersion: m.Version, VmId: req.GetVmId()}
	}
	return out
}
