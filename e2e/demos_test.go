package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runDemo builds examples/NAME and runs it in its quick form against the built binary, from the
// repository (the demos' files, the ONNX Runtime cache), and returns its output; it fails the test
// unless the demo exits 0. The demo bounds itself (-deadline); timeout bounds it again, should it
// hang: SIGTERM (the demo then stops what it started), and SIGKILL 20s later (the kernel then
// kills the sidecar, and a seed service sees its stdin close).
func runDemo(t *testing.T, name string, timeout time.Duration, deadline string) string {
	t.Helper()
	began := time.Now()
	demo := filepath.Join(t.TempDir(), name+"-demo")
	build := exec.Command("go", "build", "-o", demo, "./examples/"+name)
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the demo: %v\n%s", err, out)
	}
	built := time.Since(began)

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, demo, "-sidecar", binary, "-quick", "-deadline", deadline)
	cmd.Dir = ".."
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 20 * time.Second
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	t.Logf("the demo took %v (and %v to build)", time.Since(began)-built, built.Round(time.Millisecond))
	if err != nil || ctx.Err() != nil {
		t.Fatalf("the demo: %v (ctx: %v)\n%s", err, ctx.Err(), out.String())
	}
	return out.String()
}

// noSidecarLeft fails the test if a process still runs the config whose path the demo printed.
func noSidecarLeft(t *testing.T, text string) {
	t.Helper()
	if m := regexp.MustCompile(`config (/\S+/sidecar\.yaml)`).FindStringSubmatch(text); m == nil {
		t.Errorf("the demo did not print its config's path:\n%s", text)
	} else if pids := processesWith(t, m[1]); len(pids) > 0 {
		t.Errorf("processes %v still run with %s", pids, m[1])
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
