package drift

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/novacron/sidecar/features"
)

// DefaultMaxPerKey is the default of LabelsConfig.MaxPerKey: the answers kept per key awaiting
// their label.
const DefaultMaxPerKey = 16

// LabelsConfig bounds a Labels tracker. It is plain data; zero values are documented per field
// and applied by NewLabels.
type LabelsConfig struct {
	// MaxPerKey bounds the predictions kept per key; a new prediction beyond it pushes out the one
	// made first (counted as Dropped if it was never labelled). Zero: DefaultMaxPerKey (16).
	MaxPerKey int
	// MaxKeys bounds the keys tracked (those with a prediction kept); beyond it a new key's
	// prediction is not kept (counted as Dropped). Zero: features.DefaultMaxVMs (100000).
	MaxKeys int
	// Window is how long a prediction waits for its label, and the rolling window the report is
	// computed over, in whole steps of Step (rounded up; at most a week of steps). Zero:
	// DefaultAccuracyWindow (1h).
	Window time.Duration
	// Step is the granularity of the rolling window: the report counts whole steps of the
	// tracker's clock. Zero: features.DefaultStep (1m).
	Step time.Duration
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
}

// withDefaults returns c with its zero fields set to their defaults.
func (c LabelsConfig) withDefaults() LabelsConfig {
	if c.MaxPerKey == 0 {
		c.MaxPerKey = DefaultMaxPerKey
	}
	if c.MaxKeys == 0 {
		c.MaxKeys = features.DefaultMaxVMs
	}
	if c.Window == 0 {
		c.Window = DefaultAccuracyWindow
	}
	if c.Step == 0 {
		c.Step = features.DefaultStep
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports the first bad field of c, its zero values taken as their defaults.
func (c LabelsConfig) Validate() error {
	switch {
	case c.MaxPerKey < 0:
		return fmt.Errorf("drift: labels: MaxPerKey: %d is negative", c.MaxPerKey)
	case c.MaxKeys < 0:
		return fmt.Errorf("drift: labels: MaxKeys: %d is negative", c.MaxKeys)
	case c.Window < 0:
		return fmt.Errorf("drift: labels: Window: %v is negative", c.Window)
	case c.Step < 0:
		return fmt.Errorf("drift: labels: Step: %v is negative", c.Step)
	}
	d := c.withDefaults()
	return checkWindow("labels", d.Window, d.Step)
}

// Labels tracks the live accuracy of a classifier (an anomaly model's verdicts, a placement
// model's best node) against the truth pushed later as labels: it keeps each answer (Predict) for
// a while, joins a label (Label) with the answer it is the truth of, and counts the correct ones
// per step of a rolling window.
//
// The join. A label for key at time t scores the prediction for key NEAREST in time to t, before
// or after it (at equal distances the earlier; of predictions made at the same time, the one
// recorded last), among those kept (made after now − Window, not pushed out) and made less than a
// Window from t; if none is, the label joins nothing. A prediction is recorded when the model
// answered, a little after the metrics it was about (and a label's time may be truncated to the
// millisecond), so a label stamped with the time of those metrics, or stamped right after the
// answer, is nearest to that answer, not to the one before it. A label at the clock (a zero
// time) joins the newest prediction. Each prediction is scored at most once: a label whose nearest
// prediction is already scored is a duplicate and joins nothing, not a neighbour (Duplicates
// counts it). The label is correct when its truth equals the prediction's class.
//
// Memory is bounded: at most MaxPerKey predictions for each of at most MaxKeys keys, and
// O(Window/Step) sums. A key's predictions are freed when they expire (made Window or more before
// the clock), on its next Predict or Label, and a key with none is forgotten; when MaxKeys are
// tracked and a new key comes, a sweep of every shard (at most once a step) frees the others'. A
// scored prediction is kept until it expires, so that a later label nearest to it finds it scored
// (a duplicate), not a neighbour.
// All methods may be called concurrently; Predict and Label take one of 16 shard locks, never a
// global one, and allocate only while a key's slots grow (its first predictions).
type Labels struct {
	rolling                 // the window on the clock from NewLabels; the keys tracked (MaxKeys)
	cfg        LabelsConfig // defaults applied
	duplicates atomic.Int64
	shards     [accuracyShards]lblShard
}

type lblShard struct {
	// mu guards keys, every lblKey in it, and buckets.
	mu      sync.Mutex
	keys    map[string]*lblKey
	buckets ring[lblBucket] // the window's sums
	_       [64]byte        // keeps the next shard's lock off this one's cache line
}

// lblBucket sums what happened in one step of the tracker's clock.
type lblBucket struct {
	scored      int64 // labels joined
	correct     int64 // of them, equal to the prediction
	predictions int64 // predictions kept
	labelled    int64 // of them (kept in this step), those scored since
	dropped     int64 // predictions refused or pushed out unlabelled
}

// lblKey holds one key's predictions, ordered by their time (equal times in the order recorded).
type lblKey struct {
	ps []lblPrediction
}

type lblPrediction struct {
	at     int64 // unix ns
	kept   int64 // the bucket (step of the clock) it was kept in, counted in its predictions
	class  string
	scored bool
}

// NewLabels makes a tracker; cfg's zero fields take their defaults.
func NewLabels(cfg LabelsConfig) (*Labels, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	l := &Labels{cfg: cfg}
	l.init(cfg.Step, cfg.Window, cfg.Now())
	for i := range l.shards {
		sh := &l.shards[i]
		sh.keys = map[string]*lblKey{}
		sh.buckets = newRing[lblBucket](l.steps)
	}
	return l, nil
}

func (l *Labels) shard(key string) *lblShard {
	return &l.shards[l.shardOf(key)]
}

// Predict records the model's answer class for key, made at `at` (zero: the tracker's clock).
// A prediction already expired (made Window or more before the clock), or made more than a Window
// ahead of the clock (a clock that far off is wrong), is ignored.
func (l *Labels) Predict(key string, at time.Time, class string) {
	now := l.cfg.Now()
	if at.IsZero() {
		at = now
	}
	d, n := at.Sub(now), now.UnixNano() // Sub saturates: no overflow however far at is
	if d <= -time.Duration(l.window) || d > time.Duration(l.window) {
		return
	}
	t := n + int64(d)
	b := l.bucketOf(now)
	sh := l.shard(key)
	sh.mu.Lock()
	kept := l.predictLocked(sh, key, t, class, n, b)
	sh.mu.Unlock()
	if kept {
		return
	}
	swept := l.sweep(now, b) // without a shard lock: it takes each in turn
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if swept && l.predictLocked(sh, key, t, class, n, b) {
		return
	}
	if bk := sh.buckets.bucketLocked(b); bk != nil {
		bk.dropped++
	}
}

// predictLocked keeps a prediction; false if key is new and MaxKeys keys are tracked (then the
// caller unlocks, sweeps for room and may call again).
func (l *Labels) predictLocked(sh *lblShard, key string, at int64, class string, now, b int64) bool {
	k := sh.keys[key]
	if k == nil {
		if !l.reserve(l.cfg.MaxKeys) {
			return false
		}
		k = &lblKey{}
		sh.keys[key] = k
	}
	l.expireLocked(k, now)
	bk := sh.buckets.bucketLocked(b)
	// Insert in time order: after every prediction made at or before at (usually at the end).
	i := len(k.ps)
	for i > 0 && k.ps[i-1].at > at {
		i--
	}
	if len(k.ps) >= l.cfg.MaxPerKey {
		if i == 0 {
			// Older than every kept one: it is the one pushed out.
			if bk != nil {
				bk.dropped++
			}
			return true
		}
		if !k.ps[0].scored && bk != nil {
			bk.dropped++
		}
		copy(k.ps, k.ps[1:i])
		i--
		k.ps[i] = lblPrediction{at: at, kept: b, class: class}
	} else {
		k.ps = append(k.ps, lblPrediction{})
		copy(k.ps[i+1:], k.ps[i:])
		k.ps[i] = lblPrediction{at: at, kept: b, class: class}
	}
	if bk != nil {
		bk.predictions++
	}
	return true
}

// sweep frees, in every shard, the expired predictions and the keys left with none, to make room
// for a new key; at most once per step of the clock (b). It reports whether it swept. The caller
// holds no shard lock.
func (l *Labels) sweep(now time.Time, b int64) bool {
	if !l.claimSweep(b) {
		return false
	}
	t := now.UnixNano()
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		for key, k := range sh.keys {
			l.expireLocked(k, t)
			if len(k.ps) == 0 {
				delete(sh.keys, key)
				l.count.Add(-1)
			}
		}
		sh.mu.Unlock()
	}
	return true
}

// expireLocked frees k's predictions made Window or more before now (unix ns): the oldest first.
func (l *Labels) expireLocked(k *lblKey, now int64) {
	n := 0
	for n < len(k.ps) && k.ps[n].at <= now-l.window {
		n++
	}
	if n > 0 {
		m := copy(k.ps, k.ps[n:])
		clear(k.ps[m:]) // drop the freed classes' strings
		k.ps = k.ps[:m]
	}
}

// Label records the truth for key at `at` (zero: the tracker's clock) and scores the prediction
// it joins (see Labels for the rule: the nearest in time to at): correct when truth equals its
// class. It reports whether a prediction was scored. A label two Windows or more from the clock
// joins nothing (every prediction kept was made within a Window of the clock), however far its
// time: none overflows Unix nanoseconds into a time near the clock.
func (l *Labels) Label(key string, at time.Time, truth string) (joined bool) {
	now := l.cfg.Now()
	if at.IsZero() {
		at = now
	}
	d, n := at.Sub(now), now.UnixNano() // Sub saturates: no overflow however far at is
	if d <= -2*time.Duration(l.window) || d >= 2*time.Duration(l.window) {
		return false
	}
	t := n + int64(d)
	b := l.bucketOf(now)
	sh := l.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	k := sh.keys[key]
	if k == nil {
		return false
	}
	l.expireLocked(k, n)
	defer func() {
		if len(k.ps) == 0 {
			delete(sh.keys, key)
			l.count.Add(-1)
		}
	}()
	p := nearest(k.ps, t)
	if p == nil || absDiff(p.at, t) >= l.window {
		return false // nothing kept within the window of t
	}
	if p.scored {
		l.duplicates.Add(1)
		return false
	}
	bk := sh.buckets.bucketLocked(b)
	if bk == nil {
		return false
	}
	p.scored = true
	bk.scored++
	if p.class == truth {
		bk.correct++
	}
	if kb := sh.buckets.heldLocked(p.kept); kb != nil {
		kb.labelled++ // the step it was kept in still holds it (it counted it in predictions)
	}
	return true
}

// nearest returns the prediction of ps (in time order; equal times in the order recorded) made
// nearest to t (unix ns): the latest made at or before t, or the earliest made after it, whichever
// is nearer, the earlier at equal distances; of several made at the same time, the one recorded
// last. Nil when ps is empty.
func nearest(ps []lblPrediction, t int64) *lblPrediction {
	i := len(ps) // the first made after t
	for i > 0 && ps[i-1].at > t {
		i--
	}
	j := i // the last recorded of those made at ps[i].at
	for j+1 < len(ps) && ps[j+1].at == ps[i].at {
		j++
	}
	switch {
	case i == len(ps) && i == 0:
		return nil
	case i == len(ps):
		return &ps[i-1]
	case i == 0:
		return &ps[j]
	case t-ps[i-1].at <= ps[i].at-t:
		return &ps[i-1]
	}
	return &ps[j]
}

// absDiff is |a − b| for times within a few Windows of each other (no overflow).
func absDiff(a, b int64) int64 {
	if a < b {
		return b - a
	}
	return a - b
}

// Report sums the window at the tracker's clock: Accuracy is the share of the labels scored in
// the window that equal their prediction (NaN when none was scored), MAE is NaN (a classifier has
// none), Points the labels scored in the window (by when they were scored, whenever their
// prediction was made), Forecasts the predictions kept in the window, Evaluated those of them
// scored so far (by when the prediction was kept: Evaluated/Forecasts, exported as
// model_prediction_evaluated_ratio, is the share of the window's predictions that got a label, at
// most 1), and Dropped the predictions refused or pushed out unlabelled in the window. It takes
// each shard's lock in turn.
func (l *Labels) Report() AccuracyReport {
	b := l.bucketOf(l.cfg.Now())
	var correct int64
	var r AccuracyReport
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		for bk := range sh.buckets.windowLocked(b) {
			r.Points += bk.scored
			correct += bk.correct
			r.Forecasts += bk.predictions
			r.Evaluated += bk.labelled
			r.Dropped += bk.dropped
		}
		sh.mu.Unlock()
	}
	r.Accuracy, r.MAE = math.NaN(), math.NaN()
	if r.Points > 0 {
		r.Accuracy = float64(correct) / float64(r.Points)
	}
	return r
}

// Duplicates is the number of labels ignored because the prediction they joined was already
// scored, since NewLabels.
func (l *Labels) Duplicates() int64 { return l.duplicates.Load() }

// Len is the number of keys tracked: those with a prediction kept, or not yet freed.
func (l *Labels) Len() int { return int(l.count.Load()) }

var _ AccuracySource = (*Labels)(nil)
