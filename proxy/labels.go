package proxy

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/novacron/sidecar/features"
	"github.com/novacron/sidecar/features/drift"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// PushLabels scores the answers of the anomaly and placement targets against the truth pushed
// later: each label goes to the label tracker (base.labelAccuracy) of the target it names, or of
// every target of its task, and each tracker that kept an answer for the VM or workload joins the
// label with it (see drift.Labels: the answer nearest in time to the label's time, within the
// accuracy window, scored once; a label whose nearest answer is scored joins nothing). So both
// arms of a split, and a shadow, are scored against the same truth. Every label is checked before
// any is scored: a bad one fails the call with nothing scored.
func (s *Service) PushLabels(ctx context.Context, req *aipb.PushLabelsRequest) (*aipb.PushLabelsResponse, error) {
	labels := req.GetLabels()
	if n := len(labels); n > s.cfg.MaxPushSamples {
		return nil, invalid("labels", fmt.Sprintf("%d labels, at most %d per call (limits.max_push_samples); nothing scored", n, s.cfg.MaxPushSamples))
	}
	st := s.state.Load()
	now := s.cfg.Now()
	checked := make([]checkedLabel, len(labels))
	for i, lb := range labels {
		if err := s.checkLabel(st, now, i, lb, &checked[i]); err != nil {
			return nil, err
		}
	}
	var byTask map[string][]*drift.Labels // the trackers of every target of a task, made once
	resp := &aipb.PushLabelsResponse{Accepted: int64(len(labels))}
	for _, c := range checked {
		trackers := c.trackers
		if trackers == nil {
			if byTask == nil {
				byTask = st.labelTrackers()
			}
			trackers = byTask[c.task]
		}
		joined := false
		for _, tr := range trackers {
			joined = tr.Label(c.key, c.at, c.truth) || joined // every tracker scores its answer
		}
		if joined {
			resp.Joined++
		}
	}
	return resp, nil
}

// checkedLabel is a label checked and ready to score.
type checkedLabel struct {
	task       string // TaskAnomaly or TaskPlacement
	key, truth string // vm_id and the verdict's class, or workload_id and node_id
	at         time.Time
	trackers   []*drift.Labels // the named model's; nil: every target's of task
}

// checkLabel checks label i (exactly one of vm_id with is_anomaly, or workload_id with node_id;
// identifiers within bounds; timestamp_ms not before 1970 nor more than a step ahead of now, the
// sidecar's clock; the model, when named, loaded and of the label's task) into c.
func (s *Service) checkLabel(st *snapshot, now time.Time, i int, lb *aipb.Label, c *checkedLabel) error {
	at := func(field string) string { return "labels[" + strconv.Itoa(i) + "]." + field }
	vm, workload, node := lb.GetVmId(), lb.GetWorkloadId(), lb.GetNodeId()
	switch {
	case vm != "" && workload != "":
		return invalid(at("workload_id"), "not with vm_id: a label is an anomaly label (vm_id, is_anomaly) or a placement label (workload_id, node_id)")
	case vm != "" && node != "":
		return invalid(at("node_id"), "not with vm_id: a label is an anomaly label (vm_id, is_anomaly) or a placement label (workload_id, node_id)")
	case vm != "" && lb.IsAnomaly == nil:
		// Absent is not false: a label that forgot it must not score the VM's answer as "normal".
		return invalid(at("is_anomaly"), "required with vm_id: whether the VM really was anomalous (true or false)")
	case vm != "":
		c.task, c.key, c.truth = TaskAnomaly, vm, anomalyClass(lb.GetIsAnomaly())
	case workload != "" && node == "":
		return invalid(at("node_id"), "required with workload_id: the node that was right for the workload")
	case workload == "" && node != "":
		return invalid(at("workload_id"), "required with node_id")
	case workload != "" && lb.IsAnomaly != nil:
		return invalid(at("is_anomaly"), "not with workload_id: it is an anomaly label's (with vm_id); a placement label gives workload_id and node_id")
	case workload != "":
		c.task, c.key, c.truth = TaskPlacement, workload, node
	default:
		return invalid(at("vm_id"), "required: an anomaly label gives vm_id and is_anomaly, a placement label workload_id and node_id")
	}
	for _, f := range [...]struct{ name, v string }{{"vm_id", vm}, {"workload_id", workload}, {"node_id", node}, {"model", lb.GetModel()}} {
		if err := s.checkID(at(f.name), f.v); err != nil {
			return err
		}
	}
	switch ms := lb.GetTimestampMs(); {
	case ms < 0:
		return invalid(at("timestamp_ms"), fmt.Sprintf("%d is before 1970; give Unix milliseconds, or 0 for now", ms))
	case ms > 0:
		// As features.Windows refuses a pushed sample: a truth cannot hold later than the answer
		// it scores, given already; a time far ahead is a wrong clock or not milliseconds (and
		// past 2262 would overflow Unix nanoseconds).
		t, step := time.UnixMilli(ms), s.labelStep()
		if t.After(now.Add(step)) {
			return invalid(at("timestamp_ms"), fmt.Sprintf("%d (%s) is more than a step (%v) ahead of the sidecar's clock %s: a label is the truth of an answer already given; give Unix milliseconds, or 0 for now",
				ms, t.UTC().Format(time.RFC3339Nano), step, now.UTC().Format(time.RFC3339Nano)))
		}
		c.at = t
	}
	if name := lb.GetModel(); name != "" {
		t, ok := st.targets[name]
		if !ok {
			return fmt.Errorf("%s: %s is not loaded (loaded: %s): %w", at("model"), clip(name), strings.Join(st.names, ", "), ErrUnknownModel)
		}
		tr := t.common().labelAccuracy
		if task := t.Info().Task; task != c.task || tr == nil {
			with := "vm_id"
			if c.task == TaskPlacement {
				with = "workload_id"
			}
			return invalid(at("model"), fmt.Sprintf("%s is a %s model; a label with %s scores %s models", clip(name), task, with, c.task))
		}
		c.trackers = []*drift.Labels{tr}
	}
	return nil
}

// labelStep is how far ahead of the clock a label's time may be: a step of the windows
// (windows.step), as for a pushed sample.
func (s *Service) labelStep() time.Duration {
	if st := s.cfg.Windows.Step; st > 0 {
		return st
	}
	return features.DefaultStep
}

// labelTrackers returns the label trackers of the snapshot's targets by task.
func (st *snapshot) labelTrackers() map[string][]*drift.Labels {
	out := map[string][]*drift.Labels{}
	for _, t := range st.targets {
		if b := t.common(); b.labelAccuracy != nil {
			out[b.Task] = append(out[b.Task], b.labelAccuracy)
		}
	}
	return out
}

// PushLabels adapts Service.PushLabels to the generated AIServiceServer.
func (a *aiServer) PushLabels(ctx context.Context, r *aipb.PushLabelsRequest) (*aipb.PushLabelsResponse, error) {
	return a.svc.PushLabels(ctx, r)
}
