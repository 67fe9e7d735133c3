package main

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"text/template"
	"time"
)

// The phases, named as their migrations.
const (
	phaseHTTPToGRPC = "http-to-grpc"
	phaseGRPCToONNX = "grpc-to-onnx"
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

// params fill sidecar.yaml.tmpl.
type params struct {
	// Phase is phaseHTTPToGRPC or phaseGRPCToONNX: which route target and migration to write.
	Phase string
	// SeedHTTP is the seed service's HTTP base URL (http://127.0.0.1:Q); SeedGRPC its gRPC
	// address (127.0.0.1:P).
	SeedHTTP, SeedGRPC string
	// AdminListen is the admin API's loopback host:port. (Not port 0: the sidecar logs the
	// admin address before it serves, so with port 0 the port it picked cannot be learnt.)
	AdminListen string
	// TokenFile and StateFile are absolute paths.
	TokenFile, StateFile string
	// MinDuration and MinCalls bound each stage from below; MaxDisagreement is the disagreement
	// (and shadow error) gate, a share in 0..1.
	MinDuration     time.Duration
	MinCalls        int64
	MaxDisagreement float64
}

// sizes returns the stage sizes of the full demo or of its quick form (-quick, for tests).
func sizes(quick bool) (minDuration time.Duration, minCalls int64, maxDisagreement float64) {
	if quick {
		return time.Second, 80, 0.05
	}
	return 2 * time.Second, 200, 0.02
}

// render returns the config of p.
func render(p params) ([]byte, error) {
	var b strings.Builder
	if err := configTmpl.Execute(&b, p); err != nil {
		return nil, fmt.Errorf("sidecar.yaml.tmpl: %w", err)
	}
	return []byte(b.String()), nil
}

// writeConfig renders p to path (replacing it whole: a SIGHUP never reads half a file).
func writeConfig(path string, p params) error {
	b, err := render(p)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// freePort returns a loopback host:port that was free a moment ago (the kernel's pick for port
// 0), for the admin API.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
