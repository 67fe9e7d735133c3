package backends

import (
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// breakerKey holds the breaker settings gobreaker fixes at construction.
type breakerKey struct {
	openTimeout time.Duration
	halfOpen    uint32
	window      time.Duration // FailureWindow, 0 when FailureRatio is off
}

// tripRule decides when a closed breaker opens; Update may replace it in a kept breaker.
type tripRule struct {
	consecutive int // <= 0: off
	ratio       float64
	minRequests uint32
}

func (r *tripRule) trips(c gobreaker.Counts) bool {
	if r.consecutive > 0 && c.ConsecutiveFailures >= uint32(r.consecutive) {
		return true
	}
	if r.ratio > 0 {
		done := c.TotalSuccesses + c.TotalFailures
		return done >= r.minRequests && float64(c.TotalFailures) >= r.ratio*float64(done)
	}
	return false
}

// breaker is a member's gobreaker with a lock-free copy of its state for picking.
type breaker struct {
	cb        *gobreaker.CircuitBreaker[struct{}]
	key       breakerKey
	rule      atomic.Pointer[tripRule]
	state     atomic.Int32 // a BreakerState, as of the last transition
	openUntil atomic.Int64 // UnixNano when an open breaker half-opens
	// replaced is set when Update gives the member a new breaker; calls still running report
	// to this one, but its transitions are no longer the member's.
	replaced atomic.Bool
}

func newBreaker(name string, s *settings, obs EndpointObserver) *breaker {
	b := &breaker{key: s.breaker}
	b.rule.Store(&s.trip)
	var bucket time.Duration
	if b.key.window > 0 {
		bucket = b.key.window / 10
	}
	timeout := b.key.openTimeout
	b.cb = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:         name,
		MaxRequests:  b.key.halfOpen,
		Interval:     b.key.window,
		BucketPeriod: bucket,
		Timeout:      timeout,
		ReadyToTrip:  func(c gobreaker.Counts) bool { return b.rule.Load().trips(c) },
		OnStateChange: func(_ string, _, to gobreaker.State) {
			// Called with the breaker's lock held.
			if to == gobreaker.StateOpen {
				b.openUntil.Store(time.Now().Add(timeout).UnixNano())
			}
			b.state.Store(int32(to))
			if !b.replaced.Load() {
				obs.BreakerChanged(BreakerState(to))
			}
		},
		IsExcluded: func(err error) bool { return err == errExcluded },
	})
	return b
}

// admits reports whether the breaker lets calls through (closed, half-open, or open past its
// timeout, which half-opens it on the next call). now caches time.Now for one pick.
func (b *breaker) admits(now *int64) bool {
	if BreakerState(b.state.Load()) != BreakerOpen {
		return true
	}
	if *now == 0 {
		*now = time.Now().UnixNano()
	}
	return *now >= b.openUntil.Load()
}
