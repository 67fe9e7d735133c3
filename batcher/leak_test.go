package batcher

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/novacron/sidecar/internal/leaktest"
)

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
	leaktest.Check(t)
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
	before := leaktest.Goroutines()
	b, err := New(Config{MaxInflightBatches: 2}, func(_ context.Context, rows []int) ([]int, error) { return rows, nil })
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for deadline := time.Now().Add(leaktest.Wait); time.Now().Before(deadline); runtime.Gosched() {
		// New goroutines show their own functions once they have run.
		if left = leaktest.LeakedSince(before, 0); len(left) == 3 && strings.Contains(strings.Join(left, "\n"), ").dispatch(") {
			break
		}
	}
	b.Close()
	if len(left) != 3 || !strings.Contains(strings.Join(left, "\n"), ").dispatch(") {
		t.Errorf("an open batcher with 2 workers: the check saw %d goroutines, want its dispatcher and 2 workers:\n\n%s",
			len(left), strings.Join(left, "\n\n"))
	}
	if left := leaktest.LeakedSince(before, leaktest.Wait); len(left) > 0 {
		t.Errorf("after Close: %d goroutines left:\n\n%s", len(left), strings.Join(left, "\n\n"))
	}
}
