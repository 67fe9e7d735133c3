// Package kserve speaks the Open Inference Protocol (KServe v2, Triton's gRPC API) as a client:
// Endpoint is a backend that sends batches to a remote server (Triton, KServe, another sidecar)
// over gRPC, as raw tensors encoded by package oip, which the sidecar's own v2 front end (package
// proxy) shares.
package kserve
