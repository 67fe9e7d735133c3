// Package cache is the ristretto-backed prediction cache with single-flight fill, keyed by an opaque
// fixed-size key. It imports no project package. It arrives with the feature caching issue (#4).
package cache
