// Package cache is the sidecar's prediction cache: ristretto (github.com/dgraph-io/ristretto/v2)
// underneath, an opaque fixed-size key, a TTL per entry, and single-flight fill so that concurrent
// misses of one key run the model once. It imports no project package: callers build keys from
// whatever bytes identify an answer (model, model version, spec fingerprint, canonical input).
package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// Key identifies one answer: 128 bits of two independently seeded hashes of the key's parts.
// Keys are only meaningful to the Cache that made them.
type Key struct{ hi, lo uint64 }

func (k Key) String() string { return fmt.Sprintf("%016x%016x", k.hi, k.lo) }

// Config is plain data; zero values are documented per field.
type Config struct {
	// MaxEntries bounds the entries held; every entry costs 1. Zero: 100000.
	MaxEntries int64
	// TTL is how long an entry is served when Set or Do gives none. Zero: 1 minute.
	TTL time.Duration
}

// Stats counts lookups since the cache was made. Hits + Misses = Lookups, always.
type Stats struct {
	Lookups, Hits, Misses uint64
	// Fills counts fill functions run by Do (single flight: one per key at a time); Shared counts
	// Do calls that waited for another's fill instead of running their own.
	Fills, Shared uint64
	// Evictions counts entries ristretto evicted to make room; Rejected counts Sets that were not
	// kept (refused by the admission policy or dropped under contention): a cache may drop a Set,
	// and callers must not rely on a Set being readable.
	Evictions, Rejected uint64
}

// entry is what ristretto stores: the value, with the key's second half to tell keys apart whose
// first halves collide.
type entry[V any] struct {
	lo uint64
	at int64 // when it was set, Unix nanoseconds
	v  V
}

// Cache holds values of type V. Its methods may be called concurrently. Close releases it.
type Cache[V any] struct {
	r          *ristretto.Cache[uint64, entry[V]]
	ttl        time.Duration
	seed1      maphash.Seed
	seed2      maphash.Seed
	hits, miss atomic.Uint64
	fills      atomic.Uint64
	shared     atomic.Uint64
	refused    atomic.Uint64 // Sets that returned false

	// mu guards flights.
	mu      sync.Mutex
	flights map[Key]*flight[V]
}

type flight[V any] struct {
	done chan struct{}
	v    V
	err  error
}

// New makes a cache. Ristretto is configured so that an entry of cost 1 costs exactly 1
// (IgnoreInternalCost: its default adds its own bookkeeping to every entry's cost, and a cache
// sized in entries would then hold a small fraction of them), with ten counters per entry as its
// documentation advises.
func New[V any](cfg Config) (*Cache[V], error) {
	if cfg.MaxEntries == 0 {
		cfg.MaxEntries = 100000
	}
	if cfg.TTL == 0 {
		cfg.TTL = time.Minute
	}
	if cfg.MaxEntries < 1 || cfg.TTL < 0 {
		return nil, fmt.Errorf("cache: MaxEntries %d must be positive and TTL %v not negative", cfg.MaxEntries, cfg.TTL)
	}
	r, err := ristretto.NewCache(&ristretto.Config[uint64, entry[V]]{
		NumCounters:        10 * cfg.MaxEntries,
		MaxCost:            cfg.MaxEntries,
		BufferItems:        64,
		Metrics:            true,
		IgnoreInternalCost: true,
		KeyToHash:          func(k uint64) (uint64, uint64) { return k, 0 },
	})
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	return &Cache[V]{r: r, ttl: cfg.TTL, seed1: maphash.MakeSeed(), seed2: maphash.MakeSeed(), flights: map[Key]*flight[V]{}}, nil
}

// Key hashes parts, each length-prefixed so that ("ab", "c") and ("a", "bc") differ.
func (c *Cache[V]) Key(parts ...[]byte) Key {
	var h1, h2 maphash.Hash
	h1.SetSeed(c.seed1)
	h2.SetSeed(c.seed2)
	var n [8]byte
	for _, p := range parts {
		binary.LittleEndian.PutUint64(n[:], uint64(len(p)))
		h1.Write(n[:])
		h2.Write(n[:])
		h1.Write(p)
		h2.Write(p)
	}
	return Key{hi: h1.Sum64(), lo: h2.Sum64()}
}

// AppendFloat32s appends the exact bits of v, little endian: canonical input bytes for a key.
func AppendFloat32s(dst []byte, v []float32) []byte {
	for _, f := range v {
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(f))
	}
	return dst
}

// Get returns the value of k if it is held and not expired.
func (c *Cache[V]) Get(k Key) (V, bool) { return c.GetFresh(k, 0) }

// GetFresh is Get for an entry set at most maxAge ago (maxAge <= 0: any age); an older one counts
// as a miss (it stays, for GetStale).
func (c *Cache[V]) GetFresh(k Key, maxAge time.Duration) (V, bool) {
	e, ok := c.r.Get(k.hi)
	if ok && e.lo == k.lo && (maxAge <= 0 || time.Duration(time.Now().UnixNano()-e.at) <= maxAge) {
		c.hits.Add(1)
		return e.v, true
	}
	c.miss.Add(1)
	var zero V
	return zero, false
}

// GetStale returns k's entry whatever its age, and its age; it does not count as a lookup. It
// serves a stale answer when no fresh one can be had.
func (c *Cache[V]) GetStale(k Key) (v V, age time.Duration, ok bool) {
	e, ok := c.r.Get(k.hi)
	if !ok || e.lo != k.lo {
		return v, 0, false
	}
	return e.v, time.Duration(time.Now().UnixNano() - e.at), true
}

func (c *Cache[V]) Set(k Key, v V, ttl time.Duration) bool {
	if ttl <= 0 {
		ttl = c.ttl
	}
	ok := c.r.SetWithTTL(k.hi, entry[V]{lo: k.lo, at: time.Now().UnixNano(), v: v}, 1, ttl)
	if !ok {
		c.refused.Add(1)
	}
	return ok
}

// Do returns the value of k, filling it with fill on a miss. Concurrent Do calls for one key run
// one fill and share its result (single flight); a fill that fails is not cached and each waiter
// gets its error, except that a waiter whose own ctx is still alive retries when the fill failed
// only because its leader's ctx ended. hit reports whether the value came from the cache.
func (c *Cache[V]) Do(ctx context.Context, k Key, ttl time.Duration, fill func(context.Context) (V, error)) (v V, hit bool, err error) {
	return c.DoFresh(ctx, k, ttl, 0, fill)
}

// DoFresh is Do that takes an entry older than maxAge for a miss (maxAge <= 0: any age); the fill
// replaces it.
func (c *Cache[V]) DoFresh(ctx context.Context, k Key, ttl, maxAge time.Duration, fill func(context.Context) (V, error)) (v V, hit bool, err error) {
	for {
		if v, ok := c.GetFresh(k, maxAge); ok {
			return v, true, nil
		}
		c.mu.Lock()
		if f, ok := c.flights[k]; ok {
			c.mu.Unlock()
			c.shared.Add(1)
			select {
			case <-f.done:
			case <-ctx.Done():
				return v, false, ctx.Err()
			}
			if f.err != nil && isCtxErr(f.err) && ctx.Err() == nil {
				continue // the leader gave up, not the fill: try again
			}
			return f.v, false, f.err
		}
		f := &flight[V]{done: make(chan struct{})}
		c.flights[k] = f
		c.mu.Unlock()

		c.fills.Add(1)
		c.run(f, k, ctx, ttl, fill)
		return f.v, false, f.err
	}
}

// run fills f and always releases its waiters, also when fill panics (the panic goes on up).
func (c *Cache[V]) run(f *flight[V], k Key, ctx context.Context, ttl time.Duration, fill func(context.Context) (V, error)) {
	finished := false
	defer func() {
		if !finished {
			f.err = errors.New("cache: the fill function panicked")
		}
		c.mu.Lock()
		delete(c.flights, k)
		c.mu.Unlock()
		close(f.done)
	}()
	f.v, f.err = fill(ctx)
	finished = true
	if f.err == nil {
		c.Set(k, f.v, ttl)
	}
}

func isCtxErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// Wait blocks until the Sets offered so far have been applied (or dropped); for tests and for
// callers that must read their own write where ristretto allows it.
func (c *Cache[V]) Wait() { c.r.Wait() }

// Clear drops every entry, for a model reload; keys of the new model differ anyway (they hash its
// version and spec fingerprint), so Clear only frees memory sooner.
func (c *Cache[V]) Clear() { c.r.Clear() }

// Stats returns the counters.
func (c *Cache[V]) Stats() Stats {
	h, m := c.hits.Load(), c.miss.Load()
	rm := c.r.Metrics
	return Stats{Lookups: h + m, Hits: h, Misses: m, Fills: c.fills.Load(), Shared: c.shared.Load(),
		Evictions: rm.KeysEvicted(), Rejected: c.refused.Load() + rm.SetsRejected()}
}

// Close stops ristretto's goroutines and frees the entries.
func (c *Cache[V]) Close() { c.r.Close() }
