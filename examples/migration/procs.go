package main

// The demo's two children, the seed service and the sidecar (demoproc runs them).

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"syscall"
	"time"

	"github.com/novacron/sidecar/examples/internal/demoproc"
)

// childEnv is added to the environment of both children: no __pycache__ in the source tree.
var childEnv = []string{"PYTHONDONTWRITEBYTECODE=1"}

var (
	seedGRPCRE = regexp.MustCompile(`^listening on (\S+)$`)
	seedHTTPRE = regexp.MustCompile(`^http listening on (\S+)$`)
	// servingRE is serve's first line on stdout (the e2e tests match it too); adminRE its log line.
	servingRE = regexp.MustCompile(`^sidecar: serving grpc=(\S+) http=\S+`)
	adminRE   = regexp.MustCompile(`^admin API on (\S+)$`)
)

// startSeed runs the seed's Python service on free loopback ports, both protocols; it stops when
// its stdin closes (Stop, or the demo's death).
func startSeed(ctx context.Context, python, script string) (p *demoproc.Proc, grpcAddr, httpAddr string, err error) {
	if _, err := os.Stat(script); err != nil {
		return nil, "", "", fmt.Errorf("the seed service: %w (run the demo from the repository's root, or pass -seed)", err)
	}
	if out, err := exec.CommandContext(ctx, python, "-c", "import grpc, google.protobuf").CombinedOutput(); err != nil {
		return nil, "", "", fmt.Errorf("%s cannot import grpc and google.protobuf (%v: %s): run scripts/ensure-python-grpc.sh", python, err, bytes.TrimSpace(out))
	}
	p, err = demoproc.Start("the seed service", demoproc.Options{Stdin: true, Grace: 5 * time.Second, Env: childEnv},
		python, script, "--port", "0", "--http-port", "0")
	if err != nil {
		return nil, "", "", err
	}
	m, err := p.Await(ctx, 30*time.Second, p.Stdout, seedGRPCRE, seedHTTPRE)
	if err != nil {
		p.Stop()
		return nil, "", "", err
	}
	return p, m[0][1], m[1][1], nil
}

// startSidecar runs bin serve -config cfg and returns its gRPC and admin addresses.
func startSidecar(ctx context.Context, bin, cfg, lib string) (p *demoproc.Proc, grpcAddr, adminAddr string, err error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, "", "", fmt.Errorf("the sidecar binary: %w (go build -o bin/sidecar ./cmd/sidecar, or pass -sidecar)", err)
	}
	args := []string{"serve", "-config", cfg}
	if lib != "" {
		args = append(args, "-onnxruntime", lib)
	}
	// SIGTERM drains in-flight calls (shutdown_timeout, 10s by default).
	p, err = demoproc.Start("the sidecar", demoproc.Options{StopSignal: syscall.SIGTERM, Grace: 15 * time.Second, Env: childEnv}, bin, args...)
	if err != nil {
		return nil, "", "", err
	}
	// The admin address is logged (stderr) before serve's line on stdout.
	a, err := p.Await(ctx, 60*time.Second, p.Stderr, adminRE)
	if err == nil {
		var g [][]string
		if g, err = p.Await(ctx, 60*time.Second, p.Stdout, servingRE); err == nil {
			return p, g[0][1], a[0][1], nil
		}
	}
	p.Stop()
	return nil, "", "", err
}
