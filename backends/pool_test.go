package backends

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeEndpoint stands in for an upstream server: its calls and health checks do what the test
// sets, and it counts them.
type fakeEndpoint struct {
	name string

	mu        sync.Mutex    // guards the fields below
	err       error         // Call's result
	delay     time.Duration // Call takes this long
	ignoreCtx bool          // Call sleeps through its delay even when ctx is done
	gate      chan struct{} // if set, Call waits until it is closed (or ctx is done)
	readyErr  error         // Ready's result
	readyHang bool          // Ready waits for its ctx
	closeErr  error         // Close's result

	calls, returned, readies, closes atomic.Int64
	readyRunning, readyMaxRunning    atomic.Int64
}

func fake(name string) *fakeEndpoint { return &fakeEndpoint{name: name} }

func (f *fakeEndpoint) set(fn func(f *fakeEndpoint)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// Call is what the tests' fn runs on an endpoint.
func (f *fakeEndpoint) Call(ctx context.Context) error {
	f.calls.Add(1)
	defer f.returned.Add(1)
	f.mu.Lock()
	err, delay, ignoreCtx, gate := f.err, f.delay, f.ignoreCtx, f.gate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if delay > 0 {
		if ignoreCtx {
			time.Sleep(delay)
		} else {
			t := time.NewTimer(delay)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return err
}

func (f *fakeEndpoint) Ready(ctx context.Context) error {
	f.readies.Add(1)
	n := f.readyRunning.Add(1)
	defer f.readyRunning.Add(-1)
	for {
		m := f.readyMaxRunning.Load()
		if n <= m || f.readyMaxRunning.CompareAndSwap(m, n) {
			break
		}
	}
	f.mu.Lock()
	err, hang := f.readyErr, f.readyHang
	f.mu.Unlock()
	if hang {
		<-ctx.Done()
		return ctx.Err()
	}
	return err
}

func (f *fakeEndpoint) Close() error {
	f.closes.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closeErr
}

func callFake(ctx context.Context, e *fakeEndpoint) error { return e.Call(ctx) }

func membersOf(fs ...*fakeEndpoint) []Member[*fakeEndpoint] {
	ms := make([]Member[*fakeEndpoint], len(fs))
	for i, f := range fs {
		ms[i] = Member[*fakeEndpoint]{Name: f.name, E: f}
	}
	return ms
}

func newTestPool(t *testing.T, cfg PoolConfig, opts []PoolOption, fs ...*fakeEndpoint) *Pool[*fakeEndpoint] {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "test"
	}
	p, err := NewPool(cfg, membersOf(fs...), append([]PoolOption{WithSeed(1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func stateOf(t *testing.T, p *Pool[*fakeEndpoint], name string) MemberState {
	t.Helper()
	for _, s := range p.States() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no member %q in %v", name, p.States())
	return MemberState{}
}

func mustClose(t *testing.T, p *Pool[*fakeEndpoint]) {
	t.Helper()
	if err := p.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// countObserver counts the attempts of every endpoint by kind.
type countObserver struct {
	first, retries, hedges, done, removed atomic.Int64
}

func (o *countObserver) Endpoint(string, string) EndpointObserver { return o }
func (o *countObserver) AttemptStarted(k AttemptKind) {
	switch k {
	case AttemptFirst:
		o.first.Add(1)
	case AttemptRetry:
		o.retries.Add(1)
	case AttemptHedge:
		o.hedges.Add(1)
	}
}
func (o *countObserver) AttemptDone(AttemptKind, time.Duration, error) { o.done.Add(1) }
func (o *countObserver) BreakerChanged(BreakerState)                   {}
func (o *countObserver) HealthChanged(Health)                          {}
func (o *countObserver) Removed()                                      { o.removed.Add(1) }

// quiet is a config with no health checks and no breaker, for tests of something else.
func quiet(c PoolConfig) PoolConfig {
	if c.HealthInterval == 0 {
		c.HealthInterval = -1
	}
	if c.ConsecutiveFailures == 0 {
		c.ConsecutiveFailures = -1
	}
	return c
}

func TestPoolConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     PoolConfig
		wantErr string // "" for valid
	}{
		{"zero value", PoolConfig{}, ""},
		{"everything set", PoolConfig{MaxAttempts: 2, AttemptTimeout: time.Second, HedgeDelay: time.Millisecond,
			RetryBudget: 0.2, MinRetriesPerSecond: 1, RetryBudgetWindow: time.Second, ConsecutiveFailures: 3,
			FailureRatio: 0.5, FailureWindow: time.Second, MinRequests: 10, OpenTimeout: time.Second,
			HalfOpenRequests: 2, HealthInterval: time.Second, HealthTimeout: time.Second,
			UnhealthyThreshold: 2, HealthyThreshold: 2}, ""},
		{"checks off, breaker rule off, no budget", PoolConfig{HealthInterval: -1, ConsecutiveFailures: -1,
			RetryBudget: -1, MinRetriesPerSecond: -1}, ""},
		{"negative attempts", PoolConfig{MaxAttempts: -1}, "MaxAttempts"},
		{"negative attempt timeout", PoolConfig{AttemptTimeout: -1}, "AttemptTimeout"},
		{"negative hedge delay", PoolConfig{HedgeDelay: -1}, "HedgeDelay"},
		{"NaN budget", PoolConfig{RetryBudget: math.NaN()}, "RetryBudget"},
		{"infinite floor", PoolConfig{MinRetriesPerSecond: math.Inf(1)}, "MinRetriesPerSecond"},
		{"negative budget window", PoolConfig{RetryBudgetWindow: -time.Second}, "RetryBudgetWindow"},
		{"ratio above 1", PoolConfig{FailureRatio: 1.5}, "FailureRatio"},
		{"negative ratio", PoolConfig{FailureRatio: -0.1}, "FailureRatio"},
		{"negative failure window", PoolConfig{FailureWindow: -1}, "FailureWindow"},
		{"negative min requests", PoolConfig{MinRequests: -1}, "MinRequests"},
		{"negative open timeout", PoolConfig{OpenTimeout: -1}, "OpenTimeout"},
		{"negative half-open", PoolConfig{HalfOpenRequests: -1}, "HalfOpenRequests"},
		{"negative health timeout", PoolConfig{HealthTimeout: -1}, "HealthTimeout"},
		{"negative unhealthy threshold", PoolConfig{UnhealthyThreshold: -1}, "UnhealthyThreshold"},
		{"negative healthy threshold", PoolConfig{HealthyThreshold: -1}, "HealthyThreshold"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate: %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Validate: %v, want an error naming %s", err, tt.wantErr)
			}
			_, nerr := NewPool(tt.cfg, membersOf(fake("a")))
			if (nerr == nil) != (tt.wantErr == "") {
				t.Fatalf("NewPool: %v, want error %v", nerr, tt.wantErr != "")
			}
		})
	}
}

func TestNewPoolRefusesBadMembers(t *testing.T) {
	a := fake("a")
	tests := []struct {
		name    string
		members []Member[*fakeEndpoint]
		wantErr string
	}{
		{"none", nil, "no members"},
		{"unnamed", []Member[*fakeEndpoint]{{E: a}}, "no name"},
		{"twice", []Member[*fakeEndpoint]{{"a", a}, {"a", fake("a")}}, "twice"},
		{"nil endpoint", []Member[*fakeEndpoint]{{Name: "a"}}, "nil endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewPool(PoolConfig{Name: "p"}, tt.members)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				if p != nil {
					p.Close()
				}
				t.Fatalf("NewPool: %v, want %q", err, tt.wantErr)
			}
			if a.closes.Load() != 0 {
				t.Fatal("NewPool closed a member it refused")
			}
		})
	}
}

// TestBreakerOpensAndRecovers: a failing member's breaker opens after the configured failures,
// traffic moves to the other member, the breaker half-opens after OpenTimeout and closes on a
// successful probe.
func TestBreakerOpensAndRecovers(t *testing.T) {
	tests := []struct {
		name    string
		cfg     PoolConfig
		opensAt int64 // failed attempts on a that open its breaker
	}{
		{"consecutive failures", PoolConfig{ConsecutiveFailures: 3}, 3},
		{"default consecutive failures", PoolConfig{}, 5},
		{"failure ratio", PoolConfig{ConsecutiveFailures: -1, FailureRatio: 0.5, MinRequests: 4}, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				a, b := fake("a"), fake("b")
				a.err = fmt.Errorf("connection reset: %w", ErrUnavailable)
				cfg := tt.cfg
				cfg.MaxAttempts, cfg.OpenTimeout, cfg.HealthInterval = 1, 2*time.Second, -1
				p := newTestPool(t, cfg, nil, a, b)
				defer mustClose(t, p)

				callUntil := func(n int64) {
					for i := 0; a.calls.Load() < n; i++ {
						if i > 1000 {
							t.Fatalf("a got %d calls after 1000 Do, want %d", a.calls.Load(), n)
						}
						_ = p.Do(t.Context(), callFake)
					}
				}
				callUntil(tt.opensAt - 1)
				if s := stateOf(t, p, "a"); s.Breaker != BreakerClosed {
					t.Fatalf("after %d failures a's breaker is %v, want closed", tt.opensAt-1, s.Breaker)
				}
				callUntil(tt.opensAt)
				if s := stateOf(t, p, "a"); s.Breaker != BreakerOpen {
					t.Fatalf("after %d failures a's breaker is %v, want open", tt.opensAt, s.Breaker)
				}
				for range 50 {
					if err := p.Do(t.Context(), callFake); err != nil {
						t.Fatalf("Do with a open: %v, want b to answer", err)
					}
				}
				if got := a.calls.Load(); got != tt.opensAt {
					t.Fatalf("a got %d calls with its breaker open, want none", got-tt.opensAt)
				}

				time.Sleep(1999 * time.Millisecond)
				if s := stateOf(t, p, "a"); s.Breaker != BreakerOpen {
					t.Fatalf("a's breaker is %v before OpenTimeout, want open", s.Breaker)
				}
				time.Sleep(2 * time.Millisecond)
				if s := stateOf(t, p, "a"); s.Breaker != BreakerHalfOpen {
					t.Fatalf("a's breaker is %v after OpenTimeout, want half-open", s.Breaker)
				}
				a.set(func(f *fakeEndpoint) { f.err = nil })
				callUntil(tt.opensAt + 1)
				if s := stateOf(t, p, "a"); s.Breaker != BreakerClosed {
					t.Fatalf("a's breaker is %v after a successful probe, want closed", s.Breaker)
				}
			})
		})
	}
}

// TestHalfOpenFailureReopens: a failed probe opens the breaker again for another OpenTimeout.
func TestHalfOpenFailureReopens(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := fake("a")
		a.err = ErrUnavailable
		p := newTestPool(t, PoolConfig{ConsecutiveFailures: 1, MaxAttempts: 1, HealthInterval: -1}, nil, a)
		defer mustClose(t, p)
		_ = p.Do(t.Context(), callFake)
		if err := p.Do(t.Context(), callFake); !errors.Is(err, ErrUnavailable) || a.calls.Load() != 1 {
			t.Fatalf("Do with the only breaker open: %v after %d calls, want ErrUnavailable without a call", err, a.calls.Load())
		}
		time.Sleep(time.Second + time.Millisecond)
		_ = p.Do(t.Context(), callFake) // the probe fails
		if a.calls.Load() != 2 {
			t.Fatalf("a got %d calls, want the probe", a.calls.Load())
		}
		if s := stateOf(t, p, "a"); s.Breaker != BreakerOpen {
			t.Fatalf("after a failed probe a's breaker is %v, want open", s.Breaker)
		}
	})
}

// TestExcludedOutcomes: bad input and the caller's own cancellation or deadline are not retried
// and do not count against the breaker; an upstream failure is and does.
func TestExcludedOutcomes(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(f *fakeEndpoint)
		ctx       func(t *testing.T) (context.Context, context.CancelFunc)
		fn        func(cancel context.CancelFunc) func(context.Context, *fakeEndpoint) error
		wantErr   error
		calls     int64 // per Do
		wantState BreakerState
	}{
		{
			name:      "bad input",
			setup:     func(f *fakeEndpoint) { f.err = fmt.Errorf("input x: wrong shape: %w", ErrInvalidInput) },
			wantErr:   ErrInvalidInput,
			calls:     1,
			wantState: BreakerClosed,
		},
		{
			name: "caller cancels",
			fn: func(cancel context.CancelFunc) func(context.Context, *fakeEndpoint) error {
				return func(ctx context.Context, e *fakeEndpoint) error {
					e.calls.Add(1)
					cancel()
					return ctx.Err()
				}
			},
			wantErr:   context.Canceled,
			calls:     1,
			wantState: BreakerClosed,
		},
		{
			name:  "caller deadline",
			setup: func(f *fakeEndpoint) { f.delay = time.Hour },
			ctx: func(t *testing.T) (context.Context, context.CancelFunc) {
				return context.WithTimeout(t.Context(), time.Second)
			},
			wantErr:   context.DeadlineExceeded,
			calls:     1,
			wantState: BreakerClosed,
		},
		{
			name:      "upstream failure",
			setup:     func(f *fakeEndpoint) { f.err = fmt.Errorf("refused: %w", ErrUnavailable) },
			wantErr:   ErrUnavailable,
			calls:     2, // a, then b; both breakers open, so no third attempt
			wantState: BreakerOpen,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				a, b := fake("a"), fake("b")
				if tt.setup != nil {
					tt.setup(a)
					tt.setup(b)
				}
				p := newTestPool(t, PoolConfig{ConsecutiveFailures: 1, MaxAttempts: 3, HealthInterval: -1}, nil, a, b)
				defer mustClose(t, p)
				dos := int64(5)
				if tt.wantState == BreakerOpen {
					dos = 1
				}
				for i := range dos {
					ctx, cancel := context.WithCancel(t.Context())
					if tt.ctx != nil {
						ctx, cancel = tt.ctx(t)
					}
					fn := callFake
					if tt.fn != nil {
						fn = tt.fn(cancel)
					}
					err := p.Do(ctx, fn)
					cancel()
					if !errors.Is(err, tt.wantErr) {
						t.Fatalf("Do: %v, want %v", err, tt.wantErr)
					}
					if got := a.calls.Load() + b.calls.Load(); got != (i+1)*tt.calls {
						t.Fatalf("after %d Do: %d attempts, want %d", i+1, got, (i+1)*tt.calls)
					}
				}
				for _, s := range p.States() {
					if s.Breaker != tt.wantState {
						t.Errorf("%s: breaker %v, want %v", s.Name, s.Breaker, tt.wantState)
					}
				}
			})
		})
	}
}

// TestHealthChecks: the health goroutine marks a member down after UnhealthyThreshold failed
// checks (a hanging check fails by HealthTimeout), traffic avoids it, and it comes back after
// HealthyThreshold passed checks.
func TestHealthChecks(t *testing.T) {
	tests := []struct {
		name                 string
		unhealthy, healthy   int
		fail                 func(f *fakeEndpoint)
		heal                 func(f *fakeEndpoint)
		wantErr              string
		wantReadiesPerRound0 int64
	}{
		{"thresholds 1", 0, 0, func(f *fakeEndpoint) { f.readyErr = errors.New("connection refused") },
			func(f *fakeEndpoint) { f.readyErr = nil }, "connection refused", 1},
		{"thresholds 2 and 3", 2, 3, func(f *fakeEndpoint) { f.readyErr = errors.New("503 not ready") },
			func(f *fakeEndpoint) { f.readyErr = nil }, "503 not ready", 1},
		{"hanging check times out", 1, 1, func(f *fakeEndpoint) { f.readyHang = true },
			func(f *fakeEndpoint) { f.readyHang = false }, "deadline exceeded", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				a, b := fake("a"), fake("b")
				cfg := PoolConfig{HealthInterval: time.Second, HealthTimeout: 100 * time.Millisecond,
					UnhealthyThreshold: tt.unhealthy, HealthyThreshold: tt.healthy, ConsecutiveFailures: -1}
				p := newTestPool(t, cfg, nil, a, b)
				defer mustClose(t, p)
				synctest.Wait()
				if a.readies.Load() != 1 || b.readies.Load() != 1 {
					t.Fatalf("checks at start: a %d, b %d, want 1 each", a.readies.Load(), b.readies.Load())
				}
				for _, s := range p.States() {
					if s.Health != HealthUp {
						t.Fatalf("%s is %v after a passed check, want up", s.Name, s.Health)
					}
				}
				// Observe half-way between rounds (rounds at 1s, 2s, ...).
				time.Sleep(500 * time.Millisecond)

				a.set(tt.fail)
				need := max(tt.unhealthy, 1)
				for round := 1; round <= need; round++ {
					time.Sleep(time.Second)
					synctest.Wait()
					s := stateOf(t, p, "a")
					if want := round >= need; (s.Health == HealthDown) != want {
						t.Fatalf("after %d failed checks a is %v, want down: %v", round, s.Health, want)
					}
				}
				if s := stateOf(t, p, "a"); !strings.Contains(s.HealthErr, tt.wantErr) {
					t.Fatalf("a's HealthErr %q, want it to say %q", s.HealthErr, tt.wantErr)
				}
				before := a.calls.Load()
				for range 20 {
					if err := p.Do(t.Context(), callFake); err != nil {
						t.Fatal(err)
					}
				}
				if a.calls.Load() != before {
					t.Fatalf("a got %d calls while down", a.calls.Load()-before)
				}
				if err := p.Ready(t.Context()); err != nil {
					t.Fatalf("Ready with b up: %v", err)
				}

				a.set(tt.heal)
				need = max(tt.healthy, 1)
				for round := 1; round <= need; round++ {
					time.Sleep(time.Second)
					synctest.Wait()
					s := stateOf(t, p, "a")
					if want := round >= need; (s.Health == HealthUp) != want {
						t.Fatalf("after %d passed checks a is %v, want up: %v", round, s.Health, want)
					}
				}
				if s := stateOf(t, p, "a"); s.HealthErr != "" {
					t.Fatalf("a's HealthErr %q after a passed check, want none", s.HealthErr)
				}
				for range 20 {
					_ = p.Do(t.Context(), callFake)
				}
				if a.calls.Load() == before {
					t.Fatal("a got no calls after it came back")
				}
			})
		})
	}
}

// TestHealthChecksDoNotOverlap: a check that outlasts HealthInterval delays the member's next
// one instead of running beside it.
func TestHealthChecksDoNotOverlap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := fake("a")
		a.readyHang = true
		p := newTestPool(t, PoolConfig{HealthInterval: time.Second, HealthTimeout: 3500 * time.Millisecond}, nil, a)
		defer mustClose(t, p)
		time.Sleep(10 * time.Second)
		if got := a.readyMaxRunning.Load(); got != 1 {
			t.Fatalf("%d checks of a ran at once, want 1", got)
		}
		if got := a.readies.Load(); got != 3 {
			t.Fatalf("%d checks in 10s of 3.5s each, want 3", got)
		}
		if s := stateOf(t, p, "a"); s.Health != HealthDown {
			t.Fatalf("a is %v after its checks timed out, want down", s.Health)
		}
	})
}

// TestPanicModeUsesUnhealthyMembers: when every member's check fails but breakers are closed,
// calls still go out (health may lag), and Ready reports the pool not ready.
func TestPanicModeUsesUnhealthyMembers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := fake("a"), fake("b")
		a.readyErr, b.readyErr = errors.New("refused"), errors.New("refused")
		p := newTestPool(t, PoolConfig{HealthInterval: time.Second}, nil, a, b)
		defer mustClose(t, p)
		synctest.Wait()
		if err := p.Do(t.Context(), callFake); err != nil {
			t.Fatalf("Do with every member down but breakers closed: %v", err)
		}
		err := p.Ready(t.Context())
		if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "a: health check failed: refused") {
			t.Fatalf("Ready: %v, want ErrUnavailable naming a's failed check", err)
		}
	})
}

// TestPickPrefersLeastOutstanding: with two members, each call goes to the one with fewer
// attempts running.
func TestPickPrefersLeastOutstanding(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := fake("a"), fake("b")
		gateA, gateB := make(chan struct{}), make(chan struct{})
		a.gate, b.gate = gateA, gateB
		p := newTestPool(t, quiet(PoolConfig{}), nil, a, b)
		defer mustClose(t, p)
		var wg sync.WaitGroup
		start := func() {
			wg.Go(func() {
				if err := p.Do(t.Context(), callFake); err != nil {
					t.Error(err)
				}
			})
			synctest.Wait()
		}
		for i := range 20 {
			start()
			oa, ob := stateOf(t, p, "a").Outstanding, stateOf(t, p, "b").Outstanding
			if oa+ob != i+1 || oa-ob > 1 || ob-oa > 1 {
				t.Fatalf("after %d calls: a %d, b %d outstanding, want balanced", i+1, oa, ob)
			}
		}
		close(gateA)
		synctest.Wait()
		gateA2 := make(chan struct{})
		a.set(func(f *fakeEndpoint) { f.gate = gateA2 })
		for i := range 10 {
			start()
			if oa, ob := stateOf(t, p, "a").Outstanding, stateOf(t, p, "b").Outstanding; oa != i+1 || ob != 10 {
				t.Fatalf("call %d with a idle: a %d, b %d outstanding, want every call on a", i+1, oa, ob)
			}
		}
		close(gateA2)
		close(gateB)
		wg.Wait()
	})
}

// TestRetries: failed attempts fail over to other members within MaxAttempts and the caller's
// deadline.
func TestRetries(t *testing.T) {
	unavailable := fmt.Errorf("refused: %w", ErrUnavailable)
	type spec struct {
		err   error
		delay time.Duration
	}
	tests := []struct {
		name     string
		members  []spec
		cfg      PoolConfig
		deadline time.Duration // 0: none
		wantErr  error
		// check gets, per Do, the members tried in order.
		check func(t *testing.T, tried [][]string)
	}{
		{
			name:    "fails over to the member that works",
			members: []spec{{err: unavailable}, {}},
			check: func(t *testing.T, tried [][]string) {
				for _, tr := range tried {
					if tr[len(tr)-1] != "m1" || len(tr) > 2 || (len(tr) == 2 && tr[0] != "m0") {
						t.Fatalf("tried %v, want [m1] or [m0 m1]", tr)
					}
				}
			},
		},
		{
			name:    "bad response fails over",
			members: []spec{{err: fmt.Errorf("decoding: %w", ErrBadResponse)}, {}},
			check: func(t *testing.T, tried [][]string) {
				for _, tr := range tried {
					if tr[len(tr)-1] != "m1" || len(tr) > 2 {
						t.Fatalf("tried %v, want m1 to answer", tr)
					}
				}
			},
		},
		{
			name:    "attempt timeout fails over",
			members: []spec{{delay: time.Hour}, {}},
			cfg:     PoolConfig{AttemptTimeout: time.Second},
			check: func(t *testing.T, tried [][]string) {
				for _, tr := range tried {
					if tr[len(tr)-1] != "m1" || len(tr) > 2 {
						t.Fatalf("tried %v, want m1 to answer", tr)
					}
				}
			},
		},
		{
			name:    "each member once when all fail",
			members: []spec{{err: unavailable}, {err: unavailable}, {err: unavailable}},
			wantErr: ErrUnavailable,
			check: func(t *testing.T, tried [][]string) {
				for _, tr := range tried {
					s := slices.Sorted(slices.Values(tr))
					if !slices.Equal(s, []string{"m0", "m1", "m2"}) {
						t.Fatalf("tried %v, want each of m0, m1, m2 once", tr)
					}
				}
			},
		},
		{
			name:    "MaxAttempts with fewer members than attempts",
			members: []spec{{err: unavailable}, {err: unavailable}},
			cfg:     PoolConfig{MaxAttempts: 4},
			wantErr: ErrUnavailable,
			check: func(t *testing.T, tried [][]string) {
				for _, tr := range tried {
					if len(tr) != 4 || tr[0] == tr[1] {
						t.Fatalf("tried %v, want 4 attempts, the second on the other member", tr)
					}
				}
			},
		},
		{
			name:    "MaxAttempts 1 does not retry",
			members: []spec{{err: unavailable}, {err: unavailable}},
			cfg:     PoolConfig{MaxAttempts: 1},
			wantErr: ErrUnavailable,
			check: func(t *testing.T, tried [][]string) {
				for _, tr := range tried {
					if len(tr) != 1 {
						t.Fatalf("tried %v, want one attempt", tr)
					}
				}
			},
		},
		{
			name:     "deadline leaves time for retries",
			members:  []spec{{err: unavailable, delay: 2 * time.Second}, {err: unavailable, delay: 2 * time.Second}},
			deadline: 7 * time.Second,
			wantErr:  ErrUnavailable,
			check: func(t *testing.T, tried [][]string) {
				for _, tr := range tried {
					if len(tr) != 3 {
						t.Fatalf("tried %v, want 3 attempts of 2s within 7s", tr)
					}
				}
			},
		},
		{
			name:     "deadline too close for a retry",
			members:  []spec{{err: unavailable, delay: 2 * time.Second}, {err: unavailable, delay: 2 * time.Second}},
			deadline: 3 * time.Second,
			wantErr:  ErrUnavailable,
			check: func(t *testing.T, tried [][]string) {
				for _, tr := range tried {
					if len(tr) != 1 {
						t.Fatalf("tried %v, want no retry with 1s left after a 2s failure", tr)
					}
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var fs []*fakeEndpoint
				for i, s := range tt.members {
					f := fake(fmt.Sprintf("m%d", i))
					f.err, f.delay = s.err, s.delay
					fs = append(fs, f)
				}
				p := newTestPool(t, quiet(tt.cfg), nil, fs...)
				defer mustClose(t, p)
				var tried [][]string
				for range 30 {
					ctx, cancel := context.WithCancel(t.Context())
					if tt.deadline > 0 {
						ctx, cancel = context.WithTimeout(t.Context(), tt.deadline)
					}
					var names []string
					err := p.Do(ctx, func(ctx context.Context, e *fakeEndpoint) error {
						names = append(names, e.name)
						return e.Call(ctx)
					})
					cancel()
					if (tt.wantErr == nil) != (err == nil) || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
						t.Fatalf("Do: %v, want %v", err, tt.wantErr)
					}
					if err != nil && !strings.HasPrefix(err.Error(), names[len(names)-1]+": ") {
						t.Fatalf("Do: %q, want it to start with the last member tried, %s", err, names[len(names)-1])
					}
					tried = append(tried, names)
				}
				tt.check(t, tried)
			})
		})
	}
}

// TestRetryBudgetCapsRetries: under sustained failure retries add about RetryBudget to the load,
// plus the floor; a quiet pool retries every call thanks to the floor.
func TestRetryBudgetCapsRetries(t *testing.T) {
	tests := []struct {
		name           string
		cfg            PoolConfig
		calls          int
		every          time.Duration
		minRatio, maxR float64 // extra attempts per call
	}{
		{"10% under load", PoolConfig{MinRetriesPerSecond: -1}, 20000, time.Millisecond, 0.085, 0.1},
		{"20% with the floor", PoolConfig{RetryBudget: 0.2, MinRetriesPerSecond: 5}, 20000, time.Millisecond, 0.2, 0.21},
		{"floor lets a quiet pool retry", PoolConfig{}, 30, time.Second, 2, 2},
		{"no budget", PoolConfig{RetryBudget: -1, MinRetriesPerSecond: -1}, 1000, time.Millisecond, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				a, b := fake("a"), fake("b")
				a.err, b.err = ErrUnavailable, ErrUnavailable
				p := newTestPool(t, quiet(tt.cfg), nil, a, b)
				defer mustClose(t, p)
				for range tt.calls {
					if err := p.Do(t.Context(), callFake); !errors.Is(err, ErrUnavailable) {
						t.Fatal(err)
					}
					time.Sleep(tt.every)
				}
				extra := float64(a.calls.Load()+b.calls.Load()-int64(tt.calls)) / float64(tt.calls)
				t.Logf("%d calls, %.4f extra attempts per call", tt.calls, extra)
				if extra < tt.minRatio || extra > tt.maxR+0.001 {
					t.Fatalf("%.4f extra attempts per call, want within [%v, %v]", extra, tt.minRatio, tt.maxR)
				}
			})
		})
	}
}

// TestHedging: a call that has not answered after HedgeDelay is sent to another member; the
// first success wins, the loser is cancelled without counting against its breaker, and no
// goroutine outlives Close.
func TestHedging(t *testing.T) {
	tests := []struct {
		name     string
		cfg      PoolConfig
		members  func() []*fakeEndpoint
		wantTook func(first string) time.Duration
		wantWin  string
		wantCall int // attempts per call
	}{
		{
			name: "hedge wins over a slow member",
			cfg:  PoolConfig{HedgeDelay: 100 * time.Millisecond, MaxAttempts: 2},
			members: func() []*fakeEndpoint {
				slow, fast := fake("slow"), fake("fast")
				slow.delay, fast.delay = 5*time.Second, 10*time.Millisecond
				return []*fakeEndpoint{slow, fast}
			},
			wantTook: func(first string) time.Duration {
				if first == "slow" {
					return 110 * time.Millisecond
				}
				return 10 * time.Millisecond
			},
			wantWin: "fast",
		},
		{
			name: "failure before the delay retries at once",
			cfg:  PoolConfig{HedgeDelay: time.Second, MaxAttempts: 2},
			members: func() []*fakeEndpoint {
				bad, good := fake("bad"), fake("good")
				bad.err, bad.delay, good.delay = ErrUnavailable, 10*time.Millisecond, 10*time.Millisecond
				return []*fakeEndpoint{bad, good}
			},
			wantTook: func(first string) time.Duration {
				if first == "bad" {
					return 20 * time.Millisecond
				}
				return 10 * time.Millisecond
			},
			wantWin: "good",
		},
		{
			name: "hedges every delay up to MaxAttempts",
			cfg:  PoolConfig{HedgeDelay: 100 * time.Millisecond, MaxAttempts: 3},
			members: func() []*fakeEndpoint {
				fs := []*fakeEndpoint{fake("x"), fake("y"), fake("z")}
				for _, f := range fs {
					f.delay = time.Second
				}
				return fs
			},
			wantTook: func(string) time.Duration { return time.Second },
			wantCall: 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fs := tt.members()
				obs := &countObserver{}
				cfg := tt.cfg
				cfg.ConsecutiveFailures, cfg.HealthInterval = 1, -1 // one counted failure opens a breaker
				p := newTestPool(t, cfg, []PoolOption{WithObserver(obs)}, fs...)
				defer mustClose(t, p)
				firsts := map[string]int{}
				for range 20 {
					var mu sync.Mutex
					var order []string
					start := time.Now()
					got, err := Call(t.Context(), p, func(ctx context.Context, e *fakeEndpoint) (string, error) {
						mu.Lock()
						order = append(order, e.name)
						mu.Unlock()
						return e.name, e.Call(ctx)
					})
					took := time.Since(start)
					mu.Lock()
					first, n := order[0], len(order)
					mu.Unlock()
					firsts[first]++
					if err != nil {
						t.Fatalf("Call: %v", err)
					}
					if tt.wantWin != "" && got != tt.wantWin {
						t.Fatalf("Call answered by %s, want %s", got, tt.wantWin)
					}
					if want := tt.wantTook(first); took != want {
						t.Fatalf("Call (first on %s) took %v, want %v", first, took, want)
					}
					if tt.wantCall > 0 && n != tt.wantCall {
						t.Fatalf("Call made %d attempts, want %d", n, tt.wantCall)
					}
					synctest.Wait() // losers see their cancellation and return
					for _, f := range fs {
						if f.returned.Load() != f.calls.Load() {
							t.Fatalf("%s: %d of %d calls still running after Call returned and losers were cancelled",
								f.name, f.calls.Load()-f.returned.Load(), f.calls.Load())
						}
					}
				}
				if len(firsts) < 2 {
					t.Fatalf("first attempts all went to %v; the test needs both orders", firsts)
				}
				if obs.hedges.Load()+obs.retries.Load() == 0 {
					t.Fatal("no hedge or retry was counted")
				}
				for _, s := range p.States() {
					if strings.HasPrefix(tt.name, "hedge") && s.Breaker != BreakerClosed {
						t.Errorf("%s: breaker %v after losing hedges, want closed (a cancelled loser is no failure)", s.Name, s.Breaker)
					}
				}
			})
		})
	}
}

// TestHedgeLoserIgnoringCtx: Do returns when the hedge wins even if the loser ignores its ctx;
// Close waits for the loser.
func TestHedgeLoserIgnoringCtx(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		slow, fast := fake("slow"), fake("fast")
		slow.delay, slow.ignoreCtx = 5*time.Second, true
		fast.delay = 10 * time.Millisecond
		p := newTestPool(t, PoolConfig{HedgeDelay: 100 * time.Millisecond, HealthInterval: -1}, nil, slow, fast)
		var slowStarted time.Time
		for i := 0; slow.calls.Load() == 0; i++ {
			if i == 50 {
				t.Fatal("slow never got a first attempt")
			}
			start := time.Now()
			if err := p.Do(t.Context(), callFake); err != nil {
				t.Fatal(err)
			}
			if slow.calls.Load() > 0 {
				slowStarted = start
				if took := time.Since(start); took != 110*time.Millisecond {
					t.Fatalf("Do took %v, want the hedge's 110ms", took)
				}
			}
		}
		if slow.returned.Load() != 0 {
			t.Fatal("the loser returned early; the test needs it running")
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if slow.returned.Load() != 1 || time.Since(slowStarted) < 5*time.Second {
			t.Fatalf("Close returned after %v with the loser running: %d returned", time.Since(slowStarted), slow.returned.Load())
		}
		if slow.closes.Load() != 1 || fast.closes.Load() != 1 {
			t.Fatalf("closes: slow %d, fast %d, want 1 each", slow.closes.Load(), fast.closes.Load())
		}
	})
}

// TestHedgedCallerGivesUp: a hedged call returns when the caller's deadline passes, even if its
// attempts ignore their ctx; Close waits for them, and they do not count against the breakers.
func TestHedgedCallerGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := fake("a"), fake("b")
		for _, f := range []*fakeEndpoint{a, b} {
			f.delay, f.ignoreCtx, f.err = 5*time.Second, true, ErrUnavailable
		}
		p := newTestPool(t, PoolConfig{HedgeDelay: 100 * time.Millisecond, ConsecutiveFailures: 1, HealthInterval: -1}, nil, a, b)
		start := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		err := p.Do(ctx, callFake)
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != time.Second {
			t.Fatalf("Do: %v after %v, want DeadlineExceeded after 1s", err, time.Since(start))
		}
		if a.calls.Load() != 1 || b.calls.Load() != 1 {
			t.Fatalf("calls: a %d, b %d, want a first attempt and a hedge", a.calls.Load(), b.calls.Load())
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if time.Since(start) < 5*time.Second || a.returned.Load() != 1 || b.returned.Load() != 1 {
			t.Fatalf("Close returned after %v with attempts running", time.Since(start))
		}
	})
}

// TestAllOpenFailsFast: with every breaker open, Do fails at once, without calling fn, with
// ErrUnavailable naming each member and why.
func TestAllOpenFailsFast(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := fake("10.0.0.1:8001"), fake("10.0.0.2:8001")
		a.err, b.err = ErrUnavailable, ErrUnavailable
		a.readyErr = errors.New("connection refused")
		p := newTestPool(t, PoolConfig{ConsecutiveFailures: 1, OpenTimeout: time.Minute, HealthInterval: time.Second}, nil, a, b)
		defer mustClose(t, p)
		synctest.Wait()
		if err := p.Ready(t.Context()); err != nil {
			t.Fatalf("Ready with b up: %v", err)
		}
		_ = p.Do(t.Context(), callFake) // b fails, then a (panic mode): both open
		for _, s := range p.States() {
			if s.Breaker != BreakerOpen {
				t.Fatalf("%s: breaker %v, want open", s.Name, s.Breaker)
			}
		}
		calls := a.calls.Load() + b.calls.Load()
		start := time.Now()
		err := p.Do(t.Context(), callFake)
		if !errors.Is(err, ErrUnavailable) || time.Since(start) != 0 || a.calls.Load()+b.calls.Load() != calls {
			t.Fatalf("Do: %v after %v and %d calls, want ErrUnavailable at once without a call", err, time.Since(start), a.calls.Load()+b.calls.Load()-calls)
		}
		for _, want := range []string{"10.0.0.1:8001: breaker open (last failure: backend unavailable), health check failed: connection refused",
			"10.0.0.2:8001: breaker open (last failure: backend unavailable)"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Do: %q, want it to say %q", err, want)
			}
		}
		if err := p.Ready(t.Context()); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Ready with every breaker open: %v, want ErrUnavailable", err)
		}
	})
}

// TestUpdate: a reload keeps the breaker and health of kept members, closes removed (or
// replaced) endpoints once their calls end, and checks added members at once.
func TestUpdate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b, c := fake("a"), fake("b"), fake("c")
		a.err = ErrUnavailable
		cfg := PoolConfig{Name: "p", ConsecutiveFailures: 1, OpenTimeout: time.Minute, HealthInterval: time.Hour, MaxAttempts: 1}
		obs := &countObserver{}
		p := newTestPool(t, cfg, []PoolOption{WithObserver(obs)}, a, b)
		for i := 0; a.calls.Load() == 0; i++ {
			if i == 50 {
				t.Fatal("a never called")
			}
			_ = p.Do(t.Context(), callFake)
		}
		if s := stateOf(t, p, "a"); s.Breaker != BreakerOpen {
			t.Fatalf("a: breaker %v, want open", s.Breaker)
		}
		gate := make(chan struct{})
		b.set(func(f *fakeEndpoint) { f.gate = gate })
		done := make(chan error, 1)
		go func() { done <- p.Do(t.Context(), callFake) }()
		synctest.Wait()
		if stateOf(t, p, "b").Outstanding != 1 {
			t.Fatal("the call did not go to b")
		}

		// Refused updates change nothing.
		for _, bad := range []struct {
			cfg     PoolConfig
			members []Member[*fakeEndpoint]
		}{
			{PoolConfig{Name: "other"}, membersOf(a)},
			{cfg, membersOf(a, a)},
			{PoolConfig{Name: "p", MaxAttempts: -1}, membersOf(a)},
		} {
			if err := p.Update(bad.cfg, bad.members); err == nil {
				t.Fatalf("Update(%+v, %d members) succeeded", bad.cfg, len(bad.members))
			}
		}
		if got := len(p.States()); got != 2 {
			t.Fatalf("%d members after refused updates, want 2", got)
		}

		if err := p.Update(cfg, membersOf(a, c)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if s := stateOf(t, p, "a"); s.Breaker != BreakerOpen {
			t.Fatalf("a: breaker %v after Update, want still open", s.Breaker)
		}
		if c.readies.Load() != 1 || stateOf(t, p, "c").Health != HealthUp {
			t.Fatalf("c: %d checks, health %v, want checked at once", c.readies.Load(), stateOf(t, p, "c").Health)
		}
		if names := len(p.States()); names != 2 {
			t.Fatalf("%d members, want a and c", names)
		}
		if b.closes.Load() != 0 {
			t.Fatal("b closed while a call ran on it")
		}
		if obs.removed.Load() != 1 {
			t.Fatalf("observer told of %d removals, want 1", obs.removed.Load())
		}
		close(gate)
		if err := <-done; err != nil {
			t.Fatalf("the call on b: %v", err)
		}
		synctest.Wait()
		if b.closes.Load() != 1 {
			t.Fatalf("b closed %d times after its call ended, want 1", b.closes.Load())
		}

		// A new endpoint under a kept name replaces the old one, keeping the breaker.
		a2 := fake("a")
		if err := p.Update(cfg, membersOf(a2, c)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if a.closes.Load() != 1 || a2.closes.Load() != 0 {
			t.Fatalf("closes: old a %d, new a %d, want 1 and 0", a.closes.Load(), a2.closes.Load())
		}
		if s := stateOf(t, p, "a"); s.Breaker != BreakerOpen {
			t.Fatalf("a: breaker %v after its endpoint changed, want still open", s.Breaker)
		}
		// The same endpoint again is kept, not closed.
		if err := p.Update(cfg, membersOf(a2, c)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if a2.closes.Load() != 0 || c.closes.Load() != 0 {
			t.Fatal("Update closed an endpoint it kept")
		}
		// A new OpenTimeout cannot be applied to a running breaker: it starts closed.
		cfg2 := cfg
		cfg2.OpenTimeout = 2 * time.Minute
		if err := p.Update(cfg2, membersOf(a2, c)); err != nil {
			t.Fatal(err)
		}
		if s := stateOf(t, p, "a"); s.Breaker != BreakerClosed {
			t.Fatalf("a: breaker %v after OpenTimeout changed, want a fresh closed one", s.Breaker)
		}

		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		for _, f := range []*fakeEndpoint{a, b, a2, c} {
			if f.closes.Load() != 1 {
				t.Errorf("%s (%p) closed %d times, want 1", f.name, f, f.closes.Load())
			}
		}
	})
}

// hookCtx runs hook the first time Err is called: Do calls it right after it has loaded the
// members, which lets a test run an Update at that very point.
type hookCtx struct {
	context.Context
	once sync.Once
	hook func()
}

func (c *hookCtx) Err() error {
	c.once.Do(c.hook)
	return c.Context.Err()
}

// TestDoAfterItsMembersWereRemoved: a call whose members are all removed by an Update between its
// loading them and its first attempt starts over on the new members instead of failing.
func TestDoAfterItsMembersWereRemoved(t *testing.T) {
	for _, hedge := range []time.Duration{0, time.Second} {
		t.Run(fmt.Sprintf("HedgeDelay=%v", hedge), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := PoolConfig{Name: "test", HealthInterval: -1, HedgeDelay: hedge}
				a, b := fake("a"), fake("b")
				p := newTestPool(t, cfg, nil, a)
				defer mustClose(t, p)
				ctx := &hookCtx{Context: t.Context(), hook: func() {
					if err := p.Update(cfg, membersOf(b)); err != nil {
						t.Error(err)
					}
					synctest.Wait() // a is closed
				}}
				if err := p.Do(ctx, callFake); err != nil {
					t.Fatalf("Do: %v", err)
				}
				if a.closes.Load() != 1 || a.calls.Load() != 0 || b.calls.Load() != 1 {
					t.Fatalf("a: %d closes, %d calls; b: %d calls; want the call on b", a.closes.Load(), a.calls.Load(), b.calls.Load())
				}
			})
		})
	}
}

// TestConcurrentDoDuringUpdate runs calls while the members change under them (run with -race):
// no call fails and every endpoint is closed exactly once.
func TestConcurrentDoDuringUpdate(t *testing.T) {
	var all []*fakeEndpoint
	gen := func(names ...string) []Member[*fakeEndpoint] {
		var fs []*fakeEndpoint
		for _, n := range names {
			f := fake(n)
			fs = append(fs, f)
			all = append(all, f)
		}
		return membersOf(fs...)
	}
	cfg := PoolConfig{Name: "p", HealthInterval: time.Millisecond, HedgeDelay: 50 * time.Microsecond}
	p, err := NewPool(cfg, gen("x", "y"), WithObserver(NewPoolMetrics(prometheus.NewRegistry())))
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var calls atomic.Int64
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := p.Do(t.Context(), callFake); err != nil {
					t.Error(err)
					return
				}
				calls.Add(1)
			}
		})
	}
	sets := [][]string{{"y", "z"}, {"x", "y", "z"}, {"z"}, {"x", "y"}}
	for i := range 200 {
		c := cfg
		c.MaxAttempts = 1 + i%3
		if err := p.Update(c, gen(sets[i%len(sets)]...)); err != nil {
			t.Fatal(err)
		}
		_ = p.States()
		_ = p.Ready(t.Context())
		time.Sleep(100 * time.Microsecond)
	}
	close(stop)
	wg.Wait()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if calls.Load() == 0 {
		t.Fatal("no call ran")
	}
	for _, f := range all {
		if f.closes.Load() != 1 {
			t.Errorf("%s (%p) closed %d times, want 1", f.name, f, f.closes.Load())
		}
	}
}

func TestClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := fake("a"), fake("b")
		b.closeErr = errors.New("conn already gone")
		p := newTestPool(t, PoolConfig{}, nil, a, b)
		err := p.Close()
		if err == nil || !strings.Contains(err.Error(), "closing b: conn already gone") {
			t.Fatalf("Close: %v, want b's close error", err)
		}
		if a.closes.Load() != 1 || b.closes.Load() != 1 {
			t.Fatalf("closes: a %d, b %d", a.closes.Load(), b.closes.Load())
		}
		if err := p.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if err := p.Do(t.Context(), callFake); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Do after Close: %v", err)
		}
		if err := p.Ready(t.Context()); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Ready after Close: %v", err)
		}
		if err := p.Update(PoolConfig{Name: "test"}, membersOf(fake("c"))); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Update after Close: %v", err)
		}
		if a.calls.Load() != 0 {
			t.Fatal("a called after Close")
		}
	})
}

// metricValue returns the value of the series of family name whose labels include want, and
// whether there is one.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue metrics
				}
			}
			return value(m), true
		}
	}
	return 0, false
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return math.NaN()
}

func TestPoolMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewRegistry()
		metrics := NewPoolMetrics(reg)
		if again := NewPoolMetrics(reg); again.requests != metrics.requests {
			t.Fatal("a second NewPoolMetrics on the same registry made new collectors")
		}
		a, b := fake("a"), fake("b")
		a.err = fmt.Errorf("decoding: %w", ErrBadResponse)
		a.readyErr = errors.New("refused")
		cfg := PoolConfig{Name: "m", ConsecutiveFailures: 2, OpenTimeout: time.Hour, HealthInterval: time.Hour}
		p := newTestPool(t, cfg, []PoolOption{WithObserver(metrics)}, a, b)
		defer mustClose(t, p)
		synctest.Wait() // a is down after its first check, so calls go to b...
		for range 10 {
			if err := p.Do(t.Context(), callFake); err != nil {
				t.Fatal(err)
			}
		}
		a.set(func(f *fakeEndpoint) { f.readyErr = nil })
		if err := p.Update(cfg, membersOf(a, b)); err != nil { // ...until a recheck
			t.Fatal(err)
		}
		synctest.Wait()
		for stateOf(t, p, "a").Breaker != BreakerOpen {
			if err := p.Do(t.Context(), callFake); err != nil {
				t.Fatal(err)
			}
		}
		ea := map[string]string{"pool": "m", "endpoint": "a"}
		eb := map[string]string{"pool": "m", "endpoint": "b"}
		checks := []struct {
			name   string
			labels map[string]string
			want   float64
		}{
			{"sidecar_backend_endpoint_requests_total", ea, 2},
			{"sidecar_backend_endpoint_requests_total", eb, float64(b.calls.Load())},
			{"sidecar_backend_endpoint_errors_total", map[string]string{"endpoint": "a", "code": "DATA_LOSS"}, 2},
			{"sidecar_backend_endpoint_retries_total", eb, 2},
			{"sidecar_backend_endpoint_retries_total", ea, 0},
			{"sidecar_backend_endpoint_request_duration_seconds", ea, 2},
			{"sidecar_backend_endpoint_outstanding_requests", eb, 0},
			{"sidecar_backend_endpoint_breaker_state", ea, 2},
			{"sidecar_backend_endpoint_breaker_state", eb, 0},
			{"sidecar_backend_endpoint_healthy", ea, 1},
			{"sidecar_backend_endpoint_healthy", eb, 1},
		}
		for _, c := range checks {
			got, ok := metricValue(t, reg, c.name, c.labels)
			if !ok || got != c.want {
				t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, got, ok, c.want)
			}
		}
		if err := p.Update(cfg, membersOf(b)); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"sidecar_backend_endpoint_requests_total", "sidecar_backend_endpoint_errors_total",
			"sidecar_backend_endpoint_breaker_state", "sidecar_backend_endpoint_healthy"} {
			if _, ok := metricValue(t, reg, name, ea); ok {
				t.Errorf("%s still has a series for the removed endpoint a", name)
			}
			if _, ok := metricValue(t, reg, name, eb); !ok && name != "sidecar_backend_endpoint_errors_total" {
				t.Errorf("%s lost b's series", name)
			}
		}
	})
}

func TestErrorCode(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{nil, "OK"},
		{fmt.Errorf("x: %w", ErrInvalidInput), "INVALID_ARGUMENT"},
		{fmt.Errorf("x: %w", ErrUnavailable), "UNAVAILABLE"},
		{fmt.Errorf("x: %w", ErrBadResponse), "DATA_LOSS"},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), "DEADLINE_EXCEEDED"},
		{context.Canceled, "CANCELED"},
		{status.Error(codes.ResourceExhausted, "busy"), "RESOURCE_EXHAUSTED"},
		{fmt.Errorf("upstream: %w", status.Error(codes.NotFound, "no model")), "NOT_FOUND"},
		{errors.New("boom"), "UNKNOWN"},
	}
	for _, tt := range tests {
		if got := ErrorCode(tt.err); got != tt.want {
			t.Errorf("ErrorCode(%v) = %s, want %s", tt.err, got, tt.want)
		}
	}
}

// benchEndpoint answers at once.
type benchEndpoint struct{}

func (benchEndpoint) Ready(context.Context) error { return nil }
func (benchEndpoint) Close() error                { return nil }

func BenchmarkPoolDo(b *testing.B) {
	ms := make([]Member[benchEndpoint], 4)
	for i := range ms {
		ms[i] = Member[benchEndpoint]{Name: fmt.Sprintf("10.0.0.%d:8001", i+1)}
	}
	for _, bc := range []struct {
		name string
		opts []PoolOption
	}{
		{"no observer", nil},
		{"prometheus", []PoolOption{WithObserver(NewPoolMetrics(prometheus.NewRegistry()))}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p, err := NewPool(PoolConfig{Name: "bench", HealthInterval: -1}, ms, bc.opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			ctx := context.Background()
			fn := func(context.Context, benchEndpoint) error { return nil }
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := p.Do(ctx, fn); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// TestPoolMetricsSurviveASuccessorPool: a reload that builds a new pool for the same model and
// endpoints, then closes the old one, keeps the endpoints' series (they are the new pool's now).
func TestPoolMetricsSurviveASuccessorPool(t *testing.T) {
	reg := prometheus.NewRegistry()
	metrics := NewPoolMetrics(reg)
	cfg := PoolConfig{Name: "m", HealthInterval: -1}
	old, err := NewPool(cfg, membersOf(fake("a")), WithObserver(metrics))
	if err != nil {
		t.Fatal(err)
	}
	successor, err := NewPool(cfg, membersOf(fake("a")), WithObserver(metrics))
	if err != nil {
		t.Fatal(err)
	}
	mustClose(t, old)
	for range 5 {
		if err := successor.Do(t.Context(), callFake); err != nil {
			t.Fatal(err)
		}
	}
	if got := testutil.ToFloat64(metrics.requests.WithLabelValues("m", "a")); got != 5 {
		t.Errorf("requests of the successor pool's endpoint: %v, want 5", got)
	}
	mustClose(t, successor)
	if n := testutil.CollectAndCount(metrics.requests); n != 0 {
		t.Errorf("%d requests series left after both pools closed", n)
	}
}
