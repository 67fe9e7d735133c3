package backends

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// withdrawAll takes tokens until the budget refuses, and returns how many it got.
func withdrawAll(b *retryBudget) int {
	n := 0
	for b.tryWithdraw() {
		n++
		if n > 1e6 {
			panic("budget never runs out")
		}
	}
	return n
}

func TestRetryBudget(t *testing.T) {
	tests := []struct {
		name string
		key  budgetKey
		// steps run in order; each sleeps, deposits, then withdraws all it can.
		steps []budgetStep
	}{
		{
			name: "floor only",
			key:  budgetKey{ratio: 0, minPerSecond: 10, window: 10 * time.Second},
			steps: []budgetStep{
				{want: 100},
				{sleep: 5 * time.Second, want: 0},
				{sleep: 5 * time.Second, want: 100}, // the first withdrawals left the window
			},
		},
		{
			name: "ratio only",
			key:  budgetKey{ratio: 0.1, window: 10 * time.Second},
			steps: []budgetStep{
				{deposits: 9, want: 0},
				{deposits: 1, want: 1},
				{deposits: 100, want: 10},
				{sleep: 10 * time.Second, want: 0}, // deposits expired
			},
		},
		{
			name: "window slides by tenths",
			key:  budgetKey{ratio: 0.5, window: 10 * time.Second},
			steps: []budgetStep{
				{deposits: 20, want: 10},
				{sleep: 5 * time.Second, deposits: 20, want: 10},
				{sleep: 4999 * time.Millisecond, want: 0},
				// At 10s the first 20 deposits and first 10 withdrawals leave: 10 deposited
				// tokens remain, all already withdrawn.
				{sleep: time.Millisecond, want: 0},
				{deposits: 4, want: 2},
				// At 15s the rest leaves but the last 4 deposits (and their 2 withdrawals).
				{sleep: 5 * time.Second, want: 0},
				{sleep: 5 * time.Second, deposits: 2, want: 1},
			},
		},
		{
			name: "floor and ratio add up",
			key:  budgetKey{ratio: 0.2, minPerSecond: 1, window: 5 * time.Second},
			steps: []budgetStep{
				{deposits: 50, want: 15},
			},
		},
		{
			name: "nothing",
			key:  budgetKey{window: time.Second},
			steps: []budgetStep{
				{deposits: 1000, want: 0},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newRetryBudget(tt.key, time.Now())
				for i, s := range tt.steps {
					time.Sleep(s.sleep)
					for range s.deposits {
						b.deposit(b.now())
					}
					if got := withdrawAll(b); got != s.want {
						t.Fatalf("step %d: %d withdrawals, want %d", i, got, s.want)
					}
				}
			})
		})
	}
}

type budgetStep struct {
	sleep    time.Duration
	deposits int
	want     int
}

// TestRetryBudgetConcurrent: deposits from many goroutines are all counted (run with -race).
func TestRetryBudgetConcurrent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newRetryBudget(budgetKey{ratio: 0.01, window: time.Minute}, time.Now())
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 5000 {
					b.deposit(b.now())
				}
			})
		}
		wg.Wait()
		if got := withdrawAll(b); got != 400 {
			t.Fatalf("%d withdrawals after 40000 deposits at 1%%, want 400", got)
		}
	})
}

func BenchmarkRetryBudgetDeposit(b *testing.B) {
	rb := newRetryBudget(budgetKey{ratio: 0.1, minPerSecond: 10, window: 10 * time.Second}, time.Now())
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rb.deposit(rb.now())
		}
	})
}
