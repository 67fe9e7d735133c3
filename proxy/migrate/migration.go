package migrate

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
)

// A Migration moves one route from a baseline target (From) to a candidate (To) through stages.
// Each stage sends a share of the route's keys to the candidate (Split) and shadows a share of
// the calls onto the other target (Shadow), so that every stage compares the two targets' answers
// on live calls. A stage ends when it has run MinDuration and compared MinCalls calls; the
// migration then advances if every gate holds with the configured confidence, and holds
// otherwise (rates are bounded by Bounds). A gate that fails with that confidence (the lower bound
// of a rate above its limit,
// or the p99 latency delta above its limit once MinCalls are compared) rolls the migration back
// at once to the stage before, and it waits there, rolled back, for an operator to resume it.
// After the last stage the route serves the candidate alone.

// Spec is one migration, as configured.
type Spec struct {
	// Name identifies the migration (admin API, metrics, the state file).
	Name string
	// Route is the route it drives (proxy.RouteBandwidth, ...); From is the route's target, the
	// baseline; To the candidate.
	Route, From, To string
	// Stages in order. Empty: DefaultStages.
	Stages []Stage
	Gates  Gates
	// Key is the route's split key (proxy.Route.Key); empty: the route's default.
	Key string
}

// Stage is one step of a migration. Percents are 0..100.
type Stage struct {
	// Split is the share of the route's keys the candidate serves.
	Split float64
	// Shadow is the share of calls also sent to the target not serving them, and compared.
	Shadow float64
	// MinDuration and MinCalls (compared calls) bound the stage from below. Zero MinDuration:
	// DefaultMinDuration; zero MinCalls: DefaultMinCalls.
	MinDuration time.Duration
	MinCalls    int64
}

// Gates are a migration's conditions to advance. Zero values take the Default* constants.
type Gates struct {
	// MaxDisagreement is the largest share (0..1) of compared calls whose answers may disagree.
	MaxDisagreement float64
	// MaxShadowErrors is the largest share (0..1) of the candidate's calls that may fail (errors
	// and timeouts, as the serving target or as the shadow).
	MaxShadowErrors float64
	// MaxP99Delta is the largest p99 of the candidate's latency minus the baseline's on the same
	// calls.
	MaxP99Delta time.Duration
	// Confidence of the rates' bounds (Bounds, one-sided), in (0, 1).
	Confidence float64
}

// Defaults of a migration, applied by WithDefaults.
const (
	DefaultMaxDisagreement = 0.01
	DefaultMaxShadowErrors = 0.01
	DefaultMaxP99Delta     = 50 * time.Millisecond
	DefaultConfidence      = 0.95
	DefaultMinDuration     = time.Minute
	// DefaultMinCalls is enough for the default disagreement gate (1% at 95%) to pass with no
	// disagreement: the upper bound (Bounds) of 0 of 400 is 0.90%.
	DefaultMinCalls = 400
)

// DefaultStages are the stages of a migration that names none: shadow 10%, shadow 100%, then
// split 10%, 50% and 100%, each still comparing a share of the calls.
var DefaultStages = []Stage{
	{Shadow: 10}, {Shadow: 100}, {Split: 10, Shadow: 100}, {Split: 50, Shadow: 50}, {Split: 100, Shadow: 10},
}

// WithDefaults returns s with its zero fields defaulted.
func (s Spec) WithDefaults() Spec {
	if len(s.Stages) == 0 {
		s.Stages = append([]Stage(nil), DefaultStages...)
	} else {
		s.Stages = append([]Stage(nil), s.Stages...)
	}
	for i := range s.Stages {
		if s.Stages[i].MinDuration == 0 {
			s.Stages[i].MinDuration = DefaultMinDuration
		}
		if s.Stages[i].MinCalls == 0 {
			s.Stages[i].MinCalls = DefaultMinCalls
		}
	}
	g := &s.Gates
	if g.MaxDisagreement == 0 {
		g.MaxDisagreement = DefaultMaxDisagreement
	}
	if g.MaxShadowErrors == 0 {
		g.MaxShadowErrors = DefaultMaxShadowErrors
	}
	if g.MaxP99Delta == 0 {
		g.MaxP99Delta = DefaultMaxP99Delta
	}
	if g.Confidence == 0 {
		g.Confidence = DefaultConfidence
	}
	return s
}

// Validate checks a spec (defaults applied or not). Errors name the field as the config does.
func (s Spec) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if s.Name == "" {
		add("name: required")
	}
	if s.Route == "" {
		add("route: required")
	}
	if s.To == "" {
		add("to: required: the candidate target")
	} else if s.To == s.From {
		add("to: %q is the baseline (from) itself", s.To)
	}
	for i, st := range s.Stages {
		if !(st.Split >= 0 && st.Split <= 100) {
			add("stages[%d].split: %v is not a percent in 0..100", i, st.Split)
		}
		if !(st.Shadow >= 0 && st.Shadow <= 100) {
			add("stages[%d].shadow: %v is not a percent in 0..100", i, st.Shadow)
		}
		if st.MinDuration < 0 {
			add("stages[%d].min_duration: %v is negative", i, st.MinDuration)
		}
		if st.MinCalls < 0 {
			add("stages[%d].min_calls: %d is negative", i, st.MinCalls)
		}
		if st.Shadow == 0 {
			add("stages[%d].shadow: 0 compares nothing, so the stage's gates could never hold; give it a share (such as 10)", i)
		}
	}
	g := s.Gates
	if !(g.MaxDisagreement >= 0 && g.MaxDisagreement <= 1) {
		add("gates.max_disagreement: %v is not a share in 0..1", g.MaxDisagreement)
	}
	if !(g.MaxShadowErrors >= 0 && g.MaxShadowErrors <= 1) {
		add("gates.max_shadow_errors: %v is not a share in 0..1", g.MaxShadowErrors)
	}
	if g.MaxP99Delta < 0 {
		add("gates.max_p99_delta: %v is negative", g.MaxP99Delta)
	}
	if g.Confidence != 0 && !(g.Confidence > 0 && g.Confidence < 1) {
		add("gates.confidence: %v is not in (0, 1)", g.Confidence)
	}
	return errors.Join(errs...)
}

// Fingerprint identifies a spec's meaning (defaults applied): a persisted stage applies only to
// the spec it was reached under, so that an edited migration starts again at its first stage
// rather than at a stage of different content.
func (s Spec) Fingerprint() string {
	s = s.WithDefaults()
	b, _ := json.Marshal(struct {
		Route, From, To, Key string
		Stages               []Stage
		Gates                Gates
	}{s.Route, s.From, s.To, s.Key, s.Stages, s.Gates})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// describe says what a stage does, for people.
func (st Stage) describe() string {
	switch {
	case st.Split == 0:
		return fmt.Sprintf("shadow %s%%", pct(st.Shadow))
	case st.Shadow == 0:
		return fmt.Sprintf("split %s%%", pct(st.Split))
	}
	return fmt.Sprintf("split %s%%, shadow %s%%", pct(st.Split), pct(st.Shadow))
}

func pct(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%g", v)
}
