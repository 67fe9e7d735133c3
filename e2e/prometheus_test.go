package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPrometheusRules checks examples/prometheus/rules.yml with `promtool check rules` and runs its
// unit tests, examples/prometheus/rules_test.yml, with `promtool test rules`, from the repository's
// root (the test file names rules.yml relative to itself).
//
// promtool comes from $PROMTOOL (make test sets it from scripts/ensure-promtool.sh), PATH, or
// /usr/bin/promtool (Debian's prometheus package); without one the test fails, saying how to
// install it.
func TestPrometheusRules(t *testing.T) {
	promtool := findPromtool(t)
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"check", "rules", "examples/prometheus/rules.yml"},
		{"test", "rules", "examples/prometheus/rules_test.yml"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, promtool, args...)
		cmd.Dir = root
		cmd.WaitDelay = 5 * time.Second
		out, err := cmd.CombinedOutput()
		timedOut := errors.Is(ctx.Err(), context.DeadlineExceeded)
		cancel()
		line := "promtool " + strings.Join(args, " ")
		switch {
		case timedOut:
			t.Errorf("%s: no result within a minute:\n%s", line, out)
		case err != nil:
			t.Errorf("%s: %v:\n%s", line, err, out)
		default:
			t.Logf("%s:\n%s", line, strings.TrimSpace(string(out)))
		}
	}
}

// findPromtool: $PROMTOOL, else promtool on PATH, else /usr/bin/promtool.
func findPromtool(t *testing.T) string {
	t.Helper()
	const howto = "run scripts/ensure-promtool.sh (make test does; as root it installs Debian's prometheus package), or install Prometheus's promtool yourself and set PROMTOOL to it"
	if p := os.Getenv("PROMTOOL"); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		if st, err := os.Stat(abs); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			t.Fatalf("PROMTOOL=%s is not an executable file; %s", p, howto)
		}
		return abs
	}
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	if st, err := os.Stat("/usr/bin/promtool"); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
		return "/usr/bin/promtool"
	}
	t.Fatalf("promtool not found (not in $PROMTOOL, on PATH or at /usr/bin/promtool); %s", howto)
	return ""
}
