package bench

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// callFunc makes one call as worker w (0 <= w < workers). Each worker calls it from its own
// goroutine, one call at a time, so per-worker state needs no lock.
type callFunc func(ctx context.Context, w int) error

// phase is a load run's timing: calls during Warmup are made but not counted; then the window of
// Duration is measured.
type phase struct {
	Warmup, Duration time.Duration
}

// loadResult is what one load run measured in its window.
type loadResult struct {
	// OK counts the calls that started in the window and succeeded; their latencies are in the
	// recorder. Errors counts those that failed; FirstErr is one of them.
	OK, Errors int64
	FirstErr   error
	// Dropped counts open-loop arrivals in the window that found every worker busy and the queue
	// full; they were not sent.
	Dropped int64
	// Elapsed runs from the window's start to the end of the last counted call.
	Elapsed time.Duration
}

// Rate is the completed calls per second.
func (r loadResult) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.OK) / r.Elapsed.Seconds()
}

// maxConsecutiveErrors stops a worker whose calls keep failing (a dead server answers at once, and
// there is nothing to learn from spinning).
const maxConsecutiveErrors = 100

// errCounter collects the errors of the window.
type errCounter struct {
	n atomic.Int64
	// mu guards first.
	mu    sync.Mutex
	first error
}

func (e *errCounter) add(err error) {
	e.n.Add(1)
	e.mu.Lock()
	if e.first == nil {
		e.first = err
	}
	e.mu.Unlock()
}

// closedLoop runs workers goroutines that each call as fast as their calls return, for
// p.Warmup+p.Duration, and records the latency of every call that starts in the window. atStart is
// called once when the window opens (to read CPU counters); by the time closedLoop returns every
// call has returned.
func closedLoop(ctx context.Context, workers int, p phase, call callFunc, rec *recorder, atStart func()) loadResult {
	rec.reset()
	t0 := time.Now()
	start := t0.Add(p.Warmup)
	end := start.Add(p.Duration)
	var errs errCounter
	lastEnd := make([]time.Time, workers) // per worker; read after wg.Wait
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			failing := 0
			for ctx.Err() == nil {
				s := time.Now()
				if !s.Before(end) {
					return
				}
				err := call(ctx, w)
				e := time.Now()
				if err != nil {
					if !s.Before(start) {
						errs.add(err)
					}
					if failing++; failing >= maxConsecutiveErrors {
						return
					}
					continue
				}
				failing = 0
				if !s.Before(start) {
					rec.add(e.Sub(s))
					lastEnd[w] = e
				}
			}
		})
	}
	sleepUntil(ctx, start)
	atStart()
	wg.Wait()
	return result(start, lastEnd, rec, &errs, 0)
}

// openLoop sends calls at a constant arrival rate (calls per second) for p.Warmup+p.Duration, to a
// pool of workers goroutines; an arrival that finds every worker busy waits in a queue of workers
// slots, and is dropped (counted, not sent) when that is full too. The number of arrivals is
// rate x (Warmup+Duration), so the run is bounded in count as well as time. Latency runs from the
// moment an arrival is queued, so time spent waiting for a worker counts (no coordinated
// omission). Go's timers wake the dispatcher about every millisecond when the process is idle;
// arrivals due in between are sent together when it wakes, and their latency starts then.
func openLoop(ctx context.Context, workers int, rate float64, p phase, call callFunc, rec *recorder, atStart func()) loadResult {
	rec.reset()
	t0 := time.Now()
	start := t0.Add(p.Warmup)
	total := int64(rate * (p.Warmup + p.Duration).Seconds())
	jobs := make(chan time.Time, workers)
	var errs errCounter
	lastEnd := make([]time.Time, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for queued := range jobs {
				err := call(ctx, w)
				e := time.Now()
				if queued.Before(start) {
					continue
				}
				if err != nil {
					errs.add(err)
					continue
				}
				rec.add(e.Sub(queued))
				lastEnd[w] = e
			}
		})
	}
	var dropped int64
	started := false
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for i := int64(0); i < total && ctx.Err() == nil; i++ {
		due := t0.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if wait := time.Until(due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
			}
		}
		now := time.Now()
		if !started && !now.Before(start) {
			started = true
			atStart()
		}
		select {
		case jobs <- now:
		default:
			if started {
				dropped++
			}
		}
	}
	timer.Stop()
	close(jobs)
	if !started {
		atStart()
	}
	wg.Wait()
	return result(start, lastEnd, rec, &errs, dropped)
}

func result(start time.Time, lastEnd []time.Time, rec *recorder, errs *errCounter, dropped int64) loadResult {
	r := loadResult{OK: rec.count(), Errors: errs.n.Load(), FirstErr: errs.first, Dropped: dropped}
	for _, e := range lastEnd {
		if d := e.Sub(start); d > r.Elapsed {
			r.Elapsed = d
		}
	}
	return r
}

// sleepUntil returns at t or when ctx is done.
func sleepUntil(ctx context.Context, t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
}
