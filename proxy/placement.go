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
	m, err := s.model(req.GetModel(), func(r Routes) string { return r.Placement }, TaskPlacement, "OptimizePlacement")
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
	reqs := req.GetRequirements()
	var known []string
	for _, f := range m.Spec.Features {
		if k, ok := strings.CutPrefix(f.Source, "requirements."); ok {
			known = append(known, k)
		}
	}
	keys := slices.Sorted(maps.Keys(reqs))
	for _, k := range keys {
		if !slices.Contains(known, k) {
			return nil, invalid("requirements", fmt.Sprintf("unknown key %s; model %q reads %s (names are case-sensitive)", clip(k), m.Name, strings.Join(known, ", ")))
		}
		v := reqs[k]
		if err := checkFinite("requirements["+strconv.Quote(k)+"]", v); err != nil {
			return nil, err
		}
		if v < 0 {
			return nil, invalid("requirements["+strconv.Quote(k)+"]", fmt.Sprintf("%v is negative", v))
		}
	}
	w := m.Spec.Width()
	per := 1 + w // the node's row, then one row per occluded feature
	buf := make([]float32, len(nodes)*per*w)
	raw := make([]float64, w)
	seen := make(map[string]int, len(nodes))
	for i, n := range nodes {
		at := "available_nodes[" + strconv.Itoa(i) + "]"
		if n.GetNodeId() == "" {
			return nil, invalid(at+".node_id", "required")
		}
		if err := s.checkID(at+".node_id", n.GetNodeId()); err != nil {
			return nil, err
		}
		if j, dup := seen[n.GetNodeId()]; dup {
			return nil, invalid(at+".node_id", fmt.Sprintf("%q repeats available_nodes[%d]", n.GetNodeId(), j))
		}
		seen[n.GetNodeId()] = i
		for j, f := range m.Spec.Features {
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
		base := buf[i*per*w : (i*per+1)*w]
		if err := m.Spec.Canonicalize(base, raw); err != nil {
			var ve *features.ValueError
			if errors.As(err, &ve) && ve.Index >= 0 && strings.HasPrefix(m.Spec.Features[ve.Index%w].Source, "requirements.") {
				return nil, invalid("requirements["+strconv.Quote(strings.TrimPrefix(m.Spec.Features[ve.Index%w].Source, "requirements."))+"]", ve.Reason)
			}
			return nil, fmt.Errorf("%s: %w", at, err)
		}
		for j := 0; j < w; j++ {
			row := buf[(i*per+1+j)*w : (i*per+2+j)*w]
			copy(row, base)
			row[j] = center(m.Spec.Features[j])
		}
	}
	rows := len(nodes) * per
	if m.legacy != nil {
		out, err := m.legacy.OptimizePlacement(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("model %q: %w", m.Name, err)
		}
		return out, nil
	}
	res, err := s.rows(ctx, m, rows, buf, priority(ctx, PriorityHigh), true)
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
	return &aipb.PlacementResponse{Candidates: cands, OverallConfidence: overall, ModelVersion: m.Version}, nil
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
