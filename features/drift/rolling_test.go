package drift

import (
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func newTestRolling(step, window time.Duration) *rolling {
	r := &rolling{}
	r.init(step, window, accBase)
	return r
}

// TestRollingBucketOf: the bucket of a time is the floor of the steps since the start, before the
// start too (the clock went back), and a window that is not whole steps is rounded up.
func TestRollingBucketOf(t *testing.T) {
	r := newTestRolling(time.Minute, 90*time.Second)
	if r.steps != 2 || r.step != int64(time.Minute) || r.window != int64(90*time.Second) || r.swept.Load() != noBucket {
		t.Fatalf("init: %d steps of %d ns, window %d ns, swept %d", r.steps, r.step, r.window, r.swept.Load())
	}
	for _, tc := range []struct {
		d    time.Duration
		want int64
	}{
		{0, 0}, {time.Nanosecond, 0}, {time.Minute - 1, 0}, {time.Minute, 1}, {150 * time.Second, 2},
		{-time.Nanosecond, -1}, {-time.Minute, -1}, {-time.Minute - 1, -2},
	} {
		if got := r.bucketOf(accBase.Add(tc.d)); got != tc.want {
			t.Errorf("bucketOf(start%+v) = %d, want %d", tc.d, got, tc.want)
		}
	}
}

// TestRollingRing: a ring's slot is b mod its length, negative buckets included; bucketLocked
// starts a bucket over an older one with zero sums, refuses one older than its slot's, and
// heldLocked finds only the bucket its slot holds.
func TestRollingRing(t *testing.T) {
	ring := newRing[lblBucket](3)
	for i, s := range ring.held {
		if s != noBucket || ring.sums[i] != (lblBucket{}) {
			t.Fatalf("new slot %d: bucket %d, %+v", i, s, ring.sums[i])
		}
	}
	for b, want := range map[int64]int64{0: 0, 2: 2, 3: 0, 7: 1, -1: 2, -3: 0, -4: 2} {
		if got := ring.slot(b); got != want {
			t.Errorf("slot(%d) = %d, want %d", b, got, want)
		}
	}
	if ring.heldLocked(4) != nil {
		t.Fatal("heldLocked found a bucket never started")
	}
	bk := ring.bucketLocked(4)
	if bk != &ring.sums[1] || ring.held[1] != 4 || *bk != (lblBucket{}) {
		t.Fatalf("bucketLocked(4) = %p %+v, slot 1 holding %d: want slot 1 started", bk, bk, ring.held[1])
	}
	bk.scored, bk.dropped = 2, 1
	if again := ring.bucketLocked(4); again != bk || again.scored != 2 {
		t.Fatalf("bucketLocked(4) again = %+v, want the same sums", again)
	}
	if held := ring.heldLocked(4); held != bk {
		t.Fatal("heldLocked(4) did not find bucket 4")
	}
	if ring.bucketLocked(1) != nil || ring.heldLocked(1) != nil || ring.held[1] != 4 || bk.scored != 2 {
		t.Fatalf("bucket 1 over slot 1 holding 4: slot holds %d, %+v; want refused and kept", ring.held[1], *bk)
	}
	if bk := ring.bucketLocked(7); bk != &ring.sums[1] || ring.held[1] != 7 || *bk != (lblBucket{}) {
		t.Fatalf("bucketLocked(7) = %+v, slot 1 holding %d: want slot 1 started over 4", bk, ring.held[1])
	}
	if ring.heldLocked(4) != nil {
		t.Fatal("heldLocked found bucket 4 after its slot moved on")
	}
}

// TestRollingWindow: the window at bucket b is the ring's last len buckets, b included, in slot
// order; a slot never used is in none.
func TestRollingWindow(t *testing.T) {
	ring := newRing[lblBucket](4)
	for _, b := range []int64{5, 6, 7} { // slots 1, 2, 3; slot 0 never used
		ring.bucketLocked(b).scored = b
	}
	window := func(b int64) []int64 {
		var got []int64
		for bk := range ring.windowLocked(b) {
			got = append(got, bk.scored)
		}
		return got
	}
	for _, tc := range []struct {
		b    int64
		want []int64
	}{{7, []int64{5, 6, 7}}, {8, []int64{5, 6, 7}}, {9, []int64{6, 7}}, {6, []int64{5, 6}}, {11, nil}, {4, nil}} {
		if got := window(tc.b); !slices.Equal(got, tc.want) {
			t.Errorf("window at %d: buckets %v, want %v", tc.b, got, tc.want)
		}
	}
	ring = newRing[lblBucket](4)      // before the start: the clock went back
	ring.bucketLocked(-2).scored = -2 // slot 2
	ring.bucketLocked(-5).scored = -5 // slot 3
	if got := window(-1); !slices.Equal(got, []int64{-2}) {
		t.Errorf("window at -1: buckets %v, want [-2]", got)
	}
	if got := window(-2); !slices.Equal(got, []int64{-2, -5}) {
		t.Errorf("window at -2: buckets %v, want [-2 -5]", got)
	}
	for range ring.windowLocked(7) {
		break // stopping early is allowed
	}
}

// TestRollingReserveAndSweep: reserve counts keys in up to its bound; claimSweep lets one caller
// sweep per step of the clock, however many ask at once.
func TestRollingReserveAndSweep(t *testing.T) {
	r := newTestRolling(time.Minute, time.Hour)
	for i := range 3 {
		if !r.reserve(3) {
			t.Fatalf("reserve %d of 3 refused", i+1)
		}
	}
	if r.reserve(3) || r.count.Load() != 3 {
		t.Fatalf("reserve beyond the bound: count %d", r.count.Load())
	}
	for _, b := range []int64{-5, 0, 1, 7} {
		var claims atomic.Int64
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				if r.claimSweep(b) {
					claims.Add(1)
				}
			})
		}
		wg.Wait()
		if claims.Load() != 1 {
			t.Errorf("bucket %d: %d sweeps claimed, want 1", b, claims.Load())
		}
	}
	if r.claimSweep(6) || r.claimSweep(7) {
		t.Error("a sweep claimed at a bucket not after the last sweep's")
	}
}
