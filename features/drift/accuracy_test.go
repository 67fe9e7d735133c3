package drift

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/novacron/sidecar/features"
)

// accClock is a settable clock, safe for concurrent use.
type accClock struct{ ns atomic.Int64 }

func newAccClock(t time.Time) *accClock {
	c := &accClock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *accClock) Now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *accClock) Set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *accClock) Add(d time.Duration) { c.ns.Add(int64(d)) }

var accBase = time.Date(2025, 3, 3, 0, 0, 0, 0, time.UTC)

func newTestAccuracy(t testing.TB, cfg AccuracyConfig) (*Accuracy, *accClock) {
	t.Helper()
	clk := newAccClock(accBase)
	cfg.Now = clk.Now
	a, err := NewAccuracy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a, clk
}

// TestAccuracyMatchesOffline is the accuracy join: forecasts scored against the network_io pushed
// later equal the offline metric of train.py (1 − Σ|y − ŷ| / Σ|y|, and MAE) computed directly over
// the same points, at checkpoints through two hours of jittered pushes, with second pushes in a
// step, steps with no push and the window rolling past the first hour.
func TestAccuracyMatchesOffline(t *testing.T) {
	const (
		vms     = 5
		minutes = 120
		horizon = 10
		step    = time.Minute
	)
	a, clk := newTestAccuracy(t, AccuracyConfig{}) // the defaults: 1m steps, 16 per VM, 1h window
	r := rand.New(rand.NewPCG(12, 34))

	type sample struct {
		vm int
		t  time.Time
		y  float64
	}
	var samples []sample
	for v := range vms {
		phase := 20*time.Second + time.Duration(r.Int64N(int64(time.Minute)))
		level := 100 + 500*r.Float64()
		for m := range minutes {
			y := math.Max(0, level*(1+0.3*math.Sin(float64(m)/15))+20*r.NormFloat64())
			jitter := time.Duration(r.Int64N(int64(40*time.Second))) - 20*time.Second
			at := accBase.Add(phase + time.Duration(m)*step + jitter)
			if m > 0 && r.Float64() < 0.04 {
				continue // no push this minute
			}
			samples = append(samples, sample{v, at, y})
			if r.Float64() < 0.1 { // a second push a few seconds later: the latest wins
				samples = append(samples, sample{v, at.Add(time.Duration(1+r.Int64N(8)) * time.Second), y + 30*r.NormFloat64()})
			}
		}
	}
	slices.SortStableFunc(samples, func(x, y sample) int { return x.t.Compare(y.t) })

	// Each VM's grid, as features.Windows makes it: centred on its first sample plus whole steps.
	origin := map[int]time.Time{}
	stepOf := func(vm int, at time.Time) int64 {
		d := at.Sub(origin[vm]) + step/2
		k := int64(d / step)
		if d < 0 && d%step != 0 {
			k--
		}
		return k
	}
	type forecast struct {
		vm    int
		k     int64 // the step of the window's last sample
		made  time.Time
		preds []float64
	}
	var forecasts []forecast
	type key struct {
		vm int
		k  int64
	}

	// offline computes the report at clock now from the samples pushed by then, directly: the
	// truth of a step is its latest sample; a point is in the window when its truth was pushed in
	// one of the last 60 minutes of the clock (counted from its start), a forecast when it was made
	// there, and counts as evaluated when the first truth of any of its steps was pushed there.
	offline := func(now time.Time) (rep AccuracyReport, all int64) {
		bucket := func(t time.Time) int64 { return int64(t.Sub(accBase) / step) }
		in := func(t time.Time) bool { b := bucket(t); return b > bucket(now)-60 && b <= bucket(now) }
		type truth struct {
			y           float64
			first, last time.Time
		}
		truths := map[key]*truth{}
		for _, s := range samples {
			if s.t.After(now) {
				break
			}
			k := key{s.vm, stepOf(s.vm, s.t)}
			if tr := truths[k]; tr != nil {
				tr.y, tr.last = s.y, s.t
			} else {
				truths[k] = &truth{s.y, s.t, s.t}
			}
		}
		var absErr, absY float64
		for _, f := range forecasts {
			if f.made.After(now) {
				continue
			}
			if in(f.made) {
				rep.Forecasts++
			}
			var firstEval time.Time
			for h := 1; h <= horizon; h++ {
				tr := truths[key{f.vm, f.k + int64(h)}]
				if tr == nil {
					continue
				}
				if firstEval.IsZero() {
					firstEval = tr.first
				}
				all++
				if in(tr.last) {
					rep.Points++
					absErr += math.Abs(tr.y - f.preds[h-1])
					absY += math.Abs(tr.y)
				}
			}
			if !firstEval.IsZero() && in(firstEval) {
				rep.Evaluated++
			}
		}
		rep.Accuracy, rep.MAE = math.NaN(), math.NaN()
		if rep.Points > 0 {
			rep.Accuracy = 1 - absErr/absY
			rep.MAE = absErr / float64(rep.Points)
		}
		return rep, all
	}

	check := func(now time.Time) (windowed, all int64) {
		t.Helper()
		clk.Set(now)
		got := a.Report()
		want, all := offline(now)
		if got.Points != want.Points || got.Forecasts != want.Forecasts || got.Evaluated != want.Evaluated || got.Dropped != 0 {
			t.Fatalf("at %v: report %+v, offline %+v (dropped must be 0)", now.Sub(accBase), got, want)
		}
		if want.Points == 0 {
			if !math.IsNaN(got.Accuracy) || !math.IsNaN(got.MAE) {
				t.Fatalf("at %v: no point in the window, report %+v, want NaN", now.Sub(accBase), got)
			}
			return 0, all
		}
		if math.Abs(got.Accuracy-want.Accuracy) > 1e-9 || math.Abs(got.MAE-want.MAE) > 1e-9 {
			t.Fatalf("at %v: accuracy %.15f MAE %.15f, offline %.15f and %.15f", now.Sub(accBase),
				got.Accuracy, got.MAE, want.Accuracy, want.MAE)
		}
		return want.Points, all
	}

	seen := map[key]bool{}
	next := accBase.Add(7 * time.Minute)
	for _, s := range samples {
		for s.t.After(next) {
			check(next)
			next = next.Add(13*time.Minute + 17*time.Second)
		}
		if _, ok := origin[s.vm]; !ok {
			origin[s.vm] = s.t
		}
		vm := fmt.Sprintf("vm-%d", s.vm)
		clk.Set(s.t)
		a.Actual(vm, s.t, s.y)
		k := stepOf(s.vm, s.t)
		if seen[key{s.vm, k}] {
			continue
		}
		// The first push of a step completes a window: forecast from it, at the step's centre.
		seen[key{s.vm, k}] = true
		preds := make([]float64, horizon)
		for h := range preds {
			preds[h] = math.Max(0, s.y+float64(h)+25*r.NormFloat64())
		}
		a.Forecast(vm, origin[s.vm].Add(time.Duration(k)*step), preds)
		forecasts = append(forecasts, forecast{s.vm, k, s.t, preds})
	}
	end := samples[len(samples)-1].t
	windowed, all := check(end)
	if windowed == 0 || windowed >= all || windowed < 2000 {
		t.Fatalf("the window holds %d of %d points: the test does not exercise the window", windowed, all)
	}
	check(end.Add(20 * time.Minute)) // partly rolled out
	if windowed, _ := check(end.Add(2 * time.Hour)); windowed != 0 {
		t.Fatalf("two hours later %d points are still in the window", windowed)
	}
	if n := a.Len(); n > vms {
		t.Fatalf("%d VMs tracked, %d pushing", n, vms)
	}
}

// TestAccuracyDropped: forecasts pushed out by MaxPerVM before they were resolved, and those of VMs
// beyond MaxVMs, are counted as Dropped; a resolved forecast is freed, not dropped.
func TestAccuracyDropped(t *testing.T) {
	preds := []float64{90, 90, 90}
	t.Run("MaxPerVM", func(t *testing.T) {
		a, clk := newTestAccuracy(t, AccuracyConfig{MaxPerVM: 4})
		for k := range 6 {
			a.Forecast("a", accBase.Add(time.Duration(k)*time.Minute), preds)
		}
		if r := a.Report(); r.Forecasts != 6 || r.Dropped != 2 || r.Points != 0 {
			t.Fatalf("6 forecasts, 4 kept: %+v", r)
		}
		for m := 1; m <= 9; m++ {
			clk.Set(accBase.Add(time.Duration(m) * time.Minute))
			a.Actual("a", clk.Now(), 100)
		}
		// The forecasts at minutes 2..5 scored their 3 points each; those at 0 and 1 were gone.
		r := a.Report()
		if r.Points != 12 || r.Evaluated != 4 || math.Abs(r.MAE-10) > 1e-12 || math.Abs(r.Accuracy-0.9) > 1e-12 {
			t.Fatalf("report %+v, want 12 points, 4 evaluated, MAE 10, accuracy 0.9", r)
		}
		if a.Len() != 0 {
			t.Fatalf("every forecast resolved, %d VMs still tracked", a.Len())
		}
	})
	t.Run("resolved forecasts are not dropped", func(t *testing.T) {
		a, clk := newTestAccuracy(t, AccuracyConfig{MaxPerVM: 4})
		for m := range 30 {
			now := accBase.Add(time.Duration(m) * time.Minute)
			clk.Set(now)
			a.Actual("b", now, 100)
			a.Forecast("b", now, preds) // 4 pending at most: itself and the 3 before
		}
		// Forecast k has points for minutes k+1..k+3, scored up to minute 29: 27*3 + 2 + 1.
		if r := a.Report(); r.Dropped != 0 || r.Forecasts != 30 || r.Points != 84 || r.Evaluated != 29 {
			t.Fatalf("report %+v: want 30 forecasts, 29 evaluated, 84 points, none dropped", r)
		}
	})
	t.Run("MaxVMs", func(t *testing.T) {
		a, _ := newTestAccuracy(t, AccuracyConfig{MaxVMs: 3})
		for _, vm := range []string{"a", "b", "c", "d", "e", "a"} {
			a.Forecast(vm, accBase, preds)
		}
		if r := a.Report(); r.Forecasts != 4 || r.Dropped != 2 || a.Len() != 3 {
			t.Fatalf("report %+v, %d VMs: want 4 kept (a twice), 2 dropped, 3 VMs", r, a.Len())
		}
	})
}

// TestAccuracyBounded: after 1e5 VMs with one forecast each and no truth, the tracker keeps at most
// MaxVMs of them and counts the rest as dropped; once their forecasts expire, a sweep frees them.
func TestAccuracyBounded(t *testing.T) {
	const maxVMs, n = 1000, 100000
	a, clk := newTestAccuracy(t, AccuracyConfig{MaxVMs: maxVMs})
	preds := make([]float64, 10)
	for i := range n {
		a.Forecast(fmt.Sprintf("vm-%d", i), accBase, preds)
	}
	held, points := 0, 0
	for i := range a.shards {
		held += len(a.shards[i].vms)
		for _, v := range a.shards[i].vms {
			for _, f := range v.fs {
				points += cap(f.points)
			}
		}
	}
	if a.Len() != maxVMs || held != maxVMs || points != maxVMs*len(preds) {
		t.Fatalf("Len %d, %d VMs in the shards, %d points held: want %d VMs, %d points", a.Len(), held, points, maxVMs, maxVMs*len(preds))
	}
	if r := a.Report(); r.Forecasts != maxVMs || r.Dropped != n-maxVMs {
		t.Fatalf("report %+v: want %d kept, %d dropped", r, maxVMs, n-maxVMs)
	}
	// The last point's step ends at 10m30s; an hour after that, nothing pending can be scored.
	clk.Set(accBase.Add(10*time.Minute + 30*time.Second + time.Hour))
	a.Forecast("new", clk.Now(), preds)
	if a.Len() != 1 {
		t.Fatalf("after expiry a new VM's forecast left %d VMs tracked, want 1", a.Len())
	}
}

// TestAccuracyUnmatchedTruth: truths for no VM, before a point's step, or for a step already final
// score nothing; the steps are half-open, [target − Step/2, target + Step/2).
func TestAccuracyUnmatchedTruth(t *testing.T) {
	a, clk := newTestAccuracy(t, AccuracyConfig{})
	a.Actual("nobody", accBase, 1)
	if a.Len() != 0 || a.Report().Points != 0 {
		t.Fatalf("a truth for no forecast changed the tracker: %+v", a.Report())
	}
	a.Forecast("a", accBase, []float64{10, 20})
	for _, tc := range []struct {
		name   string
		at     time.Duration
		y      float64
		points int64
		mae    float64
	}{
		{"the forecast's own step", 29 * time.Second, 50, 0, math.NaN()},
		{"just before point 0's step", 30*time.Second - 1, 50, 0, math.NaN()},
		{"another VM's truth", -1, 50, 0, math.NaN()},
		{"the start of point 1's step makes point 0 final", 90 * time.Second, 26, 1, 6},
		{"point 0's step, final: ignored", 60 * time.Second, 50, 1, 6},
	} {
		clk.Set(accBase.Add(tc.at))
		if tc.at < 0 {
			a.Actual("b", accBase.Add(90*time.Second), tc.y)
		} else {
			a.Actual("a", accBase.Add(tc.at), tc.y)
		}
		r := a.Report()
		if r.Points != tc.points || !(r.MAE == tc.mae || math.IsNaN(r.MAE) && math.IsNaN(tc.mae)) {
			t.Fatalf("%s: report %+v, want %d points, MAE %v", tc.name, r, tc.points, tc.mae)
		}
	}
}

// TestAccuracyLatestTruthInStep: the truth of a point is the latest sample of its step, as
// features.Windows keeps: a later one replaces the earlier's contribution (also across the
// window's buckets), an earlier one arriving after it is ignored, an equal time replaces.
func TestAccuracyLatestTruthInStep(t *testing.T) {
	a, clk := newTestAccuracy(t, AccuracyConfig{})
	a.Forecast("a", accBase, []float64{100})
	for _, tc := range []struct {
		name string
		at   time.Duration
		y    float64
		mae  float64
	}{
		{"first", 50 * time.Second, 150, 50},
		{"later, in the next bucket of the clock: replaces", 70 * time.Second, 110, 10},
		{"earlier than the latest: ignored", 60 * time.Second, 500, 10},
		{"as late as the latest: replaces", 70 * time.Second, 120, 20},
		{"the last instant of the step: replaces", 90*time.Second - 1, 90, 10},
	} {
		clk.Set(accBase.Add(tc.at))
		a.Actual("a", clk.Now(), tc.y)
		r := a.Report()
		if r.Points != 1 || r.Evaluated != 1 || r.Forecasts != 1 || math.Abs(r.MAE-tc.mae) > 1e-12 {
			t.Fatalf("%s: report %+v, want one point, MAE %v", tc.name, r, tc.mae)
		}
	}
	clk.Set(accBase.Add(90 * time.Second))
	a.Actual("a", clk.Now(), 1000) // the next step: the point is final, the forecast freed
	if r := a.Report(); r.Points != 1 || r.MAE != 10 || math.Abs(r.Accuracy-(1-10.0/90)) > 1e-12 || a.Len() != 0 {
		t.Fatalf("report %+v, %d VMs: want the point scored on 90, nothing pending", r, a.Len())
	}
}

// TestAccuracyNonFinite: NaN and ±Inf forecasts and truths are ignored and counted nowhere.
func TestAccuracyNonFinite(t *testing.T) {
	a, clk := newTestAccuracy(t, AccuracyConfig{})
	for _, p := range [][]float64{{math.NaN()}, {1, math.Inf(1)}, {math.Inf(-1), 2}, {}, nil} {
		a.Forecast("a", accBase, p)
	}
	if r := a.Report(); r.Forecasts != 0 || r.Dropped != 0 || a.Len() != 0 {
		t.Fatalf("non-finite or empty forecasts were counted: %+v, %d VMs", r, a.Len())
	}
	a.Forecast("a", accBase, []float64{10})
	clk.Set(accBase.Add(time.Minute))
	for _, y := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		a.Actual("a", clk.Now(), y)
	}
	if r := a.Report(); r.Points != 0 || r.Evaluated != 0 || !math.IsNaN(r.Accuracy) {
		t.Fatalf("a non-finite truth was scored: %+v", r)
	}
	a.Actual("a", clk.Now(), 8)
	if r := a.Report(); r.Points != 1 || r.MAE != 2 || r.Accuracy != 0.75 {
		t.Fatalf("report %+v, want the finite truth scored", r)
	}
}

// TestAccuracyExpiry: a forecast whose last point's step ended a Window ago is never scored and is
// freed; points leave the report a Window after they were scored.
func TestAccuracyExpiry(t *testing.T) {
	preds := make([]float64, 10)
	// The last point's step ends at 10m30s.
	expiry := 10*time.Minute + 30*time.Second + time.Hour
	for _, tc := range []struct {
		name   string
		now    time.Duration
		points int64
	}{
		{"just before expiry: scored", expiry - 1, 1},
		{"at expiry: expired", expiry, 0},
	} {
		a, clk := newTestAccuracy(t, AccuracyConfig{})
		a.Forecast("a", accBase, preds)
		clk.Set(accBase.Add(tc.now))
		a.Actual("a", accBase.Add(5*time.Minute), 1) // a late truth for point 4
		if r := a.Report(); r.Points != tc.points {
			t.Fatalf("%s: report %+v, want %d points", tc.name, r, tc.points)
		}
		if tc.points == 0 && a.Len() != 0 {
			t.Fatalf("%s: the expired forecast is still held (%d VMs)", tc.name, a.Len())
		}
	}

	a, clk := newTestAccuracy(t, AccuracyConfig{Window: 30 * time.Minute})
	a.Forecast("a", accBase, []float64{4})
	clk.Set(accBase.Add(time.Minute))
	a.Actual("a", clk.Now(), 5) // scored in the clock's step 1
	for _, tc := range []struct {
		now       time.Duration
		points    int64
		forecasts int64
	}{
		{29*time.Minute + 59*time.Second, 1, 1}, // steps 0..29: both
		{30 * time.Minute, 1, 0},                // steps 1..30: the point, not the forecast (step 0)
		{31 * time.Minute, 0, 0},                // steps 2..31: neither
	} {
		clk.Set(accBase.Add(tc.now))
		r := a.Report()
		if r.Points != tc.points || r.Forecasts != tc.forecasts || r.Evaluated != tc.points {
			t.Fatalf("at %v: report %+v, want %d points, %d forecasts", tc.now, r, tc.points, tc.forecasts)
		}
	}
}

// TestAccuracyEmptyReport: with nothing evaluated the accuracy and MAE are NaN; with only zero
// truths WAPE is undefined (NaN with no error, −Inf with some), as the offline formula gives.
func TestAccuracyEmptyReport(t *testing.T) {
	a, clk := newTestAccuracy(t, AccuracyConfig{})
	if r := a.Report(); !math.IsNaN(r.Accuracy) || !math.IsNaN(r.MAE) || r.Points != 0 || r.Forecasts != 0 || r.Evaluated != 0 || r.Dropped != 0 {
		t.Fatalf("empty tracker: %+v", r)
	}
	a.Forecast("a", accBase, []float64{0})
	a.Forecast("b", accBase, []float64{3})
	if r := a.Report(); !math.IsNaN(r.Accuracy) || r.Forecasts != 2 || r.Evaluated != 0 {
		t.Fatalf("forecasts without truth: %+v", r)
	}
	clk.Set(accBase.Add(time.Minute))
	a.Actual("a", clk.Now(), 0)
	if r := a.Report(); r.Points != 1 || !math.IsNaN(r.Accuracy) || r.MAE != 0 {
		t.Fatalf("a zero truth forecast exactly: %+v, want NaN accuracy, MAE 0", r)
	}
	a.Actual("b", clk.Now(), 0)
	if r := a.Report(); r.Points != 2 || !math.IsInf(r.Accuracy, -1) || r.MAE != 1.5 {
		t.Fatalf("zero truths, some error: %+v, want -Inf accuracy, MAE 1.5", r)
	}
}

func TestAccuracyConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  AccuracyConfig
		ok   bool
	}{
		{"zero", AccuracyConfig{}, true},
		{"explicit", AccuracyConfig{Step: 10 * time.Second, MaxPerVM: 1, MaxVMs: 1, Window: 10 * time.Second}, true},
		{"a week of minutes", AccuracyConfig{Window: 7 * 24 * time.Hour}, true},
		{"negative step", AccuracyConfig{Step: -1}, false},
		{"negative max per VM", AccuracyConfig{MaxPerVM: -1}, false},
		{"negative max VMs", AccuracyConfig{MaxVMs: -1}, false},
		{"negative window", AccuracyConfig{Window: -time.Minute}, false},
		{"window under a step", AccuracyConfig{Window: 30 * time.Second}, false},
		{"too many steps", AccuracyConfig{Window: 7*24*time.Hour + time.Minute}, false},
	} {
		err := tc.cfg.Validate()
		_, nerr := NewAccuracy(tc.cfg)
		if (err == nil) != tc.ok || (nerr == nil) != tc.ok {
			t.Errorf("%s: Validate %v, NewAccuracy %v, want ok=%v", tc.name, err, nerr, tc.ok)
		}
	}
	a, err := NewAccuracy(AccuracyConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if c := a.cfg; c.Step != features.DefaultStep || c.MaxPerVM != DefaultMaxPerVM || c.MaxVMs != features.DefaultMaxVMs ||
		c.Window != DefaultAccuracyWindow || c.Now == nil || a.steps != 60 {
		t.Fatalf("defaults: %+v, %d steps", c, a.steps)
	}
}

// TestAccuracyConcurrent: Forecast, Actual and Report from many goroutines (run with -race), over
// more VMs than MaxVMs; the bounds hold and the counts are consistent.
func TestAccuracyConcurrent(t *testing.T) {
	const (
		goroutines = 8
		ops        = 3000
		vms        = 200
		maxVMs     = 64
		maxPerVM   = 4
	)
	a, clk := newTestAccuracy(t, AccuracyConfig{MaxVMs: maxVMs, MaxPerVM: maxPerVM})
	var calls atomic.Int64
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			preds := []float64{1, 2, 3}
			for range ops {
				vm := fmt.Sprintf("vm-%d", r.IntN(vms))
				now := clk.Now()
				switch x := r.IntN(10); {
				case x < 4:
					a.Forecast(vm, now, preds)
					calls.Add(1)
				case x < 9:
					a.Actual(vm, now.Add(time.Duration(r.Int64N(int64(3*time.Minute)))), r.Float64()*4)
				default:
					if rep := a.Report(); rep.Points < 0 || rep.Evaluated > rep.Forecasts {
						t.Errorf("report %+v", rep)
					}
				}
				clk.Add(50 * time.Millisecond) // 8 x 3000 x 50ms = 20m, inside the window
			}
		})
	}
	wg.Wait()
	held := 0
	for i := range a.shards {
		sh := &a.shards[i]
		held += len(sh.vms)
		for vm, v := range sh.vms {
			if v.n < 1 || v.n > maxPerVM || len(v.fs) > maxPerVM {
				t.Fatalf("%s holds %d forecasts in %d slots, bound %d", vm, v.n, len(v.fs), maxPerVM)
			}
		}
	}
	r := a.Report()
	if held != a.Len() || held > maxVMs {
		t.Fatalf("%d VMs held, Len %d, bound %d", held, a.Len(), maxVMs)
	}
	if n := calls.Load(); r.Forecasts > n || r.Forecasts+r.Dropped < n || r.Dropped == 0 || r.Evaluated > r.Forecasts || r.Points < r.Evaluated {
		t.Fatalf("report %+v after %d forecasts", r, n)
	}
}

// accBenchVMs are the distinct VMs the benchmarks cycle through.
func accBenchVMs() []string {
	vms := make([]string, 1024)
	for i := range vms {
		vms[i] = fmt.Sprintf("vm-%04d", i)
	}
	return vms
}

// BenchmarkForecast: a forecast of 10 steps for each of 1024 VMs in turn, with no truth: each
// VM's ring is full, so every forecast pushes one out (the worst case).
func BenchmarkForecast(b *testing.B) {
	a, _ := newTestAccuracy(b, AccuracyConfig{})
	vms := accBenchVMs()
	preds := make([]float64, 10)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		at := accBase.Add(time.Duration(i/len(vms)) * time.Minute)
		a.Forecast(vms[i%len(vms)], at, preds)
		i++
	}
}

// BenchmarkActual: a truth for each of 1024 VMs in turn, each with 10 forecasts pending, so every
// truth scores (replaces) one point of each of them.
func BenchmarkActual(b *testing.B) {
	a, _ := newTestAccuracy(b, AccuracyConfig{})
	vms := accBenchVMs()
	preds := make([]float64, 10)
	for _, vm := range vms {
		for k := range 10 {
			a.Forecast(vm, accBase.Add(time.Duration(k)*time.Minute), preds)
		}
	}
	target := accBase.Add(10*time.Minute - 30*time.Second) // the start of the step every forecast has a point in
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		a.Actual(vms[i%len(vms)], target.Add(time.Duration(i/len(vms))), 1)
		i++
	}
	if r := a.Report(); r.Points != int64(len(vms)*10) {
		b.Fatalf("report %+v", r)
	}
}

// BenchmarkForecastActual: the steady state, one op per VM per step: its truth, then a forecast
// from the window it completes (about 11 forecasts pending per VM).
func BenchmarkForecastActual(b *testing.B) {
	a, clk := newTestAccuracy(b, AccuracyConfig{})
	vms := accBenchVMs()
	preds := make([]float64, 10)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		now := accBase.Add(time.Duration(i/len(vms)) * time.Minute)
		clk.Set(now)
		vm := vms[i%len(vms)]
		a.Actual(vm, now, 1)
		a.Forecast(vm, now, preds)
		i++
	}
}

// BenchmarkForecastActualParallel: the steady state from GOMAXPROCS goroutines, each with its own
// VMs.
func BenchmarkForecastActualParallel(b *testing.B) {
	a, _ := newTestAccuracy(b, AccuracyConfig{})
	var next atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		g := next.Add(1)
		vms := make([]string, 256)
		for i := range vms {
			vms[i] = fmt.Sprintf("vm-%d-%d", g, i)
		}
		preds := make([]float64, 10)
		for i := 0; pb.Next(); i++ {
			now := accBase.Add(time.Duration(i/len(vms)) * time.Minute)
			vm := vms[i%len(vms)]
			a.Actual(vm, now, 1)
			a.Forecast(vm, now, preds)
		}
	})
}
