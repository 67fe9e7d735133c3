package proxy

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/novacron/sidecar/features"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// PushMetrics stores samples in the window of every forecast model, in order; it stops at the first
// bad sample (naming it and how many before it were stored). The response's count is set on errors
// too.
func (s *Service) PushMetrics(ctx context.Context, req *aipb.PushMetricsRequest) (*aipb.PushMetricsResponse, error) {
	now := s.cfg.Now()
	resp := &aipb.PushMetricsResponse{}
	var accepted int64
	defer func() { resp.Accepted = accepted }()
	if n := len(req.GetSamples()); n > s.cfg.MaxPushSamples {
		return resp, invalid("samples", fmt.Sprintf("%d samples, at most %d per call (limits.max_push_samples); nothing stored", n, s.cfg.MaxPushSamples))
	}
	for i, smp := range req.GetSamples() {
		at := func() string { return "samples[" + strconv.Itoa(i) + "]" } // for errors only
		if len(smp.GetVmId()) > s.cfg.MaxIDBytes {
			err := s.checkID("vm_id", smp.GetVmId())
			var fe *features.FieldError
			if !errors.As(err, &fe) {
				return resp, fmt.Errorf("%s (%d samples before it stored): %w", at(), accepted, err)
			}
			return resp, invalid(at()+".vm_id", fmt.Sprintf("%s (%d samples before it stored)", fe.Reason, accepted))
		}
		m := smp.GetMetrics()
		if m == nil {
			return resp, invalid(at()+".metrics", fmt.Sprintf("required (%d samples before it stored)", accepted))
		}
		t := now
		if ms := smp.GetTimestampMs(); ms != 0 {
			t = time.UnixMilli(ms)
		}
		values := [6]float64{m.GetCpu(), m.GetMemory(), m.GetDiskIo(), m.GetNetworkIo(), m.GetLatency(), m.GetErrorRate()}
		st := s.state.Load()
		for _, a := range st.accuracy {
			a.Actual(smp.GetVmId(), t, values[3]) // network_io: the forecasts' truth
		}
		for _, w := range st.windows {
			if err := w.Push(smp.GetVmId(), t, values, now); err != nil {
				var fe *features.FieldError
				if errors.As(err, &fe) {
					return resp, invalid(at()+"."+fe.Field, fmt.Sprintf("%s (%d samples before it stored)", fe.Reason, accepted))
				}
				return resp, fmt.Errorf("%s (%d samples before it stored): %w", at(), accepted, err)
			}
		}
		accepted++
	}
	return resp, nil
}
