// Package e2e runs the built sidecar binary as a separate process, the way an operator does, and
// talks to it with clients that share no code with it: the Go client generated from the seed's
// proto exactly as the seed wrote it, the gRPC reflection and health clients, and plain HTTP.
// (The seed's generated types and the sidecar's extended ones register the same proto names, so
// they cannot live in one process; this is also why this is a separate process.)
package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/novacron/sidecar/internal/seedpb"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sidecar-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "sidecar")
	build := exec.Command("go", "build", "-o", binary, "./cmd/sidecar")
	build.Dir = ".."
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the sidecar:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type proc struct {
	cmd        *exec.Cmd
	grpc, http string
	stderr     *strings.Builder
	mu         *sync.Mutex
	wrote      chan struct{} // buffered 1: something was written to stderr since the last receive
	done       chan error
}

var servingRE = regexp.MustCompile(`sidecar: serving grpc=(\S+) http=(\S+)`)

// launch starts the binary with the embedded default on free loopback ports and waits until it
// prints its addresses.
func launch(t *testing.T, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"serve", "-grpc", "127.0.0.1:0", "-http", "127.0.0.1:0"}, args...)...)
	cmd.Dir = ".." // the repository, where the ONNX Runtime cache is found
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, stderr: &strings.Builder{}, mu: &sync.Mutex{}, wrote: make(chan struct{}, 1), done: make(chan error, 1)}
	cmd.Stderr = lockedWriter{p.mu, p.stderr, p.wrote}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrs := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := servingRE.FindStringSubmatch(sc.Text()); m != nil {
				addrs <- m[1:]
			}
		}
		io.Copy(io.Discard, stdout)
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
	})
	select {
	case a := <-addrs:
		p.grpc, p.http = a[0], a[1]
	case err := <-p.done:
		p.done <- err
		t.Fatalf("sidecar exited before serving (%v):\n%s", err, p.log())
	case <-time.After(60 * time.Second):
		t.Fatalf("sidecar did not serve within 60s:\n%s", p.log())
	}
	return p
}

func (p *proc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// waitLog waits until want is in the process's log, woken by each write to it, for at most
// bound (a bound on a hang, not a speed); it reports whether want came.
func (p *proc) waitLog(want string, bound time.Duration) bool {
	timer := time.NewTimer(bound)
	defer timer.Stop()
	for !strings.Contains(p.log(), want) {
		select {
		case <-p.wrote:
		case <-timer.C:
			return strings.Contains(p.log(), want)
		}
	}
	return true
}

// lockedWriter writes to w under mu and, when wrote is not nil, signals it (without blocking).
type lockedWriter struct {
	mu    *sync.Mutex
	w     io.Writer
	wrote chan struct{}
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	n, err := l.w.Write(b)
	l.mu.Unlock()
	select {
	case l.wrote <- struct{}{}:
	default:
	}
	return n, err
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func window() []float64 {
	var w []float64
	for s := 0; s < 10; s++ {
		x := float64(s) / 3
		w = append(w, 45+15*math.Sin(x), 60, 25, 280+90*math.Sin(x), 7, 0.001)
	}
	return w
}

// TestSeedClient: the client generated from the seed's proto, unchanged, calls all three RPCs.
func TestSeedClient(t *testing.T) {
	p := launch(t)
	c := seedpb.NewAIServiceClient(dial(t, p.grpc))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	bw, err := c.PredictBandwidth(ctx, &seedpb.BandwidthRequest{VmId: "vm-42", HistoricalMetrics: window(), HorizonMinutes: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(bw.Predictions) != 10 || bw.ModelVersion == "" || bw.Confidence <= 0 || bw.Confidence >= 1 {
		t.Errorf("PredictBandwidth: %v", bw)
	}
	an, err := c.DetectAnomaly(ctx, &seedpb.AnomalyRequest{VmId: "vm-42", CurrentMetrics: &seedpb.VMMetrics{Cpu: 40, Memory: 55, DiskIo: 20, NetworkIo: 250, Latency: 8, ErrorRate: 0.001}})
	if err != nil {
		t.Fatal(err)
	}
	if an.Severity == "" || an.AnomalyType == "" || an.Score < 0 || an.Score > 1 {
		t.Errorf("DetectAnomaly: %v", an)
	}
	pl, err := c.OptimizePlacement(ctx, &seedpb.PlacementRequest{WorkloadId: "wl", Requirements: map[string]float64{"cpu": 2, "memory": 4},
		AvailableNodes: []*seedpb.NodeInfo{{NodeId: "a", CpuAvailable: 16, MemoryAvailable: 64}, {NodeId: "b", CpuAvailable: 1, MemoryAvailable: 2}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(pl.Candidates) != 2 || pl.Candidates[0].NodeId != "a" || pl.Candidates[0].Reasoning == "" {
		t.Errorf("OptimizePlacement: %v", pl)
	}
}

// TestReflectionAndHealth: what grpcurl list and a Kubernetes gRPC probe see.
func TestReflectionAndHealth(t *testing.T) {
	p := launch(t)
	conn := dial(t, p.grpc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.Name)
	}
	for _, want := range []string{"novacron.ai.AIService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}
	h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "novacron.ai.AIService"})
	if err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health: %v %v", h, err)
	}
}

// TestGracefulShutdown: on SIGTERM the sidecar finishes the calls it accepted, refuses new ones,
// closes its sessions and exits 0.
func TestGracefulShutdown(t *testing.T) {
	p := launch(t)
	c := seedpb.NewAIServiceClient(dial(t, p.grpc))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, refused := 0, 0
	var other []error
	flowing := make(chan struct{})
	var once sync.Once
	for g := 0; g < 8; g++ {
		wg.Go(func() {
			for i := 0; i < 5000; i++ {
				_, err := c.PredictBandwidth(ctx, &seedpb.BandwidthRequest{VmId: "v", HistoricalMetrics: window()})
				mu.Lock()
				switch {
				case err == nil:
					ok++
					if ok == 50 {
						once.Do(func() { close(flowing) })
					}
				case strings.Contains(err.Error(), "Unavailable"):
					refused++ // after the listener closed: never accepted
				default:
					other = append(other, err)
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	// Signal once calls are flowing.
	select {
	case <-flowing:
	case <-time.After(20 * time.Second):
		t.Fatalf("calls did not flow:\n%s", p.log())
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Errorf("exit: %v\n%s", err, p.log())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("no exit 20s after SIGTERM:\n%s", p.log())
	}
	wg.Wait()
	if len(other) > 0 {
		t.Errorf("calls failed other than by refusal after shutdown: %v", other[:min(3, len(other))])
	}
	// A drain that had to cut calls exits 1 and says so; this one must not have.
	if !strings.Contains(p.log(), "sidecar: stopped") || strings.Contains(p.log(), "were cut") {
		t.Errorf("log:\n%s", p.log())
	}
	if _, err := c.PredictBandwidth(ctx, &seedpb.BandwidthRequest{VmId: "v", HistoricalMetrics: window()}); err == nil {
		t.Error("a call after exit was answered")
	}
	t.Logf("%d answered, %d refused after shutdown began", ok, refused)
	if _, err := http.Get("http://" + p.http + "/healthz"); err == nil {
		t.Error("HTTP still answers after exit")
	}
}
