package backends

import (
	"context"
	"errors"
	"fmt"
)

// Remote is a Backend over a Pool of Backends: the remote servers of one model. Each batch goes
// to one endpoint the pool picks, with its failover, retries and hedging. Safe for concurrent use.
type Remote struct {
	pool *Pool[Backend]
	meta Metadata
}

// NewRemote makes a Backend of pool, describing the model with meta (checked against the
// endpoints by the caller). Close closes the pool.
func NewRemote(pool *Pool[Backend], meta Metadata) *Remote {
	return &Remote{pool: pool, meta: meta}
}

// Pool returns the pool (for status pages and tests).
func (r *Remote) Pool() *Pool[Backend] { return r.pool }

// Infer runs the batch on one endpoint.
func (r *Remote) Infer(ctx context.Context, b *Batch) (*Result, error) {
	return Call(ctx, r.pool, func(ctx context.Context, e Backend) (*Result, error) { return e.Infer(ctx, b) })
}

// Metadata describes the model as checked at start.
func (r *Remote) Metadata(context.Context, string) (Metadata, error) { return r.meta, nil }

// Ready is nil while some endpoint is usable.
func (r *Remote) Ready(ctx context.Context) error { return r.pool.Ready(ctx) }

// Close closes the pool and its endpoints.
func (r *Remote) Close() error { return r.pool.Close() }

// Fallback is a Backend that answers from Local when Primary cannot: when Primary fails with
// ErrUnavailable or ErrBadResponse (for a pool: every endpoint down, or failing) while the
// caller still waits. Bad input and the caller's own cancellation never fall back.
type Fallback struct {
	Primary, Local Backend
	// OnFallback, if set, is called (from the calling goroutine) each time Local answers for
	// Primary, with Primary's error; it counts fallbacks.
	OnFallback func(err error)
}

// Infer runs the batch on Primary, else on Local.
func (f *Fallback) Infer(ctx context.Context, b *Batch) (*Result, error) {
	res, err := f.Primary.Infer(ctx, b)
	if err == nil || ctx.Err() != nil || !(errors.Is(err, ErrUnavailable) || errors.Is(err, ErrBadResponse)) {
		return res, err
	}
	if f.OnFallback != nil {
		f.OnFallback(err)
	}
	res, lerr := f.Local.Infer(ctx, b)
	if lerr != nil {
		return nil, fmt.Errorf("fallback failed too (%v) after: %w", lerr, err)
	}
	return res, nil
}

// Metadata is Primary's.
func (f *Fallback) Metadata(ctx context.Context, model string) (Metadata, error) {
	return f.Primary.Metadata(ctx, model)
}

// Ready is nil when either can answer.
func (f *Fallback) Ready(ctx context.Context) error {
	perr := f.Primary.Ready(ctx)
	if perr == nil {
		return nil
	}
	if lerr := f.Local.Ready(ctx); lerr != nil {
		return errors.Join(perr, lerr)
	}
	return nil
}

// Close closes both.
func (f *Fallback) Close() error { return errors.Join(f.Primary.Close(), f.Local.Close()) }

var (
	_ Backend = (*Remote)(nil)
	_ Backend = (*Fallback)(nil)
)
