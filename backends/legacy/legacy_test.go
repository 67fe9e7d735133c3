package legacy

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"

	"github.com/novacron/sidecar/backends"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string // "" for valid
	}{
		{"http zero but BaseURL", HTTPConfig{BaseURL: "http://127.0.0.1:8080"}.Validate(), ""},
		{"http full", HTTPConfig{BaseURL: "https://ai.internal/legacy/", Timeout: time.Second, MaxIdleConns: 4,
			Batch: BatchNever, MaxConcurrent: 2, HealthPath: "/health", MaxResponseBytes: 1 << 20}.Validate(), ""},
		{"http batch auto spelled out", HTTPConfig{BaseURL: "http://h", Batch: BatchAuto}.Validate(), ""},
		{"http no BaseURL", HTTPConfig{}.Validate(), "BaseURL: required"},
		{"http no scheme", HTTPConfig{BaseURL: "127.0.0.1:8080"}.Validate(), "BaseURL: "},
		{"http grpc scheme", HTTPConfig{BaseURL: "grpc://h:1"}.Validate(), `scheme "grpc", want http or https`},
		{"http no host", HTTPConfig{BaseURL: "http:///x"}.Validate(), "no host"},
		{"http query", HTTPConfig{BaseURL: "http://h/?a=1"}.Validate(), "query or fragment"},
		{"http negative timeout", HTTPConfig{BaseURL: "http://h", Timeout: -1}.Validate(), "Timeout: -1ns is negative (0 means 2s)"},
		{"http negative idle", HTTPConfig{BaseURL: "http://h", MaxIdleConns: -1}.Validate(), "MaxIdleConns: -1 is negative"},
		{"http negative concurrency", HTTPConfig{BaseURL: "http://h", MaxConcurrent: -2}.Validate(), "MaxConcurrent: -2 is negative"},
		{"http negative size", HTTPConfig{BaseURL: "http://h", MaxResponseBytes: -1}.Validate(), "MaxResponseBytes: -1"},
		{"http relative health path", HTTPConfig{BaseURL: "http://h", HealthPath: "healthz"}.Validate(), `HealthPath: "healthz" does not start with /`},
		{"http unknown batch mode", HTTPConfig{BaseURL: "http://h", Batch: "sometimes"}.Validate(), `Batch: "sometimes"`},
		{"grpc zero but Address", GRPCConfig{Address: "127.0.0.1:50051"}.Validate(), ""},
		{"grpc dns target", GRPCConfig{Address: "dns:///ai.internal:50051", HealthService: "novacron.ai.AIService"}.Validate(), ""},
		{"grpc no Address", GRPCConfig{}.Validate(), "Address: required"},
		{"grpc space", GRPCConfig{Address: "host :1"}.Validate(), "spaces or control characters"},
		{"grpc negative timeout", GRPCConfig{Address: "h:1", Timeout: -time.Second}.Validate(), "Timeout: -1s is negative"},
		{"grpc negative concurrency", GRPCConfig{Address: "h:1", MaxConcurrent: -1}.Validate(), "MaxConcurrent: -1 is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			switch {
			case tt.want == "" && tt.err != nil:
				t.Errorf("Validate: %v, want nil", tt.err)
			case tt.want != "" && (tt.err == nil || !strings.Contains(tt.err.Error(), tt.want)):
				t.Errorf("Validate: %v, want an error containing %q", tt.err, tt.want)
			}
		})
	}
	if _, err := NewHTTP(HTTPConfig{BaseURL: "ftp://h"}); err == nil || !strings.HasPrefix(err.Error(), "legacy: HTTPConfig.BaseURL: ") {
		t.Errorf("NewHTTP with a bad config: %v", err)
	}
	if _, err := NewGRPC(GRPCConfig{}); err == nil || !strings.HasPrefix(err.Error(), "legacy: GRPCConfig.Address: ") {
		t.Errorf("NewGRPC with a bad config: %v", err)
	}
}

func TestChecks(t *testing.T) {
	req := &aipb.BandwidthRequest{VmId: "vm-1", HorizonMinutes: 3}
	anyLen := &aipb.BandwidthRequest{VmId: "vm-1"}
	pl := &aipb.PlacementRequest{AvailableNodes: []*aipb.NodeInfo{{NodeId: "a"}, {NodeId: "b"}}}
	tests := []struct {
		name string
		err  error
		want string // "" for nil
	}{
		{"forecast ok", checkBandwidth(req, &aipb.BandwidthResponse{Predictions: []float64{1, 2, 3}, Confidence: 1}), ""},
		{"forecast echoes vm_id", checkBandwidth(req, &aipb.BandwidthResponse{VmId: "vm-1", Predictions: []float64{1, 2, 3}}), ""},
		{"horizon 0 takes any length", checkBandwidth(anyLen, &aipb.BandwidthResponse{Predictions: []float64{1, 2, 3, 4, 5}}), ""},
		{"horizon 0 but empty", checkBandwidth(anyLen, &aipb.BandwidthResponse{}), "predictions: empty"},
		{"too long", checkBandwidth(req, &aipb.BandwidthResponse{Predictions: []float64{1, 2, 3, 4}}), "predictions: 4 values, want 3"},
		{"other VM", checkBandwidth(req, &aipb.BandwidthResponse{VmId: "vm-2", Predictions: []float64{1, 2, 3}}), `vm_id: "vm-2", want "vm-1"`},
		{"+Inf", checkBandwidth(req, &aipb.BandwidthResponse{Predictions: []float64{1, math.Inf(1), 3}}), "predictions[1]: +Inf"},
		{"negative confidence", checkBandwidth(req, &aipb.BandwidthResponse{Predictions: []float64{1, 2, 3}, Confidence: -0.1}), "confidence: -0.1"},
		{"NaN confidence", checkBandwidth(req, &aipb.BandwidthResponse{Predictions: []float64{1, 2, 3}, Confidence: math.NaN()}), "confidence: NaN"},
		{"nil forecast", checkBandwidth(req, nil), "result: missing"},
		{"anomaly ok", checkAnomaly(&aipb.AnomalyResponse{Score: 1}), ""},
		{"anomaly NaN", checkAnomaly(&aipb.AnomalyResponse{Score: math.NaN()}), "score: NaN"},
		{"placement ok", checkPlacement(pl, &aipb.PlacementResponse{Candidates: []*aipb.PlacementCandidate{{NodeId: "b", Score: -3}}, OverallConfidence: 0.5}), ""},
		{"placement none fits", checkPlacement(pl, &aipb.PlacementResponse{}), ""},
		{"placement Inf score", checkPlacement(pl, &aipb.PlacementResponse{Candidates: []*aipb.PlacementCandidate{{NodeId: "a", Score: math.Inf(-1)}}}), "candidates[0].score: -Inf"},
		{"placement empty node", checkPlacement(pl, &aipb.PlacementResponse{Candidates: []*aipb.PlacementCandidate{{}}}), `candidates[0].node_id: "" is not among`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			switch {
			case tt.want == "" && tt.err != nil:
				t.Errorf("%v, want nil", tt.err)
			case tt.want != "" && (tt.err == nil || !strings.Contains(tt.err.Error(), tt.want)):
				t.Errorf("%v, want an error containing %q", tt.err, tt.want)
			}
		})
	}
}

func TestUpstreamMessage(t *testing.T) {
	tests := []struct{ body, want string }{
		{`{"error": {"code": "INVALID_ARGUMENT", "message": "vm_id: empty"}}`, "INVALID_ARGUMENT: vm_id: empty"},
		{`{"error": {"message": "only a message"}}`, "only a message"},
		{`{"error": "plain"}`, "plain"},
		{`{"detail": "Not Found"}`, "Not Found"},
		{`{"detail": [{"msg": "field required"}]}`, `[{"msg": "field required"}]`},
		{`{"message": "m"}`, "m"},
		{"<html>\n  <h1>502 Bad Gateway</h1>\n</html>", "<html> <h1>502 Bad Gateway</h1> </html>"},
		{"", "(empty body)"},
		{strings.Repeat("é", 400), strings.Repeat("é", 150) + "..."},
		{"bad \xff utf-8", "bad ? utf-8"},
		{"\xff" + strings.Repeat("a", 400), "?" + strings.Repeat("a", 299) + "..."},
	}
	for _, tt := range tests {
		if got := upstreamMessage([]byte(tt.body)); got != tt.want {
			t.Errorf("upstreamMessage(%.40q) = %q, want %q", tt.body, got, tt.want)
		}
	}
}

// TestForEach: the fan-out keeps its bound, answers every index, and stops at the first error,
// cancelling the calls in flight (deterministic time: testing/synctest).
func TestForEach(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var inflight, most, calls atomic.Int64
		done := make([]bool, 10)
		start := time.Now()
		err := forEach(t.Context(), 10, 3, func(ctx context.Context, i int) error {
			n := inflight.Add(1)
			defer inflight.Add(-1)
			calls.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			time.Sleep(time.Second)
			done[i] = true
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if most.Load() != 3 || calls.Load() != 10 {
			t.Errorf("%d calls, at most %d at once; want 10 and 3", calls.Load(), most.Load())
		}
		for i, d := range done {
			if !d {
				t.Errorf("index %d not called", i)
			}
		}
		if el := time.Since(start); el != 4*time.Second { // ceil(10/3) rounds of 1s
			t.Errorf("took %v, want 4s", el)
		}
	})

	synctest.Test(t, func(t *testing.T) {
		boom := errors.New("boom")
		var calls, canceled atomic.Int64
		start := time.Now()
		err := forEach(t.Context(), 100, 4, func(ctx context.Context, i int) error {
			calls.Add(1)
			if i == 2 {
				time.Sleep(time.Second)
				return boom
			}
			select {
			case <-time.After(time.Hour):
				return nil
			case <-ctx.Done():
				canceled.Add(1)
				return ctx.Err()
			}
		})
		if !errors.Is(err, boom) {
			t.Errorf("error %v, want the first one (boom)", err)
		}
		if el := time.Since(start); el != time.Second {
			t.Errorf("took %v, want 1s: the failure must cancel the others", el)
		}
		if calls.Load() != 4 || canceled.Load() != 3 {
			t.Errorf("%d calls, %d canceled; want 4 and 3 (no call starts after the failure)", calls.Load(), canceled.Load())
		}
	})

	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
		defer cancel()
		err := forEach(ctx, 5, 2, func(ctx context.Context, i int) error {
			select {
			case <-time.After(time.Second):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("caller's deadline: %v, want context.DeadlineExceeded", err)
		}
	})
}

// FuzzHTTPBatchResponse: any body the batch route may answer either decodes into exactly one
// checked row per request, or is an error wrapping ErrBadResponse; it never panics.
func FuzzHTTPBatchResponse(f *testing.F) {
	f.Add([]byte(`{"results": [{"vm_id": "a", "predictions": [1, 2], "confidence": 0.5}, {"predictions": [3, 4]}]}`))
	f.Add([]byte(`{"results": [{"vm_id": "b", "predictions": [1, 2]}, {"vm_id": "a", "predictions": [3, 4]}]}`))
	f.Add([]byte(`{"results": [{"predictions": ["NaN", 2]}, {"predictions": [3, 4], "confidence": 2}]}`))
	f.Add([]byte(`{"results": [{"predictions": [1, 2]}]}`))
	f.Add([]byte(`{"results": [null, {}]}`))
	f.Add([]byte(`{"results": [{"predictions": [1, 2], "extra": 1}, {"predictions": [3, 4]}]}`))
	reqs := []*aipb.BandwidthRequest{{VmId: "a", HorizonMinutes: 2}, {VmId: "b"}}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, allow := range []bool{false, true} {
			h, err := NewHTTP(HTTPConfig{BaseURL: "http://127.0.0.1:1", AllowUnknownFields: allow})
			if err != nil {
				t.Fatal(err)
			}
			resp := &aipb.BandwidthBatchResponse{}
			if h.jsonIn.Unmarshal(body, resp) != nil {
				continue
			}
			rows, err := h.batchResults("POST "+routePredictBatch, reqs, resp)
			if err != nil {
				if !errors.Is(err, ErrBadResponse) || errors.Is(err, backends.ErrUnavailable) || errors.Is(err, backends.ErrInvalidInput) {
					t.Fatalf("error %v does not wrap only ErrBadResponse", err)
				}
				continue
			}
			if len(rows) != len(reqs) || len(rows[0].Predictions) != 2 || len(rows[1].Predictions) == 0 {
				t.Fatalf("accepted %d rows with %v predictions", len(rows), rows)
			}
			for i, r := range rows {
				if r.VmId != "" && r.VmId != reqs[i].VmId {
					t.Fatalf("row %d for %q accepted for %q", i, r.VmId, reqs[i].VmId)
				}
				for _, v := range append(r.Predictions, r.Confidence) {
					if !finite(v) {
						t.Fatalf("row %d: non-finite %v accepted", i, v)
					}
				}
				if r.Confidence < 0 || r.Confidence > 1 {
					t.Fatalf("row %d: confidence %v accepted", i, r.Confidence)
				}
			}
		}
	})
}

// FuzzUpstreamMessage: the message of any error body is one line of valid UTF-8, at most 303 bytes.
func FuzzUpstreamMessage(f *testing.F) {
	f.Add([]byte(`{"error": {"code": "INTERNAL", "message": "boom"}}`))
	f.Add([]byte(`{"detail": [1, 2]}`))
	f.Add([]byte("plain\ntext\xff"))
	f.Fuzz(func(t *testing.T, body []byte) {
		m := upstreamMessage(body)
		if m == "" || len(m) > 303 || !utf8.ValidString(m) || strings.ContainsAny(m, "\n\r") {
			t.Fatalf("upstreamMessage(%q) = %q", body, m)
		}
	})
}
