// Package batcher is a generic micro-batcher: it gathers the rows of concurrent calls into batches
// for a backend, in the manner of Triton's dynamic batcher, and hands each caller back its own rows,
// in its own order. It imports no project package.
//
// A call (Do) brings one or more rows. Rows wait in a bounded queue (per priority level, FIFO within
// a level) until a batch is formed: at once when MaxBatchSize rows (or a preferred size) are
// waiting, else when the oldest row has waited MaxQueueDelay (zero: at once, taking whatever is
// waiting). A batch is formed only when one of MaxInflightBatches slots is free, so under load rows
// gather while the backend is busy and batches grow by themselves. A call larger than MaxBatchSize
// is split across batches and reassembled; one larger than the whole queue enters it in parts. A
// call whose context ends while it waits leaves the queue at once and never counts against anyone
// else; a failed batch fails exactly the calls that had rows in it. A batch's context hands over
// the contexts of the calls it carries (Callers).
package batcher

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Errors returned by Do. Overload errors are *OverloadError, which wraps ErrOverloaded.
var (
	ErrOverloaded = errors.New("batcher queue full")
	ErrClosed     = errors.New("batcher closed")
)

// OverloadError is returned when the queue cannot take a call; RetryAfter estimates when it could.
type OverloadError struct {
	Queued, Rows, Limit int
	RetryAfter          time.Duration
}

func (e *OverloadError) Error() string {
	return fmt.Sprintf("queue full: %d rows waiting, this call brings %d, limit %d (max_queue_size); retry after %v",
		e.Queued, e.Rows, e.Limit, e.RetryAfter)
}

// Unwrap makes errors.Is(err, ErrOverloaded) true.
func (e *OverloadError) Unwrap() error { return ErrOverloaded }

// Config is plain data; zero values are documented per field. Validate reports bad values.
type Config struct {
	// MaxBatchSize is the most rows in one batch. Zero: DefaultMaxBatchSize.
	MaxBatchSize int
	// MaxQueueDelay is how long the oldest waiting row may wait for others. Zero is valid: a batch
	// takes only what is waiting when a slot is free.
	MaxQueueDelay time.Duration
	// PreferredBatchSizes: when the rows waiting reach one of these sizes, a batch of that size is
	// formed at once.
	PreferredBatchSizes []int
	// MaxQueueSize bounds the rows waiting. Zero: DefaultQueueBatches x MaxBatchSize.
	MaxQueueSize int
	// MaxInflightBatches is the number of batches running at once. Zero: 1. While one batch runs,
	// another starts only when it is full (MaxBatchSize rows): a backlog uses more backend slots,
	// but small batches never run side by side, where they would only split the rows (and the
	// CPU) that one batch could take at a lower cost per row.
	MaxInflightBatches int
	// Overlap lets a batch that is not full start while others run (up to MaxInflightBatches), for
	// backends whose batch latency is mostly waiting rather than CPU: a remote server, where one
	// batch at a time would leave the network and the server idle. Zero (false): the rule above.
	Overlap bool
	// DefaultTimeout applies to calls whose context has no deadline. Zero: none.
	DefaultTimeout time.Duration
	// Priorities is the number of priority levels (0 lowest). Zero: 2.
	Priorities int
	// Adaptive picks each batch's wait from the measured batch latency (a + b x rows) and the
	// arrival rate: it waits only when the backend could not keep up with batches of the rows
	// waiting, and then no longer than the rows needed to keep up take to arrive, capped by
	// MaxQueueDelay.
	Adaptive bool
}

// Defaults of a Config's zero fields: batches of DefaultMaxBatchSize rows, and a queue of
// DefaultQueueBatches batches' worth of rows.
const (
	DefaultMaxBatchSize = 64
	DefaultQueueBatches = 64
)

func (c *Config) setDefaults() {
	if c.MaxBatchSize == 0 {
		c.MaxBatchSize = DefaultMaxBatchSize
	}
	if c.MaxQueueSize == 0 {
		c.MaxQueueSize = DefaultQueueBatches * c.MaxBatchSize
	}
	if c.MaxInflightBatches == 0 {
		c.MaxInflightBatches = 1
	}
	if c.Priorities == 0 {
		c.Priorities = 2
	}
}

// Validate reports the first bad value of a defaulted Config.
func (c Config) Validate() error {
	c.setDefaults()
	switch {
	case c.MaxBatchSize < 1:
		return fmt.Errorf("MaxBatchSize: %d is below 1", c.MaxBatchSize)
	case c.MaxQueueDelay < 0:
		return fmt.Errorf("MaxQueueDelay: %v is negative", c.MaxQueueDelay)
	case c.MaxQueueSize < c.MaxBatchSize:
		return fmt.Errorf("MaxQueueSize: %d is below MaxBatchSize %d", c.MaxQueueSize, c.MaxBatchSize)
	case c.MaxInflightBatches < 1:
		return fmt.Errorf("MaxInflightBatches: %d is below 1", c.MaxInflightBatches)
	case c.Priorities < 1 || c.Priorities > 16:
		return fmt.Errorf("Priorities: %d is not in 1..16", c.Priorities)
	case c.DefaultTimeout < 0:
		return fmt.Errorf("DefaultTimeout: %v is negative", c.DefaultTimeout)
	}
	for _, n := range c.PreferredBatchSizes {
		if n < 1 || n > c.MaxBatchSize {
			return fmt.Errorf("PreferredBatchSizes: %d is not in 1..MaxBatchSize (%d)", n, c.MaxBatchSize)
		}
	}
	return nil
}

// RunFunc runs one batch: it returns one output per input row, in order, or an error that fails
// every call with rows in the batch. ctx carries the latest deadline of those calls, and their
// contexts (Callers), but not their cancellation: one caller that leaves does not fail the rows
// of the others. It is called
// from the batcher's worker goroutines, at most MaxInflightBatches at once; rows is only valid
// until it returns.
type RunFunc[In, Out any] func(ctx context.Context, rows []In) ([]Out, error)

// Observer receives the batcher's events (metrics). Its methods are called from the batcher's
// goroutines and from callers' goroutines, concurrently, and must not block.
type Observer interface {
	// Batch: a batch of rows from calls ran; wait is the queue time of its oldest row, compute
	// the RunFunc's time.
	Batch(rows, calls int, wait, compute time.Duration, err error)
	// Rejected: a call was refused before queueing; reason is "queue_full", "deadline" (its
	// deadline had passed) or "closed".
	Rejected(reason string)
	// Cancelled: a queued call's context ended before all its rows ran.
	Cancelled()
	// Queue: the rows waiting changed to n.
	Queue(n int)
}

// call is one Do in flight. Fields after mu are guarded by Batcher.mu.
type call[In, Out any] struct {
	ctx      context.Context
	rows     []In
	out      []Out
	priority int
	enqueued time.Time
	done     chan struct{} // closed when every dispatched row has answered or failed

	next    int   // rows handed to batches so far
	running int   // rows in running batches
	err     error // first batch error
	gone    bool  // the caller left (context ended): undispatched rows dropped, answers discarded
}

// Batcher gathers calls into batches. Its methods may be called concurrently.
type Batcher[In, Out any] struct {
	cfg Config
	run RunFunc[In, Out]
	obs Observer
	now func() time.Time

	// mu guards the queue and the fields below it.
	mu       sync.Mutex
	levels   [][]*call[In, Out] // per priority, FIFO; entries with gone or fully dispatched are skipped
	queued   int                // rows not yet dispatched
	closed   bool
	inflight int
	est      estimator

	wake chan struct{}        // buffered 1: something changed for the dispatcher
	stop chan struct{}        // closed by Close
	work chan *batch[In, Out] // formed batches, to the MaxInflightBatches workers
	wg   sync.WaitGroup       // the dispatcher and the workers
}

// Callers returns the contexts of the calls whose rows the batch of ctx (a RunFunc's) carries, in
// the order of their first rows in it: a batch span links to each caller's span through them, and
// a backend can read what each caller brought (trace context, metadata). Nil for another context.
// The slice is the caller's to read, not to change.
func Callers(ctx context.Context) []context.Context {
	c, _ := ctx.Value(callersKey{}).([]context.Context)
	return c
}

type callersKey struct{}

// Option injects a collaborator.
type Option func(*options)

type options struct {
	obs Observer
	now func() time.Time
}

// WithObserver sets the events' receiver.
func WithObserver(o Observer) Option { return func(opt *options) { opt.obs = o } }

// New starts a batcher; Close stops it.
func New[In, Out any](cfg Config, run RunFunc[In, Out], opts ...Option) (*Batcher[In, Out], error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	o := options{obs: nopObserver{}, now: time.Now}
	for _, f := range opts {
		f(&o)
	}
	b := &Batcher[In, Out]{cfg: cfg, run: run, obs: o.obs, now: o.now,
		levels: make([][]*call[In, Out], cfg.Priorities), wake: make(chan struct{}, 1), stop: make(chan struct{}),
		work: make(chan *batch[In, Out], cfg.MaxInflightBatches)}
	b.wg.Go(b.dispatch)
	// Long-lived workers (not a goroutine per batch): their stacks, grown once by the backend's
	// calls, are kept.
	for range cfg.MaxInflightBatches {
		b.wg.Go(func() {
			for bt := range b.work {
				b.execute(bt)
			}
		})
	}
	return b, nil
}

// Config returns the batcher's defaulted configuration.
func (b *Batcher[In, Out]) Config() Config { return b.cfg }

// Do queues rows at a priority (clamped to the configured levels; higher runs first) and waits for
// their outputs, returned in the rows' order. It returns ctx's error if ctx ends first (the rows
// still waiting leave the queue at once), an *OverloadError when the queue is full, ErrClosed after
// Close, or the error of a batch that ran its rows.
//
// A call larger than the whole queue (MaxQueueSize rows) is admitted in parts of at most
// MaxQueueSize rows, one after the other: each part enters the queue when the one before it has
// run, so the call is served whatever its size; it fails as a whole if one part does (an
// *OverloadError when a part finds the queue full).
func (b *Batcher[In, Out]) Do(ctx context.Context, rows []In, priority int) ([]Out, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		b.obs.Rejected("deadline")
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok && b.cfg.DefaultTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.cfg.DefaultTimeout)
		defer cancel()
	}
	priority = min(max(priority, 0), b.cfg.Priorities-1)
	if len(rows) <= b.cfg.MaxQueueSize {
		return b.do(ctx, rows, priority)
	}
	out := make([]Out, 0, len(rows))
	for start := 0; start < len(rows); start += b.cfg.MaxQueueSize {
		part, err := b.do(ctx, rows[start:min(start+b.cfg.MaxQueueSize, len(rows))], priority)
		if err != nil {
			return nil, err
		}
		out = append(out, part...)
	}
	return out, nil
}

// do queues a call of at most MaxQueueSize rows and waits for it (see Do).
func (b *Batcher[In, Out]) do(ctx context.Context, rows []In, priority int) ([]Out, error) {
	c := &call[In, Out]{ctx: ctx, rows: rows, out: make([]Out, len(rows)), priority: priority, done: make(chan struct{})}

	b.mu.Lock()
	switch {
	case b.closed:
		b.mu.Unlock()
		b.obs.Rejected("closed")
		return nil, ErrClosed
	case b.queued+len(rows) > b.cfg.MaxQueueSize:
		err := &OverloadError{Queued: b.queued, Rows: len(rows), Limit: b.cfg.MaxQueueSize, RetryAfter: b.est.drain(b.queued, b.cfg.MaxBatchSize, b.cfg.MaxInflightBatches)}
		b.mu.Unlock()
		b.obs.Rejected("queue_full")
		return nil, err
	}
	c.enqueued = b.now()
	b.est.arrive(c.enqueued, len(rows))
	b.levels[priority] = append(b.levels[priority], c)
	b.queued += len(rows)
	queued := b.queued
	b.mu.Unlock()
	b.obs.Queue(queued)
	b.signal()

	select {
	case <-c.done:
		return c.out, c.err
	case <-ctx.Done():
	}
	b.mu.Lock()
	if !c.gone && c.next == len(c.rows) && c.running == 0 {
		// Finished while we were being cancelled (done is closed): the answer is there, take it.
		b.mu.Unlock()
		return c.out, c.err
	}
	if !c.gone { // else the dispatcher already dropped it
		c.gone = true
		b.queued -= len(c.rows) - c.next
		c.next = len(c.rows)
	}
	// Leave the level now, not when its head is next trimmed: under load a lower level's head may
	// not be reached for a long time, and its dead entries would pile up.
	q := b.levels[c.priority]
	if i := slices.Index(q, c); i >= 0 {
		b.levels[c.priority] = slices.Delete(q, i, i+1)
	}
	queued = b.queued
	b.mu.Unlock()
	b.obs.Queue(queued)
	b.obs.Cancelled()
	b.signal()
	return nil, ctx.Err()
}

// Queued is the number of rows waiting.
func (b *Batcher[In, Out]) Queued() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.queued
}

// Close refuses new calls, lets the queued ones run, and returns when every batch has finished.
func (b *Batcher[In, Out]) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		b.wg.Wait()
		return
	}
	b.closed = true
	b.mu.Unlock()
	close(b.stop)
	b.wg.Wait()
}

func (b *Batcher[In, Out]) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// dispatch is the batcher's one dispatcher goroutine: it forms batches and starts them.
func (b *Batcher[In, Out]) dispatch() {
	var timer *time.Timer
	var timerC <-chan time.Time
	stop := b.stop
	stopping := false
	for {
		b.mu.Lock()
		wait, size := b.readyLocked(stopping)
		var batch *batch[In, Out]
		if size > 0 {
			batch = b.formLocked(size)
		}
		drained := stopping && b.queued == 0 && b.inflight == 0
		queued := b.queued
		b.mu.Unlock()
		if batch != nil {
			b.obs.Queue(queued)
			b.work <- batch // never blocks: at most MaxInflightBatches are formed and not finished
			continue
		}
		if drained {
			close(b.work)
			return
		}
		if timer != nil {
			timer.Stop()
			timerC = nil
		}
		if wait > 0 {
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			timerC = timer.C
		}
		select {
		case <-b.wake:
		case <-timerC:
		case <-stop:
			stopping = true
			stop = nil // a nil channel: never selected again
		}
	}
}

// readyLocked returns the size of the batch to form now (0: none), or how long to wait before
// asking again (0: until woken).
func (b *Batcher[In, Out]) readyLocked(stopping bool) (wait time.Duration, size int) {
	if b.queued == 0 || b.inflight >= b.cfg.MaxInflightBatches {
		return 0, 0
	}
	if stopping || b.queued >= b.cfg.MaxBatchSize {
		return 0, min(b.queued, b.cfg.MaxBatchSize)
	}
	if b.inflight > 0 && !b.cfg.Overlap {
		return 0, 0 // not full: wait for the running batch, gathering rows behind it
	}
	delay := b.cfg.MaxQueueDelay
	if b.cfg.Adaptive {
		delay = b.est.wait(b.queued, b.cfg.MaxBatchSize, b.cfg.MaxInflightBatches, b.cfg.MaxQueueDelay)
	}
	if delay <= 0 {
		return 0, b.queued
	}
	left := delay - b.now().Sub(b.oldestLocked())
	if left <= 0 {
		return 0, b.queued
	}
	// Within the delay, a preferred size goes at once: the largest one the rows waiting fill.
	best := 0
	for _, p := range b.cfg.PreferredBatchSizes {
		if p <= b.queued && p > best {
			best = p
		}
	}
	if best > 0 {
		return 0, best
	}
	return left, 0
}

func (b *Batcher[In, Out]) oldestLocked() time.Time {
	var oldest time.Time
	for _, q := range b.levels {
		for _, c := range q {
			if c.next < len(c.rows) && (oldest.IsZero() || c.enqueued.Before(oldest)) {
				oldest = c.enqueued
				break // FIFO: the first pending call of a level is its oldest
			}
		}
	}
	return oldest
}

// span is a run of one call's rows inside a batch.
type span[In, Out any] struct {
	c         *call[In, Out]
	from, n   int // the call's rows [from, from+n)
	batchFrom int // where they start in the batch
}

type batch[In, Out any] struct {
	rows   []In
	spans  []span[In, Out]
	oldest time.Time
	ctx    context.Context
	cancel context.CancelFunc
}

// formLocked takes up to size rows, highest priority first, FIFO within a level, skipping calls
// whose context ended (dropped here, so they stop counting at once; their callers return ctx's
// error).
func (b *Batcher[In, Out]) formLocked(size int) *batch[In, Out] {
	bt := &batch[In, Out]{rows: make([]In, 0, size)}
	var deadline time.Time
	unbounded := false // a call without a deadline: the batch gets none
	for lvl := len(b.levels) - 1; lvl >= 0 && len(bt.rows) < size; lvl-- {
		q := b.levels[lvl]
		i := 0
		for ; i < len(q) && len(bt.rows) < size; i++ {
			c := q[i]
			if c.gone || c.next == len(c.rows) {
				continue
			}
			if c.ctx.Err() != nil { // ended, and its caller has not noticed yet
				c.gone = true
				b.queued -= len(c.rows) - c.next
				c.next = len(c.rows)
				continue // the caller's Do sees ctx.Done and returns
			}
			n := min(len(c.rows)-c.next, size-len(bt.rows))
			bt.spans = append(bt.spans, span[In, Out]{c: c, from: c.next, n: n, batchFrom: len(bt.rows)})
			bt.rows = append(bt.rows, c.rows[c.next:c.next+n]...)
			if bt.oldest.IsZero() || c.enqueued.Before(bt.oldest) {
				bt.oldest = c.enqueued
			}
			if d, ok := c.ctx.Deadline(); !ok {
				unbounded = true
			} else if d.After(deadline) {
				deadline = d
			}
			c.next += n
			c.running += n
			b.queued -= n
			if c.next < len(c.rows) {
				break // the rest of a split call waits for the next batch, ahead of later calls
			}
		}
		// Drop the dispatched and abandoned calls from the head of the level.
		j := 0
		for j < len(q) && (q[j].gone || q[j].next == len(q[j].rows)) {
			q[j] = nil
			j++
		}
		b.levels[lvl] = q[j:]
	}
	if len(bt.rows) == 0 {
		return nil
	}
	b.inflight++
	callers := make([]context.Context, len(bt.spans))
	for i, s := range bt.spans {
		callers[i] = s.c.ctx
	}
	base := context.WithValue(context.Background(), callersKey{}, callers)
	if unbounded || deadline.IsZero() {
		bt.ctx, bt.cancel = context.WithCancel(base)
	} else {
		bt.ctx, bt.cancel = context.WithDeadline(base, deadline)
	}
	return bt
}

// execute runs a batch on a worker goroutine and hands each call its rows.
func (b *Batcher[In, Out]) execute(bt *batch[In, Out]) {
	start := b.now()
	out, err := b.runSafe(bt)
	compute := b.now().Sub(start)
	bt.cancel()
	if err == nil && len(out) != len(bt.rows) {
		err = fmt.Errorf("batcher: the batch function returned %d outputs for %d rows", len(out), len(bt.rows))
	}
	b.mu.Lock()
	b.inflight--
	if err == nil {
		b.est.observe(len(bt.rows), compute)
	}
	// Calls dropped while this batch ran are already answered by their own ctx; only live ones
	// get rows. A done channel is closed once, by the batch that finishes a call's last rows.
	queued := b.queued
	for _, s := range bt.spans {
		c := s.c
		c.running -= s.n
		if err != nil && c.err == nil {
			c.err = err
			if c.next < len(c.rows) {
				// A split call that failed: its waiting rows need not run.
				b.queued -= len(c.rows) - c.next
				c.next = len(c.rows)
				queued = b.queued
			}
		}
		if !c.gone && err == nil {
			copy(c.out[s.from:s.from+s.n], out[s.batchFrom:s.batchFrom+s.n])
		}
		if c.running == 0 && c.next == len(c.rows) {
			close(c.done)
		}
	}
	b.mu.Unlock()
	b.obs.Queue(queued)
	b.obs.Batch(len(bt.rows), len(bt.spans), start.Sub(bt.oldest), compute, err)
	b.signal()
}

func (b *Batcher[In, Out]) runSafe(bt *batch[In, Out]) (out []Out, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("batcher: the batch function panicked: %v", r)
		}
	}()
	return b.run(bt.ctx, bt.rows)
}

type nopObserver struct{}

func (nopObserver) Batch(int, int, time.Duration, time.Duration, error) {}
func (nopObserver) Rejected(string)                                     {}
func (nopObserver) Cancelled()                                          {}
func (nopObserver) Queue(int)                                           {}
