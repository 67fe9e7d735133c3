package main

// The child-process handling of examples/migration (procs.go there), without the seed service:
// the demo starts one child, the sidecar.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// line is one line a child process wrote, with when the demo read it.
type line struct {
	at   time.Time
	text string
}

// lines collects a child's output, line by line. Its methods may be called concurrently.
type lines struct {
	// mu guards all and partial.
	mu      sync.Mutex
	all     []line
	partial []byte
	// added gets a value (without blocking) after each line is added.
	added chan struct{}
}

func newLines() *lines { return &lines{added: make(chan struct{}, 1)} }

// Write splits b into lines (what exec.Cmd's Stdout and Stderr take).
func (l *lines) Write(b []byte) (int, error) {
	l.mu.Lock()
	l.partial = append(l.partial, b...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.all = append(l.all, line{time.Now(), string(l.partial[:i])})
		l.partial = l.partial[i+1:]
	}
	l.mu.Unlock()
	select {
	case l.added <- struct{}{}:
	default:
	}
	return len(b), nil
}

// snapshot returns the lines so far.
func (l *lines) snapshot() []line {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]line(nil), l.all...)
}

// tail returns the last n lines, as text.
func (l *lines) tail(n int) string {
	all := l.snapshot()
	if len(all) > n {
		all = all[len(all)-n:]
	}
	var b strings.Builder
	for _, ln := range all {
		b.WriteString(ln.text)
		b.WriteByte('\n')
	}
	return b.String()
}

// proc is a child process of the demo. stop ends it whatever happens and waits for it.
type proc struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr *lines
	// done is closed once the child has exited; err is its exit then.
	done chan struct{}
	err  error
	stop func()
}

// start runs name with args. The child gets SIGKILL if the demo dies first (Linux), and stop
// ends it: on stopSig with grace to exit, then by SIGKILL.
func start(label string, stopSig os.Signal, grace time.Duration, name string, args ...string) (*proc, error) {
	cmd := exec.Command(name, args...)
	dieWithParent(cmd)
	p := &proc{name: label, cmd: cmd, stdout: newLines(), stderr: newLines(), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	cmd.WaitDelay = 2 * time.Second // a grandchild holding the pipes does not hold Wait
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", label, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	var once sync.Once
	p.stop = func() {
		once.Do(func() {
			if stopSig != nil {
				cmd.Process.Signal(stopSig)
			}
			select {
			case <-p.done:
			case <-time.After(grace):
				cmd.Process.Kill()
				<-p.done
			}
		})
	}
	return p, nil
}

// exited says how the child ended, or "" while it runs.
func (p *proc) exited() string {
	select {
	case <-p.done:
		if p.err == nil {
			return "exited"
		}
		return p.err.Error()
	default:
		return ""
	}
}

// await waits, at most bound, until each pattern matches a line of src (stdout or stderr), and
// returns each one's submatches. It fails at once if the child exits first.
func (p *proc) await(ctx context.Context, bound time.Duration, src *lines, patterns ...*regexp.Regexp) ([][]string, error) {
	timer := time.NewTimer(bound)
	defer timer.Stop()
	for {
		got, missing := make([][]string, len(patterns)), ""
		for i, re := range patterns {
			for _, ln := range src.snapshot() {
				if m := re.FindStringSubmatch(ln.text); m != nil {
					got[i] = m
					break
				}
			}
			if got[i] == nil && missing == "" {
				missing = re.String()
			}
		}
		if missing == "" {
			return got, nil
		}
		select {
		case <-src.added:
		case <-p.done:
			return nil, fmt.Errorf("%s %s before printing %q; its stderr:\n%s", p.name, p.exited(), missing, p.stderr.tail(30))
		case <-timer.C:
			return nil, fmt.Errorf("%s did not print %q within %v; its stderr:\n%s", p.name, missing, bound, p.stderr.tail(30))
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for %s to print %q: %w", p.name, missing, context.Cause(ctx))
		}
	}
}

// servingRE is serve's first line on stdout (the e2e tests match it too).
var servingRE = regexp.MustCompile(`^sidecar: serving grpc=(\S+) http=(\S+)`)

// startSidecar runs bin serve -config cfg and returns its gRPC and HTTP addresses.
func startSidecar(ctx context.Context, bin, cfg, lib string) (p *proc, grpcAddr, httpAddr string, err error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, "", "", fmt.Errorf("the sidecar binary: %w (go build -o bin/sidecar ./cmd/sidecar, or pass -sidecar)", err)
	}
	args := []string{"serve", "-config", cfg}
	if lib != "" {
		args = append(args, "-onnxruntime", lib)
	}
	// SIGTERM drains in-flight calls (shutdown_timeout, 10s by default).
	p, err = start("the sidecar", syscall.SIGTERM, 15*time.Second, bin, args...)
	if err != nil {
		return nil, "", "", err
	}
	m, err := p.await(ctx, 60*time.Second, p.stdout, servingRE)
	if err != nil {
		p.stop()
		return nil, "", "", err
	}
	if m[0][2] == "off" {
		p.stop()
		return nil, "", "", fmt.Errorf("the sidecar serves no HTTP port: the config must set listen.http")
	}
	return p, m[0][1], m[0][2], nil
}
