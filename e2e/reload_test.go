package e2e

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
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
		if !p.waitLog(want, 30*time.Second) {
			t.Fatalf("no %q in the log within 30s:\n%s", want, p.log())
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

// hang is the generous bound that only catches a hang.
const hang = 20 * time.Second

// waitExit waits up to hang for the process to exit; it leaves the exit where launch's cleanup
// finds it.
func waitExit(t *testing.T, p *proc) (error, bool) {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		return err, true
	case <-time.After(hang):
		return nil, false
	}
}

// waitLogFor waits up to hang for want in the process's log.
func waitLogFor(p *proc, want string) bool { return p.waitLog(want, hang) }

// TestReloadOfAFIFOSpecThenSIGTERM: a config whose spec names a FIFO is refused on SIGHUP, naming
// the file (the read does not block the reload), and SIGTERM after it stops the process within
// its shutdown timeout.
func TestReloadOfAFIFOSpecThenSIGTERM(t *testing.T) {
	def, err := os.ReadFile(filepath.Join("..", "examples", "configs", "default.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path, fifo := filepath.Join(dir, "sidecar.yaml"), filepath.Join(dir, "placement.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, def, 0o600); err != nil {
		t.Fatal(err)
	}
	p := launch(t, "-config", path)
	// Whatever happens, let a reader stuck on the FIFO go once the test ends.
	t.Cleanup(func() {
		if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
	})
	edited := strings.Replace(string(def), "spec: embedded:specs/placement.yaml", "spec: "+fifo, 1)
	if edited == string(def) {
		t.Fatal("the default config changed shape; update this test")
	}
	os.WriteFile(path, []byte(edited), 0o600)
	p.cmd.Process.Signal(syscall.SIGHUP)
	if want := fifo + ": a named pipe (FIFO), not a regular file"; !waitLogFor(p, want) {
		t.Errorf("no %q in the log within %v:\n%s", want, hang, p.log())
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	err, exited := waitExit(t, p)
	if !exited {
		t.Fatalf("the process has not exited %v after SIGTERM (shutdown_timeout: 10s):\n%s", hang, p.log())
	}
	if err != nil || !strings.Contains(p.log(), "sidecar: stopped") {
		t.Errorf("exit: %v\n%s", err, p.log())
	}
}

// hangingEndpoint listens for gRPC clients and never answers their calls: it sends the HTTP/2
// server preface (an empty SETTINGS frame), so connections are ready, then reads forever. contacted
// gets a value when a client's first bytes arrive.
func hangingEndpoint(t *testing.T) (addr string, contacted <-chan struct{}) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := make(chan struct{}, 16)
	var conns sync.WaitGroup
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			conns.Go(func() {
				defer conn.Close()
				conn.Write([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0}) // SETTINGS, no parameters
				buf := make([]byte, 4096)
				for first := true; ; first = false {
					if _, err := conn.Read(buf); err != nil {
						return
					}
					if first {
						c <- struct{}{}
					}
				}
			})
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		<-done
		conns.Wait() // the connections end when the process does (call launch after this)
	})
	return lis.Addr().String(), c
}

// TestSIGTERMDuringAReload: while a reload waits on a remote endpoint that never answers (the
// attempt timeout is 10 minutes), SIGHUPs are coalesced into one more reload after it (and logged),
// and SIGTERM cancels the reload and stops the process within its shutdown timeout.
func TestSIGTERMDuringAReload(t *testing.T) {
	def, err := os.ReadFile(filepath.Join("..", "examples", "configs", "default.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	addr, contacted := hangingEndpoint(t)
	path := filepath.Join(t.TempDir(), "sidecar.yaml")
	if err := os.WriteFile(path, def, 0o600); err != nil {
		t.Fatal(err)
	}
	p := launch(t, "-config", path) // after hangingEndpoint: its cleanup (kill) runs first
	remote := "  - name: remote\n    task: forecast\n    path: embedded:models/bandwidth.onnx\n    spec: embedded:specs/bandwidth.yaml\n" +
		"    backend: {kind: kserve, endpoints: [\"" + addr + "\"], timeout: 10m}\nroutes:"
	edited := strings.Replace(string(def), "routes:", remote, 1)
	os.WriteFile(path, []byte(edited), 0o600)
	p.cmd.Process.Signal(syscall.SIGHUP)
	select {
	case <-contacted:
	case <-time.After(hang):
		t.Fatalf("the reload did not reach the endpoint within %v:\n%s", hang, p.log())
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	if !waitLogFor(p, "sidecar: SIGHUP during a reload: another reload will follow it") {
		t.Errorf("a SIGHUP during a reload was not logged as queued:\n%s", p.log())
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	if !waitLogFor(p, "sidecar: SIGHUP during a reload: a reload already waits to follow it") {
		t.Errorf("a second SIGHUP during a reload was not logged as coalesced:\n%s", p.log())
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	err, exited := waitExit(t, p)
	if !exited {
		t.Fatalf("the process has not exited %v after SIGTERM (shutdown_timeout: 10s):\n%s", hang, p.log())
	}
	if err != nil || !strings.Contains(p.log(), "sidecar: stopped") {
		t.Errorf("exit: %v\n%s", err, p.log())
	}
	if n := strings.Count(p.log(), "sidecar: SIGHUP: reloading"); n != 1 {
		t.Errorf("%d reloads started; want 1 (the queued one is dropped at shutdown):\n%s", n, p.log())
	}
}
