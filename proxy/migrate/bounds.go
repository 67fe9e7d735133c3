package migrate

import "math"

// Bounds returns the continuity-corrected Wilson score interval [lo, hi] of a proportion k/n at
// one-sided normal quantile z (Newcombe 1998, method 4), which the gates use: unlike the plain
// Wilson interval it stays close to the exact (Clopper-Pearson) one for small k, so that one
// disagreement in ten calls does not prove a rate above 1%. n == 0 gives [0, 1].
func Bounds(k, n int64, z float64) (lo, hi float64) {
	if n <= 0 {
		return 0, 1
	}
	k = min(max(k, 0), n)
	nf, p, z2 := float64(n), float64(k)/float64(n), z*z
	den := 2 * (nf + z2)
	if k > 0 {
		lo = (2*nf*p + z2 - 1 - z*math.Sqrt(z2-2-1/nf+4*p*(nf*(1-p)+1))) / den
	}
	hi = 1.0
	if k < n {
		hi = (2*nf*p + z2 + 1 + z*math.Sqrt(z2+2-1/nf+4*p*(nf*(1-p)-1))) / den
	}
	return max(0, lo), min(1, hi)
}
