package batcher

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
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

// holdingRun is a batch function that answers each row with itself, fails a batch with a row -2,
// and holds a batch with a row -1: it sends on started, then waits for release to be closed.
func holdingRun(started, release chan struct{}) RunFunc[int, int] {
	return func(_ context.Context, rows []int) ([]int, error) {
		if slices.Contains(rows, -1) {
			started <- struct{}{}
			<-release
		}
		if slices.Contains(rows, -2) {
			return nil, errors.New("failed batch")
		}
		return rows, nil
	}
}

// exercise runs calls through b (made with holdingRun(started, release)): one cancelled while a
// batch holds (it waits in the queue, or runs beside the held batch when the config lets it),
// then concurrent ones at both priorities, one of whose batches fails.
func exercise(t *testing.T, b *Batcher[int, int], started, release chan struct{}) {
	t.Helper()
	held := make(chan error, 1)
	go func() {
		_, err := b.Do(context.Background(), []int{-1}, 0)
		held <- err
	}()
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	cancelled := make(chan error, 1)
	go func() {
		_, err := b.Do(ctx, []int{1}, 0)
		cancelled <- err
	}()
	cancel()
	if err := <-cancelled; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled call: %v", err)
	}
	close(release)
	if err := <-held; err != nil {
		t.Errorf("held call: %v", err)
	}
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			rows := []int{g, g + 1, g + 2}
			if g == 7 {
				rows = []int{-2} // fails its batch
			}
			// Calls in the failing batch fail with it.
			_, err := b.Do(context.Background(), rows, g%2)
			if (err == nil && g == 7) || (err != nil && err.Error() != "failed batch") {
				t.Errorf("call %d: %v", g, err)
			}
		})
	}
	wg.Wait()
}

// TestBatcherLeavesNoGoroutine: batchers of several configurations, each started, used and
// closed, leave no goroutine running.
func TestBatcherLeavesNoGoroutine(t *testing.T) {
	checkNoLeaks(t)
	for i, cfg := range []Config{
		{MaxBatchSize: 4},
		{MaxBatchSize: 8, MaxQueueDelay: time.Millisecond, MaxInflightBatches: 3, Overlap: true, DefaultTimeout: time.Minute},
		{MaxBatchSize: 8, MaxQueueDelay: time.Millisecond, MaxInflightBatches: 2, Adaptive: true, Priorities: 4},
	} {
		started, release := make(chan struct{}), make(chan struct{})
		b, err := New(cfg, holdingRun(started, release))
		if err != nil {
			t.Fatalf("config %d: %v", i, err)
		}
		exercise(t, b, started, release)
		b.Close()
		if _, err := b.Do(context.Background(), []int{1}, 0); !errors.Is(err, ErrClosed) {
			t.Errorf("config %d: after Close: %v, want ErrClosed", i, err)
		}
	}
}

// TestLeakCheckSeesAnOpenBatcher shows the check above can fail: a batcher not yet closed is
// reported, by its dispatcher's stack; once closed, nothing is.
func TestLeakCheckSeesAnOpenBatcher(t *testing.T) {
	before := goroutines()
	b, err := New(Config{MaxInflightBatches: 2}, func(_ context.Context, rows []int) ([]int, error) { return rows, nil })
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for deadline := time.Now().Add(leakWait); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		// New goroutines show their own functions once they have run.
		if left = leakedSince(before, 0); len(left) == 3 && strings.Contains(strings.Join(left, "\n"), ").dispatch(") {
			break
		}
	}
	b.Close()
	if len(left) != 3 || !strings.Contains(strings.Join(left, "\n"), ").dispatch(") {
		t.Errorf("an open batcher with 2 workers: the check saw %d goroutines, want its dispatcher and 2 workers:\n\n%s",
			len(left), strings.Join(left, "\n\n"))
	}
	if left := leakedSince(before, leakWait); len(left) > 0 {
		t.Errorf("after Close: %d goroutines left:\n\n%s", len(left), strings.Join(left, "\n\n"))
	}
}
