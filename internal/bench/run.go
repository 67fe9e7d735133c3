package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"
)

// run measures one scenario.
func (r *runner) run(ctx context.Context, s scenario) (Row, error) {
	row := Row{Scenario: s.name, Kind: s.kind, Batching: s.label}
	c := r.cfg
	p := phase{Warmup: c.Warmup, Duration: c.Duration}
	if s.kind == Ceiling {
		row.Load = fmt.Sprintf("%d VMs/batch", c.BatchVMs)
		return r.ceiling(ctx, row, p)
	}

	// Which server, with which config.
	var command []string
	var cfgOf *scenario // the sidecar variant
	switch s.kind {
	case FloorGRPC, FloorHTTP, HalfFloor:
		command = append(slices.Clone(c.Command), "bench-noop", "-grpc", "127.0.0.1:0", "-http", "127.0.0.1:0")
	case SidecarGRPC:
		cfgOf = &s
	case CacheHit:
		cfgOf = &scenario{name: "default", label: "default"}
	default:
		if r.best == nil {
			if s.kind == HalfRate || s.kind == ShadowRate {
				return row, errHalf
			}
			// No variant measured: the default config as it is.
			cfgOf = &scenario{name: "default", label: "default"}
		} else {
			cfgOf = r.best
		}
		row.Batching = cfgOf.label
	}
	if cfgOf != nil {
		path, err := r.writeConfig(cfgOf)
		if err != nil {
			return row, err
		}
		command = append(slices.Clone(c.Command), "serve", "-config", path, "-grpc", "127.0.0.1:0", "-http", "127.0.0.1:0", "-onnxruntime", r.lib)
	}

	// The load.
	var (
		call    callFunc
		workers = c.Concurrency
		rate    = c.Rate
		cleanup = func() {}
	)
	switch s.kind {
	case HalfRate, HalfFloor, ShadowRate:
		if r.best == nil {
			return row, errHalf
		}
		rate = r.bestRate * cmp.Or(s.fraction, 0.5)
	case BatchRPC:
		workers, rate = c.BatchConcurrency, 0
	}
	if s.rate > 0 {
		rate = s.rate
	}
	switch {
	case rate > 0:
		row.Load = fmt.Sprintf("open %.0f/s, %d workers", rate, workers)
	case s.kind == BatchRPC:
		row.Load = fmt.Sprintf("%d callers x %d VMs", workers, c.BatchVMs)
	default:
		row.Load = fmt.Sprintf("%d callers", workers)
	}

	var upstream *server
	if s.kind == RemoteKServe {
		// The upstream sidecar first; the one under load sends its bandwidth batches there.
		var err error
		if upstream, err = startServer(ctx, command, c.StartTimeout); err != nil {
			return row, fmt.Errorf("upstream sidecar: %w", err)
		}
		defer upstream.stop()
		if command, err = r.remoteCommand(cfgOf, upstream.grpc); err != nil {
			return row, err
		}
	}
	if s.kind == DriftOff {
		var err error
		if command, err = r.derivedCommand(cfgOf, "nodrift", func(doc map[string]any) error {
			for _, m := range doc["models"].([]any) {
				if mm, ok := m.(map[string]any); ok {
					delete(mm, "drift")
				}
			}
			return nil
		}); err != nil {
			return row, err
		}
	}
	if s.kind == ShadowRate {
		// The shadow target first: a no-op server the sidecar reaches as a legacy service.
		noop, err := startServer(ctx, append(slices.Clone(c.Command), "bench-noop", "-grpc", "127.0.0.1:0", "-http", "127.0.0.1:0"), c.StartTimeout)
		if err != nil {
			return row, fmt.Errorf("shadow target: %w", err)
		}
		defer noop.stop()
		if command, err = r.shadowCommand(cfgOf, noop.grpc); err != nil {
			return row, err
		}
	}
	started := time.Now()
	srv, err := startServer(ctx, command, c.StartTimeout)
	if err != nil {
		return row, err
	}
	defer srv.stop()
	fmt.Fprintf(r.progress, "bench:   server pid %d ready in %v (grpc %s, http %s); load %s, warmup %v, window %v\n",
		srv.pid(), time.Since(started).Round(time.Millisecond), srv.grpc, srv.http, row.Load, p.Warmup, p.Duration)

	// Bound every call by the scenario's end, generously: no call outlives a hung server by long.
	cctx, cancel := context.WithTimeout(ctx, p.Warmup+p.Duration+30*time.Second)
	defer cancel()
	rowsPerCall := 1
	switch s.kind {
	case FloorHTTP, SidecarHTTP:
		call, cleanup, err = httpCaller(cctx, "http://"+srv.http, workers, !s.repeats)
	case BatchRPC:
		call, cleanup, err = batchCaller(cctx, srv.grpc, workers, c.Conns, c.BatchVMs, !s.repeats)
		rowsPerCall = c.BatchVMs
	default:
		call, cleanup, err = grpcCaller(cctx, srv.grpc, workers, c.Conns, !s.repeats)
	}
	if err != nil {
		return row, err
	}
	defer cleanup()
	// answered counts the calls that got an answer, warmup included, for judging the cache's counts.
	var answered atomic.Int64
	inner := call
	call = func(ctx context.Context, w int) error {
		err := inner(ctx, w)
		if err == nil {
			answered.Add(1)
		}
		return err
	}

	var cpu0, self0, up0 time.Duration
	atStart := func() {
		cpu0, _ = procCPU(srv.pid())
		self0, _ = procCPU(0)
		if upstream != nil {
			up0, _ = procCPU(upstream.pid())
		}
	}
	var res loadResult
	if rate > 0 {
		res = openLoop(cctx, workers, rate, p, call, r.rec, atStart)
	} else {
		res = closedLoop(cctx, workers, p, call, r.rec, atStart)
	}
	cpu1, cerr := procCPU(srv.pid())
	self1, _ := procCPU(0)
	row.CPU = cpu1 - cpu0
	if upstream != nil { // both sidecars' CPU: the cost of the whole path
		up1, uerr := procCPU(upstream.pid())
		row.CPU += up1 - up0
		cerr = errors.Join(cerr, uerr)
	}
	if cerr != nil {
		row.CPU = -1
	}
	row.PeakRSS, _ = procPeakRSS(srv.pid())
	r.fill(&row, res, c.BatchVMs)
	fmt.Fprintf(r.progress, "bench:   load generator CPU %.3f s over the window\n", (self1 - self0).Seconds())

	if res.OK == 0 {
		if res.FirstErr != nil {
			return row, fmt.Errorf("no call succeeded: %d errors, the first: %w", res.Errors, res.FirstErr)
		}
		return row, errors.New("no call completed in the window")
	}
	if res.FirstErr != nil {
		fmt.Fprintf(r.progress, "bench:   %d calls failed; the first: %v\n", res.Errors, res.FirstErr)
	}
	if cfgOf != nil { // a sidecar: did its cache answer what it should, and only that?
		for _, sc := range []*server{srv, upstream} {
			if sc == nil {
				continue
			}
			cc, err := scrapeCache(ctx, sc.http)
			if err != nil {
				return row, err
			}
			row.Cache = row.Cache.add(cc)
		}
		fmt.Fprintf(r.progress, "bench:   prediction cache: %d hits of %d lookups\n", row.Cache.Hits, row.Cache.Lookups)
		use := cacheUse{expectHits: s.kind == CacheHit, rows: answered.Load() * int64(rowsPerCall),
			distinctInputs: int64(workers + c.Conns)}
		if err := checkCache(row.Cache, use); err != nil {
			row.Refused = true
			return row, fmt.Errorf("result refused: %w", err)
		}
	}
	if s.kind == SidecarGRPC && rate == 0 {
		on := s.batching["disabled"] != true
		// Batching on beats off for "best": the half-rate, HTTP and batch rows are about batching.
		if r.best == nil || (on && !r.bestOn) || (on == r.bestOn && row.Rate > r.bestRate) {
			r.best, r.bestRate, r.bestOn = &s, row.Rate, on
		}
	}
	if s.kind == SidecarGRPC && rate > 0 && r.best == nil {
		r.best, r.bestRate, r.bestOn = &s, row.Rate, s.batching["disabled"] != true
	}
	return row, nil
}

// median folds the rounds of one scenario into one row: the median of each rate and latency on its
// own, the largest peak RSS, CPU and counts summed; a round that failed is left out unless all did.
// A round whose result was refused refuses the row: the other rounds' figures may be as wrong,
// only less visibly.
func median(rows []Row) Row {
	var ok []Row
	for i, x := range rows {
		if x.Refused {
			if len(rows) > 1 {
				x.Failed = fmt.Sprintf("round %d of %d: %s", i+1, len(rows), x.Failed)
			}
			return x
		}
		if x.Failed == "" {
			ok = append(ok, x)
		}
	}
	if len(ok) == 0 {
		return rows[0]
	}
	out := ok[0]
	if len(ok) == 1 {
		return out
	}
	mid := func(get func(Row) float64) float64 {
		v := make([]float64, len(ok))
		for i, x := range ok {
			v[i] = get(x)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	dur := func(get func(Row) time.Duration) time.Duration {
		return time.Duration(mid(func(x Row) float64 { return float64(get(x)) }))
	}
	out.Rate = mid(func(x Row) float64 { return x.Rate })
	out.Predictions = mid(func(x Row) float64 { return x.Predictions })
	out.P50 = dur(func(x Row) time.Duration { return x.P50 })
	out.P99 = dur(func(x Row) time.Duration { return x.P99 })
	out.P999 = dur(func(x Row) time.Duration { return x.P999 })
	// CPU and the counts are summed, so CPU per 1000 calls is over every round's calls.
	out.CPU, out.OK, out.Errors, out.Dropped, out.Cache = 0, 0, 0, 0, CacheCount{}
	for _, x := range ok {
		out.Cache = out.Cache.add(x.Cache)
		if out.CPU >= 0 && x.CPU >= 0 {
			out.CPU += x.CPU
		} else {
			out.CPU = -1
		}
		out.PeakRSS = max(out.PeakRSS, x.PeakRSS)
		out.OK += x.OK
		out.Errors += x.Errors
		out.Dropped += x.Dropped
		out.Capped = out.Capped || x.Capped
	}
	return out
}

// fill copies a load result and the recorder's percentiles into a row; a batch row's calls make
// rows predictions each.
func (r *runner) fill(row *Row, res loadResult, rows int) {
	lat := r.rec.summary()
	row.OK, row.Errors, row.Dropped, row.Rate = res.OK, res.Errors, res.Dropped, res.Rate()
	row.P50, row.P99, row.P999, row.Capped = lat.P50, lat.P99, lat.P999, lat.Capped
	if row.Kind.batch() {
		row.Predictions = row.Rate * float64(rows)
	}
}
