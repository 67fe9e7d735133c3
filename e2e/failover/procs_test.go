// Package failover runs the backend pool against real upstream processes on loopback (sidecar
// processes serving the Open Inference Protocol and the seed's HTTP/JSON routes, and the seed's
// Python gRPC service) and breaks them while calls run: SIGKILL mid-load, added latency, errors
// half the time, malformed answers. The sidecar under test runs in this process, so the test can
// read its pools' state. CHAOS_DURATION (default 3s) sets how long each load runs; make chaos runs
// them longer and prints the summary table.
package failover

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/novacron/sidecar/config"
	"github.com/novacron/sidecar/examples"
	"github.com/novacron/sidecar/internal/app"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sidecar-failover")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "sidecar")
	progress("building the sidecar")
	build := exec.Command("go", "build", "-o", binary, "./cmd/sidecar")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		// Indented, so that make chaos's filter lets the compiler's messages through.
		fmt.Fprintf(os.Stderr, "FAIL: building the sidecar: %v\n    %s\n", err, strings.ReplaceAll(strings.TrimSpace(string(out)), "\n", "\n    "))
		os.Exit(1)
	}
	progress("built; each load runs %s", os.Getenv("CHAOS_DURATION"))
	code := m.Run()
	printSummary()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is an upstream process. Its stdin is a pipe that the test holds open: the Python server
// exits when it closes, so a killed test never leaves it running.
type proc struct {
	cmd   *exec.Cmd
	addrs []string
	out   *strings.Builder
	mu    sync.Mutex
	done  chan struct{}
	stdin io.Closer
}

// start runs a command and waits for a line of its stdout to match re; the submatches are the
// process's addresses.
func start(t *testing.T, re *regexp.Regexp, name string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = filepath.Join("..", "..") // the repository: the ONNX Runtime cache, examples/
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, out: &strings.Builder{}, done: make(chan struct{}), stdin: stdin}
	cmd.Stderr = writerFunc(func(b []byte) (int, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.out.Write(b)
	})
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	found := make(chan []string, 1)
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1:]:
				default:
				}
			}
		}
		io.Copy(io.Discard, stdout)
		cmd.Wait()
	}()
	t.Cleanup(p.kill)
	select {
	case p.addrs = <-found:
	case <-p.done:
		t.Fatalf("%s exited before serving:\n%s", name, p.log())
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not serve within 60s:\n%s", name, p.log())
	}
	return p
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

func (p *proc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.stdin.Close()
	<-p.done
}

var servingRE = regexp.MustCompile(`sidecar: serving grpc=(\S+) http=(\S+)`)

// upstreamSidecar starts the sidecar binary with its embedded default models.
func upstreamSidecar(t *testing.T) (grpcAddr, httpAddr string, p *proc) {
	p = start(t, servingRE, binary, "serve", "-grpc", "127.0.0.1:0", "-http", "127.0.0.1:0")
	return p.addrs[0], p.addrs[1], p
}

var pythonRE = regexp.MustCompile(`listening on (\S+)`)

// seedServer starts the seed's Python gRPC service (examples/legacy/seed_server.py) with Debian's
// interpreter; port 0 picks a free port.
func seedServer(t *testing.T, port string, flags ...string) (string, *proc) {
	t.Helper()
	const python = "/usr/bin/python3"
	if out, err := exec.Command(python, "-c", "import grpc, google.protobuf").CombinedOutput(); err != nil {
		t.Fatalf("%s cannot import grpc (%v: %s); run scripts/ensure-python-grpc.sh (make test does)", python, err, out)
	}
	p := start(t, pythonRE, python, append([]string{"examples/legacy/seed_server.py", "--port", port}, flags...)...)
	return p.addrs[0], p
}

// downstream starts the sidecar under test in this process from a YAML config.
func downstream(t *testing.T, yaml string) *app.App {
	t.Helper()
	cfg, err := config.Parse("failover-test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.Start(context.Background(), cfg, examples.FS, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return a
}

// chaosDuration is how long each load runs: CHAOS_DURATION, default 3s.
func chaosDuration(t *testing.T) time.Duration {
	if s := os.Getenv("CHAOS_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < time.Second {
			t.Fatalf("CHAOS_DURATION=%q: want a duration of at least 1s", s)
		}
		return d
	}
	return 3 * time.Second
}
