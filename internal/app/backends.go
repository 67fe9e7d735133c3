package app

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/backends/kserve"
	"github.com/novacron/sidecar/backends/legacy"
	"github.com/novacron/sidecar/backends/onnx"
	"github.com/novacron/sidecar/config"
	"github.com/novacron/sidecar/features"
	"github.com/novacron/sidecar/proxy"
)

// loader holds what loading a model needs besides its config.
type loader struct {
	cfg      *config.Config
	rt       *onnx.Runtime
	embedded fs.FS
	log      io.Writer
	poolObs  backends.PoolObserver // nil: no pool metrics
	metrics  *proxy.Metrics        // counts fallbacks; nil: not counted
	// hashes holds the SHA-256 of each local model file loaded or kept, by model name: a reload
	// keeps a model's sessions only when its file's bytes are the same.
	hashes map[string][32]byte
}

// fileHash reads a model file (at most config.MaxModelBytes) and returns its bytes and their
// SHA-256.
func (l *loader) fileHash(path string) ([]byte, [32]byte, error) {
	b, err := config.ReadFileLimit(path, l.cfg.Dir(), l.embedded, config.MaxModelBytes)
	if err != nil {
		return nil, [32]byte{}, fmt.Errorf("path: %w", err)
	}
	return b, sha256.Sum256(b), nil
}

// modelError says which model of cfg could not be loaded (err): the config file and the line of
// its entry, its index and name ("c.yaml:12: models[0] bandwidth: ...").
func modelError(cfg *config.Config, i int, err error) error {
	return fmt.Errorf("%s: models[%d] %s: %w", cfg.Pos(fmt.Sprintf("models[%d]", i)), i, cfg.Models[i].Name, err)
}

// poolConfig maps a model's backend settings onto the pool's.
// attemptTimeout is a remote backend's bound of one attempt: its timeout, or the kinds' default
// (which the endpoints apply too).
func attemptTimeout(be config.Backend) time.Duration {
	return cmp.Or(be.Timeout, backends.DefaultAttemptTimeout)
}

func poolConfig(mc config.Model) backends.PoolConfig {
	be := mc.Backend
	return backends.PoolConfig{
		Name:                mc.Name,
		MaxAttempts:         be.Retry.MaxAttempts,
		AttemptTimeout:      attemptTimeout(be),
		HedgeDelay:          be.HedgeDelay,
		RetryBudget:         be.Retry.Budget,
		MinRetriesPerSecond: be.Retry.MinPerSecond,
		ConsecutiveFailures: be.Breaker.ConsecutiveFailures,
		FailureRatio:        be.Breaker.FailureRatio,
		FailureWindow:       be.Breaker.Interval,
		MinRequests:         be.Breaker.MinRequests,
		OpenTimeout:         be.Breaker.OpenTimeout,
		HalfOpenRequests:    be.Breaker.HalfOpenRequests,
		HealthInterval:      be.Health.Interval,
		HealthTimeout:       be.Health.Timeout,
		UnhealthyThreshold:  be.Health.UnhealthyThreshold,
		HealthyThreshold:    be.Health.HealthyThreshold,
	}
}

func (l *loader) poolOptions() []backends.PoolOption {
	if l.poolObs == nil {
		return nil
	}
	return []backends.PoolOption{backends.WithObserver(l.poolObs)}
}

// local loads the model at mc.Path into ONNX Runtime, checked against spec's fingerprint.
func (l *loader) local(ctx context.Context, mc config.Model, spec *features.Spec) (*onnx.Session, backends.Metadata, error) {
	modelBytes, sum, err := l.fileHash(mc.Path)
	if err != nil {
		return nil, backends.Metadata{}, err
	}
	sess, err := l.rt.Load(mc.Name, modelBytes, onnx.Config{Sessions: mc.Pool.Sessions, IntraOpThreads: mc.Pool.IntraOpThreads,
		Fingerprint: spec.Fingerprint()})
	if err != nil {
		return nil, backends.Metadata{}, err
	}
	meta, err := sess.Metadata(ctx, mc.Name)
	if err != nil {
		sess.Close()
		return nil, backends.Metadata{}, err
	}
	l.hashes[mc.Name] = sum
	return sess, meta, nil
}

// specInput is the input a model of spec takes: "features", FP32 [-1, window, width] or [-1, width].
func specInput(spec *features.Spec) backends.TensorInfo {
	return backends.TensorInfo{Name: "features", DType: backends.FP32, Shape: spec.InputShape(-1)}
}

// remote builds a kserve model: one Endpoint per address in a pool. Each endpoint that answers
// at start must serve a model that fits (the spec's input; the local model's outputs when path
// is given); at least one must answer unless a local model describes it.
func (l *loader) remote(ctx context.Context, mc config.Model, spec *features.Spec, th proxy.Thresholds) (proxy.Target, error) {
	be := mc.Backend
	var local *onnx.Session
	want := backends.Metadata{Inputs: []backends.TensorInfo{specInput(spec)}}
	if mc.Path != "" {
		var err error
		if local, want, err = l.local(ctx, mc, spec); err != nil {
			return nil, err
		}
	}
	closeAll := func(ms []backends.Member[backends.Backend]) {
		for _, m := range ms {
			m.E.Close()
		}
		if local != nil {
			local.Close()
		}
	}
	var members []backends.Member[backends.Backend]
	var remoteMeta *backends.Metadata
	var down []string
	for i, addr := range be.Endpoints {
		e, md, err, made := kserveEndpoint(ctx, be, addr, want)
		if made != nil {
			closeAll(members)
			return nil, fmt.Errorf("backend.endpoints[%d]: %w", i, made)
		}
		members = append(members, backends.Member[backends.Backend]{Name: addr, E: e})
		switch {
		case errors.Is(err, backends.ErrModelLoad):
			closeAll(members)
			return nil, fmt.Errorf("backend.endpoints[%d]: %w", i, err)
		case err != nil:
			down = append(down, fmt.Sprintf("%s: %v", addr, err))
		case remoteMeta == nil:
			remoteMeta = &md
		}
	}
	meta := want
	switch {
	case remoteMeta != nil:
		meta.Name, meta.Version, meta.Platform = remoteMeta.Name, remoteMeta.Version, "remote:"+remoteMeta.Platform
		if local == nil {
			meta.Outputs = remoteMeta.Outputs
		}
	case local != nil:
		fmt.Fprintf(l.log, "\n  model %s: no endpoint answered at start (%s); serving from the local model until one does\n  ", mc.Name, strings.Join(down, "; "))
		meta.Platform = "remote"
	default:
		closeAll(members)
		return nil, fmt.Errorf("backend: no endpoint answered ModelMetadata (%s), and no local model (path) describes the model; start an endpoint or give path",
			strings.Join(down, "; "))
	}
	if local == nil {
		meta.Props = be.Metadata
	}
	for k, v := range be.Metadata {
		if meta.Props == nil {
			meta.Props = map[string]string{}
		}
		meta.Props[k] = v
	}
	if v := be.Metadata[proxy.PropVersion]; v != "" {
		meta.Version = v
	}
	pool, err := backends.NewPool(poolConfig(mc), members, l.poolOptions()...)
	if err != nil {
		closeAll(members)
		return nil, fmt.Errorf("backend: %w", err)
	}
	var b backends.Backend = backends.NewRemote(pool, meta)
	if mc.Fallback == config.FallbackLocal {
		b = &backends.Fallback{Primary: b, Local: local, OnFallback: func(error) {
			l.metrics.Fallback(mc.Name, config.FallbackLocal)
		}}
	} else if local != nil {
		local.Close() // only described the model
	}
	m, err := newModel(mc.Name, mc.Task, spec, b, meta, th)
	if err != nil {
		b.Close()
		if local == nil {
			err = fmt.Errorf("%w (the Open Inference Protocol does not carry a model's metadata_props: give path, a local copy of the model that describes it, or backend.metadata)", err)
		}
		return nil, err
	}
	return m, nil
}

// kserveEndpoint makes the endpoint of one address of a kserve backend and checks, within one
// attempt's timeout, that the model it serves fits want. made is a failure to make it (nothing to
// close); checkErr is the check's (backends.ErrModelLoad: a model that does not fit; another: the
// endpoint did not answer, and may later).
func kserveEndpoint(ctx context.Context, be config.Backend, addr string, want backends.Metadata) (e *kserve.Endpoint, md backends.Metadata, checkErr, made error) {
	e, made = kserve.New(kserve.Config{Address: addr, Model: be.Model, Version: be.Version, Timeout: be.Timeout})
	if made != nil {
		return nil, backends.Metadata{}, nil, made
	}
	cctx, cancel := context.WithTimeout(ctx, attemptTimeout(be))
	defer cancel()
	md, checkErr = e.Check(cctx, want)
	return e, md, checkErr, nil
}

// legacyClient makes the client of one legacy service instance.
func (l *loader) legacyClient(mc config.Model, addr string) (legacy.Client, error) {
	if mc.Backend.Kind == config.BackendLegacyHTTP {
		return legacy.NewHTTP(legacy.HTTPConfig{BaseURL: addr, Timeout: mc.Backend.Timeout})
	}
	return legacy.NewGRPC(legacy.GRPCConfig{Address: addr, Timeout: mc.Backend.Timeout})
}

// legacyModel builds a model served by instances of a legacy AI service, pooled.
func (l *loader) legacyModel(mc config.Model, spec *features.Spec) (proxy.Target, error) {
	be := mc.Backend
	var members []backends.Member[legacy.Client]
	for i, addr := range be.Endpoints {
		c, err := l.legacyClient(mc, addr)
		if err != nil {
			for _, m := range members {
				m.E.Close()
			}
			return nil, fmt.Errorf("backend.endpoints[%d]: %w", i, err)
		}
		members = append(members, backends.Member[legacy.Client]{Name: addr, E: c})
	}
	pool, err := backends.NewPool(poolConfig(mc), members, l.poolOptions()...)
	if err != nil {
		for _, m := range members {
			m.E.Close()
		}
		return nil, fmt.Errorf("backend: %w", err)
	}
	m, err := newLegacy(mc.Name, mc.Task, spec, legacy.NewPooled(pool))
	if err != nil {
		pool.Close()
		return nil, err
	}
	return m, nil
}
