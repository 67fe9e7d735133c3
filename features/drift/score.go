package drift

import (
	"fmt"
	"math"
)

// Methods of scoring a feature's drift, and their default thresholds: a feature drifts when its
// method's score exceeds its threshold.
//   - PSI, the population stability index over the reference bins, sum (a - e) ln(a / e) with
//     proportions floored at psiFloor: 0.2 is the usual "significant shift" cut (Siddiqi, Credit
//     Risk Scorecards, 2006; Evidently's default for PSI).
//   - JS, the Jensen-Shannon distance (the square root of the divergence, natural logarithm, as
//     scipy.spatial.distance.jensenshannon) over the same bins: 0.1 (Evidently's default).
//   - Wasserstein, the earth mover's distance between the reference and live distributions
//     (from their quantiles at 0.5%, 1.5%, ..., 99.5%) divided by the reference's standard
//     deviation: 0.1 (Evidently's default for the normed Wasserstein distance).
const (
	MethodPSI         = "psi"
	MethodJS          = "js"
	MethodWasserstein = "wasserstein"

	DefaultPSIThreshold         = 0.2
	DefaultJSThreshold          = 0.1
	DefaultWassersteinThreshold = 0.1
)

// Methods lists the methods.
var Methods = []string{MethodPSI, MethodJS, MethodWasserstein}

// DefaultThreshold is a method's default threshold.
func DefaultThreshold(method string) float64 {
	switch method {
	case MethodJS:
		return DefaultJSThreshold
	case MethodWasserstein:
		return DefaultWassersteinThreshold
	}
	return DefaultPSIThreshold
}

// CheckMethod refuses an unknown method.
func CheckMethod(method string) error {
	switch method {
	case MethodPSI, MethodJS, MethodWasserstein:
		return nil
	}
	return fmt.Errorf("%q is not a drift method; use %s, %s or %s", method, MethodPSI, MethodJS, MethodWasserstein)
}

// psiFloor floors an empty bin's proportion, so that PSI stays finite (Evidently's 0.0001).
const psiFloor = 1e-4

// proportions turns counts into proportions; nil when they sum to 0.
func proportions(counts []int64) []float64 {
	var n int64
	for _, c := range counts {
		n += c
	}
	if n == 0 {
		return nil
	}
	p := make([]float64, len(counts))
	for i, c := range counts {
		p[i] = float64(c) / float64(n)
	}
	return p
}

// PSI is the population stability index of actual against expected bin counts (same bins).
func PSI(expected, actual []int64) float64 {
	e, a := proportions(expected), proportions(actual)
	if e == nil || a == nil || len(e) != len(a) {
		return math.NaN()
	}
	var s float64
	for i := range e {
		ei, ai := max(e[i], psiFloor), max(a[i], psiFloor)
		s += (ai - ei) * math.Log(ai/ei)
	}
	return s
}

// JSDistance is the Jensen-Shannon distance of two bin counts (same bins), natural logarithm.
func JSDistance(expected, actual []int64) float64 {
	e, a := proportions(expected), proportions(actual)
	if e == nil || a == nil || len(e) != len(a) {
		return math.NaN()
	}
	var d float64
	for i := range e {
		m := (e[i] + a[i]) / 2
		if e[i] > 0 {
			d += e[i] * math.Log(e[i]/m) / 2
		}
		if a[i] > 0 {
			d += a[i] * math.Log(a[i]/m) / 2
		}
	}
	return math.Sqrt(max(d, 0))
}

// Wasserstein is the normalized earth mover's distance between two distributions given by their
// quantiles at the same evenly spaced levels: the mean absolute difference of the quantiles
// (the 1-Wasserstein distance on that grid), divided by scale (the reference's standard
// deviation; a scale of 0 divides by 1).
func Wasserstein(ref, live []float64, scale float64) float64 {
	if len(ref) == 0 || len(ref) != len(live) {
		return math.NaN()
	}
	var s float64
	for i := range ref {
		s += math.Abs(ref[i] - live[i])
	}
	if !(scale > 0) {
		scale = 1
	}
	return s / float64(len(ref)) / scale
}
