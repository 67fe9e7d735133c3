package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/novacron/sidecar/internal/seedpb"
)

// TestSIGHUPReloads: the binary serving a config file reloads it on SIGHUP. A file that does not
// parse is reported and the running config stays; a good one (the placement model removed) takes
// effect while the process keeps serving.
func TestSIGHUPReloads(t *testing.T) {
	def, err := os.ReadFile(filepath.Join("..", "examples", "configs", "default.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// Paths in the default are embedded:...; they stay valid from any folder.
	path := filepath.Join(t.TempDir(), "sidecar.yaml")
	if err := os.WriteFile(path, def, 0o600); err != nil {
		t.Fatal(err)
	}
	p := launch(t, "-config", path)
	c := seedpb.NewAIServiceClient(dial(t, p.grpc))
	ctx := context.Background()
	place := &seedpb.PlacementRequest{WorkloadId: "w", Requirements: map[string]float64{"cpu": 2, "memory": 4},
		AvailableNodes: []*seedpb.NodeInfo{{NodeId: "n1", CpuAvailable: 8, MemoryAvailable: 32}}}
	if _, err := c.OptimizePlacement(ctx, place); err != nil {
		t.Fatal(err)
	}
	waitLog := func(want string) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !strings.Contains(p.log(), want); {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the log within 30s:\n%s", want, p.log())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	os.WriteFile(path, []byte("models: [unclosed\n"), 0o600)
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitLog("sidecar: reload:")
	if _, err := c.OptimizePlacement(ctx, place); err != nil {
		t.Fatalf("after a bad reload: %v", err)
	}

	i := strings.Index(string(def), "  - name: placement")
	j := strings.Index(string(def), "routes:")
	if i < 0 || j < i {
		t.Fatal("the default config changed shape; update this test")
	}
	edited := string(def[:i]) + string(def[j:])
	edited = strings.Replace(edited, "  optimize_placement: placement\n", "", 1)
	os.WriteFile(path, []byte(edited), 0o600)
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitLog("reloaded " + path)
	if _, err := c.OptimizePlacement(ctx, place); status.Code(err) != codes.NotFound {
		t.Errorf("after the reload removed the placement model: %v, want NOT_FOUND", err)
	}
	if _, err := c.PredictBandwidth(ctx, &seedpb.BandwidthRequest{VmId: "v", HistoricalMetrics: window(), HorizonMinutes: 5}); err != nil {
		t.Errorf("bandwidth after the reload: %v", err)
	}
}
