package backends

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// Endpoint is one upstream a Pool balances over: a client of one remote Triton / KServe server or
// one legacy AI service instance.
type Endpoint interface {
	// Ready is the active health check: nil when the endpoint can take calls. The pool calls it
	// from its health goroutines, at most one call at a time per endpoint, with a context that ends
	// after PoolConfig.HealthTimeout; Ready must return when that context is done.
	Ready(ctx context.Context) error
	// Close releases the endpoint. The pool calls it once, after the last call using the endpoint
	// (Do attempts and health checks) has returned, from a goroutine of its own.
	Close() error
}

// Member is one endpoint of a pool, with the name it has in the pool.
type Member[E Endpoint] struct {
	// Name identifies the member within the pool (typically its address, "10.0.0.1:8001"). It
	// must be non-empty and unique in the pool; Update keeps the state of members by Name.
	Name string
	// E is the endpoint. The pool owns it from the moment NewPool or Update succeeds.
	E E
}

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

// Health is the active health check's verdict on a member.
type Health int32

// Health states. A member starts HealthUnknown (HealthUp when checks are off) and counts as usable
// unless HealthDown.
const (
	HealthUnknown Health = iota
	HealthUp
	HealthDown
)

func (h Health) String() string {
	switch h {
	case HealthUnknown:
		return "unknown"
	case HealthUp:
		return "up"
	case HealthDown:
		return "down"
	}
	return fmt.Sprintf("Health(%d)", int(h))
}

// BreakerState is the state of a member's circuit breaker. Its values are those of the
// sidecar_backend_endpoint_breaker_state gauge.
type BreakerState int32

// Breaker states.
const (
	BreakerClosed   BreakerState = BreakerState(gobreaker.StateClosed)
	BreakerHalfOpen BreakerState = BreakerState(gobreaker.StateHalfOpen)
	BreakerOpen     BreakerState = BreakerState(gobreaker.StateOpen)
)

func (s BreakerState) String() string { return gobreaker.State(s).String() }

// MemberState is a snapshot of one member, for status pages and tests.
type MemberState struct {
	Name   string
	Health Health
	// HealthErr is the error of the last failed health check; empty after a passed one.
	HealthErr string
	Breaker   BreakerState
	// Outstanding is the number of attempts running on the member.
	Outstanding int
}

// Pool balances calls over the members (endpoints) of one upstream service: power of two choices
// by least outstanding attempts among the usable members, a circuit breaker per member, active
// health checks, retries with failover under a retry budget, and optional hedging.
//
// All methods may be called concurrently. Do takes no pool-wide lock: it reads the members from a
// snapshot that Update replaces.
type Pool[E Endpoint] struct {
	name string
	obs  PoolObserver
	log  *slog.Logger
	// base is the pool's clock origin: times on the call path are durations since base, as
	// time.Since costs half of time.Now.
	base time.Time
	// rng is the state of a splitmix64 sequence, stepped atomically by rand.
	rng   atomic.Uint64
	state atomic.Pointer[snapshot[E]]

	kick       chan struct{} // asks the health loop for a round now
	stopHealth context.CancelFunc
	healthDone chan struct{}
	// wg tracks every goroutine the pool starts besides the health loop: the attempts of hedged
	// calls, health checks and endpoint closes. Close waits for it.
	wg sync.WaitGroup

	// updateMu serializes Update and Close.
	updateMu sync.Mutex

	// retiredMu guards retired.
	retiredMu sync.Mutex
	// retired holds the endpoints Update replaced or removed whose Close has not returned yet.
	retired map[*handle[E]]struct{}
}

// snapshot is what Do reads: immutable once stored, except the members' atomic fields.
type snapshot[E Endpoint] struct {
	s       *settings
	members []*member[E]
	budget  *retryBudget
	closed  bool
}

// NewPool makes a pool of members and starts its health goroutine, which checks every member at
// once. On success the pool owns the members' endpoints and Close closes them; on error the
// caller still owns them.
func NewPool[E Endpoint](cfg PoolConfig, members []Member[E], opts ...PoolOption) (*Pool[E], error) {
	var o poolOptions
	for _, opt := range opts {
		opt(&o)
	}
	if err := checkPool(cfg, members); err != nil {
		return nil, err
	}
	if !o.seeded {
		o.seed = rand.Uint64()
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	p := &Pool[E]{
		name:       cfg.Name,
		obs:        o.observer,
		log:        o.logger,
		kick:       make(chan struct{}, 1),
		healthDone: make(chan struct{}),
		retired:    map[*handle[E]]struct{}{},
		base:       time.Now(),
	}
	p.rng.Store(o.seed)
	s := cfg.resolve()
	st := &snapshot[E]{s: s, budget: newRetryBudget(s.budget, p.base), members: make([]*member[E], len(members))}
	for i, m := range members {
		st.members[i] = p.newMember(m.Name, m.E, s)
	}
	p.state.Store(st)
	ctx, cancel := context.WithCancel(context.Background())
	p.stopHealth = cancel
	go p.healthLoop(ctx)
	return p, nil
}

func checkPool[E Endpoint](cfg PoolConfig, members []Member[E]) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("pool %s: %w", cfg.Name, err)
	}
	if len(members) == 0 {
		return fmt.Errorf("pool %s: no members", cfg.Name)
	}
	seen := make(map[string]bool, len(members))
	for i, m := range members {
		switch {
		case m.Name == "":
			return fmt.Errorf("pool %s: member %d has no name", cfg.Name, i)
		case seen[m.Name]:
			return fmt.Errorf("pool %s: member name %q appears twice", cfg.Name, m.Name)
		case isNil(m.E):
			return fmt.Errorf("pool %s: member %q has a nil endpoint", cfg.Name, m.Name)
		}
		seen[m.Name] = true
	}
	return nil
}

// Do runs fn on one member's endpoint and returns nil once an attempt succeeds, or the last
// attempt's error (prefixed with the member's name), or, when no member can take the call, an
// error wrapping ErrUnavailable that says why for each member.
//
// A failed attempt is retried on another usable member (on the same one when it is the only one)
// unless the error is bad input (ErrInvalidInput) or the caller's ctx is done, within
// MaxAttempts, the retry budget and the caller's deadline: a retry starts only if the time left
// is at least what the failed attempt took. With HedgeDelay set, fn may run on two members at
// once: ctx of the attempt that lost is cancelled, and Do returns without waiting for it; the
// pool keeps track of that goroutine and Close waits for it. So fn must not write to state the
// caller reads after Do returns; Call returns the winning attempt's result safely.
//
// fn gets the caller's ctx, or one derived from it with the attempt's own timeout or
// cancellation, and must return when it is done. A panic in fn reaches Do's caller, except under
// hedging, where fn runs on a goroutine of the pool's and a panic ends the program. Do may be
// called concurrently from any goroutine; with nothing failing it takes no pool-wide lock (only
// the picked member's breaker lock) and allocates nothing unless AttemptTimeout or HedgeDelay is
// set.
func (p *Pool[E]) Do(ctx context.Context, fn func(ctx context.Context, e E) error) error {
	_, err := run[E, struct{}](ctx, p, errFunc[E](fn))
	return err
}

// Call is Do for a function with a result: it returns the result of the attempt that succeeded.
// Results of attempts that lost a hedge are dropped.
func Call[E Endpoint, T any](ctx context.Context, p *Pool[E], fn func(ctx context.Context, e E) (T, error)) (T, error) {
	return run[E, T](ctx, p, valFunc[E, T](fn))
}

// caller abstracts over Do's and Call's function types without wrapping one in a closure.
type caller[E Endpoint, T any] interface {
	call(ctx context.Context, e E) (T, error)
}

type errFunc[E Endpoint] func(context.Context, E) error

func (f errFunc[E]) call(ctx context.Context, e E) (struct{}, error) { return struct{}{}, f(ctx, e) }

type valFunc[E Endpoint, T any] func(context.Context, E) (T, error)

func (f valFunc[E, T]) call(ctx context.Context, e E) (T, error) { return f(ctx, e) }

// errExcluded is what an attempt reports to its breaker when its outcome says nothing about the
// endpoint: bad input, the caller gave up, or the attempt lost a hedge.
var errExcluded = errors.New("excluded from breaker counts")

// errAbandoned is the cancellation cause of the attempts still running when Do returns.
var errAbandoned = errors.New("backends: the call ended without this attempt")

// outcome is how one attempt went.
type outcome struct {
	ran       bool // false: the breaker refused the attempt and fn did not run
	err       error
	retryable bool
	took      time.Duration
}

func run[E Endpoint, T any, F caller[E, T]](ctx context.Context, p *Pool[E], fn F) (T, error) {
	var zero T
	st := p.state.Load()
	if st.closed {
		return zero, p.closedErr()
	}
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	start := time.Since(p.base)
	st.budget.deposit(start)
	for {
		var (
			res   T
			err   error
			stale bool
		)
		if st.s.hedgeDelay > 0 && st.s.maxAttempts > 1 {
			res, err, stale = runHedged(ctx, p, st, fn)
		} else {
			res, err, stale = runSerial(ctx, p, st, fn, start)
		}
		if !stale {
			return res, err
		}
		// Update removed or replaced every member this call could use before it made an
		// attempt: start over on the members that replaced them.
		if st = p.state.Load(); st.closed {
			return zero, p.closedErr()
		}
	}
}

// stale reports whether Update has replaced st since the call loaded it.
func (p *Pool[E]) stale(st *snapshot[E]) bool { return p.state.Load() != st }

// runSerial makes the attempts of a call without hedging, one after the other, on the calling
// goroutine. stale: no attempt could start on st, and st is no longer current.
// start is when the call began, on the pool's clock.
func runSerial[E Endpoint, T any, F caller[E, T]](ctx context.Context, p *Pool[E], st *snapshot[E], fn F, start time.Duration) (_ T, _ error, stale bool) {
	var (
		zero            T
		s               = st.s
		tried, rejected idxSet
		lastErr         error
		attempts        int
	)
	for {
		i := p.pick(st, &tried, &rejected, true)
		if i < 0 {
			if lastErr != nil {
				return zero, lastErr, false
			}
			if p.stale(st) {
				return zero, nil, true
			}
			return zero, p.unavailable(st), false
		}
		m := st.members[i]
		h, ok := m.acquire()
		if !ok {
			rejected.add(i)
			continue
		}
		kind := AttemptFirst
		if attempts > 0 {
			kind, start = AttemptRetry, time.Since(p.base)
		}
		actx, cancel := ctx, context.CancelFunc(nil)
		if s.attemptTimeout > 0 {
			actx, cancel = context.WithTimeout(ctx, s.attemptTimeout)
		}
		res, o := attempt(p, ctx, actx, m, h, kind, fn, start)
		if cancel != nil {
			cancel()
		}
		if !o.ran {
			rejected.add(i)
			continue
		}
		if o.err == nil {
			return res, nil, false
		}
		attempts++
		tried.add(i)
		lastErr = fmt.Errorf("%s: %w", m.name, o.err)
		if !o.retryable || attempts >= s.maxAttempts || !timeLeft(ctx, o.took) || !st.budget.tryWithdraw() {
			return zero, lastErr, false
		}
	}
}

// hedgeResult carries one attempt of a hedged call back to Do.
type hedgeResult[T any] struct {
	i    int
	kind AttemptKind
	res  T
	o    outcome
}

// runHedged makes the attempts of a call with hedging, each on a goroutine of the pool's, and
// returns as soon as one succeeds. stale: as for runSerial.
func runHedged[E Endpoint, T any, F caller[E, T]](ctx context.Context, p *Pool[E], st *snapshot[E], fn F) (_ T, _ error, stale bool) {
	var zero T
	s := st.s
	// Each attempt sends one result; there are at most maxAttempts that run and one refused by its
	// breaker per member, so no send ever blocks, even after Do has returned.
	results := make(chan hedgeResult[T], s.maxAttempts+len(st.members))
	cancels := make([]context.CancelCauseFunc, 0, s.maxAttempts)
	defer func() {
		for _, c := range cancels {
			c(errAbandoned)
		}
	}()
	var (
		tried, rejected   idxSet
		lastErr           error
		launched, running int
	)
	// launch starts an attempt of kind on a member picked for it (hedges only on members not
	// tried yet), paying a budget token for retries and hedges unless paid; false if none starts.
	launch := func(kind AttemptKind, paid bool) bool {
		for {
			i := p.pick(st, &tried, &rejected, kind != AttemptHedge)
			if i < 0 {
				return false
			}
			m := st.members[i]
			h, ok := m.acquire()
			if !ok {
				rejected.add(i)
				continue
			}
			if kind != AttemptFirst && !paid && !st.budget.tryWithdraw() {
				p.release(h)
				return false
			}
			tried.add(i)
			actx, cancel := context.WithCancelCause(ctx)
			cancels = append(cancels, cancel)
			launched++
			running++
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				tctx := actx
				if s.attemptTimeout > 0 {
					var c context.CancelFunc
					tctx, c = context.WithTimeout(actx, s.attemptTimeout)
					defer c()
				}
				res, o := attempt(p, ctx, tctx, m, h, kind, fn, time.Since(p.base))
				results <- hedgeResult[T]{i: i, kind: kind, res: res, o: o}
			}()
			return true
		}
	}
	// noneStarted ends a call none of whose attempts ran.
	noneStarted := func() (T, error, bool) {
		if p.stale(st) {
			return zero, nil, true
		}
		return zero, p.unavailable(st), false
	}

	if !launch(AttemptFirst, false) {
		return noneStarted()
	}
	timer := time.NewTimer(s.hedgeDelay)
	defer timer.Stop()
	for {
		select {
		case r := <-results:
			running--
			if !r.o.ran {
				launched--
				rejected.add(r.i)
				if !launch(r.kind, true) && running == 0 {
					if lastErr != nil {
						return zero, lastErr, false
					}
					return noneStarted()
				}
				continue
			}
			if r.o.err == nil {
				return r.res, nil, false
			}
			lastErr = fmt.Errorf("%s: %w", st.members[r.i].name, r.o.err)
			if !r.o.retryable {
				return zero, lastErr, false
			}
			if launched < s.maxAttempts && timeLeft(ctx, r.o.took) && launch(AttemptRetry, false) {
				timer.Reset(s.hedgeDelay)
				continue
			}
			if running == 0 {
				return zero, lastErr, false
			}
		case <-timer.C:
			if launched < s.maxAttempts && ctx.Err() == nil && launch(AttemptHedge, false) && launched < s.maxAttempts {
				timer.Reset(s.hedgeDelay)
			}
		case <-ctx.Done():
			return zero, ctx.Err(), false
		}
	}
}

// attempt runs fn once on m through m's breaker and then releases h. ctx is the caller's; actx,
// derived from it, is the attempt's; start is when the attempt began, on the pool's clock.
func attempt[E Endpoint, T any, F caller[E, T]](p *Pool[E], ctx, actx context.Context, m *member[E], h *handle[E], kind AttemptKind, fn F, start time.Duration) (res T, o outcome) {
	defer p.release(h)
	_, _ = m.brk.Load().cb.Execute(func() (struct{}, error) {
		o.ran = true
		m.outstanding.Add(1)
		defer m.outstanding.Add(-1)
		m.obs.AttemptStarted(kind)
		res, o.err = fn.call(actx, h.e)
		o.took = time.Since(p.base) - start
		m.obs.AttemptDone(kind, o.took, o.err)
		var verdict error
		verdict, o.retryable = judge(ctx, actx, o.err)
		if verdict != nil && verdict != errExcluded {
			msg := o.err.Error() // only on failures: the happy path stays allocation-free
			m.lastFailure.Store(&msg)
		}
		return struct{}{}, verdict
	})
	return res, o
}

// judge classifies an attempt's error: what its breaker is told (nil: success, errExcluded:
// neither success nor failure, else a failure) and whether another attempt may help.
func judge(ctx, actx context.Context, err error) (verdict error, retryable bool) {
	switch {
	case err == nil:
		return nil, false
	case ctx.Err() != nil, errors.Is(err, ErrInvalidInput):
		return errExcluded, false
	case actx != ctx && context.Cause(actx) == errAbandoned:
		return errExcluded, false
	}
	return err, true
}

// timeLeft reports whether the caller's deadline leaves room for another attempt as long as the
// one that failed.
func timeLeft(ctx context.Context, took time.Duration) bool {
	if ctx.Err() != nil {
		return false
	}
	dl, ok := ctx.Deadline()
	if !ok {
		return true
	}
	left := time.Until(dl)
	return left > 0 && left >= took
}

// Update replaces the configuration and the members, as on a config reload, and returns at once.
// Members whose Name is unchanged keep their breaker, health state and outstanding count (the
// breaker is replaced by a closed one only when OpenTimeout, HalfOpenRequests, FailureRatio's
// on/off or FailureWindow change); if the new Member carries an endpoint other than the current
// one (by ==), the new one takes the new calls and the old one is closed once its running calls
// end. Removed members are closed once their running calls end. Added members start fresh and
// are health-checked at once. The retry budget is kept unless its settings change. On success
// the pool owns every endpoint in members (each must belong to one member only); on error
// nothing changes and the caller still owns them. Calls running during Update finish on the
// members they started with; a call that finds all of its members gone starts over on the new
// ones.
func (p *Pool[E]) Update(cfg PoolConfig, members []Member[E]) error {
	if err := checkPool(cfg, members); err != nil {
		return err
	}
	if cfg.Name != p.name {
		return fmt.Errorf("pool %s: Name cannot change on Update (to %q)", p.name, cfg.Name)
	}
	s := cfg.resolve()

	p.updateMu.Lock()
	defer p.updateMu.Unlock()
	old := p.state.Load()
	if old.closed {
		return p.closedErr()
	}
	next := &snapshot[E]{s: s, budget: old.budget, members: make([]*member[E], 0, len(members))}
	if s.budget != old.s.budget {
		next.budget = newRetryBudget(s.budget, p.base)
	}
	kept := make(map[string]*member[E], len(old.members))
	for _, m := range old.members {
		kept[m.name] = m
	}
	var retire []*handle[E]
	for _, mm := range members {
		m, ok := kept[mm.Name]
		if !ok {
			next.members = append(next.members, p.newMember(mm.Name, mm.E, s))
			continue
		}
		delete(kept, mm.Name)
		if !sameEndpoint(m.h.Load().e, mm.E) {
			retire = append(retire, m.h.Swap(newHandle(mm.Name, mm.E)))
		}
		if b := m.brk.Load(); b.key != s.breaker {
			b.replaced.Store(true)
			m.brk.Store(newBreaker(m.name, s, m.obs))
			m.obs.BreakerChanged(BreakerClosed)
		} else {
			b.rule.Store(&s.trip)
		}
		if s.healthInterval < 0 {
			m.setHealth(HealthUp)
		}
		next.members = append(next.members, m)
	}
	p.state.Store(next)

	for _, m := range old.members {
		if kept[m.name] == m {
			retire = append(retire, m.h.Load())
			m.obs.Removed()
		}
	}
	p.retiredMu.Lock()
	for _, h := range retire {
		p.retired[h] = struct{}{}
	}
	p.retiredMu.Unlock()
	for _, h := range retire {
		p.release(h)
	}
	select {
	case p.kick <- struct{}{}:
	default:
	}
	return nil
}

// isNil reports whether e is a nil interface, pointer, map, slice, channel or func.
func isNil(e any) bool {
	v := reflect.ValueOf(e)
	if !v.IsValid() {
		return true
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Chan, reflect.Func, reflect.Interface:
		return v.IsNil()
	}
	return false
}

// sameEndpoint reports whether a and b are the same endpoint value (==), false when E's dynamic
// type is not comparable.
func sameEndpoint[E Endpoint](a, b E) bool {
	va, vb := any(a), any(b)
	if !reflect.ValueOf(va).Comparable() || !reflect.ValueOf(vb).Comparable() {
		return false
	}
	return va == vb
}

// Ready returns nil if at least one member is usable: its health check has not failed (or checks
// are off) and its breaker is not open. Otherwise the error wraps ErrUnavailable and says why for
// each member. It calls no endpoint; ctx is unused.
func (p *Pool[E]) Ready(ctx context.Context) error {
	st := p.state.Load()
	if st.closed {
		return p.closedErr()
	}
	var now int64
	for _, m := range st.members {
		if m.healthy() && m.brk.Load().admits(&now) {
			return nil
		}
	}
	return p.unavailable(st)
}

// States returns a snapshot of every member, in the order NewPool or the last Update gave them;
// none after Close.
func (p *Pool[E]) States() []MemberState {
	st := p.state.Load()
	out := make([]MemberState, len(st.members))
	for i, m := range st.members {
		out[i] = MemberState{
			Name:        m.name,
			Health:      Health(m.health.Load()),
			Breaker:     BreakerState(m.brk.Load().cb.State()),
			Outstanding: int(m.outstanding.Load()),
		}
		if e := m.healthErr.Load(); e != nil {
			out[i].HealthErr = *e
		}
	}
	return out
}

// Endpoint returns the endpoint of the member named name, for a reload that keeps it: pass it back
// to Update in a Member of the same name and the member keeps its breaker, health and endpoint.
func (p *Pool[E]) Endpoint(name string) (E, bool) {
	for _, m := range p.state.Load().members {
		if m.name == name {
			if h := m.h.Load(); h != nil {
				return h.e, true
			}
		}
	}
	var zero E
	return zero, false
}

// Close stops the health goroutine and waits for it, then closes every member's endpoint once
// the calls running on it have returned, waits for the goroutines the pool started (hedging
// losers included) and returns the endpoints' Close errors. Calls made after Close fail with
// ErrUnavailable. Close waits as long as a running fn or Ready ignores its ctx. Closing twice
// returns nil.
func (p *Pool[E]) Close() error {
	p.updateMu.Lock()
	defer p.updateMu.Unlock()
	old := p.state.Load()
	if old.closed {
		return nil
	}
	p.state.Store(&snapshot[E]{s: old.s, budget: old.budget, closed: true})
	p.stopHealth()
	<-p.healthDone

	var wait []*handle[E]
	for _, m := range old.members {
		h := m.h.Load()
		wait = append(wait, h)
		p.release(h)
	}
	p.retiredMu.Lock()
	for h := range p.retired {
		wait = append(wait, h)
	}
	p.retiredMu.Unlock()
	var errs []error
	for _, h := range wait {
		<-h.done
		if h.err != nil {
			errs = append(errs, fmt.Errorf("pool %s: closing %s: %w", p.name, h.name, h.err))
		}
	}
	p.wg.Wait()
	for _, m := range old.members {
		m.obs.Removed()
	}
	return errors.Join(errs...)
}

func (p *Pool[E]) closedErr() error {
	return fmt.Errorf("pool %s: closed: %w", p.name, ErrUnavailable)
}

// unavailable is the error of a call no member can take: each member and why.
func (p *Pool[E]) unavailable(st *snapshot[E]) error {
	var b strings.Builder
	var now int64
	for i, m := range st.members {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(m.name)
		b.WriteString(": ")
		var why []string
		brk := m.brk.Load()
		switch BreakerState(brk.state.Load()) {
		case BreakerOpen:
			msg := "breaker open"
			if e := m.lastFailure.Load(); e != nil {
				msg += " (last failure: " + *e + ")"
			}
			why = append(why, msg)
		case BreakerHalfOpen:
			why = append(why, "breaker half-open, probes in flight")
		}
		if !m.healthy() {
			msg := "health check failed"
			if e := m.healthErr.Load(); e != nil {
				msg += ": " + *e
			}
			why = append(why, msg)
		}
		if len(why) == 0 {
			if brk.admits(&now) {
				why = append(why, "closing")
			} else {
				why = append(why, "breaker open")
			}
		}
		b.WriteString(strings.Join(why, ", "))
	}
	return fmt.Errorf("pool %s: no endpoint can take the call (%s): %w", p.name, b.String(), ErrUnavailable)
}

// rand returns the next value of the pool's splitmix64 sequence; safe for concurrent use, no lock.
func (p *Pool[E]) rand() uint64 {
	z := p.rng.Add(0x9e3779b97f4a7c15)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Pick levels, tried in order: usable members not tried yet, then (panic mode: health may lag)
// members whose breaker admits calls, not tried yet; for retries the same two among the members
// already tried.
const (
	levelUsable = iota
	levelAdmits
	levelUsableTried
	levelAdmitsTried
)

// pick chooses a member by power of two choices among the candidates of the first level that has
// any, or returns -1. Members in rejected are never chosen; those in tried only if allowTried.
func (p *Pool[E]) pick(st *snapshot[E], tried, rejected *idxSet, allowTried bool) int {
	var now int64
	last := levelAdmits
	if allowTried {
		last = levelAdmitsTried
	}
	for level := levelUsable; level <= last; level++ {
		n := 0
		for i, m := range st.members {
			if m.candidate(level, i, tried, rejected, &now) {
				n++
			}
		}
		switch n {
		case 0:
			continue
		case 1:
			for i, m := range st.members {
				if m.candidate(level, i, tried, rejected, &now) {
					return i
				}
			}
			continue // the candidate changed under us
		}
		r := p.rand()
		a := int((r & math.MaxUint32) * uint64(n) >> 32)
		b := int((r >> 32) * uint64(n-1) >> 32)
		if b >= a {
			b++
		}
		ia, ib, k := -1, -1, 0
		for i, m := range st.members {
			if !m.candidate(level, i, tried, rejected, &now) {
				continue
			}
			switch k {
			case a:
				ia = i
			case b:
				ib = i
			}
			k++
		}
		switch {
		case ia < 0 && ib < 0:
			continue
		case ia < 0:
			return ib
		case ib < 0:
			return ia
		}
		if st.members[ib].outstanding.Load() < st.members[ia].outstanding.Load() {
			return ib
		}
		return ia
	}
	return -1
}

// idxSet is a set of member indexes; no allocation below 64 members.
type idxSet struct {
	lo uint64
	hi []uint64
}

func (s *idxSet) add(i int) {
	if i < 64 {
		s.lo |= 1 << i
		return
	}
	j := i/64 - 1
	for len(s.hi) <= j {
		s.hi = append(s.hi, 0)
	}
	s.hi[j] |= 1 << (i % 64)
}

func (s *idxSet) has(i int) bool {
	if i < 64 {
		return s.lo&(1<<i) != 0
	}
	j := i/64 - 1
	return j < len(s.hi) && s.hi[j]&(1<<(i%64)) != 0
}

// member is one endpoint of the pool with the state that survives Update.
type member[E Endpoint] struct {
	name        string
	obs         EndpointObserver // never nil
	h           atomic.Pointer[handle[E]]
	brk         atomic.Pointer[breaker]
	outstanding atomic.Int64
	health      atomic.Int32 // a Health
	healthErr   atomic.Pointer[string]
	// lastFailure is the error of the member's last failed attempt, quoted when its breaker is
	// open so that a refused call says why.
	lastFailure atomic.Pointer[string]
	// checking is set while a health check of the member runs; it owns fails and oks.
	checking atomic.Bool
	// fails and oks count the failed and passed checks in a row.
	fails, oks int
}

func (p *Pool[E]) newMember(name string, e E, s *settings) *member[E] {
	var obs EndpointObserver = noObserver{}
	if p.obs != nil {
		if o := p.obs.Endpoint(p.name, name); o != nil {
			obs = o
		}
	}
	m := &member[E]{name: name, obs: obs}
	m.h.Store(newHandle(name, e))
	m.brk.Store(newBreaker(name, s, obs))
	if s.healthInterval < 0 {
		m.setHealth(HealthUp)
	}
	return m
}

func (m *member[E]) healthy() bool { return Health(m.health.Load()) != HealthDown }

func (m *member[E]) setHealth(h Health) {
	if Health(m.health.Swap(int32(h))) != h {
		m.obs.HealthChanged(h)
	}
}

func (m *member[E]) candidate(level, i int, tried, rejected *idxSet, now *int64) bool {
	if rejected.has(i) {
		return false
	}
	if tried.has(i) != (level >= levelUsableTried) {
		return false
	}
	if (level == levelUsable || level == levelUsableTried) && !m.healthy() {
		return false
	}
	return m.brk.Load().admits(now)
}

// acquire returns the member's current endpoint with a reference taken, or false if the member
// is being closed.
func (m *member[E]) acquire() (*handle[E], bool) {
	for {
		h := m.h.Load()
		if h.acquire() {
			return h, true
		}
		if m.h.Load() == h {
			return nil, false
		}
	}
}

// handle is an endpoint with a reference count: one reference for the pool while the endpoint is
// a member's current one, one per running attempt or health check. The last release closes it.
type handle[E Endpoint] struct {
	name string // the member's
	e    E
	refs atomic.Int64
	done chan struct{} // closed once e.Close has returned
	err  error         // e.Close's result; read after done is closed
}

func newHandle[E Endpoint](name string, e E) *handle[E] {
	h := &handle[E]{name: name, e: e, done: make(chan struct{})}
	h.refs.Store(1)
	return h
}

func (h *handle[E]) acquire() bool {
	for {
		r := h.refs.Load()
		if r <= 0 {
			return false
		}
		if h.refs.CompareAndSwap(r, r+1) {
			return true
		}
	}
}

// release drops a reference to h; the last one closes the endpoint in a goroutine of the pool's.
func (p *Pool[E]) release(h *handle[E]) {
	if h.refs.Add(-1) != 0 {
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		h.err = h.e.Close()
		close(h.done)
		p.retiredMu.Lock()
		_, retired := p.retired[h]
		delete(p.retired, h)
		p.retiredMu.Unlock()
		if retired && h.err != nil {
			p.log.Warn("closing a replaced or removed endpoint", "pool", p.name, "endpoint", h.name, "err", h.err)
		}
	}()
}

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

// healthLoop runs a round of health checks at once, then every HealthInterval and when Update
// asks, until ctx is done.
func (p *Pool[E]) healthLoop(ctx context.Context) {
	defer close(p.healthDone)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-p.kick:
		}
		st := p.state.Load()
		if st.closed {
			return
		}
		if st.s.healthInterval > 0 {
			p.checkRound(ctx, st)
			timer.Reset(st.s.healthInterval)
		} else {
			timer.Stop()
		}
	}
}

// checkRound starts a check of every member whose previous check has returned.
func (p *Pool[E]) checkRound(ctx context.Context, st *snapshot[E]) {
	for _, m := range st.members {
		if !m.checking.CompareAndSwap(false, true) {
			continue
		}
		h, ok := m.acquire()
		if !ok {
			m.checking.Store(false)
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			cctx, cancel := context.WithTimeout(ctx, st.s.healthTimeout)
			err := h.e.Ready(cctx)
			cancel()
			p.release(h)
			if ctx.Err() == nil {
				m.recordCheck(err, st.s)
			}
			m.checking.Store(false)
		}()
	}
}

// recordCheck applies one check's result; the caller holds m.checking.
func (m *member[E]) recordCheck(err error, s *settings) {
	cur := Health(m.health.Load())
	if err == nil {
		m.fails = 0
		m.oks++
		m.healthErr.Store(nil)
		if cur != HealthUp && (cur == HealthUnknown || m.oks >= s.healthyAfter) {
			m.setHealth(HealthUp)
		}
		return
	}
	m.oks = 0
	m.fails++
	msg := err.Error()
	m.healthErr.Store(&msg)
	if cur != HealthDown && (cur == HealthUnknown || m.fails >= s.unhealthyAfter) {
		m.setHealth(HealthDown)
	}
}

var _ Endpoint = (*Pool[Endpoint])(nil)
