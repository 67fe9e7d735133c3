package drift

import (
	"math"
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
//   - model_prediction_drift_score{model,output}: each output value's score by its method (PSI
//     unless configured) in that window, when the profile holds the model's outputs (sidecar
//     profile build -model), and model_prediction_drift_window_rows{model,output} its values;
//   - model_feature_values{model,feature}: a classic histogram of the feature's canonical
//     values since the start, whose buckets are the reference's bin edges (so summed over nodes,
//     increase() over a range gives the fleet's bin counts);
//   - model_feature_reference_ratio{model,feature,le}: the reference's cumulative share at each
//     edge (le "+Inf" is 1): with the histogram, the fleet's PSI is a PromQL expression
//     (examples/prometheus).
//
// It is a prometheus.Collector; Set replaces the models (a reload).
//
// With SetAccuracy, also per model with a tracker: model_prediction_accuracy{model} (a forecast
// model's 1 - WAPE, an anomaly or placement model's share of labelled answers that were right,
// over the tracker's window; absent until one is scored), model_prediction_mae{model} (forecasts
// only), model_prediction_evaluated_ratio{model} (the predictions of the window scored) and
// model_prediction_points{model}.
type Exporter struct {
	set atomic.Pointer[map[string]*Monitor]
	acc atomic.Pointer[map[string]AccuracySource]
}

var (
	descScore     = prometheus.NewDesc("model_data_drift_score", "Drift score of a feature in the newest window with a verdict, by method (psi, js, wasserstein).", []string{"model", "feature", "method"}, nil)
	descDrifted   = prometheus.NewDesc("model_features_drifted", "Features whose score passed their method's threshold in the newest window with a verdict.", []string{"model"}, nil)
	descRows      = prometheus.NewDesc("model_drift_window_rows", "Rows in the newest window with a verdict (0: no window has min_samples rows yet).", []string{"model"}, nil)
	descMissing   = prometheus.NewDesc("model_feature_missing_rate", "Share of a feature's values that were not finite, in the newest window with a verdict.", []string{"model", "feature"}, nil)
	descValues    = prometheus.NewDesc("model_feature_values", "A feature's canonical values since the start, over the reference profile's bin edges.", []string{"model", "feature"}, nil)
	descRefRatio  = prometheus.NewDesc("model_feature_reference_ratio", "The reference profile's cumulative share of a feature's values at each bin edge.", []string{"model", "feature", "le"}, nil)
	descPredDrift = prometheus.NewDesc("model_prediction_drift_score", "Drift score of a model output value in the newest window with a verdict, by its method (psi unless configured).", []string{"model", "output"}, nil)
	descPredRows  = prometheus.NewDesc("model_prediction_drift_window_rows", "Values of a model output in the newest window with a verdict.", []string{"model", "output"}, nil)
	descAccuracy  = prometheus.NewDesc("model_prediction_accuracy", "Live accuracy over the tracker's window: a forecast model's 1 - WAPE against the network_io pushed later; an anomaly or placement model's share of labelled answers that were right.", []string{"model"}, nil)
	descMAE       = prometheus.NewDesc("model_prediction_mae", "Mean absolute error of the forecasts scored in the tracker's window.", []string{"model"}, nil)
	descEvalRate  = prometheus.NewDesc("model_prediction_evaluated_ratio", "Share of the window's predictions scored so far: forecasts with at least one step scored against the network_io pushed, or anomaly and placement answers with a label.", []string{"model"}, nil)
	descPoints    = prometheus.NewDesc("model_prediction_points", "Forecast steps scored in the tracker's window.", []string{"model"}, nil)
)

// SetAccuracy replaces the live accuracy trackers exported, by model name.
func (e *Exporter) SetAccuracy(acc map[string]AccuracySource) {
	c := make(map[string]AccuracySource, len(acc))
	for k, v := range acc {
		c[k] = v
	}
	e.acc.Store(&c)
}

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
	for _, d := range []*prometheus.Desc{descScore, descDrifted, descRows, descMissing, descPredDrift, descPredRows, descValues, descRefRatio, descAccuracy, descMAE, descEvalRate, descPoints} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (e *Exporter) Collect(ch chan<- prometheus.Metric) {
	if acc := e.acc.Load(); acc != nil {
		for model, a := range *acc {
			r := a.Report()
			if r.Points > 0 && !math.IsNaN(r.Accuracy) && !math.IsInf(r.Accuracy, 0) {
				ch <- prometheus.MustNewConstMetric(descAccuracy, prometheus.GaugeValue, r.Accuracy, model)
				if !math.IsNaN(r.MAE) { // a labelled classifier has no MAE
					ch <- prometheus.MustNewConstMetric(descMAE, prometheus.GaugeValue, r.MAE, model)
				}
			}
			if r.Forecasts > 0 {
				ch <- prometheus.MustNewConstMetric(descEvalRate, prometheus.GaugeValue, min(1, float64(r.Evaluated)/float64(r.Forecasts)), model)
			}
			ch <- prometheus.MustNewConstMetric(descPoints, prometheus.GaugeValue, float64(r.Points), model)
		}
	}
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
			for _, o := range scored.Outputs {
				ch <- prometheus.MustNewConstMetric(descPredDrift, prometheus.GaugeValue, o.Score, model, o.Name)
				ch <- prometheus.MustNewConstMetric(descPredRows, prometheus.GaugeValue, float64(o.Rows), model, o.Name)
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
