package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/novacron/sidecar/examples"
	"github.com/novacron/sidecar/internal/bench"
)

func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	duration := fs.Duration("duration", 5*time.Second, "measured window of each scenario")
	warmup := fs.Duration("warmup", time.Second, "load before each window, not counted")
	repeat := fs.Int("repeat", 1, "rounds of the scenarios; each figure is the median of the rounds")
	concurrency := fs.Int("concurrency", 32, "callers of the unary scenarios (closed loop), or workers (open loop)")
	conns := fs.Int("conns", 1, "gRPC connections the callers share")
	batchVMs := fs.Int("batch-vms", 256, "VMs per PredictBandwidthBatch call (and rows per ceiling batch)")
	batchConcurrency := fs.Int("batch-concurrency", 4, "callers of the batch RPC")
	rate := fs.Float64("rate", 0, "if > 0: run the unary scenarios open loop at this many calls/s instead of closed loop")
	only := fs.String("only", "", "comma-separated scenarios to run (default all): "+strings.Join(bench.Scenarios(), ","))
	lib := fs.String("onnxruntime", "", "ONNX Runtime library (default $ONNXRUNTIME_LIB, then the repository cache)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: sidecar bench [flags]

Starts each server under test as its own process (a no-op gRPC + net/http server, then the sidecar
with several batching settings), drives it with the same client for a bounded time, and prints one
table: calls/s, p50/p99/p99.9 latency, the server's CPU seconds per 1000 calls and peak RSS, each as
a share of the no-op floor; then the batch RPC against ONNX Runtime run in this process. Progress
goes to stderr, the table to stdout.

Every scenario but cache-hit sends rows that differ on every call, and after each scenario the
sidecar's own sidecar_cache_hits_total is read: a scenario the prediction cache answered (any hit
outside cache-hit, or too few in it) is REFUSED in the table, and the run exits 1.

`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sidecar bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "sidecar bench:", err)
		return 1
	}
	cfg := bench.Config{
		Duration: *duration, Warmup: *warmup, Concurrency: *concurrency, Conns: *conns, Repeat: *repeat,
		BatchVMs: *batchVMs, BatchConcurrency: *batchConcurrency, Rate: *rate,
		Command: []string{exe}, Embedded: examples.FS, ONNXRuntime: *lib,
	}
	if *only != "" {
		for n := range strings.SplitSeq(*only, ",") {
			if n = strings.TrimSpace(n); n != "" {
				cfg.Only = append(cfg.Only, n)
			}
		}
	}
	// The flags say what they mean: zero is not "the default" here, as it is in bench.Config.
	for _, f := range []struct {
		msg string
		bad bool
	}{
		{"-duration must be positive", *duration <= 0},
		{"-warmup must not be negative", *warmup < 0},
		{"-repeat must be at least 1", *repeat < 1},
		{"-concurrency must be at least 1", *concurrency < 1},
		{"-conns must be at least 1", *conns < 1},
		{"-batch-vms must be at least 1", *batchVMs < 1},
		{"-batch-concurrency must be at least 1", *batchConcurrency < 1},
		{"-rate must not be negative", *rate < 0},
	} {
		if f.bad {
			fmt.Fprintln(stderr, "sidecar bench:", f.msg)
			return 2
		}
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "sidecar bench:", err)
		return 2
	}
	rep, err := bench.Run(ctx, cfg, stderr)
	if rep != nil && len(rep.Rows) > 0 {
		fmt.Fprintln(stdout)
		if werr := rep.WriteTable(stdout); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "sidecar bench:", err)
		return 1
	}
	return 0
}

// benchNoopCmd runs the bench's floor: a no-op AIService gRPC server and a no-op net/http handler
// for POST /api/v1/predict. It prints "bench-noop: serving grpc=ADDR http=ADDR" once listening.
func benchNoopCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench-noop", flag.ContinueOnError)
	fs.SetOutput(stderr)
	grpcAddr := fs.String("grpc", "127.0.0.1:0", "gRPC address")
	httpAddr := fs.String("http", "127.0.0.1:0", "HTTP address")
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	err := bench.ServeNoop(ctx, *grpcAddr, *httpAddr, func(g, h string) {
		fmt.Fprintf(stdout, "bench-noop: serving grpc=%s http=%s\n", g, h)
	})
	if err != nil {
		fmt.Fprintln(stderr, "sidecar bench-noop:", err)
		return 1
	}
	return 0
}
