package app_test

import (
	"context"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/novacron/sidecar/config"
	"github.com/novacron/sidecar/examples"
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
		c.Routes.OptimizePlacement = ""
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
	cases := map[string]struct {
		edit func(*config.Config)
		says string
	}{
		"limits":     {func(c *config.Config) { c.Limits.MaxNodes = 7 }, "limits changed; that takes a restart"},
		"listen":     {func(c *config.Config) { c.Listen.HTTP = "127.0.0.1:1" }, "listen changed"},
		"bad model":  {func(c *config.Config) { c.Models[1].Path = "/nonexistent.onnx" }, "models[1] anomaly"},
		"wrong spec": {func(c *config.Config) { c.Models[0].Spec = "embedded:specs/anomaly.yaml" }, "models[0] bandwidth"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			err := s.app.Reload(ctx, reloadConfig(t, s, c.edit))
			if err == nil || !strings.Contains(err.Error(), c.says) {
				t.Fatalf("got %v, want an error saying %q", err, c.says)
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
