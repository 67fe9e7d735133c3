package config

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
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
		"unknown key": {"listen:\n  grpc: 127.0.0.1:1\n  htp: x\n", "bad.yaml:3: listen.htp: unknown key; did you mean http?"},
		"bad type":    {"limits:\n  request_timeout: soon\n", "bad.yaml:2: limits.request_timeout: \"soon\" is not a duration"},
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

// TestDecodeMessages: a key that is not known or a value of the wrong type is reported with the
// file, the line, the YAML path, and what to write instead.
func TestDecodeMessages(t *testing.T) {
	model := "models:\n  - name: a\n    task: forecast\n    path: a.onnx\n    spec: a.yaml\n"
	cases := map[string]struct{ yaml, want string }{
		"typo": {"limits:\n  request_timeot: 5s\n",
			"bad.yaml:2: limits.request_timeot: unknown key; did you mean request_timeout?"},
		"typo at the top": {"shutdown_timout: 5s\n",
			"bad.yaml:1: shutdown_timout: unknown key; did you mean shutdown_timeout?"},
		"nested typo": {model + "    batching:\n      max_qeue_size: 3\n",
			"bad.yaml:7: models[0].batching.max_qeue_size: unknown key; did you mean max_queue_size?"},
		"typo in a flow mapping": {model + "    pool: {sesions: 2}\n",
			"bad.yaml:6: models[0].pool.sesions: unknown key; did you mean sessions?"},
		"nothing close": {model + "    pool:\n      threads: 2\n",
			"bad.yaml:7: models[0].pool.threads: unknown key; the keys of models[0].pool are sessions, intra_op_threads"},
		"duration without a unit": {"limits:\n  request_timeout: 5\n",
			"bad.yaml:2: limits.request_timeout: 5 has no unit; write a duration such as 5s or 250ms"},
		"not a duration": {"limits:\n  request_timeout: soon\n",
			`bad.yaml:2: limits.request_timeout: "soon" is not a duration; write one with a unit, such as 5s or 250ms`},
		"nested duration": {model + "    backend:\n      kind: kserve\n      endpoints: [127.0.0.1:1]\n      timeout: 2\n",
			"bad.yaml:9: models[0].backend.timeout: 2 has no unit; write a duration such as 5s or 250ms"},
		"not an integer": {"limits:\n  max_nodes: many\n",
			`bad.yaml:2: limits.max_nodes: "many" is not an integer`},
		"list in a list's item": {model + "    batching:\n      preferred_batch_sizes: [1, x]\n",
			`bad.yaml:7: models[0].batching.preferred_batch_sizes[1]: "x" is not an integer`},
		"not a mapping": {"limits: 5\n",
			"bad.yaml:1: limits: 5 is not a mapping (keys such as max_message_bytes: ...)"},
		"not a list": {"models: {name: a}\n",
			"bad.yaml:1: models: a mapping where a list belongs"},
	}
	for name, c := range cases {
		_, err := Parse("bad.yaml", []byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v\nwant it to contain %q", name, err, c.want)
		}
	}
}

// TestReadFileRefusesWhatCannotBeAConfig: a FIFO, a device, a directory and a file past the
// bound are refused at once, naming the path and the reason, instead of blocking the reader or
// filling memory.
func TestReadFileRefusesWhatCannotBeAConfig(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "spec.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, make([]byte, MaxFileBytes+1), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct{ path, dir, want string }{
		"fifo":             {fifo, "", fifo + ": a named pipe (FIFO), not a regular file"},
		"fifo, relative":   {"spec.fifo", dir, fifo + ": a named pipe (FIFO), not a regular file"},
		"device":           {"/dev/zero", "", "/dev/zero: a device, not a regular file"},
		"directory":        {dir, "", dir + ": a directory, not a regular file"},
		"too large":        {big, "", big + ": 1048577 bytes, over the bound of 1048576"},
		"missing":          {filepath.Join(dir, "nope.yaml"), "", "no such file"},
		"embedded missing": {"embedded:nope.yaml", "", "embedded:nope.yaml"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				_, err := ReadFile(c.path, c.dir, os.DirFS("../examples"))
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Errorf("err = %v, want it to contain %q", err, c.want)
				}
			case <-time.After(20 * time.Second): // only catches a hang
				// Unblock a reader stuck opening the FIFO, so that the test can end.
				if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
					w.Close()
				}
				t.Fatalf("ReadFile(%s) has not returned after 20s", c.path)
			}
		})
	}
	if b, err := ReadFile("embedded:configs/default.yaml", "", os.DirFS("../examples")); err != nil || len(b) == 0 {
		t.Errorf("the embedded default: %d bytes, %v", len(b), err)
	}
	// A model may be larger than a config (ReadFileLimit), and a bound applies to embedded files too.
	if b, err := ReadFileLimit(big, "", nil, MaxModelBytes); err != nil || len(b) != MaxFileBytes+1 {
		t.Errorf("a model of %d bytes: %d bytes, %v", MaxFileBytes+1, len(b), err)
	}
	if _, err := ReadFileLimit("embedded:models/bandwidth.onnx", "", os.DirFS("../examples"), 1000); err == nil ||
		!strings.Contains(err.Error(), "embedded:models/bandwidth.onnx: ") || !strings.Contains(err.Error(), "over the bound of 1000") {
		t.Errorf("an embedded file over the bound: %v", err)
	}
}

// TestPos: a parsed Config says where a YAML path is in its file, falling back to the nearest
// ancestor; one built in code names no line.
func TestPos(t *testing.T) {
	c, err := Parse("c.yaml", []byte("# models\nmodels:\n  - {name: a, task: anomaly, path: a, spec: s}\n  - name: b\n    task: anomaly\n    path: b\n    spec: s\n"))
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{"models[0]": "c.yaml:3", "models[1]": "c.yaml:4", "models[1].path": "c.yaml:6",
		"models[1].pool.sessions": "c.yaml:4", "models[7]": "c.yaml:2", "limits": "c.yaml:2"} {
		if got := c.Pos(path); got != want {
			t.Errorf("Pos(%s) = %s, want %s", path, got, want)
		}
	}
	if got := (&Config{Source: "x.yaml"}).Pos("models[0]"); got != "x.yaml" {
		t.Errorf("a Config built in code: Pos = %s, want the file alone", got)
	}
}

// TestAnchorsAndMerges: YAML anchors, aliases and merge keys are checked like the keys they stand
// for.
func TestAnchorsAndMerges(t *testing.T) {
	extension := "x-pool: &pool {sessions: 1}\n"
	if _, err := Parse("c.yaml", []byte(extension)); err == nil || !strings.Contains(err.Error(), "c.yaml:1: x-pool: unknown key; the top-level keys are listen, limits") {
		t.Errorf("an unknown top-level key: %v", err)
	}
	ok := "models:\n  - name: a\n    task: anomaly\n    path: a\n    spec: s\n    batching: &b {max_batch_size: 8}\n" +
		"  - name: b\n    task: anomaly\n    path: a\n    spec: s\n    batching:\n      <<: *b\n      max_queue_size: 16\n"
	c, err := Parse("c.yaml", []byte(ok))
	if err != nil {
		t.Fatal(err)
	}
	if b := c.Models[1].Batching; b.MaxBatchSize != 8 || b.MaxQueueSize != 16 {
		t.Errorf("merged batching %+v", b)
	}
	bad := strings.Replace(ok, "{max_batch_size: 8}", "{max_batch_sise: 8}", 1)
	// Reported once, where it is written (not again where it is merged).
	if _, err := Parse("c.yaml", []byte(bad)); err == nil || err.Error() != "c.yaml:6: models[0].batching.max_batch_sise: unknown key; did you mean max_batch_size?" {
		t.Errorf("a typo under an anchor: %v", err)
	}
}
