package legacy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/novacron/sidecar/backends"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// fakeHTTPUpstream is a real HTTP handler for the seed's routes (served on a loopback port by
// httptest, or over pipes in a synctest bubble, where its waits run on the bubble's fake clock)
// that answers with the seed server's heuristic, echoing vm_id as the seed's batch API does, or
// answers wrongly in the way mode says. It decodes requests strictly, as the sidecar's own front
// end does, so a request the client encodes wrongly fails the test.
type fakeHTTPUpstream struct {
	// mode: "" answers correctly; see answer and the switch in ServeHTTP for the others.
	mode string
	// delay holds every answer, cut short when the client goes away.
	delay time.Duration

	single, batch atomic.Int64 // calls of /api/v1/predict and /api/v1/predict/batch
	inflight, max atomic.Int64 // calls being answered, and the most at once
	timeout       atomic.Value // the last X-Request-Timeout header, a string
}

func serveHTTP(t *testing.T, f *fakeHTTPUpstream, cfg HTTPConfig) *HTTP {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	cfg.BaseURL = srv.URL
	c, err := NewHTTP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (f *fakeHTTPUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := f.inflight.Add(1)
	defer f.inflight.Add(-1)
	for m := f.max.Load(); n > m && !f.max.CompareAndSwap(m, n); m = f.max.Load() {
	}
	f.timeout.Store(r.Header.Get("X-Request-Timeout"))
	// Read the body first: net/http notices a client that went away (and cancels r.Context()) only
	// once the body has been read.
	body, _ := io.ReadAll(r.Body)
	if f.delay > 0 {
		select {
		case <-time.After(f.delay):
		case <-r.Context().Done():
			return
		}
	}
	raw := func(code int, ctype, body string) {
		w.Header().Set("Content-Type", ctype)
		w.WriteHeader(code)
		io.WriteString(w, body)
	}
	switch f.mode {
	case "500":
		raw(500, "application/json", `{"error": {"code": "INTERNAL", "message": "boom"}}`)
		return
	case "503":
		raw(503, "text/plain", "overloaded\n")
		return
	case "429":
		raw(429, "application/json", `{"error": {"code": "RESOURCE_EXHAUSTED", "message": "queue full"}}`)
		return
	case "422":
		raw(422, "application/json", `{"detail": [{"loc": ["body", "vm_id"], "msg": "field required"}]}`)
		return
	case "504-now":
		raw(504, "text/plain", "gateway timeout")
		return
	case "504-at-deadline": // gives up 5ms before the deadline it was told, as a sidecar does
		if d, err := time.ParseDuration(r.Header.Get("X-Request-Timeout")); err == nil {
			time.Sleep(d - 5*time.Millisecond)
		}
		raw(504, "application/json", `{"error": {"code": "DEADLINE_EXCEEDED", "message": "deadline exceeded"}}`)
		return
	case "html":
		raw(200, "text/html", "<html><body>It works!</body></html>")
		return
	case "redirect":
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
		return
	}
	var req, resp proto.Message
	switch r.Method + " " + r.URL.Path {
	case "GET /healthz":
		if f.mode == "unhealthy" {
			raw(503, "text/plain", "starting")
		} else {
			raw(200, "text/plain", "ok\n")
		}
		return
	case "POST /api/v1/predict":
		f.single.Add(1)
		req = &aipb.BandwidthRequest{}
	case "POST /api/v1/predict/batch":
		f.batch.Add(1)
		req = &aipb.BandwidthBatchRequest{}
	case "POST /api/v1/anomaly":
		req = &aipb.AnomalyRequest{}
	case "POST /api/v1/placement":
		req = &aipb.PlacementRequest{}
	default:
		raw(404, "application/json", `{"error": {"code": "NOT_FOUND", "message": "no route"}}`)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		raw(415, "text/plain", "Content-Type "+ct)
		return
	}
	if err := protojson.Unmarshal(body, req); err != nil {
		raw(400, "application/json", fmt.Sprintf(`{"error": {"code": "INVALID_ARGUMENT", "message": %q}}`, err.Error()))
		return
	}
	resp, msg := f.answer(req)
	if msg != "" {
		raw(400, "application/json", fmt.Sprintf(`{"error": {"code": "INVALID_ARGUMENT", "message": %q}}`, msg))
		return
	}
	out, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(resp)
	if err != nil {
		panic(err)
	}
	switch f.mode {
	case "malformed-json":
		out = out[:len(out)/2]
	case "nan-literal": // what Python's json.dumps writes for float("nan")
		out = []byte(`{"predictions": [NaN], "confidence": 0.5, "model_version": "x"}`)
	case "unknown-field":
		out = append([]byte(`{"latency_ms": 3, `), out[1:]...)
	}
	raw(200, "application/json", string(out))
}

// answer is the heuristic's answer to req, spoiled as f.mode says, or the reason req is invalid.
func (f *fakeHTTPUpstream) answer(req proto.Message) (proto.Message, string) {
	forecast := func(r *aipb.BandwidthRequest) (*aipb.BandwidthResponse, string) {
		if n := len(r.HistoricalMetrics); n == 0 || n%6 != 0 {
			return nil, fmt.Sprintf("historical_metrics: %d values, want a non-zero multiple of 6", n)
		}
		if h := r.HorizonMinutes; h < 0 || h > 1440 {
			return nil, fmt.Sprintf("horizon_minutes: %d", h)
		}
		resp := seedForecast(r)
		resp.VmId = r.VmId
		switch f.mode {
		case "nan":
			resp.Predictions[0] = math.NaN()
		case "short":
			resp.Predictions = resp.Predictions[1:]
		case "empty":
			resp.Predictions = nil
		case "confidence":
			resp.Confidence = 1.5
		}
		return resp, ""
	}
	switch r := req.(type) {
	case *aipb.BandwidthRequest:
		resp, msg := forecast(r)
		if f.mode == "wrong-vmid" && resp != nil {
			resp.VmId = "someone-else"
		}
		return resp, msg
	case *aipb.BandwidthBatchRequest:
		out := &aipb.BandwidthBatchResponse{}
		for i, v := range r.Vms {
			resp, msg := forecast(v)
			if msg != "" {
				return nil, fmt.Sprintf("vms[%d].%s", i, msg)
			}
			out.Results = append(out.Results, resp)
		}
		switch f.mode {
		case "wrong-count":
			out.Results = out.Results[:len(out.Results)-1]
		case "swap":
			out.Results[0], out.Results[1] = out.Results[1], out.Results[0]
		case "wrong-vmid":
			out.Results[len(out.Results)-1].VmId = "someone-else"
		}
		return out, ""
	case *aipb.AnomalyRequest:
		if r.CurrentMetrics == nil {
			return nil, "current_metrics: missing"
		}
		resp := seedAnomaly(r)
		if f.mode == "score" {
			resp.Score = 1.5
		}
		return resp, ""
	case *aipb.PlacementRequest:
		resp := seedPlacement(r)
		switch f.mode {
		case "ghost":
			resp.Candidates = append(resp.Candidates, &aipb.PlacementCandidate{NodeId: "ghost", Score: 0.1})
		case "dup":
			resp.Candidates = append(resp.Candidates, resp.Candidates[0])
		case "confidence":
			resp.OverallConfidence = 2
		}
		return resp, ""
	}
	panic(fmt.Sprintf("unexpected %T", req))
}

// TestHTTPAnswers: answers equal the heuristic's, row by row, with several calls in flight, and
// each Batch mode uses the routes it says.
func TestHTTPAnswers(t *testing.T) {
	ctx := t.Context()
	reqs := bandwidthRequests(40)
	check := func(t *testing.T, part []*aipb.BandwidthRequest, got []*aipb.BandwidthResponse) {
		t.Helper()
		if len(got) != len(part) {
			t.Fatalf("%d answers for %d requests", len(got), len(part))
		}
		for i, r := range part {
			if got[i].VmId != r.VmId {
				t.Errorf("answer %d is for %q, want %q", i, got[i].VmId, r.VmId)
			}
			if d := diffForecast(got[i], seedForecast(r)); d != "" {
				t.Errorf("%s: %s", r.VmId, d)
			}
		}
	}

	t.Run("auto", func(t *testing.T) {
		f := &fakeHTTPUpstream{}
		c := serveHTTP(t, f, HTTPConfig{})
		var wg sync.WaitGroup
		for g := range 4 {
			part := reqs[g*10 : (g+1)*10]
			wg.Go(func() {
				got, err := c.PredictBandwidth(ctx, part)
				if err != nil {
					t.Errorf("PredictBandwidth: %v", err)
					return
				}
				check(t, part, got)
			})
		}
		wg.Wait()
		got, err := c.PredictBandwidth(ctx, reqs[7:8])
		if err != nil {
			t.Fatal(err)
		}
		check(t, reqs[7:8], got)
		if b, s := f.batch.Load(), f.single.Load(); b != 4 || s != 1 {
			t.Errorf("%d batch and %d single calls, want 4 and 1", b, s)
		}
		if d, err := time.ParseDuration(f.timeout.Load().(string)); err != nil || d <= 0 || d > DefaultTimeout {
			t.Errorf("X-Request-Timeout %q, want a duration in (0, %v]", f.timeout.Load(), DefaultTimeout)
		}

		for _, r := range anomalyRequests() {
			got, err := c.DetectAnomaly(ctx, r)
			if err != nil {
				t.Fatalf("DetectAnomaly: %v", err)
			}
			if d := diffAnomaly(got, seedAnomaly(r)); d != "" {
				t.Errorf("DetectAnomaly %s: %s", r.VmId, d)
			}
		}
		pr := placementRequest()
		pl, err := c.OptimizePlacement(ctx, pr)
		if err != nil {
			t.Fatalf("OptimizePlacement: %v", err)
		}
		if d := diffPlacement(pl, seedPlacement(pr)); d != "" {
			t.Errorf("OptimizePlacement: %s", d)
		}
		if err := c.Ready(ctx); err != nil {
			t.Errorf("Ready: %v", err)
		}
	})

	t.Run("always", func(t *testing.T) {
		f := &fakeHTTPUpstream{}
		c := serveHTTP(t, f, HTTPConfig{Batch: BatchAlways})
		got, err := c.PredictBandwidth(ctx, reqs[3:4])
		if err != nil {
			t.Fatal(err)
		}
		check(t, reqs[3:4], got)
		if b, s := f.batch.Load(), f.single.Load(); b != 1 || s != 0 {
			t.Errorf("%d batch and %d single calls, want 1 and 0", b, s)
		}
	})

	// On a fake clock: 12 requests held 20ms each, 3 at a time, take exactly 4 rounds.
	t.Run("never", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := &fakeHTTPUpstream{delay: 20 * time.Millisecond}
			c := pipeHTTP(t, f, HTTPConfig{Batch: BatchNever, MaxConcurrent: 3})
			start := time.Now()
			got, err := c.PredictBandwidth(t.Context(), reqs[:12])
			if err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took != 4*20*time.Millisecond {
				t.Errorf("12 calls held 20ms each took %v, want 80ms (4 rounds of 3)", took)
			}
			check(t, reqs[:12], got)
			if b, s := f.batch.Load(), f.single.Load(); b != 0 || s != 12 {
				t.Errorf("%d batch and %d single calls, want 0 and 12", b, s)
			}
			if m := f.max.Load(); m != 3 {
				t.Errorf("at most %d calls in flight, want 3 (MaxConcurrent)", m)
			}
		})
	})
}

// TestHTTPErrors: every kind of wrong answer or refusal maps to its sentinel, and the error names
// the endpoint, the route and the field.
func TestHTTPErrors(t *testing.T) {
	reqs := bandwidthRequests(5)
	one := reqs[3:4] // horizon 4
	predict := func(rs []*aipb.BandwidthRequest) func(Client) error {
		return func(c Client) error { _, err := c.PredictBandwidth(t.Context(), rs); return err }
	}
	anomaly := func(c Client) error { _, err := c.DetectAnomaly(t.Context(), anomalyRequests()[2]); return err }
	placement := func(c Client) error { _, err := c.OptimizePlacement(t.Context(), placementRequest()); return err }
	badReq := []*aipb.BandwidthRequest{reqs[0], {VmId: "x", HistoricalMetrics: []float64{1}}}

	tests := []struct {
		name  string
		mode  string
		cfg   HTTPConfig
		call  func(Client) error
		want  error  // the one sentinel; nil for success
		text  string // in the error
		route string // in the error
	}{
		{"correct", "", HTTPConfig{}, predict(reqs), nil, "", ""},
		{"JSON cut short", "malformed-json", HTTPConfig{}, predict(reqs), ErrBadResponse,
			"response body: not a valid BandwidthBatchResponse JSON object", "POST /api/v1/predict/batch"},
		{"HTML instead of JSON", "html", HTTPConfig{}, anomaly, ErrBadResponse,
			"response body: not a valid AnomalyResponse JSON object", "POST /api/v1/anomaly"},
		{"a row missing", "wrong-count", HTTPConfig{}, predict(reqs), ErrBadResponse,
			"response results: 4 rows, want 5 (one per request, in order)", "POST /api/v1/predict/batch"},
		{"rows swapped", "swap", HTTPConfig{}, predict(reqs), ErrBadResponse,
			`response results[0].vm_id: "vm-001", want "vm-000" (the request's)`, "POST /api/v1/predict/batch"},
		{"last row for another VM", "wrong-vmid", HTTPConfig{}, predict(reqs), ErrBadResponse,
			`response results[4].vm_id: "someone-else", want "vm-004"`, "POST /api/v1/predict/batch"},
		{"single answer for another VM", "wrong-vmid", HTTPConfig{}, predict(one), ErrBadResponse,
			`response vm_id: "someone-else", want "vm-003"`, "POST /api/v1/predict"},
		{"NaN prediction", "nan", HTTPConfig{}, predict(reqs), ErrBadResponse,
			"response results[0].predictions[0]: NaN, want a finite number", "POST /api/v1/predict/batch"},
		{"bare NaN token", "nan-literal", HTTPConfig{}, predict(one), ErrBadResponse,
			"response body: not a valid BandwidthResponse JSON object", "POST /api/v1/predict"},
		{"one prediction short", "short", HTTPConfig{}, predict(one), ErrBadResponse,
			"response predictions: 3 values, want 4 (one per minute of horizon_minutes)", "POST /api/v1/predict"},
		{"no predictions", "empty", HTTPConfig{}, predict(one), ErrBadResponse,
			"response predictions: empty", "POST /api/v1/predict"},
		{"confidence above 1", "confidence", HTTPConfig{}, predict(reqs), ErrBadResponse,
			"response results[0].confidence: 1.5, want a number in [0, 1]", "POST /api/v1/predict/batch"},
		{"anomaly score above 1", "score", HTTPConfig{}, anomaly, ErrBadResponse,
			"response score: 1.5, want a number in [0, 1]", "POST /api/v1/anomaly"},
		{"candidate not offered", "ghost", HTTPConfig{}, placement, ErrBadResponse,
			`response candidates[4].node_id: "ghost" is not among the request's available_nodes`, "POST /api/v1/placement"},
		{"candidate twice", "dup", HTTPConfig{}, placement, ErrBadResponse,
			`response candidates[4].node_id: "node-a" repeats candidates[0]`, "POST /api/v1/placement"},
		{"overall confidence 2", "confidence", HTTPConfig{}, placement, ErrBadResponse,
			"response overall_confidence: 2, want a number in [0, 1]", "POST /api/v1/placement"},
		{"unknown field", "unknown-field", HTTPConfig{}, predict(one), ErrBadResponse,
			`unknown field "latency_ms"`, "POST /api/v1/predict"},
		{"unknown field allowed", "unknown-field", HTTPConfig{AllowUnknownFields: true}, predict(one), nil, "", ""},
		{"redirect", "redirect", HTTPConfig{}, predict(one), ErrBadResponse,
			"response status: HTTP 302 Found, want 200 OK", "POST /api/v1/predict"},
		{"500", "500", HTTPConfig{}, predict(reqs), backends.ErrUnavailable,
			"HTTP 500 Internal Server Error: INTERNAL: boom", "POST /api/v1/predict/batch"},
		{"503 in plain text", "503", HTTPConfig{}, anomaly, backends.ErrUnavailable,
			"HTTP 503 Service Unavailable: overloaded", "POST /api/v1/anomaly"},
		{"429", "429", HTTPConfig{}, placement, backends.ErrUnavailable,
			"HTTP 429 Too Many Requests: RESOURCE_EXHAUSTED: queue full", "POST /api/v1/placement"},
		{"400 in the sidecar's shape", "", HTTPConfig{}, predict(badReq), backends.ErrInvalidInput,
			"upstream rejected the request: HTTP 400 Bad Request: INVALID_ARGUMENT: vms[1].historical_metrics: 1 values", "POST /api/v1/predict/batch"},
		{"400 from a single route", "", HTTPConfig{Batch: BatchNever}, predict(badReq), backends.ErrInvalidInput,
			`HTTP 400 Bad Request: INVALID_ARGUMENT: historical_metrics: 1 values`, `POST /api/v1/predict reqs[1] (vm_id "x")`},
		{"422 in FastAPI's shape", "422", HTTPConfig{}, anomaly, backends.ErrInvalidInput,
			`HTTP 422 Unprocessable Entity: [{"loc": ["body", "vm_id"], "msg": "field required"}]`, "POST /api/v1/anomaly"},
		{"nil request", "", HTTPConfig{}, func(c Client) error { _, err := c.DetectAnomaly(t.Context(), nil); return err },
			backends.ErrInvalidInput, "nil request", "POST /api/v1/anomaly"},
	}
	sentinels := []error{ErrBadResponse, backends.ErrInvalidInput, backends.ErrUnavailable, context.DeadlineExceeded}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := serveHTTP(t, &fakeHTTPUpstream{mode: tt.mode}, tt.cfg)
			err := tt.call(c)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("error %v, want none", err)
				}
				return
			}
			for _, s := range sentinels {
				if errors.Is(err, s) != (s == tt.want) {
					t.Fatalf("error %v: errors.Is(%v) = %v, want it to wrap only %v", err, s, !(s == tt.want), tt.want)
				}
			}
			prefix := "legacy " + c.base + " " + tt.route + ": "
			if !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), tt.text) {
				t.Errorf("error\n\t%s\nwant it to start with\n\t%s\nand contain\n\t%s", err, prefix, tt.text)
			}
		})
	}
}

// TestHTTPSlowUpstream: against an upstream that holds every answer for 10s, the caller's deadline
// gives the ctx error and the client's own Timeout gives ErrUnavailable, each exactly when it
// passes (on a fake clock); a caller that cancels gets context.Canceled.
func TestHTTPSlowUpstream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeHTTPUpstream{delay: 10 * time.Second}
		c := pipeHTTP(t, f, HTTPConfig{})
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.PredictBandwidth(ctx, bandwidthRequests(3))
		if took := time.Since(start); took != 200*time.Millisecond {
			t.Errorf("returned after %v, want the caller's 200ms", took)
		}
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, backends.ErrUnavailable) {
			t.Errorf("ctx deadline: %v, want context.DeadlineExceeded and not backends.ErrUnavailable", err)
		}
		if got := f.timeout.Load(); got != "200ms" {
			t.Errorf("X-Request-Timeout %q, want the caller's 200ms", got)
		}

		short := pipeHTTP(t, f, HTTPConfig{Timeout: 200 * time.Millisecond, Batch: BatchNever})
		start = time.Now()
		_, err = short.PredictBandwidth(t.Context(), bandwidthRequests(3))
		if took := time.Since(start); took != 200*time.Millisecond {
			t.Errorf("returned after %v, want the Timeout's 200ms", took)
		}
		if !errors.Is(err, backends.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("own timeout: %v, want backends.ErrUnavailable and not context.DeadlineExceeded", err)
		}
		if !strings.Contains(fmt.Sprint(err), "no answer within 200ms (Timeout)") {
			t.Errorf("own timeout: %q does not say which timeout", err)
		}
		if err := short.Ready(t.Context()); !errors.Is(err, backends.ErrUnavailable) {
			t.Errorf("Ready of a slow upstream: %v, want backends.ErrUnavailable", err)
		}

		// A caller that cancels gets context.Canceled.
		ctx, cancel = context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() {
			_, err := c.DetectAnomaly(ctx, anomalyRequests()[0])
			errc <- err
		}()
		synctest.Wait() // the call is in flight, held by the upstream
		if n := f.inflight.Load(); n != 1 {
			t.Fatalf("%d calls in flight, want 1", n)
		}
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) || errors.Is(err, backends.ErrUnavailable) {
			t.Errorf("canceled: %v, want context.Canceled", err)
		}
	})
}

// TestHTTPUpstreamDeadline: an upstream that answers 504 5ms before the deadline it was told
// (on a fake clock) gives the caller's deadline error, or ErrUnavailable for the client's own
// Timeout; a 504 far from any deadline is an ordinary upstream failure.
func TestHTTPUpstreamDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeHTTPUpstream{mode: "504-at-deadline"}
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		_, err := pipeHTTP(t, f, HTTPConfig{}).DetectAnomaly(ctx, anomalyRequests()[0])
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, backends.ErrUnavailable) ||
			!strings.Contains(err.Error(), "the upstream gave up at the caller's deadline: HTTP 504 Gateway Timeout") {
			t.Errorf("504 at the caller's deadline: %v, want context.DeadlineExceeded", err)
		}
		_, err = pipeHTTP(t, f, HTTPConfig{Timeout: 200 * time.Millisecond}).DetectAnomaly(t.Context(), anomalyRequests()[0])
		if !errors.Is(err, backends.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) ||
			!strings.Contains(err.Error(), "no answer within 200ms (Timeout): HTTP 504") {
			t.Errorf("504 at the own timeout: %v, want backends.ErrUnavailable", err)
		}
		c := pipeHTTP(t, &fakeHTTPUpstream{mode: "504-now"}, HTTPConfig{})
		if _, err := c.DetectAnomaly(t.Context(), anomalyRequests()[0]); !errors.Is(err, backends.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("504 far from any deadline: %v, want backends.ErrUnavailable", err)
		}
	})
}

func TestHTTPReadyAndLifecycle(t *testing.T) {
	ctx := t.Context()
	if err := serveHTTP(t, &fakeHTTPUpstream{mode: "unhealthy"}, HTTPConfig{}).Ready(ctx); !errors.Is(err, backends.ErrUnavailable) ||
		!strings.Contains(err.Error(), "GET /healthz: HTTP 503 Service Unavailable: starting") {
		t.Errorf("Ready of an unhealthy upstream: %v", err)
	}
	if err := serveHTTP(t, &fakeHTTPUpstream{}, HTTPConfig{HealthPath: "/readyz"}).Ready(ctx); !errors.Is(err, backends.ErrUnavailable) ||
		!strings.Contains(err.Error(), "GET /readyz: HTTP 404 Not Found") {
		t.Errorf("Ready on a path the upstream lacks: %v", err)
	}

	dead, err := NewHTTP(HTTPConfig{BaseURL: "http://" + deadAddr(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	if err := dead.Ready(ctx); !errors.Is(err, backends.ErrUnavailable) {
		t.Errorf("Ready with nothing listening: %v, want backends.ErrUnavailable", err)
	}
	if _, err := dead.PredictBandwidth(ctx, bandwidthRequests(2)); !errors.Is(err, backends.ErrUnavailable) ||
		!strings.Contains(err.Error(), "connection refused") {
		t.Errorf("PredictBandwidth with nothing listening: %v, want backends.ErrUnavailable (connection refused)", err)
	}

	c := serveHTTP(t, &fakeHTTPUpstream{}, HTTPConfig{})
	if got, err := c.PredictBandwidth(ctx, nil); err != nil || got == nil || len(got) != 0 {
		t.Errorf("PredictBandwidth(nil) = %v, %v; want an empty slice", got, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.OptimizePlacement(ctx, placementRequest()); !errors.Is(err, backends.ErrUnavailable) ||
		!strings.Contains(err.Error(), "client is closed") {
		t.Errorf("after Close: %v, want backends.ErrUnavailable", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
