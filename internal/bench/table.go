package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Row is one line of the report: one scenario's measurement.
type Row struct {
	// Scenario is the scenario's name (see Scenarios).
	Scenario string
	// Kind says what was measured; it decides the row's reference (floor or ceiling).
	Kind Kind
	// Batching names the sidecar's batching settings ("off", "fixed 250µs", "adaptive", ...);
	// empty for the no-op servers and the ceiling.
	Batching string
	// Load describes the offered load: "32 callers", "open 4100/s, 32 workers", ...
	Load string
	// Rate is completed calls per second.
	Rate float64
	// Predictions is forecasts per second (batch rows: Rate x VMs per call); 0 elsewhere.
	Predictions float64
	// P50, P99, P999 are latency percentiles of the calls in the window.
	P50, P99, P999 time.Duration
	// CPU is the server process's CPU time (user + system) over the window; for the ceiling, the
	// bench process's own. Negative: unknown.
	CPU time.Duration
	// PeakRSS is the server process's peak resident set (VmHWM) in bytes at the end of the
	// scenario, its whole life (start, model load, warmup, window) included; 0: unknown.
	PeakRSS int64
	// OK, Errors and Dropped count the calls in the window: succeeded, failed, and (open loop)
	// arrivals not sent because every worker was busy.
	OK, Errors, Dropped int64
	// Capped: more calls than the latency buffer holds; percentiles are of the first ones.
	Capped bool
	// Cache is what the sidecar's prediction cache counted over the scenario (both sidecars' for
	// RemoteKServe); not Read for the no-op servers and the ceiling.
	Cache CacheCount
	// Failed is set when the scenario could not run, or its result was refused; the other fields
	// are then not reported.
	Failed string
	// Refused: the scenario ran, but the prediction cache answered calls it should not have (any,
	// outside the cache-hit scenario) or did not answer those it should have; Failed says how. A
	// refused round refuses the row.
	Refused bool
}

// Kind is what a row measured.
type Kind int

// Kinds of rows.
const (
	FloorGRPC    Kind = iota // no-op gRPC server, unary PredictBandwidth
	SidecarGRPC              // sidecar, unary PredictBandwidth over gRPC, closed loop (or -rate)
	HalfRate                 // sidecar, unary gRPC, open loop at half a measured rate
	HalfFloor                // no-op gRPC server at the same rate as HalfRate
	FloorHTTP                // no-op net/http handler, POST /api/v1/predict
	SidecarHTTP              // sidecar, POST /api/v1/predict
	BatchRPC                 // sidecar, PredictBandwidthBatch
	Ceiling                  // ONNX Runtime in the bench process, same model, batch size, threads
	CacheHit                 // sidecar, unary gRPC, each caller repeating one input: prediction cache hits
	RemoteKServe             // sidecar whose bandwidth model runs on a second sidecar over the Open Inference Protocol
	ShadowRate               // HalfRate's load with every call also shadowed onto a no-op legacy service
	DriftOff                 // the best variant, closed loop, with the models' drift profiles removed
)

func (k Kind) protocol() string {
	switch k {
	case FloorHTTP, SidecarHTTP:
		return "http"
	case Ceiling:
		return "onnx"
	}
	return "grpc"
}

func (k Kind) batch() bool { return k == BatchRPC || k == Ceiling }

// cpuPer1k is CPU seconds per 1000 calls (batch rows: per 1000 predictions), or -1.
func (r Row) cpuPer1k() float64 {
	n := float64(r.OK)
	if r.Kind.batch() && r.Rate > 0 {
		n *= r.Predictions / r.Rate
	}
	if r.CPU < 0 || n == 0 {
		return -1
	}
	return r.CPU.Seconds() / n * 1000
}

// Report is the result of a run: rows in the order run, and what they ran on.
type Report struct {
	// Machine describes the host: CPUs, model, Go version.
	Machine string
	// Settings describes the run: duration, warmup, callers, connections.
	Settings string
	// Rows holds one row per scenario run.
	Rows []Row
	// Legend explains the scenario names, one line each.
	Legend []string
}

func (r *Report) row(kind Kind) (Row, bool) {
	for _, x := range r.Rows {
		if x.Kind == kind && x.Failed == "" && x.Rate > 0 {
			return x, true
		}
	}
	return Row{}, false
}

// reference returns the rate a row is compared with: the floor of its protocol, or the ceiling.
func (r *Report) reference(x Row) (float64, bool) {
	switch x.Kind {
	case FloorGRPC, SidecarGRPC, CacheHit, RemoteKServe:
		f, ok := r.row(FloorGRPC)
		return f.Rate, ok
	case FloorHTTP, SidecarHTTP:
		f, ok := r.row(FloorHTTP)
		return f.Rate, ok
	case BatchRPC, Ceiling:
		c, ok := r.row(Ceiling)
		return c.Predictions, ok
	}
	return 0, false
}

// WriteTable prints the report: the unary table, the batch table, the legend and the targets.
func (r *Report) WriteTable(w io.Writer) error {
	var b strings.Builder
	if r.Machine != "" {
		fmt.Fprintf(&b, "machine:  %s\n", r.Machine)
	}
	if r.Settings != "" {
		fmt.Fprintf(&b, "settings: %s\n", r.Settings)
	}
	b.WriteString("\n")

	var unary, batch [][]string
	for _, x := range r.Rows {
		if x.Kind.batch() {
			batch = append(batch, r.batchCells(x))
		} else {
			unary = append(unary, r.unaryCells(x))
		}
	}
	if len(unary) > 0 {
		writeTable(&b,
			[]string{"scenario", "protocol", "batching", "load", "req/s", "p50", "p99", "p99.9", "CPU s/1k req", "peak RSS MB", "% of floor", "errors", "cache hits/lookups"},
			[]bool{false, false, false, false, true, true, true, true, true, true, true, true, true}, unary)
	}
	if len(batch) > 0 {
		if len(unary) > 0 {
			b.WriteString("\n")
		}
		writeTable(&b,
			[]string{"scenario", "protocol", "batching", "load", "calls/s", "predictions/s", "p50", "p99", "CPU s/1k pred", "peak RSS MB", "% of ceiling", "errors", "cache hits/lookups"},
			[]bool{false, false, false, false, true, true, true, true, true, true, true, true, true}, batch)
	}
	var failed []string
	for _, x := range r.Rows {
		if x.Failed != "" {
			what := "failed"
			if x.Refused {
				what = "REFUSED"
			}
			failed = append(failed, fmt.Sprintf("%s %s: %s\n", x.Scenario, what, oneLine(x.Failed, 300)))
		}
	}
	if len(failed) > 0 {
		b.WriteString("\n" + strings.Join(failed, ""))
	}
	if len(r.Legend) > 0 {
		b.WriteString("\n")
		for _, l := range r.Legend {
			b.WriteString(l + "\n")
		}
	}
	if ts := r.Targets(); len(ts) > 0 {
		b.WriteString("\ntargets (issue 3):\n")
		var cells [][]string
		for _, t := range ts {
			cells = append(cells, []string{"  " + t.Name, t.Measured, t.Verdict})
		}
		writeTable(&b, nil, []bool{false, false, false}, cells)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// failedCells is the row of a scenario that failed or was refused: no figures.
func failedCells(x Row) []string {
	if x.Refused {
		return []string{x.Scenario, x.Kind.protocol(), orDash(x.Batching), x.Load, "REFUSED"}
	}
	return []string{x.Scenario, x.Kind.protocol(), orDash(x.Batching), x.Load, "failed"}
}

func (r *Report) unaryCells(x Row) []string {
	if x.Failed != "" {
		return failedCells(x)
	}
	pct := "-"
	if ref, ok := r.reference(x); ok && x.Load == r.refLoad(x) {
		pct = fmt.Sprintf("%.0f%%", 100*x.Rate/ref)
	}
	errs := fmt.Sprint(x.Errors)
	if x.Dropped > 0 {
		errs += fmt.Sprintf(" (+%d dropped)", x.Dropped)
	}
	return []string{x.Scenario, x.Kind.protocol(), orDash(x.Batching), x.Load, fmt.Sprintf("%.0f", x.Rate),
		fmtDur(x.P50), fmtDur(x.P99), fmtDur(x.P999) + capMark(x.Capped), fmtCPU(x.cpuPer1k()), fmtMB(x.PeakRSS), pct, errs, x.Cache.String()}
}

// refLoad is the load of the row x is compared with; a percentage is only shown for equal loads.
func (r *Report) refLoad(x Row) string {
	switch x.Kind {
	case FloorGRPC, SidecarGRPC, CacheHit, RemoteKServe:
		f, _ := r.row(FloorGRPC)
		return f.Load
	case FloorHTTP, SidecarHTTP:
		f, _ := r.row(FloorHTTP)
		return f.Load
	}
	return x.Load
}

func (r *Report) batchCells(x Row) []string {
	if x.Failed != "" {
		return failedCells(x)
	}
	pct := "-"
	if ref, ok := r.reference(x); ok {
		pct = fmt.Sprintf("%.0f%%", 100*x.Predictions/ref)
	}
	return []string{x.Scenario, x.Kind.protocol(), orDash(x.Batching), x.Load, fmt.Sprintf("%.0f", x.Rate),
		fmt.Sprintf("%.0f", x.Predictions), fmtDur(x.P50), fmtDur(x.P99), fmtCPU(x.cpuPer1k()), fmtMB(x.PeakRSS), pct, fmt.Sprint(x.Errors), x.Cache.String()}
}

// Target is one of issue 3's targets, judged on the report's rows.
type Target struct {
	Name     string
	Measured string
	// Met is meaningful only when Verdict is "met" or starts with "MISSED"; a refused row's line
	// (Verdict "REFUSED: ...") is never met.
	Met     bool
	Verdict string
}

// Targets judges issue 3's targets on the rows present; a target whose rows were not run is left out.
func (r *Report) Targets() []Target {
	var ts []Target
	judge := func(name, measured string, met bool, miss string) {
		v := "met"
		if !met {
			v = "MISSED " + miss
		}
		ts = append(ts, Target{Name: name, Measured: measured, Met: met, Verdict: v})
	}
	floor, hasFloor := r.row(FloorGRPC)
	var best Row
	for _, x := range r.Rows {
		if x.Kind == SidecarGRPC && x.Failed == "" && x.Load == floor.Load && x.Rate > best.Rate {
			best = x
		}
	}
	if hasFloor && best.Rate > 0 {
		pct := 100 * best.Rate / floor.Rate
		judge(fmt.Sprintf("unary gRPC, %s: >= 80%% of the floor's req/s", floor.Load),
			fmt.Sprintf("%s: %.0f%% (%.0f of %.0f req/s%s)", best.Scenario, pct, best.Rate, floor.Rate, cacheNote(best)),
			pct >= 80, fmt.Sprintf("by %.0f points", 80-pct))
	}
	if h, ok := r.row(HalfRate); ok {
		measured := fmt.Sprintf("%s at %s: p99 %s%s", h.Batching, h.Load, fmtDur(h.P99), cacheNote(h))
		if f, ok := r.row(HalfFloor); ok && f.Load == h.Load {
			measured += fmt.Sprintf(" (no-op floor at that rate: %s)", fmtDur(f.P99))
		}
		judge("p99 at half of that rate: <= 2ms", measured,
			h.P99 <= 2*time.Millisecond && h.Dropped == 0 && h.Errors == 0, fmt.Sprintf("by %s", fmtDur(h.P99-2*time.Millisecond)))
	}
	// Drift monitoring on (every sidecar row: the default config names the models' profiles)
	// against off, at the same load.
	if off, ok := r.row(DriftOff); ok {
		for _, on := range r.Rows {
			if on.Kind == SidecarGRPC && on.Failed == "" && on.Batching == off.Batching && on.Load == off.Load && on.Rate > 0 {
				pct := 100 * (on.Rate - off.Rate) / off.Rate
				judge("drift on: within 5% of drift off (req/s)",
					fmt.Sprintf("%+.1f%% (%.0f req/s with drift, %.0f without, %s, %s%s)", pct, on.Rate, off.Rate, on.Batching, on.Load, cacheNote(on)),
					pct >= -5, fmt.Sprintf("by %.1f points", -5-pct))
				break
			}
		}
	}
	// Each shadow row against the row without a shadow at the same load.
	for _, sh := range r.Rows {
		if sh.Kind != ShadowRate || sh.Failed != "" || sh.Rate <= 0 {
			continue
		}
		for _, h := range r.Rows {
			if h.Kind == HalfRate && h.Failed == "" && h.Load == sh.Load && h.P99 > 0 {
				pct := 100 * (float64(sh.P99) - float64(h.P99)) / float64(h.P99)
				judge(fmt.Sprintf("shadow at 100%% (%s): adds < 5%% to the primary's p99", sh.Scenario),
					fmt.Sprintf("%+.1f%% (p99 %s with the shadow, %s without (%s), at %s%s)", pct, fmtDur(sh.P99), fmtDur(h.P99), h.Scenario, sh.Load, cacheNote(sh)),
					pct < 5 && sh.Errors == 0 && sh.Dropped == 0, fmt.Sprintf("by %.1f points", pct-5))
				break
			}
		}
	}
	if b, ok := r.row(BatchRPC); ok {
		if c, ok := r.row(Ceiling); ok {
			pct := 100 * b.Predictions / c.Predictions
			judge(fmt.Sprintf("batch RPC (%s): >= 70%% of the ONNX Runtime ceiling", b.Load),
				fmt.Sprintf("%.0f%% (%.0f of %.0f predictions/s%s)", pct, b.Predictions, c.Predictions, cacheNote(b)),
				pct >= 70, fmt.Sprintf("by %.0f points", 70-pct))
		}
	}
	if h, ok := r.row(SidecarHTTP); ok {
		if f, ok := r.row(FloorHTTP); ok && f.Load == h.Load {
			pct := 100 * h.Rate / f.Rate
			judge("HTTP/JSON /api/v1/predict: >= 70% of the no-op net/http handler",
				fmt.Sprintf("%.0f%% (%.0f of %.0f req/s%s)", pct, h.Rate, f.Rate, cacheNote(h)),
				pct >= 70, fmt.Sprintf("by %.0f points", 70-pct))
		}
	}
	// Adaptive against the best fixed delay, per load: at a saturating (closed-loop) load by req/s,
	// at an open-loop load by p99. "Matches" allows the run-to-run noise of this machine: 5%.
	loads := []string{}
	for _, x := range r.Rows {
		if x.Kind == SidecarGRPC && x.Failed == "" && x.Batching == "adaptive" && !slices.Contains(loads, x.Load) {
			loads = append(loads, x.Load)
		}
	}
	for _, load := range loads {
		var ad, bestFixed Row
		for _, x := range r.Rows {
			if x.Kind != SidecarGRPC || x.Failed != "" || x.Load != load {
				continue
			}
			open := strings.HasPrefix(load, "open")
			switch {
			case x.Batching == "adaptive":
				ad = x
			case strings.HasPrefix(x.Batching, "fixed") && (bestFixed.Scenario == "" ||
				(open && x.P99 < bestFixed.P99) || (!open && x.Rate > bestFixed.Rate)):
				bestFixed = x
			}
		}
		if bestFixed.Scenario == "" {
			continue
		}
		if strings.HasPrefix(load, "open") {
			judge(fmt.Sprintf("adaptive vs best fixed delay, %s: p99 within 5%%", load),
				fmt.Sprintf("adaptive p99 %s, best fixed (%s) %s", fmtDur(ad.P99), bestFixed.Batching, fmtDur(bestFixed.P99)),
				float64(ad.P99) <= 1.05*float64(bestFixed.P99), fmt.Sprintf("by %s", fmtDur(ad.P99-bestFixed.P99)))
		} else {
			judge(fmt.Sprintf("adaptive vs best fixed delay, %s: req/s within 5%%", load),
				fmt.Sprintf("adaptive %.0f req/s, best fixed (%s) %.0f", ad.Rate, bestFixed.Batching, bestFixed.Rate),
				ad.Rate >= 0.95*bestFixed.Rate, fmt.Sprintf("by %.0f%%", 100*(1-ad.Rate/bestFixed.Rate)))
		}
	}
	if h, ok := r.row(CacheHit); ok && hasFloor && h.Load == floor.Load {
		pct := 100 * h.Rate / floor.Rate
		judge("cache hit path over gRPC: within 10% of the floor's req/s (issue 4)",
			fmt.Sprintf("%.0f%% (%.0f of %.0f req/s%s)", pct, h.Rate, floor.Rate, cacheNote(h)), pct >= 90, fmt.Sprintf("by %.0f points", 90-pct))
	}
	if k, ok := r.row(RemoteKServe); ok && hasFloor && k.Load == floor.Load {
		pct := 100 * k.Rate / floor.Rate
		judge("through backends/kserve to a second sidecar: >= 60% of the floor's req/s (issue 5)",
			fmt.Sprintf("%.0f%% (%.0f of %.0f req/s%s)", pct, k.Rate, floor.Rate, cacheNote(k)), pct >= 60, fmt.Sprintf("by %.0f points", 60-pct))
	}
	var peak Row
	for _, x := range r.Rows {
		if (x.Kind == SidecarGRPC || x.Kind == CacheHit || x.Kind == HalfRate || x.Kind == SidecarHTTP || x.Kind == BatchRPC) && x.PeakRSS > peak.PeakRSS {
			peak = x
		}
	}
	if peak.PeakRSS > 0 {
		mb := float64(peak.PeakRSS) / 1e6
		judge("sidecar peak resident memory (three models): < 200 MB",
			fmt.Sprintf("max %.0f MB (%s)", mb, peak.Scenario), mb < 200, fmt.Sprintf("by %.0f MB", mb-200))
	}
	// A refused row judges nothing, and says so where the verdicts are read.
	for _, x := range r.Rows {
		if x.Refused {
			measured := "its cache counters could not be judged"
			if x.Cache.Read {
				measured = fmt.Sprintf("cache hits %d of %d lookups", x.Cache.Hits, x.Cache.Lookups)
			}
			ts = append(ts, Target{Name: x.Scenario + ": no target judged on it", Measured: measured,
				Verdict: "REFUSED: the prediction cache's answers do not measure the path named"})
		}
	}
	return ts
}

// cacheNote is the cache's count of a sidecar row, for a verdict line: "; cache hits 0 of 81234".
func cacheNote(x Row) string {
	if !x.Cache.Read {
		return ""
	}
	return fmt.Sprintf("; cache hits %d of %d", x.Cache.Hits, x.Cache.Lookups)
}

// writeTable writes rows under header (nil: none) in columns two spaces apart, each right-aligned
// where right says so. Widths count runes, so "µs" aligns.
func writeTable(b *strings.Builder, header []string, right []bool, rows [][]string) {
	all := rows
	if header != nil {
		all = append([][]string{header}, rows...)
	}
	var width []int
	for _, r := range all {
		for i, c := range r {
			if i >= len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	for _, r := range all {
		var line strings.Builder
		for i, c := range r {
			if i > 0 {
				line.WriteString("  ")
			}
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(c))
			if i < len(right) && right[i] {
				line.WriteString(pad + c)
			} else {
				line.WriteString(c + pad)
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " ") + "\n")
	}
}

// fmtDur prints a latency with three significant digits or so: 87µs, 1.23ms, 12.3ms, 1.20s.
func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Round(time.Microsecond)/time.Microsecond)
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

func fmtCPU(v float64) string {
	if v < 0 {
		return "-"
	}
	return fmt.Sprintf("%.3f", v)
}

func fmtMB(b int64) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", float64(b)/1e6)
}

func capMark(c bool) string {
	if c {
		return "*"
	}
	return ""
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) > n {
		s = string([]rune(s)[:n]) + "…"
	}
	return s
}
