package proxy

import (
	"time"

	"github.com/novacron/sidecar/cache"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the pipeline's Prometheus collectors, registered on a registry of the caller's.
type Metrics struct {
	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	inferSeconds *prometheus.HistogramVec
	inferRows    *prometheus.HistogramVec
	inferErrors  *prometheus.CounterVec
	modelInfo    *prometheus.GaugeVec
	queueSeconds *prometheus.HistogramVec
	batchCalls   *prometheus.HistogramVec
	queueRows    *prometheus.GaugeVec
	rejected     *prometheus.CounterVec
	cancelled    *prometheus.CounterVec
	fallbacks    *prometheus.CounterVec
	routeCalls   *prometheus.CounterVec
	routeForced  *prometheus.CounterVec
	reg          prometheus.Registerer
}

// NewMetrics registers the sidecar's collectors, with the Go runtime and process collectors, on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidecar_requests_total",
			Help: "Requests answered, by protocol (grpc, http), method and status code (gRPC code name).",
		}, []string{"protocol", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sidecar_request_duration_seconds",
			Help:    "Time from request received to response written, by protocol and method.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"protocol", "method"}),
		inferSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sidecar_backend_infer_seconds",
			Help:    "Backend compute time of one batch, by model.",
			Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .1},
		}, []string{"model"}),
		inferRows: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sidecar_backend_batch_rows",
			Help:    "Rows per backend batch, by model.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024},
		}, []string{"model"}),
		inferErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidecar_backend_errors_total",
			Help: "Backend batches that failed, by model.",
		}, []string{"model"}),
		modelInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sidecar_model_info",
			Help: "1 for each loaded model, with its task, version and feature spec fingerprint.",
		}, []string{"model", "task", "version", "fingerprint"}),
	}
	m.queueSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sidecar_batch_queue_seconds",
		Help:    "Time the oldest row of a batch waited in the batcher's queue, by model (compare sidecar_backend_infer_seconds).",
		Buckets: []float64{.000005, .00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .1},
	}, []string{"model"})
	m.batchCalls = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sidecar_batch_calls",
		Help:    "Calls whose rows shared one batch, by model.",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
	}, []string{"model"})
	m.queueRows = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sidecar_batch_queue_rows",
		Help: "Rows waiting in the batcher's queue, by model.",
	}, []string{"model"})
	m.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sidecar_batch_rejections_total",
		Help: "Calls refused by the batcher before queueing, by model and reason (queue_full, deadline, closed).",
	}, []string{"model", "reason"})
	m.cancelled = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sidecar_batch_cancellations_total",
		Help: "Queued calls whose caller gave up (cancelled or deadline) before their rows ran, by model.",
	}, []string{"model"})
	m.fallbacks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sidecar_model_fallbacks_total",
		Help: "Answers a model's fallback gave because every endpoint of its remote backend was down or failing, by model and kind (local: the local model ran the batch; stale: a cached answer past its TTL was served, marked stale).",
	}, []string{"model", "kind"})
	m.routeCalls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sidecar_route_calls_total",
		Help: "Calls a route sent to a target (its primary or a split arm; each VM of a batch counts), by route and target. Calls that name their model or force a target are not routed.",
	}, []string{"route", "target"})
	m.routeForced = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sidecar_route_forced_total",
		Help: "Calls whose x-sidecar-target header forced their target, by route and target.",
	}, []string{"route", "target"})
	m.reg = reg
	reg.MustRegister(m.requests, m.duration, m.inferSeconds, m.inferRows, m.inferErrors, m.modelInfo,
		m.queueSeconds, m.batchCalls, m.queueRows, m.rejected, m.cancelled, m.fallbacks, m.routeCalls, m.routeForced)
	return m
}

// WatchCache exports the prediction cache's counters, read from stats at each scrape.
func (m *Metrics) WatchCache(stats func() cache.Stats) {
	counter := func(name, help string, get func(cache.Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(get(stats())) })
	}
	m.reg.MustRegister(
		counter("sidecar_cache_lookups_total", "Prediction cache lookups (hits + misses).", func(s cache.Stats) uint64 { return s.Lookups }),
		counter("sidecar_cache_hits_total", "Prediction cache hits.", func(s cache.Stats) uint64 { return s.Hits }),
		counter("sidecar_cache_misses_total", "Prediction cache misses.", func(s cache.Stats) uint64 { return s.Misses }),
		counter("sidecar_cache_fills_total", "Model runs that filled the cache (one per key at a time).", func(s cache.Stats) uint64 { return s.Fills }),
		counter("sidecar_cache_evictions_total", "Entries evicted to make room.", func(s cache.Stats) uint64 { return s.Evictions }),
		counter("sidecar_cache_rejected_sets_total", "Answers offered to the cache and not kept (admission policy or contention).", func(s cache.Stats) uint64 { return s.Rejected }),
	)
}

// Fallback counts one answer of a model's fallback of the given kind (local, stale).
func (m *Metrics) Fallback(model, kind string) {
	if m != nil {
		m.fallbacks.WithLabelValues(model, kind).Inc()
	}
}

func (m *Metrics) setTargets(targets []Target) {
	m.modelInfo.Reset()
	for _, t := range targets {
		x := t.Info()
		m.modelInfo.WithLabelValues(x.Name, x.Task, x.Version, x.Spec.Fingerprint()).Set(1)
	}
}

// modelMetrics are one model's collectors, resolved once so the hot path does no label lookups.
// It is the model's batcher.Observer.
type modelMetrics struct {
	inferSeconds, inferRows, queueSeconds, batchCalls prometheus.Observer
	inferErrors, cancelled                            prometheus.Counter
	queueRows                                         prometheus.Gauge
	rejected                                          map[string]prometheus.Counter
}

func (m *Metrics) forModel(model string) *modelMetrics {
	mm := &modelMetrics{
		inferSeconds: m.inferSeconds.WithLabelValues(model),
		inferRows:    m.inferRows.WithLabelValues(model),
		queueSeconds: m.queueSeconds.WithLabelValues(model),
		batchCalls:   m.batchCalls.WithLabelValues(model),
		inferErrors:  m.inferErrors.WithLabelValues(model),
		cancelled:    m.cancelled.WithLabelValues(model),
		queueRows:    m.queueRows.WithLabelValues(model),
		rejected:     map[string]prometheus.Counter{},
	}
	for _, r := range []string{"queue_full", "deadline", "closed"} {
		mm.rejected[r] = m.rejected.WithLabelValues(model, r)
	}
	return mm
}

func (mm *modelMetrics) infer(rows int, d time.Duration, err error) {
	mm.inferSeconds.Observe(d.Seconds())
	mm.inferRows.Observe(float64(rows))
	if err != nil {
		mm.inferErrors.Inc()
	}
}

// Batch implements batcher.Observer; the batch's size and compute time are recorded by infer.
func (mm *modelMetrics) Batch(rows, calls int, wait, compute time.Duration, err error) {
	mm.queueSeconds.Observe(wait.Seconds())
	mm.batchCalls.Observe(float64(calls))
}

// Rejected implements batcher.Observer.
func (mm *modelMetrics) Rejected(reason string) {
	if c, ok := mm.rejected[reason]; ok {
		c.Inc()
	}
}

// Cancelled implements batcher.Observer.
func (mm *modelMetrics) Cancelled() { mm.cancelled.Inc() }

// Queue implements batcher.Observer.
func (mm *modelMetrics) Queue(n int) { mm.queueRows.Set(float64(n)) }

func (m *Metrics) observeRequest(protocol, method, code string, d time.Duration) {
	m.requests.WithLabelValues(protocol, method, code).Inc()
	m.duration.WithLabelValues(protocol, method).Observe(d.Seconds())
}
