package main

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/novacron/sidecar/config"
	"github.com/novacron/sidecar/features"
)

// TestConfigTemplate: the config, in both sizes, is one the sidecar accepts, with the settings
// the demo relies on: its drift window, min_samples and webhook; the anomaly model with its
// profile; the cache off; and a share under one feature of the spec's, so that one drifted
// feature makes the model drift (and alert). A window at the default rate holds several
// verdicts' worth of rows.
func TestConfigTemplate(t *testing.T) {
	spec, err := features.LoadFile(filepath.Join("..", "specs", "anomaly.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const rate = 200 // the -rate default
	for _, quick := range []bool{false, true} {
		t.Run(fmt.Sprintf("quick=%v", quick), func(t *testing.T) {
			p := sizes(quick)
			p.Webhook = "http://127.0.0.1:1/alerts"
			b, err := render(p)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Parse("sidecar.yaml", b)
			if err != nil {
				t.Fatalf("%v\n%s", err, b)
			}
			d := cfg.Drift
			if d.Window != p.Window || d.Keep != p.Keep || d.MinSamples != p.MinSamples || d.Share != p.Share || d.Webhook.URL != p.Webhook {
				t.Errorf("drift %+v, want window %v, keep %d, min_samples %d, share %v, webhook %s", d, p.Window, p.Keep, p.MinSamples, p.Share, p.Webhook)
			}
			if len(cfg.Models) != 1 || cfg.Models[0].Name != model || cfg.Models[0].Drift.Profile != "embedded:models/anomaly.profile" || !cfg.Cache.Disabled {
				t.Errorf("models %+v, cache %+v: want the anomaly model with its profile, and no cache", cfg.Models, cfg.Cache)
			}
			if one := 1 / float64(spec.Width()); !(p.Share < one) {
				t.Errorf("share %v: one drifted feature of %d (%.3f) would not make the model drift", p.Share, spec.Width(), one)
			}
			if rows := int64(rate * p.Window.Seconds()); rows < 4*p.MinSamples {
				t.Errorf("a window of %v holds %d rows at %d calls/s: under 4 x min_samples %d", p.Window, rows, rate, p.MinSamples)
			}
		})
	}
}
