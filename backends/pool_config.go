package backends

import (
	"fmt"
	"log/slog"
	"math"
	"time"
)

// The defaults of a PoolConfig's zero fields, applied by the pool; the config file's documentation
// quotes them (a test holds the README to them).
const (
	DefaultMaxAttempts         = 3
	DefaultRetryBudget         = 0.1
	DefaultMinRetriesPerSecond = 10
	DefaultRetryBudgetWindow   = 10 * time.Second
	DefaultConsecutiveFailures = 5
	DefaultFailureWindow       = 10 * time.Second
	DefaultMinRequests         = 10
	DefaultOpenTimeout         = time.Second
	DefaultHalfOpenRequests    = 1
	DefaultHealthInterval      = time.Second
	DefaultHealthTimeout       = 500 * time.Millisecond
	DefaultHealthThreshold     = 1
)

// DefaultAttemptTimeout bounds one call to one remote endpoint (an Open Inference Protocol server,
// a legacy service) whose config gives no timeout: the kinds' clients apply it.
const DefaultAttemptTimeout = 2 * time.Second

// PoolConfig configures a Pool. It is plain data and its zero value is valid: three attempts at
// most, a 10% retry budget, no hedging, breakers that open after 5 consecutive failures for 1s,
// and health checks every second.
type PoolConfig struct {
	// Name names the pool in errors and metric labels (for example the model it serves). Update
	// cannot change it.
	Name string

	// MaxAttempts bounds the calls of fn one Do makes: the first attempt, retries and hedges
	// together. Zero: 3. 1 turns retries and hedging off.
	MaxAttempts int
	// AttemptTimeout bounds one attempt. An attempt that runs out of it counts as a failure of its
	// endpoint and may be retried on another. Zero: no bound besides the caller's deadline.
	AttemptTimeout time.Duration
	// HedgeDelay turns hedging on: when no attempt has answered HedgeDelay after the last one
	// started, one more starts on a member not yet tried (within MaxAttempts and the retry
	// budget). The first success wins; the others are cancelled. Use it only for calls that are
	// safe to run twice (inference is). Zero: no hedging.
	HedgeDelay time.Duration
	// RetryBudget is the extra load retries and hedges may add, as a fraction of the calls made
	// over the last RetryBudgetWindow (Finagle's RetryBudget). Zero: 0.1 (10%). Negative: none
	// beyond MinRetriesPerSecond.
	RetryBudget float64
	// MinRetriesPerSecond is a floor under the budget, so that a quiet pool can still retry:
	// MinRetriesPerSecond × RetryBudgetWindow retries per window are always allowed. Zero: 10.
	// Negative: no floor.
	MinRetriesPerSecond float64
	// RetryBudgetWindow is how long a call's deposit and a retry's withdrawal count in the budget.
	// Zero: 10s.
	RetryBudgetWindow time.Duration

	// ConsecutiveFailures opens a member's breaker after that many failed attempts in a row.
	// Failures are errors other than bad input (ErrInvalidInput) and the caller's own cancellation
	// or deadline. Zero: 5. Negative: this rule is off.
	ConsecutiveFailures int
	// FailureRatio, in (0, 1], opens a member's breaker when at least MinRequests attempts on it
	// completed in the last FailureWindow and this fraction of them failed. With it set, the
	// ConsecutiveFailures count also forgets failures older than FailureWindow. Zero: rule off.
	FailureRatio float64
	// FailureWindow is the sliding window of FailureRatio. Zero: 10s.
	FailureWindow time.Duration
	// MinRequests is the fewest completed attempts FailureRatio judges. Zero: 10.
	MinRequests int
	// OpenTimeout is how long an open breaker refuses calls before it half-opens and lets
	// HalfOpenRequests probes through; it closes when they all succeed and opens again on a
	// failure. Zero: 1s.
	OpenTimeout time.Duration
	// HalfOpenRequests is the number of probe attempts a half-open breaker lets through. Zero: 1.
	HalfOpenRequests int

	// HealthInterval is the time between active health checks (Endpoint.Ready) of a member; a
	// member's next check starts only once its previous one has returned. Zero: 1s. Negative: no
	// checks; every member counts as healthy.
	HealthInterval time.Duration
	// HealthTimeout bounds one health check. Zero: 500ms.
	HealthTimeout time.Duration
	// UnhealthyThreshold is the number of failed checks in a row that mark a healthy member
	// unhealthy. A member not checked yet is marked by its first check either way. Zero: 1.
	UnhealthyThreshold int
	// HealthyThreshold is the number of passed checks in a row that mark an unhealthy member
	// healthy again. Zero: 1.
	HealthyThreshold int
}

// Validate reports the first problem with c.
func (c PoolConfig) Validate() error {
	finite := func(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }
	switch {
	case c.MaxAttempts < 0:
		return fmt.Errorf("MaxAttempts: %d is negative (0 means 3)", c.MaxAttempts)
	case c.AttemptTimeout < 0:
		return fmt.Errorf("AttemptTimeout: %v is negative (0 means none)", c.AttemptTimeout)
	case c.HedgeDelay < 0:
		return fmt.Errorf("HedgeDelay: %v is negative (0 turns hedging off)", c.HedgeDelay)
	case !finite(c.RetryBudget):
		return fmt.Errorf("RetryBudget: %v is not a finite number", c.RetryBudget)
	case !finite(c.MinRetriesPerSecond):
		return fmt.Errorf("MinRetriesPerSecond: %v is not a finite number", c.MinRetriesPerSecond)
	case c.RetryBudgetWindow < 0:
		return fmt.Errorf("RetryBudgetWindow: %v is negative (0 means 10s)", c.RetryBudgetWindow)
	case !finite(c.FailureRatio) || c.FailureRatio < 0 || c.FailureRatio > 1:
		return fmt.Errorf("FailureRatio: %v is outside [0, 1] (0 turns the rule off)", c.FailureRatio)
	case c.FailureWindow < 0:
		return fmt.Errorf("FailureWindow: %v is negative (0 means 10s)", c.FailureWindow)
	case c.MinRequests < 0 || c.MinRequests > math.MaxUint32:
		return fmt.Errorf("MinRequests: %d is out of range (0 means %d)", c.MinRequests, DefaultMinRequests)
	case c.OpenTimeout < 0:
		return fmt.Errorf("OpenTimeout: %v is negative (0 means 1s)", c.OpenTimeout)
	case c.HalfOpenRequests < 0 || c.HalfOpenRequests > math.MaxUint32:
		return fmt.Errorf("HalfOpenRequests: %d is out of range (0 means 1)", c.HalfOpenRequests)
	case c.HealthTimeout < 0:
		return fmt.Errorf("HealthTimeout: %v is negative (0 means 500ms)", c.HealthTimeout)
	case c.UnhealthyThreshold < 0:
		return fmt.Errorf("UnhealthyThreshold: %d is negative (0 means 1)", c.UnhealthyThreshold)
	case c.HealthyThreshold < 0:
		return fmt.Errorf("HealthyThreshold: %d is negative (0 means 1)", c.HealthyThreshold)
	}
	return nil
}

// settings is a PoolConfig with its defaults filled in.
type settings struct {
	maxAttempts    int
	attemptTimeout time.Duration
	hedgeDelay     time.Duration
	budget         budgetKey
	trip           tripRule
	breaker        breakerKey
	healthInterval time.Duration // negative: no checks
	healthTimeout  time.Duration
	unhealthyAfter int
	healthyAfter   int
}

func (c PoolConfig) resolve() *settings {
	or := func(v, def time.Duration) time.Duration {
		if v == 0 {
			return def
		}
		return v
	}
	orInt := func(v, def int) int {
		if v == 0 {
			return def
		}
		return v
	}
	s := &settings{
		maxAttempts:    orInt(c.MaxAttempts, DefaultMaxAttempts),
		attemptTimeout: c.AttemptTimeout,
		hedgeDelay:     c.HedgeDelay,
		budget: budgetKey{
			ratio:        c.RetryBudget,
			minPerSecond: c.MinRetriesPerSecond,
			window:       or(c.RetryBudgetWindow, DefaultRetryBudgetWindow),
		},
		trip: tripRule{
			consecutive: orInt(c.ConsecutiveFailures, DefaultConsecutiveFailures),
			ratio:       c.FailureRatio,
			minRequests: uint32(orInt(c.MinRequests, DefaultMinRequests)),
		},
		breaker: breakerKey{
			openTimeout: or(c.OpenTimeout, DefaultOpenTimeout),
			halfOpen:    uint32(orInt(c.HalfOpenRequests, DefaultHalfOpenRequests)),
		},
		healthInterval: or(c.HealthInterval, DefaultHealthInterval),
		healthTimeout:  or(c.HealthTimeout, DefaultHealthTimeout),
		unhealthyAfter: orInt(c.UnhealthyThreshold, DefaultHealthThreshold),
		healthyAfter:   orInt(c.HealthyThreshold, DefaultHealthThreshold),
	}
	switch {
	case c.RetryBudget == 0:
		s.budget.ratio = DefaultRetryBudget
	case c.RetryBudget < 0:
		s.budget.ratio = 0
	}
	switch {
	case c.MinRetriesPerSecond == 0:
		s.budget.minPerSecond = DefaultMinRetriesPerSecond
	case c.MinRetriesPerSecond < 0:
		s.budget.minPerSecond = 0
	}
	if c.FailureRatio > 0 {
		s.breaker.window = or(c.FailureWindow, DefaultFailureWindow)
	}
	return s
}

// PoolOption injects a collaborator into a Pool.
type PoolOption func(*poolOptions)

type poolOptions struct {
	observer PoolObserver
	seed     uint64
	seeded   bool
	logger   *slog.Logger
}

// WithObserver makes the pool report its events to o (see PoolMetrics). Nil: none.
func WithObserver(o PoolObserver) PoolOption {
	return func(po *poolOptions) { po.observer = o }
}

// WithSeed seeds the pool's random choice of members, for reproducible tests. Without it the seed
// is random.
func WithSeed(seed uint64) PoolOption {
	return func(po *poolOptions) { po.seed, po.seeded = seed, true }
}

// WithLogger gives the pool a logger for what it cannot return to a caller (an error closing an
// endpoint that Update removed). Nil: nothing is logged.
func WithLogger(l *slog.Logger) PoolOption {
	return func(po *poolOptions) { po.logger = l }
}
