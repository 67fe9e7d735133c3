package backends

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// PoolObserver is told about a pool's members as they join; PoolMetrics is the Prometheus one.
type PoolObserver interface {
	// Endpoint is called when a member joins a pool (NewPool, or Update adding it), with the
	// pool's update lock held, and returns the observer of that member's events, or nil for none.
	// It must not call the pool.
	Endpoint(pool, endpoint string) EndpointObserver
}

// EndpointObserver receives the events of one pool member. Its methods are called concurrently:
// from Do's goroutines, health-check goroutines and Update. They must be quick, must not block and
// must not call the pool.
type EndpointObserver interface {
	// AttemptStarted: an attempt of the given kind is about to run fn on the endpoint.
	AttemptStarted(kind AttemptKind)
	// AttemptDone: the attempt announced by AttemptStarted returned err (nil on success) after d.
	// Attempts that lost a hedge usually end with a cancellation error.
	AttemptDone(kind AttemptKind, d time.Duration, err error)
	// BreakerChanged: the endpoint's breaker moved to s (a new member's breaker starts closed and
	// is not announced). Called with the breaker's lock held.
	BreakerChanged(s BreakerState)
	// HealthChanged: the endpoint's health moved to h (a new member starts HealthUnknown, not
	// announced).
	HealthChanged(h Health)
	// Removed: the endpoint left the pool (Update dropped it, or the pool closed). Events of calls
	// still running on it may follow; an implementation should ignore them.
	Removed()
}

// AttemptKind tells why an attempt runs.
type AttemptKind int

// Attempt kinds.
const (
	AttemptFirst AttemptKind = iota // the call's first attempt
	AttemptRetry                    // after a failed attempt
	AttemptHedge                    // while an earlier attempt is still running (HedgeDelay)
)

func (k AttemptKind) String() string {
	switch k {
	case AttemptFirst:
		return "first"
	case AttemptRetry:
		return "retry"
	case AttemptHedge:
		return "hedge"
	}
	return "AttemptKind(?)"
}

type noObserver struct{}

func (noObserver) AttemptStarted(AttemptKind)                    {}
func (noObserver) AttemptDone(AttemptKind, time.Duration, error) {}
func (noObserver) BreakerChanged(BreakerState)                   {}
func (noObserver) HealthChanged(Health)                          {}
func (noObserver) Removed()                                      {}

// PoolMetrics is a PoolObserver that keeps Prometheus metrics per pool and endpoint (labels
// "pool" and "endpoint"):
//
//	sidecar_backend_endpoint_requests_total           attempts started
//	sidecar_backend_endpoint_errors_total{code}       attempts failed, by gRPC code name (ErrorCode)
//	sidecar_backend_endpoint_request_duration_seconds attempt latency
//	sidecar_backend_endpoint_retries_total            attempts that were retries
//	sidecar_backend_endpoint_hedges_total             attempts that were hedges
//	sidecar_backend_endpoint_outstanding_requests     attempts running
//	sidecar_backend_endpoint_breaker_state            0 closed, 1 half-open, 2 open
//	sidecar_backend_endpoint_healthy                  1 when the last health verdict is up
//
// A member that leaves its pool has its series deleted. One PoolMetrics may serve many pools; it
// is safe for concurrent use.
type PoolMetrics struct {
	requests    *prometheus.CounterVec
	errors      *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	retries     *prometheus.CounterVec
	hedges      *prometheus.CounterVec
	outstanding *prometheus.GaugeVec
	breaker     *prometheus.GaugeVec
	healthy     *prometheus.GaugeVec

	// refsMu guards refs: how many live observers share each (pool, endpoint) series, so that a
	// pool closed after a reload built its successor does not delete the successor's series.
	refsMu sync.Mutex
	refs   map[[2]string]int
}

// NewPoolMetrics makes the pool metrics and registers them on reg (none if reg is nil). Calling
// it again with the same registry returns metrics sharing the collectors already registered; it
// panics if reg holds other collectors of the same names.
func NewPoolMetrics(reg prometheus.Registerer) *PoolMetrics {
	labels := []string{"pool", "endpoint"}
	m := &PoolMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidecar_backend_endpoint_requests_total",
			Help: "Attempts started on a pool's endpoint (first attempts, retries and hedges).",
		}, labels),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidecar_backend_endpoint_errors_total",
			Help: "Attempts on a pool's endpoint that failed, by gRPC code name; hedging losers count as CANCELED.",
		}, []string{"pool", "endpoint", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sidecar_backend_endpoint_request_duration_seconds",
			Help:    "Time one attempt on a pool's endpoint took, failed or not.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, labels),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidecar_backend_endpoint_retries_total",
			Help: "Retries started on a pool's endpoint after a failed attempt.",
		}, labels),
		hedges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidecar_backend_endpoint_hedges_total",
			Help: "Hedged attempts started on a pool's endpoint while an earlier attempt ran.",
		}, labels),
		outstanding: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sidecar_backend_endpoint_outstanding_requests",
			Help: "Attempts running on a pool's endpoint.",
		}, labels),
		breaker: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sidecar_backend_endpoint_breaker_state",
			Help: "State of a pool endpoint's circuit breaker: 0 closed, 1 half-open, 2 open.",
		}, labels),
		healthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sidecar_backend_endpoint_healthy",
			Help: "1 when a pool endpoint's active health check says up, else 0 (down or not checked yet).",
		}, labels),
	}
	if reg != nil {
		m.requests = register(reg, m.requests)
		m.errors = register(reg, m.errors)
		m.duration = register(reg, m.duration)
		m.retries = register(reg, m.retries)
		m.hedges = register(reg, m.hedges)
		m.outstanding = register(reg, m.outstanding)
		m.breaker = register(reg, m.breaker)
		m.healthy = register(reg, m.healthy)
	}
	return m
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	panic(err)
}

// Endpoint implements PoolObserver.
func (m *PoolMetrics) Endpoint(pool, endpoint string) EndpointObserver {
	m.refsMu.Lock()
	if m.refs == nil {
		m.refs = map[[2]string]int{}
	}
	m.refs[[2]string{pool, endpoint}]++
	m.refsMu.Unlock()
	e := &endpointMetrics{
		m:           m,
		pool:        pool,
		endpoint:    endpoint,
		requests:    m.requests.WithLabelValues(pool, endpoint),
		duration:    m.duration.WithLabelValues(pool, endpoint),
		retries:     m.retries.WithLabelValues(pool, endpoint),
		hedges:      m.hedges.WithLabelValues(pool, endpoint),
		outstanding: m.outstanding.WithLabelValues(pool, endpoint),
		breaker:     m.breaker.WithLabelValues(pool, endpoint),
		healthy:     m.healthy.WithLabelValues(pool, endpoint),
	}
	e.outstanding.Set(0)
	e.breaker.Set(float64(BreakerClosed))
	e.healthy.Set(0)
	return e
}

// endpointMetrics holds one member's series, resolved once so that the call path does no label
// lookups (but for errors, by code).
type endpointMetrics struct {
	m              *PoolMetrics
	pool, endpoint string
	requests       prometheus.Counter
	duration       prometheus.Observer
	retries        prometheus.Counter
	hedges         prometheus.Counter
	outstanding    prometheus.Gauge
	breaker        prometheus.Gauge
	healthy        prometheus.Gauge
	removed        atomic.Bool

	// errMu orders the errors series' creation (AttemptDone, read lock) before their deletion
	// (Removed), so that a late error does not bring a removed endpoint's series back.
	errMu sync.RWMutex
}

func (e *endpointMetrics) AttemptStarted(kind AttemptKind) {
	if e.removed.Load() {
		return
	}
	e.requests.Inc()
	e.outstanding.Inc()
	switch kind {
	case AttemptRetry:
		e.retries.Inc()
	case AttemptHedge:
		e.hedges.Inc()
	}
}

func (e *endpointMetrics) AttemptDone(_ AttemptKind, d time.Duration, err error) {
	if e.removed.Load() {
		return
	}
	e.outstanding.Dec()
	e.duration.Observe(d.Seconds())
	if err == nil {
		return
	}
	e.errMu.RLock()
	defer e.errMu.RUnlock()
	if !e.removed.Load() {
		e.m.errors.WithLabelValues(e.pool, e.endpoint, ErrorCode(err)).Inc()
	}
}

func (e *endpointMetrics) BreakerChanged(s BreakerState) {
	if !e.removed.Load() {
		e.breaker.Set(float64(s))
	}
}

func (e *endpointMetrics) HealthChanged(h Health) {
	if e.removed.Load() {
		return
	}
	if h == HealthUp {
		e.healthy.Set(1)
	} else {
		e.healthy.Set(0)
	}
}

func (e *endpointMetrics) Removed() {
	e.errMu.Lock()
	defer e.errMu.Unlock()
	if e.removed.Swap(true) {
		return
	}
	m := e.m
	key := [2]string{e.pool, e.endpoint}
	m.refsMu.Lock()
	defer m.refsMu.Unlock()
	if m.refs[key]--; m.refs[key] > 0 {
		return // another pool (a reload's) still reports under these labels
	}
	delete(m.refs, key)
	for _, v := range []*prometheus.MetricVec{m.requests.MetricVec, m.duration.MetricVec, m.retries.MetricVec,
		m.hedges.MetricVec, m.outstanding.MetricVec, m.breaker.MetricVec, m.healthy.MetricVec} {
		v.DeleteLabelValues(e.pool, e.endpoint)
	}
	m.errors.DeletePartialMatch(prometheus.Labels{"pool": e.pool, "endpoint": e.endpoint})
}

// codeNames are the canonical gRPC code names, indexed by code.
var codeNames = [...]string{
	codes.OK:                 "OK",
	codes.Canceled:           "CANCELED",
	codes.Unknown:            "UNKNOWN",
	codes.InvalidArgument:    "INVALID_ARGUMENT",
	codes.DeadlineExceeded:   "DEADLINE_EXCEEDED",
	codes.NotFound:           "NOT_FOUND",
	codes.AlreadyExists:      "ALREADY_EXISTS",
	codes.PermissionDenied:   "PERMISSION_DENIED",
	codes.ResourceExhausted:  "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION",
	codes.Aborted:            "ABORTED",
	codes.OutOfRange:         "OUT_OF_RANGE",
	codes.Unimplemented:      "UNIMPLEMENTED",
	codes.Internal:           "INTERNAL",
	codes.Unavailable:        "UNAVAILABLE",
	codes.DataLoss:           "DATA_LOSS",
	codes.Unauthenticated:    "UNAUTHENTICATED",
}

// CodeName is a gRPC code's canonical name, as google.rpc.Status JSON spells it:
// INVALID_ARGUMENT; UNKNOWN for a code gRPC does not define.
func CodeName(c codes.Code) string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return "UNKNOWN"
}

// ErrorCode names err by its gRPC code, as the errors metric labels it: the code of a gRPC status
// err wraps; else INVALID_ARGUMENT for ErrInvalidInput, UNAVAILABLE for ErrUnavailable, DATA_LOSS
// for ErrBadResponse, DEADLINE_EXCEEDED and CANCELED for the context errors, UNKNOWN for the
// rest; OK for nil.
func ErrorCode(err error) string {
	if err == nil {
		return "OK"
	}
	if s, ok := status.FromError(err); ok {
		return CodeName(s.Code())
	}
	switch {
	case errors.Is(err, ErrInvalidInput):
		return "INVALID_ARGUMENT"
	case errors.Is(err, ErrUnavailable):
		return "UNAVAILABLE"
	case errors.Is(err, ErrBadResponse):
		return "DATA_LOSS"
	case errors.Is(err, context.DeadlineExceeded):
		return "DEADLINE_EXCEEDED"
	case errors.Is(err, context.Canceled):
		return "CANCELED"
	}
	return "UNKNOWN"
}

var _ PoolObserver = (*PoolMetrics)(nil)
