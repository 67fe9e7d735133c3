package drift

import (
	"fmt"
	"hash/maphash"
	"iter"
	"math"
	"sync/atomic"
	"time"
)

// maxAccuracyWindowSteps bounds Window/Step: the window's buckets, per shard (a week of minutes).
const maxAccuracyWindowSteps = 7 * 24 * 60

// accuracyShards is the number of shards of a tracker: a key is in one, by its hash, so that calls
// for different keys seldom wait on the same lock.
const accuracyShards = 16

// noBucket marks a point not scored, and a ring slot never used.
const noBucket = math.MinInt64

// windowSteps is the number of whole steps covering w.
func windowSteps(w, step time.Duration) int64 {
	return int64((w + step - 1) / step)
}

// checkWindow reports a window, its default applied, that the rolling window cannot hold: shorter
// than a step, or more than maxAccuracyWindowSteps steps. what names the tracker in the error.
func checkWindow(what string, window, step time.Duration) error {
	if window < step {
		return fmt.Errorf("drift: %s: Window: %v is shorter than a step (%v)", what, window, step)
	}
	if n := windowSteps(window, step); n > maxAccuracyWindowSteps {
		return fmt.Errorf("drift: %s: Window: %v is %d steps of %v, more than %d", what, window, n, step, maxAccuracyWindowSteps)
	}
	return nil
}

// rolling is what the two live accuracy trackers share, embedded in both: Accuracy (forecasts
// against the truth pushed later) and Labels (a classifier's answers against labels). It holds
// their rolling window: the tracker's clock cut into steps (buckets) counted from its start, whose
// sums each shard keeps in a ring (see ring) and the report adds up over the window. And the
// bookkeeping of the keys (VMs): the shard of a key, the bound on the keys tracked, the claim of a
// sweep for room. What differs stays with each tracker: what a bucket sums, the per-key state, the
// join, and the sweep's walk.
type rolling struct {
	step   int64     // Step, ns
	window int64     // Window, ns
	steps  int64     // buckets in the window: ceil(Window/Step)
	start  time.Time // clock at NewAccuracy or NewLabels: bucket 0 starts there
	seed   maphash.Seed
	count  atomic.Int64 // keys (VMs) tracked, across shards: the MaxKeys (MaxVMs) bound
	swept  atomic.Int64 // bucket of the last sweep for room (noBucket: never)
}

// init sets r up for a window of whole steps covering window, starting at now: bucket 0 starts
// there and no sweep has run.
func (r *rolling) init(step, window time.Duration, now time.Time) {
	r.step = step.Nanoseconds()
	r.window = window.Nanoseconds()
	r.steps = windowSteps(window, step)
	r.start = now
	r.seed = maphash.MakeSeed()
	r.swept.Store(noBucket)
}

// shardOf is the shard holding key, an index into the tracker's shards.
func (r *rolling) shardOf(key string) uint64 {
	return maphash.String(r.seed, key) % accuracyShards
}

// bucketOf is the step of the tracker's clock holding now, counted from its start.
func (r *rolling) bucketOf(now time.Time) int64 {
	d := int64(now.Sub(r.start))
	b := d / r.step
	if d < 0 && d%r.step != 0 {
		b-- // floor, not truncation
	}
	return b
}

// reserve counts a new key in if fewer than max are tracked.
func (r *rolling) reserve(max int) bool {
	for {
		c := r.count.Load()
		if c >= int64(max) {
			return false
		}
		if r.count.CompareAndSwap(c, c+1) {
			return true
		}
	}
}

// claimSweep reports whether the caller is to sweep for room at bucket b: true for one caller per
// step of the clock, so that a tracker full of live keys does not walk them all on every refused
// one.
func (r *rolling) claimSweep(b int64) bool {
	last := r.swept.Load()
	return last < b && r.swept.CompareAndSwap(last, b)
}

// ring is a shard's sums of the window's buckets, B being what a tracker sums in one step of its
// clock: bucket b in slot b mod len, a slot started over when a newer bucket comes to it. The
// shard's lock guards it.
type ring[B any] struct {
	held []int64 // held[i] is the bucket sums[i] is of; noBucket: none
	sums []B
}

// newRing makes a ring of steps slots (the window's buckets), none used.
func newRing[B any](steps int64) ring[B] {
	r := ring[B]{held: make([]int64, steps), sums: make([]B, steps)}
	for i := range r.held {
		r.held[i] = noBucket
	}
	return r
}

// slot is the slot of bucket b: b mod len, non-negative.
func (r *ring[B]) slot(b int64) int64 {
	n := int64(len(r.held))
	return (b%n + n) % n
}

// bucketLocked returns the sums of bucket b, starting it (zero sums) if its slot holds an older
// one; nil if the slot holds a newer one (the clock went back by a window or more).
func (r *ring[B]) bucketLocked(b int64) *B {
	i := r.slot(b)
	switch {
	case r.held[i] == b:
		return &r.sums[i]
	case r.held[i] < b:
		var zero B
		r.held[i], r.sums[i] = b, zero
		return &r.sums[i]
	}
	return nil
}

// heldLocked returns the sums of bucket b if its slot still holds it, else nil.
func (r *ring[B]) heldLocked(b int64) *B {
	if i := r.slot(b); r.held[i] == b {
		return &r.sums[i]
	}
	return nil
}

// windowLocked yields, in slot order, the sums of the buckets in the window at bucket b: the last
// len buckets, b included.
func (r *ring[B]) windowLocked(b int64) iter.Seq[*B] {
	return func(yield func(*B) bool) {
		steps := int64(len(r.held))
		for i, s := range r.held {
			if s == noBucket || s <= b-steps || s > b {
				continue
			}
			if !yield(&r.sums[i]) {
				return
			}
		}
	}
}
