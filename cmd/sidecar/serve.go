package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/novacron/sidecar/config"
	"github.com/novacron/sidecar/examples"
	"github.com/novacron/sidecar/internal/app"
)

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "config file (YAML); empty runs the embedded default: the three example models on 127.0.0.1")
	grpcAddr := fs.String("grpc", "", "override listen.grpc (host:port, or off)")
	httpAddr := fs.String("http", "", "override listen.http (host:port, or off)")
	lib := fs.String("onnxruntime", "", "override onnxruntime.library (path of libonnxruntime.so)")
	printConfig := fs.Bool("print-config", false, "print the effective config's source and exit")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	load := func() (*config.Config, error) {
		cfg, err := config.Load(*cfgPath, examples.FS)
		if err != nil {
			return nil, err
		}
		if *grpcAddr != "" {
			cfg.Listen.GRPC = *grpcAddr
		}
		if *httpAddr != "" {
			cfg.Listen.HTTP = *httpAddr
		}
		if *lib != "" {
			cfg.ONNXRuntime.Library = *lib
		}
		return cfg, cfg.Validate()
	}
	cfg, err := load()
	if err != nil {
		fmt.Fprintln(stderr, "sidecar: config:", err)
		return 1
	}
	if *printConfig {
		fmt.Fprintf(stdout, "config %s: grpc %s, http %s, %d models\n", cfg.Source, cfg.Listen.GRPC, cfg.Listen.HTTP, len(cfg.Models))
		return 0
	}
	fmt.Fprintf(stderr, "sidecar: config %s\n", cfg.Source)
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "sidecar: -cpuprofile:", err)
			return 1
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "sidecar: -cpuprofile:", err)
			return 1
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
			fmt.Fprintln(stderr, "sidecar: CPU profile written to", *cpuProfile)
		}()
	}
	// SIGHUP reloads the config file (see App.Reload); a bad one is reported and the running
	// config stays. Caught from here on, so that one sent while models load does not kill us.
	// Reloads run beside this loop, which stays free for SIGTERM, one at a time: SIGHUPs that come
	// during one ask for one more run after it (however many came; it reads the file then).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	a, err := app.Start(ctx, cfg, examples.FS, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "sidecar:", err)
		return 1
	}
	fmt.Fprintf(stdout, "sidecar: serving grpc=%s http=%s\n", orOff(a.GRPCAddr), orOff(a.HTTPAddr))
	// The loop owns the reload goroutine (at most one): reloading says it runs, again that a
	// SIGHUP came during it, and reloaded receives its end.
	reloading, again := false, false
	reloaded := make(chan struct{}, 1)
	reload := func() {
		reloading = true
		fmt.Fprintf(stderr, "sidecar: SIGHUP: reloading %s\n", cfg.Source)
		go func() {
			defer func() { reloaded <- struct{}{} }()
			next, err := load()
			if err == nil {
				// Not cancelled by ctx: Shutdown, which follows ctx's end at once, cancels it,
				// and the error then says why.
				err = a.Reload(context.WithoutCancel(ctx), next)
			}
			if err != nil {
				fmt.Fprintln(stderr, "sidecar: reload:", err)
			}
		}()
	}
	code := 0
wait:
	for {
		select {
		case <-hup:
			switch {
			case !reloading:
				reload()
			case !again:
				again = true
				fmt.Fprintln(stderr, "sidecar: SIGHUP during a reload: another reload will follow it")
			default:
				fmt.Fprintln(stderr, "sidecar: SIGHUP during a reload: a reload already waits to follow it")
			}
		case <-reloaded:
			reloading = false
			if again {
				again = false
				reload()
			}
		case <-ctx.Done():
			fmt.Fprintln(stderr, "sidecar: shutting down: draining in-flight calls")
			break wait
		case err := <-a.Err():
			fmt.Fprintln(stderr, "sidecar:", err)
			code = 1
			break wait
		}
	}
	if again {
		fmt.Fprintln(stderr, "sidecar: shutting down: the reload waiting to follow the running one is dropped")
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	if err := a.Shutdown(sctx); err != nil { // cancels a reload in progress
		fmt.Fprintln(stderr, "sidecar: shutdown:", err)
		code = 1
	}
	if reloading {
		select {
		case <-reloaded: // at once, unless Shutdown abandoned the reload
		case <-sctx.Done():
		}
	}
	fmt.Fprintln(stderr, "sidecar: stopped")
	return code
}

func orOff(addr string) string {
	if addr == "" {
		return "off"
	}
	return addr
}
