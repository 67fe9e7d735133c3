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
	// The limits the proxy applies stay zero here (see TestDocumentedDefaults for their values).
	if c.Limits.RequestTimeout != 5*time.Second || c.Limits.MaxMessageBytes != 0 || c.ShutdownTimeout != 10*time.Second {
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
		"route task":       {"models:\n  - {name: bandwidth, task: anomaly, path: a, spec: s}\n", "routes.predict_bandwidth.target: model \"bandwidth\" has task anomaly"},
		"route to nothing": {"models:\n  - {name: a, task: anomaly, path: a, spec: s}\nroutes:\n  detect_anomaly: b\n", "bad.yaml:4: routes.detect_anomaly.target: model \"b\" is not in models"},
		"syntax":           {"listen:\n  grpc: [\n", "bad.yaml:2: did not find expected node content"},
		"two documents":    {"listen: {grpc: 127.0.0.1:1}\n---\nlisten: {grpc: x}\n", "more than one YAML document"},
		"thresholds": {"models:\n  - name: a\n    task: anomaly\n    path: a\n    spec: s\n    anomaly: {threshold: 0.9, medium: 0.5}\n",
			"bad.yaml:6: models[0].anomaly: need 0 < threshold <= medium"},
		"listen":    {"listen: {grpc: nowhere}\n", "bad.yaml:1: listen.grpc"},
		"empty":     {"", "bad.yaml: the file is empty"},
		"duplicate": {"models:\n  - {name: a, task: placement, path: a, spec: s}\n  - {name: a, task: placement, path: a, spec: s}\n", "bad.yaml:3: models[1].name: \"a\" is used twice"},
		// Routes, shadows and migrations.
		"oip route to a legacy model": {"models:\n  - {name: a, task: anomaly, path: a, spec: s}\n  - {name: l, task: anomaly, spec: s, backend: {kind: legacy_grpc, endpoints: [127.0.0.1:1]}}\nroutes:\n  models:\n    x:\n      target: a\n      split: [{target: l, percent: 10}]\n",
			"bad.yaml:8: routes.models.x.split[0].target: model \"l\" is a legacy service"},
		"split over 100": {"models:\n  - {name: a, task: anomaly, path: a, spec: s}\n  - {name: b, task: anomaly, path: b, spec: s}\n  - {name: c, task: anomaly, path: c, spec: s}\nroutes:\n  detect_anomaly: {target: a, split: [{target: b, percent: 60}, {target: c, percent: 50}]}\n",
			"bad.yaml:6: routes.detect_anomaly.split: the arms take 110 percent together"},
		"route key": {"models:\n  - {name: a, task: anomaly, path: a, spec: s}\nroutes:\n  detect_anomaly: {target: a, key: workload_id}\n",
			"routes.detect_anomaly.key: \"workload_id\" is not a key of detect_anomaly"},
		"unknown route key": {"routes:\n  detect_anomaly: {target: a, wieght: 1}\n", "bad.yaml:2: routes.detect_anomaly.wieght: unknown key"},
		"route as a number": {"routes:\n  detect_anomaly: 5\n", "bad.yaml:2: routes.detect_anomaly"},
		"migration without a state file": {"models:\n  - {name: a, task: anomaly, path: a, spec: s}\n  - {name: b, task: anomaly, path: b, spec: s}\nroutes:\n  detect_anomaly: a\nmigrations:\n  - {name: m, route: detect_anomaly, to: b}\n",
			"state_file: required with migrations"},
		"migration of a split route": {"models:\n  - {name: a, task: anomaly, path: a, spec: s}\n  - {name: b, task: anomaly, path: b, spec: s}\nroutes:\n  detect_anomaly: {target: a, shadow: [{target: b, percent: 5}]}\nmigrations:\n  - {name: m, route: detect_anomaly, to: b}\nstate_file: s.json\n",
			"bad.yaml:7: migrations[0].route: routes.detect_anomaly has a split or shadows of its own"},
		"migration to another task": {"models:\n  - {name: a, task: anomaly, path: a, spec: s}\n  - {name: b, task: placement, path: b, spec: s}\nroutes:\n  detect_anomaly: a\nmigrations:\n  - {name: m, route: detect_anomaly, to: b}\nstate_file: s.json\n",
			"migrations[0].to: model \"b\" has task placement"},
		"migration stage": {"models:\n  - {name: a, task: anomaly, path: a, spec: s}\n  - {name: b, task: anomaly, path: b, spec: s}\nroutes:\n  detect_anomaly: a\nmigrations:\n  - {name: m, route: detect_anomaly, to: b, stages: [{split: 150}]}\nstate_file: s.json\n",
			"migrations[0]: stages[0].split: 150 is not a percent in 0..100"},
		"drift method":          {"models:\n  - {name: a, task: anomaly, path: a, spec: s, drift: {profile: p, methods: {cpu: ks}}}\n", "bad.yaml:2: models[0].drift.methods.cpu: \"ks\" is not a drift method"},
		"drift methods alone":   {"models:\n  - {name: a, task: anomaly, path: a, spec: s, drift: {methods: {cpu: js}}}\n", "models[0].drift.methods: methods without a profile"},
		"drift threshold":       {"drift: {thresholds: {psi: 0}}\n", "drift.thresholds.psi: 0 is not positive"},
		"drift share":           {"drift: {share: 2}\n", "drift.share: 2 is not a share"},
		"webhook not a url":     {"drift: {webhook: {url: 'ftp://x'}}\n", "drift.webhook: url: \"ftp://x\" is not an http(s) URL"},
		"webhook without a url": {"drift: {webhook: {attempts: 2}}\n", "drift.webhook.url: required"},
		"admin off loopback":    {"admin: {listen: 0.0.0.0:9464, token_file: t}\n", "bad.yaml:1: admin.listen"},
		"admin without a token": {"admin: {listen: 127.0.0.1:9464}\n", "admin.token_file: required"},
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

// TestBackendRefusals: each refusal of a model's backend, fallback and hedging settings, alone in
// its file, with its message, the file, the line and the YAML path.
func TestBackendRefusals(t *testing.T) {
	// Lines 1-5: the model; 6: backend; 7: kind; 8: endpoints; what a case adds starts at line 9.
	const model = "models:\n  - name: m\n    task: forecast\n    path: m.onnx\n    spec: m.yaml\n"
	backend := func(kind, endpoints string, more ...string) string {
		y := model + "    backend:\n      kind: " + kind + "\n      endpoints: " + endpoints + "\n"
		for _, l := range more {
			y += l + "\n"
		}
		return y
	}
	kserve := func(more ...string) string { return backend("kserve", "[127.0.0.1:1, 127.0.0.1:2]", more...) }
	cases := []struct{ name, yaml, want string }{
		// The in-process backend.
		{"onnx without path", "models:\n  - name: m\n    task: forecast\n    spec: m.yaml\n",
			"bad.yaml:2: models[0].path: required: the .onnx file (or embedded:models/NAME.onnx)"},
		{"onnx with endpoints", backend("onnx", "[127.0.0.1:1]"),
			"bad.yaml:8: models[0].backend.endpoints: an onnx backend runs in the process; endpoints are for kserve, legacy_http and legacy_grpc"},
		{"onnx with a fallback", model + "    fallback: local\n",
			`bad.yaml:6: models[0].fallback: "local": only a remote backend takes a fallback`},
		{"unknown kind", backend("triton", "[127.0.0.1:1]"),
			`bad.yaml:7: models[0].backend.kind: "triton" is not one of onnx, kserve, legacy_http, legacy_grpc`},

		// Endpoints.
		{"no endpoints", backend("legacy_grpc", "[]"),
			"bad.yaml:8: models[0].backend.endpoints: a legacy_grpc backend needs at least one endpoint"},
		{"endpoint twice", backend("kserve", "[127.0.0.1:1, 127.0.0.1:1]"),
			`bad.yaml:8: models[0].backend.endpoints[1]: "127.0.0.1:1" is listed twice`},
		{"legacy_http endpoint not a URL", backend("legacy_http", "\n        - http://127.0.0.1:1\n        - 127.0.0.1:2"),
			`bad.yaml:10: models[0].backend.endpoints[1]: "127.0.0.1:2" is not a base URL such as http://127.0.0.1:8080`},
		{"kserve endpoint not host:port", backend("kserve", "[10.0.0.5]"),
			`bad.yaml:8: models[0].backend.endpoints[0]: "10.0.0.5" is not host:port: address 10.0.0.5: missing port in address`},

		// Durations, thresholds, the breaker and retries.
		{"negative timeout", kserve("      timeout: -1s"), "bad.yaml:6: models[0].backend: durations must not be negative"},
		{"negative hedge_delay", kserve("      hedge_delay: -1ms"), "bad.yaml:6: models[0].backend: durations must not be negative"},
		{"negative health timeout", kserve("      health: {timeout: -1s}"), "bad.yaml:6: models[0].backend: durations must not be negative"},
		{"negative open_timeout", kserve("      breaker: {open_timeout: -1s}"), "bad.yaml:6: models[0].backend: durations must not be negative"},
		{"negative breaker interval", kserve("      breaker: {interval: -1s}"), "bad.yaml:6: models[0].backend: durations must not be negative"},
		{"unhealthy_threshold", kserve("      health: {unhealthy_threshold: -1}"), "bad.yaml:9: models[0].backend.health: thresholds must be at least 1 (0: the default)"},
		{"healthy_threshold", kserve("      health: {healthy_threshold: -2}"), "bad.yaml:9: models[0].backend.health: thresholds must be at least 1 (0: the default)"},
		{"consecutive_failures", kserve("      breaker: {consecutive_failures: -1}"),
			"bad.yaml:9: models[0].backend.breaker: consecutive_failures, half_open_requests and min_requests must be at least 1 (0: the default)"},
		{"half_open_requests", kserve("      breaker: {half_open_requests: -1}"),
			"bad.yaml:9: models[0].backend.breaker: consecutive_failures, half_open_requests and min_requests must be at least 1 (0: the default)"},
		{"min_requests", kserve("      breaker: {min_requests: -1}"),
			"bad.yaml:9: models[0].backend.breaker: consecutive_failures, half_open_requests and min_requests must be at least 1 (0: the default)"},
		{"failure_ratio above 1", kserve("      breaker:", "        failure_ratio: 1.5"),
			"bad.yaml:10: models[0].backend.breaker.failure_ratio: 1.5 is not in 0..1"},
		{"failure_ratio below 0", kserve("      breaker: {failure_ratio: -0.1}"),
			"bad.yaml:9: models[0].backend.breaker.failure_ratio: -0.1 is not in 0..1"},
		{"max_attempts above 10", kserve("      retry:", "        max_attempts: 11"),
			"bad.yaml:10: models[0].backend.retry.max_attempts: 11 is not in 1..10 (0: the default, 3)"},
		{"max_attempts below 1", kserve("      retry: {max_attempts: -1}"),
			"bad.yaml:9: models[0].backend.retry.max_attempts: -1 is not in 1..10 (0: the default, 3)"},
		{"retry budget", kserve("      retry: {budget: 1.5}"),
			"bad.yaml:9: models[0].backend.retry: budget must be in 0..1 and min_per_second not negative"},
		{"retry min_per_second", kserve("      retry: {min_per_second: -1}"),
			"bad.yaml:9: models[0].backend.retry: budget must be in 0..1 and min_per_second not negative"},

		// Hedging.
		{"hedge not shorter than the timeout", kserve("      timeout: 100ms", "      hedge_delay: 100ms"),
			"bad.yaml:10: models[0].backend.hedge_delay: 100ms is not shorter than the attempt timeout 100ms"},
		{"hedge without a second attempt", kserve("      hedge_delay: 50ms", "      retry: {max_attempts: 1}"),
			"bad.yaml:9: models[0].backend.hedge_delay: hedging needs retry.max_attempts of 2 or more (a hedge is an attempt), got 1"},

		// Fallbacks.
		{"fallback on a legacy backend", backend("legacy_http", "[http://127.0.0.1:1]", "    fallback: stale"),
			`bad.yaml:9: models[0].fallback: "stale": only a kserve backend takes a fallback (a legacy service's answers are not cached, and it has no local equivalent)`},
		{"local fallback without path", "models:\n  - name: m\n    task: forecast\n    spec: m.yaml\n    fallback: local\n    backend: {kind: kserve, endpoints: [127.0.0.1:1]}\n",
			"bad.yaml:5: models[0].fallback: local needs path: the .onnx model to run when every endpoint is down"},
		{"stale fallback with the cache off", "cache: {disabled: true}\n" + kserve("    fallback: stale"),
			"bad.yaml:10: models[0].fallback: stale serves cached answers; it needs the cache on and cache_ttl not negative"},
		{"stale fallback with the model kept out of the cache", kserve("    fallback: stale", "    cache_ttl: -1s"),
			"bad.yaml:9: models[0].fallback: stale serves cached answers; it needs the cache on and cache_ttl not negative"},
		{"unknown fallback", kserve("    fallback: maybe"),
			`bad.yaml:9: models[0].fallback: "maybe" is not one of none, local, stale`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("bad.yaml", []byte(c.yaml))
			if err == nil || err.Error() != c.want {
				t.Errorf("err = %v\nwant exactly %s\nconfig:\n%s", err, c.want, c.yaml)
			}
		})
	}
}

// TestValidRemoteBackends: a config of each remote kind, with hedging and each fallback where it
// applies, is accepted as written. It does not pin the remote defaults' values: issue 10 moves
// them into the components.
func TestValidRemoteBackends(t *testing.T) {
	const model = "models:\n  - name: m\n    task: forecast\n    path: m.onnx\n    spec: m.yaml\n"
	cases := []struct {
		name, yaml string
		want       func(m Model) bool
	}{
		{"kserve, hedged, local fallback", model + "    fallback: local\n    backend:\n      kind: kserve\n      endpoints: [10.0.0.1:8001, 10.0.0.2:8001]\n" +
			"      model: m-remote\n      timeout: 300ms\n      hedge_delay: 40ms\n      retry: {max_attempts: 2, budget: 0.2}\n" +
			"      breaker: {failure_ratio: 0.5}\n      health: {interval: -1s}\n",
			func(m Model) bool {
				be := m.Backend
				return m.Fallback == FallbackLocal && be.Kind == BackendKServe && len(be.Endpoints) == 2 && be.Model == "m-remote" &&
					be.Timeout == 300*time.Millisecond && be.HedgeDelay == 40*time.Millisecond && be.Retry.MaxAttempts == 2 &&
					be.Retry.Budget == 0.2 && be.Breaker.FailureRatio == 0.5 && be.Health.Interval == -time.Second
			}},
		{"kserve, stale fallback, no path", "models:\n  - name: m\n    task: forecast\n    spec: m.yaml\n    fallback: stale\n" +
			"    backend: {kind: kserve, endpoints: [127.0.0.1:8001]}\n",
			func(m Model) bool {
				be := m.Backend
				return m.Fallback == FallbackStale && be.Kind == BackendKServe && be.Model == "m" && be.HedgeDelay == 0
			}},
		{"legacy_http, hedged", model + "    backend:\n      kind: legacy_http\n      endpoints: [http://10.0.0.5:8080, https://ai.internal]\n" +
			"      hedge_delay: 100ms\n",
			func(m Model) bool {
				be := m.Backend
				return m.Fallback == FallbackNone && be.Kind == BackendLegacyHTTP && be.Endpoints[1] == "https://ai.internal" &&
					be.HedgeDelay == 100*time.Millisecond
			}},
		{"legacy_grpc", "models:\n  - name: m\n    task: forecast\n    spec: m.yaml\n" +
			"    backend: {kind: legacy_grpc, endpoints: ['[::1]:50052', ai.internal:50051], retry: {max_attempts: 1}}\n",
			func(m Model) bool {
				be := m.Backend
				return m.Fallback == FallbackNone && be.Kind == BackendLegacyGRPC && be.Endpoints[0] == "[::1]:50052" &&
					be.Retry.MaxAttempts == 1 && be.Remote()
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse("ok.yaml", []byte(c.yaml))
			if err != nil {
				t.Fatalf("refused: %v\nconfig:\n%s", err, c.yaml)
			}
			if m := cfg.Models[0]; !c.want(m) {
				t.Errorf("parsed as %+v\nconfig:\n%s", m, c.yaml)
			}
		})
	}
}
