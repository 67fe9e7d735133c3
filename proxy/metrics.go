package proxy

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the pipeline's Prometheus collectors, registered on a registry of the caller's.
type Metrics struct {
	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	inferSeconds *prometheus.HistogramVec
	inferRows    *prometheus.HistogramVec
	inferErrors  *prometheus.CounterVec
	modelInfo    *prometheus.GaugeVec
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
	reg.MustRegister(m.requests, m.duration, m.inferSeconds, m.inferRows, m.inferErrors, m.modelInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *Metrics) setModels(models []*Model) {
	m.modelInfo.Reset()
	for _, x := range models {
		m.modelInfo.WithLabelValues(x.Name, x.Task, x.Version, x.Spec.Fingerprint()).Set(1)
	}
}

func (m *Metrics) observeInfer(model string, rows int, d time.Duration, err error) {
	m.inferSeconds.WithLabelValues(model).Observe(d.Seconds())
	m.inferRows.WithLabelValues(model).Observe(float64(rows))
	if err != nil {
		m.inferErrors.WithLabelValues(model).Inc()
	}
}

func (m *Metrics) observeRequest(protocol, method, code string, d time.Duration) {
	m.requests.WithLabelValues(protocol, method, code).Inc()
	m.duration.WithLabelValues(protocol, method).Observe(d.Seconds())
}
