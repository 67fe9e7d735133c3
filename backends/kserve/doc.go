// Package kserve speaks the Open Inference Protocol (KServe v2, Triton's gRPC API): Endpoint is a
// backend that sends batches to a remote server (Triton, KServe, another sidecar) over gRPC, and
// the codec turns the protocol's tensors, typed or raw, into backends.Tensor and back; the
// sidecar's own v2 front end (package proxy) uses the same codec.
package kserve
