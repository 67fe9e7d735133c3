package e2e

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMigrationDemo runs the migration demo (examples/migration, what make demo-migration runs)
// in its quick form against the built binary: the seed's Python service and the sidecar as real
// processes, the HTTP-to-gRPC migration through every stage to done, then the migration to the
// ONNX model rolled back by its disagreement gate, and no call failed. Afterwards neither process
// the demo started is left.
func TestMigrationDemo(t *testing.T) {
	began := time.Now()
	demo := filepath.Join(t.TempDir(), "migration-demo")
	build := exec.Command("go", "build", "-o", demo, "./examples/migration")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the demo: %v\n%s", err, out)
	}
	built := time.Since(began)

	// The demo bounds itself (-deadline); ctx bounds it again, should it hang: SIGTERM (the demo
	// then stops what it started), and SIGKILL 20s later (the kernel then kills the sidecar, and
	// the seed service sees its stdin close).
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, demo, "-sidecar", binary, "-quick", "-deadline", "100s")
	cmd.Dir = ".." // the repository: the seed service's script, the ONNX Runtime cache
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 20 * time.Second
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	t.Logf("the demo took %v (and %v to build)", time.Since(began)-built, built.Round(time.Millisecond))
	if err != nil || ctx.Err() != nil {
		t.Fatalf("the demo: %v (ctx: %v)\n%s", err, ctx.Err(), out.String())
	}
	text := out.String()
	for _, want := range []string{
		"\nhttp-to-grpc (bandwidth-http -> bandwidth-grpc): done after ",
		"  stage 5/5: split 100%, shadow 20%",
		"http-to-grpc (bandwidth-http -> bandwidth-grpc): done: bandwidth-grpc serves the route alone",
		"\ngrpc-to-onnx (bandwidth-grpc -> bandwidth): rolled_back after ",
		"grpc-to-onnx (bandwidth-grpc -> bandwidth): rolled back: disagreement: ",
		"kept for route predict_bandwidth, newest first",
		"\nPASS: ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("no %q in the demo's output:\n%s", want, text)
		}
	}
	if regexp.MustCompile(`(?m)^http-to-grpc .*; \d+ calls, [1-9]\d* failed`).MatchString(text) ||
		regexp.MustCompile(`(?m)^grpc-to-onnx .*; \d+ calls, [1-9]\d* failed`).MatchString(text) {
		t.Errorf("calls failed:\n%s", text)
	}

	// Nothing left behind: no process runs the demo's config, and the seed service's port is
	// closed.
	if m := regexp.MustCompile(`config (/\S+/sidecar\.yaml)`).FindStringSubmatch(text); m == nil {
		t.Errorf("the demo did not print its config's path:\n%s", text)
	} else if pids := processesWith(t, m[1]); len(pids) > 0 {
		t.Errorf("processes %v still run with %s", pids, m[1])
	}
	if m := regexp.MustCompile(`the seed's Python service: gRPC (\S+),`).FindStringSubmatch(text); m == nil {
		t.Errorf("the demo did not print the seed service's address:\n%s", text)
	} else if c, err := net.DialTimeout("tcp", m[1], time.Second); err == nil {
		c.Close()
		t.Errorf("the seed service still listens on %s", m[1])
	}
}

// processesWith lists the processes whose command line contains s (none where /proc is not).
func processesWith(t *testing.T, s string) []string {
	t.Helper()
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var pids []string
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err == nil && strings.Contains(string(b), s) {
			pids = append(pids, filepath.Base(filepath.Dir(f)))
		}
	}
	return pids
}
