package features

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

func sample(i int) [6]float64 {
	return [6]float64{float64(10 + i), 50, 20, float64(300 + i), 8, 0.001}
}

func TestWindowsFillReadAndEqualOffline(t *testing.T) {
	spec := mustLoad(t, "../examples/specs/bandwidth.yaml")
	w, err := NewWindows(spec, WindowConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 28, 1, 0, 0, 0, time.UTC)
	raw := make([]float64, spec.Size())
	for i := 0; i < 12; i++ {
		at := t0.Add(time.Duration(i) * time.Minute)
		if err := w.Push("vm-1", at, sample(i), at); err != nil {
			t.Fatal(err)
		}
		err := w.Raw(raw, "vm-1", at)
		if i < 9 {
			// Steps before the first sample are missing; policy "previous" has nothing to carry.
			dst := make([]float32, spec.Size())
			if err == nil {
				err = spec.Canonicalize(dst, raw)
			}
			if err == nil {
				t.Fatalf("a window of %d samples was served", i+1)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// The window is the last 10 samples, oldest first: 2..11, as the flat request would carry it.
	var want []float64
	for i := 2; i < 12; i++ {
		s := sample(i)
		want = append(want, s[:]...)
	}
	for i := range want {
		if raw[i] != want[i] {
			t.Fatalf("value %d: %v, want %v", i, raw[i], want[i])
		}
	}
}

func TestWindowsGapStaleAndOrder(t *testing.T) {
	spec := mustLoad(t, "../examples/specs/bandwidth.yaml")
	w, _ := NewWindows(spec, WindowConfig{MaxAge: 3 * time.Minute})
	t0 := time.Date(2026, 11, 28, 1, 0, 0, 0, time.UTC)
	for i := 0; i < 10; i++ {
		if i == 6 {
			continue // a minute with no sample
		}
		at := t0.Add(time.Duration(i)*time.Minute + 7*time.Second) // jitter within half a step
		if err := w.Push("vm", at, sample(i), at); err != nil {
			t.Fatal(err)
		}
	}
	raw := make([]float64, spec.Size())
	now := t0.Add(9*time.Minute + 30*time.Second)
	if err := w.Raw(raw, "vm", now); err != nil {
		t.Fatal(err)
	}
	// 9 samples for 10 steps on the grid ending at minute 9: minute 6 is the gap.
	if !math.IsNaN(raw[6*6]) || raw[5*6] != 15 || raw[7*6] != 17 {
		t.Fatalf("gap at step 6 not where expected: %v", raw)
	}
	dst := make([]float32, spec.Size())
	if err := spec.Canonicalize(dst, raw); err != nil {
		t.Fatalf("policy previous should fill the gap: %v", err)
	}
	if dst[6*6] != dst[5*6] {
		t.Errorf("gap filled with %v, want the previous step's %v", dst[6*6], dst[5*6])
	}
	// Stale: read four minutes after the newest sample.
	err := w.Raw(raw, "vm", t0.Add(13*time.Minute))
	if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), `vm "vm": newest metrics are 3m53s old, max age 3m0s`) {
		t.Errorf("stale: %v", err)
	}
	if err := w.Raw(raw, "nobody", now); !errors.Is(err, ErrNotReady) {
		t.Errorf("unknown VM: %v", err)
	}
	at := t0.Add(2 * time.Minute)
	if err := w.Push("vm", at, sample(0), now); err == nil || !strings.Contains(err.Error(), "older than its newest sample") {
		t.Errorf("out of order: %v", err)
	}
	if err := w.Push("vm", now, [6]float64{math.Inf(1)}, now); err == nil || !strings.Contains(err.Error(), "metrics.cpu") {
		t.Errorf("infinite: %v", err)
	}
	if err := w.Push("vm", now.Add(time.Hour), sample(0), now); err == nil || !strings.Contains(err.Error(), "ahead of the sidecar's clock") {
		t.Errorf("future: %v", err)
	}
}

func TestWindowsBoundAndExpiry(t *testing.T) {
	spec := mustLoad(t, "../examples/specs/bandwidth.yaml")
	w, _ := NewWindows(spec, WindowConfig{MaxVMs: windowShards * 2, IdleExpiry: time.Hour})
	t0 := time.Date(2026, 11, 28, 1, 0, 0, 0, time.UTC)
	refused := 0
	for i := 0; i < windowShards*4; i++ {
		if err := w.Push(fmt.Sprint("vm-", i), t0, sample(0), t0); errors.Is(err, ErrTooManyVMs) {
			refused++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if w.Len() > windowShards*2 || refused == 0 {
		t.Fatalf("tracked %d, refused %d: the bound did not hold", w.Len(), refused)
	}
	// Two hours later the idle VMs make room.
	later := t0.Add(2 * time.Hour)
	if err := w.Push("vm-new", later, sample(0), later); err != nil {
		t.Errorf("after idle expiry: %v", err)
	}
}

// TestWindowMemory measures the memory one tracked VM costs (the target is under 2 KiB for the
// bandwidth spec) and logs it; 100k VMs fit the default bound.
func TestWindowMemory(t *testing.T) {
	spec := mustLoad(t, "../examples/specs/bandwidth.yaml")
	const n = 20000
	w, _ := NewWindows(spec, WindowConfig{})
	t0 := time.Date(2026, 11, 28, 1, 0, 0, 0, time.UTC)
	var before, after runtime.MemStats
	runtime.GC() // twice: the garbage of earlier tests in this process goes before the baseline
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < n; i++ {
		for s := 0; s < spec.Window; s++ {
			at := t0.Add(time.Duration(s) * time.Minute)
			if err := w.Push(fmt.Sprintf("vm-%06d", i), at, sample(s), at); err != nil {
				t.Fatal(err)
			}
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / n
	if per <= 0 {
		t.Fatalf("the heap shrank while %d windows were added (%d -> %d bytes): measurement disturbed", n, before.HeapAlloc, after.HeapAlloc)
	}
	t.Logf("memory per tracked VM window (bandwidth spec, %d steps): %.0f bytes", spec.Window, per)
	if per > 2048 {
		t.Errorf("%.0f bytes per VM, above the 2 KiB target", per)
	}
	runtime.KeepAlive(w)
}

// TestPushedWindowsEqualOfflineMatrix: the rows the online path builds from metrics pushed one by
// one equal, bit for bit, the offline matrix the transform writes from the same file.
func TestPushedWindowsEqualOfflineMatrix(t *testing.T) {
	spec := mustLoad(t, "../examples/specs/bandwidth.yaml")
	w, err := NewWindows(spec, WindowConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 28, 1, 0, 0, 0, time.UTC)
	var in strings.Builder
	in.WriteString("vm_id,timestamp,cpu,memory,disk_io,network_io,latency,error_rate,anomaly_type\n")
	const steps = 30
	type pushed struct {
		vm string
		at time.Time
		v  [6]float64
	}
	var order []pushed
	for s := 0; s < steps; s++ {
		for _, vm := range []string{"a", "b"} {
			v := [6]float64{float64(s) * 3.7, 40 + float64(s%7), 12.25 * float64(s%5), 100 + 11.1*float64(s), 3 + float64(s%4)/3, 0.001 * float64(s%3)}
			at := t0.Add(time.Duration(s) * time.Minute)
			order = append(order, pushed{vm, at, v})
			fmt.Fprintf(&in, "%s,%d", vm, at.Unix())
			for _, x := range v {
				fmt.Fprintf(&in, ",%s", strconv.FormatFloat(x, 'g', -1, 64))
			}
			in.WriteString(",normal\n")
		}
	}
	var out strings.Builder
	if _, err := spec.Transform(strings.NewReader(in.String()), &out, TransformOptions{}); err != nil {
		t.Fatal(err)
	}
	// Offline rows by (vm, last step time).
	offline := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n")[1:] {
		cells := strings.Split(line, ",")
		offline[cells[0]+"@"+cells[1]] = cells[2 : 2+spec.Size()]
	}
	raw := make([]float64, spec.Size())
	row := make([]float32, spec.Size())
	compared := 0
	for _, p := range order {
		if err := w.Push(p.vm, p.at, p.v, p.at); err != nil {
			t.Fatal(err)
		}
		want, ok := offline[fmt.Sprintf("%s@%d", p.vm, p.at.Unix())]
		if !ok {
			continue // the offline matrix has no row here (too early, or no labels after it)
		}
		if err := w.Raw(raw, p.vm, p.at); err != nil {
			t.Fatal(err)
		}
		if err := spec.Canonicalize(row, raw); err != nil {
			t.Fatal(err)
		}
		for i, cell := range want {
			if got := strconv.FormatFloat(float64(row[i]), 'g', -1, 32); got != cell {
				t.Fatalf("%s at %v value %d: online %s, offline %s", p.vm, p.at, i, got, cell)
			}
		}
		compared++
	}
	if compared != 2*(steps-spec.Window-10+1) {
		t.Errorf("compared %d rows, want every offline row", compared)
	}
}

// TestFeatureMaxAge: a feature's max_age refuses a window the store's own max age would serve, and
// leaves the fingerprint alone.
func TestFeatureMaxAge(t *testing.T) {
	y, err := os.ReadFile("../examples/specs/bandwidth.yaml")
	if err != nil {
		t.Fatal(err)
	}
	plain := mustLoad(t, "../examples/specs/bandwidth.yaml")
	spec, err := Parse([]byte(strings.Replace(string(y), "    unit: Mbit/s\n", "    unit: Mbit/s\n    max_age: 90s\n", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if spec.Fingerprint() != plain.Fingerprint() {
		t.Error("max_age changed the fingerprint")
	}
	w, _ := NewWindows(spec, WindowConfig{MaxAge: 5 * time.Minute})
	t0 := time.Date(2026, 11, 28, 1, 0, 0, 0, time.UTC)
	for i := 0; i < 10; i++ {
		at := t0.Add(time.Duration(i) * time.Minute)
		w.Push("vm", at, sample(i), at)
	}
	raw := make([]float64, spec.Size())
	if err := w.Raw(raw, "vm", t0.Add(10*time.Minute)); err != nil {
		t.Fatalf("60s old: %v", err)
	}
	err = w.Raw(raw, "vm", t0.Add(11*time.Minute))
	if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "feature network_io has max_age 1m30s") {
		t.Errorf("120s old: %v", err)
	}
}

func TestWindowsEdgeTimes(t *testing.T) {
	spec := mustLoad(t, "../examples/specs/bandwidth.yaml")
	w, _ := NewWindows(spec, WindowConfig{MaxVMs: 100})
	now := time.Date(2026, 11, 28, 1, 0, 0, 0, time.UTC)
	if err := w.Push("vm", time.UnixMilli(-288223118033311744), sample(0), now); err == nil || !strings.Contains(err.Error(), "older than the idle expiry") {
		t.Errorf("far past: %v", err)
	}
	// Two samples on one step: the newer one is read.
	for i := 0; i < 10; i++ {
		at := now.Add(time.Duration(i-9) * time.Minute)
		w.Push("vm", at, sample(i), now)
	}
	w.Push("vm", now.Add(-10*time.Second), sample(100), now) // older than the newest: refused
	w.Push("vm", now.Add(20*time.Second), sample(200), now)  // the newest step, 20s later
	raw := make([]float64, spec.Size())
	if err := w.Raw(raw, "vm", now.Add(30*time.Second)); err != nil {
		t.Fatal(err)
	}
	if raw[9*6] != 210 {
		t.Errorf("newest step holds cpu %v, want the newest sample's 210", raw[9*6])
	}
	// The bound counts VMs across shards: exactly MaxVMs are tracked.
	for i := 0; i < 300; i++ {
		w.Push(fmt.Sprint("bound-", i), now, sample(0), now)
	}
	if n := w.Len(); n != 100 {
		t.Errorf("tracked %d VMs, bound 100", n)
	}
}
