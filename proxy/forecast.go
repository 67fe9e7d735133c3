package proxy

import (
	"context"
	"slices"
	"sync"

	"errors"
	"fmt"
	"google.golang.org/protobuf/proto"
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
	st := s.state.Load()
	d, err := s.decide(ctx, st, req.GetModel(), familyForecast, "PredictBandwidth", req.GetVmId())
	if err != nil {
		return nil, err
	}
	d.count(1)
	out, err := routed(s, ctx, st, d, TaskForecast, &aipb.BandwidthBatchRequest{Vms: []*aipb.BandwidthRequest{req}}, forecastCall(nil), forecastMsg, fillWindows)
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// forecastCall calls a target's Forecast with the VMs of a call (at as Forecaster.Forecast takes it).
func forecastCall(at []int) func(context.Context, Target, *aipb.BandwidthBatchRequest) ([]*aipb.BandwidthResponse, error) {
	return func(ctx context.Context, t Target, q *aipb.BandwidthBatchRequest) ([]*aipb.BandwidthResponse, error) {
		f, err := as[Forecaster](t, nil)
		if err != nil {
			return nil, err
		}
		return f.Forecast(ctx, q.GetVms(), at)
	}
}

func forecastMsg(out []*aipb.BandwidthResponse) proto.Message {
	return &aipb.BandwidthBatchResponse{Results: out}
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
	vms := req.GetVms()
	switch {
	case len(vms) == 0:
		return nil, invalid("vms", "empty: give at least one VM")
	case len(vms) > s.cfg.MaxBatchVMs:
		return nil, invalid("vms", fmt.Sprintf("%d VMs, at most %d per call (limits.max_batch_vms)", len(vms), s.cfg.MaxBatchVMs))
	}
	st := s.state.Load()
	// A VM may name the batch's model (or, when the batch names none, its route's target) or none.
	batchModel := req.GetModel()
	if r := st.routes[RouteBandwidth]; batchModel == "" && r != nil {
		batchModel = r.Target
	}
	for i, vm := range vms {
		if err := s.checkIDs(fmt.Sprintf("vms[%d].", i), vm.GetModel(), vm.GetVmId()); err != nil {
			return nil, err
		}
		if vm.GetModel() != "" && vm.GetModel() != batchModel {
			return nil, invalid(fmt.Sprintf("vms[%d].model", i), fmt.Sprintf("%q differs from the batch's model %q; one batch runs one model", vm.GetModel(), batchModel))
		}
	}
	d, err := s.decide(ctx, st, req.GetModel(), familyForecast, "PredictBandwidthBatch", vms[0].GetVmId())
	if err != nil {
		return nil, err
	}
	if d.route == nil || len(d.route.bounds) == 0 {
		d.count(len(vms))
		out, err := routed(s, ctx, st, d, TaskForecast, req, forecastCall(identity(len(vms))), forecastMsg, fillWindows)
		if err != nil {
			return nil, err
		}
		return &aipb.BandwidthBatchResponse{Results: out}, nil
	}
	out, err := s.splitForecast(ctx, st, d.route, vms)
	if err != nil {
		return nil, err
	}
	return &aipb.BandwidthBatchResponse{Results: out}, nil
}

// splitForecast serves a batch whose route splits it: each VM goes to its own arm (so one VM sees
// one arm whatever batch it comes in), the arms' parts run at once, and the answers come back in
// the order of vms. Errors name the VM by its index in vms; the first failing part's error (in
// the order of the arms' first VMs) is the call's.
func (s *Service) splitForecast(ctx context.Context, st *snapshot, r *route, vms []*aipb.BandwidthRequest) ([]*aipb.BandwidthResponse, error) {
	type part struct {
		d   decision
		at  []int
		out []*aipb.BandwidthResponse
		err error
	}
	var parts []*part
	byArm := map[string]*part{}
	for i, vm := range vms {
		name := r.arm(vm.GetVmId())
		p := byArm[name]
		if p == nil {
			t, err := s.target(st, name, fromRoute, familyForecast, "PredictBandwidthBatch")
			if err != nil {
				return nil, err
			}
			p = &part{d: decision{serve: t, route: r}}
			byArm[name] = p
			parts = append(parts, p)
		}
		p.at = append(p.at, i)
	}
	run := func(p *part) {
		sub := make([]*aipb.BandwidthRequest, len(p.at))
		for j, i := range p.at {
			sub[j] = vms[i]
		}
		p.d.count(len(sub))
		p.out, p.err = routed(s, ctx, st, p.d, TaskForecast, &aipb.BandwidthBatchRequest{Vms: sub}, forecastCall(p.at), forecastMsg, fillWindows)
	}
	var wg sync.WaitGroup
	for _, p := range parts[1:] {
		wg.Go(func() {
			// A panic here would take the process down: it becomes this part's error, as the
			// handler's recovery does for the first part.
			if _, err := recovered(func() (any, error) { run(p); return nil, p.err }); err != nil && p.err == nil {
				p.err = err
			}
		})
	}
	run(parts[0])
	wg.Wait()
	out := make([]*aipb.BandwidthResponse, len(vms))
	for _, p := range parts {
		if p.err != nil {
			return nil, p.err
		}
		for j, i := range p.at {
			out[i] = p.out[j]
		}
	}
	return out, nil
}

// fillWindows gives a shadowed forecast the pushed windows its primary read: each VM that sent no
// historical_metrics gets the serving target's window at now, the time the call began (the
// shadow runs later, after pushes that may have changed the window). Only when every shadow reads
// the serving target's spec (a shadow of another spec reads its own window when it runs), and
// only windows without gaps (a gap the spec fills is the shadow's to fill).
func fillWindows(q *aipb.BandwidthBatchRequest, serve Target, shadows []Target, now time.Time) {
	b := serve.common()
	if b.windows == nil {
		return
	}
	for _, t := range shadows {
		if t.common().fingerprint != b.fingerprint {
			return
		}
	}
	for _, vm := range q.GetVms() {
		if len(vm.GetHistoricalMetrics()) > 0 {
			continue
		}
		raw := make([]float64, b.Spec.Size())
		if b.windows.Raw(raw, vm.GetVmId(), now) != nil || slices.ContainsFunc(raw, math.IsNaN) {
			continue
		}
		vm.HistoricalMetrics = raw
	}
}

// identity returns 0..n-1.
func identity(n int) []int {
	at := make([]int, n)
	for i := range at {
		at[i] = i
	}
	return at
}

// Forecast implements Forecaster: the requests' windows are canonicalized and answered through the
// row pipeline as one call.
func (m *Model) Forecast(ctx context.Context, reqs []*aipb.BandwidthRequest, at []int) ([]*aipb.BandwidthResponse, error) {
	if m.Task != TaskForecast {
		return nil, m.wrongTask(TaskForecast)
	}
	buf, err := m.canonWindows(reqs, at)
	if err != nil {
		return nil, err
	}
	res, err := m.svc.rows(ctx, m, len(reqs), buf, forecastPriority(ctx, at != nil), true, 1)
	if err != nil {
		return nil, err
	}
	out := forecastRows(m, res, reqs)
	m.track(reqs, out)
	return out, nil
}

// track hands the forecasts made from pushed windows to the live accuracy tracker: the truth of
// each arrives later, pushed.
func (b *base) track(reqs []*aipb.BandwidthRequest, out []*aipb.BandwidthResponse) {
	if b.accuracy == nil || b.windows == nil {
		return
	}
	for i, r := range reqs {
		if len(r.GetHistoricalMetrics()) > 0 || i >= len(out) {
			continue // a window the caller sent has no time: its truth cannot be joined
		}
		if at, ok := b.windows.LastStep(r.GetVmId()); ok {
			b.accuracy.Forecast(r.GetVmId(), at, out[i].GetPredictions())
		}
	}
}

// forecastPriority is a forecast call's priority: the caller's, else high for one VM and low for
// a batch.
func forecastPriority(ctx context.Context, batch bool) int {
	if batch {
		return priority(ctx, PriorityLow)
	}
	return priority(ctx, PriorityHigh)
}

// canonWindows validates forecast requests against the target's spec and canonicalizes their
// windows (a pushed one where a request sends none), one row each. With at, errors name request i
// as vms[at[i]].
func (b *base) canonWindows(reqs []*aipb.BandwidthRequest, at []int) ([]float32, error) {
	size := b.Spec.Size()
	buf := make([]float32, len(reqs)*size)
	now := b.svc.cfg.Now()
	for i, r := range reqs {
		vm := -1
		if at != nil {
			vm = at[i]
		}
		if err := b.canonWindow(buf[i*size:(i+1)*size], r, vm, now); err != nil {
			return nil, err
		}
	}
	return buf, nil
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
func (b *base) canonWindow(dst []float32, req *aipb.BandwidthRequest, vm int, now time.Time) error {
	if err := b.canonWindowAt(dst, req, now); err != nil {
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
func (b *base) canonStored(dst []float32, vm string, now time.Time) error {
	raw := make([]float64, b.Spec.Size())
	if err := b.windows.Raw(raw, vm, now); err != nil {
		return err
	}
	if err := b.Spec.Canonicalize(dst, raw); err != nil {
		return fmt.Errorf("vm %q: stored window: %v: %w", vm, err, features.ErrNotReady)
	}
	return nil
}

func (b *base) canonWindowAt(dst []float32, req *aipb.BandwidthRequest, now time.Time) error {
	if req.GetVmId() == "" {
		return invalid("vm_id", "required")
	}
	if h := req.GetHorizonMinutes(); h < 0 || int64(h) > int64(b.horizon) {
		return invalid("horizon_minutes", fmt.Sprintf("%d is not in 0..%d: give 0 for the model's whole horizon (%d minutes) or 1..%d", h, b.horizon, b.horizon, b.horizon))
	}
	raw := req.GetHistoricalMetrics()
	if len(raw) == 0 && b.windows != nil {
		return b.canonStored(dst, req.GetVmId(), now)
	}
	if len(raw) != b.Spec.Size() {
		return invalid("historical_metrics", fmt.Sprintf("got %d values, want %d: %d steps x %d features (%s), oldest step first",
			len(raw), b.Spec.Size(), b.Spec.Steps(), b.Spec.Width(), strings.Join(b.Spec.FeatureNames(), ", ")))
	}
	w := b.Spec.Width()
	for i, v := range raw {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return invalid(fmt.Sprintf("historical_metrics[%d]", i),
				fmt.Sprintf("%s is not a finite number (step %d, feature %s)", strconv.FormatFloat(v, 'g', -1, 64), i/w, b.Spec.Features[i%w].Name))
		}
	}
	if err := b.Spec.Canonicalize(dst, raw); err != nil {
		var ve *features.ValueError
		if errors.As(err, &ve) && ve.Index >= 0 {
			return invalid(fmt.Sprintf("historical_metrics[%d]", ve.Index), ve.Error())
		}
		return fmt.Errorf("historical_metrics: %w", err)
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
