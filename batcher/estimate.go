package batcher

import (
	"math"
	"time"
)

// estimator learns the backend's batch latency as a + b*rows (exponentially weighted least squares)
// and the arrival rate of rows, for the adaptive wait and the overload retry hint. Its methods are
// called with Batcher.mu held.
type estimator struct {
	// Weighted sums for the fit of compute seconds against rows.
	n, sx, sy, sxx, sxy float64
	batches             int

	// Arrivals and backend compute counted per window, smoothed into rate (rows per second) and
	// busy (the share of the window a batch was running).
	windowStart   time.Time
	windowRows    int
	windowCompute time.Duration
	rate, busy    float64
}

const (
	fitDecay    = 0.98                  // weight kept by older batches per new batch
	rateWindow  = 20 * time.Millisecond // arrival counting window
	rateSmooth  = 0.3                   // weight of the newest window
	minSamples  = 16                    // batches before the fit is trusted
	targetLoad  = 0.8                   // utilization the adaptive wait aims to stay under
	busyFloor   = 0.5                   // below this share of time busy, the backend is lightly loaded
	amortized   = 1.0 / 3               // fixed cost per batch, as a share of its rows' own cost
	defaultCost = time.Millisecond      // per batch, before anything is measured
)

func (e *estimator) observe(rows int, compute time.Duration) {
	x, y := float64(rows), compute.Seconds()
	e.n = e.n*fitDecay + 1
	e.sx = e.sx*fitDecay + x
	e.sy = e.sy*fitDecay + y
	e.sxx = e.sxx*fitDecay + x*x
	e.sxy = e.sxy*fitDecay + x*y
	e.batches++
	e.windowCompute += compute
}

// fit returns the fixed and per-row cost of a batch, in seconds; ok is false until enough batches
// of different sizes were seen.
func (e *estimator) fit() (a, b float64, ok bool) {
	if e.batches < minSamples {
		return 0, 0, false
	}
	den := e.n*e.sxx - e.sx*e.sx
	if den <= 1e-9*e.n*e.sxx { // all batches the same size: cost per batch only
		return e.sy / e.n, 0, true
	}
	b = (e.n*e.sxy - e.sx*e.sy) / den
	a = (e.sy - b*e.sx) / e.n
	switch {
	case b < 0: // cost falls with size: noise; a cost per batch only
		return e.sy / e.n, 0, true
	case a < 0: // through the origin
		return 0, e.sxy / e.sxx, true
	}
	return a, b, true
}

func (e *estimator) arrive(now time.Time, rows int) {
	if e.windowStart.IsZero() {
		e.windowStart = now
	}
	if el := now.Sub(e.windowStart); el >= rateWindow {
		r := float64(e.windowRows) / el.Seconds()
		u := min(1, e.windowCompute.Seconds()/el.Seconds())
		if e.rate == 0 {
			e.rate, e.busy = r, u
		} else {
			e.rate = (1-rateSmooth)*e.rate + rateSmooth*r
			e.busy = (1-rateSmooth)*e.busy + rateSmooth*u
		}
		e.windowStart, e.windowRows, e.windowCompute = now, 0, 0
	}
	e.windowRows += rows
}

// wait is the adaptive delay for the oldest of queued rows. Under light load it is zero: the
// backend is idle most of the time (busy < busyFloor) and batches of the rows waiting keep up with
// arrivals at targetLoad. Otherwise batching pays: each batch's fixed cost a is time (and, on a
// CPU, cores) that the rows and the front ends could use, so it waits for the batch to reach
// efficientRows = a / (amortized × b) rows (the fixed cost under a third of the rows' own cost),
// or for as many as keeping up needs, whichever is more; never longer than those rows take to
// arrive, nor than maxDelay.
func (e *estimator) wait(queued, maxBatch, k int, maxDelay time.Duration) time.Duration {
	a, b, ok := e.fit()
	lambda := e.rate
	if !ok || lambda <= 0 {
		return 0
	}
	capacity := func(n float64) float64 { return float64(k) * n / (a + b*n) }
	if e.busy < busyFloor && capacity(float64(queued))*targetLoad >= lambda {
		return 0
	}
	need := float64(maxBatch)
	if b > 0 {
		need = math.Min(need, math.Ceil(a/(amortized*b)))
	}
	if den := float64(k)*targetLoad - lambda*b; den > 0 {
		need = math.Min(float64(maxBatch), math.Max(need, lambda*a/den))
	}
	if need <= float64(queued) {
		return 0
	}
	w := time.Duration((need - float64(queued)) / lambda * float64(time.Second))
	return min(w, maxDelay)
}

// drain estimates how long k slots take to run queued rows: the retry hint of a refused call.
func (e *estimator) drain(queued, maxBatch, k int) time.Duration {
	a, b, ok := e.fit()
	if !ok {
		return max(defaultCost, time.Duration(queued)*time.Microsecond)
	}
	d := time.Duration((a*math.Ceil(float64(queued)/float64(maxBatch)) + b*float64(queued)) / float64(k) * float64(time.Second))
	return max(d, time.Millisecond)
}
