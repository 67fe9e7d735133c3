package app_test

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/novacron/sidecar/config"
	"github.com/novacron/sidecar/examples"
	"github.com/novacron/sidecar/internal/app"
	"github.com/novacron/sidecar/proto/inference"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// reloadConfig is the embedded default, edited.
func reloadConfig(t *testing.T, s *sidecar, edit func(*config.Config)) *config.Config {
	t.Helper()
	cfg, err := config.Load("", examples.FS)
	if err != nil {
		t.Fatal(err)
	}
	// What start set: the reload must not look like a change of listeners or limits.
	cfg.Listen.GRPC, cfg.Listen.HTTP = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Limits.MaxMessageBytes = 64 << 10
	edit(cfg)
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestReloadKeepsWhatIsUnchanged reloads a running sidecar while calls run: a model is added, one
// removed, one's batching changed. The unchanged model keeps its sessions and its pushed windows,
// no call fails, and the new set of models answers.
func TestReloadKeepsWhatIsUnchanged(t *testing.T) {
	s := start(t, nil)
	ctx := context.Background()
	end := time.Now().Truncate(time.Minute)
	if _, err := s.client.PushMetrics(ctx, &aipb.PushMetricsRequest{Samples: pushSamples("vm-r", 3, end)}); err != nil {
		t.Fatal(err)
	}
	fromWindow := func() (*aipb.BandwidthResponse, error) {
		return s.client.PredictBandwidth(ctx, &aipb.BandwidthRequest{VmId: "vm-r"})
	}
	before, err := fromWindow()
	if err != nil {
		t.Fatal(err)
	}
	bw := s.app.Service.Models()["bandwidth"]

	// Calls run through the reload.
	stop := make(chan struct{})
	var calls, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				_, err := s.client.PredictBandwidth(ctx, bandwidthReq(w*1000+i%50))
				calls.Add(1)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		})
	}
	cfg := reloadConfig(t, s, func(c *config.Config) {
		var models []config.Model
		for _, m := range c.Models {
			switch m.Name {
			case "placement":
				continue // removed
			case "anomaly":
				m.Batching.MaxBatchSize = 8
			}
			models = append(models, m)
		}
		extra := c.Models[0]
		extra.Name = "bandwidth-b"
		c.Models = append(models, extra)
		c.Routes.OptimizePlacement = config.Route{}
	})
	if err := s.app.Reload(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	// Let calls run on the new models too: 40 more calls, or 10s at most.
	for n, limit := calls.Load()+40, time.Now().Add(10*time.Second); calls.Load() < n && time.Now().Before(limit); {
		runtime.Gosched()
	}
	close(stop)
	wg.Wait()
	if calls.Load() == 0 || failed.Load() != 0 {
		t.Errorf("%d of %d calls during the reload failed; the first: %v", failed.Load(), calls.Load(), firstErr.Load())
	}

	models := s.app.Service.Models()
	if models["bandwidth"] == bw || models["bandwidth"].Backend != bw.Backend {
		t.Error("the unchanged bandwidth model was not rebuilt around its kept sessions")
	}
	after, err := fromWindow()
	if err != nil {
		t.Fatalf("the pushed window did not survive the reload: %v", err)
	}
	if !near(after.Predictions, before.Predictions, 1e-6) {
		t.Errorf("from the kept window: %v, before the reload %v", after.Predictions, before.Predictions)
	}
	if _, err := s.client.OptimizePlacement(ctx, placementReq()); status.Code(err) != codes.NotFound {
		t.Errorf("the removed placement model: %v, want NOT_FOUND", err)
	}
	other, err := s.client.PredictBandwidth(ctx, &aipb.BandwidthRequest{VmId: "x", HistoricalMetrics: window(3), Model: "bandwidth-b"})
	want, err2 := s.client.PredictBandwidth(ctx, &aipb.BandwidthRequest{VmId: "x", HistoricalMetrics: window(3)})
	if err != nil || err2 != nil || !near(other.Predictions, want.Predictions, 1e-5) {
		t.Errorf("the added model: %v %v; bandwidth %v %v", other, err, want, err2)
	}
}

// TestReloadRefusals: a reload that changes what takes a restart, or names a model that cannot
// load, is refused and the running config goes on serving.
func TestReloadRefusals(t *testing.T) {
	s := start(t, nil)
	ctx := context.Background()
	// A model that does not load is named with the file and the line of its entry there (in the
	// embedded default, models[0] is on line 12, models[1] on line 18).
	cases := map[string]struct {
		edit func(*config.Config)
		says string
	}{
		"limits":     {func(c *config.Config) { c.Limits.MaxNodes = 7 }, "limits changed; that takes a restart"},
		"listen":     {func(c *config.Config) { c.Listen.HTTP = "127.0.0.1:1" }, "listen changed"},
		"bad model":  {func(c *config.Config) { c.Models[1].Path = "/nonexistent.onnx" }, "embedded:configs/default.yaml:19: models[1] anomaly: path: "},
		"wrong spec": {func(c *config.Config) { c.Models[0].Spec = "embedded:specs/anomaly.yaml" }, "embedded:configs/default.yaml:12: models[0] bandwidth: "},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			err := s.app.Reload(ctx, reloadConfig(t, s, c.edit))
			if err == nil || !strings.Contains(err.Error(), c.says) {
				t.Fatalf("got %v, want an error saying %q", err, c.says)
			}
			// The caller says "reload: " (cmd/sidecar: "sidecar: reload: ..."); Reload does not.
			if strings.HasPrefix(err.Error(), "reload") {
				t.Errorf("%q repeats the caller's prefix", err)
			}
			if _, err := s.client.DetectAnomaly(ctx, anomalyReq(50)); err != nil {
				t.Errorf("after the refused reload: %v", err)
			}
			if _, err := s.client.OptimizePlacement(ctx, placementReq()); err != nil {
				t.Errorf("after the refused reload: %v", err)
			}
		})
	}
}

// hang is the generous bound that only catches a hang: an operation that should return at once (or
// once it is cancelled) and has not after this long fails the test.
const hang = 20 * time.Second

// TestReloadOfAFIFOSpecFails: a spec that names a FIFO (or a device) is refused at once, naming the
// path and the reason, instead of blocking the reload (and with it shutdown) on the open; the
// running config goes on serving.
func TestReloadOfAFIFOSpecFails(t *testing.T) {
	s := start(t, nil)
	ctx := context.Background()
	fifo := filepath.Join(t.TempDir(), "placement.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, spec := range []string{fifo, "/dev/zero"} {
		cfg := reloadConfig(t, s, func(c *config.Config) { c.Models[2].Spec = spec })
		done := make(chan error, 1)
		go func() { done <- s.app.Reload(ctx, cfg) }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "models[2] placement: spec: "+spec+": a ") ||
				!strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("spec %s: got %v, want a refusal naming the file and why", spec, err)
			}
		case <-time.After(hang):
			// Unblock a reader stuck opening the FIFO, so that the test can end.
			if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				w.Close()
			}
			t.Fatalf("a reload whose spec is %s has not returned after %v", spec, hang)
		}
	}
	if _, err := s.client.OptimizePlacement(ctx, placementReq()); err != nil {
		t.Errorf("after the refused reload: %v", err)
	}
}

// stuckServer is an Open Inference Protocol server whose ModelMetadata never answers: a reload
// that adds a model on it waits in the model's check until its context ends.
type stuckServer struct {
	inference.UnimplementedGRPCInferenceServiceServer
	entered, left chan struct{}
}

func (s *stuckServer) ModelMetadata(ctx context.Context, _ *inference.ModelMetadataRequest) (*inference.ModelMetadataResponse, error) {
	s.entered <- struct{}{}
	<-ctx.Done()
	s.left <- struct{}{}
	return nil, ctx.Err()
}

// TestShutdownCancelsAReload: Shutdown during a reload that waits on a remote endpoint (for the
// attempt timeout: 10 minutes here) cancels that reload instead of waiting for it; the reload
// fails, closing what it built (the endpoint's call ends), and Shutdown returns.
func TestShutdownCancelsAReload(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stuck := &stuckServer{entered: make(chan struct{}, 8), left: make(chan struct{}, 8)}
	srv := grpc.NewServer()
	inference.RegisterGRPCInferenceServiceServer(srv, stuck)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop) // after a failure, ends the stuck call: the reload then returns

	cfg, err := config.Load("", examples.FS)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen.GRPC, cfg.Listen.HTTP = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Limits.MaxMessageBytes = 64 << 10
	a, err := app.Start(context.Background(), cfg, examples.FS, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	next := reloadConfig(t, nil, func(c *config.Config) {
		m := c.Models[0]
		m.Name = "remote"
		m.Backend = config.Backend{Kind: config.BackendKServe, Endpoints: []string{lis.Addr().String()}, Timeout: 10 * time.Minute}
		m.Batching.MaxInflightBatches = 0
		c.Models = append(c.Models, m)
	})
	reloaded := make(chan error, 1)
	go func() { reloaded <- a.Reload(context.Background(), next) }()
	select {
	case <-stuck.entered:
	case err := <-reloaded:
		t.Fatalf("the reload returned before it reached the endpoint: %v", err)
	case <-time.After(hang):
		t.Fatalf("the reload did not reach the endpoint within %v", hang)
	}

	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stopped <- a.Shutdown(ctx)
	}()
	select {
	case err := <-stopped:
		if err != nil {
			t.Errorf("shutdown: %v", err)
		}
	case <-time.After(hang):
		t.Fatalf("Shutdown has not returned after %v: it waits for the reload", hang)
	}
	select {
	case err := <-reloaded:
		if err == nil || !strings.Contains(err.Error(), "shutting down") {
			t.Errorf("the reload cut by shutdown: %v, want an error saying the sidecar is shutting down", err)
		}
	case <-time.After(hang):
		t.Fatalf("the reload has not returned %v after Shutdown", hang)
	}
	select {
	case <-stuck.left:
	case <-time.After(hang):
		t.Errorf("the reload's call to the endpoint still runs %v after the reload returned", hang)
	}
}
