package drift

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// hook is a webhook receiver on loopback that answers fail times with 503, then 200.
type hook struct {
	mu     sync.Mutex
	fail   int
	calls  int
	alerts []Alert
}

func (h *hook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	if h.fail > 0 {
		h.fail--
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	var a Alert
	if err := json.NewDecoder(r.Body).Decode(&a); err != nil || r.Header.Get("Content-Type") != "application/json" {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	h.alerts = append(h.alerts, a)
}

func newAlerter(t *testing.T, h *hook) *Alerter {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	a, err := NewAlerter(AlertConfig{URL: srv.URL, Node: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	a.sleep = func(context.Context, time.Duration) error { return nil } // retries without waiting
	return a
}

// TestAlertOncePerWindow: a drifted window is sent once, with its report; the same window again
// is not; the next drifted window is. A window without a verdict sends nothing.
func TestAlertOncePerWindow(t *testing.T) {
	h := &hook{}
	a := newAlerter(t, h)
	ctx := context.Background()
	t0 := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
	w1 := WindowReport{Start: t0, End: t0.Add(5 * time.Minute), Rows: 900, Verdict: true, Drifted: 4, Share: 4.0 / 6, ModelDrifted: true,
		Features: []FeatureScore{{Name: "cpu", PSI: 0.4, Drifted: true}}}
	for range 3 {
		if _, err := a.Check(ctx, "anomaly", []WindowReport{w1}, nil); err != nil {
			t.Fatal(err)
		}
	}
	fresh := WindowReport{Start: t0.Add(5 * time.Minute), End: t0.Add(10 * time.Minute), Rows: 10}
	w2 := w1
	w2.Start, w2.End = t0.Add(5*time.Minute), t0.Add(10*time.Minute)
	a.Check(ctx, "anomaly", []WindowReport{fresh, w1}, nil) // the newest with a verdict: w1, sent already
	a.Check(ctx, "anomaly", []WindowReport{w2, w1}, nil)
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.alerts) != 2 || h.alerts[0].Kind != AlertDrift || h.alerts[0].Model != "anomaly" || h.alerts[0].Node != "node-1" ||
		h.alerts[0].Window.Features[0].PSI != 0.4 || !h.alerts[1].Window.Start.Equal(w2.Start) {
		t.Errorf("alerts %+v; want w1's and w2's, once each", h.alerts)
	}
}

// TestAlertRetries: a webhook failing twice gets the alert on the third attempt; one always
// failing gets Attempts tries and an error naming the model, and the window is not tried again.
func TestAlertRetries(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
	w := WindowReport{Start: t0, End: t0.Add(time.Minute), Verdict: true, ModelDrifted: true}
	h := &hook{fail: 2}
	if _, err := newAlerter(t, h).Check(ctx, "m", []WindowReport{w}, nil); err != nil || h.calls != 3 || len(h.alerts) != 1 {
		t.Errorf("two failures then success: %v, %d calls, %d alerts", err, h.calls, len(h.alerts))
	}
	h = &hook{fail: 100}
	a := newAlerter(t, h)
	_, err := a.Check(ctx, "m", []WindowReport{w}, nil)
	if err == nil || !strings.Contains(err.Error(), "model m") || h.calls != DefaultAlertAttempts {
		t.Errorf("always failing: %v after %d calls", err, h.calls)
	}
	a.Check(ctx, "m", []WindowReport{w}, nil)
	if h.calls != DefaultAlertAttempts {
		t.Errorf("the failed window was tried again: %d calls", h.calls)
	}
}

// TestAlertAccuracy: live accuracy below the floor over enough points is alerted once per
// window; above it, or over too few points, it is not.
func TestAlertAccuracy(t *testing.T) {
	h := &hook{}
	a := newAlerter(t, h)
	ctx := context.Background()
	t0 := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
	w := []WindowReport{{Start: t0, End: t0.Add(time.Minute), Rows: 3}}
	a.Check(ctx, "bandwidth", w, &AccuracyReport{Accuracy: 0.9, Points: 500})
	a.Check(ctx, "bandwidth", w, &AccuracyReport{Accuracy: 0.5, Points: 50})
	a.Check(ctx, "bandwidth", w, &AccuracyReport{Accuracy: 0.7, Points: 500})
	a.Check(ctx, "bandwidth", w, &AccuracyReport{Accuracy: 0.6, Points: 600})
	if len(h.alerts) != 1 || h.alerts[0].Kind != AlertAccuracy || h.alerts[0].Accuracy.Accuracy != 0.7 || h.alerts[0].Floor != DefaultAccuracyFloor {
		t.Errorf("alerts %+v; want one accuracy alert at 0.7", h.alerts)
	}
}

// TestAlertConfig names the field of each mistake.
func TestAlertConfig(t *testing.T) {
	for _, c := range []struct {
		cfg  AlertConfig
		want string
	}{{AlertConfig{}, "url: required"}, {AlertConfig{URL: "ftp://x"}, "url:"}, {AlertConfig{URL: "http://x", Attempts: -1}, "negative"},
		{AlertConfig{URL: "http://x", AccuracyFloor: 2}, "accuracy_floor"}} {
		if err := c.cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		}
	}
}
