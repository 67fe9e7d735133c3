package migrate

import (
	"math"
	"slices"
)

// Z returns the one-sided standard normal quantile for a confidence level in (0, 1): the z with
// P(Z <= z) = confidence, sqrt(2)*erfinv(2*confidence-1). Z(0.95) = 1.6449, Z(0.975) = 1.9600
// (the two-sided 95% value), Z(0.5) = 0. A confidence outside (0, 1), or NaN, gives NaN.
func Z(confidence float64) float64 {
	if !(confidence > 0 && confidence < 1) {
		return math.NaN()
	}
	return math.Sqrt2 * math.Erfinv(2*confidence-1)
}

// Wilson returns the Wilson score interval [lo, hi] of the proportion k/n at normal quantile z
// (for example Z(0.975) for a two-sided 95% interval, Z(0.95) for a one-sided 95% bound):
//
//	(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n),  p = k/n,
//
// clamped to [0, 1], with lo exactly 0 when k = 0 and hi exactly 1 when k = n. The interval
// narrows as n grows at a fixed k/n. n <= 0, or a z that is NaN or infinite, gives the
// uninformative [0, 1]; k is clamped to [0, n]; a negative z counts as |z|.
func Wilson(k, n int64, z float64) (lo, hi float64) {
	if n <= 0 || !isFinite(z) {
		return 0, 1
	}
	k = max(0, min(k, n))
	z = math.Abs(z)
	nf := float64(n)
	p := float64(k) / nf
	z2 := z * z
	denom := 1 + z2/nf
	center := (p + z2/(2*nf)) / denom
	half := z / denom * math.Sqrt(p*(1-p)/nf+z2/(4*nf*nf))
	lo, hi = center-half, center+half
	if math.IsNaN(lo) || math.IsNaN(hi) { // z so large that z² overflows
		return 0, 1
	}
	if k == 0 {
		lo = 0
	}
	if k == n {
		hi = 1
	}
	return max(0, min(lo, 1)), max(0, min(hi, 1))
}

// Quantile returns the q-quantile, q in [0, 1], of vals by linear interpolation between the
// closest ranks: with the values sorted as x[0] <= ... <= x[n-1] and h = q*(n-1), it is
// x[⌊h⌋] + (h-⌊h⌋)*(x[⌊h⌋+1]-x[⌊h⌋]) (Hyndman and Fan's R-7, numpy.quantile's default
// "linear" method, interpolating like numpy from the nearer end).
//
// Quantile sorts vals in place, ascending (NaNs first, as slices.Sort orders them), so a caller
// asking for several quantiles of the same values pays for one sort and should pass a copy if
// it needs the original order. It returns NaN when vals is empty, when q is outside [0, 1] or
// NaN, and when vals holds a NaN (as numpy does).
func Quantile(vals []float64, q float64) float64 {
	if len(vals) == 0 {
		return math.NaN()
	}
	slices.Sort(vals)
	if !(q >= 0 && q <= 1) || math.IsNaN(vals[0]) {
		return math.NaN()
	}
	h := q * float64(len(vals)-1)
	i := int(h) // h >= 0, so this is ⌊h⌋
	if i >= len(vals)-1 {
		return vals[len(vals)-1]
	}
	f := h - float64(i)
	a, b := vals[i], vals[i+1]
	if f == 0 || a == b { // also keeps -Inf and +Inf from giving Inf-Inf
		return a
	}
	d := b - a
	if f >= 0.5 {
		return b - d*(1-f)
	}
	return a + d*f
}

// initialWindow is the most capacity NewWindow allocates up front; a larger window grows to its
// size as values are added, so a huge n costs nothing until it is used.
const initialWindow = 4096

// Window keeps the last n values added (a ring), for example the latest latency differences
// between the candidate and the baseline. It is not safe for concurrent use: the caller holds
// its own lock around every method. The zero Window, a nil *Window and a Window of n <= 0 keep
// nothing.
type Window struct {
	buf  []float64 // the kept values; once len(buf) == n, a ring whose oldest is buf[next]
	n    int
	next int
}

// NewWindow returns an empty Window keeping the last n values; n <= 0 keeps none.
func NewWindow(n int) *Window {
	n = max(n, 0)
	return &Window{buf: make([]float64, 0, min(n, initialWindow)), n: n}
}

// Add adds v, dropping the oldest value when the window is full. Any value is kept as it is,
// NaN included (Quantile of values holding a NaN is NaN).
func (w *Window) Add(v float64) {
	if w == nil || w.n == 0 {
		return
	}
	if len(w.buf) < w.n {
		w.buf = append(w.buf, v)
		return
	}
	w.buf[w.next] = v
	if w.next++; w.next == w.n {
		w.next = 0
	}
}

// Len returns the number of values kept: the values added since NewWindow or Reset, up to n.
func (w *Window) Len() int {
	if w == nil {
		return 0
	}
	return len(w.buf)
}

// Values appends the kept values to dst, oldest first, and returns the extended slice. Pass a
// reused dst[:0] to avoid allocating; the result does not share storage with the Window, so it
// can be sorted (by Quantile) freely.
func (w *Window) Values(dst []float64) []float64 {
	if w == nil {
		return dst
	}
	return append(append(dst, w.buf[w.next:]...), w.buf[:w.next]...)
}

// Reset empties the window, keeping its storage.
func (w *Window) Reset() {
	if w == nil {
		return
	}
	w.buf, w.next = w.buf[:0], 0
}
