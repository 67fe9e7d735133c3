package migrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/novacron/sidecar/proto/inference"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
	"github.com/novacron/sidecar/proxy"
)

// DefaultSamples is how many recent disagreements a Recorder keeps per route; once it has them, it
// keeps at most one more every SampleEvery.
const (
	DefaultSamples = 16
	SampleEvery    = time.Second
)

// maxSampleBytes bounds each message of a kept disagreement (its JSON); a longer one is cut and
// marked.
const maxSampleBytes = 8 << 10

// Recorder is the proxy.RouteObserver of the sidecar's routes: it compares every shadowed call's
// answers (by the route's Tolerances, the baseline's answer first: a migration's From, else the
// serving target's), counts the outcomes in Prometheus, keeps the latest disagreements for a
// person to read, and hands everything to the Controller of the route's migration. Safe for
// concurrent use.
type Recorder struct {
	tol  atomic.Pointer[map[string]Tolerances]
	ctrl atomic.Pointer[Controller]

	calls  *prometheus.CounterVec
	fields *prometheus.CounterVec
	delta  *prometheus.HistogramVec

	// mu guards samples.
	mu      sync.Mutex
	samples map[string][]Sample // by route, oldest first, at most keep
	keep    int
}

// Sample is one kept disagreement: both answers and the call, as JSON.
type Sample struct {
	At              time.Time       `json:"at"`
	Route           string          `json:"route"`
	BaselineName    string          `json:"baseline"`
	CandidateName   string          `json:"candidate"`
	Fields          []string        `json:"fields"`
	Detail          string          `json:"detail"`
	Request         json.RawMessage `json:"request"`
	BaselineAnswer  json.RawMessage `json:"baseline_answer"`
	CandidateAnswer json.RawMessage `json:"candidate_answer"`
}

// NewRecorder makes a Recorder whose collectors register on reg (nil: none).
func NewRecorder(reg prometheus.Registerer) *Recorder {
	r := &Recorder{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidecar_shadow_calls_total",
			Help: "Shadowed calls, by route, shadow target and result: agree, disagree (the answers differ beyond the route's tolerances), error, timeout (the shadow's), dropped (the shadow queue was full).",
		}, []string{"route", "shadow", "result"}),
		fields: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidecar_shadow_disagreements_total",
			Help: "Disagreeing answers of shadowed calls, by route and field (predictions, predictions.length, results.length, is_anomaly, severity, anomaly_type, score, candidates.top1, candidates.tau, candidates.set, answer).",
		}, []string{"route", "field"}),
		delta: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sidecar_shadow_latency_delta_seconds",
			Help:    "The shadow's latency minus the serving target's on the same call, by route (negative: the shadow was faster).",
			Buckets: []float64{-1, -0.25, -0.1, -0.05, -0.025, -0.01, -0.005, -0.001, 0, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1},
		}, []string{"route"}),
		samples: map[string][]Sample{},
		keep:    DefaultSamples,
	}
	if reg != nil {
		reg.MustRegister(r.calls, r.fields, r.delta)
	}
	empty := map[string]Tolerances{}
	r.tol.Store(&empty)
	return r
}

// SetTolerances sets the tolerances of each route (missing: the defaults).
func (r *Recorder) SetTolerances(t map[string]Tolerances) {
	c := make(map[string]Tolerances, len(t))
	for k, v := range t {
		c[k] = v.WithDefaults()
	}
	r.tol.Store(&c)
}

// SetController hands the outcomes of migrated routes to c.
func (r *Recorder) SetController(c *Controller) { r.ctrl.Store(c) }

// Served implements proxy.RouteObserver.
func (r *Recorder) Served(route, target string, _ time.Duration, err error) {
	if c := r.ctrl.Load(); c != nil {
		c.served(route, target, err)
	}
}

// ShadowDropped implements proxy.RouteObserver.
func (r *Recorder) ShadowDropped(route, _, shadow string) {
	r.calls.WithLabelValues(route, shadow, "dropped").Inc()
	if c := r.ctrl.Load(); c != nil {
		c.dropped(route)
	}
}

// Shadowed implements proxy.RouteObserver.
func (r *Recorder) Shadowed(o *proxy.ShadowOutcome) {
	c := r.ctrl.Load()
	timeout := errors.Is(o.Err, context.DeadlineExceeded)
	var d Diff
	switch {
	case timeout:
		r.calls.WithLabelValues(o.Route, o.Shadow, "timeout").Inc()
	case o.Err != nil:
		r.calls.WithLabelValues(o.Route, o.Shadow, "error").Inc()
	default:
		base, cand := o.PrimaryAnswer, o.Answer
		baseName, candName := o.Primary, o.Shadow
		if c != nil && c.isBaseline(o.Route, o.Shadow) {
			base, cand, baseName, candName = cand, base, candName, baseName
		}
		tol := (*r.tol.Load())[o.Route].WithDefaults()
		d = compare(base, cand, tol)
		r.delta.WithLabelValues(o.Route).Observe((o.Latency - o.PrimaryLatency).Seconds())
		if d.Agree() {
			r.calls.WithLabelValues(o.Route, o.Shadow, "agree").Inc()
		} else {
			r.calls.WithLabelValues(o.Route, o.Shadow, "disagree").Inc()
			for _, f := range d.Fields {
				r.fields.WithLabelValues(o.Route, f).Inc()
			}
			if now := time.Now(); r.wantSample(o.Route, now) {
				r.keepSample(Sample{At: now, Route: o.Route, BaselineName: baseName, CandidateName: candName,
					Fields: d.Fields, Detail: d.Detail, Request: sampleJSON(o.Request), BaselineAnswer: sampleJSON(base), CandidateAnswer: sampleJSON(cand)})
			}
		}
	}
	if c != nil {
		c.compared(o, d, timeout)
	}
}

// compare compares two answers of one task (a type the proxy does not send disagrees on
// "answer").
func compare(base, cand proto.Message, t Tolerances) Diff {
	switch b := base.(type) {
	case *aipb.BandwidthBatchResponse:
		c, _ := cand.(*aipb.BandwidthBatchResponse)
		return Forecasts(b.GetResults(), c.GetResults(), t)
	case *aipb.AnomalyResponse:
		c, _ := cand.(*aipb.AnomalyResponse)
		return Anomaly(b, c, t)
	case *aipb.PlacementResponse:
		c, _ := cand.(*aipb.PlacementResponse)
		return Placement(b, c, t)
	case *inference.ModelInferResponse:
		c, _ := cand.(*inference.ModelInferResponse)
		return Tensors(b, c, t)
	}
	return Diff{Fields: []string{FieldMissing}, Detail: fmt.Sprintf("answers of type %T cannot be compared", base)}
}

// wantSample says whether to keep a disagreement of route seen at now: while the route keeps
// fewer than keep, every one; then at most one every SampleEvery, so that a candidate that
// disagrees on every call does not pay three JSON encodings per call, and the kept ones span
// time.
func (r *Recorder) wantSample(route string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	list := r.samples[route]
	return len(list) < r.keep || now.Sub(list[len(list)-1].At) >= SampleEvery
}

func (r *Recorder) keepSample(s Sample) {
	r.mu.Lock()
	defer r.mu.Unlock()
	list := append(r.samples[s.Route], s)
	if len(list) > r.keep {
		list = append(list[:0:0], list[len(list)-r.keep:]...)
	}
	r.samples[s.Route] = list
}

// Samples returns the route's kept disagreements, newest first.
func (r *Recorder) Samples(route string) []Sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	list := r.samples[route]
	out := make([]Sample, len(list))
	for i, s := range list {
		out[len(list)-1-i] = s
	}
	return out
}

var sampleOpts = protojson.MarshalOptions{UseProtoNames: true}

// sampleJSON is a message as proto3 JSON, cut to maxSampleBytes (then a JSON string saying so).
func sampleJSON(m proto.Message) json.RawMessage {
	if m == nil {
		return json.RawMessage("null")
	}
	b, err := sampleOpts.Marshal(m)
	if err != nil {
		b, _ = json.Marshal("unprintable: " + err.Error())
	}
	if len(b) > maxSampleBytes {
		b, _ = json.Marshal(fmt.Sprintf("%s... (%d bytes, cut)", b[:maxSampleBytes], len(b)))
	}
	return b
}

// isBaseline reports whether target is the baseline of the route's migration.
func (c *Controller) isBaseline(route, target string) bool {
	m := c.set.Load().byRoute[route]
	return m != nil && m.spec.From == target
}

var _ proxy.RouteObserver = (*Recorder)(nil)
