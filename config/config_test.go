package config

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestEmbeddedDefault(t *testing.T) {
	c, err := Load("", os.DirFS("../examples"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen.GRPC != "127.0.0.1:50051" || c.Listen.HTTP != "127.0.0.1:8080" {
		t.Errorf("listen %+v, want localhost defaults", c.Listen)
	}
	var names []string
	for _, m := range c.Models {
		names = append(names, m.Name)
	}
	if strings.Join(names, ",") != "bandwidth,anomaly,placement" {
		t.Errorf("models %v", names)
	}
	if c.Source != "embedded:configs/default.yaml" || c.Dir() != "" {
		t.Errorf("source %q dir %q", c.Source, c.Dir())
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse("x.yaml", []byte("models:\n  - {name: a, task: anomaly, path: a.onnx, spec: a.yaml}\n"))
	if err != nil {
		t.Fatal(err)
	}
	m := c.Models[0]
	if m.Pool.Sessions != 2 || m.Pool.IntraOpThreads != 1 {
		t.Errorf("pool %+v", m.Pool)
	}
	if m.Anomaly != (Anomaly{0.5, 0.7, 0.85, 0.95}) {
		t.Errorf("anomaly %+v", m.Anomaly)
	}
	if c.Limits.RequestTimeout != 5*time.Second || c.Limits.MaxMessageBytes != 4<<20 || c.ShutdownTimeout != 10*time.Second {
		t.Errorf("limits %+v shutdown %v", c.Limits, c.ShutdownTimeout)
	}
}

func TestErrorsNameFileAndLine(t *testing.T) {
	cases := map[string]struct{ yaml, want string }{
		"unknown key": {"listen:\n  grpc: 127.0.0.1:1\n  htp: x\n", "bad.yaml:3: field htp not found in type config.Listen"},
		"bad type":    {"limits:\n  request_timeout: soon\n", "bad.yaml:2: cannot unmarshal"},
		"pool sessions": {"models:\n  - name: a\n    task: forecast\n    path: a.onnx\n    spec: a.yaml\n    pool:\n      sessions: 100\n",
			"bad.yaml:7: models[0].pool.sessions: 100 is not in 1..64"},
		"task":             {"models:\n  - name: a\n    task: guess\n    path: a.onnx\n    spec: s\n", "bad.yaml:3: models[0].task"},
		"route task":       {"models:\n  - {name: bandwidth, task: anomaly, path: a, spec: s}\n", "routes.predict_bandwidth: model \"bandwidth\" has task anomaly"},
		"route to nothing": {"models:\n  - {name: a, task: anomaly, path: a, spec: s}\nroutes:\n  detect_anomaly: b\n", "bad.yaml:4: routes.detect_anomaly: model \"b\" is not in models"},
		"syntax":           {"listen:\n  grpc: [\n", "bad.yaml:2: did not find expected node content"},
		"two documents":    {"listen: {grpc: 127.0.0.1:1}\n---\nlisten: {grpc: x}\n", "more than one YAML document"},
		"thresholds": {"models:\n  - name: a\n    task: anomaly\n    path: a\n    spec: s\n    anomaly: {threshold: 0.9, medium: 0.5}\n",
			"bad.yaml:6: models[0].anomaly: need 0 < threshold <= medium"},
		"listen":    {"listen: {grpc: nowhere}\n", "bad.yaml:1: listen.grpc"},
		"empty":     {"", "bad.yaml: the file is empty"},
		"duplicate": {"models:\n  - {name: a, task: placement, path: a, spec: s}\n  - {name: a, task: placement, path: a, spec: s}\n", "bad.yaml:3: models[1].name: \"a\" is used twice"},
	}
	for name, c := range cases {
		_, err := Parse("bad.yaml", []byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to contain %q", name, err, c.want)
		}
	}
}
