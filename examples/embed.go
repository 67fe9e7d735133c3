// Package examples holds what a user copies: the example configs, feature specs and trained
// models (also embedded in the sidecar binary as its default), the training pipeline and clients.
package examples

import "embed"

// FS holds configs/, specs/ and models/ as committed; the sidecar's embedded default reads them
// as embedded:PATH.
//
//go:embed configs/*.yaml specs/*.yaml models/*.onnx models/*.profile
var FS embed.FS
