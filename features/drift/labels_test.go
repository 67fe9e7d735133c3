package drift

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

func newTestLabels(t testing.TB, cfg LabelsConfig) (*Labels, *accClock) {
	t.Helper()
	clk := newAccClock(accBase)
	cfg.Now = clk.Now
	l, err := NewLabels(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l, clk
}

// checkReport compares the report's counts (Accuracy and MAE apart).
func checkLabelsReport(t *testing.T, what string, r AccuracyReport, points, forecasts, dropped int64) {
	t.Helper()
	if r.Points != points || r.Evaluated != points || r.Forecasts != forecasts || r.Dropped != dropped {
		t.Errorf("%s: report %+v; want %d points (and evaluated), %d forecasts, %d dropped", what, r, points, forecasts, dropped)
	}
	if !math.IsNaN(r.MAE) {
		t.Errorf("%s: MAE %v; a classifier has none (NaN)", what, r.MAE)
	}
}

// TestLabelsJoin: a label scores the newest prediction of its key made at or before its time,
// never a later one, never one made a window or more before it or expired by the clock, and each
// prediction once.
func TestLabelsJoin(t *testing.T) {
	l, clk := newTestLabels(t, LabelsConfig{})
	t0 := accBase
	at := func(d time.Duration) time.Time { return t0.Add(d) }

	l.Predict("vm-1", at(0), "normal")
	l.Predict("vm-1", at(2*time.Minute), "anomaly")
	l.Predict("vm-1", at(4*time.Minute), "normal")
	clk.Set(at(5 * time.Minute))

	// Before every prediction: nothing to join.
	if l.Label("vm-1", at(-time.Second), "normal") {
		t.Error("a label before every prediction joined one")
	}
	// At 3m: the 2m prediction (anomaly), not the later 4m one; correct.
	if !l.Label("vm-1", at(3*time.Minute), "anomaly") {
		t.Fatal("a label at 3m did not join the 2m prediction")
	}
	r := l.Report()
	if r.Accuracy != 1 {
		t.Errorf("accuracy %v after one correct label; want 1 (it joined a later prediction?)", r.Accuracy)
	}
	// Again at 3m30s: the 2m prediction is scored already, and the older 0m one is superseded.
	if l.Label("vm-1", at(3*time.Minute+30*time.Second), "normal") {
		t.Error("a second label for the 2m prediction joined")
	}
	if d := l.Duplicates(); d != 1 {
		t.Errorf("duplicates %d; want 1", d)
	}
	// Exactly at a prediction's time: that one (4m, normal); wrong.
	if !l.Label("vm-1", at(4*time.Minute), "anomaly") {
		t.Fatal("a label at a prediction's own time did not join it")
	}
	// At 1m: the 0m prediction, never scored yet.
	if !l.Label("vm-1", at(time.Minute), "normal") {
		t.Fatal("a label at 1m did not join the 0m prediction")
	}
	r = l.Report()
	checkLabelsReport(t, "after three labels", r, 3, 3, 0)
	if r.Accuracy != 2.0/3 {
		t.Errorf("accuracy %v; want 2/3", r.Accuracy)
	}
	// Another key: nothing.
	if l.Label("vm-2", at(4*time.Minute), "normal") {
		t.Error("a label of another key joined")
	}

	// A prediction a window or more before the label's time does not join it.
	l.Predict("vm-3", at(5*time.Minute), "normal")
	if l.Label("vm-3", at(5*time.Minute+time.Hour), "normal") {
		t.Error("a label an hour after the prediction joined it")
	}
	if !l.Label("vm-3", at(5*time.Minute+time.Hour-time.Nanosecond), "normal") {
		t.Error("a label just within an hour of the prediction did not join it")
	}

	// A prediction expired by the clock does not join a label of its time.
	l.Predict("vm-4", at(5*time.Minute), "anomaly")
	clk.Set(at(5*time.Minute + time.Hour))
	if n := l.Len(); n != 3 {
		t.Errorf("%d keys tracked; want 3 (vm-1, vm-3, vm-4: expired ones are freed lazily)", n)
	}
	if l.Label("vm-4", at(5*time.Minute), "anomaly") {
		t.Error("a prediction made an hour before the clock joined a label")
	}
	if n := l.Len(); n != 2 {
		t.Errorf("%d keys tracked; want 2: vm-4's label freed its expired prediction and the key", n)
	}
	// A prediction made an hour before the clock is not kept.
	l.Predict("vm-5", at(5*time.Minute), "anomaly")
	if n := l.Len(); n != 2 {
		t.Errorf("an expired prediction was kept (%d keys)", n)
	}
	// Zero times are the clock's.
	l.Predict("vm-6", time.Time{}, "anomaly")
	clk.Add(time.Second)
	if !l.Label("vm-6", time.Time{}, "anomaly") {
		t.Error("a label at now did not join the prediction made at now")
	}
}

// labelRow is one call of the offline check: a prediction (truth == "") or a label.
type labelRow struct {
	clock time.Time // the tracker's clock at the call
	key   string
	at    time.Time
	class string // the prediction's class or the label's truth
	label bool
}

// TestLabelsMatchesOffline: over two hours of predictions and labels for many keys (labels late,
// early, repeated, for keys never predicted, and with timestamps of 0), the report at checkpoints
// equals the counts computed directly over the same rows: for each label, the newest earlier
// prediction of its key within the window, scored once.
func TestLabelsMatchesOffline(t *testing.T) {
	const (
		keys    = 40
		minutes = 120
		window  = time.Hour
	)
	l, clk := newTestLabels(t, LabelsConfig{MaxPerKey: 1 << 10}) // room for every prediction
	r := rand.New(rand.NewPCG(7, 8))
	classes := []string{"normal", "anomaly", "n-3"}
	var rows []labelRow
	for s := 0; s < minutes*60; s += 1 + r.IntN(4) {
		now := accBase.Add(time.Duration(s) * time.Second)
		key := fmt.Sprintf("k-%d", r.IntN(keys))
		switch {
		case r.Float64() < 0.5:
			at := now
			if r.IntN(10) == 0 {
				at = time.Time{}
			}
			rows = append(rows, labelRow{clock: now, key: key, at: at, class: classes[r.IntN(len(classes))]})
		default:
			// A label for up to 3 minutes ago; now and then in the future or with timestamp 0.
			at := now.Add(-time.Duration(r.Int64N(int64(3 * time.Minute))))
			switch r.IntN(10) {
			case 0:
				at = time.Time{}
			case 1:
				at = now.Add(time.Duration(r.Int64N(int64(time.Minute))))
			case 2:
				key = "never-predicted"
			}
			rows = append(rows, labelRow{clock: now, key: key, at: at, class: classes[r.IntN(len(classes))], label: true})
		}
	}

	// Offline: every prediction kept in a list; each label scans them all.
	type pred struct {
		at     time.Time
		class  string
		scored bool
	}
	preds := map[string][]*pred{}
	type scoredAt struct {
		clock   time.Time
		correct bool
	}
	var scored []scoredAt
	var predictedAt []time.Time
	bucket := func(t time.Time) int64 { return int64(t.Sub(accBase) / time.Minute) }
	offline := func(now time.Time) (points, correct, forecasts int64) {
		b := bucket(now)
		in := func(t time.Time) bool { return bucket(t) > b-int64(window/time.Minute) && bucket(t) <= b }
		for _, s := range scored {
			if in(s.clock) {
				points++
				if s.correct {
					correct++
				}
			}
		}
		for _, p := range predictedAt {
			if in(p) {
				forecasts++
			}
		}
		return
	}
	checks := 0
	for i, row := range rows {
		clk.Set(row.clock)
		at := row.at
		if at.IsZero() {
			at = row.clock
		}
		if !row.label {
			l.Predict(row.key, row.at, row.class)
			preds[row.key] = append(preds[row.key], &pred{at: at, class: row.class})
			predictedAt = append(predictedAt, row.clock)
		} else {
			var newest *pred
			for _, p := range preds[row.key] {
				if !p.at.After(at) && (newest == nil || !p.at.Before(newest.at)) {
					newest = p
				}
			}
			want := newest != nil && newest.at.After(at.Add(-window)) && newest.at.After(row.clock.Add(-window)) && !newest.scored
			if want {
				newest.scored = true
				scored = append(scored, scoredAt{row.clock, newest.class == row.class})
			}
			if got := l.Label(row.key, row.at, row.class); got != want {
				t.Fatalf("row %d (%+v): joined %v, offline %v", i, row, got, want)
			}
		}
		if i%97 == 0 || i == len(rows)-1 {
			points, correct, forecasts := offline(row.clock)
			rep := l.Report()
			checkLabelsReport(t, fmt.Sprintf("row %d", i), rep, points, forecasts, 0)
			if want := float64(correct) / float64(points); points > 0 && rep.Accuracy != want {
				t.Errorf("row %d: accuracy %v; offline %d/%d = %v", i, rep.Accuracy, correct, points, want)
			}
			if points == 0 && !math.IsNaN(rep.Accuracy) {
				t.Errorf("row %d: accuracy %v with nothing scored; want NaN", i, rep.Accuracy)
			}
			checks++
		}
	}
	t.Logf("%d rows, %d labels scored, %d duplicates", len(rows), len(scored), l.Duplicates())
	if len(scored) < 500 || checks < 20 || l.Duplicates() == 0 {
		t.Fatalf("%d labels scored, %d checks, %d duplicates: the rows test too little", len(scored), checks, l.Duplicates())
	}
}

// TestLabelsPerKeyBound: a key keeps its MaxPerKey newest predictions; an older one pushed out (or
// refused for being older than all kept) is dropped, unless it was labelled.
func TestLabelsPerKeyBound(t *testing.T) {
	l, clk := newTestLabels(t, LabelsConfig{MaxPerKey: 3})
	at := func(m int) time.Time { return accBase.Add(time.Duration(m) * time.Minute) }
	clk.Set(at(10))
	for m := range 5 { // 0..4: 0 and 1 pushed out
		l.Predict("vm-1", at(m), "normal")
	}
	checkLabelsReport(t, "five predictions, room for three", l.Report(), 0, 5, 2)
	if l.Label("vm-1", at(1), "normal") {
		t.Error("a label joined a prediction pushed out")
	}
	l.Predict("vm-1", at(0), "normal") // older than every kept one: refused
	checkLabelsReport(t, "an older prediction", l.Report(), 0, 5, 3)
	if !l.Label("vm-1", at(2), "normal") {
		t.Fatal("the oldest kept prediction did not join")
	}
	l.Predict("vm-1", at(5), "normal") // pushes out the labelled one: not dropped
	checkLabelsReport(t, "the labelled one pushed out", l.Report(), 1, 6, 3)
	l.Predict("vm-1", at(3).Add(time.Second), "anomaly") // in between: kept in time order
	checkLabelsReport(t, "one in between", l.Report(), 1, 7, 4)
	if !l.Label("vm-1", at(3).Add(2*time.Second), "anomaly") {
		t.Error("a label did not join the prediction inserted before its time")
	}
	if r := l.Report(); r.Accuracy != 1 {
		t.Errorf("accuracy %v; want 1", r.Accuracy)
	}
}

// TestLabelsKeyBound: beyond MaxKeys keys a new key's prediction is dropped; once a key's
// predictions expire, the sweep makes room.
func TestLabelsKeyBound(t *testing.T) {
	l, clk := newTestLabels(t, LabelsConfig{MaxKeys: 2})
	l.Predict("a", time.Time{}, "x")
	l.Predict("b", time.Time{}, "x")
	l.Predict("c", time.Time{}, "x")
	l.Predict("a", time.Time{}, "x") // a known key: kept
	checkLabelsReport(t, "three keys, room for two", l.Report(), 0, 3, 1)
	if l.Len() != 2 || l.Label("c", time.Time{}, "x") {
		t.Errorf("%d keys; the refused key's label joined", l.Len())
	}
	clk.Add(30 * time.Minute)
	l.Predict("b", time.Time{}, "x")
	clk.Add(31 * time.Minute) // a's predictions expire; b's second does not
	l.Predict("c", time.Time{}, "x")
	if l.Len() != 2 || !l.Label("c", time.Time{}, "x") {
		t.Errorf("%d keys; c not kept after a expired", l.Len())
	}
	if !l.Label("b", time.Time{}, "x") {
		t.Error("b's live prediction was swept")
	}
}

// TestLabelsRollingWindow: what was scored leaves the report a window later, step by step.
func TestLabelsRollingWindow(t *testing.T) {
	l, clk := newTestLabels(t, LabelsConfig{Window: 10 * time.Minute})
	if r := l.Report(); !math.IsNaN(r.Accuracy) || r.Points != 0 {
		t.Fatalf("empty report %+v; want NaN accuracy", r)
	}
	// Minute m: a prediction and its label, correct for even m.
	for m := range 10 {
		clk.Set(accBase.Add(time.Duration(m) * time.Minute))
		l.Predict("vm", time.Time{}, "normal")
		truth := "normal"
		if m%2 == 1 {
			truth = "anomaly"
		}
		if !l.Label("vm", time.Time{}, truth) {
			t.Fatalf("minute %d: not joined", m)
		}
	}
	checkLabelsReport(t, "ten minutes", l.Report(), 10, 10, 0)
	if r := l.Report(); r.Accuracy != 0.5 {
		t.Errorf("accuracy %v; want 0.5", r.Accuracy)
	}
	clk.Set(accBase.Add(10 * time.Minute)) // minute 0 leaves the window
	checkLabelsReport(t, "minute 0 gone", l.Report(), 9, 9, 0)
	if r := l.Report(); r.Accuracy != 4.0/9 {
		t.Errorf("accuracy %v; want 4/9", r.Accuracy)
	}
	clk.Set(accBase.Add(18*time.Minute + 59*time.Second)) // the window: steps 9..18
	checkLabelsReport(t, "minute 9 left", l.Report(), 1, 1, 0)
	clk.Set(accBase.Add(19 * time.Minute))
	if r := l.Report(); !math.IsNaN(r.Accuracy) || r.Points != 0 || r.Forecasts != 0 {
		t.Errorf("report %+v a window after the last label; want empty", r)
	}
}

// TestLabelsConcurrent: goroutines predicting and labelling their own keys, and reports read
// meanwhile, add up to the counts of the calls made (run with -race).
func TestLabelsConcurrent(t *testing.T) {
	l, _ := newTestLabels(t, LabelsConfig{})
	const workers, perWorker = 8, 500
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				key := fmt.Sprintf("w%d-k%d", w, i%50)
				class := []string{"normal", "anomaly"}[i%2]
				l.Predict(key, time.Time{}, class)
				truth := class
				if i%4 == 0 {
					truth = "other"
				}
				if !l.Label(key, time.Time{}, truth) {
					t.Errorf("%s: not joined", key)
				}
				l.Label(key, time.Time{}, truth) // a duplicate
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 200 {
			l.Report()
		}
	}()
	wg.Wait()
	<-done
	r := l.Report()
	n := int64(workers * perWorker)
	checkLabelsReport(t, "concurrent", r, n, n, 0)
	if r.Accuracy != 0.75 || l.Duplicates() != n || l.Len() != workers*50 {
		t.Errorf("accuracy %v (want 0.75), %d duplicates (want %d), %d keys (want %d)", r.Accuracy, l.Duplicates(), n, l.Len(), workers*50)
	}
}

func TestLabelsConfig(t *testing.T) {
	for _, c := range []struct {
		cfg  LabelsConfig
		want string
	}{
		{LabelsConfig{MaxPerKey: -1}, "MaxPerKey"},
		{LabelsConfig{MaxKeys: -1}, "MaxKeys"},
		{LabelsConfig{Window: -time.Second}, "Window"},
		{LabelsConfig{Step: -time.Second}, "Step"},
		{LabelsConfig{Window: time.Second}, "shorter than a step"},
		{LabelsConfig{Window: 8 * 24 * time.Hour}, "more than"},
	} {
		if _, err := NewLabels(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v; want an error naming %s", c.cfg, err, c.want)
		}
	}
	l, err := NewLabels(LabelsConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if d := l.cfg; d.MaxPerKey != DefaultMaxPerKey || d.MaxKeys == 0 || d.Window != DefaultAccuracyWindow || d.Step == 0 || d.Now == nil {
		t.Errorf("defaults %+v", d)
	}
}
