package proxy

import (
	"fmt"
	"sync/atomic"
	"time"
)

// DefaultMaxInflightBytes is the default bound of the request bodies being read, decoded and
// served at once (Config.MaxInflightBytes): 16 bodies of the default largest size (4 MiB), or
// tens of thousands of ordinary calls of a few hundred bytes.
const DefaultMaxInflightBytes = 64 << 20

// inflightRetry is the retry hint of a call refused by the in-flight bound: bodies are served in
// milliseconds, so a second is ample.
const inflightRetry = time.Second

// inflight bounds the bytes of the request bodies being served at once. A call reserves its
// body's length (its Content-Length, or limits.max_message_bytes when it has none) before the
// body is read and releases it when its answer is written; one that does not fit is refused at
// once, never queued, like a full batcher queue. Safe for concurrent use.
type inflight struct {
	limit int64
	held  atomic.Int64
}

// acquire reserves n bytes (none when n <= 0), or refuses with ErrInflight; once it succeeded,
// call release(n) when done.
func (f *inflight) acquire(n int64) error {
	if n <= 0 {
		return nil
	}
	if f.held.Add(n) > f.limit {
		held := f.held.Add(-n)
		return fmt.Errorf("request bodies in flight hold %d bytes, this one brings %d, limit %d (limits.max_inflight_bytes); retry after %v: %w",
			held, n, f.limit, inflightRetry, ErrInflight)
	}
	return nil
}

// release returns n bytes that acquire reserved.
func (f *inflight) release(n int64) {
	if n > 0 {
		f.held.Add(-n)
	}
}
