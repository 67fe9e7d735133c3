package app

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"reflect"
	"sync/atomic"
	"time"

	"github.com/novacron/sidecar/config"
	"github.com/novacron/sidecar/features/drift"
	"github.com/novacron/sidecar/proxy"
)

// driftObserver is the row observer of the models with a drift profile: each call's canonical
// rows go to its model's monitor; then to next (WithRowObserver's), when set.
type driftObserver struct {
	monitors atomic.Pointer[map[string]*drift.Monitor]
	next     proxy.RowObserver
}

// ObserveRows implements proxy.RowObserver.
func (d *driftObserver) ObserveRows(t proxy.Target, inputs []float32, outputs [][]float32) {
	info := t.Info()
	if m := (*d.monitors.Load())[info.Name]; m != nil {
		m.Observe(inputs, info.Spec.Size(), outputs)
	}
	if d.next != nil {
		d.next.ObserveRows(t, inputs, outputs)
	}
}

// monitored is a model's monitor with what it was built from, so that a reload that changes
// none of it keeps the monitor (and its windows).
type monitored struct {
	m       *drift.Monitor
	profile [32]byte // sha256 of the profile file
	spec    string   // the spec's fingerprint
	digest  string   // the model's digest (its outputs' reference holds for that model only)
	cfg     drift.Config
}

// monitors builds the drift monitors of cfg's models that name a profile, keeping those of old
// whose profile, spec and settings are the same. targets are the loaded models by name.
func (l *loader) monitors(targets map[string]proxy.Target, old map[string]monitored) (map[string]monitored, error) {
	out := map[string]monitored{}
	for i, mc := range l.cfg.Models {
		if mc.Drift.Profile == "" {
			continue
		}
		t, ok := targets[mc.Name]
		if !ok {
			continue
		}
		b, err := config.ReadFile(mc.Drift.Profile, l.cfg.Dir(), l.embedded)
		if err != nil {
			return nil, modelError(l.cfg, i, fmt.Errorf("drift.profile: %w", err))
		}
		spec := t.Info().Spec
		dc := l.cfg.DriftConfig(mc)
		dc.Now = nil
		dc.Outputs = outputColumns(t.Info().Outputs)
		mo := monitored{profile: sha256.Sum256(b), spec: spec.Fingerprint(), digest: t.Info().Digest, cfg: dc}
		if o, ok := old[mc.Name]; ok && o.profile == mo.profile && o.spec == mo.spec && o.digest == mo.digest && reflect.DeepEqual(o.cfg, dc) {
			out[mc.Name] = o
			continue
		}
		p, err := drift.ReadProfile(bytes.NewReader(b), spec)
		if err == nil {
			var why string
			if p, why = p.OutputsFor(mo.digest); why != "" {
				fmt.Fprintf(l.log, "drift: model %s: profile %s: %s\n", mc.Name, mc.Drift.Profile, why)
			}
			err = p.CheckOutputs(dc.Outputs)
		}
		if err != nil {
			return nil, modelError(l.cfg, i, fmt.Errorf("drift.profile %s: %w", mc.Drift.Profile, err))
		}
		if mo.m, err = drift.NewMonitor(p, dc); err != nil {
			return nil, modelError(l.cfg, i, err)
		}
		out[mc.Name] = mo
	}
	return out, nil
}

// outputColumns names the values of a target's answered rows (drift.OutputColumn); nil when an
// output has no fixed width (a legacy forecast's predictions).
func outputColumns(outs []proxy.Output) []string {
	var cols []string
	for _, o := range outs {
		if o.Width <= 0 {
			return nil
		}
		for i := range o.Width {
			cols = append(cols, drift.OutputColumn(o.Name, i, o.Width))
		}
	}
	return cols
}

// setMonitors hands the monitors to the row observer and the exporter.
func (a *App) setMonitors(ms map[string]monitored) {
	plain := make(map[string]*drift.Monitor, len(ms))
	for k, v := range ms {
		plain[k] = v.m
	}
	a.drift.monitors.Store(&plain)
	a.driftExport.Set(plain)
	a.monitored = ms
	if a.Service != nil {
		a.driftExport.SetAccuracy(a.Service.Accuracy())
	}
}

// alertEvery is how often the drift alerter looks at the monitors and trackers.
const alertEvery = 10 * time.Second

// runAlerts calls the webhook for the models that drifted or fell below the accuracy floor,
// every alertEvery until stop closes. Failures are logged (at most one line per model and kind
// per window, as the alerts themselves).
func (a *App) runAlerts(al *drift.Alerter, stop <-chan struct{}) {
	t := time.NewTicker(alertEvery)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // owned by runAlerts: ends with it at the latest
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		monitors := *a.drift.monitors.Load()
		acc := a.Service.Accuracy()
		for model, m := range monitors {
			var rep *drift.AccuracyReport
			if tr, ok := acc[model]; ok {
				r := tr.Report()
				rep = &r
			}
			sent, err := al.Check(ctx, model, m.Report(), rep)
			for _, s := range sent {
				fmt.Fprintf(a.log, "drift: %s alert of model %s sent to the webhook\n", s.Kind, s.Model)
			}
			if err != nil {
				fmt.Fprintf(a.log, "drift: %v\n", err)
			}
		}
	}
}
