package legacy

import (
	"fmt"
	"math"

	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// The checks of an answer against its request. Each returns nil or a *fieldError naming the field
// of the response at fault; the caller adds the endpoint, the route and ErrBadResponse.

// checkBandwidth checks one forecast. The seed gives one prediction per minute of horizon, so with
// horizon_minutes > 0 the length must be exactly horizon_minutes; with horizon_minutes 0 (the
// upstream's default horizon) any non-empty length is accepted. vm_id (field 15, an extension of
// the seed's message) is checked only when the upstream sets it.
func checkBandwidth(req *aipb.BandwidthRequest, resp *aipb.BandwidthResponse) error {
	if resp == nil {
		return badField("result", "missing")
	}
	if v := resp.GetVmId(); v != "" && v != req.GetVmId() {
		return badField("vm_id", "%q, want %q (the request's)", v, req.GetVmId())
	}
	p := resp.GetPredictions()
	if len(p) == 0 {
		return badField("predictions", "empty")
	}
	if h := req.GetHorizonMinutes(); h > 0 && len(p) != int(h) {
		return badField("predictions", "%d values, want %d (one per minute of horizon_minutes)", len(p), h)
	}
	for i, v := range p {
		if !finite(v) {
			return badField(fmt.Sprintf("predictions[%d]", i), "%v, want a finite number", v)
		}
	}
	return unit("confidence", resp.GetConfidence())
}

// checkAnomaly checks one anomaly verdict: the score is finite and in [0, 1].
func checkAnomaly(resp *aipb.AnomalyResponse) error {
	if resp == nil {
		return badField("result", "missing")
	}
	return unit("score", resp.GetScore())
}

// checkPlacement checks a ranking: every candidate names a node of req.available_nodes, at most
// once, with a finite score; overall_confidence is in [0, 1].
func checkPlacement(req *aipb.PlacementRequest, resp *aipb.PlacementResponse) error {
	if resp == nil {
		return badField("result", "missing")
	}
	known := make(map[string]bool, len(req.GetAvailableNodes()))
	for _, n := range req.GetAvailableNodes() {
		known[n.GetNodeId()] = true
	}
	seen := make(map[string]int, len(resp.GetCandidates()))
	for i, c := range resp.GetCandidates() {
		id := c.GetNodeId()
		if !known[id] {
			return badField(fmt.Sprintf("candidates[%d].node_id", i), "%q is not among the request's available_nodes", id)
		}
		if j, dup := seen[id]; dup {
			return badField(fmt.Sprintf("candidates[%d].node_id", i), "%q repeats candidates[%d]", id, j)
		}
		seen[id] = i
		if !finite(c.GetScore()) {
			return badField(fmt.Sprintf("candidates[%d].score", i), "%v, want a finite number", c.GetScore())
		}
	}
	return unit("overall_confidence", resp.GetOverallConfidence())
}

// unit checks a value that must lie in [0, 1].
func unit(field string, v float64) error {
	if !finite(v) || v < 0 || v > 1 {
		return badField(field, "%v, want a number in [0, 1]", v)
	}
	return nil
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
