package legacy

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/novacron/sidecar/backends"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

func newGRPC(t *testing.T, cfg GRPCConfig) *GRPC {
	t.Helper()
	c, err := NewGRPC(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestGRPCSeedServer: the client against the seed's Python server gets the heuristic's answer for
// every request, with several calls of many distinct VMs in flight at once.
func TestGRPCSeedServer(t *testing.T) {
	addr := startSeedServer(t)
	c := newGRPC(t, GRPCConfig{Address: addr, MaxConcurrent: 4})
	ctx := t.Context()
	if err := c.Ready(ctx); err != nil {
		t.Fatalf("Ready: %v", err)
	}

	reqs := bandwidthRequests(48)
	var wg sync.WaitGroup
	for g := range 4 { // four concurrent calls, each of a different slice of VMs
		part := reqs[g*12 : (g+1)*12]
		wg.Go(func() {
			got, err := c.PredictBandwidth(ctx, part)
			if err != nil {
				t.Errorf("PredictBandwidth: %v", err)
				return
			}
			if len(got) != len(part) {
				t.Errorf("%d answers for %d requests", len(got), len(part))
				return
			}
			for i, r := range part {
				if d := diffForecast(got[i], seedForecast(r)); d != "" {
					t.Errorf("%s: %s", r.VmId, d)
				}
			}
		})
	}
	wg.Wait()

	one, err := c.PredictBandwidth(ctx, []*aipb.BandwidthRequest{{VmId: "h0", HistoricalMetrics: reqs[5].HistoricalMetrics}})
	if err != nil {
		t.Fatalf("PredictBandwidth with horizon_minutes 0: %v", err)
	}
	if len(one[0].Predictions) != 10 {
		t.Errorf("horizon_minutes 0: %d predictions, want the seed server's default 10", len(one[0].Predictions))
	}
	if empty, err := c.PredictBandwidth(ctx, nil); err != nil || len(empty) != 0 {
		t.Errorf("PredictBandwidth(nil) = %v, %v; want an empty answer", empty, err)
	}

	for _, r := range anomalyRequests() {
		got, err := c.DetectAnomaly(ctx, r)
		if err != nil {
			t.Errorf("DetectAnomaly %s: %v", r.VmId, err)
			continue
		}
		if d := diffAnomaly(got, seedAnomaly(r)); d != "" {
			t.Errorf("DetectAnomaly %s: %s", r.VmId, d)
		}
	}

	pr := placementRequest()
	got, err := c.OptimizePlacement(ctx, pr)
	if err != nil {
		t.Fatalf("OptimizePlacement: %v", err)
	}
	if d := diffPlacement(got, seedPlacement(pr)); d != "" {
		t.Errorf("OptimizePlacement: %s", d)
	}
	for _, cand := range got.Candidates {
		if cand.Reasoning == "" {
			t.Errorf("candidate %s has no reasoning", cand.NodeId)
		}
	}
}

// TestGRPCSeedServerRejects: requests the seed server refuses fail with ErrInvalidInput and keep
// the upstream's message, which names the field.
func TestGRPCSeedServerRejects(t *testing.T) {
	addr := startSeedServer(t)
	c := newGRPC(t, GRPCConfig{Address: addr})
	ctx := t.Context()
	good := bandwidthRequests(3)
	tests := []struct {
		name string
		call func() error
		want string // in the error's text
	}{
		{"no history", func() error {
			_, err := c.PredictBandwidth(ctx, []*aipb.BandwidthRequest{{VmId: "a", HorizonMinutes: 3}})
			return err
		}, "historical_metrics: 0 values"},
		{"history not steps x 6", func() error {
			_, err := c.PredictBandwidth(ctx, []*aipb.BandwidthRequest{{VmId: "a", HistoricalMetrics: []float64{1, 2, 3}}})
			return err
		}, "historical_metrics: 3 values"},
		{"NaN in history", func() error {
			_, err := c.PredictBandwidth(ctx, []*aipb.BandwidthRequest{{VmId: "a", HistoricalMetrics: []float64{0, 0, 0, math.NaN(), 0, 0}}})
			return err
		}, "historical_metrics[3]"},
		{"negative horizon", func() error {
			_, err := c.PredictBandwidth(ctx, []*aipb.BandwidthRequest{{VmId: "a", HistoricalMetrics: good[0].HistoricalMetrics, HorizonMinutes: -1}})
			return err
		}, "horizon_minutes: -1"},
		{"one bad row fails the batch and is named", func() error {
			bad := &aipb.BandwidthRequest{VmId: "bad-vm", HistoricalMetrics: good[0].HistoricalMetrics, HorizonMinutes: 5000}
			_, err := c.PredictBandwidth(ctx, []*aipb.BandwidthRequest{good[0], good[1], bad, good[2]})
			return err
		}, `reqs[2] (vm_id "bad-vm")`},
		{"anomaly without metrics", func() error {
			_, err := c.DetectAnomaly(ctx, &aipb.AnomalyRequest{VmId: "a"})
			return err
		}, "current_metrics: missing"},
		{"placement without nodes", func() error {
			_, err := c.OptimizePlacement(ctx, &aipb.PlacementRequest{WorkloadId: "w"})
			return err
		}, "available_nodes: empty"},
		{"placement with a node twice", func() error {
			_, err := c.OptimizePlacement(ctx, &aipb.PlacementRequest{AvailableNodes: []*aipb.NodeInfo{{NodeId: "n", CpuAvailable: 1, MemoryAvailable: 1}, {NodeId: "n"}}})
			return err
		}, "available_nodes[1].node_id"},
		{"nil request (not sent)", func() error {
			_, err := c.PredictBandwidth(ctx, []*aipb.BandwidthRequest{good[0], nil})
			return err
		}, "reqs[1]: nil request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, backends.ErrInvalidInput) || errors.Is(err, backends.ErrUnavailable) {
				t.Fatalf("error %v, want one wrapping only backends.ErrInvalidInput", err)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), addr) {
				t.Errorf("error %q does not name %q and the endpoint %s", err, tt.want, addr)
			}
		})
	}
}

// TestGRPCSeedServerFaults: the seed server's injected faults give the right sentinels.
func TestGRPCSeedServerFaults(t *testing.T) {
	reqs := bandwidthRequests(6)
	t.Run("error-rate 1: every call UNAVAILABLE", func(t *testing.T) {
		c := newGRPC(t, GRPCConfig{Address: startSeedServer(t, "--error-rate", "1")})
		ctx := t.Context()
		_, err1 := c.PredictBandwidth(ctx, reqs)
		_, err2 := c.DetectAnomaly(ctx, anomalyRequests()[0])
		_, err3 := c.OptimizePlacement(ctx, placementRequest())
		for i, err := range []error{err1, err2, err3} {
			if !errors.Is(err, backends.ErrUnavailable) || !strings.Contains(fmt.Sprint(err), "UNAVAILABLE: injected error") {
				t.Errorf("call %d: error %v, want backends.ErrUnavailable with the upstream's message", i, err)
			}
		}
		if err := c.Ready(ctx); err != nil {
			t.Errorf("Ready: %v (the health check is not subject to --error-rate)", err)
		}
	})

	t.Run("error-rate 0.5: the seeded draws decide exactly which calls fail", func(t *testing.T) {
		const n = 24
		out, err := exec.Command(seedPython, "-c", fmt.Sprintf(
			"import random; r = random.Random(7); print(''.join('x' if r.random() < 0.5 else '.' for _ in range(%d)))", n)).Output()
		if err != nil {
			t.Fatal(err)
		}
		want := strings.TrimSpace(string(out))
		c := newGRPC(t, GRPCConfig{Address: startSeedServer(t, "--error-rate", "0.5", "--seed", "7")})
		var got strings.Builder
		for i := range n { // one at a time: the order of the draws is the order of the calls
			r := reqs[i%len(reqs)]
			resp, err := c.PredictBandwidth(t.Context(), []*aipb.BandwidthRequest{r})
			switch {
			case err == nil:
				if d := diffForecast(resp[0], seedForecast(r)); d != "" {
					t.Errorf("call %d: %s", i, d)
				}
				got.WriteByte('.')
			case errors.Is(err, backends.ErrUnavailable):
				got.WriteByte('x')
			default:
				t.Fatalf("call %d: %v, want nil or backends.ErrUnavailable", i, err)
			}
		}
		if got.String() != want {
			t.Errorf("failures %s, want %s", got.String(), want)
		}
		if !strings.Contains(want, "x") || !strings.Contains(want, ".") {
			t.Fatalf("seed 7 gives %s: pick a seed with both outcomes", want)
		}
		// A batch of many fails as a whole when any of its calls fails.
		if _, err := c.PredictBandwidth(t.Context(), bandwidthRequests(16)); !errors.Is(err, backends.ErrUnavailable) {
			t.Errorf("batch of 16 at error-rate 0.5: %v, want backends.ErrUnavailable", err)
		}
	})

	t.Run("malformed answers are ErrBadResponse naming the field", func(t *testing.T) {
		c := newGRPC(t, GRPCConfig{Address: startSeedServer(t, "--malformed")})
		ctx := t.Context()
		_, err1 := c.PredictBandwidth(ctx, reqs)
		_, err2 := c.DetectAnomaly(ctx, anomalyRequests()[1])
		_, err3 := c.OptimizePlacement(ctx, placementRequest())
		for i, tt := range []struct {
			err  error
			want string
		}{
			{err1, "predictions: "},
			{err2, "AIService/DetectAnomaly: response score: 2, want a number in [0, 1]"},
			{err3, `AIService/OptimizePlacement: response candidates[4].node_id: "no-such-node" is not among the request's available_nodes`},
		} {
			if !errors.Is(tt.err, ErrBadResponse) || errors.Is(tt.err, backends.ErrUnavailable) || errors.Is(tt.err, backends.ErrInvalidInput) {
				t.Errorf("call %d: error %v, want one wrapping only ErrBadResponse", i, tt.err)
			} else if !strings.Contains(tt.err.Error(), tt.want) || !strings.Contains(tt.err.Error(), "legacy grpc "+c.cfg.Address) {
				t.Errorf("call %d: error %q does not name the endpoint and %q", i, tt.err, tt.want)
			}
		}
		if !strings.Contains(fmt.Sprint(err1), "values, want") || !strings.Contains(fmt.Sprint(err1), "one per minute of horizon_minutes") {
			t.Errorf("PredictBandwidth error %v does not give the count and the rule", err1)
		}
	})

	// The upstream answers after an hour, so a call that returns at all did not wait for it: no
	// clock is read. TestGRPCSlowUpstream checks on a fake clock that the call returns exactly
	// when its deadline or Timeout passes.
	t.Run("slow upstream", func(t *testing.T) {
		addr := startSeedServer(t, "--delay-ms", "3600000")
		slow := reqs[:1]

		// The caller's deadline passes first: the ctx error, and no sentinel.
		c := newGRPC(t, GRPCConfig{Address: addr})
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		_, err := c.PredictBandwidth(ctx, slow)
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, backends.ErrUnavailable) {
			t.Errorf("ctx deadline: %v, want context.DeadlineExceeded and not backends.ErrUnavailable", err)
		}

		// The client's own Timeout passes first: ErrUnavailable, not the caller's deadline.
		short := newGRPC(t, GRPCConfig{Address: addr, Timeout: 200 * time.Millisecond})
		_, err = short.DetectAnomaly(t.Context(), anomalyRequests()[0])
		if !errors.Is(err, backends.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("own timeout: %v, want backends.ErrUnavailable and not context.DeadlineExceeded", err)
		}
		if !strings.Contains(fmt.Sprint(err), "no answer within 200ms (Timeout)") {
			t.Errorf("own timeout: %q does not say which timeout", err)
		}
	})
}

// TestGRPCReady: the health check, the fallback for servers without one, and a dead upstream.
func TestGRPCReady(t *testing.T) {
	ctx := t.Context()
	t.Run("no health service: connectivity", func(t *testing.T) {
		c := newGRPC(t, GRPCConfig{Address: startSeedServer(t, "--no-health")})
		if err := c.Ready(ctx); err != nil {
			t.Errorf("Ready: %v", err)
		}
	})
	t.Run("unknown health service name", func(t *testing.T) {
		c := newGRPC(t, GRPCConfig{Address: startSeedServer(t), HealthService: "no.such.Service"})
		if err := c.Ready(ctx); !errors.Is(err, backends.ErrUnavailable) || !strings.Contains(err.Error(), "NOT_FOUND") {
			t.Errorf("Ready: %v, want backends.ErrUnavailable with NOT_FOUND", err)
		}
	})
	t.Run("nothing listening", func(t *testing.T) {
		c := newGRPC(t, GRPCConfig{Address: deadAddr(t)})
		if err := c.Ready(ctx); !errors.Is(err, backends.ErrUnavailable) {
			t.Errorf("Ready: %v, want backends.ErrUnavailable", err)
		}
		if _, err := c.PredictBandwidth(ctx, bandwidthRequests(3)); !errors.Is(err, backends.ErrUnavailable) {
			t.Errorf("PredictBandwidth: %v, want backends.ErrUnavailable", err)
		}
	})
}

// deadAddr is a loopback address on which nothing listens (connections are refused).
func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// countingServer is a real AIService that records how many PredictBandwidth calls are in flight
// at once. Each call holds for hold (served over pipes in a synctest bubble, on the bubble's fake
// clock), answering unless its ctx ends first.
type countingServer struct {
	aipb.UnimplementedAIServiceServer
	hold          time.Duration
	inflight, max atomic.Int64
	calls         atomic.Int64
}

func (s *countingServer) PredictBandwidth(ctx context.Context, r *aipb.BandwidthRequest) (*aipb.BandwidthResponse, error) {
	n := s.inflight.Add(1)
	defer s.inflight.Add(-1)
	s.calls.Add(1)
	for m := s.max.Load(); n > m && !s.max.CompareAndSwap(m, n); m = s.max.Load() {
	}
	select {
	case <-time.After(s.hold):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	resp := seedForecast(r)
	resp.VmId = r.VmId
	return resp, nil
}

func serveGRPC(t *testing.T, svc aipb.AIServiceServer) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	aipb.RegisterAIServiceServer(srv, svc)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return l.Addr().String()
}

// TestGRPCBoundsConcurrency: one PredictBandwidth of many requests keeps MaxConcurrent RPCs in
// flight, never more and, while requests wait, never fewer (on a fake clock: 15 requests held 20ms
// each, 3 at a time, take exactly 5 rounds); a vm_id echoed by the upstream is accepted.
func TestGRPCBoundsConcurrency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &countingServer{hold: 20 * time.Millisecond}
		c := pipeGRPC(t, srv, GRPCConfig{MaxConcurrent: 3})
		reqs := bandwidthRequests(15)
		start := time.Now()
		got, err := c.PredictBandwidth(t.Context(), reqs)
		if err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took != 5*20*time.Millisecond {
			t.Errorf("15 calls held 20ms each took %v, want 100ms (5 rounds of 3)", took)
		}
		for i, r := range reqs {
			if got[i].VmId != r.VmId {
				t.Errorf("answer %d is for %q, want %q", i, got[i].VmId, r.VmId)
			}
		}
		if m := srv.max.Load(); m != 3 {
			t.Errorf("at most %d calls in flight, want 3 (MaxConcurrent)", m)
		}
		if n := srv.calls.Load(); n != 15 {
			t.Errorf("%d calls, want 15", n)
		}
		// Ready falls back to connectivity: this server has no health service.
		if err := c.Ready(t.Context()); err != nil {
			t.Errorf("Ready: %v", err)
		}
	})
}

// TestGRPCSlowUpstream: against an upstream that holds every call for an hour, the caller's
// deadline gives the ctx error, and the client's own Timeout gives ErrUnavailable, each exactly
// when it passes (on a fake clock).
func TestGRPCSlowUpstream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &countingServer{hold: time.Hour}
		c := pipeGRPC(t, srv, GRPCConfig{})
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.PredictBandwidth(ctx, bandwidthRequests(1))
		if took := time.Since(start); took != 200*time.Millisecond {
			t.Errorf("returned after %v, want the caller's 200ms", took)
		}
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, backends.ErrUnavailable) {
			t.Errorf("ctx deadline: %v, want context.DeadlineExceeded and not backends.ErrUnavailable", err)
		}

		short := pipeGRPC(t, srv, GRPCConfig{Timeout: 200 * time.Millisecond})
		start = time.Now()
		_, err = short.PredictBandwidth(t.Context(), bandwidthRequests(1))
		if took := time.Since(start); took != 200*time.Millisecond {
			t.Errorf("returned after %v, want the Timeout's 200ms", took)
		}
		if !errors.Is(err, backends.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) ||
			!strings.Contains(fmt.Sprint(err), "no answer within 200ms (Timeout)") {
			t.Errorf("own timeout: %v, want backends.ErrUnavailable saying which timeout", err)
		}
	})
}

// wrongVMServer answers every PredictBandwidth for another VM.
type wrongVMServer struct {
	aipb.UnimplementedAIServiceServer
}

func (wrongVMServer) PredictBandwidth(_ context.Context, r *aipb.BandwidthRequest) (*aipb.BandwidthResponse, error) {
	resp := seedForecast(r)
	resp.VmId = r.VmId + "-other"
	return resp, nil
}

// earlyDeadlineServer answers DEADLINE_EXCEEDED a little before the deadline it was told, as a
// server with its own deadline check does (served over pipes in a synctest bubble: exactly 5ms
// before it on the bubble's fake clock).
type earlyDeadlineServer struct {
	aipb.UnimplementedAIServiceServer
}

func (earlyDeadlineServer) DetectAnomaly(ctx context.Context, _ *aipb.AnomalyRequest) (*aipb.AnomalyResponse, error) {
	if d, ok := ctx.Deadline(); ok {
		time.Sleep(time.Until(d) - 5*time.Millisecond)
	}
	return nil, status.Error(codes.DeadlineExceeded, "gave up")
}

func (earlyDeadlineServer) OptimizePlacement(context.Context, *aipb.PlacementRequest) (*aipb.PlacementResponse, error) {
	return nil, status.Error(codes.DeadlineExceeded, "gave up at once")
}

// TestGRPCUpstreamDeadline: an upstream's DEADLINE_EXCEEDED 5ms before the caller's deadline is
// the caller's deadline error; 5ms before the client's own Timeout, ErrUnavailable saying so; far
// from any deadline, an ordinary upstream failure.
func TestGRPCUpstreamDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		_, err := pipeGRPC(t, earlyDeadlineServer{}, GRPCConfig{}).DetectAnomaly(ctx, anomalyRequests()[0])
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, backends.ErrUnavailable) ||
			!strings.Contains(err.Error(), "the upstream gave up at the caller's deadline: DEADLINE_EXCEEDED: gave up") {
			t.Errorf("DEADLINE_EXCEEDED at the caller's deadline: %v, want context.DeadlineExceeded", err)
		}
		short := pipeGRPC(t, earlyDeadlineServer{}, GRPCConfig{Timeout: 200 * time.Millisecond})
		_, err = short.DetectAnomaly(t.Context(), anomalyRequests()[0])
		if !errors.Is(err, backends.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) ||
			!strings.Contains(err.Error(), "no answer within 200ms (Timeout): DEADLINE_EXCEEDED: gave up") {
			t.Errorf("DEADLINE_EXCEEDED at the own timeout: %v, want backends.ErrUnavailable", err)
		}
		_, err = short.OptimizePlacement(t.Context(), placementRequest())
		if !errors.Is(err, backends.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "DEADLINE_EXCEEDED: gave up at once") {
			t.Errorf("DEADLINE_EXCEEDED far from any deadline: %v, want backends.ErrUnavailable", err)
		}
	})
}

func TestGRPCWrongVMAndUnimplemented(t *testing.T) {
	c := newGRPC(t, GRPCConfig{Address: serveGRPC(t, wrongVMServer{})})
	_, err := c.PredictBandwidth(t.Context(), bandwidthRequests(2))
	if !errors.Is(err, ErrBadResponse) || !strings.Contains(err.Error(), "vm_id: ") || !strings.Contains(err.Error(), "(the request's)") {
		t.Errorf("PredictBandwidth: %v, want ErrBadResponse naming vm_id", err)
	}
	// An RPC the upstream does not implement is a server fault, not the caller's.
	_, err = c.DetectAnomaly(t.Context(), anomalyRequests()[0])
	if !errors.Is(err, backends.ErrUnavailable) || !strings.Contains(err.Error(), "UNIMPLEMENTED") {
		t.Errorf("DetectAnomaly: %v, want backends.ErrUnavailable with UNIMPLEMENTED", err)
	}
}

// TestGRPCClose: Close waits for the call in flight (held 100ms by the upstream, on a fake clock)
// and returns when it has; later calls fail with ErrUnavailable.
func TestGRPCClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &countingServer{hold: 100 * time.Millisecond}
		c := pipeGRPC(t, srv, GRPCConfig{})
		start := time.Now()
		answered := make(chan error, 1)
		go func() {
			_, err := c.PredictBandwidth(context.Background(), bandwidthRequests(1))
			answered <- err
		}()
		synctest.Wait() // the call is in flight, held by the server
		if srv.inflight.Load() != 1 {
			t.Fatal("the call is not in flight")
		}
		closed := make(chan error, 1)
		go func() { closed <- c.Close() }()
		synctest.Wait() // Close is waiting: the clock has not moved
		select {
		case err := <-closed:
			t.Fatalf("Close returned (%v) with a call in flight", err)
		default:
		}
		if err := <-closed; err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took != 100*time.Millisecond {
			t.Errorf("Close returned after %v, want when the call in flight returned (100ms)", took)
		}
		// Close waited for the call in flight: closing the connection under it would have failed it.
		if err := <-answered; err != nil {
			t.Errorf("call in flight during Close: %v", err)
		}
		if _, err := c.PredictBandwidth(context.Background(), bandwidthRequests(1)); !errors.Is(err, backends.ErrUnavailable) {
			t.Errorf("after Close: %v, want backends.ErrUnavailable", err)
		}
		if err := c.Ready(context.Background()); !errors.Is(err, backends.ErrUnavailable) {
			t.Errorf("Ready after Close: %v, want backends.ErrUnavailable", err)
		}
		if err := c.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
}
