// Package backends defines the contract every tensor model backend meets (ONNX Runtime in the
// process, remote Open Inference Protocol servers), the tensors a batch carries, and the endpoint
// pool that remote kinds share (balancing, circuit breakers, health checks, retries within a
// budget, hedging) with its Remote and Fallback adapters. The kinds live in subpackages (onnx,
// kserve, legacy); the pipeline's rows are gathered into batches by package batcher, which knows
// nothing of tensors.
package backends

import (
	"context"
	"errors"
)

// Keys of a model's custom metadata (ONNX metadata_props, or a remote model's backend.metadata)
// that the sidecar reads; every backend kind and the pipeline use these.
const (
	// PropFingerprint holds the lowercase hex SHA-256 fingerprint of the feature spec the model was
	// trained with (features.Spec.Fingerprint).
	PropFingerprint = "novacron.spec_fingerprint"
	// PropVersion holds the model's version.
	PropVersion = "novacron.model_version"
)

// Sentinel errors. Implementations wrap them with %w so that front ends can map them to a status.
var (
	// ErrInvalidInput: the batch does not fit the model (wrong input name, dtype or shape).
	ErrInvalidInput = errors.New("invalid input")
	// ErrUnavailable: the backend cannot serve now (closed, not loaded, upstream down).
	ErrUnavailable = errors.New("backend unavailable")
	// ErrModelLoad: a model could not be loaded (bad file, fingerprint mismatch).
	ErrModelLoad = errors.New("model load failed")
	// ErrBadResponse: an upstream answered something malformed or wrongly shaped (a wrong number
	// of rows, a missing output, undecodable contents). Such an answer is never served; the pool
	// counts it as the endpoint's failure.
	ErrBadResponse = errors.New("bad response from upstream")
)

// Backend runs batches of one or more models. All methods may be called concurrently from any
// goroutine. Infer may block until a worker is free or ctx is done.
type Backend interface {
	// Infer runs one batch. Every input carries the same leading (batch) dimension; every output of
	// the result carries it too, with row i answering input row i.
	Infer(ctx context.Context, b *Batch) (*Result, error)
	// Metadata describes the named model: its inputs, outputs and version.
	Metadata(ctx context.Context, model string) (Metadata, error)
	// Ready returns nil when the backend can take batches.
	Ready(ctx context.Context) error
	// Close releases the backend's resources once in-flight calls have returned. Calls after Close
	// fail with ErrUnavailable.
	Close() error
}

// Batch is one model call: named input tensors sharing a leading batch dimension.
type Batch struct {
	Model  string
	Inputs []Tensor
}

// Rows is the batch dimension of the first input, or 0 for an empty batch.
func (b *Batch) Rows() int {
	if len(b.Inputs) == 0 || len(b.Inputs[0].Shape) == 0 {
		return 0
	}
	return int(b.Inputs[0].Shape[0])
}

// Result holds the output tensors of one batch, each with the batch's leading dimension.
type Result struct {
	Outputs []Tensor
}

// Output returns the output of the given name, or false.
func (r *Result) Output(name string) (Tensor, bool) {
	for _, t := range r.Outputs {
		if t.Name == name {
			return t, true
		}
	}
	return Tensor{}, false
}

// TensorInfo describes one input or output of a model. A dimension of -1 is dynamic (the batch
// dimension is always dynamic for models the sidecar serves).
type TensorInfo struct {
	Name  string
	DType DType
	Shape []int64
}

// Metadata describes a loaded model.
type Metadata struct {
	Name    string
	Version string
	// Platform names what runs the model, as Triton names platforms ("onnxruntime_onnx"), or
	// "remote" for a model behind another server.
	Platform string
	Inputs   []TensorInfo
	Outputs  []TensorInfo
	// Props holds the model's custom metadata (ONNX metadata_props), such as the feature spec
	// fingerprint and the labels of a classifier.
	Props map[string]string
	// Digest identifies the model's exact bytes ("sha256:" and the hex of the file's SHA-256)
	// when the backend has them (a model run in the process); empty for a model behind another
	// server, which only its name and version identify.
	Digest string
}
