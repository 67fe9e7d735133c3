// Package oip is the Open Inference Protocol's (KServe v2) tensor codec: it turns the protocol's
// tensors, typed or raw, into backends.Tensor and back, checking every shape, dtype and length
// before it trusts them. The sidecar's v2 front end (package proxy) and its v2 client (package
// kserve) share it; it holds no connection and imports no cgo.
package oip
