package migrate

import (
	"math"
	"testing"
)

// TestBounds checks the continuity-corrected Wilson interval against Newcombe's (1998) table 1
// (two-sided 95%, z = 1.96) and the properties the gates rely on.
func TestBounds(t *testing.T) {
	for _, c := range []struct {
		k, n   int64
		lo, hi float64
	}{
		{81, 263, 0.2535, 0.3682}, // Newcombe's example 1 (method 4)
		{15, 148, 0.0598, 0.1644}, // example 2
		{0, 20, 0, 0.2005},        // example 3
		{1, 29, 0.0018, 0.1963},   // example 4
	} {
		lo, hi := Bounds(c.k, c.n, 1.96)
		if math.Abs(lo-c.lo) > 6e-4 || math.Abs(hi-c.hi) > 6e-4 {
			t.Errorf("Bounds(%d, %d) = [%.4f, %.4f], want [%.4f, %.4f]", c.k, c.n, lo, hi, c.lo, c.hi)
		}
	}
	z := Z(0.95)
	// One disagreement in ten calls does not prove a rate above 1%; five do.
	if lo, _ := Bounds(1, 10, z); lo > 0.01 {
		t.Errorf("1 of 10: lower bound %.4f above 1%%", lo)
	}
	if lo, _ := Bounds(5, 10, z); lo < 0.01 {
		t.Errorf("5 of 10: lower bound %.4f below 1%%", lo)
	}
	// No disagreement in DefaultMinCalls calls keeps the rate under the default gate; in 300 it
	// does not yet.
	if _, hi := Bounds(0, DefaultMinCalls, z); hi > DefaultMaxDisagreement {
		t.Errorf("0 of %d: upper bound %.4f above %v", DefaultMinCalls, hi, DefaultMaxDisagreement)
	}
	if _, hi := Bounds(0, 300, z); hi < 0.01 {
		t.Errorf("0 of 300: upper bound %.4f below 1%%", hi)
	}
	if lo, hi := Bounds(0, 0, z); lo != 0 || hi != 1 {
		t.Errorf("no calls: [%v, %v]", lo, hi)
	}
	for n := int64(1); n < 200; n++ {
		for k := int64(0); k <= n; k++ {
			lo, hi := Bounds(k, n, z)
			p := float64(k) / float64(n)
			if !(0 <= lo && lo <= p && p <= hi && hi <= 1) {
				t.Fatalf("Bounds(%d, %d) = [%v, %v] does not hold %v", k, n, lo, hi, p)
			}
		}
	}
}
