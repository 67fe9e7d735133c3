package backends

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/novacron/sidecar/internal/leaktest"
)

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
	leaktest.Check(t)
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
	before := leaktest.Goroutines()
	p, err := NewPool(PoolConfig{Name: "open"}, []Member[*leakEndpoint]{{Name: "a", E: &leakEndpoint{}}})
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for deadline := time.Now().Add(leaktest.Wait); time.Now().Before(deadline); runtime.Gosched() {
		// A new goroutine shows its own functions once it has run.
		if left = leaktest.LeakedSince(before, 0); strings.Contains(strings.Join(left, "\n"), ").healthLoop(") {
			break
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(left, "\n"), ").healthLoop(") {
		t.Errorf("an open pool: the check did not see its health loop:\n\n%s", strings.Join(left, "\n\n"))
	}
	if left := leaktest.LeakedSince(before, leaktest.Wait); len(left) > 0 {
		t.Errorf("after Close: %d goroutines left:\n\n%s", len(left), strings.Join(left, "\n\n"))
	}
}
