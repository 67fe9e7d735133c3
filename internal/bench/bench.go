// Package bench is the load harness of issue 3 (`sidecar bench`). It starts each server under test
// as its own process, so that the server's CPU time and peak memory can be read from /proc
// separately from the load generator's, and drives it from this process:
//
//   - the floor: a no-op gRPC server and a no-op net/http handler answering the bandwidth calls
//     with constants of the same shape (ServeNoop, run by `sidecar bench-noop`);
//   - the sidecar (`sidecar serve -config`, with a copy of the default config whose models'
//     batching is set per scenario): batching off, fixed delays, adaptive;
//   - the sidecar at half the best variant's measured rate, open loop, for its p99;
//   - HTTP/JSON against the no-op handler and the sidecar;
//   - the batch RPC's predictions/s against the ceiling: the same ONNX model run in this process,
//     at the same batch size, sessions and threads, in a loop.
//
// A scenario measures the path it names. Every row a scenario sends differs from every other row
// it sends (see Stamp), except in the cache-hit scenario, whose callers repeat their inputs; and
// after each scenario the sidecar's own counters (sidecar_cache_hits_total at its /metrics) are
// read, and the result is refused, the run failing, if the prediction cache answered any call of a
// scenario that is not the cache's, or too few of the cache's own (see checkCache).
//
// Every load is bounded in time and count, every server listens on loopback only, and every
// server process is stopped (SIGTERM, then SIGKILL) before the next one starts.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/novacron/sidecar/backends/onnx"
)

// Config is one bench run. The zero value of every field but Command and Embedded is valid.
type Config struct {
	// Duration is the measured window of each scenario. 0: 5s.
	Duration time.Duration
	// Warmup is the load before each window, made but not counted. 0: none.
	Warmup time.Duration
	// Concurrency is the number of closed-loop callers of the unary scenarios, each with its own
	// input, and the worker pool of the open-loop ones. 0: 32.
	Concurrency int
	// Conns is the number of gRPC connections the callers share, round robin. 0: 1.
	Conns int
	// BatchVMs is the VMs per PredictBandwidthBatch call, and the rows per batch of the ceiling.
	// 0: 256.
	BatchVMs int
	// BatchConcurrency is the number of callers of the batch RPC. 0: 4.
	BatchConcurrency int
	// Rate, when above 0, runs every unary scenario but "half" open loop at this many calls per
	// second (Concurrency workers) instead of closed loop.
	Rate float64
	// Only names the scenarios to run (see Scenarios); empty: all.
	Only []string
	// Command starts a server: the sidecar binary and any leading arguments; Run appends
	// "serve -config FILE ..." or "bench-noop ...". Required.
	Command []string
	// Embedded holds configs/default.yaml (the base of every sidecar config), models/bandwidth.onnx
	// and specs/bandwidth.yaml (the ceiling's model). Required (examples.FS).
	Embedded fs.FS
	// ONNXRuntime is the library path for the ceiling and the sidecars; "": onnx.LibraryPath's search.
	ONNXRuntime string
	// StartTimeout bounds a server's start, model loading included. 0: 60s.
	StartTimeout time.Duration
	// Repeat runs the selected scenarios this many rounds, one after the other (so slow drifts of a
	// shared machine spread over every scenario alike), and reports each figure's median. 0: 1.
	Repeat int
}

func (c Config) withDefaults() Config {
	if c.Duration == 0 {
		c.Duration = 5 * time.Second
	}
	if c.Concurrency == 0 {
		c.Concurrency = 32
	}
	if c.Conns == 0 {
		c.Conns = 1
	}
	if c.BatchVMs == 0 {
		c.BatchVMs = 256
	}
	if c.BatchConcurrency == 0 {
		c.BatchConcurrency = 4
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = time.Minute
	}
	return c
}

// Validate reports every problem with c (after defaults).
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Duration < 0 || c.Duration > 10*time.Minute {
		bad("duration: %v is not in 0..10m", c.Duration)
	}
	if c.Warmup < 0 || c.Warmup > time.Minute {
		bad("warmup: %v is not in 0..1m", c.Warmup)
	}
	if c.Repeat < 0 || c.Repeat > 20 {
		bad("repeat: %d is not in 0..20", c.Repeat)
	}
	if c.Concurrency < 1 || c.Concurrency > 4096 {
		bad("concurrency: %d is not in 1..4096", c.Concurrency)
	}
	if c.Conns < 1 || c.Conns > 64 {
		bad("conns: %d is not in 1..64", c.Conns)
	}
	if c.BatchVMs < 1 || c.BatchVMs > 65536 {
		bad("batch-vms: %d is not in 1..65536", c.BatchVMs)
	}
	if c.BatchConcurrency < 1 || c.BatchConcurrency > 256 {
		bad("batch-concurrency: %d is not in 1..256", c.BatchConcurrency)
	}
	if c.Rate < 0 || c.Rate > 1e6 {
		bad("rate: %v is not in 0..1e6 calls/s", c.Rate)
	}
	known := Scenarios()
	for _, n := range c.Only {
		if !slices.Contains(known, n) {
			bad("only: unknown scenario %q (want some of %s)", n, strings.Join(known, ","))
		}
	}
	if len(c.Command) == 0 {
		bad("command: empty (the sidecar binary to start servers with)")
	}
	if c.Embedded == nil {
		bad("embedded: nil (the example files)")
	}
	return errors.Join(errs...)
}

// scenario is one line of the table.
type scenario struct {
	name string
	kind Kind
	// batching holds the keys set in every model's batching section of the default config, for
	// SidecarGRPC; the other sidecar kinds use the best SidecarGRPC variant run before them.
	batching map[string]any
	// label is the batching column; desc is the legend.
	label, desc string
	// rate, when above 0, drives this sidecar variant open loop at that many calls per second
	// (the low and medium loads of the adaptive-versus-fixed sweep).
	rate float64
	// fraction, for HalfRate and ShadowRate rows, is the share of the best variant's rate they
	// run at (zero: a half).
	fraction float64
	// repeats: each caller sends the same input on every call. Only the cache-hit scenario's
	// inputs repeat; every other scenario's rows are distinct. (Whether the cache may answer is
	// the kind's to say: only CacheHit's may; tests set repeats elsewhere to see the refusal.)
	repeats bool
}

// Loads of the sweep that sets adaptive batching against the fixed delays: low and medium open-loop
// rates; the saturating load is the closed-loop rows.
const (
	sweepLow    = 1000
	sweepMedium = 6000
)

// scenarios is the run order: the floor, the variants whose best the half-rate, HTTP and batch
// rows reuse, then those, then the ceiling.
func scenarios() []scenario {
	fixed := func(delay string) map[string]any { return map[string]any{"max_queue_delay": delay} }
	list := []scenario{
		{name: "floor", kind: FloorGRPC, desc: "no-op gRPC server (bench-noop): constant answers of the same shape; the cost of a gRPC call here"},
		{name: "off", kind: SidecarGRPC, batching: map[string]any{"disabled": true}, label: "off",
			desc: "sidecar, batching disabled: every call is its own model run"},
		{name: "fixed-0", kind: SidecarGRPC, batching: fixed("0s"), label: "fixed 0",
			desc: "sidecar, the default config's batching with max_queue_delay 0 (batches only what is already waiting)"},
		{name: "fixed-250us", kind: SidecarGRPC, batching: fixed("250us"), label: "fixed 250µs",
			desc: "sidecar, the default config's batching with max_queue_delay 250µs"},
		{name: "fixed-1ms", kind: SidecarGRPC, batching: fixed("1ms"), label: "fixed 1ms",
			desc: "sidecar, the default config's batching with max_queue_delay 1ms"},
		{name: "adaptive", kind: SidecarGRPC, batching: map[string]any{"adaptive": true}, label: "adaptive",
			desc: "sidecar, the default config's batching with adaptive: true (max_queue_delay 0 there means its adaptive default)"},
		{name: "half", kind: HalfRate,
			desc: "the best batching variant above, open loop at half its measured rate (the issue's p99 target)"},
		{name: "half-floor", kind: HalfFloor,
			desc: "the no-op gRPC server at the rate of half: what the machine and the client add to that p99"},
		{name: "shadow", kind: ShadowRate,
			desc: "half's load with every call also shadowed (routes.predict_bandwidth.shadow at 100%) onto a legacy_grpc target served by the no-op server: what shadowing costs the primary (the shadow target's own work is elsewhere)"},
		{name: "drift-off", kind: DriftOff,
			desc: "the best batching variant with the models' drift profiles removed (every other sidecar row monitors drift, as the default config does): what drift monitoring costs"},
		{name: "quarter", kind: HalfRate, fraction: 0.25,
			desc: "the best batching variant, open loop at a quarter of its measured rate"},
		{name: "shadow-quarter", kind: ShadowRate, fraction: 0.25,
			desc: "quarter's load with every call also shadowed as in shadow: the same cost where the machine has room for the shadow's work"},
		{name: "http-floor", kind: FloorHTTP, desc: "no-op net/http handler: reads the body, writes a constant JSON answer"},
		{name: "http", kind: SidecarHTTP, desc: "sidecar, POST /api/v1/predict, best batching variant"},
		{name: "batch", kind: BatchRPC, desc: "sidecar, PredictBandwidthBatch, best batching variant"},
		{name: "ceiling", kind: Ceiling, desc: "ONNX Runtime in the bench process: the bandwidth model, same batch size, sessions and threads, in a loop"},
		{name: "cache-hit", kind: CacheHit, label: "default", repeats: true,
			desc: "sidecar, default config, each caller repeating its own input: answered from the prediction cache"},
		{name: "kserve", kind: RemoteKServe, desc: "sidecar whose bandwidth model runs on a second sidecar process (backend kind kserve, one endpoint), best batching variant on both: two gRPC hops"},
	}
	for _, load := range []struct {
		name string
		rate float64
	}{{"low", sweepLow}, {"medium", sweepMedium}} {
		for _, v := range []struct {
			name, label string
			batching    map[string]any
		}{
			{"fixed-0", "fixed 0", fixed("0s")}, {"fixed-250us", "fixed 250µs", fixed("250us")},
			{"fixed-1ms", "fixed 1ms", fixed("1ms")}, {"adaptive", "adaptive", map[string]any{"adaptive": true}},
		} {
			b := v.batching
			list = append(list, scenario{name: load.name + "-" + v.name, kind: SidecarGRPC, batching: b, label: v.label, rate: load.rate,
				desc: fmt.Sprintf("sidecar, %s, open loop at the %s load of the sweep (%d calls/s)", v.label, load.name, int(load.rate))})
		}
	}
	return list
}

// Scenarios returns the scenario names in the order Run runs them.
func Scenarios() []string {
	var names []string
	for _, s := range scenarios() {
		names = append(names, s.name)
	}
	return names
}

var errHalf = errors.New("needs a measured sidecar variant first: run one of off, fixed-*, adaptive with it")

// runner holds one Run's state. Only Run's goroutine uses it.
type runner struct {
	cfg      Config
	lib      string
	base     []byte // configs/default.yaml
	dir      string // temp dir for configs
	rec      *recorder
	progress io.Writer
	// best is the fastest SidecarGRPC variant so far (batching on preferred), or nil.
	best *scenario
	// bestRate is best's rate.
	bestRate float64
	bestOn   bool
}

// Run runs the selected scenarios one after the other and returns their report. Progress goes to
// progress, a few lines per scenario. A scenario that fails is reported in its row and in the
// error, and the others still run; ctx's end stops the run (the report then holds what finished).
func Run(ctx context.Context, cfg Config, progress io.Writer) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if os.Getenv(ChildEnv) != "" {
		return nil, fmt.Errorf("$%s is set: this process is a server a bench started; it runs no bench itself", ChildEnv)
	}
	r, err := newRunner(cfg, progress)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(r.dir)
	cfg = r.cfg

	var selected []scenario
	for _, s := range scenarios() {
		if len(cfg.Only) == 0 || slices.Contains(cfg.Only, s.name) {
			selected = append(selected, s)
		}
	}
	rep := &Report{Machine: machine(), Settings: r.settings()}
	var failures []error
	capped := false
	rounds := max(cfg.Repeat, 1)
	runs := make([][]Row, len(selected))
	for round := 1; round <= rounds; round++ {
		for i, s := range selected {
			fmt.Fprintf(progress, "bench: [round %d/%d, %d/%d] %s: %s\n", round, rounds, i+1, len(selected), s.name, s.desc)
			row, err := r.run(ctx, s)
			if ctx.Err() != nil {
				return rep, ctx.Err()
			}
			if err != nil {
				what := "failed"
				if row.Refused {
					what = "REFUSED"
				}
				fmt.Fprintf(progress, "bench:   %s: %v\n", what, err)
				row.Failed = err.Error()
				failures = append(failures, fmt.Errorf("%s: %w", s.name, err))
			} else {
				fmt.Fprintf(progress, "bench:   %s\n", summary(row))
			}
			capped = capped || row.Capped
			runs[i] = append(runs[i], row)
		}
	}
	for i, s := range selected {
		rep.Rows = append(rep.Rows, median(runs[i]))
		rep.Legend = append(rep.Legend, fmt.Sprintf("%-11s %s", s.name, s.desc))
	}
	rep.Legend = append(rep.Legend, "cache hits/lookups: the sidecar's prediction cache over the scenario, warmup and check calls included",
		"  (sidecar_cache_hits_total, sidecar_cache_lookups_total); every scenario but cache-hit sends rows that differ on",
		"  every call, and a hit there, or a miss in cache-hit past its first call per input and 1% of the rest, REFUSES the row")
	if capped {
		rep.Legend = append(rep.Legend, "* more calls than the latency buffer holds: percentiles of the first ones")
	}
	return rep, errors.Join(failures...)
}

// newRunner prepares a run of cfg (validated): the ONNX Runtime library, the base config, a temp
// dir for the variants' configs, which the caller removes.
func newRunner(cfg Config, progress io.Writer) (*runner, error) {
	cfg = cfg.withDefaults()
	lib, err := onnx.LibraryPath(cfg.ONNXRuntime)
	if err != nil {
		return nil, err
	}
	base, err := fs.ReadFile(cfg.Embedded, "configs/default.yaml")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "sidecar-bench-")
	if err != nil {
		return nil, err
	}
	samples := int(cfg.Duration.Seconds() * 100_000)
	if cfg.Rate > 0 {
		samples = max(samples, int(cfg.Rate*cfg.Duration.Seconds()*1.1))
	}
	return &runner{cfg: cfg, lib: lib, base: base, dir: dir, progress: progress,
		rec: newRecorder(min(max(samples, 10_000), 4<<20))}, nil
}

func (r *runner) settings() string {
	c := r.cfg
	s := fmt.Sprintf("%v per scenario after %v warmup; %d callers on %d gRPC conn(s); batch: %d VMs per call, %d callers",
		c.Duration, c.Warmup, c.Concurrency, c.Conns, c.BatchVMs, c.BatchConcurrency)
	if c.Rate > 0 {
		s += fmt.Sprintf("; unary scenarios open loop at %.0f calls/s", c.Rate)
	}
	if c.Repeat > 1 {
		s += fmt.Sprintf("; each figure the median of %d rounds", c.Repeat)
	}
	return s
}

func summary(x Row) string {
	s := fmt.Sprintf("%.0f calls/s", x.Rate)
	if x.Kind.batch() {
		s += fmt.Sprintf(" (%.0f predictions/s)", x.Predictions)
	}
	s += fmt.Sprintf(", p50 %s, p99 %s, p99.9 %s", fmtDur(x.P50), fmtDur(x.P99), fmtDur(x.P999))
	if v := x.cpuPer1k(); v >= 0 {
		s += fmt.Sprintf(", CPU %.3f s/1k", v)
	}
	if x.PeakRSS > 0 {
		s += fmt.Sprintf(", peak RSS %s MB", fmtMB(x.PeakRSS))
	}
	if x.Errors > 0 || x.Dropped > 0 {
		s += fmt.Sprintf(", %d errors, %d dropped", x.Errors, x.Dropped)
	}
	if x.Cache.Read {
		s += fmt.Sprintf(", cache hits %d of %d lookups", x.Cache.Hits, x.Cache.Lookups)
	}
	return s
}
