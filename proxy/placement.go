package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/novacron/sidecar/features"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// OptimizePlacement scores every available node for a workload in one batch and returns them best
// first. Each node's reasoning names the features that moved its score most: for every feature the
// node is scored again with that feature at its normalization center (an average value), in the
// same batch, and the differences are its contributions.
//
// overall_confidence is the best score times (0.5 + 0.5 * min(1, margin / 0.1)), where margin is the
// best score minus the second best: high when the best node is good and clearly ahead.
func (s *Service) OptimizePlacement(ctx context.Context, req *aipb.PlacementRequest) (*aipb.PlacementResponse, error) {
	return acrossSwap(s, func() (*aipb.PlacementResponse, error) { return s.optimizePlacement(ctx, req) })
}

func (s *Service) optimizePlacement(ctx context.Context, req *aipb.PlacementRequest) (*aipb.PlacementResponse, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	if err := s.checkID("model", req.GetModel()); err != nil {
		return nil, err
	}
	if err := s.checkID("workload_id", req.GetWorkloadId()); err != nil {
		return nil, err
	}
	st := s.state.Load()
	d, err := s.decide(ctx, st, req.GetModel(), familyPlacement, "OptimizePlacement", req.GetWorkloadId())
	if err != nil {
		return nil, err
	}
	nodes := req.GetAvailableNodes()
	switch {
	case len(nodes) == 0:
		return nil, invalid("available_nodes", "empty: give at least one candidate node")
	case len(nodes) > s.cfg.MaxNodes:
		return nil, invalid("available_nodes", fmt.Sprintf("%d nodes, at most %d per call (limits.max_nodes)", len(nodes), s.cfg.MaxNodes))
	}
	seen := make(map[string]int, len(nodes))
	for i, n := range nodes {
		at := "available_nodes[" + strconv.Itoa(i) + "].node_id"
		if n.GetNodeId() == "" {
			return nil, invalid(at, "required")
		}
		if err := s.checkID(at, n.GetNodeId()); err != nil {
			return nil, err
		}
		if j, dup := seen[n.GetNodeId()]; dup {
			return nil, invalid(at, fmt.Sprintf("%q repeats available_nodes[%d]", n.GetNodeId(), j))
		}
		seen[n.GetNodeId()] = i
	}
	d.count(1)
	return routed(s, ctx, st, d, TaskPlacement, req, place, func(r *aipb.PlacementResponse) proto.Message { return r }, nil)
}

// place calls a target's Place.
func place(ctx context.Context, t Target, req *aipb.PlacementRequest) (*aipb.PlacementResponse, error) {
	p, err := as[Placer](t, nil)
	if err != nil {
		return nil, err
	}
	return p.Place(ctx, req)
}

// canonPlacement validates a placement request's requirements and node capacities against the
// target's spec and canonicalizes one row per node, in the request's order. (The handler has
// checked the node list and its node_ids.)
func (b *base) canonPlacement(req *aipb.PlacementRequest) ([]float32, error) {
	reqs := req.GetRequirements()
	var known []string
	for _, f := range b.Spec.Features {
		if k, ok := strings.CutPrefix(f.Source, "requirements."); ok {
			known = append(known, k)
		}
	}
	keys := slices.Sorted(maps.Keys(reqs))
	for _, k := range keys {
		if !slices.Contains(known, k) {
			return nil, invalid("requirements", fmt.Sprintf("unknown key %s; model %q reads %s (names are case-sensitive)", clip(k), b.Name, strings.Join(known, ", ")))
		}
		v := reqs[k]
		if err := checkFinite("requirements["+strconv.Quote(k)+"]", v); err != nil {
			return nil, err
		}
		if v < 0 {
			return nil, invalid("requirements["+strconv.Quote(k)+"]", fmt.Sprintf("%v is negative", v))
		}
	}
	nodes := req.GetAvailableNodes()
	w := b.Spec.Width()
	buf := make([]float32, len(nodes)*w)
	raw := make([]float64, w)
	for i, n := range nodes {
		at := "available_nodes[" + strconv.Itoa(i) + "]"
		for j, f := range b.Spec.Features {
			var v float64
			switch {
			case f.Source == "node.cpu_available":
				v = n.GetCpuAvailable()
				if err := checkCapacity(at+".cpu_available", v); err != nil {
					return nil, err
				}
			case f.Source == "node.memory_available":
				v = n.GetMemoryAvailable()
				if err := checkCapacity(at+".memory_available", v); err != nil {
					return nil, err
				}
			default:
				key := strings.TrimPrefix(f.Source, "requirements.")
				var ok bool
				if v, ok = reqs[key]; !ok {
					v = math.NaN() // missing: the spec's policy decides
				}
			}
			raw[j] = v
		}
		if err := b.Spec.Canonicalize(buf[i*w:(i+1)*w], raw); err != nil {
			var ve *features.ValueError
			if errors.As(err, &ve) && ve.Index >= 0 && strings.HasPrefix(b.Spec.Features[ve.Index%w].Source, "requirements.") {
				return nil, invalid("requirements["+strconv.Quote(strings.TrimPrefix(b.Spec.Features[ve.Index%w].Source, "requirements."))+"]", ve.Reason)
			}
			return nil, fmt.Errorf("%s: %w", at, err)
		}
	}
	return buf, nil
}

// Place implements Placer: every node is scored, with its occluded copies, in one call of the row
// pipeline.
func (m *Model) Place(ctx context.Context, req *aipb.PlacementRequest) (*aipb.PlacementResponse, error) {
	if m.Task != TaskPlacement {
		return nil, m.wrongTask(TaskPlacement)
	}
	base, err := m.canonPlacement(req)
	if err != nil {
		return nil, err
	}
	nodes := req.GetAvailableNodes()
	w := m.Spec.Width()
	per := 1 + w // the node's row, then one row per occluded feature
	buf := make([]float32, len(nodes)*per*w)
	for i := range nodes {
		row := base[i*w : (i+1)*w]
		copy(buf[i*per*w:], row)
		for j := 0; j < w; j++ {
			occ := buf[(i*per+1+j)*w : (i*per+2+j)*w]
			copy(occ, row)
			occ[j] = center(m.Spec.Features[j])
		}
	}
	rows := len(nodes) * per
	res, err := m.svc.rows(ctx, m, rows, buf, priority(ctx, PriorityHigh), true, per)
	if err != nil {
		return nil, err
	}
	sc := make([]float32, rows)
	for i := range sc {
		sc[i] = m.out(res[i], outScore)[0]
	}
	cands := make([]*aipb.PlacementCandidate, len(nodes))
	type contrib struct {
		name  string
		delta float64
	}
	cs := make([]contrib, w)
	for i, n := range nodes {
		score := float64(sc[i*per])
		for j := 0; j < w; j++ {
			cs[j] = contrib{m.Spec.Features[j].Name, score - float64(sc[i*per+1+j])}
		}
		slices.SortStableFunc(cs, func(a, b contrib) int { return cmp.Compare(math.Abs(b.delta), math.Abs(a.delta)) })
		var why strings.Builder
		fmt.Fprintf(&why, "score %.3f; driven by ", score)
		for j := 0; j < min(2, w); j++ {
			if j > 0 {
				why.WriteString(", ")
			}
			fmt.Fprintf(&why, "%s (%+.3f)", cs[j].name, cs[j].delta)
		}
		why.WriteString(" against an average value")
		cands[i] = &aipb.PlacementCandidate{NodeId: n.GetNodeId(), Score: score, Reasoning: why.String()}
	}
	slices.SortStableFunc(cands, func(a, b *aipb.PlacementCandidate) int { return cmp.Compare(b.Score, a.Score) })
	best := cands[0].Score
	margin := 0.1
	if len(cands) > 1 {
		margin = best - cands[1].Score
	}
	overall := best * (0.5 + 0.5*math.Min(1, margin/0.1))
	resp := &aipb.PlacementResponse{Candidates: cands, OverallConfidence: overall, ModelVersion: m.Version}
	m.placed(req, resp)
	return resp, nil
}

// placed records the node a placement ranked best (its first candidate, as the answer ranks
// them) for the workload, for the labels pushed later to score.
func (b *base) placed(req *aipb.PlacementRequest, resp *aipb.PlacementResponse) {
	if c := resp.GetCandidates(); len(c) > 0 {
		b.answered(req.GetWorkloadId(), c[0].GetNodeId())
	}
}

// checkCapacity refuses a node capacity that is not a finite, non-negative number.
func checkCapacity(field string, v float64) error {
	if err := checkFinite(field, v); err != nil {
		return err
	}
	if v < 0 {
		return invalid(field, fmt.Sprintf("%v is negative; a capacity is 0 or more", v))
	}
	return nil
}

// center is the canonical value of a feature at its normalization center.
func center(f features.Feature) float32 {
	if f.Normalize.Method == features.NormMinMax {
		return 0.5
	}
	return 0
}
