package proxy

import (
	"context"
	"fmt"
	"math"

	"google.golang.org/protobuf/proto"

	"github.com/novacron/sidecar/features"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// DetectAnomaly scores one VM's current metrics.
func (s *Service) DetectAnomaly(ctx context.Context, req *aipb.AnomalyRequest) (*aipb.AnomalyResponse, error) {
	return acrossSwap(s, func() (*aipb.AnomalyResponse, error) { return s.detectAnomaly(ctx, req) })
}

func (s *Service) detectAnomaly(ctx context.Context, req *aipb.AnomalyRequest) (*aipb.AnomalyResponse, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	if err := s.checkIDs("", req.GetModel(), req.GetVmId()); err != nil {
		return nil, err
	}
	st := s.state.Load()
	d, err := s.decide(ctx, st, req.GetModel(), familyAnomaly, "DetectAnomaly", req.GetVmId())
	if err != nil {
		return nil, err
	}
	d.count(1)
	return routed(s, ctx, st, d, TaskAnomaly, req, detect, func(r *aipb.AnomalyResponse) proto.Message { return r }, nil)
}

// detect calls a target's Detect.
func detect(ctx context.Context, t Target, req *aipb.AnomalyRequest) (*aipb.AnomalyResponse, error) {
	d, err := as[Detector](t, nil)
	if err != nil {
		return nil, err
	}
	return d.Detect(ctx, req)
}

// canonAnomaly validates an anomaly request against the target's spec and canonicalizes its
// current metrics into one row.
func (b *base) canonAnomaly(req *aipb.AnomalyRequest) ([]float32, error) {
	if req.GetVmId() == "" {
		return nil, invalid("vm_id", "required")
	}
	cm := req.GetCurrentMetrics()
	if cm == nil {
		return nil, invalid("current_metrics", "required: the VM's metrics (cpu, memory, disk_io, network_io, latency, error_rate)")
	}
	values := [...]float64{cm.GetCpu(), cm.GetMemory(), cm.GetDiskIo(), cm.GetNetworkIo(), cm.GetLatency(), cm.GetErrorRate()}
	raw := make([]float64, b.Spec.Width())
	for i, f := range b.Spec.Features {
		v := values[features.VMMetricsField(f.Source)]
		if err := checkFinite("current_metrics."+f.Source, v); err != nil {
			return nil, err
		}
		raw[i] = v
	}
	buf := make([]float32, len(raw))
	if err := b.Spec.Canonicalize(buf, raw); err != nil {
		return nil, fmt.Errorf("current_metrics: %w", err)
	}
	return buf, nil
}

// Detect implements Detector: the score is 1 - P(normal), the type the likeliest other class.
func (m *Model) Detect(ctx context.Context, req *aipb.AnomalyRequest) (*aipb.AnomalyResponse, error) {
	if m.Task != TaskAnomaly {
		return nil, m.wrongTask(TaskAnomaly)
	}
	buf, err := m.canonAnomaly(req)
	if err != nil {
		return nil, err
	}
	res, err := m.svc.rows(ctx, m, 1, buf, priority(ctx, PriorityHigh), true, 1)
	if err != nil {
		return nil, err
	}
	p := m.out(res[0], outProbs)
	for j, pj := range p {
		if pj < 0 || pj > 1 {
			return nil, fmt.Errorf("model %q: output %q class %s is %v, not a probability: %w", m.Name, outProbs, m.labels[j], pj, ErrBadOutput)
		}
	}
	score := 1 - float64(p[m.normalIndex])
	score = math.Min(1, math.Max(0, score))
	best := 0
	if best == m.normalIndex {
		best = 1
	}
	for j, pj := range p {
		if j != m.normalIndex && pj > p[best] {
			best = j
		}
	}
	resp := &aipb.AnomalyResponse{Score: score, IsAnomaly: score >= m.thresholds.Threshold, Severity: m.thresholds.Severity(score),
		AnomalyType: "none", ModelVersion: m.Version}
	if resp.IsAnomaly {
		resp.AnomalyType = m.labels[best]
	}
	m.detected(req, resp)
	return resp, nil
}

// The classes an anomaly target's verdicts and the anomaly labels pushed are scored as.
const (
	classAnomaly = "anomaly"
	classNormal  = "normal"
)

func anomalyClass(isAnomaly bool) string {
	if isAnomaly {
		return classAnomaly
	}
	return classNormal
}

// detected records a verdict answered for the VM, for the labels pushed later to score.
func (b *base) detected(req *aipb.AnomalyRequest, resp *aipb.AnomalyResponse) {
	b.answered(req.GetVmId(), anomalyClass(resp.GetIsAnomaly()))
}
