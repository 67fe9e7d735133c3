package kserve

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/backends/oip"
	"github.com/novacron/sidecar/proto/inference"
)

// Config is one remote model on one Open Inference Protocol server.
type Config struct {
	// Address is the server's gRPC address, host:port. Required.
	Address string
	// Model is the model's name on the server. Required.
	Model string
	// Version asks for one version of the model; empty: the server's choice.
	Version string
	// Timeout bounds one call when the caller's deadline is later or absent. Zero:
	// backends.DefaultAttemptTimeout.
	Timeout time.Duration
	// MaxMessageBytes bounds the answers received. Zero: 16 MiB.
	MaxMessageBytes int
}

// Validate reports a missing field.
func (c *Config) Validate() error {
	switch {
	case c.Address == "":
		return errors.New("kserve: address: required (host:port of the server's gRPC port)")
	case c.Model == "":
		return errors.New("kserve: model: required (the model's name on the server)")
	case c.Timeout < 0:
		return errors.New("kserve: timeout: negative")
	}
	return nil
}

// Endpoint sends batches to one model on one remote server over gRPC, as raw tensor contents on
// one reused connection. It is a backends.Backend (every model name it is given maps to the one
// remote model) and a backends.Endpoint for pools. Safe for concurrent use.
type Endpoint struct {
	cfg    Config
	conn   *grpc.ClientConn
	client inference.GRPCInferenceServiceClient
}

// New makes an Endpoint. It does not connect: grpc-go connects on the first call and reconnects
// by itself; Check fetches the model's metadata.
func New(cfg Config) (*Endpoint, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = backends.DefaultAttemptTimeout
	}
	if cfg.MaxMessageBytes == 0 {
		cfg.MaxMessageBytes = 16 << 20
	}
	conn, err := grpc.NewClient(cfg.Address, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cfg.MaxMessageBytes)))
	if err != nil {
		return nil, fmt.Errorf("kserve %s: %w", cfg.Address, err)
	}
	return &Endpoint{cfg: cfg, conn: conn, client: inference.NewGRPCInferenceServiceClient(conn)}, nil
}

// String names the endpoint: model@address.
func (e *Endpoint) String() string { return e.cfg.Model + "@" + e.cfg.Address }

// Check fetches the remote model's metadata and checks that it takes the inputs want describes
// (names, dtypes, and shapes where both sides fix a dimension) and has its outputs.
func (e *Endpoint) Check(ctx context.Context, want backends.Metadata) (backends.Metadata, error) {
	got, err := e.Metadata(ctx, e.cfg.Model)
	if err != nil {
		return got, err
	}
	match := func(kind string, want, got []backends.TensorInfo) error {
		for _, w := range want {
			i := slices.IndexFunc(got, func(g backends.TensorInfo) bool { return g.Name == w.Name })
			if i < 0 {
				return fmt.Errorf("kserve %s: the remote model has no %s %q (it has %v): %w", e, kind, w.Name, infoNames(got), backends.ErrModelLoad)
			}
			g := got[i]
			if g.DType != w.DType || !shapesFit(w.Shape, g.Shape) {
				return fmt.Errorf("kserve %s: %s %q is %s%v on the server, the sidecar needs %s%v: %w", e, kind, w.Name, g.DType, g.Shape, w.DType, w.Shape, backends.ErrModelLoad)
			}
		}
		return nil
	}
	if err := match("input", want.Inputs, got.Inputs); err != nil {
		return got, err
	}
	return got, match("output", want.Outputs, got.Outputs)
}

// shapesFit: same rank, and every dimension fixed on both sides equal.
func shapesFit(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] >= 0 && b[i] >= 0 && a[i] != b[i] {
			return false
		}
	}
	return true
}

func infoNames(infos []backends.TensorInfo) []string {
	var n []string
	for _, i := range infos {
		n = append(n, i.Name)
	}
	return n
}

func (e *Endpoint) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if d, ok := ctx.Deadline(); ok && time.Until(d) <= e.cfg.Timeout {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, e.cfg.Timeout)
}

// Infer sends one batch. The answer must hold, for every output, a tensor whose leading
// dimension is the batch's rows and whose contents fit its shape; anything else is an error
// wrapping backends.ErrBadResponse and is never returned as a result.
func (e *Endpoint) Infer(ctx context.Context, b *backends.Batch) (*backends.Result, error) {
	rows := b.Rows()
	for _, t := range b.Inputs {
		if err := t.Check(); err != nil {
			return nil, err
		}
		if len(t.Shape) == 0 || int(t.Shape[0]) != rows {
			return nil, fmt.Errorf("kserve %s: input %q has shape %v, the batch has %d rows: %w", e, t.Name, t.Shape, rows, backends.ErrInvalidInput)
		}
	}
	req := &inference.ModelInferRequest{ModelName: e.cfg.Model, ModelVersion: e.cfg.Version}
	oip.SetInputs(req, b.Inputs, true)
	cctx, cancel := e.withTimeout(ctx)
	defer cancel()
	resp, err := e.client.ModelInfer(cctx, req)
	if err != nil {
		return nil, e.callError(ctx, cctx, "ModelInfer", err)
	}
	outs, err := oip.Outputs(resp, backends.ErrBadResponse)
	if err != nil {
		return nil, fmt.Errorf("kserve %s: ModelInfer answer: %w", e, err)
	}
	if len(outs) == 0 {
		return nil, fmt.Errorf("kserve %s: ModelInfer answered no outputs: %w", e, backends.ErrBadResponse)
	}
	for _, o := range outs {
		if len(o.Shape) == 0 || int(o.Shape[0]) != rows {
			return nil, fmt.Errorf("kserve %s: output %q has shape %v for a batch of %d rows: %w", e, o.Name, o.Shape, rows, backends.ErrBadResponse)
		}
	}
	return &backends.Result{Outputs: outs}, nil
}

// callError maps a failed call: the caller's own cancellation or deadline stays a context error;
// everything else is ErrUnavailable, for the pool to fail over: the server down, overloaded, its
// model missing, the attempt's own timeout, and also a refused input, since the sidecar built the
// batch itself from checked rows (a refusal means the server's model does not take what the
// model's metadata said it takes).
func (e *Endpoint) callError(ctx, cctx context.Context, rpc string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("kserve %s: %s: %w", e, rpc, ctx.Err())
	}
	st := status.Convert(err)
	switch st.Code() {
	case codes.InvalidArgument, codes.OutOfRange:
		return fmt.Errorf("kserve %s: %s: the server refused the batch (does its model still take the input its metadata gave?): %s: %w", e, rpc, st.Message(), backends.ErrUnavailable)
	case codes.DeadlineExceeded:
		// The server ends a call at the deadline it was sent, which can come a moment before the
		// caller's own context notices: when the caller's deadline was the nearer one, it is the
		// caller's deadline that passed, not the endpoint that was slow.
		if callerBound(ctx, cctx) {
			return fmt.Errorf("kserve %s: %s: %w", e, rpc, context.DeadlineExceeded)
		}
		return fmt.Errorf("kserve %s: %s: no answer within %s: %w", e, rpc, e.cfg.Timeout, backends.ErrUnavailable)
	}
	return fmt.Errorf("kserve %s: %s: %s: %s: %w", e, rpc, st.Code(), st.Message(), backends.ErrUnavailable)
}

// callerBound reports whether the call's deadline (cctx's) was the caller's (ctx's) rather than
// the endpoint's own Timeout.
func callerBound(ctx, cctx context.Context) bool {
	d, ok := ctx.Deadline()
	cd, _ := cctx.Deadline()
	return ok && !cd.Before(d)
}

// Metadata fetches the remote model's metadata (the model argument is ignored: an Endpoint
// serves one remote model).
func (e *Endpoint) Metadata(ctx context.Context, _ string) (backends.Metadata, error) {
	cctx, cancel := e.withTimeout(ctx)
	defer cancel()
	md, err := e.client.ModelMetadata(cctx, &inference.ModelMetadataRequest{Name: e.cfg.Model, Version: e.cfg.Version})
	if err != nil {
		return backends.Metadata{}, e.callError(ctx, cctx, "ModelMetadata", err)
	}
	out := backends.Metadata{Name: md.GetName(), Platform: md.GetPlatform()}
	if v := md.GetVersions(); len(v) > 0 {
		out.Version = v[0]
		if e.cfg.Version != "" {
			out.Version = e.cfg.Version
		}
	}
	conv := func(kind string, ts []*inference.ModelMetadataResponse_TensorMetadata) ([]backends.TensorInfo, error) {
		var infos []backends.TensorInfo
		for _, t := range ts {
			dt, ok := backends.ParseDType(t.GetDatatype())
			if !ok {
				return nil, fmt.Errorf("kserve %s: %s %q has datatype %q, which the sidecar does not carry: %w", e, kind, t.GetName(), t.GetDatatype(), backends.ErrModelLoad)
			}
			infos = append(infos, backends.TensorInfo{Name: t.GetName(), DType: dt, Shape: t.GetShape()})
		}
		return infos, nil
	}
	var err1, err2 error
	out.Inputs, err1 = conv("input", md.GetInputs())
	out.Outputs, err2 = conv("output", md.GetOutputs())
	return out, errors.Join(err1, err2)
}

// Ready is the active health check: the server's ModelReady for the model.
func (e *Endpoint) Ready(ctx context.Context) error {
	cctx, cancel := e.withTimeout(ctx)
	defer cancel()
	r, err := e.client.ModelReady(cctx, &inference.ModelReadyRequest{Name: e.cfg.Model, Version: e.cfg.Version})
	if err != nil {
		return e.callError(ctx, cctx, "ModelReady", err)
	}
	if !r.GetReady() {
		return fmt.Errorf("kserve %s: the server says the model is not ready: %w", e, backends.ErrUnavailable)
	}
	return nil
}

// Close closes the connection; calls in flight fail.
func (e *Endpoint) Close() error { return e.conn.Close() }

var _ backends.Backend = (*Endpoint)(nil)
