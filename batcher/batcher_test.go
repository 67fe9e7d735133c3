package batcher

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// recorder is an Observer and a RunFunc source: it records batches and can hold them at a gate.
type recorder struct {
	mu       sync.Mutex
	batches  [][]int
	rejected []string
	cancels  int
	gate     chan struct{} // when not nil, each batch waits for a receive... of a close
	fail     func(rows []int) error
}

func (r *recorder) run(ctx context.Context, rows []int) ([]int, error) {
	if r.gate != nil {
		<-r.gate
	}
	r.mu.Lock()
	r.batches = append(r.batches, slices.Clone(rows))
	r.mu.Unlock()
	if r.fail != nil {
		if err := r.fail(rows); err != nil {
			return nil, err
		}
	}
	out := make([]int, len(rows))
	for i, x := range rows {
		out[i] = x*10 + 1
	}
	return out, nil
}

func (r *recorder) Batch(rows, calls int, wait, compute time.Duration, err error) {}
func (r *recorder) Rejected(reason string) {
	r.mu.Lock()
	r.rejected = append(r.rejected, reason)
	r.mu.Unlock()
}
func (r *recorder) Cancelled() { r.mu.Lock(); r.cancels++; r.mu.Unlock() }
func (r *recorder) Queue(int)  {}

func (r *recorder) sizes() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s []int
	for _, b := range r.batches {
		s = append(s, len(b))
	}
	return s
}

func newB(t *testing.T, cfg Config, r *recorder) *Batcher[int, int] {
	t.Helper()
	b, err := New(cfg, r.run, WithObserver(r))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func want(rows []int) []int {
	out := make([]int, len(rows))
	for i, x := range rows {
		out[i] = x*10 + 1
	}
	return out
}

// TestEachCallGetsItsOwnRows: many concurrent calls of different sizes; every caller gets exactly
// its outputs, in its order, and batches really formed.
func TestEachCallGetsItsOwnRows(t *testing.T) {
	r := &recorder{}
	b := newB(t, Config{MaxBatchSize: 32, MaxInflightBatches: 2}, r)
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for g := 0; g < 400; g++ {
		wg.Go(func() {
			rows := make([]int, 1+g%7)
			for i := range rows {
				rows[i] = g*100 + i
			}
			out, err := b.Do(context.Background(), rows, g%2)
			if err != nil || !slices.Equal(out, want(rows)) {
				errs <- fmt.Errorf("call %d: got %v %v, want %v", g, out, err, want(rows))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s := r.sizes(); slices.Max(s) < 2 {
		t.Errorf("no batch had more than one row: %v", s)
	}
}

// TestMixUpIsCaught shows the check above can fail: a batch function that swaps two rows' outputs
// is reported.
func TestMixUpIsCaught(t *testing.T) {
	swap := func(ctx context.Context, rows []int) ([]int, error) {
		out := want(rows)
		if len(out) > 1 {
			out[0], out[1] = out[1], out[0]
		}
		return out, nil
	}
	synctest.Test(t, func(t *testing.T) {
		b, _ := New(Config{MaxBatchSize: 8, MaxQueueDelay: time.Millisecond}, swap)
		defer b.Close()
		var wg sync.WaitGroup
		wrong := 0
		var mu sync.Mutex
		for g := 0; g < 4; g++ {
			wg.Go(func() {
				out, _ := b.Do(context.Background(), []int{g}, 0)
				if !slices.Equal(out, want([]int{g})) {
					mu.Lock()
					wrong++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if wrong == 0 {
			t.Error("a row swap went unnoticed")
		}
	})
}

func TestCallLargerThanMaxBatchIsSplit(t *testing.T) {
	r := &recorder{}
	b := newB(t, Config{MaxBatchSize: 64}, r)
	rows := make([]int, 150)
	for i := range rows {
		rows[i] = i
	}
	out, err := b.Do(context.Background(), rows, 0)
	if err != nil || !slices.Equal(out, want(rows)) {
		t.Fatalf("got %v %v", out, err)
	}
	if s := r.sizes(); !slices.Equal(s, []int{64, 64, 22}) {
		t.Errorf("batches %v, want 64, 64, 22", s)
	}
}

func TestQueueFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{gate: make(chan struct{})}
		b, _ := New(Config{MaxBatchSize: 4, MaxQueueSize: 8}, r.run, WithObserver(r))
		defer b.Close()
		var wg sync.WaitGroup
		// The first call runs at once as a batch of 1 (held at the gate); 8 more rows fill the queue.
		for i := 0; i < 9; i++ {
			wg.Go(func() { b.Do(context.Background(), []int{i}, 0) })
			synctest.Wait()
		}
		if q := b.Queued(); q != 8 {
			t.Fatalf("queued %d, want 8", q)
		}
		_, err := b.Do(context.Background(), []int{99}, 0)
		var oe *OverloadError
		if !errors.As(err, &oe) || !errors.Is(err, ErrOverloaded) || oe.RetryAfter <= 0 || oe.Queued != 8 || oe.Limit != 8 {
			t.Fatalf("err = %v", err)
		}
		close(r.gate)
		wg.Wait()
		if !slices.Equal(r.rejected, []string{"queue_full"}) {
			t.Errorf("rejections %v", r.rejected)
		}
	})
}

// TestLargerThanQueue: a call with more rows than the whole queue holds is admitted in parts, one
// after the other, and answered in full and in order; the queue never holds more than its bound.
func TestLargerThanQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{}
		b := newB(t, Config{MaxBatchSize: 4, MaxQueueSize: 8}, r)
		rows := make([]int, 21)
		for i := range rows {
			rows[i] = i
		}
		got, err := b.Do(context.Background(), rows, 0)
		if err != nil {
			t.Fatalf("a call of 21 rows into a queue of 8: %v", err)
		}
		if !slices.Equal(got, want(rows)) {
			t.Fatalf("got %v, want %v", got, want(rows))
		}
		for _, n := range r.sizes() {
			if n > 4 {
				t.Errorf("a batch of %d rows, MaxBatchSize 4", n)
			}
		}
		if len(r.rejected) != 0 {
			t.Errorf("rejections %v", r.rejected)
		}
		// While a part waits, a second part is not yet queued: the queue holds at most 8.
		r2 := &recorder{gate: make(chan struct{})}
		b2 := newB(t, Config{MaxBatchSize: 4, MaxQueueSize: 8}, r2)
		done := make(chan error, 1)
		go func() { _, err := b2.Do(context.Background(), rows, 0); done <- err }()
		synctest.Wait()
		if q := b2.Queued(); q > 8 {
			t.Errorf("queued %d, the bound is 8", q)
		}
		close(r2.gate)
		if err := <-done; err != nil {
			t.Errorf("gated: %v", err)
		}
	})
}

func TestDeadlineAlreadyPassed(t *testing.T) {
	r := &recorder{}
	b := newB(t, Config{}, r)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Do(ctx, []int{1}, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if len(r.sizes()) != 0 || !slices.Equal(r.rejected, []string{"deadline"}) {
		t.Errorf("batches %v rejected %v", r.sizes(), r.rejected)
	}
}

// TestCancelledCallLeavesAtOnce: a caller that gives up while queued frees its place at once and
// its rows never run; the others are served.
func TestCancelledCallLeavesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{gate: make(chan struct{})}
		b, _ := New(Config{MaxBatchSize: 2, MaxQueueSize: 4}, r.run, WithObserver(r))
		defer b.Close()
		var wg sync.WaitGroup
		wg.Go(func() { b.Do(context.Background(), []int{1, 2}, 0) }) // runs, held at the gate
		synctest.Wait()
		ctx, cancel := context.WithCancel(context.Background())
		var cancelledErr error
		wg.Go(func() { _, cancelledErr = b.Do(ctx, []int{3, 4, 5, 6}, 0) }) // fills the queue
		synctest.Wait()
		if _, err := b.Do(context.Background(), []int{7}, 0); !errors.Is(err, ErrOverloaded) {
			t.Fatalf("queue should be full: %v", err)
		}
		cancel()
		synctest.Wait()
		if q := b.Queued(); q != 0 {
			t.Fatalf("the cancelled call still holds %d rows of the queue", q)
		}
		var out []int
		wg.Go(func() { out, _ = b.Do(context.Background(), []int{8}, 0) })
		synctest.Wait()
		close(r.gate)
		wg.Wait()
		if !errors.Is(cancelledErr, context.Canceled) || !slices.Equal(out, []int{81}) {
			t.Errorf("cancelled: %v; other: %v", cancelledErr, out)
		}
		for _, bt := range r.batches {
			if slices.Contains(bt, 3) {
				t.Errorf("rows of the cancelled call ran: %v", r.batches)
			}
		}
		if r.cancels != 1 {
			t.Errorf("cancellations %d", r.cancels)
		}
	})
}

// TestFailedBatchFailsOnlyItsCalls: the backend fails the second batch of a split call half-way
// through; that call and the other call in the failed batch get the error, the rest are served.
func TestFailedBatchFailsOnlyItsCalls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		boom := errors.New("backend: boom")
		r := &recorder{gate: make(chan struct{}), fail: func(rows []int) error {
			if slices.Contains(rows, 105) {
				return boom
			}
			return nil
		}}
		b, _ := New(Config{MaxBatchSize: 4}, r.run, WithObserver(r))
		defer b.Close()
		var wg sync.WaitGroup
		res := make([]error, 4)
		outs := make([][]int, 4)
		calls := [][]int{{1, 2, 3}, {100, 101, 102, 103, 104, 105}, {7}, {8, 9}}
		for i, rows := range calls {
			wg.Go(func() { outs[i], res[i] = b.Do(context.Background(), rows, 0) })
			synctest.Wait()
		}
		close(r.gate)
		wg.Wait()
		// Batches: [1 2 3] at once; then [100..103] ok and [104 105 7 8] fails, failing calls 1, 2
		// and 3; call 3's row 9 never runs.
		if res[0] != nil || !slices.Equal(outs[0], want(calls[0])) {
			t.Errorf("call 0: %v %v", outs[0], res[0])
		}
		for _, i := range []int{1, 2, 3} {
			if !errors.Is(res[i], boom) {
				t.Errorf("call %d shares the failed batch: err %v", i, res[i])
			}
		}
		if fmt.Sprint(r.sizes()) != "[3 4 4]" {
			t.Errorf("batches %v", r.batches)
		}
	})
}

func TestMaxQueueDelayAndPreferredSizes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{}
		b, _ := New(Config{MaxBatchSize: 16, MaxQueueDelay: 10 * time.Millisecond, PreferredBatchSizes: []int{4}}, r.run, WithObserver(r))
		defer b.Close()
		start := time.Now()
		if _, err := b.Do(context.Background(), []int{1}, 0); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 10*time.Millisecond {
			t.Errorf("a lone call waited %v, want the 10ms delay", d)
		}
		// Four calls make a preferred batch: no wait.
		start = time.Now()
		var wg sync.WaitGroup
		for i := 0; i < 4; i++ {
			wg.Go(func() { b.Do(context.Background(), []int{i}, 0) })
		}
		wg.Wait()
		if d := time.Since(start); d != 0 {
			t.Errorf("a preferred batch waited %v", d)
		}
		if fmt.Sprint(r.sizes()) != "[1 4]" {
			t.Errorf("batches %v", r.sizes())
		}
	})
}

func TestZeroDelayTakesWhatIsWaiting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{gate: make(chan struct{})}
		b, _ := New(Config{MaxBatchSize: 64}, r.run, WithObserver(r))
		defer b.Close()
		var wg sync.WaitGroup
		for i := 0; i < 6; i++ { // the first runs alone at once; five gather behind it
			wg.Go(func() { b.Do(context.Background(), []int{i}, 0) })
			synctest.Wait()
		}
		close(r.gate)
		wg.Wait()
		if fmt.Sprint(r.sizes()) != "[1 5]" {
			t.Errorf("batches %v, want [1 5]", r.sizes())
		}
	})
}

func TestPriorities(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{gate: make(chan struct{})}
		b, _ := New(Config{MaxBatchSize: 1, Priorities: 2}, r.run, WithObserver(r))
		defer b.Close()
		var wg sync.WaitGroup
		for _, c := range []struct{ row, prio int }{{0, 0}, {1, 0}, {2, 0}, {3, 1}, {4, 1}} {
			wg.Go(func() { b.Do(context.Background(), []int{c.row}, c.prio) })
			synctest.Wait()
		}
		close(r.gate)
		wg.Wait()
		// 0 ran first (alone); then the high level in FIFO order, then the low one.
		if got := fmt.Sprint(r.batches); got != "[[0] [3] [4] [1] [2]]" {
			t.Errorf("order %s", got)
		}
	})
}

func TestDefaultTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{gate: make(chan struct{})}
		b, _ := New(Config{DefaultTimeout: 50 * time.Millisecond}, r.run, WithObserver(r))
		start := time.Now()
		var wg sync.WaitGroup
		wg.Go(func() { b.Do(context.Background(), []int{1}, 0) }) // held at the gate
		synctest.Wait()
		_, err := b.Do(context.Background(), []int{2}, 0)
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 50*time.Millisecond {
			t.Errorf("err %v after %v", err, time.Since(start))
		}
		close(r.gate)
		wg.Wait()
		b.Close()
	})
}

func TestCloseDrainsThenRefuses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{gate: make(chan struct{})}
		b, _ := New(Config{MaxBatchSize: 2}, r.run, WithObserver(r))
		var wg sync.WaitGroup
		outs := make([][]int, 5)
		for i := range outs {
			wg.Go(func() { outs[i], _ = b.Do(context.Background(), []int{i}, 0) })
			synctest.Wait()
		}
		closed := make(chan struct{})
		go func() { b.Close(); close(closed) }()
		synctest.Wait()
		if _, err := b.Do(context.Background(), []int{9}, 0); !errors.Is(err, ErrClosed) {
			t.Errorf("after Close: %v", err)
		}
		close(r.gate)
		<-closed
		wg.Wait()
		for i, o := range outs {
			if !slices.Equal(o, want([]int{i})) {
				t.Errorf("queued call %d was not served before Close returned: %v", i, o)
			}
		}
	})
}

func TestPanickingBatchFailsItsCalls(t *testing.T) {
	b, err := New(Config{}, func(ctx context.Context, rows []int) ([]int, error) { panic("boom") })
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Do(context.Background(), []int{1}, 0); err == nil {
		t.Fatal("no error from a panicking batch")
	}
	short, _ := New(Config{}, func(ctx context.Context, rows []int) ([]int, error) { return nil, nil })
	defer short.Close()
	if _, err := short.Do(context.Background(), []int{1}, 0); err == nil {
		t.Fatal("no error from a batch that answered no rows")
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{{MaxBatchSize: -1}, {MaxQueueDelay: -1}, {MaxBatchSize: 8, MaxQueueSize: 4}, {PreferredBatchSizes: []int{100}}, {Priorities: 40}} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}

func TestAdaptiveWait(t *testing.T) {
	var e estimator
	for i := 0; i < 40; i++ { // batches cost 100µs + 2µs per row
		n := 1 + i%32
		e.observe(n, 100*time.Microsecond+time.Duration(n)*2*time.Microsecond)
	}
	a, b, ok := e.fit()
	if !ok || a < 99e-6 || a > 101e-6 || b < 1.99e-6 || b > 2.01e-6 {
		t.Fatalf("fit a=%v b=%v ok=%v", a, b, ok)
	}
	// 2 slots of single-row batches serve ~19.6k rows/s.
	e.rate, e.busy = 1000, 0.05
	if w := e.wait(1, 64, 2, 2*time.Millisecond); w != 0 {
		t.Errorf("light load waits %v", w)
	}
	// A busy backend: wait for a / (b/3) = 150 rows, capped at 64, arriving at 20k rows/s: 3.15ms,
	// capped by the 2ms delay.
	e.rate, e.busy = 20000, 0.9
	if w := e.wait(1, 64, 2, 2*time.Millisecond); w != 2*time.Millisecond {
		t.Errorf("busy backend waits %v, want the 2ms cap", w)
	}
	if w := e.wait(1, 64, 2, 10*time.Millisecond); w != 3150*time.Microsecond {
		t.Errorf("busy backend waits %v, want 3.15ms for 63 more rows", w)
	}
	e.rate, e.busy = 100000, 0.9 // beyond what single rows can serve
	w := e.wait(1, 64, 2, 2*time.Millisecond)
	if w <= 0 || w > 700*time.Microsecond {
		t.Errorf("heavy load waits %v, want the time for 63 rows at 100k/s: 630µs", w)
	}
	e.rate = 1e7 // hopeless: capped
	if w := e.wait(1, 64, 2, 2*time.Millisecond); w > 2*time.Millisecond {
		t.Errorf("wait %v above the cap", w)
	}
}

// BenchmarkDo: the batcher's own cost per call, with a batch function that does nothing.
func BenchmarkDo(b *testing.B) {
	bt, _ := New(Config{MaxBatchSize: 64, MaxInflightBatches: 2}, func(ctx context.Context, rows []int) ([]int, error) {
		return rows, nil
	})
	defer bt.Close()
	b.ReportAllocs()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		rows := []int{1}
		for pb.Next() {
			if _, err := bt.Do(context.Background(), rows, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestMaxInflightBatches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		var mu sync.Mutex
		running, peak := 0, 0
		run := func(ctx context.Context, rows []int) ([]int, error) {
			mu.Lock()
			running++
			peak = max(peak, running)
			mu.Unlock()
			<-gate
			mu.Lock()
			running--
			mu.Unlock()
			return want(rows), nil
		}
		b, _ := New(Config{MaxBatchSize: 1, MaxInflightBatches: 3}, run)
		defer b.Close()
		var wg sync.WaitGroup
		for i := 0; i < 10; i++ {
			wg.Go(func() { b.Do(context.Background(), []int{i}, 0) })
		}
		synctest.Wait()
		if running != 3 || b.Queued() != 7 {
			t.Errorf("running %d queued %d, want 3 and 7", running, b.Queued())
		}
		close(gate)
		wg.Wait()
		if peak != 3 {
			t.Errorf("peak concurrency %d, want 3", peak)
		}
	})
}

// TestOnlyFullBatchesRunBesideAnother: with a batch running, a second slot takes a full batch but
// not a partial one.
func TestOnlyFullBatchesRunBesideAnother(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{gate: make(chan struct{})}
		b, _ := New(Config{MaxBatchSize: 4, MaxInflightBatches: 2}, r.run, WithObserver(r))
		defer b.Close()
		var wg sync.WaitGroup
		wg.Go(func() { b.Do(context.Background(), []int{0}, 0) }) // runs alone, held
		synctest.Wait()
		for i := 1; i <= 3; i++ {
			wg.Go(func() { b.Do(context.Background(), []int{i}, 0) })
		}
		synctest.Wait()
		if q := b.Queued(); q != 3 {
			t.Fatalf("a partial batch started beside the running one: %d rows still queued, want 3", q)
		}
		wg.Go(func() { b.Do(context.Background(), []int{4}, 0) }) // now 4 rows: a full batch
		synctest.Wait()
		if q := b.Queued(); q != 0 {
			t.Fatalf("a full batch did not start in the free slot: %d rows queued", q)
		}
		close(r.gate)
		wg.Wait()
	})
}

// TestCallWithoutDeadlineKeepsNone: sharing a batch with a call that has a deadline does not give
// a call without one that deadline.
func TestCallWithoutDeadlineKeepsNone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		run := func(ctx context.Context, rows []int) ([]int, error) {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(50 * time.Millisecond):
				return want(rows), nil
			}
		}
		b, _ := New(Config{MaxBatchSize: 4, MaxQueueDelay: time.Millisecond}, run)
		defer b.Close()
		var wg sync.WaitGroup
		var shortErr, longErr error
		var longOut []int
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			_, shortErr = b.Do(ctx, []int{1}, 0)
		})
		wg.Go(func() { longOut, longErr = b.Do(context.Background(), []int{2}, 0) })
		wg.Wait()
		if !errors.Is(shortErr, context.DeadlineExceeded) || longErr != nil || !slices.Equal(longOut, []int{21}) {
			t.Errorf("short: %v; long: %v %v", shortErr, longOut, longErr)
		}
	})
}

// TestFailedSplitCallStopsAtOnce: when a batch of a split call fails, its waiting rows never run,
// even while another of its batches is still running.
func TestFailedSplitCallStopsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		var mu sync.Mutex
		var ran [][]int
		run := func(ctx context.Context, rows []int) ([]int, error) {
			mu.Lock()
			ran = append(ran, slices.Clone(rows))
			mu.Unlock()
			switch rows[0] {
			case 0:
				<-gate
			case 2:
				return nil, errors.New("boom")
			}
			return want(rows), nil
		}
		b, _ := New(Config{MaxBatchSize: 2, MaxInflightBatches: 2}, run)
		defer b.Close()
		var err error
		done := make(chan struct{})
		go func() { _, err = b.Do(context.Background(), []int{0, 1, 2, 3, 4, 5, 6, 7}, 0); close(done) }()
		synctest.Wait() // [0 1] held, [2 3] failed
		mu.Lock()
		n := len(ran)
		mu.Unlock()
		if n != 2 {
			t.Errorf("batches run while the first was held: %v, want [0 1] and [2 3] only", ran)
		}
		close(gate)
		<-done
		if err == nil {
			t.Error("no error")
		}
	})
}

// TestCancelledCallsDoNotPileUp: callers of a level that is not reached give up; their entries
// leave the queue at once.
func TestCancelledCallsDoNotPileUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{gate: make(chan struct{})}
		b, _ := New(Config{MaxBatchSize: 1}, r.run, WithObserver(r))
		defer b.Close()
		var wg sync.WaitGroup
		wg.Go(func() { b.Do(context.Background(), []int{0}, 1) }) // held at the gate
		synctest.Wait()
		for i := 0; i < 100; i++ {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
				defer cancel()
				b.Do(ctx, []int{i + 1}, 0)
			})
		}
		time.Sleep(2 * time.Millisecond) // synctest's fake clock: the callers' deadlines pass
		synctest.Wait()
		b.mu.Lock()
		left := len(b.levels[0])
		b.mu.Unlock()
		if left != 0 || b.Queued() != 0 {
			t.Errorf("%d dead entries and %d rows left in the queue", left, b.Queued())
		}
		close(r.gate)
		wg.Wait()
	})
}

// TestCallersReachTheBatch: the batch's context hands over the context of every call whose rows it
// carries (so a batch span can link to each caller's span), not their cancellation.
func TestCallersReachTheBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		type who struct{}
		gate := make(chan struct{})
		var mu sync.Mutex
		var seen [][]string
		run := func(ctx context.Context, rows []int) ([]int, error) {
			<-gate
			var names []string
			for _, c := range Callers(ctx) {
				names = append(names, c.Value(who{}).(string))
			}
			mu.Lock()
			seen = append(seen, names)
			mu.Unlock()
			return rows, nil
		}
		b, err := New(Config{MaxBatchSize: 8}, run)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		var wg sync.WaitGroup
		// The first call runs alone (held at the gate); the next three gather into one batch.
		for i, name := range []string{"a", "b", "c", "d"} {
			ctx := context.WithValue(context.Background(), who{}, name)
			wg.Go(func() {
				if _, err := b.Do(ctx, []int{i, i}, 0); err != nil {
					t.Errorf("%s: %v", name, err)
				}
			})
			synctest.Wait()
		}
		close(gate)
		wg.Wait()
		if len(seen) != 2 || !slices.Equal(seen[0], []string{"a"}) || !slices.Equal(seen[1], []string{"b", "c", "d"}) {
			t.Errorf("batches saw callers %v, want [[a] [b c d]]", seen)
		}
		if Callers(context.Background()) != nil {
			t.Error("Callers of a context that is no batch's is not nil")
		}
	})
}
