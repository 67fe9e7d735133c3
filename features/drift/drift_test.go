package drift

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/novacron/sidecar/features"
)

func anomalySpec(t testing.TB) *features.Spec {
	t.Helper()
	s, err := features.LoadFile("../../examples/specs/anomaly.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rows draws n canonical rows of w features: feature j normal with mean j/2 and sd 1+j/4, and
// feature shift (if >= 0) moved by delta of its sd.
func rows(r *rand.Rand, n, w, shift int, delta float64) []float32 {
	out := make([]float32, n*w)
	for i := range n {
		for j := range w {
			sd := 1 + float64(j)/4
			v := float64(j)/2 + sd*r.NormFloat64()
			if j == shift {
				v += delta * sd
			}
			out[i*w+j] = float32(v)
		}
	}
	return out
}

func profileOf(t testing.TB, spec *features.Spec, n int) *Profile {
	t.Helper()
	b, err := NewBuilder(spec, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Add(rows(rand.New(rand.NewPCG(1, 1)), n, spec.Width(), -1, 0)); err != nil {
		t.Fatal(err)
	}
	p, err := b.Profile()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestProfile: deciles as edges, every bin about a tenth, the statistics right; it round-trips
// through its JSON and is refused for another spec.
func TestProfile(t *testing.T) {
	spec := anomalySpec(t)
	p := profileOf(t, spec, 20000)
	if p.Rows != 20000 || len(p.Features) != spec.Width() || p.Fingerprint != spec.Fingerprint() {
		t.Fatalf("profile of %d rows, %d features, fingerprint %.12s", p.Rows, len(p.Features), p.Fingerprint)
	}
	for j, r := range p.Features {
		if len(r.Edges) != DefaultBins-1 || len(r.Counts) != DefaultBins {
			t.Fatalf("%s: %d edges, %d counts", r.Name, len(r.Edges), len(r.Counts))
		}
		for _, c := range r.Counts {
			if c < 1900 || c > 2100 {
				t.Errorf("%s: bin counts %v; want about 2000 each", r.Name, r.Counts)
				break
			}
		}
		sd := 1 + float64(j)/4
		if math.Abs(r.Mean-float64(j)/2) > 0.05*sd || math.Abs(r.Std-sd) > 0.05*sd {
			t.Errorf("%s: mean %v std %v; want %v, %v", r.Name, r.Mean, r.Std, float64(j)/2, sd)
		}
	}
	var buf bytes.Buffer
	if err := p.Write(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := ReadProfile(bytes.NewReader(buf.Bytes()), spec)
	if err != nil {
		t.Fatal(err)
	}
	if back.Features[3].Edges[4] != p.Features[3].Edges[4] || back.Rows != p.Rows {
		t.Errorf("the profile did not round-trip")
	}
	other, err := features.LoadFile("../../examples/specs/placement.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ReadProfile(bytes.NewReader(buf.Bytes()), other); err == nil || !strings.Contains(err.Error(), "build the profile from this spec") {
		t.Errorf("a profile of another spec: %v", err)
	}
	if _, err := ReadProfile(strings.NewReader(strings.Replace(buf.String(), `"rows"`, `"rowz"`, 1)), spec); err == nil {
		t.Error("an unknown field was accepted")
	}
}

// TestMergeIsExact: per-part sketches merged equal one sketch of every row, bin by bin and
// quantile by quantile, and score the same.
func TestMergeIsExact(t *testing.T) {
	spec := anomalySpec(t)
	p := profileOf(t, spec, 5000)
	w := spec.Width()
	all := rows(rand.New(rand.NewPCG(7, 7)), 9000, w, 2, 0.3)
	one, parts := newTestMonitor(t, p), []*Monitor{newTestMonitor(t, p), newTestMonitor(t, p), newTestMonitor(t, p)}
	one.Observe(all, w, nil)
	for i := range 3 { // three "nodes", unequal shares
		lo, hi := []int{0, 1000, 5000}[i], []int{1000, 5000, 9000}[i]
		parts[i].Observe(all[lo*w:hi*w], w, nil)
	}
	want := one.Sketches()[0]
	merged := parts[0].Sketches()[0]
	for _, m := range parts[1:] {
		ws := m.Sketches()[0]
		for j := range merged.Features {
			if err := merged.Features[j].Merge(&ws.Features[j]); err != nil {
				t.Fatal(err)
			}
		}
	}
	for j := range want.Features {
		a, b := &want.Features[j], &merged.Features[j]
		if !equalInts(a.Counts, b.Counts) || a.Missing != b.Missing || a.DD.GetCount() != b.DD.GetCount() {
			t.Fatalf("feature %d: counts %v vs %v", j, a.Counts, b.Counts)
		}
		qa, _ := a.DD.GetValuesAtQuantiles(quantileLevels)
		qb, _ := b.DD.GetValuesAtQuantiles(quantileLevels)
		for i := range qa {
			if qa[i] != qb[i] {
				t.Fatalf("feature %d quantile %v: %v vs %v", j, quantileLevels[i], qa[i], qb[i])
			}
		}
	}
	if sa, sb := one.Score(want), one.Score(merged); sa.Features[2].Wasserstein != sb.Features[2].Wasserstein || sa.Features[2].PSI != sb.Features[2].PSI {
		t.Errorf("scores differ: %+v vs %+v", sa.Features[2], sb.Features[2])
	}
}

func equalInts(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func newTestMonitor(t testing.TB, p *Profile) *Monitor {
	t.Helper()
	m, err := NewMonitor(p, Config{Now: func() time.Time { return time.Unix(0, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestOrderDoesNotMatter: the same rows in another order, in other calls, give the same scores,
// to the bit.
func TestOrderDoesNotMatter(t *testing.T) {
	spec := anomalySpec(t)
	p := profileOf(t, spec, 5000)
	w := spec.Width()
	data := rows(rand.New(rand.NewPCG(3, 3)), 3000, w, 1, 0.4)
	a, b := newTestMonitor(t, p), newTestMonitor(t, p)
	a.Observe(data, w, nil)
	perm := rand.New(rand.NewPCG(4, 4)).Perm(3000)
	for k := 0; k < len(perm); k += 7 {
		var batch []float32
		for _, i := range perm[k:min(k+7, len(perm))] {
			batch = append(batch, data[i*w:(i+1)*w]...)
		}
		b.Observe(batch, w, nil)
	}
	ra, rb := a.Report()[0], b.Report()[0]
	for j := range ra.Features {
		fa, fb := ra.Features[j], rb.Features[j]
		if fa.PSI != fb.PSI || fa.JS != fb.JS || fa.Wasserstein != fb.Wasserstein || fa.Rows != fb.Rows {
			t.Errorf("feature %s: %+v vs %+v", fa.Name, fa, fb)
		}
	}
}

// TestNoVerdictBelowMinSamples: a shifted window of too few rows is not called drifted.
func TestNoVerdictBelowMinSamples(t *testing.T) {
	spec := anomalySpec(t)
	p := profileOf(t, spec, 5000)
	m := newTestMonitor(t, p)
	m.Observe(rows(rand.New(rand.NewPCG(5, 5)), DefaultMinSamples-1, spec.Width(), 0, 3), spec.Width(), nil)
	r := m.Report()[0]
	if r.Verdict || r.Drifted != 0 || r.Features[0].PSI < 1 {
		t.Errorf("%d rows, 3-sigma shift: verdict %v, %d drifted, PSI %v; want a large PSI and no verdict", r.Rows, r.Verdict, r.Drifted, r.Features[0].PSI)
	}
	m.Observe(rows(rand.New(rand.NewPCG(5, 6)), 1, spec.Width(), 0, 3), spec.Width(), nil)
	if r := m.Report()[0]; !r.Verdict || !r.Features[0].Drifted {
		t.Errorf("at %d rows: verdict %v, feature 0 drifted %v", r.Rows, r.Verdict, r.Features[0].Drifted)
	}
}

// TestMissingValues: non-finite values are counted per feature, not binned, and their share
// reported against the reference's.
func TestMissingValues(t *testing.T) {
	spec := anomalySpec(t)
	p := profileOf(t, spec, 5000)
	w := spec.Width()
	data := rows(rand.New(rand.NewPCG(6, 6)), 1000, w, -1, 0)
	for i := 0; i < 1000; i += 4 {
		data[i*w+5] = float32(math.NaN())
	}
	data[3*w+1] = float32(math.Inf(1))
	m := newTestMonitor(t, p)
	m.Observe(data, w, nil)
	r := m.Report()[0]
	if f := r.Features[5]; f.Missing != 250 || f.Rows != 1000 || f.MissingRate != 0.25 || f.MissingChange != 0.25 {
		t.Errorf("feature 5: %+v", f)
	}
	if f := r.Features[1]; f.Missing != 1 || math.IsNaN(f.PSI) {
		t.Errorf("feature 1: %+v", f)
	}
}

// TestNoFalseAlarm: 100 windows of 5000 rows from the reference's own distribution: no feature
// drifts by any method.
func TestNoFalseAlarm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		spec := anomalySpec(t)
		p := profileOf(t, spec, 50000)
		w := spec.Width()
		m, err := NewMonitor(p, Config{Keep: 1})
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(11, 12))
		worst := map[string]float64{}
		for range 100 {
			m.Observe(rows(r, 5000, w, -1, 0), w, nil)
			rep := m.Report()[0]
			for _, f := range rep.Features {
				worst[MethodPSI] = max(worst[MethodPSI], f.PSI)
				worst[MethodJS] = max(worst[MethodJS], f.JS)
				worst[MethodWasserstein] = max(worst[MethodWasserstein], f.Wasserstein)
			}
			if rep.Drifted != 0 {
				t.Fatalf("window %v: %d features drifted", rep.Start, rep.Drifted)
			}
			time.Sleep(DefaultWindow) // synctest's clock
		}
		for _, method := range Methods {
			if worst[method] > DefaultThreshold(method)*3/4 {
				t.Errorf("%s reached %v over 100 unshifted windows (threshold %v)", method, worst[method], DefaultThreshold(method))
			}
		}
		t.Logf("largest scores over 100 windows: %v", worst)
	})
}

// TestDetectsHalfSigmaShift: one feature's mean moved by half its standard deviation is drifted
// within one window of 5000 rows, by every method; the others are not.
func TestDetectsHalfSigmaShift(t *testing.T) {
	spec := anomalySpec(t)
	p := profileOf(t, spec, 50000)
	w := spec.Width()
	for _, method := range Methods {
		m, err := NewMonitor(p, Config{Methods: map[string]string{p.Features[3].Name: method}, Now: func() time.Time { return time.Unix(0, 0) }})
		if err != nil {
			t.Fatal(err)
		}
		m.Observe(rows(rand.New(rand.NewPCG(21, 22)), 5000, w, 3, 0.5), w, nil)
		rep := m.Report()[0]
		for j, f := range rep.Features {
			if f.Drifted != (j == 3) {
				t.Errorf("%s: feature %s drifted %v (score %v, threshold %v)", method, f.Name, f.Drifted, f.Score, f.Threshold)
			}
		}
		t.Logf("%s: shifted feature scores %v (threshold %v)", method, rep.Features[3].Score, rep.Features[3].Threshold)
	}
}

// TestWindowsRotate: rows fall in the window of their time; Keep bounds the windows kept.
func TestWindowsRotate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		spec := anomalySpec(t)
		p := profileOf(t, spec, 5000)
		m, err := NewMonitor(p, Config{Window: time.Minute, Keep: 3})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			m.Observe(rows(rand.New(rand.NewPCG(uint64(i), 0)), 10*(i+1), spec.Width(), -1, 0), spec.Width(), nil)
			time.Sleep(time.Minute) // synctest's clock
		}
		reps := m.Report()
		if len(reps) != 3 || reps[0].Rows != 50 || reps[2].Rows != 30 || !reps[0].Start.After(reps[1].Start) {
			t.Errorf("%d windows; rows %v", len(reps), []int64{reps[0].Rows, reps[1].Rows, reps[2].Rows})
		}
	})
}

// TestSketchMemory: one feature's sketch in a window stays under 4 KiB.
func TestSketchMemory(t *testing.T) {
	const n = 1000
	r := rand.New(rand.NewPCG(9, 9))
	sketches := make([]Sketch, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range sketches {
		sketches[i] = newSketch(DefaultBins)
		for range 5000 {
			v := r.NormFloat64() * 3
			sketches[i].Counts[int(math.Abs(v))%DefaultBins]++
			sketches[i].DD.Add(v)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("a feature's sketch over 5000 values of N(0, 9): %.0f bytes", per)
	if per > 4096 {
		t.Errorf("%.0f bytes per feature per window, want under 4096", per)
	}
	runtime.KeepAlive(sketches)
}

// BenchmarkObserve measures the live sketches' cost per value per row (the figure the issue
// bounds at 100 ns per feature): rows of the anomaly spec's 6 features, 16 rows per call, from 2
// goroutines; with-outputs adds the model's answers (2 output values of the profile, in a layout
// of 3), each a column like a feature.
func BenchmarkObserve(b *testing.B) {
	spec := anomalySpec(b)
	w := spec.Width()
	const per = 16
	data := rows(rand.New(rand.NewPCG(2, 2)), 4096, w, -1, 0)
	outs := rowOutputs(data, w)
	for _, c := range []struct {
		name    string
		p       *Profile
		layout  []string
		columns int
	}{
		{"features", profileOf(b, spec, 5000), nil, w},
		{"with-outputs", profileWithOutputs(b, spec, 5000), testLayout, w + len(testOutputs)},
	} {
		b.Run(c.name, func(b *testing.B) {
			m, err := NewMonitor(c.p, Config{Outputs: c.layout})
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					off := (i * per) % (4096 - per)
					m.Observe(data[off*w:(off+per)*w], w, outs[off:off+per])
					i++
				}
			})
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*per*c.columns), "ns/value-row")
		})
	}
}

// TestExporter: the scores of the newest window with a verdict, the drifted count, and each
// feature's histogram over the reference edges with its totals since the start.
func TestExporter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		spec := anomalySpec(t)
		p := profileWithOutputs(t, spec, 5000)
		w := spec.Width()
		m, err := NewMonitor(p, Config{Window: time.Minute, Keep: 2, Outputs: testLayout})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 4 { // 4 windows, 2 kept: the totals hold all four
			data := rows(rand.New(rand.NewPCG(uint64(i), 9)), 1000, w, 2, 1)
			m.Observe(data, w, rowOutputs(data, w))
			time.Sleep(time.Minute) // synctest's clock
		}
		m.Observe(rows(rand.New(rand.NewPCG(5, 9)), 10, w, -1, 0), w, nil) // a fresh window, no verdict
		reg := prometheus.NewPedanticRegistry()
		e := NewExporter()
		e.Set(map[string]*Monitor{"anomaly": m})
		reg.MustRegister(e)
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]*dto.MetricFamily{}
		for _, mf := range mfs {
			got[mf.GetName()] = mf
		}
		if v := got["model_features_drifted"].GetMetric()[0].GetGauge().GetValue(); v != 1 {
			t.Errorf("model_features_drifted %v, want 1 (the shifted feature)", v)
		}
		if v := got["model_drift_window_rows"].GetMetric()[0].GetGauge().GetValue(); v != 1000 {
			t.Errorf("model_drift_window_rows %v, want the newest window with a verdict's 1000", v)
		}
		var hist *dto.Histogram
		for _, mm := range got["model_feature_values"].GetMetric() {
			for _, l := range mm.GetLabel() {
				if l.GetName() == "feature" && l.GetValue() == p.Features[0].Name {
					hist = mm.GetHistogram()
				}
			}
		}
		if hist == nil || hist.GetSampleCount() != 4010 || len(hist.GetBucket()) != len(p.Features[0].Edges) {
			t.Fatalf("histogram of %s: %v", p.Features[0].Name, hist)
		}
		if n := len(got["model_data_drift_score"].GetMetric()); n != 3*w {
			t.Errorf("%d scores, want 3 methods x %d features", n, w)
		}
		if n := len(got["model_feature_reference_ratio"].GetMetric()); n != w*DefaultBins {
			t.Errorf("%d reference ratios, want %d", n, w*DefaultBins)
		}
		// Prediction drift: out[0] answers the shifted feature 2, out[1] feature 0.
		pred := map[string]float64{}
		for _, mm := range got["model_prediction_drift_score"].GetMetric() {
			for _, l := range mm.GetLabel() {
				if l.GetName() == "output" {
					pred[l.GetValue()] = mm.GetGauge().GetValue()
				}
			}
		}
		if len(pred) != 2 || !(pred["out[0]"] > DefaultPSIThreshold) || !(pred["out[1]"] < DefaultPSIThreshold) {
			t.Errorf("model_prediction_drift_score: %v; want out[0] above %v, out[1] below", pred, DefaultPSIThreshold)
		}
	})
}

// TestProfileOutputs: a profile with the model's outputs round-trips, binds to a model answering
// them by name in any layout, and is refused for one that does not answer them all, or whose
// answers have no fixed layout; the builder refuses outputs that do not match the rows.
func TestProfileOutputs(t *testing.T) {
	spec := anomalySpec(t)
	p := profileWithOutputs(t, spec, 3000)
	if len(p.Outputs) != 2 || p.Outputs[0].Name != "out[0]" || p.Outputs[0].Mean != p.Features[2].Mean || p.Outputs[1].Std != p.Features[0].Std {
		t.Fatalf("outputs %+v", p.Outputs)
	}
	var buf bytes.Buffer
	if err := p.Write(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := ReadProfile(bytes.NewReader(buf.Bytes()), spec)
	if err != nil || len(back.Outputs) != 2 || !slices.Equal(back.Outputs[1].Edges, p.Outputs[1].Edges) {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := NewMonitor(p, Config{Outputs: testLayout}); err != nil {
		t.Errorf("a layout with both outputs: %v", err)
	}
	for name, layout := range map[string][]string{"one missing": {"out[0]", "other"}, "no fixed layout": nil} {
		err := p.CheckOutputs(layout)
		if err == nil || !strings.Contains(err.Error(), "out[") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := NewMonitor(p, Config{Outputs: []string{"out[1]"}}); err == nil || !strings.Contains(err.Error(), "out[0]") {
		t.Errorf("a monitor of a model not answering out[0]: %v", err)
	}
	if err := profileOf(t, spec, 100).CheckOutputs(nil); err != nil {
		t.Errorf("a profile without outputs binds to any model: %v", err)
	}
	// The outputs hold for the model profiled only; the features for any model of the spec.
	p.ModelDigest = "sha256:aa"
	for digest, keep := range map[string]bool{"sha256:aa": true, "": true, "sha256:bb": false} {
		q, why := p.OutputsFor(digest)
		if kept := len(q.Outputs) == 2; kept != keep || (why == "") != keep || len(q.Features) != len(p.Features) {
			t.Errorf("model %q: %d outputs kept (%q); want kept %v", digest, len(q.Outputs), why, keep)
		}
	}
	if len(p.Outputs) != 2 {
		t.Error("OutputsFor changed the profile it was called on")
	}

	b, err := NewBuilder(spec, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.SetOutputs([]string{"a", "a"}); err == nil {
		t.Error("an output named twice was taken")
	}
	if err := b.SetOutputs([]string{"a", "b"}); err != nil {
		t.Fatal(err)
	}
	if err := b.AddOutputs(make([]float32, 3)); err == nil {
		t.Error("half an output row was taken")
	}
	if err := b.Add(rows(rand.New(rand.NewPCG(3, 3)), 10, spec.Width(), -1, 0)); err != nil {
		t.Fatal(err)
	}
	if err := b.AddOutputs(make([]float32, 2*9)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Profile(); err == nil || !strings.Contains(err.Error(), "9 rows of outputs for 10 rows") {
		t.Errorf("outputs of 9 rows for 10: %v", err)
	}
}

// TestReportsMarshalNotANumber: a score or accuracy that is not a number (a column with no finite
// value in a window; a classifier's MAE) is null in JSON, so that the webhook's alert and the
// reports still encode.
func TestReportsMarshalNotANumber(t *testing.T) {
	al := Alert{Model: "m", Kind: AlertAccuracy,
		Window:   WindowReport{Features: []FeatureScore{{Name: "cpu", PSI: 0.5, JS: 0.1, Wasserstein: math.NaN(), Score: 0.5}}},
		Accuracy: &AccuracyReport{Accuracy: 0.75, MAE: math.NaN(), Points: 4}}
	b, err := json.Marshal(al)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"psi":0.5`, `"wasserstein":null`, `"score":0.5`, `"accuracy":0.75`, `"mae":null`, `"points":4`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s lacks %s", b, want)
		}
	}
	if strings.Count(string(b), `"psi"`) != 1 {
		t.Errorf("psi encoded twice: %s", b)
	}
	// And back: null is NaN again, the rest as it was.
	var back Alert
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	f := back.Window.Features[0]
	if f.Name != "cpu" || f.PSI != 0.5 || f.Score != 0.5 || !math.IsNaN(f.Wasserstein) || back.Accuracy.Accuracy != 0.75 || !math.IsNaN(back.Accuracy.MAE) || back.Accuracy.Points != 4 {
		t.Errorf("decoded %+v, accuracy %+v", f, back.Accuracy)
	}
}
