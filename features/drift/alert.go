package drift

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Defaults of an Alerter, applied by NewAlerter to zero AlertConfig fields.
const (
	DefaultAlertTimeout  = 5 * time.Second
	DefaultAlertAttempts = 3
	// DefaultAccuracyFloor is the seed's retraining trigger: live accuracy below 0.80.
	DefaultAccuracyFloor = 0.80
	// DefaultAlertMinPoints: live accuracy is judged only over at least this many scored
	// forecast steps.
	DefaultAlertMinPoints = 100
)

// AlertConfig is an Alerter's plain-data configuration.
type AlertConfig struct {
	// URL receives each alert as a JSON POST (an Alert). Required.
	URL string
	// Timeout bounds each attempt; Attempts bounds the attempts of one alert (a 5xx, a 429 or no
	// answer is tried again, after 1 s, then 2 s, ...). Zero: DefaultAlertTimeout,
	// DefaultAlertAttempts.
	Timeout  time.Duration
	Attempts int
	// AccuracyFloor: a model whose live accuracy is below it is alerted. Zero:
	// DefaultAccuracyFloor; negative: accuracy is not alerted.
	AccuracyFloor float64
	// MinPoints: accuracy is judged over at least this many scored steps. Zero:
	// DefaultAlertMinPoints.
	MinPoints int64
	// Node names the sending node in the alerts (its host name, say).
	Node string
}

// Validate checks c.
func (c AlertConfig) Validate() error {
	u, err := url.Parse(c.URL)
	switch {
	case c.URL == "":
		return errors.New("url: required")
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return fmt.Errorf("url: %q is not an http(s) URL", c.URL)
	case c.Timeout < 0 || c.Attempts < 0 || c.MinPoints < 0:
		return errors.New("timeout, attempts and min_points must not be negative")
	case c.AccuracyFloor > 1 || math.IsNaN(c.AccuracyFloor):
		return fmt.Errorf("accuracy_floor: %v is above 1", c.AccuracyFloor)
	}
	return nil
}

// Kinds of alert.
const (
	AlertDrift    = "drift"
	AlertAccuracy = "accuracy"
)

// Alert is what the webhook receives: the model, why, and the report that says so.
type Alert struct {
	Model string    `json:"model"`
	Kind  string    `json:"kind"`
	Node  string    `json:"node,omitempty"`
	At    time.Time `json:"at"`
	// Window is the drifted window's report (drift), or the window the alert counts in
	// (accuracy: its start and end only).
	Window WindowReport `json:"window"`
	// Accuracy and Floor, for an accuracy alert.
	Accuracy *AccuracyReport `json:"accuracy,omitempty"`
	Floor    float64         `json:"accuracy_floor,omitempty"`
}

// Alerter calls a webhook when a model drifts or its live accuracy falls below the floor, at most
// once per model, kind and window. Its methods may be called concurrently.
type Alerter struct {
	cfg    AlertConfig
	client *http.Client
	// mu guards sent: per model and kind, the start of the window last alerted.
	mu   sync.Mutex
	sent map[[2]string]time.Time
	// sleep waits between attempts (time.Sleep; a test's clock).
	sleep func(context.Context, time.Duration) error
}

// NewAlerter makes an Alerter.
func NewAlerter(cfg AlertConfig) (*Alerter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("drift.webhook.%w", err)
	}
	cfg.Timeout = cmp.Or(cfg.Timeout, DefaultAlertTimeout)
	cfg.Attempts = cmp.Or(cfg.Attempts, DefaultAlertAttempts)
	cfg.AccuracyFloor = cmp.Or(cfg.AccuracyFloor, DefaultAccuracyFloor)
	cfg.MinPoints = cmp.Or(cfg.MinPoints, DefaultAlertMinPoints)
	return &Alerter{cfg: cfg, client: &http.Client{Timeout: cfg.Timeout, Transport: &http.Transport{Proxy: nil}},
		sent: map[[2]string]time.Time{}, sleep: sleepCtx}, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Check sends the alerts due for one model: windows are its reports, newest first (each drifted
// window with a verdict, once); acc its live accuracy (nil: none), counted in the newest window. It
// returns what it sent and the errors of alerts it could not deliver (they are not tried again
// in the same window).
func (a *Alerter) Check(ctx context.Context, model string, windows []WindowReport, acc *AccuracyReport) (sent []Alert, errs error) {
	if len(windows) == 0 {
		return nil, nil
	}
	now := time.Now()
	// Every drifted window not alerted yet, oldest first: a window that crossed in its last
	// moments is alerted although a newer one has begun since.
	for i := len(windows) - 1; i >= 0; i-- {
		if w := windows[i]; w.Verdict && w.ModelDrifted && a.due(model, AlertDrift, w.Start) {
			al := Alert{Model: model, Kind: AlertDrift, Node: a.cfg.Node, At: now, Window: w}
			sent, errs = a.deliver(ctx, al, sent, errs)
		}
	}
	if acc != nil && a.cfg.AccuracyFloor >= 0 && acc.Points >= a.cfg.MinPoints && acc.Accuracy < a.cfg.AccuracyFloor {
		cur := windows[0]
		if a.due(model, AlertAccuracy, cur.Start) {
			al := Alert{Model: model, Kind: AlertAccuracy, Node: a.cfg.Node, At: now, Accuracy: acc, Floor: a.cfg.AccuracyFloor,
				Window: WindowReport{Start: cur.Start, End: cur.End}}
			sent, errs = a.deliver(ctx, al, sent, errs)
		}
	}
	return sent, errs
}

// due reports whether (model, kind) has no alert for the window starting at start, and marks it.
func (a *Alerter) due(model, kind string, start time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	k := [2]string{model, kind}
	if last, ok := a.sent[k]; ok && !start.After(last) {
		return false
	}
	a.sent[k] = start
	return true
}

func (a *Alerter) deliver(ctx context.Context, al Alert, sent []Alert, errs error) ([]Alert, error) {
	if err := a.post(ctx, al); err != nil {
		return sent, errors.Join(errs, fmt.Errorf("drift webhook: %s alert of model %s: %w", al.Kind, al.Model, err))
	}
	return append(sent, al), errs
}

// post sends one alert, trying again (after 1 s, 2 s, ...) on no answer, a 5xx or a 429, at most
// Attempts times.
func (a *Alerter) post(ctx context.Context, al Alert) error {
	body, err := json.Marshal(al)
	if err != nil {
		return err
	}
	var last error
	for attempt := 0; attempt < a.cfg.Attempts; attempt++ {
		if attempt > 0 {
			if err := a.sleep(ctx, time.Duration(attempt)*time.Second); err != nil {
				return errors.Join(last, err)
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.cfg.URL, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := a.client.Do(req)
		if err != nil {
			last = err
			continue
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		switch {
		case resp.StatusCode < 300:
			return nil
		case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
			last = fmt.Errorf("%s answered %s", a.cfg.URL, resp.Status)
		default:
			return fmt.Errorf("%s answered %s: not tried again", a.cfg.URL, resp.Status)
		}
	}
	return fmt.Errorf("%d attempts: %w", a.cfg.Attempts, last)
}
