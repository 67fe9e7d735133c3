package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/novacron/sidecar/internal/bench"
)

func TestBenchFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "-only", "floor,nope"}, `unknown scenario "nope"`},
		{[]string{"bench", "-duration", "0s"}, "-duration must be positive"},
		{[]string{"bench", "-concurrency", "0"}, "-concurrency must be at least 1"},
		{[]string{"bench", "-concurrency", "5000"}, "concurrency: 5000 is not in 1..4096"},
		{[]string{"bench", "-rate", "-1"}, "-rate must not be negative"},
		{[]string{"bench", "extra"}, "unexpected arguments"},
	} {
		if code, _, errs := runArgs(tc.args...); code != 2 || !strings.Contains(errs, tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", tc.args, code, errs, tc.want)
		}
	}
	if _, out, _ := runArgs("help"); !strings.Contains(out, "bench ") || strings.Contains(out, "bench-noop") {
		t.Errorf("usage should list bench and hide bench-noop: %q", out)
	}
}

// TestBenchNotInChild: a server the bench started never runs a bench itself (were the command a test
// binary, it would otherwise start benches recursively).
func TestBenchNotInChild(t *testing.T) {
	t.Setenv(bench.ChildEnv, "1")
	if code, _, errs := runArgs("bench", "-only", "floor", "-duration", "100ms"); code != 1 || !strings.Contains(errs, bench.ChildEnv) {
		t.Errorf("exit %d, stderr %q", code, errs)
	}
}

// TestBenchNoop: the floor server the bench starts binds loopback ports, says where, and stops
// when its context ends.
func TestBenchNoop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // serve nothing: bind, announce, stop
	var out, errb bytes.Buffer
	if code := run(ctx, []string{"bench-noop", "-grpc", "127.0.0.1:0", "-http", "127.0.0.1:0"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.HasPrefix(out.String(), "bench-noop: serving grpc=127.0.0.1:") || !strings.Contains(out.String(), " http=127.0.0.1:") {
		t.Errorf("stdout %q", out.String())
	}
	if code := run(context.Background(), []string{"bench-noop", "-grpc", "256.0.0.1:1"}, &out, &errb); code != 1 {
		t.Errorf("bad address: exit %d", code)
	}
}
