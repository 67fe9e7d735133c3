package proxy

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/novacron/sidecar/batcher"
)

// Shadows. A shadowed call is queued, after the caller has its answer, for a pool of shadow
// workers: each runs the call on the shadow target, detached from the caller
// (context.WithoutCancel, low priority, its own timeout), and hands both answers to the
// RouteObserver, which compares them. The queue is bounded: a call that finds it full is dropped
// and counted, so a slow or failing shadow never slows or fails the primary.

// Defaults of the shadow workers, applied by New to zero Config fields.
const (
	DefaultShadowQueue   = 1024
	DefaultShadowWorkers = 4
	DefaultShadowTimeout = 2 * time.Second
)

// RouteObserver sees a route's calls: which target served each and how, and each shadowed call's
// two answers. Package proxy/migrate's Recorder is one: it compares the answers, counts, and
// drives migrations.
type RouteObserver interface {
	// Served is called on the caller's goroutine after each call a route chose the target of
	// (not those that named their model or were forced), with the serving target, its latency
	// and its error; not for a call that failed by its caller's doing (its context ended, or
	// bad input: see callersFault). It must not block.
	Served(route, target string, latency time.Duration, err error)
	// Shadowed is called on a shadow worker with the outcome of one shadowed call. The worker
	// takes the next call when it returns, so it should be quick; o is the observer's to keep.
	Shadowed(o *ShadowOutcome)
	// ShadowDropped is called on the caller's goroutine when a shadowed call found the queue
	// full (or the Service closing) and was not run. It must not block.
	ShadowDropped(route, primary, shadow string)
}

// ShadowOutcome is one shadowed call.
type ShadowOutcome struct {
	// Route is the route's name; Task its task.
	Route, Task string
	// Primary served the caller; Shadow is the shadow target.
	Primary, Shadow string
	// Request is the call: a *aipb.BandwidthBatchRequest for forecasts (one VM or a batch's VMs
	// served by the same target), a *aipb.AnomalyRequest or a *aipb.PlacementRequest.
	Request proto.Message
	// PrimaryAnswer is the caller's answer (a *aipb.BandwidthBatchResponse for forecasts); Answer
	// the shadow's, nil when Err is set.
	PrimaryAnswer, Answer proto.Message
	// PrimaryLatency and Latency are the two targets' times for the call.
	PrimaryLatency, Latency time.Duration
	// Err is the shadow's error; errors.Is(Err, context.DeadlineExceeded) when it ran out of
	// time (Config.ShadowTimeout).
	Err error
}

// shadowJob is one queued shadowed call. Its target is resolved by name when it runs, in the
// snapshot of that time, so that a call queued before a reload runs on the target that replaced
// its own (whose batcher the reload closed).
type shadowJob struct {
	ctx context.Context // detached from the caller
	o   *ShadowOutcome  // Answer, Latency and Err are filled in by the worker; o.Shadow names the target
	run func(ctx context.Context, t Target) (proto.Message, error)
}

// shadower is the shadow queue and its workers. Its workers stop at close, leaving the calls
// still queued unrun.
type shadower struct {
	svc     *Service
	jobs    chan shadowJob
	stop    chan struct{}
	wg      sync.WaitGroup
	timeout time.Duration
	obs     RouteObserver
	once    sync.Once
}

// errGone: a shadowed call's target left in a reload before the call ran.
var errGone = errors.New("the shadow target is not loaded any more")

func newShadower(svc *Service, queue, workers int, timeout time.Duration, obs RouteObserver) *shadower {
	sh := &shadower{svc: svc, jobs: make(chan shadowJob, queue), stop: make(chan struct{}), timeout: timeout, obs: obs}
	for range workers {
		sh.wg.Go(sh.work)
	}
	return sh
}

func (sh *shadower) work() {
	for {
		select {
		case <-sh.stop:
			return
		case j := <-sh.jobs:
			sh.runJob(j)
		}
	}
}

func (sh *shadower) runJob(j shadowJob) {
	ctx, cancel := context.WithTimeout(j.ctx, sh.timeout)
	start := time.Now()
	ans, err := recoveredMsg(func() (proto.Message, error) {
		return acrossSwap(sh.svc, func() (proto.Message, error) {
			t, ok := sh.svc.state.Load().targets[j.o.Shadow]
			if !ok {
				return nil, errGone
			}
			return j.run(ctx, t)
		})
	})
	j.o.Latency = time.Since(start)
	timedOut := ctx.Err() != nil // before cancel, which ends ctx whatever happened
	cancel()
	if errors.Is(err, errGone) {
		if sh.obs != nil { // no answer of the target's to compare: as if the queue had dropped it
			sh.obs.ShadowDropped(j.o.Route, j.o.Primary, j.o.Shadow)
		}
		return
	}
	if err != nil && timedOut && !errors.Is(err, context.DeadlineExceeded) {
		err = errors.Join(err, context.DeadlineExceeded)
	}
	j.o.Answer, j.o.Err = ans, err
	if sh.obs != nil {
		sh.obs.Shadowed(j.o)
	}
}

// recoveredMsg runs a shadow call, turning a panic into an error: a shadow never takes the
// process down.
func recoveredMsg(f func() (proto.Message, error)) (m proto.Message, err error) {
	v, err := recovered(func() (any, error) { return f() })
	m, _ = v.(proto.Message)
	return m, err
}

// enqueue queues one shadowed call for each target, or drops it (counted) when the queue is full.
func (sh *shadower) enqueue(ctx context.Context, o ShadowOutcome, targets []Target, run func(context.Context, Target) (proto.Message, error)) {
	detached := withPriority(context.WithoutCancel(ctx), "low")
	for _, t := range targets {
		oc := o
		oc.Shadow = t.Info().Name
		select {
		case <-sh.stop: // closing: nothing runs it any more
		default:
			select {
			case sh.jobs <- shadowJob{ctx: detached, o: &oc, run: run}:
				continue
			default:
			}
		}
		if sh.obs != nil {
			sh.obs.ShadowDropped(o.Route, o.Primary, oc.Shadow)
		}
	}
}

// close stops the workers once their current calls end; the calls still queued are not run, and
// are counted as dropped. (A call queued by a caller racing close may stay queued, uncounted.)
func (sh *shadower) close() {
	sh.once.Do(func() { close(sh.stop) })
	sh.wg.Wait()
	for {
		select {
		case j := <-sh.jobs:
			if sh.obs != nil {
				sh.obs.ShadowDropped(j.o.Route, j.o.Primary, j.o.Shadow)
			}
		default:
			return
		}
	}
}

// notTheTargets reports whether a call's error says nothing of the target that had it: the
// caller's doing (it cancelled; its request is bad, names nothing loaded, or reads a window its
// pushes have not filled) or a reload's (the target's batcher closed under it: acrossSwap runs
// the call again). The RouteObserver does not see such calls: a migration's error gate would
// otherwise count clients that give up against an arm. A deadline that passed counts: the target
// did not answer in time.
func notTheTargets(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, batcher.ErrClosed) {
		return true
	}
	switch Code(err) {
	case codes.InvalidArgument, codes.NotFound, codes.FailedPrecondition, codes.Canceled, codes.PermissionDenied:
		return true
	}
	return false
}

// routed runs a call on the target d chose and, when a route chose it, reports the call to the
// RouteObserver and queues it for the shadows the route draws. req is the call as a message (its
// clone, not req, reaches the shadows); msg makes the answer a message.
//
// prepare, when set, completes the clone before it is queued (a forecast's pushed windows, read
// at now, the time the call began, so that the shadow gets the window the primary read).
func routed[Q proto.Message, R any](s *Service, ctx context.Context, st *snapshot, d decision, task string, req Q,
	call func(context.Context, Target, Q) (R, error), msg func(R) proto.Message, prepare func(q Q, serve Target, shadows []Target, now time.Time)) (R, error) {
	start, now := time.Now(), s.cfg.Now()
	out, err := call(ctx, d.serve, req)
	if d.route == nil {
		return out, err
	}
	elapsed := time.Since(start)
	name := d.serve.Info().Name
	if s.cfg.Routing != nil && !notTheTargets(err) {
		s.cfg.Routing.Served(d.route.name, name, elapsed, err)
	}
	if err != nil {
		return out, err
	}
	if targets := d.route.shadows(st, name); len(targets) > 0 {
		q := proto.Clone(req).(Q)
		if prepare != nil {
			prepare(q, d.serve, targets, now)
		}
		o := ShadowOutcome{Route: d.route.name, Task: task, Primary: name, Request: q, PrimaryAnswer: proto.Clone(msg(out)), PrimaryLatency: elapsed}
		s.shadows.enqueue(ctx, o, targets, func(ctx context.Context, t Target) (proto.Message, error) {
			r, err := call(ctx, t, q)
			if err != nil {
				return nil, err
			}
			return msg(r), nil
		})
	}
	return out, nil
}
