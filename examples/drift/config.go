package main

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
	"time"
)

//go:embed sidecar.yaml.tmpl
var configText string

var configTmpl = template.Must(template.New("sidecar.yaml.tmpl").Funcs(template.FuncMap{
	// quote writes a string as a YAML double-quoted scalar (JSON's escapes are YAML's).
	"quote": func(s string) string {
		b, _ := json.Marshal(s)
		return string(b)
	},
}).Parse(configText))

// model is the model the demo drives and watches, as the config names it.
const model = "anomaly"

// params fill sidecar.yaml.tmpl.
type params struct {
	// Window is drift.window; Keep drift.keep; MinSamples drift.min_samples; Share drift.share.
	Window     time.Duration
	Keep       int
	MinSamples int64
	Share      float64
	// Webhook is the receiver's URL (http://127.0.0.1:P/alerts).
	Webhook string
}

// sizes returns the drift settings of the full demo or of its quick form (-quick, for tests):
// at 200 calls/s a window of 20s holds 4,000 rows, one of 10s 2,000; a verdict needs 300.
func sizes(quick bool) params {
	p := params{Window: 20 * time.Second, Keep: 6, MinSamples: 300, Share: 0.1}
	if quick {
		p.Window = 10 * time.Second
	}
	return p
}

// render returns the config of p.
func render(p params) ([]byte, error) {
	var b strings.Builder
	if err := configTmpl.Execute(&b, p); err != nil {
		return nil, fmt.Errorf("sidecar.yaml.tmpl: %w", err)
	}
	return []byte(b.String()), nil
}

// writeConfig renders p to path.
func writeConfig(path string, p params) error {
	b, err := render(p)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}
