package app_test

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/novacron/sidecar/config"
	"github.com/novacron/sidecar/examples"
	"github.com/novacron/sidecar/internal/app"
	"github.com/novacron/sidecar/internal/leaktest"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// leakBandwidthReq is a valid PredictBandwidth request: a 10-minute window of the six metrics.
func leakBandwidthReq(i int) *aipb.BandwidthRequest {
	var w []float64
	for step := 0; step < 10; step++ {
		x := float64(step+i) / 10
		w = append(w, 40+20*math.Sin(x), 55+5*math.Cos(x), 30+10*math.Sin(2*x), 300+120*math.Sin(x+.5), 8+3*math.Sin(x), 0.002)
	}
	return &aipb.BandwidthRequest{VmId: fmt.Sprintf("vm-%d", i), HistoricalMetrics: w, HorizonMinutes: 5}
}

// startApp starts a sidecar from cfg on loopback ports.
func startApp(t *testing.T, cfg *config.Config) *app.App {
	t.Helper()
	cfg.Listen.GRPC, cfg.Listen.HTTP = "127.0.0.1:0", "127.0.0.1:0"
	a, err := app.Start(context.Background(), cfg, examples.FS, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// use calls a over both front ends and leaves, when it returns, what a client may leave at a
// server's shutdown: an idle HTTP keep-alive connection, an idle gRPC connection and a
// StreamMetrics stream not yet closed. close closes the clients.
func use(t *testing.T, a *app.App) (close func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := grpc.NewClient(a.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	client := aipb.NewAIServiceClient(conn)
	for i := range 4 {
		if _, err := client.PredictBandwidth(ctx, leakBandwidthReq(i)); err != nil {
			t.Fatalf("PredictBandwidth: %v", err)
		}
	}
	stream, err := client.StreamMetrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&aipb.PushMetricsRequest{Samples: []*aipb.MetricsSample{{VmId: "vm-s", TimestampMs: time.Now().UnixMilli(),
		Metrics: &aipb.VMMetrics{Cpu: 40, Memory: 50, DiskIo: 30, NetworkIo: 250, Latency: 9, ErrorRate: 0.002}}}}); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{}}
	for _, path := range []string{"/healthz", "/metrics"} {
		resp, err := hc.Get("http://" + a.HTTPAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return func() {
		stream.CloseSend()
		conn.Close()
		hc.CloseIdleConnections()
	}
}

func shutdown(t *testing.T, a *app.App) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// remoteYAML is a config whose bandwidth model runs on the Open Inference Protocol endpoint at
// addr, checked every healthInterval.
func remoteYAML(addr, healthInterval string) string {
	return fmt.Sprintf(`models:
  - name: bandwidth
    task: forecast
    spec: embedded:specs/bandwidth.yaml
    path: embedded:models/bandwidth.onnx
    backend:
      kind: kserve
      endpoints: [%s]
      health: {interval: %s}
`, addr, healthInterval)
}

// TestAppLeavesNoGoroutine: sidecars started, called over both front ends (clients' connections
// and a metrics stream still open at Shutdown), one of them reloaded, one of them forwarding to
// another over the Open Inference Protocol, then shut down, several times, leave no goroutine
// running once their clients are closed.
func TestAppLeavesNoGoroutine(t *testing.T) {
	leaktest.Check(t)
	for cycle := range 3 {
		cfg, err := config.Load("", examples.FS)
		if err != nil {
			t.Fatal(err)
		}
		upstream := startApp(t, cfg)
		closeUp := use(t, upstream)

		cfg, err = config.Parse("leak.yaml", []byte(remoteYAML(upstream.GRPCAddr, "10ms")))
		if err != nil {
			t.Fatal(err)
		}
		downstream := startApp(t, cfg)
		closeDown := use(t, downstream)
		if cycle == 1 { // a reload, which keeps the pool and updates it
			cfg, err := config.Parse("leak-2.yaml", []byte(remoteYAML(upstream.GRPCAddr, "20ms")))
			if err != nil {
				t.Fatal(err)
			}
			cfg.Listen.GRPC, cfg.Listen.HTTP = "127.0.0.1:0", "127.0.0.1:0" // as started: listen takes a restart
			if err := downstream.Reload(context.Background(), cfg); err != nil {
				t.Fatalf("Reload: %v", err)
			}
			closeDown()
			closeDown = use(t, downstream)
		}
		shutdown(t, downstream)
		shutdown(t, upstream)
		closeDown()
		closeUp()
	}
}

// TestLeakCheckSeesARunningApp shows the check above can fail: a sidecar not yet shut down is
// reported, by its servers' goroutines; once shut down, nothing is.
func TestLeakCheckSeesARunningApp(t *testing.T) {
	before := leaktest.Goroutines()
	cfg, err := config.Load("", examples.FS)
	if err != nil {
		t.Fatal(err)
	}
	a := startApp(t, cfg)
	var left []string
	for deadline := time.Now().Add(leaktest.Wait); time.Now().Before(deadline); runtime.Gosched() {
		// A new goroutine shows its own functions once it has run.
		if left = leaktest.LeakedSince(before, 0); strings.Contains(strings.Join(left, "\n"), "grpc.(*Server).Serve(") &&
			strings.Contains(strings.Join(left, "\n"), "http.(*Server).Serve(") {
			break
		}
	}
	shutdown(t, a)
	if s := strings.Join(left, "\n"); !strings.Contains(s, "grpc.(*Server).Serve(") || !strings.Contains(s, "http.(*Server).Serve(") {
		t.Errorf("a running sidecar: the check did not see its servers:\n\n%s", strings.Join(left, "\n\n"))
	}
	if left := leaktest.LeakedSince(before, leaktest.Wait); len(left) > 0 {
		t.Errorf("after Shutdown: %d goroutines left:\n\n%s", len(left), strings.Join(left, "\n\n"))
	}
}
