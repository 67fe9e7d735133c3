package bench

import (
	"slices"
	"sync/atomic"
	"time"
)

// recorder keeps latencies in a buffer allocated once per run: recording is one atomic add and one
// store, and the buffer never grows. Samples past its end are counted but not kept. add may be
// called from any goroutine; reset and summary only while no add runs.
type recorder struct {
	buf []int64 // nanoseconds
	n   atomic.Int64
}

func newRecorder(capacity int) *recorder {
	return &recorder{buf: make([]int64, capacity)}
}

func (r *recorder) add(d time.Duration) {
	if i := r.n.Add(1) - 1; i < int64(len(r.buf)) {
		r.buf[i] = int64(d)
	}
}

func (r *recorder) reset() { r.n.Store(0) }

// count is the number of samples added since the last reset, kept or not.
func (r *recorder) count() int64 { return r.n.Load() }

// summary sorts the kept samples in place and returns their percentiles.
func (r *recorder) summary() latencies {
	kept := r.buf[:min(r.n.Load(), int64(len(r.buf)))]
	slices.Sort(kept)
	return latencies{
		P50:    Percentile(kept, 50),
		P99:    Percentile(kept, 99),
		P999:   Percentile(kept, 99.9),
		Capped: r.n.Load() > int64(len(r.buf)),
	}
}

// latencies are the percentiles of one scenario. Capped is set when there were more samples than
// the buffer holds; the percentiles are then those of the first len(buffer) calls.
type latencies struct {
	P50, P99, P999 time.Duration
	Capped         bool
}

// Percentile returns the p-th percentile (0 < p <= 100) of sorted (ascending, in nanoseconds) by
// the nearest-rank method: the smallest sample such that at least p% of the samples are at or
// below it. It is 0 for no samples.
func Percentile(sorted []int64, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	// rank = ceil(p/100 * n), computed in integers of 1/1000 percent so that 99.9% of 1000
	// samples is exactly rank 999 (float rounding would make it 1000).
	milli := int64(p*1000 + 0.5)
	rank := int((milli*int64(n) + 100_000 - 1) / 100_000)
	rank = max(1, min(rank, n))
	return time.Duration(sorted[rank-1])
}
