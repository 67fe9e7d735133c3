package backends

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// The pool's code by concern: this file (the Pool, its members' states, NewPool, Ready, Close),
// pool_config.go (PoolConfig, its defaults, options), pool_call.go (Do and Call: attempts, retries
// within the budget, hedging), pool_pick.go (picking a member), pool_member.go (members and their
// handles), pool_breaker.go (the circuit breakers), pool_health.go (active health checks) and
// pool_update.go (Update).

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

var _ Endpoint = (*Pool[Endpoint])(nil)
