package main

// The demo's one child, the sidecar (demoproc runs it; examples/migration starts the seed service
// too).

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"syscall"
	"time"

	"github.com/novacron/sidecar/examples/internal/demoproc"
)

// servingRE is serve's first line on stdout (the e2e tests match it too).
var servingRE = regexp.MustCompile(`^sidecar: serving grpc=(\S+) http=(\S+)`)

// startSidecar runs bin serve -config cfg and returns its gRPC and HTTP addresses.
func startSidecar(ctx context.Context, bin, cfg, lib string) (p *demoproc.Proc, grpcAddr, httpAddr string, err error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, "", "", fmt.Errorf("the sidecar binary: %w (go build -o bin/sidecar ./cmd/sidecar, or pass -sidecar)", err)
	}
	args := []string{"serve", "-config", cfg}
	if lib != "" {
		args = append(args, "-onnxruntime", lib)
	}
	// SIGTERM drains in-flight calls (shutdown_timeout, 10s by default).
	p, err = demoproc.Start("the sidecar", demoproc.Options{StopSignal: syscall.SIGTERM, Grace: 15 * time.Second}, bin, args...)
	if err != nil {
		return nil, "", "", err
	}
	m, err := p.Await(ctx, 60*time.Second, p.Stdout, servingRE)
	if err != nil {
		p.Stop()
		return nil, "", "", err
	}
	if m[0][2] == "off" {
		p.Stop()
		return nil, "", "", fmt.Errorf("the sidecar serves no HTTP port: the config must set listen.http")
	}
	return p, m[0][1], m[0][2], nil
}
