package bench

import (
	"context"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/novacron/sidecar/backends/onnx"
	"github.com/novacron/sidecar/config"
	"github.com/novacron/sidecar/examples"
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
				P99: 4 * time.Millisecond, P999: 6 * time.Millisecond, CPU: 8500 * time.Millisecond, PeakRSS: 90e6, OK: 85000},
			{Scenario: "off", Kind: SidecarGRPC, Batching: "off", Load: "32 callers", Failed: "exited before serving"},
			{Scenario: "half", Kind: HalfRate, Batching: "fixed 0", Load: "open 8500/s, 32 workers", Rate: 8500, P50: 300 * time.Microsecond,
				P99: 1800 * time.Microsecond, P999: 3 * time.Millisecond, CPU: 4 * time.Second, PeakRSS: 95e6, OK: 42500},
			{Scenario: "http-floor", Kind: FloorHTTP, Load: "32 callers", Rate: 15000, P50: time.Millisecond, P99: 3 * time.Millisecond,
				P999: 4 * time.Millisecond, CPU: 3 * time.Second, PeakRSS: 25e6, OK: 75000},
			{Scenario: "http", Kind: SidecarHTTP, Batching: "fixed 0", Load: "32 callers", Rate: 6000, P50: 5 * time.Millisecond,
				P99: 9 * time.Millisecond, P999: 12 * time.Millisecond, CPU: 6 * time.Second, PeakRSS: 210e6, OK: 30000, Errors: 2},
			{Scenario: "batch", Kind: BatchRPC, Batching: "fixed 0", Load: "4 callers x 256 VMs", Rate: 150, Predictions: 38400,
				P50: 25 * time.Millisecond, P99: 40 * time.Millisecond, CPU: 9 * time.Second, PeakRSS: 120e6, OK: 750},
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
	// The last 8 columns (req/s .. errors) are right-aligned and single words.
	if len(he) < 8 || len(fe) < 8 || len(xe) < 8 {
		t.Fatalf("too few cells: %q %q %q", header, floor, fixed)
	}
	// (Header cells hold spaces, so theirs are a superset.)
	if !subset(fe[len(fe)-8:], he) || !subset(xe[len(xe)-8:], he) || !slices.Equal(fe[len(fe)-8:], xe[len(xe)-8:]) {
		t.Errorf("numeric columns misaligned:\n%s\n%s\n%s", header, floor, fixed)
	}
	if s := columnStarts(header); len(s) < 4 || columnStarts(fixed)[2] != s[2] {
		t.Errorf("left columns misaligned:\n%s\n%s", header, fixed)
	}
	for _, want := range []struct{ line, cells string }{
		{floor, "20000  900µs  2.00ms  3.00ms  0.030  25  100%  0"},
		{fixed, "17000  1.50ms  4.00ms  6.00ms  0.100  90  85%  0"},
		{find("half "), "8500  300µs  1.80ms  3.00ms  0.094  95  -  0"},
		{find("http "), "6000  5.00ms  9.00ms  12.0ms  0.200  210  40%  2"},
		{find("batch "), "150  38400  25.0ms  40.0ms  0.047  120  75%  0"},
		{find("ceiling "), "200  51200  9.00ms  20.0ms  0.039  -  100%  0"},
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
		"unary":     "met | fixed-0: 85% (17000 of 20000 req/s)",
		"p99":       "met | fixed 0 at open 8500/s, 32 workers: p99 1.80ms",
		"batch":     "met | 75% (38400 of 51200 predictions/s)",
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
	for _, k := range []int{0, 1, 123456, perturbSpan - 1, perturbSpan + 7} {
		j.set(k)
		var req aipb.BandwidthRequest
		if err := protojson.Unmarshal(j.b, &req); err != nil {
			t.Fatalf("k=%d: %v: %s", k, err, j.b)
		}
		w := window(3)
		if len(req.HistoricalMetrics) != 60 || req.VmId != "vm-3" || req.HorizonMinutes != horizon {
			t.Fatalf("k=%d: %+v", k, &req)
		}
		if !slices.Equal(req.HistoricalMetrics[:59], w[:59]) {
			t.Errorf("k=%d: window changed", k)
		}
		if got, want := req.HistoricalMetrics[59], perturbed(k); math.Abs(got-want) > 1e-15 {
			t.Errorf("k=%d: last value %v, want %v", k, got, want)
		}
	}
	if perturbed(1) == perturbed(2) || window(1)[0] == window(2)[0] {
		t.Error("inputs not distinct")
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
	bcall, cleanup, err := batchCaller(ctx, a.grpc, 1, 1, 5)
	if err != nil {
		t.Fatal(err)
	}
	if err := bcall(ctx, 0); err != nil {
		t.Error(err)
	}
	cleanup()
	hcall, cleanup, err := httpCaller(ctx, "http://"+a.http, 2)
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

// TestSmoke runs the real harness briefly: the built sidecar binary as the floor and as the sidecar
// with batching off, each as its own process.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts the sidecar")
	}
	lib, err := onnx.LibraryPath("")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "sidecar")
	build := exec.Command("go", "build", "-o", bin, "./cmd/sidecar")
	build.Dir = "../.."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var progress strings.Builder
	rep, err := Run(t.Context(), Config{
		Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond, Concurrency: 4,
		Only: []string{"floor", "off"}, Command: []string{bin}, Embedded: examples.FS, ONNXRuntime: lib,
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
	if len(rep.Rows) != 2 {
		t.Fatalf("%d rows", len(rep.Rows))
	}
	for _, x := range rep.Rows {
		if x.Failed != "" || x.Rate <= 0 || x.P50 <= 0 || x.P99 < x.P50 || x.P999 < x.P99 || x.CPU < 0 || x.PeakRSS < 1<<20 || x.Errors != 0 {
			t.Errorf("row %+v", x)
		}
	}
	// The table's rows carry positive numbers: req/s, the latencies, peak RSS.
	num := regexp.MustCompile(`^(floor|off)\s+grpc\s+\S+\s+4 callers\s+(\d+)\s+(\d+(\.\d+)?(µs|ms|s))\s+\S+\s+\S+\s+(\d+\.\d+|-)\s+(\d+)\s+(\d+)%\s+0$`)
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
	}
	if found != 2 {
		t.Errorf("%d table rows matched, want 2:\n%s", found, out.String())
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
