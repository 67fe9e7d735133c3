package proxy_test

import (
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/novacron/sidecar/features"
	"github.com/novacron/sidecar/features/drift"
	"github.com/novacron/sidecar/proxy"
)

// driftMonitor is a monitor of the anomaly spec's profile that has seen n rows in one window.
func driftMonitor(t *testing.T, n int) (*drift.Monitor, *features.Spec) {
	t.Helper()
	spec, err := features.LoadFile("../examples/specs/anomaly.yaml")
	if err != nil {
		t.Fatal(err)
	}
	w := spec.Width()
	r := rand.New(rand.NewPCG(1, 2))
	data := func(n int) []float32 {
		out := make([]float32, n*w)
		for i := range out {
			out[i] = float32(r.NormFloat64())
		}
		return out
	}
	b, err := drift.NewBuilder(spec, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Add(data(2000)); err != nil {
		t.Fatal(err)
	}
	p, err := b.Profile()
	if err != nil {
		t.Fatal(err)
	}
	m, err := drift.NewMonitor(p, drift.Config{Now: func() time.Time { return time.Date(2026, 5, 1, 10, 1, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	m.Observe(data(n), w, nil)
	return m, spec
}

// driftServer serves the HTTP front end over a real loopback listener with monitors.
func driftServer(t *testing.T, monitors func() map[string]*drift.Monitor) *httptest.Server {
	t.Helper()
	svc, err := proxy.New(proxy.Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	srv := httptest.NewServer(proxy.NewHTTPHandler(svc, proxy.HTTPOptions{DriftMonitors: monitors}))
	t.Cleanup(srv.Close)
	return srv
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func get(t *testing.T, url, accept string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// TestDriftSketchesRoute: GET /v1/drift/sketches over real HTTP: the snapshot in JSON by default
// and in protobuf when asked, the same rows in both; 400 naming the parameter and listing the
// models; 404 for a model without a monitor, in the proxy's JSON error shape.
func TestDriftSketchesRoute(t *testing.T) {
	m, spec := driftMonitor(t, 700)
	other, _ := driftMonitor(t, 10)
	srv := driftServer(t, func() map[string]*drift.Monitor { return map[string]*drift.Monitor{"anomaly": m, "anomaly-b": other} })
	base := srv.URL + proxy.DriftSketchesPath

	resp, body := get(t, base+"?model=anomaly", "")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Vary") != "Accept" {
		t.Fatalf("JSON: %s, %q, Vary %q: %.300s", resp.Status, resp.Header.Get("Content-Type"), resp.Header.Get("Vary"), body)
	}
	fromJSON, err := drift.UnmarshalSnapshotJSON(body)
	if err != nil {
		t.Fatal(err)
	}
	resp, body = get(t, base+"?model=anomaly", "application/x-protobuf")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != proxy.ProtobufContentType {
		t.Fatalf("protobuf: %s, %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	fromPB, err := drift.UnmarshalSnapshotProto(body)
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*drift.Snapshot{"JSON": fromJSON, "protobuf": fromPB} {
		reps, err := drift.ScoreSnapshot(s, drift.Config{})
		if err != nil {
			t.Fatal(err)
		}
		if s.Model != "anomaly" || s.Fingerprint != spec.Fingerprint() || len(reps) != 1 || reps[0].Rows != 700 || len(reps[0].Features) != spec.Width() {
			t.Errorf("%s: model %q, fingerprint %.12s, %d windows: %+v", name, s.Model, s.Fingerprint, len(reps), reps)
		}
	}

	for _, c := range []struct {
		name, query string
		status      int
		code        string
		want        []string
	}{
		{"no model", "", 400, "INVALID_ARGUMENT", []string{"model: missing", "the models with one: anomaly, anomaly-b"}},
		{"empty model", "?model=", 400, "INVALID_ARGUMENT", []string{"model: missing"}},
		{"two models", "?model=anomaly&model=anomaly-b", 400, "INVALID_ARGUMENT", []string{"model: given 2 times"}},
		{"another parameter", "?model=anomaly&window=1", 400, "INVALID_ARGUMENT", []string{`"window": unknown parameter`}},
		{"bad query", "?model=%zz", 400, "INVALID_ARGUMENT", []string{"query:"}},
		{"unknown model", "?model=bandwidth", 404, "NOT_FOUND", []string{`model "bandwidth" has no drift monitor`, "anomaly, anomaly-b"}},
	} {
		resp, body := get(t, base+c.query, "application/x-protobuf")
		var e errorBody
		if err := json.Unmarshal(body, &e); err != nil || resp.StatusCode != c.status || e.Error.Code != c.code || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %s %q: %s", c.name, resp.Status, resp.Header.Get("Content-Type"), body)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(e.Error.Message, w) {
				t.Errorf("%s: %q lacks %q", c.name, e.Error.Message, w)
			}
		}
	}
	if resp, body := get(t, base+"?model=anomaly", "text/html"); resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("Accept text/html: %q %.100s", resp.Header.Get("Content-Type"), body)
	}
	resp, err = http.Post(base+"?model=anomaly", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %s", resp.Status)
	}
}

// TestDriftSketchesNoMonitors: without the hook there is no route; with no monitors, the 400
// says how to get one.
func TestDriftSketchesNoMonitors(t *testing.T) {
	resp, body := get(t, driftServer(t, nil).URL+proxy.DriftSketchesPath+"?model=anomaly", "")
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "no such route") {
		t.Errorf("no hook: %s %s", resp.Status, body)
	}
	resp, body = get(t, driftServer(t, func() map[string]*drift.Monitor { return nil }).URL+proxy.DriftSketchesPath, "")
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "no model has one: give a model drift.profile in the config") {
		t.Errorf("no monitors: %s %s", resp.Status, body)
	}
}

// TestDriftAccept: which Accept headers get protobuf.
func TestDriftAccept(t *testing.T) {
	m, _ := driftMonitor(t, 5)
	srv := driftServer(t, func() map[string]*drift.Monitor { return map[string]*drift.Monitor{"a": m} })
	for accept, want := range map[string]string{
		"":                                  "application/json",
		"*/*":                               "application/json",
		"application/json":                  "application/json",
		"application/x-protobuf":            proxy.ProtobufContentType,
		"application/protobuf":              proxy.ProtobufContentType,
		"application/x-protobuf, */*;q=0.1": proxy.ProtobufContentType,
		"application/json, application/x-protobuf":             proxy.ProtobufContentType,
		"application/json;q=0.9, application/x-protobuf;q=0.5": "application/json",
		"application/x-protobuf;q=0":                           "application/json",
		"text/plain, application/x-protobuf;q=0.2":             proxy.ProtobufContentType,
	} {
		if resp, _ := get(t, srv.URL+proxy.DriftSketchesPath+"?model=a", accept); resp.Header.Get("Content-Type") != want {
			t.Errorf("Accept %q: %q, want %q", accept, resp.Header.Get("Content-Type"), want)
		}
	}
}

// TestDriftSketchesWhileObserving: snapshots are served while rows are observed (run with -race).
func TestDriftSketchesWhileObserving(t *testing.T) {
	m, spec := driftMonitor(t, 0)
	srv := driftServer(t, func() map[string]*drift.Monitor { return map[string]*drift.Monitor{"anomaly": m} })
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		row := make([]float32, spec.Width())
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			row[i%len(row)] = float32(i % 17)
			m.Observe(row, spec.Width(), nil)
		}
	})
	for range 20 {
		resp, body := get(t, srv.URL+proxy.DriftSketchesPath+"?model=anomaly", proxy.ProtobufContentType)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s", resp.Status, body)
		}
		if _, err := drift.UnmarshalSnapshotProto(body); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}
