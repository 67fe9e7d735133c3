package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"time"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/backends/legacy"
	"github.com/novacron/sidecar/batcher"
	"github.com/novacron/sidecar/config"
	"github.com/novacron/sidecar/proxy"
	"github.com/novacron/sidecar/proxy/migrate"
)

// configure sets what a target takes from its config besides what runs it: batching, and a tensor
// model's cache TTL and stale fallback.
func configure(t proxy.Target, mc config.Model) {
	if m, ok := t.(*proxy.Model); ok {
		m.CacheTTL = mc.CacheTTL
		m.StaleFallback = mc.Fallback == config.FallbackStale
	}
	if bc := mc.Batching; !bc.Disabled {
		b := &batcher.Config{MaxBatchSize: bc.MaxBatchSize, MaxQueueDelay: bc.MaxQueueDelay,
			PreferredBatchSizes: bc.PreferredBatchSizes, MaxQueueSize: bc.MaxQueueSize, MaxInflightBatches: bc.MaxInflightBatches,
			Adaptive: bc.Adaptive, Overlap: bc.Overlap != nil && *bc.Overlap, Priorities: 2}
		switch t := t.(type) {
		case *proxy.Model:
			t.Batching = b
		case *proxy.Legacy:
			t.Batching = b
		}
	}
}

// restartOnly lists the parts of a config a reload cannot change, with their YAML names.
func restartOnly(c *config.Config) map[string]any {
	return map[string]any{"listen": c.Listen, "limits": c.Limits, "onnxruntime": c.ONNXRuntime,
		"cache": c.Cache, "windows": c.Windows, "shutdown_timeout": c.ShutdownTimeout, "shadow": c.Shadow,
		"state_file": c.StateFile, "admin": c.Admin, "drift.webhook": c.Drift.Webhook, "drift.accuracy_floor": c.Drift.AccuracyFloor}
}

// Reload applies cfg to the running sidecar (SIGHUP): models are added, removed or rebuilt and
// routes change, while calls go on. What a model's new config leaves the same is kept:
//   - an onnx model whose file, spec and pool are unchanged keeps its ONNX Runtime sessions;
//   - a remote model whose kind, remote model name, version, local model and fallback are
//     unchanged keeps its pool, updated in place (Pool.Update): endpoints still listed keep their
//     connection, breaker and health state, new ones are checked and start fresh, removed ones
//     close once their calls end;
//   - a forecast model whose spec is unchanged keeps its pushed per-VM windows.
//
// Calls that started before the swap finish on the old models. listen, limits, onnxruntime, cache,
// windows and shutdown_timeout take a restart: a reload that changes them is refused. On an error
// before the swap (any but a kept pool's refusal of its update, which the error says) the running
// config stays as it was, and what the reload built is closed. A model that fails to load is named
// with the file and line of its entry (cfg.Pos). Errors do not say "reload": the caller does.
//
// Reloads run one at a time (a second call waits for the first). A reload ends early, with an
// error, when ctx ends or Shutdown begins: Shutdown does not wait for a whole reload, only for the
// step in progress (the files it reads are bounded, see config.ReadFile; a remote check ends with
// the context; only a model being loaded into ONNX Runtime finishes first).
func (a *App) Reload(ctx context.Context, cfg *config.Config) error {
	ctx, cancel := context.WithCancelCause(ctx)
	watching := make(chan struct{})
	go func() { // owned by this call: ends with ctx, at the latest on return
		defer close(watching)
		select {
		case <-a.stopHealth: // closed when Shutdown begins, without waiting for reloadMu
			cancel(errShuttingDown)
		case <-ctx.Done():
		}
	}()
	defer func() {
		cancel(nil)
		<-watching
	}()
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	if a.stopped {
		return errShuttingDown
	}
	if ctx.Err() != nil {
		return cancelled(ctx)
	}
	was, now := restartOnly(a.cfg), restartOnly(cfg)
	for _, k := range slices.Sorted(maps.Keys(was)) {
		if !reflect.DeepEqual(was[k], now[k]) {
			return fmt.Errorf("%s changed; that takes a restart (the running config stays)", k)
		}
	}
	start := time.Now()
	l := &loader{cfg: cfg, rt: a.rt, embedded: a.embedded, log: a.log, poolObs: a.poolObs, metrics: a.metrics, hashes: map[string][32]byte{}}
	old := map[string]int{}
	for i, t := range a.models {
		old[t.Info().Name] = i
	}
	var (
		models  []proxy.Target
		fresh   []io.Closer    // backends and endpoints built by this reload: closed if it fails
		updates []func() error // pool updates, applied once every model is built
	)
	fail := func(err error) error {
		for _, b := range fresh {
			b.Close()
		}
		if ctx.Err() != nil {
			return cancelled(ctx)
		}
		return fmt.Errorf("%w (the running config stays)", err)
	}
	for i, mc := range cfg.Models {
		if ctx.Err() != nil {
			return fail(ctx.Err())
		}
		var m proxy.Target
		var err error
		if j, ok := old[mc.Name]; ok {
			m, err = l.reuse(ctx, a.cfg.Models[j], mc, a.models[j], a.hashes[mc.Name], &updates, &fresh)
		}
		if m == nil && err == nil {
			if m, err = l.load(ctx, mc); err == nil {
				fresh = append(fresh, m.Runner())
			}
		}
		if err != nil {
			return fail(modelError(cfg, i, err))
		}
		configure(m, mc)
		models = append(models, m)
	}
	if ctx.Err() != nil { // a remote check that the context ended may have let its model load
		return fail(ctx.Err())
	}
	byName := map[string]proxy.Target{}
	for _, t := range models {
		byName[t.Info().Name] = t
	}
	ms, err := l.monitors(byName, a.monitored)
	if err != nil {
		return fail(err)
	}
	// The routes of migrations stay at their stages across the swap; then the migrations take
	// the new specs (an edited one starts again at its first stage).
	// The monitors first: a model's rows may reach the observer as soon as the swap is done (a
	// model without a monitor yet only goes unobserved for that moment).
	prevMonitors := a.monitored
	a.setMonitors(ms)
	oldModels, err := a.Service.Swap(models, a.migrations.Overlay(routes(cfg), cfg.Specs()))
	if err != nil {
		a.setMonitors(prevMonitors)
		return fail(err)
	}
	a.recorder.SetTolerances(tolerances(cfg))
	a.driftExport.SetAccuracy(a.Service.Accuracy()) // the new forecast models' trackers
	// The pools of kept remote models take their new settings and endpoints now that the swap
	// cannot fail any more. (Their settings were validated above; an Update that still fails
	// closes the endpoints it brought and leaves that pool as it was.)
	var errs []error
	for _, u := range updates {
		errs = append(errs, u())
	}
	// Close the backends and services no new target uses.
	kept := map[proxy.Runner]bool{}
	for _, t := range models {
		kept[t.Runner()] = true
	}
	for _, t := range oldModels {
		if !kept[t.Runner()] {
			errs = append(errs, t.Runner().Close())
		}
	}
	if err := a.migrations.Reload(cfg.Specs()); err != nil {
		errs = append(errs, fmt.Errorf("%s: migrations: %w", cfg.Pos("migrations"), err))
	}
	a.models, a.cfg, a.hashes = models, cfg, l.hashes
	a.setHealth(ctx) // also marks removed models SERVICE_UNKNOWN
	fmt.Fprintf(a.log, "reloaded %s: %d models in %v\n", cfg.Source, len(models), time.Since(start).Round(time.Millisecond))
	return errors.Join(errs...)
}

// errShuttingDown is the cause of a reload's end when Shutdown begins.
var errShuttingDown = errors.New("the sidecar is shutting down")

// cancelled is the error of a reload whose ctx ended: why it ended, and that nothing changed.
func cancelled(ctx context.Context) error {
	err := context.Cause(ctx)
	if errors.Is(err, errShuttingDown) {
		return fmt.Errorf("cancelled: %w", err)
	}
	return fmt.Errorf("cancelled (the running config stays): %w", err)
}

func routes(cfg *config.Config) proxy.Routes {
	out := proxy.Routes{}
	for _, name := range cfg.Routes.Names() {
		r, _ := cfg.Routes.RouteOf(name)
		out[name] = r.Proxy()
	}
	return out
}

// tolerances are the routes' comparison tolerances.
func tolerances(cfg *config.Config) map[string]migrate.Tolerances {
	out := map[string]migrate.Tolerances{}
	for _, name := range cfg.Routes.Names() {
		r, _ := cfg.Routes.RouteOf(name)
		out[name] = r.Tolerances()
	}
	return out
}

// reuse builds the new model of mc from the running model cur (configured by was) when their
// backends can be kept; it returns nil, nil when they cannot (the model is then loaded anew).
// Remote pools get an update appended to updates; endpoints it creates go to fresh.
func (l *loader) reuse(ctx context.Context, was, mc config.Model, curT proxy.Target, sum [32]byte, updates *[]func() error, fresh *[]io.Closer) (proxy.Target, error) {
	spec, err := l.spec(mc)
	if err != nil {
		return nil, err
	}
	if mc.Task != was.Task || spec.Fingerprint() != curT.Info().Spec.Fingerprint() || mc.Backend.Kind != was.Backend.Kind {
		return nil, nil
	}
	cur, _ := curT.(*proxy.Model) // the target of a tensor model's backend kinds
	if mc.Path != "" {
		// The local model (the onnx model, or a remote model's local copy) must be the same bytes.
		_, now, err := l.fileHash(mc.Path)
		if err != nil {
			return nil, err
		}
		if now != sum {
			return nil, nil
		}
		l.hashes[mc.Name] = sum
	}
	th := proxy.Thresholds{Threshold: mc.Anomaly.Threshold, Medium: mc.Anomaly.Medium, High: mc.Anomaly.High, Critical: mc.Anomaly.Critical}
	switch mc.Backend.Kind {
	case config.BackendONNX:
		if mc.Path != was.Path || mc.Pool != was.Pool || cur == nil {
			return nil, nil
		}
		return newModel(mc.Name, mc.Task, spec, cur.Backend, cur.Meta, th)
	case config.BackendKServe:
		b, was2 := mc.Backend, was.Backend
		if b.Model != was2.Model || b.Version != was2.Version || mc.Path != was.Path || mc.Fallback != was.Fallback ||
			!reflect.DeepEqual(b.Metadata, was2.Metadata) || b.Timeout != was2.Timeout {
			return nil, nil
		}
		if cur == nil {
			return nil, nil
		}
		remote, ok := cur.Backend.(*backends.Remote)
		if f, isF := cur.Backend.(*backends.Fallback); isF {
			remote, ok = f.Primary.(*backends.Remote)
		}
		if !ok {
			return nil, nil
		}
		pool := remote.Pool()
		var members []backends.Member[backends.Backend]
		var added []io.Closer
		for _, addr := range b.Endpoints {
			if e, ok := pool.Endpoint(addr); ok {
				members = append(members, backends.Member[backends.Backend]{Name: addr, E: e})
				continue
			}
			e, _, err, made := kserveEndpoint(ctx, b, addr, cur.Meta)
			if made != nil {
				return nil, made
			}
			*fresh = append(*fresh, e)
			added = append(added, e)
			if errors.Is(err, backends.ErrModelLoad) {
				return nil, err
			}
			members = append(members, backends.Member[backends.Backend]{Name: addr, E: e})
		}
		pc := poolConfig(mc)
		if err := pc.Validate(); err != nil {
			return nil, err
		}
		*updates = append(*updates, func() error { return update(pool, pc, members, added) })
		return newModel(mc.Name, mc.Task, spec, cur.Backend, cur.Meta, th)
	case config.BackendLegacyHTTP, config.BackendLegacyGRPC:
		pooled, ok := curT.Runner().(*legacy.Pooled)
		if !ok || mc.Backend.Timeout != was.Backend.Timeout {
			return nil, nil
		}
		pool := pooled.Pool()
		var members []backends.Member[legacy.Client]
		var added []io.Closer
		for _, addr := range mc.Backend.Endpoints {
			if c, ok := pool.Endpoint(addr); ok {
				members = append(members, backends.Member[legacy.Client]{Name: addr, E: c})
				continue
			}
			c, err := l.legacyClient(mc, addr)
			if err != nil {
				return nil, err
			}
			*fresh = append(*fresh, c)
			added = append(added, c)
			members = append(members, backends.Member[legacy.Client]{Name: addr, E: c})
		}
		pc := poolConfig(mc)
		if err := pc.Validate(); err != nil {
			return nil, err
		}
		*updates = append(*updates, func() error { return update(pool, pc, members, added) })
		return newLegacy(mc.Name, mc.Task, spec, pooled)
	}
	return nil, nil
}

// update applies a reload to a kept pool; if the pool refuses, the endpoints the reload created
// for it are closed (the pool owns them only on success).
func update[E backends.Endpoint](pool *backends.Pool[E], pc backends.PoolConfig, members []backends.Member[E], added []io.Closer) error {
	if err := pool.Update(pc, members); err != nil {
		for _, b := range added {
			b.Close()
		}
		return fmt.Errorf("pool %s kept its previous endpoints and settings: %w", pc.Name, err)
	}
	return nil
}
