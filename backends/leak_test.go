package backends

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The goroutine-leak check. Each package with a long-lived component has its own copy of these
// few functions (batcher, backends, internal/app): test files cannot share code across packages,
// and a shared test-only package is not worth a new import for them.

// leakWait bounds the wait for goroutines that are exiting when the check runs: a bound on a
// goroutine that never exits, not a speed (they are normally gone at once).
const leakWait = 5 * time.Second

// goroutines returns the stack of every goroutine now running, by goroutine id (ids are never
// reused).
func goroutines() map[int64]string {
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

// leakedSince returns the stacks of the goroutines running now that were not in before, except
// the runtime's and package testing's own, waiting up to wait for them to exit (0: one look).
func leakedSince(before map[int64]string, wait time.Duration) []string {
	deadline := time.Now().Add(wait)
	for {
		var left []string
		for id, g := range goroutines() {
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

// checkNoLeaks fails t if goroutines started from now on are still running once the test and the
// cleanups registered after this call have returned. Call it first in the test.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	before := goroutines()
	t.Cleanup(func() {
		if left := leakedSince(before, leakWait); len(left) > 0 {
			t.Errorf("%d goroutine(s) started by the test still running %v after it ended:\n\n%s",
				len(left), leakWait, strings.Join(left, "\n\n"))
		}
	})
}

// leakEndpoint is an endpoint for the leak tests: a slow one's calls take 20ms and ignore their
// ctx (so a hedge's loser outlives its call), a failing one's fail, a hanging one's health checks
// wait for their ctx.
type leakEndpoint struct {
	slow, failing, hanging bool
	closes                 atomic.Int32
}

func (e *leakEndpoint) call(ctx context.Context) error {
	switch {
	case e.slow:
		time.Sleep(20 * time.Millisecond)
	case e.failing:
		return ErrUnavailable
	}
	return ctx.Err()
}

func (e *leakEndpoint) Ready(ctx context.Context) error {
	if e.hanging {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func (e *leakEndpoint) Close() error {
	e.closes.Add(1)
	return nil
}

// TestPoolLeavesNoGoroutine: pools started, used (hedged calls whose losers outlive them,
// retries, health checks that time out, an Update that replaces and removes members) and closed,
// several times, leave no goroutine running.
func TestPoolLeavesNoGoroutine(t *testing.T) {
	checkNoLeaks(t)
	for cycle := range 3 {
		a, b, c := &leakEndpoint{slow: true}, &leakEndpoint{failing: true}, &leakEndpoint{hanging: true}
		cfg := PoolConfig{Name: "leak", HedgeDelay: time.Millisecond, MinRetriesPerSecond: 1000,
			HealthInterval: time.Millisecond, HealthTimeout: time.Millisecond}
		p, err := NewPool(cfg, []Member[*leakEndpoint]{{Name: "a", E: a}, {Name: "b", E: b}, {Name: "c", E: c}})
		if err != nil {
			t.Fatal(err)
		}
		calls := func() {
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					for range 10 {
						err := p.Do(context.Background(), func(ctx context.Context, e *leakEndpoint) error { return e.call(ctx) })
						if err != nil && !errors.Is(err, ErrUnavailable) {
							t.Errorf("cycle %d: %v", cycle, err)
						}
					}
				})
			}
			wg.Wait()
		}
		calls()
		d := &leakEndpoint{}
		cfg.HealthInterval = 2 * time.Millisecond
		if err := p.Update(cfg, []Member[*leakEndpoint]{{Name: "a", E: a}, {Name: "b", E: d}}); err != nil {
			t.Fatal(err)
		}
		calls()
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if err := p.Do(context.Background(), func(ctx context.Context, e *leakEndpoint) error { return nil }); !errors.Is(err, ErrUnavailable) {
			t.Errorf("cycle %d: a call after Close: %v, want ErrUnavailable", cycle, err)
		}
		for name, e := range map[string]*leakEndpoint{"a": a, "b": b, "c": c, "b's successor": d} {
			if n := e.closes.Load(); n != 1 {
				t.Errorf("cycle %d: endpoint %s closed %d times, want once", cycle, name, n)
			}
		}
	}
}

// TestLeakCheckSeesAnOpenPool shows the check above can fail: a pool not yet closed is reported,
// by its health loop's stack; once closed, nothing is.
func TestLeakCheckSeesAnOpenPool(t *testing.T) {
	before := goroutines()
	p, err := NewPool(PoolConfig{Name: "open"}, []Member[*leakEndpoint]{{Name: "a", E: &leakEndpoint{}}})
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for deadline := time.Now().Add(leakWait); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		// A new goroutine shows its own functions once it has run.
		if left = leakedSince(before, 0); strings.Contains(strings.Join(left, "\n"), ").healthLoop(") {
			break
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(left, "\n"), ").healthLoop(") {
		t.Errorf("an open pool: the check did not see its health loop:\n\n%s", strings.Join(left, "\n\n"))
	}
	if left := leakedSince(before, leakWait); len(left) > 0 {
		t.Errorf("after Close: %d goroutines left:\n\n%s", len(left), strings.Join(left, "\n\n"))
	}
}
