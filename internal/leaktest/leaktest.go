// Package leaktest is the goroutine-leak check of the tests of every long-lived component (the
// batcher, the endpoint pool, a whole App): the goroutines a test started must be gone once it and
// its cleanups have returned. For tests only; no package of the sidecar's imports it.
package leaktest

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// Wait bounds the wait for goroutines that are exiting when the check runs: a bound on a
// goroutine that never exits, not a speed (they are normally gone at once).
const Wait = 5 * time.Second

// Goroutines returns the stack of every goroutine now running, by goroutine id (ids are never
// reused).
func Goroutines() map[int64]string {
	buf := make([]byte, 64<<10)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	all := map[int64]string{}
	for _, g := range strings.Split(strings.TrimSpace(string(buf)), "\n\n") {
		var id int64
		if _, err := fmt.Sscanf(g, "goroutine %d ", &id); err == nil {
			all[id] = g
		}
	}
	return all
}

// LeakedSince returns the stacks of the goroutines running now that were not in before, except
// the runtime's and package testing's own, waiting up to wait for them to exit (0: one look).
func LeakedSince(before map[int64]string, wait time.Duration) []string {
	deadline := time.Now().Add(wait)
	for {
		var left []string
		for id, g := range Goroutines() {
			if _, ok := before[id]; !ok && !runtimeOrTesting(g) {
				left = append(left, g)
			}
		}
		if len(left) == 0 || !time.Now().Before(deadline) {
			slices.Sort(left)
			return left
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runtimeOrTesting reports whether every function of stack g, and the one that created it, is
// in package runtime or package testing.
func runtimeOrTesting(g string) bool {
	for _, line := range strings.Split(g, "\n")[1:] {
		if line == "" || strings.HasPrefix(line, "\t") || strings.HasPrefix(line, "...") {
			continue // a file:line, or "...additional frames elided..."
		}
		fn := strings.TrimPrefix(line, "created by ")
		if !strings.HasPrefix(fn, "runtime.") && !strings.HasPrefix(fn, "testing.") {
			return false
		}
	}
	return true
}

// Check fails t if goroutines started from now on are still running once the test and the
// cleanups registered after this call have returned. Call it first in the test.
func Check(t testing.TB) {
	t.Helper()
	before := Goroutines()
	t.Cleanup(func() {
		if left := LeakedSince(before, Wait); len(left) > 0 {
			t.Errorf("%d goroutine(s) started by the test still running %v after it ended:\n\n%s",
				len(left), Wait, strings.Join(left, "\n\n"))
		}
	})
}
