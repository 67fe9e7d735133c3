package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/novacron/sidecar/backends/onnx"
	"github.com/novacron/sidecar/config"
	"github.com/novacron/sidecar/examples"
	"github.com/novacron/sidecar/features"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

func TestPercentile(t *testing.T) {
	seq := func(n int) []int64 {
		s := make([]int64, n)
		for i := range s {
			s[i] = int64(i + 1)
		}
		return s
	}
	for _, tc := range []struct {
		name   string
		sorted []int64
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one", []int64{7}, 50, 7},
		{"one p99.9", []int64{7}, 99.9, 7},
		{"two p50", []int64{1, 2}, 50, 1},
		{"two p99", []int64{1, 2}, 99, 2},
		{"100 p50", seq(100), 50, 50},
		{"100 p99", seq(100), 99, 99},
		{"100 p99.9", seq(100), 99.9, 100},
		{"1000 p99.9", seq(1000), 99.9, 999},
		{"1000 p99", seq(1000), 99, 990},
		{"1001 p50", seq(1001), 50, 501},
		{"10 p100", seq(10), 100, 10},
		{"10 tiny p", seq(10), 0.001, 1},
		{"ties", []int64{3, 3, 3, 9}, 75, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percentile(tc.sorted, tc.p); got != tc.want {
				t.Errorf("Percentile(%v, %v) = %v, want %v", tc.sorted, tc.p, got, tc.want)
			}
		})
	}
}

func TestRecorder(t *testing.T) {
	r := newRecorder(100)
	for i := 200; i > 0; i-- { // 200 samples, descending: only the first 100 (101..200) are kept
		r.add(time.Duration(i))
	}
	if r.count() != 200 {
		t.Fatalf("count %d, want 200", r.count())
	}
	l := r.summary()
	if !l.Capped || l.P50 != 150 || l.P99 != 199 || l.P999 != 200 {
		t.Errorf("capped summary %+v", l)
	}
	r.reset()
	for i := 1; i <= 10; i++ {
		r.add(time.Duration(i) * time.Millisecond)
	}
	if l := r.summary(); l.Capped || l.P50 != 5*time.Millisecond || l.P99 != 10*time.Millisecond {
		t.Errorf("after reset: %+v", l)
	}
}

func TestFmtDur(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                         "-",
		87 * time.Microsecond:     "87µs",
		999 * time.Microsecond:    "999µs",
		1234 * time.Microsecond:   "1.23ms",
		12345 * time.Microsecond:  "12.3ms",
		1200 * time.Millisecond:   "1.20s",
		87*time.Microsecond + 400: "87µs",
	} {
		if got := fmtDur(d); got != want {
			t.Errorf("fmtDur(%v) = %q, want %q", d, got, want)
		}
	}
}

func sampleReport() *Report {
	return &Report{
		Machine:  "test CPU, 2 CPUs",
		Settings: "5s per scenario",
		Rows: []Row{
			{Scenario: "floor", Kind: FloorGRPC, Load: "32 callers", Rate: 20000, P50: 900 * time.Microsecond, P99: 2 * time.Millisecond,
				P999: 3 * time.Millisecond, CPU: 3 * time.Second, PeakRSS: 25e6, OK: 100000},
			{Scenario: "fixed-0", Kind: SidecarGRPC, Batching: "fixed 0", Load: "32 callers", Rate: 17000, P50: 1500 * time.Microsecond,
				P99: 4 * time.Millisecond, P999: 6 * time.Millisecond, CPU: 8500 * time.Millisecond, PeakRSS: 90e6, OK: 85000,
				Cache: CacheCount{Read: true, Lookups: 102001}},
			{Scenario: "off", Kind: SidecarGRPC, Batching: "off", Load: "32 callers", Failed: "exited before serving"},
			{Scenario: "half", Kind: HalfRate, Batching: "fixed 0", Load: "open 8500/s, 32 workers", Rate: 8500, P50: 300 * time.Microsecond,
				P99: 1800 * time.Microsecond, P999: 3 * time.Millisecond, CPU: 4 * time.Second, PeakRSS: 95e6, OK: 42500},
			{Scenario: "http-floor", Kind: FloorHTTP, Load: "32 callers", Rate: 15000, P50: time.Millisecond, P99: 3 * time.Millisecond,
				P999: 4 * time.Millisecond, CPU: 3 * time.Second, PeakRSS: 25e6, OK: 75000},
			{Scenario: "http", Kind: SidecarHTTP, Batching: "fixed 0", Load: "32 callers", Rate: 6000, P50: 5 * time.Millisecond,
				P99: 9 * time.Millisecond, P999: 12 * time.Millisecond, CPU: 6 * time.Second, PeakRSS: 210e6, OK: 30000, Errors: 2},
			{Scenario: "batch", Kind: BatchRPC, Batching: "fixed 0", Load: "4 callers x 256 VMs", Rate: 150, Predictions: 38400,
				P50: 25 * time.Millisecond, P99: 40 * time.Millisecond, CPU: 9 * time.Second, PeakRSS: 120e6, OK: 750,
				Cache: CacheCount{Read: true, Lookups: 230656}},
			{Scenario: "ceiling", Kind: Ceiling, Load: "2 sessions x 1 thread(s)", Rate: 200, Predictions: 51200, P50: 9 * time.Millisecond,
				P99: 20 * time.Millisecond, CPU: 10 * time.Second, OK: 1000},
		},
		Legend: []string{"floor  the no-op server"},
	}
}

// columnStarts returns the rune offsets where each cell of a table line starts (cells are two or
// more spaces apart; no cell of the sample holds two spaces in a row).
func columnStarts(line string) []int {
	var starts []int
	r := []rune(line)
	for i := range r {
		if r[i] != ' ' && (i == 0 || (i >= 2 && r[i-1] == ' ' && r[i-2] == ' ')) {
			starts = append(starts, i)
		}
	}
	return starts
}

func TestWriteTable(t *testing.T) {
	var b strings.Builder
	if err := sampleReport().WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Log("\n" + out)
	lines := strings.Split(out, "\n")
	find := func(prefix string) string {
		for _, l := range lines {
			if strings.HasPrefix(l, prefix) {
				return l
			}
		}
		t.Fatalf("no line starting with %q in\n%s", prefix, out)
		return ""
	}
	header := find("scenario ")
	floor := find("floor ")
	fixed := find("fixed-0 ")
	// Right-aligned numeric columns: every cell of a row ends where its header ends.
	ends := func(line string) []int {
		var e []int
		r := []rune(line)
		for i := range r {
			if r[i] != ' ' && (i == len(r)-1 || r[i+1] == ' ') {
				e = append(e, i)
			}
		}
		return e
	}
	he, fe, xe := ends(header), ends(floor), ends(fixed)
	// The last 9 columns (req/s .. cache hits) are right-aligned and single words.
	if len(he) < 9 || len(fe) < 9 || len(xe) < 9 {
		t.Fatalf("too few cells: %q %q %q", header, floor, fixed)
	}
	// (Header cells hold spaces, so theirs are a superset.)
	if !subset(fe[len(fe)-9:], he) || !subset(xe[len(xe)-9:], he) || !slices.Equal(fe[len(fe)-9:], xe[len(xe)-9:]) {
		t.Errorf("numeric columns misaligned:\n%s\n%s\n%s", header, floor, fixed)
	}
	if s := columnStarts(header); len(s) < 4 || columnStarts(fixed)[2] != s[2] {
		t.Errorf("left columns misaligned:\n%s\n%s", header, fixed)
	}
	for _, want := range []struct{ line, cells string }{
		{floor, "20000  900µs  2.00ms  3.00ms  0.030  25  100%  0  -"},
		{fixed, "17000  1.50ms  4.00ms  6.00ms  0.100  90  85%  0  0/102001"},
		{find("half "), "8500  300µs  1.80ms  3.00ms  0.094  95  -  0  -"},
		{find("http "), "6000  5.00ms  9.00ms  12.0ms  0.200  210  40%  2  -"},
		{find("batch "), "150  38400  25.0ms  40.0ms  0.047  120  75%  0  0/230656"},
		{find("ceiling "), "200  51200  9.00ms  20.0ms  0.039  -  100%  0  -"},
	} {
		if got := strings.Join(strings.Fields(want.line), "  "); !strings.HasSuffix(got, want.cells) {
			t.Errorf("row %q: want it to end with %q", want.line, want.cells)
		}
	}
	if l := find("off "); !strings.HasSuffix(strings.Join(strings.Fields(l), " "), "32 callers failed") {
		t.Errorf("failed row: %q", l)
	}
	find("off failed: exited before serving")
	for _, want := range []string{
		"machine:  test CPU, 2 CPUs",
		"floor  the no-op server",
		"targets (issue 3):",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// Every line of the unary table has the same width in runes or less (trailing spaces cut).
	for _, l := range lines {
		if utf8.RuneCountInString(l) > 0 && strings.HasSuffix(l, " ") {
			t.Errorf("trailing space: %q", l)
		}
	}
}

func subset(a, b []int) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

func TestTargets(t *testing.T) {
	ts := sampleReport().Targets()
	got := map[string]string{}
	for _, tg := range ts {
		got[strings.Fields(tg.Name)[0]] = tg.Verdict + " | " + tg.Measured
	}
	for prefix, want := range map[string]string{
		"unary":     "met | fixed-0: 85% (17000 of 20000 req/s; cache hits 0 of 102001)",
		"p99":       "met | fixed 0 at open 8500/s, 32 workers: p99 1.80ms",
		"batch":     "met | 75% (38400 of 51200 predictions/s; cache hits 0 of 230656)",
		"HTTP/JSON": "MISSED by 30 points | 40% (6000 of 15000 req/s)",
		"sidecar":   "MISSED by 10 MB | max 210 MB (http)",
	} {
		if got[prefix] != want {
			t.Errorf("target %s: %q, want %q", prefix, got[prefix], want)
		}
	}
	if len(ts) != 5 {
		t.Errorf("%d targets, want 5", len(ts))
	}
	// Without the rows a target needs, it is left out.
	if ts := (&Report{Rows: sampleReport().Rows[:1]}).Targets(); len(ts) != 0 {
		t.Errorf("targets from the floor alone: %+v", ts)
	}
}

func TestParseProc(t *testing.T) {
	stat := []byte("4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 37 0 0 20 0 9 0 100 0 0\n")
	cpu, err := parseStatCPU(stat)
	if err != nil || cpu != 2870*time.Millisecond {
		t.Errorf("parseStatCPU = %v, %v; want 2.87s", cpu, err)
	}
	if _, err := parseStatCPU([]byte("12 (x) S 1 2")); err == nil {
		t.Error("short stat: no error")
	}
	rss, err := parseHWM([]byte("Name:\tx\nVmPeak:\t  9999 kB\nVmHWM:\t   51200 kB\nVmRSS:\t 100 kB\n"))
	if err != nil || rss != 51200<<10 {
		t.Errorf("parseHWM = %v, %v", rss, err)
	}
	if _, err := parseHWM([]byte("Name:\tx\n")); err == nil {
		t.Error("no VmHWM: no error")
	}
	// This process: some CPU used, some memory resident.
	if c, err := procCPU(0); err != nil || c < 0 {
		t.Errorf("procCPU(self) = %v, %v", c, err)
	}
	if r, err := procPeakRSS(0); err != nil || r < 1<<20 {
		t.Errorf("procPeakRSS(self) = %v, %v", r, err)
	}
}

func TestSidecarConfig(t *testing.T) {
	base, err := examples.FS.ReadFile("configs/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, s := range append(scenarios(), scenario{name: "default"}) {
		if s.kind != SidecarGRPC && s.name != "default" {
			continue
		}
		t.Run(s.name, func(t *testing.T) {
			b, err := sidecarConfig(base, s.batching, 2000)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, s.name+".yaml")
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Load(path, examples.FS) // strict: an unknown key fails
			if err != nil {
				t.Fatalf("%v\n%s", err, b)
			}
			if err := cfg.Validate(); err != nil {
				t.Fatalf("%v\n%s", err, b)
			}
			if cfg.Listen.GRPC != "127.0.0.1:0" || cfg.Listen.HTTP != "127.0.0.1:0" || cfg.Limits.MaxBatchVMs != 2000 || cfg.Limits.MaxMessageBytes < 4<<20 {
				t.Errorf("listen %+v limits %+v", cfg.Listen, cfg.Limits)
			}
			if len(cfg.Models) != 3 {
				t.Fatalf("%d models", len(cfg.Models))
			}
			for _, m := range cfg.Models {
				bc := m.Batching
				switch s.name {
				case "off":
					if !bc.Disabled {
						t.Errorf("%s: batching not disabled: %+v", m.Name, bc)
					}
				case "fixed-250us":
					if bc.Disabled || bc.Adaptive || bc.MaxQueueDelay != 250*time.Microsecond {
						t.Errorf("%s: %+v", m.Name, bc)
					}
				case "fixed-1ms":
					if bc.MaxQueueDelay != time.Millisecond {
						t.Errorf("%s: %+v", m.Name, bc)
					}
				case "adaptive":
					if !bc.Adaptive || bc.MaxQueueDelay <= 0 {
						t.Errorf("%s: %+v", m.Name, bc)
					}
				case "fixed-0", "default":
					if bc.Disabled || bc.Adaptive || bc.MaxQueueDelay != 0 {
						t.Errorf("%s: %+v", m.Name, bc)
					}
				}
			}
		})
	}
	if _, err := sidecarConfig([]byte("models: []\n"), nil, 1); err == nil {
		t.Error("no models: no error")
	}
}

func TestJSONBody(t *testing.T) {
	j := newJSONBody(3)
	for _, n := range []uint64{0, 1, 123456, stampBase - 1, stampBase, stampBase + 7, 987654_321098_765432, stampMax - 1, stampMax + 5} {
		j.set(n)
		var req aipb.BandwidthRequest
		if err := protojson.Unmarshal(j.b, &req); err != nil {
			t.Fatalf("n=%d: %v: %s", n, err, j.b)
		}
		w := window(3)
		Stamp(w, n)
		if len(req.HistoricalMetrics) != 60 || req.VmId != "vm-3" || req.HorizonMinutes != horizon {
			t.Fatalf("n=%d: %+v", n, &req)
		}
		for i, got := range req.HistoricalMetrics {
			if math.Abs(got-w[i]) > 1e-12 {
				t.Errorf("n=%d: value %d is %v, Stamp wrote %v", n, i, got, w[i])
			}
		}
	}
}

// The load loops run on testing/synctest's fake clock: calls that "take" time sleep in the bubble,
// so the counts below are exact.
func TestClosedLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder(1 << 16)
		var calls atomic.Int64
		var marked time.Time
		t0 := time.Now()
		res := closedLoop(t.Context(), 3, phase{Warmup: 20 * time.Millisecond, Duration: 100 * time.Millisecond},
			func(ctx context.Context, w int) error {
				if n := calls.Add(1); n%10 == 0 {
					return errors.New("every tenth fails")
				}
				time.Sleep(time.Millisecond)
				return nil
			}, rec, func() { marked = time.Now() })
		if marked.Sub(t0) != 20*time.Millisecond {
			t.Errorf("atStart called at %v, want after the 20ms warmup", marked.Sub(t0))
		}
		// 3 workers x 100 1ms-calls in the window, plus the failures between them.
		if res.OK != 300 || res.Errors == 0 || res.FirstErr == nil || res.OK+res.Errors >= calls.Load() {
			t.Errorf("result %+v of %d calls, want 300 ok (the warmup's do not count)", res, calls.Load())
		}
		if res.Elapsed != 100*time.Millisecond || res.Rate() != 3000 {
			t.Errorf("elapsed %v, rate %v; want 100ms, 3000/s", res.Elapsed, res.Rate())
		}
		if l := rec.summary(); l.P50 != time.Millisecond || l.P999 != time.Millisecond {
			t.Errorf("latencies %+v, want 1ms", l)
		}

		// A dead server's calls fail at once: workers give up rather than spin for the whole window.
		t0 = time.Now()
		res = closedLoop(t.Context(), 2, phase{Duration: 10 * time.Second}, func(context.Context, int) error {
			return errors.New("refused")
		}, rec, func() {})
		if time.Since(t0) != 0 || res.OK != 0 || res.Errors != 2*maxConsecutiveErrors {
			t.Errorf("failing calls: %+v after %v", res, time.Since(t0))
		}
	})
}

func TestOpenLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder(1 << 16)
		var calls atomic.Int64
		res := openLoop(t.Context(), 4, 2000, phase{Warmup: 50 * time.Millisecond, Duration: 200 * time.Millisecond},
			func(ctx context.Context, w int) error { calls.Add(1); return nil }, rec, func() {})
		// 2000/s for 250ms: 500 arrivals, 0.5ms apart; the 400 from 50ms on are in the window.
		if calls.Load() != 500 || res.OK != 400 || res.Dropped != 0 || res.Errors != 0 {
			t.Errorf("result %+v of %d calls, want 400 ok of 500", res, calls.Load())
		}
		if res.Elapsed != 199500*time.Microsecond {
			t.Errorf("elapsed %v, want 199.5ms (the last arrival)", res.Elapsed)
		}

		// A worker that cannot keep up: one arrival runs, one waits in the queue, the rest are
		// dropped, and the run still ends on time.
		block := make(chan struct{})
		done := make(chan loadResult)
		go func() {
			done <- openLoop(t.Context(), 1, 1000, phase{Duration: 100 * time.Millisecond},
				func(ctx context.Context, w int) error { <-block; return nil }, rec, func() {})
		}()
		time.Sleep(150 * time.Millisecond)
		close(block)
		res = <-done
		if res.OK != 2 || res.Dropped != 98 {
			t.Errorf("blocked worker: %+v, want 2 ok and 98 dropped", res)
		}
		if l := rec.summary(); l.P999 != 150*time.Millisecond {
			t.Errorf("latencies %+v: the queued call waited 150ms, and that counts", l)
		}
	})
}

func TestValidate(t *testing.T) {
	ok := Config{Command: []string{"x"}, Embedded: examples.FS}
	if err := ok.Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	bad := Config{Duration: -1, Concurrency: -1, Conns: 100, BatchVMs: -1, Rate: -1, Only: []string{"floor", "nope"}}
	err := bad.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"duration", "concurrency", "conns", "batch-vms", "rate", `unknown scenario "nope"`, "command", "embedded"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

func TestNoopServer(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	type addrs struct{ grpc, http string }
	ready := make(chan addrs, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- ServeNoop(ctx, "127.0.0.1:0", "127.0.0.1:0", func(g, h string) { ready <- addrs{g, h} })
	}()
	var a addrs
	select {
	case a = <-ready:
	case err := <-errc:
		t.Fatal(err)
	}
	call, cleanup, err := grpcCaller(ctx, a.grpc, 2, 1, true)
	if err != nil {
		t.Fatal(err)
	}
	for w := range 2 {
		if err := call(ctx, w); err != nil {
			t.Error(err)
		}
	}
	cleanup()
	bcall, cleanup, err := batchCaller(ctx, a.grpc, 1, 1, 5, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := bcall(ctx, 0); err != nil {
		t.Error(err)
	}
	cleanup()
	hcall, cleanup, err := httpCaller(ctx, "http://"+a.http, 2, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := hcall(ctx, 1); err != nil {
		t.Error(err)
	}
	cleanup()
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("ServeNoop: %v", err)
	}
}

// sidecarBinary builds the sidecar (once per test binary: later calls link from the build cache)
// and returns its path and the ONNX Runtime library's.
func sidecarBinary(t *testing.T) (bin, lib string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and starts the sidecar")
	}
	lib, err := onnx.LibraryPath("")
	if err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(t.TempDir(), "sidecar")
	build := exec.Command("go", "build", "-o", bin, "./cmd/sidecar")
	build.Dir = "../.."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin, lib
}

// TestSmoke runs the real harness briefly: the built sidecar binary as the floor, as the sidecar
// with batching off, and as the cache-hit scenario, each as its own process.
func TestSmoke(t *testing.T) {
	bin, lib := sidecarBinary(t)
	var progress strings.Builder
	rep, err := Run(t.Context(), Config{
		Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond, Concurrency: 4,
		Only: []string{"floor", "off", "cache-hit"}, Command: []string{bin}, Embedded: examples.FS, ONNXRuntime: lib,
		StartTimeout: 30 * time.Second,
	}, &progress)
	t.Log("\n" + progress.String())
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := rep.WriteTable(&out); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	if len(rep.Rows) != 3 {
		t.Fatalf("%d rows", len(rep.Rows))
	}
	for _, x := range rep.Rows {
		if x.Failed != "" || x.Rate <= 0 || x.P50 <= 0 || x.P99 < x.P50 || x.P999 < x.P99 || x.CPU < 0 || x.PeakRSS < 1<<20 || x.Errors != 0 {
			t.Errorf("row %+v", x)
		}
	}
	// The sidecar's cache counted every call: none answered from it with distinct inputs, nearly
	// all with repeated ones.
	if c := rep.Rows[0].Cache; c.Read {
		t.Errorf("floor: cache count %+v from a no-op server", c)
	}
	if c, x := rep.Rows[1].Cache, rep.Rows[1]; !c.Read || c.Hits != 0 || c.Lookups <= x.OK {
		t.Errorf("off: cache count %+v for %d calls in the window", c, x.OK)
	}
	if c, x := rep.Rows[2].Cache, rep.Rows[2]; !c.Read || c.Lookups <= x.OK || c.Lookups-c.Hits > 4+1+c.Lookups/100 {
		t.Errorf("cache-hit: cache count %+v for %d calls in the window", c, x.OK)
	}
	// The table's rows carry positive numbers: req/s, the latencies, peak RSS, and the cache count.
	num := regexp.MustCompile(`^(floor|off|cache-hit)\s+grpc\s+\S+\s+4 callers\s+(\d+)\s+(\d+(\.\d+)?(µs|ms|s))\s+\S+\s+\S+\s+(\d+\.\d+|-)\s+(\d+)\s+(\d+)%\s+0\s+(-|\d+/\d+)$`)
	found := 0
	for l := range strings.Lines(out.String()) {
		m := num.FindStringSubmatch(strings.TrimRight(l, "\n"))
		if m == nil {
			continue
		}
		found++
		if rate, _ := strconv.Atoi(m[2]); rate <= 0 {
			t.Errorf("req/s %q in %q", m[2], l)
		}
		if rss, _ := strconv.Atoi(m[7]); rss <= 0 {
			t.Errorf("RSS %q in %q", m[7], l)
		}
		if (m[1] == "floor") != (m[9] == "-") {
			t.Errorf("cache count %q in %q", m[9], l)
		}
	}
	if found != 3 {
		t.Errorf("%d table rows matched, want 3:\n%s", found, out.String())
	}
	if strings.Contains(out.String(), "REFUSED") {
		t.Errorf("a result was refused:\n%s", out.String())
	}
}

// TestCacheCheck runs scenarios against a real sidecar process, its cache on as in the default
// config, and checks that the harness refuses a result the cache answered: a scenario other than
// the cache's that repeats its inputs, over each protocol and the batch RPC, and the cache-hit
// scenario when its inputs do not repeat; the same scenarios with the inputs they should have
// pass.
func TestCacheCheck(t *testing.T) {
	bin, lib := sidecarBinary(t)
	var progress strings.Builder
	t.Cleanup(func() { t.Log("\n" + progress.String()) })
	r, err := newRunner(Config{Duration: time.Second, Warmup: 100 * time.Millisecond, Concurrency: 4, BatchVMs: 32, BatchConcurrency: 2,
		Command: []string{bin}, Embedded: examples.FS, ONNXRuntime: lib, StartTimeout: 30 * time.Second}, &progress)
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(r.dir)
	off := map[string]any{"disabled": true}
	for _, tc := range []struct {
		s           scenario
		wantRefusal string // "": accepted
	}{
		{scenario{name: "off-repeating", kind: SidecarGRPC, batching: off, repeats: true}, "the prediction cache answered"},
		{scenario{name: "off", kind: SidecarGRPC, batching: off}, ""},
		{scenario{name: "batch-repeating", kind: BatchRPC, repeats: true}, "the prediction cache answered"},
		{scenario{name: "batch", kind: BatchRPC}, ""},
		{scenario{name: "http-repeating", kind: SidecarHTTP, repeats: true}, "the prediction cache answered"},
		{scenario{name: "http", kind: SidecarHTTP}, ""},
		{scenario{name: "cache-hit-distinct", kind: CacheHit}, "did not measure the cache's hit path"},
		{scenario{name: "cache-hit", kind: CacheHit, repeats: true}, ""},
	} {
		t.Run(tc.s.name, func(t *testing.T) {
			row, err := r.run(t.Context(), tc.s)
			t.Logf("%s; cache %+v", summary(row), row.Cache)
			if tc.wantRefusal == "" {
				if err != nil || row.Refused {
					t.Fatalf("refused: %v", err)
				}
				if !row.Cache.Read || row.Cache.Lookups < row.OK {
					t.Errorf("cache count %+v for %d calls", row.Cache, row.OK)
				}
				return
			}
			if err == nil || !row.Refused || !strings.Contains(err.Error(), tc.wantRefusal) {
				t.Fatalf("want a refusal saying %q; got refused=%v, %v", tc.wantRefusal, row.Refused, err)
			}
			// Refused, the row says so in the table and in the verdicts, and judges nothing.
			row.Failed = err.Error()
			rep := &Report{Rows: []Row{row}}
			var out strings.Builder
			if err := rep.WriteTable(&out); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), tc.s.name+" REFUSED: result refused: ") || !strings.Contains(out.String(), tc.wantRefusal) ||
				!strings.Contains(out.String(), "REFUSED: the prediction cache's answers do not measure the path named") {
				t.Errorf("table:\n%s", out.String())
			}
		})
	}
}

func TestMedianOfRounds(t *testing.T) {
	rows := []Row{
		{Scenario: "x", Rate: 100, P99: 3 * time.Millisecond, PeakRSS: 10, OK: 1, CPU: time.Second},
		{Scenario: "x", Rate: 300, P99: 1 * time.Millisecond, PeakRSS: 30, OK: 2, CPU: time.Second},
		{Scenario: "x", Rate: 200, P99: 2 * time.Millisecond, PeakRSS: 20, OK: 3, CPU: time.Second},
		{Scenario: "x", Failed: "boom"},
	}
	m := median(rows)
	if m.Rate != 200 || m.P99 != 2*time.Millisecond || m.PeakRSS != 30 || m.OK != 6 || m.CPU != 3*time.Second || m.Failed != "" {
		t.Errorf("median %+v", m)
	}
	if m := median(rows[3:]); m.Failed != "boom" {
		t.Errorf("all failed: %+v", m)
	}
}

// canonicalRows turns raw windows into the bandwidth spec's canonical rows, as the sidecar does
// before its cache: the bytes its cache keys hash.
type canonicalRows struct {
	spec *features.Spec
	// mu guards seen and the counts.
	mu            sync.Mutex
	seen          map[string]struct{}
	rows, repeats int
}

func newCanonicalRows(t testing.TB) *canonicalRows {
	t.Helper()
	b, err := examples.FS.ReadFile("specs/bandwidth.yaml")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := features.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return &canonicalRows{spec: spec, seen: map[string]struct{}{}}
}

func (c *canonicalRows) key(raw []float64) (string, error) {
	dst := make([]float32, len(raw))
	if err := c.spec.Canonicalize(dst, raw); err != nil {
		return "", err
	}
	b := make([]byte, 0, 4*len(dst))
	for _, f := range dst {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
	}
	return string(b), nil
}

// add records one row and reports whether it was new.
func (c *canonicalRows) add(raw []float64) (bool, error) {
	k, err := c.key(raw)
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rows++
	if _, ok := c.seen[k]; ok {
		c.repeats++
		return false, nil
	}
	c.seen[k] = struct{}{}
	return true, nil
}

func (c *canonicalRows) counts() (rows, repeats int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rows, c.repeats
}

// TestStamp: rows stamped with different numbers differ after canonicalization, whatever windows
// they were stamped into (a property over random pairs, and every row of a long run in sequence),
// and every stamped value is a realistic error rate.
func TestStamp(t *testing.T) {
	c := newCanonicalRows(t)
	rng := rand.New(rand.NewPCG(1, 2))
	stamped := func(seed int, n uint64) []float64 {
		w := window(seed)
		Stamp(w, n)
		for _, i := range stampSlots {
			if w[i] < 0.001 || w[i] >= 0.002 {
				t.Fatalf("n=%d: error rate %v at %d", n, w[i], i)
			}
		}
		return w
	}
	// Random pairs of distinct numbers, in windows of random seeds (the same seed half the time).
	for range 5000 {
		n, m := rng.Uint64N(stampMax), rng.Uint64N(stampMax)
		if rng.IntN(4) == 0 { // neighbours, where one digit differs by one
			m = (n + 1 + rng.Uint64N(3)) % stampMax
		}
		if n == m {
			continue
		}
		s1, s2 := rng.IntN(1000), rng.IntN(1000)
		if rng.IntN(2) == 0 {
			s2 = s1
		}
		k1, err1 := c.key(stamped(s1, n))
		k2, err2 := c.key(stamped(s2, m))
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if k1 == k2 {
			t.Fatalf("rows %d (seed %d) and %d (seed %d) canonicalize alike", n, s1, m, s2)
		}
	}
	// A run: the numbers in sequence, from 1 and across each digit's carry, in a few windows.
	for _, start := range []uint64{1, 1e6 - 2500, 1e9 - 2500, 1e12 - 2500, 1e15 - 2500, stampMax - 2500} {
		for n := start; n < start+5000; n++ {
			if fresh, err := c.add(stamped(int(n%7), n%stampMax)); err != nil || !fresh {
				t.Fatalf("row %d repeats (err %v)", n, err)
			}
		}
	}
}

// recordingAI answers the bandwidth RPCs like the no-op server, recording every row it is sent.
type recordingAI struct {
	noopAI
	rows *canonicalRows
}

func (a recordingAI) PredictBandwidth(ctx context.Context, req *aipb.BandwidthRequest) (*aipb.BandwidthResponse, error) {
	if _, err := a.rows.add(req.HistoricalMetrics); err != nil {
		return nil, err
	}
	return a.noopAI.PredictBandwidth(ctx, req)
}

func (a recordingAI) PredictBandwidthBatch(ctx context.Context, req *aipb.BandwidthBatchRequest) (*aipb.BandwidthBatchResponse, error) {
	for _, vm := range req.Vms {
		if _, err := a.rows.add(vm.HistoricalMetrics); err != nil {
			return nil, err
		}
	}
	return a.noopAI.PredictBandwidthBatch(ctx, req)
}

// TestCallersDistinctRows drives each caller with several workers and connections against servers
// that canonicalize every row they get as the sidecar does: with distinct inputs no row repeats in
// the run, check calls included; the cache-hit scenario's inputs (distinct false) repeat on every
// call after each worker's first.
func TestCallersDistinctRows(t *testing.T) {
	const workers, calls = 4, 150
	for _, tc := range []struct {
		name     string
		distinct bool
		caller   func(ctx context.Context, grpcAddr, httpURL string, distinct bool) (callFunc, func(), error)
		perCall  int
	}{
		{"unary", true, func(ctx context.Context, g, _ string, d bool) (callFunc, func(), error) {
			return grpcCaller(ctx, g, workers, 3, d)
		}, 1},
		{"batch", true, func(ctx context.Context, g, _ string, d bool) (callFunc, func(), error) {
			return batchCaller(ctx, g, workers, 2, 17, d)
		}, 17},
		{"http", true, func(ctx context.Context, _, h string, d bool) (callFunc, func(), error) {
			return httpCaller(ctx, h, workers, d)
		}, 1},
		{"unary-repeating", false, func(ctx context.Context, g, _ string, d bool) (callFunc, func(), error) {
			return grpcCaller(ctx, g, workers, 1, d)
		}, 1},
		{"batch-repeating", false, func(ctx context.Context, g, _ string, d bool) (callFunc, func(), error) {
			return batchCaller(ctx, g, workers, 1, 5, d)
		}, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows := newCanonicalRows(t)
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			gs := grpc.NewServer()
			aipb.RegisterAIServiceServer(gs, recordingAI{rows: rows})
			go gs.Serve(l)
			defer gs.Stop()
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var req aipb.BandwidthRequest
				b, err := io.ReadAll(r.Body)
				if err == nil {
					err = protojson.Unmarshal(b, &req)
				}
				if err == nil {
					_, err = rows.add(req.HistoricalMetrics)
				}
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				r.Body = io.NopCloser(bytes.NewReader(b))
				NoopHTTPHandler().ServeHTTP(w, r)
			}))
			defer hs.Close()

			call, cleanup, err := tc.caller(t.Context(), l.Addr().String(), hs.URL, tc.distinct)
			if err != nil {
				t.Fatal(err)
			}
			defer cleanup()
			before, _ := rows.counts() // the check calls'
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					for range calls {
						if err := call(t.Context(), w); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			n, repeats := rows.counts()
			if n != before+workers*calls*tc.perCall {
				t.Fatalf("%d rows recorded, want %d + %d", n, before, workers*calls*tc.perCall)
			}
			if tc.distinct && repeats != 0 {
				t.Errorf("%d of %d rows repeated an earlier row of the run", repeats, n)
			}
			if !tc.distinct && repeats < workers*(calls-1)*tc.perCall {
				t.Errorf("repeating inputs: only %d of %d rows repeated", repeats, n)
			}
		})
	}
}

func TestParseCacheCount(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       CacheCount
		err        string
	}{
		{"both", "# HELP sidecar_cache_hits_total Prediction cache hits.\n# TYPE sidecar_cache_hits_total counter\nsidecar_cache_hits_total 12\nsidecar_cache_lookups_total 1.5e+06\nsidecar_cache_misses_total 1.499988e+06\n",
			CacheCount{Read: true, Hits: 12, Lookups: 1500000}, ""},
		{"cache off", "go_goroutines 12\nsidecar_requests_total{method=\"x\"} 5\n", CacheCount{}, ""},
		{"one of two", "sidecar_cache_hits_total 3\n", CacheCount{}, "found 1"},
		{"bad value", "sidecar_cache_hits_total x\nsidecar_cache_lookups_total 1\n", CacheCount{}, "bad value"},
		{"similar names", "sidecar_cache_hits_total_x 9\nsidecar_cache_hits_total 0\nsidecar_cache_lookups_total 4\n", CacheCount{Read: true, Lookups: 4}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseCacheCount(strings.NewReader(tc.text))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestCheckCacheCount(t *testing.T) {
	read := func(hits, lookups int64) CacheCount { return CacheCount{Read: true, Hits: hits, Lookups: lookups} }
	for _, tc := range []struct {
		name string
		c    CacheCount
		u    cacheUse
		err  string // "": accepted
	}{
		{"distinct, no hit", read(0, 1001), cacheUse{rows: 1000}, ""},
		{"one hit", read(1, 1001), cacheUse{rows: 1000}, "answered 1 of 1001"},
		{"batch rows hit", read(255*40, 256*41), cacheUse{rows: 256 * 40}, "answered 10200 of 10496 lookups (97.2%)"},
		{"cache off", CacheCount{}, cacheUse{rows: 1000}, ""},
		{"counters of another load", read(0, 10), cacheUse{rows: 1000}, "do not describe this load"},
		{"cache-hit", read(99_960, 100_001), cacheUse{expectHits: true, rows: 100_000, distinctInputs: 33}, ""},
		{"cache-hit at the bound", read(100_001-33-1000, 100_001), cacheUse{expectHits: true, rows: 100_000, distinctInputs: 33}, ""},
		{"cache-hit one miss too many", read(100_001-33-1001, 100_001), cacheUse{expectHits: true, rows: 100_000, distinctInputs: 33}, "1034 misses, at most 1033"},
		{"cache-hit, no hits", read(0, 100_001), cacheUse{expectHits: true, rows: 100_000, distinctInputs: 33}, "did not measure the cache's hit path"},
		{"cache-hit, cache off", CacheCount{}, cacheUse{expectHits: true, rows: 10}, "the prediction cache is off"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkCache(tc.c, tc.u)
			if tc.err == "" {
				if err != nil {
					t.Errorf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("error %v, want %q", err, tc.err)
			}
		})
	}
}

// TestRefusedRow: a refused row shows no figures, says REFUSED in its row, its message and the
// verdicts, and no target is judged on it; a refused round refuses the row.
func TestRefusedRow(t *testing.T) {
	rep := sampleReport()
	for i := range rep.Rows {
		if rep.Rows[i].Scenario == "batch" {
			rep.Rows[i].Refused = true
			rep.Rows[i].Cache = CacheCount{Read: true, Hits: 229000, Lookups: 230656}
			rep.Rows[i].Failed = "result refused: the prediction cache answered 229000 of 230656 lookups"
		}
	}
	var b strings.Builder
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Log("\n" + out)
	for _, want := range []string{
		"batch     grpc      fixed 0   4 callers x 256 VMs       REFUSED",
		"batch REFUSED: result refused: the prediction cache answered 229000 of 230656 lookups",
		"batch: no target judged on it",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Contains(out, "38400") || strings.Contains(out, "predictions/s; cache") {
		t.Errorf("the refused row's figures are shown or judged:\n%s", out)
	}
	for _, tg := range rep.Targets() {
		if tg.Met && strings.HasPrefix(tg.Name, "batch") {
			t.Errorf("target %+v met on a refused row", tg)
		}
	}
	// Rounds: one refused among good ones refuses the row.
	good := Row{Scenario: "x", Rate: 100, OK: 1, Cache: CacheCount{Read: true, Lookups: 10}}
	bad := Row{Scenario: "x", Rate: 900, OK: 1, Refused: true, Failed: "result refused: hits", Cache: CacheCount{Read: true, Hits: 9, Lookups: 10}}
	if m := median([]Row{good, bad, good}); !m.Refused || m.Failed != "round 2 of 3: result refused: hits" {
		t.Errorf("median of rounds with a refused one: %+v", m)
	}
	if m := median([]Row{good, good}); m.Refused || m.Cache != (CacheCount{Read: true, Lookups: 20}) {
		t.Errorf("median of good rounds: %+v", m)
	}
}
