package backends

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// budgetKey is what a retry budget is made of; Update keeps the budget when it is unchanged.
type budgetKey struct {
	ratio        float64       // tokens deposited per call
	minPerSecond float64       // floor: minPerSecond × window tokens are always there
	window       time.Duration // how long deposits and withdrawals count
}

// budgetBuckets is the number of buckets a budget's window slides by.
const budgetBuckets = 10

// retryBudget bounds the extra load that retries and hedges put on a pool's upstreams, like
// Finagle's RetryBudget: every call deposits ratio tokens, every retry or hedge withdraws one,
// deposits and withdrawals count for window (sliding by tenths), and minPerSecond × window tokens
// are always there so that a quiet pool can still retry.
//
// Safe for concurrent use. deposit, on every call's path, takes no lock (one CAS); tryWithdraw,
// only on the failure path, takes the budget's mutex.
type retryBudget struct {
	ratio   float64
	reserve float64
	bucket  time.Duration
	start   time.Time
	// deposits holds, per bucket, epoch<<32 | count, where epoch numbers the bucket-long slices of
	// time since start (mod 2^32).
	deposits [budgetBuckets]atomic.Uint64

	// mu guards withdrawals and serializes tryWithdraw.
	mu sync.Mutex
	// withdrawals is laid out like deposits.
	withdrawals [budgetBuckets]uint64
}

// newRetryBudget makes a budget whose clock starts at start.
func newRetryBudget(k budgetKey, start time.Time) *retryBudget {
	return &retryBudget{
		ratio:   max(k.ratio, 0),
		reserve: max(k.minPerSecond, 0) * k.window.Seconds(),
		bucket:  max(k.window/budgetBuckets, 1),
		start:   start,
	}
}

// now is the budget's clock: the time since its start.
func (b *retryBudget) now() time.Duration { return time.Since(b.start) }

// deposit records one call made at now (b's clock; callers that have read it pass it on, as
// reading the clock costs as much as the deposit).
func (b *retryBudget) deposit(now time.Duration) {
	e := uint32(now / b.bucket)
	slot := &b.deposits[e%budgetBuckets]
	for {
		old := slot.Load()
		next := uint64(e)<<32 | 1
		if uint32(old>>32) == e {
			if uint32(old) == math.MaxUint32 {
				return // saturated
			}
			next = old + 1
		}
		if slot.CompareAndSwap(old, next) {
			return
		}
	}
}

// tryWithdraw takes a token for one retry or hedge, or reports false when the budget is spent.
func (b *retryBudget) tryWithdraw() bool {
	e := uint32(b.now() / b.bucket)
	b.mu.Lock()
	defer b.mu.Unlock()
	var dep, wd uint64
	for i := range budgetBuckets {
		if v := b.deposits[i].Load(); e-uint32(v>>32) < budgetBuckets {
			dep += v & math.MaxUint32
		}
		if v := b.withdrawals[i]; e-uint32(v>>32) < budgetBuckets {
			wd += v & math.MaxUint32
		}
	}
	if b.reserve+b.ratio*float64(dep)-float64(wd) < 1 {
		return false
	}
	slot := &b.withdrawals[e%budgetBuckets]
	if uint32(*slot>>32) == e {
		*slot++
	} else {
		*slot = uint64(e)<<32 | 1
	}
	return true
}
