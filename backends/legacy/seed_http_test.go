package legacy

import (
	"errors"
	"fmt"
	"math"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/novacron/sidecar/backends"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// The seed server's HTTP/JSON routes (seed_server.py --http-port) against its gRPC service: the two
// arms of a migration, compared answer by answer through this package's two clients.

// startSeedServerHTTP runs the seed server with args, serving gRPC and HTTP on free loopback
// ports, and returns the gRPC address and the HTTP base URL.
func startSeedServerHTTP(t *testing.T, args ...string) (grpcAddr, baseURL string) {
	t.Helper()
	addrs := runSeedServer(t, []string{"listening on ", "http listening on "}, append([]string{"--http-port", "0"}, args...)...)
	return addrs[0], "http://" + addrs[1]
}

func newHTTP(t *testing.T, cfg HTTPConfig) *HTTP {
	t.Helper()
	c, err := NewHTTP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// seedArms are the clients of one seed server: its gRPC service, and its HTTP routes with each
// batch mode (so that the single and the batch route both answer every request).
type seedArms struct {
	grpc  *GRPC
	https map[BatchMode]*HTTP
}

func newSeedArms(t *testing.T, grpcAddr, baseURL string, timeout time.Duration) seedArms {
	t.Helper()
	a := seedArms{grpc: newGRPC(t, GRPCConfig{Address: grpcAddr, MaxConcurrent: 4, Timeout: timeout}), https: map[BatchMode]*HTTP{}}
	for _, m := range []BatchMode{BatchAuto, BatchNever, BatchAlways} {
		a.https[m] = newHTTP(t, HTTPConfig{BaseURL: baseURL, Batch: m, MaxConcurrent: 4, Timeout: timeout})
	}
	return a
}

// sameAnswer fails the test unless the HTTP arm's answer is the gRPC arm's, field for field.
func sameAnswer(t *testing.T, what string, http, grpc proto.Message) bool {
	t.Helper()
	if !proto.Equal(http, grpc) {
		text := protojson.MarshalOptions{UseProtoNames: true}.Format
		t.Errorf("%s: the HTTP arm answered\n\t%s\nthe gRPC arm\n\t%s", what, text(http), text(grpc))
		return false
	}
	return true
}

// moreBandwidthRequests are edge cases of the heuristic and of proto3 JSON (which leaves zero
// values out): the default horizon, an all-zero window, and a falling trend clipped to 0.
func moreBandwidthRequests() []*aipb.BandwidthRequest {
	falling := make([]float64, 18)
	for s, v := range []float64{300, 120, 10} {
		falling[6*s+3] = v
	}
	return []*aipb.BandwidthRequest{
		{VmId: "vm-default-horizon", HistoricalMetrics: bandwidthRequests(6)[5].HistoricalMetrics},
		{VmId: "vm-zero", HistoricalMetrics: make([]float64, 12), HorizonMinutes: 2},
		{VmId: "vm-falling", HistoricalMetrics: falling, HorizonMinutes: 4},
		{HistoricalMetrics: []float64{0.1, 0.2, 3, 42, 5, 0}, HorizonMinutes: 1}, // no vm_id
	}
}

// TestSeedHTTPMatchesGRPC: every bandwidth (one VM, and batches of several), anomaly and placement
// request gets the same answer from the seed server's HTTP routes (through HTTP, in each batch mode)
// as from its gRPC service (through GRPC), and that answer is the heuristic's, computed in Go; a
// request either arm refuses, the other refuses too, with the same kind and message.
func TestSeedHTTPMatchesGRPC(t *testing.T) {
	grpcAddr, baseURL := startSeedServerHTTP(t)
	arms := newSeedArms(t, grpcAddr, baseURL, 0)
	ctx := t.Context()
	if err := arms.grpc.Ready(ctx); err != nil {
		t.Fatalf("GRPC Ready: %v", err)
	}
	for mode, h := range arms.https {
		if err := h.Ready(ctx); err != nil {
			t.Fatalf("HTTP (%s) Ready: %v", mode, err)
		}
	}

	reqs := append(bandwidthRequests(12), moreBandwidthRequests()...)
	batches := [][]*aipb.BandwidthRequest{reqs, reqs[3:7], reqs[12:]}
	for _, r := range reqs {
		batches = append(batches, []*aipb.BandwidthRequest{r})
	}
	for _, batch := range batches {
		name := fmt.Sprintf("PredictBandwidth of %d VMs from %q", len(batch), batch[0].VmId)
		want, err := arms.grpc.PredictBandwidth(ctx, batch)
		if err != nil {
			t.Fatalf("%s, GRPC: %v", name, err)
		}
		for i, r := range batch {
			if d := diffForecast(want[i], seedForecast(r)); d != "" {
				t.Errorf("%s, GRPC, row %d: %s", name, i, d)
			}
		}
		for mode, h := range arms.https {
			got, err := h.PredictBandwidth(ctx, batch)
			if err != nil {
				t.Errorf("%s, HTTP (%s): %v", name, mode, err)
				continue
			}
			for i := range batch {
				sameAnswer(t, fmt.Sprintf("%s, HTTP (%s), row %d", name, mode, i), got[i], want[i])
			}
		}
	}

	anomalies := append(anomalyRequests(), &aipb.AnomalyRequest{VmId: "vm-zero", CurrentMetrics: &aipb.VMMetrics{}})
	for _, r := range anomalies {
		want, err := arms.grpc.DetectAnomaly(ctx, r)
		if err != nil {
			t.Fatalf("DetectAnomaly %s, GRPC: %v", r.VmId, err)
		}
		if d := diffAnomaly(want, seedAnomaly(r)); d != "" {
			t.Errorf("DetectAnomaly %s, GRPC: %s", r.VmId, d)
		}
		got, err := arms.https[BatchAuto].DetectAnomaly(ctx, r)
		if err != nil {
			t.Errorf("DetectAnomaly %s, HTTP: %v", r.VmId, err)
			continue
		}
		sameAnswer(t, "DetectAnomaly "+r.VmId, got, want)
	}

	noFit := placementRequest()
	noFit.WorkloadId, noFit.Requirements = "wl-huge", map[string]float64{"cpu": 1000, "memory": 4}
	noRequirements := placementRequest()
	noRequirements.WorkloadId, noRequirements.Requirements = "wl-any", nil
	for _, r := range []*aipb.PlacementRequest{placementRequest(), noFit, noRequirements} {
		want, err := arms.grpc.OptimizePlacement(ctx, r)
		if err != nil {
			t.Fatalf("OptimizePlacement %s, GRPC: %v", r.WorkloadId, err)
		}
		if d := diffPlacement(want, seedPlacement(r)); d != "" {
			t.Errorf("OptimizePlacement %s, GRPC: %s", r.WorkloadId, d)
		}
		got, err := arms.https[BatchAuto].OptimizePlacement(ctx, r)
		if err != nil {
			t.Errorf("OptimizePlacement %s, HTTP: %v", r.WorkloadId, err)
			continue
		}
		sameAnswer(t, "OptimizePlacement "+r.WorkloadId, got, want) // reasoning included
	}
	if r, _ := arms.grpc.OptimizePlacement(ctx, noFit); r != nil && len(r.Candidates) != 0 {
		t.Errorf("OptimizePlacement %s: %d candidates, want none (the case of an empty answer)", noFit.WorkloadId, len(r.Candidates))
	}

	good := bandwidthRequests(3)
	rejects := []struct {
		name string
		call func(Client) error
		want string // in both arms' errors
	}{
		{"NaN in history", func(c Client) error {
			_, err := c.PredictBandwidth(ctx, []*aipb.BandwidthRequest{{VmId: "a", HistoricalMetrics: []float64{0, 0, 0, math.NaN(), 0, 0}}})
			return err
		}, "historical_metrics[3]: nan is not a finite number"},
		{"one bad row of a batch", func(c Client) error {
			bad := &aipb.BandwidthRequest{VmId: "bad-vm", HistoricalMetrics: good[0].HistoricalMetrics, HorizonMinutes: 5000}
			_, err := c.PredictBandwidth(ctx, []*aipb.BandwidthRequest{good[0], good[1], bad, good[2]})
			return err
		}, "horizon_minutes: 5000"},
		{"anomaly without metrics", func(c Client) error {
			_, err := c.DetectAnomaly(ctx, &aipb.AnomalyRequest{VmId: "a"})
			return err
		}, "current_metrics: missing"},
		{"placement with a node twice", func(c Client) error {
			_, err := c.OptimizePlacement(ctx, &aipb.PlacementRequest{AvailableNodes: []*aipb.NodeInfo{{NodeId: "n", CpuAvailable: 1, MemoryAvailable: 1}, {NodeId: "n"}}})
			return err
		}, "available_nodes[1].node_id: 'n' appears twice"},
	}
	for _, tt := range rejects {
		for name, c := range map[string]Client{"GRPC": arms.grpc, "HTTP": arms.https[BatchAuto]} {
			err := tt.call(c)
			if !errors.Is(err, backends.ErrInvalidInput) || errors.Is(err, backends.ErrUnavailable) || !strings.Contains(fmt.Sprint(err), tt.want) {
				t.Errorf("%s, %s: error %v, want backends.ErrInvalidInput with %q", tt.name, name, err, tt.want)
			}
		}
	}
}

// TestSeedHTTPFaultsMatchGRPC: the seed server's injected faults fail the HTTP arm as they fail the
// gRPC arm: the same calls fail, with the same sentinel and the same field named.
func TestSeedHTTPFaultsMatchGRPC(t *testing.T) {
	reqs := bandwidthRequests(6)
	t.Run("error-rate 1: every call fails with ErrUnavailable", func(t *testing.T) {
		grpcAddr, baseURL := startSeedServerHTTP(t, "--error-rate", "1")
		arms := newSeedArms(t, grpcAddr, baseURL, 0)
		ctx := t.Context()
		clients := map[string]Client{"GRPC": arms.grpc}
		for mode, h := range arms.https {
			clients[fmt.Sprintf("HTTP (%s)", mode)] = h
		}
		for name, c := range clients {
			_, err1 := c.PredictBandwidth(ctx, reqs)
			_, err2 := c.PredictBandwidth(ctx, reqs[:1])
			_, err3 := c.DetectAnomaly(ctx, anomalyRequests()[0])
			_, err4 := c.OptimizePlacement(ctx, placementRequest())
			for i, err := range []error{err1, err2, err3, err4} {
				if !errors.Is(err, backends.ErrUnavailable) || errors.Is(err, ErrBadResponse) || !strings.Contains(fmt.Sprint(err), "injected error (--error-rate 1") {
					t.Errorf("%s, call %d: error %v, want backends.ErrUnavailable with the upstream's message", name, i, err)
				}
			}
			if err := c.Ready(ctx); err != nil {
				t.Errorf("%s Ready: %v (the health check is not subject to --error-rate)", name, err)
			}
		}
	})

	t.Run("error-rate 0.5: the same seeded calls fail on both arms", func(t *testing.T) {
		// n calls one at a time (the order of the draws is the order of the calls), then a batch of
		// 4 VMs, which fails when any of its 4 draws does: the HTTP batch route draws once per VM,
		// as the gRPC arm's 4 calls do.
		const n, batch = 18, 4
		out, err := exec.Command(seedPython, "-c", fmt.Sprintf(`import random
r = random.Random(7)
s = ''.join('x' if r.random() < 0.5 else '.' for _ in range(%d))
print(s + ('x' if any([r.random() < 0.5 for _ in range(%d)]) else '.'))`, n, batch)).Output()
		if err != nil {
			t.Fatal(err)
		}
		want := strings.TrimSpace(string(out))
		if !strings.Contains(want[:n], "x") || !strings.Contains(want[:n], ".") {
			t.Fatalf("seed 7 gives %s: pick a seed with both outcomes", want)
		}
		pattern := func(c Client) string {
			var got strings.Builder
			for i := range n {
				var err error
				switch i % 3 { // every route draws
				case 0:
					var resp []*aipb.BandwidthResponse
					r := reqs[i%len(reqs)]
					if resp, err = c.PredictBandwidth(t.Context(), []*aipb.BandwidthRequest{r}); err == nil {
						if d := diffForecast(resp[0], seedForecast(r)); d != "" {
							t.Errorf("call %d: %s", i, d)
						}
					}
				case 1:
					_, err = c.DetectAnomaly(t.Context(), anomalyRequests()[i%6])
				case 2:
					_, err = c.OptimizePlacement(t.Context(), placementRequest())
				}
				switch {
				case err == nil:
					got.WriteByte('.')
				case errors.Is(err, backends.ErrUnavailable):
					got.WriteByte('x')
				default:
					t.Fatalf("call %d: %v, want nil or backends.ErrUnavailable", i, err)
				}
			}
			_, err := c.PredictBandwidth(t.Context(), reqs[:batch])
			switch {
			case err == nil:
				got.WriteByte('.')
			case errors.Is(err, backends.ErrUnavailable):
				got.WriteByte('x')
			default:
				t.Fatalf("batch of %d: %v, want nil or backends.ErrUnavailable", batch, err)
			}
			return got.String()
		}
		// One server per arm: they would share the draws otherwise.
		flags := []string{"--error-rate", "0.5", "--seed", "7"}
		grpcAddr, _ := startSeedServerHTTP(t, flags...)
		_, baseURL := startSeedServerHTTP(t, flags...)
		if got := pattern(newGRPC(t, GRPCConfig{Address: grpcAddr})); got != want {
			t.Errorf("GRPC: failures %s, want %s", got, want)
		}
		if got := pattern(newHTTP(t, HTTPConfig{BaseURL: baseURL})); got != want {
			t.Errorf("HTTP: failures %s, want %s", got, want)
		}
	})

	t.Run("malformed answers are ErrBadResponse naming the same field", func(t *testing.T) {
		grpcAddr, baseURL := startSeedServerHTTP(t, "--malformed")
		arms := newSeedArms(t, grpcAddr, baseURL, 0)
		ctx := t.Context()
		clients := map[string]Client{"GRPC": arms.grpc}
		for mode, h := range arms.https {
			clients[fmt.Sprintf("HTTP (%s)", mode)] = h
		}
		for name, c := range clients {
			_, err1 := c.PredictBandwidth(ctx, reqs)
			_, err2 := c.PredictBandwidth(ctx, reqs[1:2])
			_, err3 := c.DetectAnomaly(ctx, anomalyRequests()[1])
			_, err4 := c.OptimizePlacement(ctx, placementRequest())
			for i, tt := range []struct {
				err  error
				want string
			}{
				{err1, "predictions: "},
				{err2, "predictions: 3 values, want 2 (one per minute of horizon_minutes)"},
				{err3, "response score: 2, want a number in [0, 1]"},
				{err4, `candidates[4].node_id: "no-such-node" is not among the request's available_nodes`},
			} {
				if !errors.Is(tt.err, ErrBadResponse) || errors.Is(tt.err, backends.ErrUnavailable) || errors.Is(tt.err, backends.ErrInvalidInput) {
					t.Errorf("%s, call %d: error %v, want one wrapping only ErrBadResponse", name, i, tt.err)
				} else if !strings.Contains(tt.err.Error(), tt.want) {
					t.Errorf("%s, call %d: error %q does not name %q", name, i, tt.err, tt.want)
				}
			}
		}
	})

	// The upstream answers after an hour, so a call that returns at all did not wait for it; the
	// server, which holds an answer for a client that went away, still stops at the test's end.
	t.Run("delay: the client's Timeout gives ErrUnavailable on both arms", func(t *testing.T) {
		grpcAddr, baseURL := startSeedServerHTTP(t, "--delay-ms", "3600000")
		arms := newSeedArms(t, grpcAddr, baseURL, 200*time.Millisecond)
		clients := map[string]Client{"GRPC": arms.grpc, "HTTP": arms.https[BatchAuto]}
		for name, c := range clients {
			_, err1 := c.PredictBandwidth(t.Context(), reqs[:2])
			_, err2 := c.DetectAnomaly(t.Context(), anomalyRequests()[0])
			for i, err := range []error{err1, err2} {
				if !errors.Is(err, backends.ErrUnavailable) || !strings.Contains(fmt.Sprint(err), "no answer within 200ms (Timeout)") {
					t.Errorf("%s, call %d: %v, want backends.ErrUnavailable saying which timeout", name, i, err)
				}
			}
		}
	})
}
