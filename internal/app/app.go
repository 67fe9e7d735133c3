// Package app wires a config into a running sidecar: the ONNX Runtime, the models, the pipeline,
// the gRPC and HTTP front ends, health and metrics, and their ordered shutdown. cmd/sidecar runs
// it; tests start it on loopback ports.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/backends/onnx"
	"github.com/novacron/sidecar/cache"
	"github.com/novacron/sidecar/config"
	"github.com/novacron/sidecar/features"
	"github.com/novacron/sidecar/features/drift"
	"github.com/novacron/sidecar/proto/inference"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
	"github.com/novacron/sidecar/proxy"
	"github.com/novacron/sidecar/proxy/admin"
	"github.com/novacron/sidecar/proxy/migrate"
)

// App is a started sidecar. Addresses are the bound listeners (useful with port 0).
type App struct {
	GRPCAddr, HTTPAddr string
	// AdminAddr is the admin listener's address ("unix:/path" for a socket); empty when off.
	AdminAddr string
	Service   *proxy.Service
	Registry  *prometheus.Registry

	cfg      *config.Config
	log      io.Writer
	rt       *onnx.Runtime
	embedded fs.FS
	poolObs  backends.PoolObserver
	metrics  *proxy.Metrics
	hashes   map[string][32]byte // of the local model files, by model name (see loader.hashes)
	// healthMu serializes setHealth (the refresher and Reload) and Shutdown's close of
	// stopHealth; it guards published, the model health names set so far.
	healthMu  sync.Mutex
	published map[string]bool
	// reloadMu serializes Reload and Shutdown; it guards cfg, models and stopped.
	reloadMu sync.Mutex
	stopped  bool
	models   []proxy.Target
	cache    *cache.Cache[[]float32]
	observer proxy.RowObserver // nil: none
	// drift observes the models' rows into their drift monitors (monitored, guarded by
	// reloadMu), which driftExport exports.
	drift       *driftObserver
	driftExport *drift.Exporter
	monitored   map[string]monitored
	// recorder compares the routes' shadowed answers; migrations runs the migrations (its Run
	// goroutine is wg's, stopped by stopHealth).
	recorder   *migrate.Recorder
	migrations *migrate.Controller
	admin      *admin.Server // nil: off
	grpc       *grpc.Server
	health     *health.Server
	http       *http.Server
	// wg owns the two serve goroutines and the health refresher; errc receives the serve
	// goroutines' first failure; closing stopHealth stops the refresher.
	wg         sync.WaitGroup
	errc       chan error
	stopHealth chan struct{}
}

// Option injects a collaborator into Start.
type Option func(*App)

// WithRowObserver has every canonical row the models answer, and its output, seen by o (see
// proxy.RowObserver).
func WithRowObserver(o proxy.RowObserver) Option { return func(a *App) { a.observer = o } }

// Start loads the ONNX Runtime and every model of cfg (files named embedded:... come from
// embedded), binds the listeners and serves in the background. Progress goes to log. On error
// nothing is left running.
func Start(ctx context.Context, cfg *config.Config, embedded fs.FS, log io.Writer, opts ...Option) (*App, error) {
	a := &App{cfg: cfg, log: log, embedded: embedded, Registry: prometheus.NewRegistry(), errc: make(chan error, 2)}
	for _, o := range opts {
		o(a)
	}
	if err := a.start(ctx, embedded); err != nil {
		a.closeBackends()
		return nil, err
	}
	return a, nil
}

func (a *App) start(ctx context.Context, embedded fs.FS) error {
	cfg := a.cfg
	log := a.log
	lib, err := onnx.LibraryPath(cfg.ONNXRuntime.Library)
	if err != nil {
		return err
	}
	if a.rt, err = onnx.Open(lib); err != nil {
		return err
	}
	fmt.Fprintf(log, "onnxruntime %s from %s\n", a.rt.Version(), a.rt.Path())
	// The process's own collectors belong to the process, registered here once; the pipeline's
	// metrics register themselves.
	a.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := proxy.NewMetrics(a.Registry)
	a.metrics = metrics
	l := newLoader(cfg, a.rt, embedded, log, a.Registry, metrics)
	a.poolObs = l.poolObs
	if a.models, err = l.loadAll(ctx); err != nil {
		return err
	}
	a.hashes = l.hashes
	for i, mc := range cfg.Models {
		configure(a.models[i], mc)
	}
	if !cfg.Cache.Disabled {
		if a.cache, err = cache.New[[]float32](cache.Config{MaxEntries: cfg.Cache.MaxEntries}); err != nil {
			return err
		}
		metrics.WatchCache(a.cache.Stats)
	}
	targets := map[string]proxy.Target{}
	for _, t := range a.models {
		targets[t.Info().Name] = t
	}
	ms, err := l.monitors(targets, nil)
	if err != nil {
		return err
	}
	a.drift = &driftObserver{next: a.observer}
	a.driftExport = drift.NewExporter()
	a.Registry.MustRegister(a.driftExport)
	a.setMonitors(ms)
	a.recorder = migrate.NewRecorder(a.Registry)
	a.recorder.SetTolerances(tolerances(cfg))
	a.Service, err = proxy.New(proxy.Config{
		Cache:         a.cache,
		Routing:       a.recorder,
		ShadowQueue:   cfg.Shadow.Queue,
		ShadowWorkers: cfg.Shadow.Workers,
		ShadowTimeout: cfg.Shadow.Timeout,
		Log:           log,
		Windows: features.WindowConfig{MaxVMs: cfg.Windows.MaxVMs, IdleExpiry: cfg.Windows.IdleExpiry,
			Step: cfg.Windows.Step, MaxAge: cfg.Windows.MaxAge},
		Routes:             routes(cfg),
		RequestTimeout:     cfg.Limits.RequestTimeout,
		MaxStale:           cfg.Cache.MaxStale,
		MaxBatchVMs:        cfg.Limits.MaxBatchVMs,
		MaxNodes:           cfg.Limits.MaxNodes,
		MaxMessageBytes:    cfg.Limits.MaxMessageBytes,
		Observer:           a.drift,
		MaxIDBytes:         cfg.Limits.MaxIDBytes,
		MaxPushSamples:     cfg.Limits.MaxPushSamples,
		MaxConcurrentCalls: cfg.Limits.MaxConcurrentCalls,
		MaxInflightBytes:   cfg.Limits.MaxInflightBytes,
		MaxConnectionIdle:  cfg.Listen.MaxConnectionIdle,
	}, a.models, metrics)
	if err != nil {
		return err
	}
	a.driftExport.SetAccuracy(a.Service.Accuracy())
	// Migrations set their routes to the stages they are at (kept in state_file) before any call.
	if a.migrations, err = migrate.NewController(migrate.Config{Migrations: cfg.Specs(), StateFile: cfg.File(cfg.StateFile), Log: log}, a.Service, a.Registry); err != nil {
		return fmt.Errorf("%s: migrations: %w", cfg.Pos("migrations"), err)
	}
	a.recorder.SetController(a.migrations)

	var gl, hl net.Listener
	if cfg.Listen.GRPC != "off" {
		if gl, err = net.Listen("tcp", cfg.Listen.GRPC); err != nil {
			return fmt.Errorf("listen.grpc: %w", err)
		}
		a.GRPCAddr = gl.Addr().String()
		warnExposed(log, "listen.grpc", gl.Addr())
	}
	if cfg.Listen.HTTP != "off" {
		if hl, err = net.Listen("tcp", cfg.Listen.HTTP); err != nil {
			if gl != nil {
				gl.Close()
			}
			return fmt.Errorf("listen.http: %w", err)
		}
		a.HTTPAddr = hl.Addr().String()
		warnExposed(log, "listen.http", hl.Addr())
	}

	var al net.Listener
	if cfg.Admin.Listen != "" {
		opts := cfg.Admin.Options()
		opts.TokenFile = cfg.File(opts.TokenFile)
		if a.admin, err = admin.New(opts, a.migrations, a.recorder); err == nil {
			al, err = a.admin.Listen()
		}
		if err != nil {
			for _, l := range []net.Listener{gl, hl} {
				if l != nil {
					l.Close()
				}
			}
			return fmt.Errorf("%s: admin: %w", cfg.Pos("admin"), err)
		}
		a.AdminAddr = a.admin.Addr()
		fmt.Fprintf(log, "admin API on %s\n", a.AdminAddr)
	}

	a.grpc, a.health = proxy.NewGRPCServer(a.Service)
	a.setHealth(ctx)
	a.http = &http.Server{
		Handler: proxy.NewHTTPHandler(a.Service, proxy.HTTPOptions{Gatherer: a.Registry, Ready: a.Ready,
			AllowedHosts:  cfg.Listen.AllowedHosts,
			DriftMonitors: func() map[string]*drift.Monitor { return *a.drift.monitors.Load() }}),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       a.Service.ConnectionIdle(),
	}
	if a.http.IdleTimeout == 0 {
		a.http.IdleTimeout = -1 // net/http reads 0 as ReadTimeout; the config says never
	}
	if gl != nil {
		a.wg.Go(func() {
			if err := a.grpc.Serve(gl); err != nil {
				a.errc <- fmt.Errorf("grpc: %w", err)
			}
		})
	}
	if hl != nil {
		a.wg.Go(func() {
			if err := a.http.Serve(hl); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.errc <- fmt.Errorf("http: %w", err)
			}
		})
	}
	if al != nil {
		a.wg.Go(func() {
			if err := a.admin.Serve(al); err != nil {
				a.errc <- fmt.Errorf("admin: %w", err)
			}
		})
	}
	// Remote backends come and go: gRPC health follows their pools' readiness.
	a.stopHealth = make(chan struct{})
	migrationsCtx, stopMigrations := context.WithCancel(context.Background())
	a.wg.Go(func() {
		<-a.stopHealth
		stopMigrations()
	})
	a.wg.Go(func() { a.migrations.Run(migrationsCtx) })
	if cfg.Drift.Webhook.URL != "" {
		host, _ := os.Hostname()
		al, err := drift.NewAlerter(cfg.AlertConfig(host))
		if err != nil { // validated with the config: not expected
			fmt.Fprintf(log, "drift: alerts off: %v\n", err)
		} else {
			a.wg.Go(func() { a.runAlerts(al, a.stopHealth) })
		}
	}
	a.wg.Go(func() {
		t := time.NewTicker(healthRefresh)
		defer t.Stop()
		for {
			select {
			case <-a.stopHealth:
				return
			case <-t.C:
				hctx, cancel := context.WithTimeout(context.Background(), healthRefresh)
				a.setHealth(hctx)
				cancel()
			}
		}
	})
	return nil
}

// warnExposed warns, loudly, when a data port is bound beyond loopback: the sidecar has no
// authentication of its own.
func warnExposed(log io.Writer, key string, addr net.Addr) {
	if ta, ok := addr.(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
		fmt.Fprintf(log, "WARNING: %s %s is not a loopback address: any host that can reach this machine may call the sidecar, which has no authentication of its own. Bind 127.0.0.1 unless a firewall or network policy guards the port.\n", key, addr)
	}
}

// healthRefresh is how often gRPC health is set anew from the models' readiness.
const healthRefresh = time.Second

// LoadModels loads every model of cfg: on rt for onnx backends, as pools of endpoints for remote
// ones, each checked against its feature spec. Pool metrics go to reg and fallbacks are counted in
// metrics, when they are not nil.
func LoadModels(ctx context.Context, cfg *config.Config, rt *onnx.Runtime, embedded fs.FS, log io.Writer, reg prometheus.Registerer, metrics *proxy.Metrics) ([]proxy.Target, error) {
	return newLoader(cfg, rt, embedded, log, reg, metrics).loadAll(ctx)
}

func newLoader(cfg *config.Config, rt *onnx.Runtime, embedded fs.FS, log io.Writer, reg prometheus.Registerer, metrics *proxy.Metrics) *loader {
	l := &loader{cfg: cfg, rt: rt, embedded: embedded, log: log, metrics: metrics, hashes: map[string][32]byte{}}
	if reg != nil {
		l.poolObs = backends.NewPoolMetrics(reg)
	}
	return l
}

func (l *loader) loadAll(ctx context.Context) ([]proxy.Target, error) {
	cfg, log := l.cfg, l.log
	var models []proxy.Target
	for i, mc := range cfg.Models {
		start := time.Now()
		where := mc.Path
		if mc.Backend.Remote() {
			where = mc.Backend.Kind + " " + strings.Join(mc.Backend.Endpoints, ", ")
		}
		fmt.Fprintf(log, "loading model %d/%d %s (%s) from %s ... ", i+1, len(cfg.Models), mc.Name, mc.Task, where)
		m, err := l.load(ctx, mc)
		if err != nil {
			fmt.Fprintln(log, "failed")
			for _, m := range models {
				m.Runner().Close()
			}
			return nil, modelError(cfg, i, err)
		}
		detail := fmt.Sprintf("%d sessions x %d threads", mc.Pool.Sessions, mc.Pool.IntraOpThreads)
		if mc.Backend.Remote() {
			detail = fmt.Sprintf("%d endpoints, fallback %s", len(mc.Backend.Endpoints), mc.Fallback)
		}
		info := m.Info()
		fmt.Fprintf(log, "ok: version %s, spec %s %.12s, %s, %s\n", info.Version, info.Spec.Name,
			info.Spec.Fingerprint(), detail, time.Since(start).Round(time.Millisecond))
		models = append(models, m)
	}
	return models, nil
}

// spec reads and parses a model's feature spec.
func (l *loader) spec(mc config.Model) (*features.Spec, error) {
	specBytes, err := config.ReadFile(mc.Spec, l.cfg.Dir(), l.embedded)
	if err != nil {
		return nil, fmt.Errorf("spec: %w", err)
	}
	spec, err := features.Parse(specBytes)
	if err != nil {
		return nil, fmt.Errorf("spec %s: %w", mc.Spec, err)
	}
	return spec, nil
}

func (l *loader) load(ctx context.Context, mc config.Model) (proxy.Target, error) {
	spec, err := l.spec(mc)
	if err != nil {
		return nil, err
	}
	th := proxy.Thresholds{Threshold: mc.Anomaly.Threshold, Medium: mc.Anomaly.Medium, High: mc.Anomaly.High, Critical: mc.Anomaly.Critical}
	switch mc.Backend.Kind {
	case config.BackendKServe:
		return l.remote(ctx, mc, spec, th)
	case config.BackendLegacyHTTP, config.BackendLegacyGRPC:
		return l.legacyModel(mc, spec)
	}
	sess, meta, err := l.local(ctx, mc, spec)
	if err != nil {
		return nil, err
	}
	m, err := newModel(mc.Name, mc.Task, spec, sess, meta, th)
	if err != nil {
		sess.Close()
		return nil, err
	}
	return m, nil
}

// newModel and newLegacy make targets; on error the Target is nil (not a nil pointer in it).
func newModel(name, task string, spec *features.Spec, b backends.Backend, meta backends.Metadata, th proxy.Thresholds) (proxy.Target, error) {
	m, err := proxy.NewModel(name, task, spec, b, meta, th)
	if err != nil {
		return nil, err
	}
	return m, nil
}

func newLegacy(name, task string, spec *features.Spec, f proxy.Forwarder) (proxy.Target, error) {
	l, err := proxy.NewLegacy(name, task, spec, f)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// Ready reports each model's readiness (nil when ready).
func (a *App) Ready(ctx context.Context) map[string]error {
	out := map[string]error{}
	for name, t := range a.Service.Targets() {
		out["model/"+name] = t.Runner().Ready(ctx)
	}
	return out
}

// setHealth publishes per-model and per-service gRPC health: a model's entry ("model/NAME") is
// SERVING when its backend is ready; novacron.ai.AIService, inference.GRPCInferenceService and ""
// when every loaded model is.
func (a *App) setHealth(ctx context.Context) {
	ready := a.Ready(ctx)
	a.healthMu.Lock()
	defer a.healthMu.Unlock()
	// A reload may have swapped the models while Ready ran: publish only what is loaded now, and
	// mark what was published before and is gone SERVICE_UNKNOWN.
	current := a.Service.Targets()
	if a.published == nil {
		a.published = map[string]bool{}
	}
	for name := range a.published {
		if _, ok := current[strings.TrimPrefix(name, "model/")]; !ok {
			a.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVICE_UNKNOWN)
			delete(a.published, name)
		}
	}
	all := healthpb.HealthCheckResponse_SERVING
	for name, err := range ready {
		if _, ok := current[strings.TrimPrefix(name, "model/")]; !ok {
			continue
		}
		st := healthpb.HealthCheckResponse_SERVING
		if err != nil {
			st, all = healthpb.HealthCheckResponse_NOT_SERVING, healthpb.HealthCheckResponse_NOT_SERVING
		}
		a.health.SetServingStatus(name, st)
		a.published[name] = true
	}
	if len(current) == 0 {
		all = healthpb.HealthCheckResponse_NOT_SERVING
	}
	a.health.SetServingStatus(aipb.AIService_ServiceDesc.ServiceName, all)
	a.health.SetServingStatus(inference.GRPCInferenceService_ServiceDesc.ServiceName, all)
	a.health.SetServingStatus("", all)
}

// Err delivers the first failure of a front end after Start.
func (a *App) Err() <-chan error { return a.errc }

// Shutdown stops the sidecar in order: a reload in progress is cancelled, health turns
// NOT_SERVING, both front ends stop accepting and drain in-flight calls (bounded by ctx; past it,
// connections are closed), then, once the cancelled reload has returned, the model sessions close
// and the runtime unloads. A reload still loading a model into ONNX Runtime when ctx ends is
// abandoned: Shutdown returns an error saying so and leaves the sessions and the runtime open (that
// load may still use the runtime; the process is about to exit).
func (a *App) Shutdown(ctx context.Context) error {
	// Closing stopHealth stops the health refresher and cancels a reload in progress (see Reload).
	// It is not done under reloadMu, which that reload holds until it returns; healthMu, which
	// nothing holds for long, keeps a second Shutdown from closing it again.
	a.healthMu.Lock()
	select {
	case <-a.stopHealth:
	default:
		close(a.stopHealth)
	}
	a.healthMu.Unlock()
	a.health.Shutdown()
	a.Service.Drain() // open StreamMetrics streams answer their counts now
	var errs []error
	if a.admin != nil {
		if err := a.admin.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("admin: %w", err))
		}
	}
	var wg sync.WaitGroup
	var grpcErr error
	wg.Go(func() {
		done := make(chan struct{})
		go func() { a.grpc.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			grpcErr = fmt.Errorf("grpc: calls still running at the drain deadline were cut: %w", ctx.Err())
			a.grpc.Stop() // with WaitForHandlers: returns once every handler has returned
			<-done
		}
	})
	if err := a.http.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("http: calls still running at the drain deadline were cut: %w", err))
		a.http.Close()
	}
	wg.Wait()
	errs = append(errs, grpcErr)
	// Wait for the cancelled reload to return (it closes what it built); from then on none runs.
	locked := make(chan struct{})
	go func() { // ends when the reload does, even if Shutdown gave up on it
		a.reloadMu.Lock()
		a.stopped = true
		a.reloadMu.Unlock()
		close(locked)
	}()
	select {
	case <-locked:
	case <-ctx.Done():
		return errors.Join(append(errs, fmt.Errorf("a reload still loading a model at the drain deadline was abandoned; the model sessions stay open: %w", ctx.Err()))...)
	}
	a.Service.Close() // the batchers: every queued call has run
	a.wg.Wait()
	errs = append(errs, a.closeBackends())
	return errors.Join(errs...)
}

func (a *App) closeBackends() error {
	if a.Service != nil {
		a.Service.Close()
	}
	var errs []error
	for _, t := range a.models {
		errs = append(errs, t.Runner().Close()) // waits for Infer calls in flight; later ones fail Unavailable
	}
	if a.cache != nil {
		a.cache.Close()
		a.cache = nil
	}
	if a.rt != nil {
		errs = append(errs, a.rt.Close())
		a.rt = nil
	}
	return errors.Join(errs...)
}

// Migrations returns the controller of the config's migrations.
func (a *App) Migrations() *migrate.Controller { return a.migrations }
