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

// checkLabelsReport compares the report's counts (Accuracy and MAE apart).
func checkLabelsReport(t *testing.T, what string, r AccuracyReport, points, evaluated, forecasts, dropped int64) {
	t.Helper()
	if r.Points != points || r.Evaluated != evaluated || r.Forecasts != forecasts || r.Dropped != dropped {
		t.Errorf("%s: report %+v; want %d points, %d forecasts (%d of them evaluated), %d dropped", what, r, points, forecasts, evaluated, dropped)
	}
	if !math.IsNaN(r.MAE) {
		t.Errorf("%s: MAE %v; a classifier has none (NaN)", what, r.MAE)
	}
}

// TestLabelsJoin: a label scores the prediction of its key nearest in time to its own, before or
// after it (the earlier at equal distances; of predictions made at the same time, the one recorded
// last), never one a window or more from it or expired by the clock, and each prediction once: a
// label whose nearest prediction is scored is a duplicate, not joined with a neighbour.
func TestLabelsJoin(t *testing.T) {
	l, clk := newTestLabels(t, LabelsConfig{})
	t0 := accBase
	at := func(d time.Duration) time.Time { return t0.Add(d) }

	l.Predict("vm-1", at(0), "normal")
	l.Predict("vm-1", at(2*time.Minute), "anomaly")
	l.Predict("vm-1", at(4*time.Minute), "normal")
	clk.Set(at(5 * time.Minute))

	// Halfway between 2m and 4m: the earlier, 2m (anomaly); correct.
	if !l.Label("vm-1", at(3*time.Minute), "anomaly") {
		t.Fatal("a label at 3m did not join the 2m prediction")
	}
	if r := l.Report(); r.Accuracy != 1 {
		t.Errorf("accuracy %v after one correct label; want 1 (it joined the 4m prediction?)", r.Accuracy)
	}
	// At 2m30s: nearest is 2m, scored already: a duplicate, not joined with 0m or 4m.
	if l.Label("vm-1", at(2*time.Minute+30*time.Second), "normal") {
		t.Error("a second label nearest to the 2m prediction joined")
	}
	if d := l.Duplicates(); d != 1 {
		t.Errorf("duplicates %d; want 1", d)
	}
	// Just past halfway to 4m: the later one, 4m (normal); wrong.
	if !l.Label("vm-1", at(3*time.Minute+time.Nanosecond), "anomaly") {
		t.Fatal("a label nearer the 4m prediction did not join it")
	}
	// Before every prediction: the first, 0m, never scored yet.
	if !l.Label("vm-1", at(-time.Second), "normal") {
		t.Fatal("a label a second before the 0m prediction did not join it")
	}
	r := l.Report()
	checkLabelsReport(t, "after three labels", r, 3, 3, 3, 0)
	if r.Accuracy != 2.0/3 {
		t.Errorf("accuracy %v; want 2/3", r.Accuracy)
	}
	if d := l.Duplicates(); d != 1 {
		t.Errorf("duplicates %d; want still 1", d)
	}
	// Another key: nothing.
	if l.Label("vm-2", at(4*time.Minute), "normal") {
		t.Error("a label of another key joined")
	}

	// A prediction a window or more from the label's time, either way, does not join it.
	l.Predict("vm-3", at(5*time.Minute), "normal")
	if l.Label("vm-3", at(5*time.Minute+time.Hour), "normal") {
		t.Error("a label an hour after the prediction joined it")
	}
	if l.Label("vm-3", at(5*time.Minute-time.Hour), "normal") {
		t.Error("a label an hour before the prediction joined it")
	}
	if !l.Label("vm-3", at(5*time.Minute+time.Hour-time.Nanosecond), "normal") {
		t.Error("a label just within an hour after the prediction did not join it")
	}
	l.Predict("vm-3b", at(5*time.Minute), "normal")
	if !l.Label("vm-3b", at(5*time.Minute-time.Hour+time.Nanosecond), "normal") {
		t.Error("a label just within an hour before the prediction did not join it")
	}

	// Of predictions made at the same time, the one recorded last, from either side.
	l.Predict("vm-7", at(4*time.Minute), "normal")
	l.Predict("vm-7", at(4*time.Minute), "anomaly")
	if !l.Label("vm-7", at(3*time.Minute), "anomaly") {
		t.Error("a label before two predictions at the same time did not join")
	}
	if l.Label("vm-7", at(5*time.Minute), "normal") || l.Duplicates() != 2 {
		t.Errorf("a label after them joined, or was no duplicate (%d): not the one recorded last", l.Duplicates())
	}
	if r := l.Report(); r.Points != 6 || r.Accuracy != 5.0/6 {
		t.Errorf("report %+v; want 5 of 6 right (the anomaly recorded last scored right)", r)
	}

	// A prediction expired by the clock does not join a label of its time.
	l.Predict("vm-4", at(5*time.Minute), "anomaly")
	clk.Set(at(5*time.Minute + time.Hour))
	if n := l.Len(); n != 5 {
		t.Errorf("%d keys tracked; want 5 (vm-1, vm-3, vm-3b, vm-7, vm-4: expired ones are freed lazily)", n)
	}
	if l.Label("vm-4", at(5*time.Minute), "anomaly") {
		t.Error("a prediction made an hour before the clock joined a label")
	}
	if n := l.Len(); n != 4 {
		t.Errorf("%d keys tracked; want 4: vm-4's label freed its expired prediction and the key", n)
	}
	// A prediction made an hour before the clock is not kept.
	l.Predict("vm-5", at(5*time.Minute), "anomaly")
	if n := l.Len(); n != 4 {
		t.Errorf("an expired prediction was kept (%d keys)", n)
	}
	// Zero times are the clock's: a label at now joins the newest prediction.
	l.Predict("vm-6", clk.Now().Add(-time.Minute), "normal")
	l.Predict("vm-6", time.Time{}, "anomaly")
	clk.Add(time.Second)
	if !l.Label("vm-6", time.Time{}, "anomaly") {
		t.Error("a label at now did not join the prediction made at now")
	}
	if l.Label("vm-6", time.Time{}, "normal") || l.Duplicates() != 3 {
		t.Errorf("a second label at now joined, or was no duplicate (%d): not of the newest prediction", l.Duplicates())
	}
}

// TestLabelsNearestAnswer: the cases the join is for. An incident labelled at the time of its
// metrics scores the answer about those metrics, made a little later, not the answer before it;
// a label stamped in milliseconds right after an answer (its time truncated to before the
// answer's) scores that answer, not the previous one.
func TestLabelsNearestAnswer(t *testing.T) {
	l, clk := newTestLabels(t, LabelsConfig{})
	noon := accBase.Add(12 * time.Hour)
	clk.Set(noon)
	// Answers recorded after inference: "normal" on the metrics before the spike, "anomaly" on it.
	l.Predict("vm-1", noon.Add(-55*time.Second), "normal")
	l.Predict("vm-1", noon.Add(5*time.Second), "anomaly")
	clk.Set(noon.Add(10 * time.Minute))
	// The operator labels the incident at noon: it was anomalous. The model was right.
	if !l.Label("vm-1", noon, "anomaly") {
		t.Fatal("the incident's label did not join")
	}
	if r := l.Report(); r.Points != 1 || r.Accuracy != 1 {
		t.Errorf("report %+v; want 1 label, right (it scored the 11:59:05 answer?)", r)
	}

	// An answer at T+0.4ms; a client labels it at T+0.9ms, sent as T (ms).
	T := noon.Add(20 * time.Minute)
	l.Predict("vm-2", T.Add(-10*time.Second), "normal")
	l.Predict("vm-2", T.Add(400*time.Microsecond), "anomaly")
	clk.Set(T.Add(time.Millisecond))
	ms := T.Add(900 * time.Microsecond).UnixMilli()
	if !l.Label("vm-2", time.UnixMilli(ms), "anomaly") {
		t.Fatal("the label stamped right after the answer did not join")
	}
	if r := l.Report(); r.Points != 2 || r.Accuracy != 1 {
		t.Errorf("report %+v; want 2 labels, both right (it scored the answer 10s before?)", r)
	}
}

// TestLabelsFarTimes: a label or prediction at a time far from the clock, past the year 2262
// (beyond Unix nanoseconds) or before 1678, joins and keeps nothing; none overflows into a time
// near the clock.
func TestLabelsFarTimes(t *testing.T) {
	l, clk := newTestLabels(t, LabelsConfig{})
	far := []time.Time{
		time.UnixMilli(536870911000000), // year 18979
		time.Date(2262, 4, 12, 0, 0, 0, 0, time.UTC),
		time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC),
		time.UnixMilli(math.MaxInt64),
		time.Date(1, 1, 1, 0, 0, 1, 0, time.UTC),
		time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Unix(math.MaxInt64/1000, 0),
	}
	// Every far time, plus whatever makes its UnixNano wrap onto the clock.
	for _, f := range far {
		wrapped := time.Unix(0, f.UnixNano())
		far = append(far, f.Add(clk.Now().Sub(wrapped)))
	}
	l.Predict("vm-1", time.Time{}, "normal")
	for _, f := range far {
		if l.Label("vm-1", f, "normal") {
			t.Errorf("a label at %v joined the answer made at %v", f, clk.Now())
		}
		l.Predict("vm-2", f, "normal")
	}
	if l.Len() != 1 {
		t.Errorf("%d keys; a prediction at a far time was kept", l.Len())
	}
	if !l.Label("vm-1", time.Time{}, "normal") {
		t.Error("the answer made at the clock did not join a label at it")
	}
	if r := l.Report(); r.Points != 1 || r.Forecasts != 1 {
		t.Errorf("report %+v; want the one answer and label", r)
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

// TestLabelsMatchesOffline: over two hours of predictions (some stamped a little before the clock,
// out of order) and labels for many keys (labels late, early, repeated, for keys never predicted,
// and with timestamps of 0), the report at checkpoints equals the counts computed directly over
// the same rows: for each label, the prediction of its key nearest in time (the earlier at equal
// distances, the one recorded last at equal times) among those within the window of it and of the
// clock, scored once; the duplicates too.
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
			switch r.IntN(10) {
			case 0:
				at = time.Time{}
			case 1:
				at = now.Add(-time.Duration(r.Int64N(int64(5 * time.Second))))
			case 2:
				at = now.Add(-time.Duration(r.IntN(3)) * time.Second) // equal times now and then
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
		kept   time.Time // the clock when it was kept
		class  string
		scored bool
	}
	var all []*pred
	preds := map[string][]*pred{}
	type scoredAt struct {
		clock   time.Time
		correct bool
	}
	var scored []scoredAt
	var duplicates int64
	bucket := func(t time.Time) int64 { return int64(t.Sub(accBase) / time.Minute) }
	offline := func(now time.Time) (points, correct, evaluated, forecasts int64) {
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
		for _, p := range all {
			if in(p.kept) {
				forecasts++
				if p.scored {
					evaluated++
				}
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
			p := &pred{at: at, kept: row.clock, class: row.class}
			preds[row.key] = append(preds[row.key], p)
			all = append(all, p)
		} else {
			dist := func(p *pred) time.Duration { return max(p.at.Sub(at), at.Sub(p.at)) }
			var near *pred // in the order recorded: a later one at the same time replaces it
			for _, p := range preds[row.key] {
				if !p.at.After(row.clock.Add(-window)) {
					continue // expired
				}
				if near == nil || dist(p) < dist(near) || dist(p) == dist(near) && !p.at.After(near.at) {
					near = p
				}
			}
			want := false
			switch {
			case near == nil || dist(near) >= window:
			case near.scored:
				duplicates++
			default:
				want = true
				near.scored = true
				scored = append(scored, scoredAt{row.clock, near.class == row.class})
			}
			if got := l.Label(row.key, row.at, row.class); got != want {
				t.Fatalf("row %d (%+v): joined %v, offline %v", i, row, got, want)
			}
		}
		if i%97 == 0 || i == len(rows)-1 {
			points, correct, evaluated, forecasts := offline(row.clock)
			rep := l.Report()
			checkLabelsReport(t, fmt.Sprintf("row %d", i), rep, points, evaluated, forecasts, 0)
			if d := l.Duplicates(); d != duplicates {
				t.Errorf("row %d: %d duplicates, offline %d", i, d, duplicates)
			}
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
// refused for being older than all kept) is dropped, unless it was labelled, and joins no label.
func TestLabelsPerKeyBound(t *testing.T) {
	l, clk := newTestLabels(t, LabelsConfig{MaxPerKey: 3})
	at := func(m int) time.Time { return accBase.Add(time.Duration(m) * time.Minute) }
	clk.Set(at(10))
	for m := range 5 { // 0..4: 0 and 1 pushed out
		l.Predict("vm-1", at(m), fmt.Sprint("c", m))
	}
	checkLabelsReport(t, "five predictions, room for three", l.Report(), 0, 0, 5, 2)
	l.Predict("vm-1", at(0), "c0") // older than every kept one: refused
	checkLabelsReport(t, "an older prediction", l.Report(), 0, 0, 5, 3)
	// At 1m: the 1m prediction is gone; the nearest kept is 2m's.
	if !l.Label("vm-1", at(1), "c1") {
		t.Fatal("a label at 1m did not join the oldest kept prediction")
	}
	if r := l.Report(); r.Accuracy != 0 {
		t.Errorf("accuracy %v; want 0: the label joined a prediction pushed out", r.Accuracy)
	}
	l.Predict("vm-1", at(5), "c5") // pushes out the labelled one: not dropped
	checkLabelsReport(t, "the labelled one pushed out", l.Report(), 1, 1, 6, 3)
	l.Predict("vm-1", at(3).Add(time.Second), "c3+") // in between: kept in time order; 3m's pushed out
	checkLabelsReport(t, "one in between", l.Report(), 1, 1, 7, 4)
	if !l.Label("vm-1", at(3).Add(20*time.Second), "c3+") {
		t.Error("a label did not join the prediction inserted nearest to it")
	}
	if r := l.Report(); r.Accuracy != 0.5 {
		t.Errorf("accuracy %v; want 1/2", r.Accuracy)
	}
}

// TestLabelsEvaluated: Evaluated counts the predictions kept in the window that got a label (by
// when they were kept), so Evaluated/Forecasts (model_prediction_evaluated_ratio) is the share of
// the window's answers labelled: a label of an answer made before the window is in Points, not in
// Evaluated.
func TestLabelsEvaluated(t *testing.T) {
	l, clk := newTestLabels(t, LabelsConfig{Window: 10 * time.Minute})
	at := func(m int) time.Time { return accBase.Add(time.Duration(m) * time.Minute) }
	l.Predict("a", time.Time{}, "x") // kept at 0
	clk.Set(at(1))
	l.Predict("b", time.Time{}, "x") // kept at 1
	clk.Set(at(9))
	l.Predict("c", time.Time{}, "x") // kept at 9
	if !l.Label("a", at(0), "x") {
		t.Fatal("a: not joined")
	}
	checkLabelsReport(t, "a labelled at 9m", l.Report(), 1, 1, 3, 0)
	clk.Set(at(10)) // a's step leaves the window
	if !l.Label("b", at(1), "x") {
		t.Fatal("b: not joined")
	}
	checkLabelsReport(t, "b labelled at 10m, a's step gone", l.Report(), 2, 1, 2, 0)
	clk.Set(at(11)) // b's step leaves the window: c, made in it, has no label
	r := l.Report()
	checkLabelsReport(t, "b's step gone", r, 2, 0, 1, 0) // the labels scored at 9m and 10m stay
	if ratio := float64(r.Evaluated) / float64(r.Forecasts); ratio != 0 {
		t.Errorf("evaluated ratio %v with the window's one answer unlabelled; want 0", ratio)
	}
	if !l.Label("c", at(9), "x") {
		t.Fatal("c: not joined")
	}
	checkLabelsReport(t, "c labelled", l.Report(), 3, 1, 1, 0)
}

// TestLabelsKeyBound: beyond MaxKeys keys a new key's prediction is dropped; once a key's
// predictions expire, the sweep makes room.
func TestLabelsKeyBound(t *testing.T) {
	l, clk := newTestLabels(t, LabelsConfig{MaxKeys: 2})
	l.Predict("a", time.Time{}, "x")
	l.Predict("b", time.Time{}, "x")
	l.Predict("c", time.Time{}, "x")
	l.Predict("a", time.Time{}, "x") // a known key: kept
	checkLabelsReport(t, "three keys, room for two", l.Report(), 0, 0, 3, 1)
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
	checkLabelsReport(t, "ten minutes", l.Report(), 10, 10, 10, 0)
	if r := l.Report(); r.Accuracy != 0.5 {
		t.Errorf("accuracy %v; want 0.5", r.Accuracy)
	}
	clk.Set(accBase.Add(10 * time.Minute)) // minute 0 leaves the window
	checkLabelsReport(t, "minute 0 gone", l.Report(), 9, 9, 9, 0)
	if r := l.Report(); r.Accuracy != 4.0/9 {
		t.Errorf("accuracy %v; want 4/9", r.Accuracy)
	}
	clk.Set(accBase.Add(18*time.Minute + 59*time.Second)) // the window: steps 9..18
	checkLabelsReport(t, "minute 9 left", l.Report(), 1, 1, 1, 0)
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
	checkLabelsReport(t, "concurrent", r, n, n, n, 0)
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
