// Package legacy holds clients of the legacy AI service the sidecar replaces, so that the sidecar
// can forward calls to it during a migration (and compare its answers with its own). Two
// transports, one contract: HTTP speaks the seed's HTTP/JSON routes (/api/v1/predict,
// /api/v1/predict/batch, /api/v1/anomaly, /api/v1/placement), GRPC the seed's
// novacron.ai.AIService. The clients are task-level: requests and responses of the seed's contract
// (package aipb), not tensors.
//
// Every answer is checked before it is returned, and a wrong one is an error wrapping
// ErrBadResponse, never a result: a body that does not decode, a batch with another number of
// results than requests, a result whose vm_id names another VM, a forecast whose length is not the
// requested horizon, a non-finite value, a confidence or anomaly score outside [0, 1], a placement
// candidate that is not among the request's available_nodes.
//
// Other errors wrap the sentinels of package backends:
//
//   - backends.ErrInvalidInput when the upstream's own checks rejected the request's data: HTTP
//     400, 413 and 422; gRPC INVALID_ARGUMENT and OUT_OF_RANGE. The upstream's message is kept in
//     the error's text.
//   - backends.ErrUnavailable when it could not answer: connection refused or reset, HTTP 5xx and
//     the other 4xx (404, 405, 401, 408, 429, ...: a misconfigured or overloaded endpoint, not the
//     caller's input), every other gRPC code (UNAVAILABLE, RESOURCE_EXHAUSTED, NOT_FOUND,
//     PERMISSION_DENIED, INTERNAL, ...), the call's own Timeout, a closed client.
//   - When the caller's ctx ends before the answer, the error wraps ctx.Err() (so errors.Is finds
//     context.DeadlineExceeded or context.Canceled) and neither sentinel. So does an upstream's
//     gRPC DEADLINE_EXCEEDED or HTTP 504 that comes within 50ms of the caller's deadline (the
//     upstream is told it: grpc-timeout, X-Request-Timeout); one within 50ms of the call's own
//     Timeout is backends.ErrUnavailable, like any other 5xx.
//
// Each error's text names the endpoint, the route or RPC and, for a bad response, the field:
//
//	legacy http://127.0.0.1:8080 POST /api/v1/predict/batch: response results[2].vm_id: "vm-7", want "vm-3" (the request's): bad response from upstream
package legacy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/novacron/sidecar/backends"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// Client is one legacy AI service endpoint. All methods are safe for concurrent use by any
// goroutine; each call blocks until the upstream answers, the call's timeout passes or ctx ends.
type Client interface {
	// PredictBandwidth forecasts each request; answer i belongs to reqs[i] (checked: count, vm_id
	// when the upstream echoes it, horizon length, finite values, confidence in [0, 1]). No request
	// may be nil. Either every request is answered or the call fails as a whole. An empty reqs
	// returns an empty slice and no error, without calling the upstream.
	PredictBandwidth(ctx context.Context, reqs []*aipb.BandwidthRequest) ([]*aipb.BandwidthResponse, error)
	// DetectAnomaly scores one VM's current metrics (checked: score finite and in [0, 1]).
	DetectAnomaly(ctx context.Context, req *aipb.AnomalyRequest) (*aipb.AnomalyResponse, error)
	// OptimizePlacement ranks the request's available nodes for a workload (checked: every candidate
	// names a distinct node of req.available_nodes, finite scores, overall_confidence in [0, 1]).
	OptimizePlacement(ctx context.Context, req *aipb.PlacementRequest) (*aipb.PlacementResponse, error)
	// Ready actively checks the upstream: nil when it answers its health check, else an error
	// wrapping backends.ErrUnavailable (or ctx's error).
	Ready(ctx context.Context) error
	// Close waits for the calls in flight to return (each is bounded by its timeout), then releases
	// the connections. Calls after Close fail at once with backends.ErrUnavailable. Close is
	// idempotent; later calls return nil.
	Close() error
}

// ErrBadResponse is backends.ErrBadResponse: the upstream answered, but with something that is not a valid answer to the
// request (see the package doc); the answer is never returned.
var ErrBadResponse = backends.ErrBadResponse

// errClosed is the reason of calls after Close.
var errClosed = errors.New("client is closed")

// errCallTimeout is the cause of a call's context when the client's own Timeout ended it.
var errCallTimeout = errors.New("call timeout")

// deadlineSlack is how much earlier than our own timer an upstream that was told the deadline
// (grpc-timeout, X-Request-Timeout) may give up, through clock skew and transit.
const deadlineSlack = 50 * time.Millisecond

// deadlineError attributes an upstream's DEADLINE_EXCEEDED (gRPC) or 504 (HTTP): to the caller
// (wrapping context.DeadlineExceeded) when ctx's deadline governed the call and is due within
// deadlineSlack; to the call's own Timeout (backends.ErrUnavailable) when that is due; else
// neither (nil), and the answer is an ordinary upstream failure.
func deadlineError(ctx context.Context, own time.Time, timeout time.Duration, msg string) (kind error, reason string) {
	if d, ok := ctx.Deadline(); ok && !d.After(own) && time.Until(d) <= deadlineSlack {
		return context.DeadlineExceeded, "the upstream gave up at the caller's deadline: " + msg
	}
	if time.Until(own) <= deadlineSlack {
		return backends.ErrUnavailable, fmt.Sprintf("no answer within %v (Timeout): %s", timeout, msg)
	}
	return nil, ""
}

// lifecycle lets Close wait for the calls in flight.
type lifecycle struct {
	// mu guards closed, and orders inflight.Add against Close's inflight.Wait.
	mu       sync.Mutex
	closed   bool
	inflight sync.WaitGroup
}

// enter registers a call; false when the client is closed. A true enter must be paired with exit.
func (l *lifecycle) enter() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.inflight.Add(1)
	return true
}

func (l *lifecycle) exit() { l.inflight.Done() }

// close marks the client closed and waits for the calls in flight; false when it already was.
func (l *lifecycle) close() bool {
	l.mu.Lock()
	was := l.closed
	l.closed = true
	l.mu.Unlock()
	l.inflight.Wait()
	return !was
}

// forEach runs call(ctx, i) for every i in [0, n), at most limit at once, from min(n, limit)
// goroutines that it owns and waits for. The first error stops new calls, cancels the ctx of the
// calls in flight, and is returned. The caller's ctx ending makes each remaining call fail with
// its ctx error (the calls must return promptly on a done ctx).
func forEach(ctx context.Context, n, limit int, call func(ctx context.Context, i int) error) error {
	if n == 1 {
		return call(ctx, 0)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next   atomic.Int64
		failed atomic.Bool
		once   sync.Once
		first  error
		wg     sync.WaitGroup
	)
	for range min(n, limit) {
		wg.Go(func() {
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := call(ctx, i); err != nil {
					once.Do(func() {
						first = err
						failed.Store(true)
						cancel()
					})
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

// fieldError is one wrong field of a response.
type fieldError struct {
	field, reason string
}

func (e *fieldError) Error() string { return e.field + ": " + e.reason }

func badField(field, format string, args ...any) error {
	return &fieldError{field: field, reason: fmt.Sprintf(format, args...)}
}

// prefixed names a field of a row: prefixed("results[2]", err) turns "vm_id: ..." into
// "results[2].vm_id: ...".
func prefixed(prefix string, err error) error {
	var fe *fieldError
	if prefix == "" || !errors.As(err, &fe) {
		return err
	}
	return &fieldError{field: prefix + "." + fe.field, reason: fe.reason}
}

// rowName names request i of a PredictBandwidth call in errors, when there are several.
func rowName(reqs []*aipb.BandwidthRequest, i int) string {
	if len(reqs) == 1 {
		return ""
	}
	return fmt.Sprintf(" reqs[%d] (vm_id %q)", i, reqs[i].GetVmId())
}

// checkRequests rejects nil requests before anything is sent.
func checkRequests(reqs []*aipb.BandwidthRequest) error {
	for i, r := range reqs {
		if r == nil {
			return fmt.Errorf("reqs[%d]: nil request", i)
		}
	}
	return nil
}
