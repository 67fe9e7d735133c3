package drift

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Exporter exports the drift of a set of models to Prometheus, computed at each scrape. Per model
// (labels without per-VM values: the cardinality is the models times their features):
//   - model_data_drift_score{model,feature,method}: each method's score of the newest window with
//     a verdict (at least min_samples rows);
//   - model_features_drifted{model}: the features drifted in that window, and
//     model_drift_window_rows{model} its rows;
//   - model_feature_missing_rate{model,feature} in that window;
//   - model_feature_values{model,feature}: a classic histogram of the feature's canonical
//     values since the start, whose buckets are the reference's bin edges (so summed over nodes,
//     increase() over a range gives the fleet's bin counts);
//   - model_feature_reference_ratio{model,feature,le}: the reference's cumulative share at each
//     edge (le "+Inf" is 1): with the histogram, the fleet's PSI is a PromQL expression
//     (examples/prometheus).
//
// It is a prometheus.Collector; Set replaces the models (a reload).
type Exporter struct {
	set atomic.Pointer[map[string]*Monitor]
}

var (
	descScore    = prometheus.NewDesc("model_data_drift_score", "Drift score of a feature in the newest window with a verdict, by method (psi, js, wasserstein).", []string{"model", "feature", "method"}, nil)
	descDrifted  = prometheus.NewDesc("model_features_drifted", "Features whose score passed their method's threshold in the newest window with a verdict.", []string{"model"}, nil)
	descRows     = prometheus.NewDesc("model_drift_window_rows", "Rows in the newest window with a verdict (0: no window has min_samples rows yet).", []string{"model"}, nil)
	descMissing  = prometheus.NewDesc("model_feature_missing_rate", "Share of a feature's values that were not finite, in the newest window with a verdict.", []string{"model", "feature"}, nil)
	descValues   = prometheus.NewDesc("model_feature_values", "A feature's canonical values since the start, over the reference profile's bin edges.", []string{"model", "feature"}, nil)
	descRefRatio = prometheus.NewDesc("model_feature_reference_ratio", "The reference profile's cumulative share of a feature's values at each bin edge.", []string{"model", "feature", "le"}, nil)
)

// NewExporter makes an Exporter of no models.
func NewExporter() *Exporter {
	e := &Exporter{}
	empty := map[string]*Monitor{}
	e.set.Store(&empty)
	return e
}

// Set replaces the models exported: their monitors, by model name.
func (e *Exporter) Set(monitors map[string]*Monitor) {
	c := make(map[string]*Monitor, len(monitors))
	for k, v := range monitors {
		c[k] = v
	}
	e.set.Store(&c)
}

// Describe implements prometheus.Collector.
func (e *Exporter) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descScore, descDrifted, descRows, descMissing, descValues, descRefRatio} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (e *Exporter) Collect(ch chan<- prometheus.Metric) {
	for model, m := range *e.set.Load() {
		var scored *WindowReport
		for _, r := range m.Report() {
			if r.Verdict {
				scored = &r
				break
			}
		}
		rows, drifted := 0.0, 0.0
		if scored != nil {
			rows, drifted = float64(scored.Rows), float64(scored.Drifted)
			for _, f := range scored.Features {
				for method, v := range map[string]float64{MethodPSI: f.PSI, MethodJS: f.JS, MethodWasserstein: f.Wasserstein} {
					ch <- prometheus.MustNewConstMetric(descScore, prometheus.GaugeValue, v, model, f.Name, method)
				}
				ch <- prometheus.MustNewConstMetric(descMissing, prometheus.GaugeValue, f.MissingRate, model, f.Name)
			}
		}
		ch <- prometheus.MustNewConstMetric(descDrifted, prometheus.GaugeValue, drifted, model)
		ch <- prometheus.MustNewConstMetric(descRows, prometheus.GaugeValue, rows, model)
		totals := m.Totals()
		for j, r := range m.p.Features {
			t := totals[j]
			buckets := make(map[float64]uint64, len(r.Edges))
			var cum uint64
			for i, edge := range r.Edges {
				cum += uint64(t.Counts[i])
				buckets[edge] = cum
			}
			count := cum + uint64(t.Counts[len(t.Counts)-1])
			ch <- prometheus.MustNewConstHistogram(descValues, count, t.Sum, buckets, model, r.Name)
			total := float64(r.Total())
			var refCum int64
			for i, edge := range r.Edges {
				refCum += r.Counts[i]
				ch <- prometheus.MustNewConstMetric(descRefRatio, prometheus.GaugeValue, float64(refCum)/total, model, r.Name, strconv.FormatFloat(edge, 'g', -1, 64))
			}
			ch <- prometheus.MustNewConstMetric(descRefRatio, prometheus.GaugeValue, 1, model, r.Name, "+Inf")
		}
	}
}

var _ prometheus.Collector = (*Exporter)(nil)
