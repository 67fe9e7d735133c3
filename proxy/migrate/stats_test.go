package migrate

import (
	"math"
	"slices"
	"testing"
)

func nearlyEqual(got, want, eps float64) bool {
	if math.IsNaN(want) {
		return math.IsNaN(got)
	}
	if math.IsInf(want, 0) {
		return got == want
	}
	return math.Abs(got-want) <= eps
}

func TestZ(t *testing.T) {
	tests := []struct {
		conf, want float64
	}{
		{0.95, 1.6448536269514722},
		{0.975, 1.959963984540054},
		{0.99, 2.3263478740408408},
		{0.5, 0},
		{0.05, -1.6448536269514722},
		{0, math.NaN()},
		{1, math.NaN()},
		{-0.5, math.NaN()},
		{1.5, math.NaN()},
		{math.NaN(), math.NaN()},
		{math.Inf(1), math.NaN()},
	}
	for _, tt := range tests {
		if got := Z(tt.conf); !nearlyEqual(got, tt.want, 1e-9) {
			t.Errorf("Z(%v) = %v, want %v", tt.conf, got, tt.want)
		}
	}
}

func TestWilson(t *testing.T) {
	tests := []struct {
		name     string
		k, n     int64
		z        float64
		lo, hi   float64
		eps      float64
		exactEnd bool // lo and hi must be exactly the values
	}{
		// center = (0 + 0.19208)/1.38416 = 0.13877, half the same: [0, 0.27753].
		{"none of ten", 0, 10, 1.96, 0, 0.2775, 1e-4, false},
		// center 0.5, half = 1.96*sqrt(0.025+0.009604)/1.38416 = 0.26341.
		{"half of ten", 5, 10, 1.96, 0.2366, 0.7634, 1e-4, false},
		{"all of ten", 10, 10, 1.96, 0.7225, 1, 1e-4, false},
		// k=1, n=1, z=1: center = (1+0.5)/2 = 0.75, half = sqrt(0+0.25)/2 = 0.25.
		{"one of one, z 1", 1, 1, 1, 0.5, 1, 0, true},
		// k=1, n=2, z=1: p=0.5, denom 1.5, center 0.5, half = sqrt(0.125+0.0625)/1.5 = 0.288675.
		{"one of two, z 1", 1, 2, 1, 0.5 - 0.28867513459481287, 0.5 + 0.28867513459481287, 1e-12, false},
		{"z 0 is the point", 3, 10, 0, 0.3, 0.3, 1e-15, false},
		{"negative z is |z|", 5, 10, -1.96, 0.2366, 0.7634, 1e-4, false},
		{"n 0", 0, 0, 1.96, 0, 1, 0, true},
		{"n negative", 3, -1, 1.96, 0, 1, 0, true},
		{"k above n is n", 12, 10, 1.96, 0.7225, 1, 1e-4, false},
		{"k negative is 0", -3, 10, 1.96, 0, 0.2775, 1e-4, false},
		{"nan z", 5, 10, math.NaN(), 0, 1, 0, true},
		{"infinite z", 5, 10, math.Inf(1), 0, 1, 0, true},
		{"huge z", 5, 10, 1e200, 0, 1, 0, true},
		{"huge n", 1 << 62, 1 << 62, 1.96, 1, 1, 1e-9, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lo, hi := Wilson(tt.k, tt.n, tt.z)
			if tt.exactEnd && (lo != tt.lo || hi != tt.hi) || !nearlyEqual(lo, tt.lo, tt.eps) || !nearlyEqual(hi, tt.hi, tt.eps) {
				t.Errorf("Wilson(%d, %d, %v) = [%v, %v], want [%v, %v]", tt.k, tt.n, tt.z, lo, hi, tt.lo, tt.hi)
			}
			if !(0 <= lo && lo <= hi && hi <= 1) {
				t.Errorf("Wilson(%d, %d, %v) = [%v, %v], not 0 <= lo <= hi <= 1", tt.k, tt.n, tt.z, lo, hi)
			}
		})
	}
}

// TestWilsonMonotone checks the interval holds k/n and narrows as n grows at a fixed proportion.
func TestWilsonMonotone(t *testing.T) {
	z := Z(0.975)
	for _, p := range []struct{ num, den int64 }{{0, 1}, {1, 10}, {1, 2}, {9, 10}, {1, 1}} {
		prevWidth, prevHi, prevLo := 2.0, 2.0, -1.0
		for n := p.den; n <= 100000; n *= 10 {
			k := n * p.num / p.den
			lo, hi := Wilson(k, n, z)
			if prop := float64(k) / float64(n); !(lo <= prop && prop <= hi) {
				t.Errorf("Wilson(%d, %d) = [%v, %v] does not hold %v", k, n, lo, hi, prop)
			}
			if w := hi - lo; !(w < prevWidth) {
				t.Errorf("Wilson(%d, %d) width %v, not below %v at n/10", k, n, w, prevWidth)
			} else {
				prevWidth = w
			}
			switch { // the bounds move toward p from their side
			case p.num == 0 && !(hi < prevHi):
				t.Errorf("Wilson(0, %d) hi %v not below %v", n, hi, prevHi)
			case p.num == p.den && !(lo > prevLo):
				t.Errorf("Wilson(%d, %d) lo %v not above %v", k, n, lo, prevLo)
			}
			prevHi, prevLo = hi, lo
		}
	}
	// Fixed k, growing n: the upper bound falls.
	prev := 2.0
	for n := int64(1); n <= 1000; n++ {
		if _, hi := Wilson(1, n, z); !(hi < prev) {
			t.Fatalf("Wilson(1, %d) hi %v not below %v", n, hi, prev)
		} else {
			prev = hi
		}
	}
}

func TestQuantile(t *testing.T) {
	inf, nan := math.Inf(1), math.NaN()
	tests := []struct {
		vals []float64
		q    float64
		want float64
	}{
		// numpy.quantile's default: h = q*(n-1), x[⌊h⌋] + (h-⌊h⌋)*(x[⌊h⌋+1]-x[⌊h⌋]).
		{[]float64{1, 2, 3, 4}, 0.5, 2.5},                      // h=1.5: 2 + 0.5*1
		{[]float64{1, 2, 3, 4}, 0.25, 1.75},                    // h=0.75: 1 + 0.75*1
		{[]float64{4, 3, 2, 1}, 0.9, 3.7},                      // h=2.7: 3 + 0.7*1 (sorted first)
		{[]float64{10, 1, 7}, 0.5, 7},                          // h=1: x[1] of [1 7 10]
		{[]float64{10, 1, 7}, 0.1, 2.2},                        // h=0.2: 1 + 0.2*6
		{[]float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0.95, 9.55}, // h=8.55: 9 + 0.55*1
		{[]float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0.99, 9.91}, // h=8.91: 9 + 0.91*1
		{[]float64{0, 10}, 0.3, 3},                             // h=0.3
		{[]float64{0, 10}, 0.7, 7},                             // h=0.7: from the upper end, 10 - 10*0.3
		{[]float64{-5, -1, 0, 2}, 0.5, -0.5},                   // h=1.5: -1 + 0.5*1
		{[]float64{3.5}, 0.37, 3.5},
		{[]float64{2, 9, 4}, 0, 2},
		{[]float64{2, 9, 4}, 1, 9},
		{[]float64{5, 5, 5, 5}, 0.6, 5},
		{[]float64{-inf, 1, inf}, 0.5, 1},
		{[]float64{-inf, 1, inf}, 0.25, -inf}, // h=0.5: numpy's lerp gives 1 - inf*0.5
		{[]float64{-inf, 1, inf}, 1, inf},
		{[]float64{inf, inf}, 0.5, inf},
		{nil, 0.5, nan},
		{[]float64{}, 0, nan},
		{[]float64{1, nan, 3}, 0.5, nan},
		{[]float64{1, 2}, -0.1, nan},
		{[]float64{1, 2}, 1.1, nan},
		{[]float64{1, 2}, nan, nan},
	}
	for _, tt := range tests {
		vals := slices.Clone(tt.vals)
		if got := Quantile(vals, tt.q); !nearlyEqual(got, tt.want, 1e-12) {
			t.Errorf("Quantile(%v, %v) = %v, want %v", tt.vals, tt.q, got, tt.want)
		}
		if !slices.IsSortedFunc(vals, func(a, b float64) int {
			switch {
			case math.IsNaN(a) && !math.IsNaN(b):
				return -1
			case a < b:
				return -1
			case a > b:
				return 1
			}
			return 0
		}) {
			t.Errorf("Quantile left %v unsorted", vals)
		}
	}
	// Quantiles are monotone in q.
	vals := []float64{0.3, 9, -2, 4.5, 4.5, 7, 1e3, 0, -0.25}
	prev := math.Inf(-1)
	for q := 0.0; q <= 1; q += 1.0 / 64 {
		got := Quantile(vals, q)
		if got < prev {
			t.Errorf("Quantile(q=%v) = %v < %v at a lower q", q, got, prev)
		}
		prev = got
	}
}

func TestWindow(t *testing.T) {
	w := NewWindow(3)
	if w.Len() != 0 || len(w.Values(nil)) != 0 {
		t.Fatalf("new window holds %v", w.Values(nil))
	}
	w.Add(1)
	w.Add(2)
	if got := w.Values(nil); !slices.Equal(got, []float64{1, 2}) || w.Len() != 2 {
		t.Errorf("before full: %v (Len %d)", got, w.Len())
	}
	for _, v := range []float64{3, 4, 5} {
		w.Add(v)
	}
	if got := w.Values(nil); !slices.Equal(got, []float64{3, 4, 5}) || w.Len() != 3 {
		t.Errorf("after wrapping: %v (Len %d)", got, w.Len())
	}
	if got := w.Values([]float64{-1}); !slices.Equal(got, []float64{-1, 3, 4, 5}) {
		t.Errorf("Values appends: %v", got)
	}
	out := w.Values(nil)
	slices.Reverse(out)
	if got := w.Values(nil); !slices.Equal(got, []float64{3, 4, 5}) {
		t.Errorf("Values shares storage: %v", got)
	}
	w.Reset()
	if w.Len() != 0 || len(w.Values(nil)) != 0 {
		t.Errorf("after Reset: %v", w.Values(nil))
	}
	w.Add(6)
	if got := w.Values(nil); !slices.Equal(got, []float64{6}) {
		t.Errorf("after Reset and Add: %v", got)
	}

	// Against a reference keeping everything, for several sizes and many wraps.
	for _, n := range []int{1, 2, 3, 7, 64} {
		w := NewWindow(n)
		var all []float64
		for i := range 500 {
			v := float64(i*i%97) - 40
			w.Add(v)
			all = append(all, v)
			want := all[max(0, len(all)-n):]
			if got := w.Values(nil); !slices.Equal(got, want) || w.Len() != len(want) {
				t.Fatalf("n=%d after %d adds: %v, want %v", n, i+1, got, want)
			}
		}
	}
}

func TestWindowDegenerate(t *testing.T) {
	var nilWindow *Window
	for name, w := range map[string]*Window{"zero n": NewWindow(0), "negative n": NewWindow(-5), "zero value": {}, "nil": nilWindow} {
		w.Add(1)
		w.Reset()
		w.Add(2)
		if w.Len() != 0 || len(w.Values(nil)) != 0 {
			t.Errorf("%s window keeps %v", name, w.Values(nil))
		}
	}
	huge := NewWindow(math.MaxInt) // allocates only as values come
	for i := range 10 {
		huge.Add(float64(i))
	}
	if huge.Len() != 10 || huge.Values(nil)[9] != 9 {
		t.Errorf("huge window: %v", huge.Values(nil))
	}
}
