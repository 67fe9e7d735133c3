package backends

import (
	"context"
	"errors"
	"fmt"
	"time"
)

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
