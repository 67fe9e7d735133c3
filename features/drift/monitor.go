package drift

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"
)

// Defaults of a Monitor, applied by NewMonitor to zero Config fields.
const (
	DefaultWindow     = 5 * time.Minute
	DefaultKeep       = 12
	DefaultMinSamples = 500
	DefaultShare      = 0.5
	// SketchAccuracy is the DDSketch's relative accuracy, and SketchBins the most bins of each of
	// its two stores (values of either sign): with 2% and 128 bins a store spans a ratio of 160
	// between its smallest and largest magnitudes, and smaller ones fold into its lowest bin.
	// This bounds a feature's sketch to about 2 KiB.
	SketchAccuracy = 0.02
	SketchBins     = 128
)

// Config is a Monitor's plain-data configuration.
type Config struct {
	// Window is the length of a window (aligned to multiples of it); Keep how many recent
	// windows are kept, the current one included. Zero: DefaultWindow, DefaultKeep.
	Window time.Duration
	Keep   int
	// MinSamples: below this many rows in a window, no verdict. Zero: DefaultMinSamples.
	MinSamples int64
	// Share: the model drifts when more than this share of its features drift. Zero:
	// DefaultShare.
	Share float64
	// Methods gives a feature's method by its name (missing: MethodPSI); Thresholds a method's
	// threshold (missing: DefaultThreshold).
	Methods    map[string]string
	Thresholds map[string]float64
	// Outputs is the layout of the model's answered rows, one name per value (OutputColumn), as
	// Observe receives them: the profile's outputs are found in it by name (each must be there).
	// Nil: the outputs are not observed (a merger scoring sketches, a model whose answers have no
	// fixed layout).
	Outputs []string
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
}

// Validate checks c against the profile's features.
func (c Config) Validate(p *Profile) error {
	switch {
	case c.Window < 0, c.Keep < 0, c.MinSamples < 0:
		return fmt.Errorf("drift: window %v, keep %d, min_samples %d: none may be negative", c.Window, c.Keep, c.MinSamples)
	case !(c.Share >= 0 && c.Share <= 1):
		return fmt.Errorf("drift: share %v is not in 0..1", c.Share)
	}
	for f, m := range c.Methods {
		if err := CheckMethod(m); err != nil {
			return fmt.Errorf("drift: methods[%s]: %w", f, err)
		}
		found := false
		for _, r := range p.columns() {
			found = found || r.Name == f
		}
		if !found {
			return fmt.Errorf("drift: methods names feature %q, which the spec does not have (nor the profile's outputs)", f)
		}
	}
	for m, t := range c.Thresholds {
		if err := CheckMethod(m); err != nil {
			return fmt.Errorf("drift: thresholds: %w", err)
		}
		if !(t > 0) {
			return fmt.Errorf("drift: thresholds[%s]: %v is not positive", m, t)
		}
	}
	if c.Outputs != nil {
		return p.CheckOutputs(c.Outputs)
	}
	return nil
}

// Monitor keeps live sketches of a model's canonical rows, per window, and scores them against
// its Profile. Observe may be called concurrently with everything; it takes one shard's lock per
// call (shards: GOMAXPROCS), never a global one.
type Monitor struct {
	p   *Profile
	cfg Config
	// mu guards ring, retired and the creation of windows.
	mu   sync.Mutex
	ring []*window // oldest first, at most cfg.Keep
	// retired holds, per feature, the counts, missing values and sums of the windows dropped
	// from ring: with the ring's, the totals since the start (Totals).
	retired []Total
	cur     atomic.Pointer[window]
	pick    atomic.Uint32
	// cols are the profile's features then its outputs; a window keeps a Sketch of each.
	cols []Reference
	w    int // features per row
	// outIdx is, per profile output, its value's index in an answered row (Config.Outputs); nil:
	// outputs are not observed.
	outIdx []int
	// offset is, per feature, what the DDSketch's values are taken relative to: the reference's
	// minimum less one, so that the values it holds are about 1 and up. Canonical values are
	// centred on 0, and a sketch of relative accuracy over a bounded range of magnitudes would
	// fold the small ones into its lowest bin whenever a window holds a large one; relative to
	// the minimum, a store's range (a ratio of 160) covers a feature's whole reference range in
	// the example specs, with an error of 2% of the distance from the minimum.
	offset []float64
}

// window is one window's accumulators, one set per shard.
type window struct {
	start, end time.Time
	shards     []shard
}

type shard struct {
	mu    sync.Mutex
	feats []Sketch // per column: the features, then the outputs
	_     [40]byte // keeps two shards' locks off one cache line
}

// Sketch is one feature's live distribution in a window: its counts over the reference bins, its
// non-finite values, and a DDSketch of its finite values less the monitor's offset (the
// reference's minimum less one, see Monitor). Sketches of one profile merge exactly.
type Sketch struct {
	Counts  []int64
	Missing int64
	// Sum is the sum of the finite values.
	Sum float64
	DD  *ddsketch.DDSketch
}

func newSketch(bins int) Sketch {
	dd, err := ddsketch.LogCollapsingLowestDenseDDSketch(SketchAccuracy, SketchBins)
	if err != nil {
		panic(err) // the constants are valid
	}
	return Sketch{Counts: make([]int64, bins), DD: dd}
}

// Rows is the number of values the sketch took, finite or not.
func (s *Sketch) Rows() int64 {
	n := s.Missing
	for _, c := range s.Counts {
		n += c
	}
	return n
}

// Merge adds o into s (o's bins must be s's).
func (s *Sketch) Merge(o *Sketch) error {
	if len(o.Counts) != len(s.Counts) {
		return fmt.Errorf("drift: merging a sketch of %d bins into one of %d", len(o.Counts), len(s.Counts))
	}
	for i, c := range o.Counts {
		s.Counts[i] += c
	}
	s.Missing += o.Missing
	s.Sum += o.Sum
	return s.DD.MergeWith(o.DD)
}

// NewMonitor makes a Monitor of profile p.
func NewMonitor(p *Profile, cfg Config) (*Monitor, error) {
	if err := cfg.Validate(p); err != nil {
		return nil, err
	}
	cfg.Window = cmp.Or(cfg.Window, DefaultWindow)
	cfg.Keep = cmp.Or(cfg.Keep, DefaultKeep)
	cfg.MinSamples = cmp.Or(cfg.MinSamples, DefaultMinSamples)
	cfg.Share = cmp.Or(cfg.Share, DefaultShare)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := &Monitor{p: p, cfg: cfg, cols: p.columns(), w: len(p.Features)}
	m.offset = make([]float64, len(m.cols))
	for j, r := range m.cols {
		m.offset[j] = r.Min - 1
	}
	if cfg.Outputs != nil && len(p.Outputs) > 0 {
		m.outIdx = make([]int, len(p.Outputs))
		for k, r := range p.Outputs {
			m.outIdx[k] = slices.Index(cfg.Outputs, r.Name) // CheckOutputs found each
		}
	}
	return m, nil
}

// Profile is the monitor's reference.
func (m *Monitor) Profile() *Profile { return m.p }

func (m *Monitor) newWindow(start time.Time) *window {
	w := &window{start: start, end: start.Add(m.cfg.Window), shards: make([]shard, max(runtime.GOMAXPROCS(0), 1))}
	for i := range w.shards {
		w.shards[i].feats = make([]Sketch, len(m.cols))
		for j, r := range m.cols {
			w.shards[i].feats[j] = newSketch(len(r.Counts))
		}
	}
	return w
}

// window returns the window of now, starting a new one (and dropping the oldest past Keep) when
// now is past the current one.
func (m *Monitor) window(now time.Time) *window {
	if w := m.cur.Load(); w != nil && now.Before(w.end) && !now.Before(w.start) {
		return w
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if w := m.cur.Load(); w != nil && now.Before(w.end) && !now.Before(w.start) {
		return w
	}
	start := now.Truncate(m.cfg.Window)
	for _, w := range m.ring { // the clock went back into a kept window
		if !start.Before(w.start) && start.Before(w.end) {
			return w
		}
	}
	w := m.newWindow(start)
	m.ring = append(m.ring, w)
	if drop := len(m.ring) - m.cfg.Keep; drop > 0 {
		for _, old := range m.ring[:drop] {
			m.retireLocked(old)
		}
		m.ring = append(m.ring[:0:0], m.ring[drop:]...)
	}
	m.cur.Store(w)
	return w
}

// lock locks a shard of w, the first free one from start (all busy: start's, waiting).
func (w *window) lock(start int) *shard {
	n := len(w.shards)
	for i := range n {
		if sh := &w.shards[(start+i)%n]; sh.mu.TryLock() {
			return sh
		}
	}
	sh := &w.shards[start%n]
	sh.mu.Lock()
	return sh
}

// Total is one feature's counts since the monitor started: over the reference bins, not
// finite, and the sum of the finite values.
type Total struct {
	Counts  []int64
	Missing int64
	Sum     float64
}

func (t *Total) add(s *Sketch) {
	if t.Counts == nil {
		t.Counts = make([]int64, len(s.Counts))
	}
	for i, c := range s.Counts {
		t.Counts[i] += c
	}
	t.Missing += s.Missing
	t.Sum += s.Sum
}

// retireLocked folds a window leaving the ring into retired. (A call that took the window just
// before it left may still add to it: those rows are in its sketches, not in the totals.)
func (m *Monitor) retireLocked(w *window) {
	if m.retired == nil {
		m.retired = make([]Total, len(m.cols))
	}
	for k := range w.shards {
		sh := &w.shards[k]
		sh.mu.Lock()
		for j := range sh.feats {
			m.retired[j].add(&sh.feats[j])
		}
		sh.mu.Unlock()
	}
}

// Totals returns each column's counts since the monitor started (the windows dropped, and those
// kept), the features then the outputs: what a Prometheus histogram of the feature exports,
// monotonic.
func (m *Monitor) Totals() []Total {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Total, len(m.cols))
	for j, r := range m.cols {
		out[j].Counts = make([]int64, len(r.Counts))
		if m.retired != nil {
			out[j].add(&Sketch{Counts: m.retired[j].Counts, Missing: m.retired[j].Missing, Sum: m.retired[j].Sum})
		}
	}
	for _, w := range m.ring {
		for k := range w.shards {
			sh := &w.shards[k]
			sh.mu.Lock()
			for j := range sh.feats {
				out[j].add(&sh.feats[j])
			}
			sh.mu.Unlock()
		}
	}
	return out
}

// Observe takes canonical rows (size values each, the spec's Size): each feature's value at the
// row's last step; and, when the monitor observes outputs (Config.Outputs), outputs[i] the
// answered values of row i, in the layout of Config.Outputs (nil: none).
func (m *Monitor) Observe(rows []float32, size int, outputs [][]float32) {
	if size < m.w || len(rows) < size {
		return
	}
	w := m.window(m.cfg.Now())
	sh := w.lock(int(m.pick.Add(1)))
	defer sh.mu.Unlock()
	for i, off := 0, 0; off+size <= len(rows); i, off = i+1, off+size {
		for j, v := range rows[off+size-m.w : off+size] {
			m.add(&sh.feats[j], j, v)
		}
		if m.outIdx == nil || i >= len(outputs) {
			continue
		}
		out := outputs[i]
		for k, idx := range m.outIdx {
			if idx < len(out) {
				m.add(&sh.feats[m.w+k], m.w+k, out[idx])
			}
		}
	}
}

// add takes value v of column j into its sketch s.
func (m *Monitor) add(s *Sketch, j int, v float32) {
	f := float64(v)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		s.Missing++
		return
	}
	s.Counts[bin(m.cols[j].Edges, f)]++
	s.Sum += f
	s.DD.Add(f - m.offset[j])
}

// Sketches returns the windows' sketches, merged over shards: for each kept window (newest
// first) its start, end and one Sketch per feature. The caller owns them.
func (m *Monitor) Sketches() []WindowSketches {
	m.mu.Lock()
	ring := append([]*window(nil), m.ring...)
	m.mu.Unlock()
	out := make([]WindowSketches, 0, len(ring))
	for i := len(ring) - 1; i >= 0; i-- {
		w := ring[i]
		all := make([]Sketch, len(m.cols))
		for j, r := range m.cols {
			all[j] = newSketch(len(r.Counts))
		}
		for k := range w.shards {
			sh := &w.shards[k]
			sh.mu.Lock()
			for j := range sh.feats {
				all[j].Merge(&sh.feats[j])
			}
			sh.mu.Unlock()
		}
		ws := WindowSketches{Start: w.start, End: w.end, Features: all[:m.w:m.w]}
		if len(all) > m.w {
			ws.Outputs = all[m.w:]
		}
		out = append(out, ws)
	}
	return out
}

// WindowSketches are one window's sketches, one per feature in the profile's order, and one per
// output of the profile (none when it has none).
type WindowSketches struct {
	Start, End time.Time
	Features   []Sketch
	Outputs    []Sketch
}

// FeatureScore is one feature's drift in a window.
type FeatureScore struct {
	Name string `json:"name"`
	// Rows and Missing count the window's values, and those not finite.
	Rows    int64 `json:"rows"`
	Missing int64 `json:"missing"`
	// MissingRate and RefMissingRate are the window's and the reference's shares of non-finite
	// values; MissingChange the difference.
	MissingRate    float64 `json:"missing_rate"`
	RefMissingRate float64 `json:"reference_missing_rate"`
	MissingChange  float64 `json:"missing_change"`
	PSI            float64 `json:"psi"`
	JS             float64 `json:"js"`
	Wasserstein    float64 `json:"wasserstein"`
	// Method and Threshold decide Drifted (no verdict: false, see WindowReport.Verdict).
	Method    string  `json:"method"`
	Threshold float64 `json:"threshold"`
	Score     float64 `json:"score"`
	Drifted   bool    `json:"drifted"`
}

// MarshalJSON writes the scores that are not numbers (NaN: a column with no finite value in the
// window) as null, which JSON can carry.
func (f FeatureScore) MarshalJSON() ([]byte, error) {
	type plain FeatureScore
	return json.Marshal(struct {
		plain
		PSI         *float64 `json:"psi"`
		JS          *float64 `json:"js"`
		Wasserstein *float64 `json:"wasserstein"`
		Score       *float64 `json:"score"`
	}{plain(f), finiteOrNil(f.PSI), finiteOrNil(f.JS), finiteOrNil(f.Wasserstein), finiteOrNil(f.Score)})
}

// UnmarshalJSON reads MarshalJSON's form: a null score is NaN.
func (f *FeatureScore) UnmarshalJSON(b []byte) error {
	type plain FeatureScore
	var v struct {
		plain
		PSI         *float64 `json:"psi"`
		JS          *float64 `json:"js"`
		Wasserstein *float64 `json:"wasserstein"`
		Score       *float64 `json:"score"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*f = FeatureScore(v.plain)
	f.PSI, f.JS, f.Wasserstein, f.Score = orNaN(v.PSI), orNaN(v.JS), orNaN(v.Wasserstein), orNaN(v.Score)
	return nil
}

// orNaN is *p, or NaN when p is nil (a JSON null).
func orNaN(p *float64) float64 {
	if p == nil {
		return math.NaN()
	}
	return *p
}

// finiteOrNil is &v, or nil when v is not finite.
func finiteOrNil(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// WindowReport is a window's drift.
type WindowReport struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	Rows  int64     `json:"rows"`
	// Verdict is false below MinSamples rows: then nothing is said to drift.
	Verdict bool `json:"verdict"`
	// Drifted features, their Share of all, and whether that share exceeds Config.Share.
	Drifted      int            `json:"drifted"`
	Share        float64        `json:"share"`
	ModelDrifted bool           `json:"model_drifted"`
	Features     []FeatureScore `json:"features"`
	// Outputs are the prediction drift of the profile's output columns, scored as features are
	// (their Drifted is set with a verdict) but not counted in Drifted and Share: the model's
	// verdict is on its inputs.
	Outputs []FeatureScore `json:"outputs,omitempty"`
}

// Score scores one window's sketches against the profile.
func (m *Monitor) Score(ws WindowSketches) WindowReport {
	rep := WindowReport{Start: ws.Start, End: ws.End}
	for j := range m.p.Features {
		fs := m.scoreColumn(j, &ws.Features[j])
		rep.Rows = max(rep.Rows, fs.Rows)
		rep.Features = append(rep.Features, fs)
	}
	for k := range ws.Outputs {
		if k < len(m.p.Outputs) {
			rep.Outputs = append(rep.Outputs, m.scoreColumn(m.w+k, &ws.Outputs[k]))
		}
	}
	rep.Verdict = rep.Rows >= m.cfg.MinSamples
	if rep.Verdict {
		for i := range rep.Features {
			f := &rep.Features[i]
			f.Drifted = f.Score > f.Threshold
			if f.Drifted {
				rep.Drifted++
			}
		}
		for i := range rep.Outputs {
			o := &rep.Outputs[i]
			o.Drifted = o.Score > o.Threshold && o.Rows >= m.cfg.MinSamples
		}
		rep.Share = float64(rep.Drifted) / float64(len(rep.Features))
		rep.ModelDrifted = rep.Share > m.cfg.Share
	}
	return rep
}

// scoreColumn scores column j's sketch s against its reference.
func (m *Monitor) scoreColumn(j int, s *Sketch) FeatureScore {
	r := &m.cols[j]
	rows := s.Rows()
	fs := FeatureScore{Name: r.Name, Rows: rows, Missing: s.Missing, Method: MethodPSI}
	if mm, ok := m.cfg.Methods[r.Name]; ok {
		fs.Method = mm
	}
	fs.Threshold = DefaultThreshold(fs.Method)
	if t, ok := m.cfg.Thresholds[fs.Method]; ok {
		fs.Threshold = t
	}
	refRows := r.Total() + r.Missing
	fs.RefMissingRate = float64(r.Missing) / float64(max(refRows, 1))
	if rows > 0 {
		fs.MissingRate = float64(s.Missing) / float64(rows)
	}
	fs.MissingChange = fs.MissingRate - fs.RefMissingRate
	fs.PSI = PSI(r.Counts, s.Counts)
	fs.JS = JSDistance(r.Counts, s.Counts)
	fs.Wasserstein = math.NaN()
	if !s.DD.IsEmpty() {
		if live, err := s.DD.GetValuesAtQuantiles(quantileLevels); err == nil {
			for i := range live {
				live[i] += m.offset[j]
			}
			fs.Wasserstein = Wasserstein(r.Quantiles, live, r.Std)
		}
	}
	switch fs.Method {
	case MethodJS:
		fs.Score = fs.JS
	case MethodWasserstein:
		fs.Score = fs.Wasserstein
	default:
		fs.Score = fs.PSI
	}
	return fs
}

// Report scores every kept window, newest first.
func (m *Monitor) Report() []WindowReport {
	var out []WindowReport
	for _, ws := range m.Sketches() {
		out = append(out, m.Score(ws))
	}
	return out
}
