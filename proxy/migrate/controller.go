package migrate

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/novacron/sidecar/proxy"
)

// States of a migration.
const (
	StateRunning    = "running"     // advancing by its gates
	StatePaused     = "paused"      // held by an operator; a failing gate still rolls it back
	StateRolledBack = "rolled_back" // a gate failed, or an operator rolled it back: waits for resume
	StateDone       = "done"        // every stage passed: the route serves the candidate alone
)

// Kinds of transition, as counted in sidecar_migration_transitions_total.
const (
	KindAdvance  = "advance"
	KindRollback = "rollback"
	KindPause    = "pause"
	KindResume   = "resume"
	KindDone     = "done"
	KindStart    = "start"
)

// DefaultEvalEvery is how often a Controller's Run evaluates the gates of every running migration
// (a failing rate gate is also seen on the comparison that makes it fail).
const DefaultEvalEvery = time.Second

// deltaWindow bounds the latency deltas kept per stage for the p99 gate.
const deltaWindow = 4096

// A rate gate fails (and rolls back) only after rollbackMinCalls calls, on a lower bound at
// confidence 1 - (1 - Gates.Confidence)/failStrictness (99.5% for 95%): see verdictLocked.
const (
	rollbackMinCalls = 10
	failStrictness   = 10
)

// RouteSetter is what a Controller drives: proxy.Service.
type RouteSetter interface {
	SetRoute(name string, r proxy.Route) error
}

// Config is a Controller's plain-data configuration.
type Config struct {
	Migrations []Spec
	// StateFile keeps each migration's stage across restarts (written atomically on every
	// transition). Empty: stages are not kept (tests).
	StateFile string
	// EvalEvery: how often Run evaluates the gates. Zero: DefaultEvalEvery.
	EvalEvery time.Duration
	// Log receives one line per transition. Nil: none.
	Log io.Writer
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
}

// Controller runs migrations: it sets their routes' stages on the Service, takes the outcomes of
// their calls from a Recorder, and advances or rolls back by their gates. Its methods may be
// called concurrently.
type Controller struct {
	cfg    Config
	routes RouteSetter
	// set is the current set of migrations, replaced by Reload; read without a lock on the
	// calls' path.
	set atomic.Pointer[migrationSet]
	// persistMu serializes writes of the state file.
	persistMu sync.Mutex
	// reloadMu serializes Reload.
	reloadMu sync.Mutex

	transitions *prometheus.CounterVec
	stageGauge  *prometheus.GaugeVec
}

type migrationSet struct {
	byName  map[string]*migration
	byRoute map[string]*migration
	names   []string
}

// migration is one migration's runtime state.
type migration struct {
	spec        Spec // defaults applied
	fingerprint string
	// calls and errors count the calls each arm served (0: From, 1: To) in the current stage.
	calls, errs [2]atomic.Int64
	// saved is what the state file keeps of the migration, set with each transition (read by
	// persist without m.mu, so that two migrations' transitions never wait on each other).
	saved atomic.Pointer[persisted]
	// dropped counts the stage's shadowed calls the queue dropped: counted on the caller's
	// goroutine, which must never wait for m.mu (held across a transition's SetRoute and fsync).
	dropped atomic.Int64

	// mu guards the fields below.
	mu sync.Mutex
	// retired is set when a Reload replaced the migration: it moves its route no more.
	retired bool
	state   string
	stage   int // -1: before the first stage (rolled back from it); len(stages): done
	since   time.Time
	reason  string // of the last transition
	kind    string // of the last transition
	at      time.Time
	st      stageStats
}

// stageStats are the current stage's comparisons.
type stageStats struct {
	compared, disagreed int64
	fields              map[string]int64
	examples            map[string]string
	// candCalls and candErrs count the candidate's calls as a shadow (its served calls are in
	// migration.calls); shadowed counts every shadowed call run, timeouts and dropped as named.
	candCalls, candErrs int64
	shadowed, timeouts  int64
	deltas              *Window
}

func (s *stageStats) reset() {
	*s = stageStats{fields: map[string]int64{}, examples: map[string]string{}, deltas: NewWindow(deltaWindow)}
}

// NewController makes a Controller over routes: each migration starts at the stage the state file
// holds for it (when its spec is unchanged) or at its first, and its route is set. It returns an
// error for a state file it cannot read or parse (delete it to start every migration at its first
// stage). metrics may be nil.
func NewController(cfg Config, routes RouteSetter, reg prometheus.Registerer) (*Controller, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.EvalEvery = cmp.Or(cfg.EvalEvery, DefaultEvalEvery)
	c := &Controller{cfg: cfg, routes: routes,
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidecar_migration_transitions_total",
			Help: "Transitions of each migration, by kind (start, advance, rollback, pause, resume, done).",
		}, []string{"migration", "kind"}),
		stageGauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sidecar_migration_stage",
			Help: "The current stage of each migration: 0 is the first, -1 before it (rolled back from it), the number of stages when done.",
		}, []string{"migration"}),
	}
	if reg != nil {
		reg.MustRegister(c.transitions, c.stageGauge)
	}
	c.set.Store(&migrationSet{byName: map[string]*migration{}, byRoute: map[string]*migration{}})
	if err := c.Reload(cfg.Migrations); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload replaces the migrations: one whose name and spec are unchanged keeps its stage and
// statistics; any other starts where the state file says (for its spec) or at its first stage.
// Every migration's route is set to its stage.
func (c *Controller) Reload(specs []Spec) error {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	saved, err := readState(c.cfg.StateFile)
	if err != nil {
		return err
	}
	old := c.set.Load()
	set := &migrationSet{byName: map[string]*migration{}, byRoute: map[string]*migration{}}
	for _, sp := range specs {
		sp = sp.WithDefaults()
		if err := sp.Validate(); err != nil {
			return fmt.Errorf("migration %q: %w", sp.Name, err)
		}
		if set.byName[sp.Name] != nil || set.byRoute[sp.Route] != nil {
			return fmt.Errorf("migration %q: a second migration of name %q or route %s", sp.Name, sp.Name, sp.Route)
		}
		fp := sp.Fingerprint()
		m := old.byName[sp.Name]
		if m == nil || m.fingerprint != fp {
			m = &migration{spec: sp, fingerprint: fp, state: StateRunning, since: c.cfg.Now(), at: c.cfg.Now(), kind: KindStart}
			m.st.reset()
			if p, ok := saved[sp.Name]; ok && p.Fingerprint == fp && p.Stage >= -1 && p.Stage <= len(sp.Stages) && validState(p.State) {
				m.stage, m.state, m.reason = p.Stage, p.State, "resumed from "+c.cfg.StateFile+": "+p.Reason
			} else {
				m.reason = "first stage"
				if ok {
					m.reason = "the spec changed since the saved stage; first stage"
				}
			}
		}
		set.byName[sp.Name], set.byRoute[sp.Route] = m, m
		set.names = append(set.names, sp.Name)
	}
	slices.Sort(set.names)
	// The migrations replaced move their routes no more (a transition of theirs in flight would
	// otherwise set an old spec's route over the new one's).
	retire := func(v bool) {
		for name, m := range old.byName {
			if set.byName[name] != m {
				m.mu.Lock()
				m.retired = v
				m.mu.Unlock()
			}
		}
	}
	retire(true)
	var errs []error
	for _, name := range set.names {
		m := set.byName[name]
		m.mu.Lock()
		err := c.applyLocked(m)
		if err == nil && m.saved.Load() == nil { // a new migration: what the state file keeps of it
			m.saved.Store(&persisted{Fingerprint: m.fingerprint, Stage: m.stage, State: m.state, Reason: m.reason, At: m.at})
		}
		m.mu.Unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("migration %q: %w", name, err))
		}
	}
	if len(errs) > 0 {
		retire(false)
		return errors.Join(errs...)
	}
	c.set.Store(set)
	for name := range old.byName {
		if set.byName[name] == nil {
			c.stageGauge.DeleteLabelValues(name)
		}
	}
	for _, name := range set.names {
		c.stageGauge.WithLabelValues(name).Set(float64(set.byName[name].saved.Load().Stage))
	}
	return c.persist()
}

func validState(s string) bool {
	return s == StateRunning || s == StatePaused || s == StateRolledBack || s == StateDone
}

// Route is the route a migration sets at a stage: before the first stage the baseline alone; at
// a stage, the candidate takes Split of the keys and each target shadows the other's calls at
// Shadow; when done, the candidate alone.
func (sp Spec) RouteAt(stage int) proxy.Route {
	r := proxy.Route{Target: sp.From, Key: sp.Key}
	switch {
	case stage < 0:
	case stage >= len(sp.Stages):
		r.Target = sp.To
	default:
		st := sp.Stages[stage]
		if st.Split > 0 {
			r.Split = []proxy.Arm{{Target: sp.To, Percent: st.Split}}
		}
		if st.Shadow > 0 {
			r.Shadow = []proxy.Arm{{Target: sp.To, Percent: st.Shadow}, {Target: sp.From, Percent: st.Shadow}}
		}
	}
	return r
}

// Overlay returns routes with the route of each migration of specs set to its current stage (or
// the stage it would start at): what a reload hands the Service before Reload takes the specs.
func (c *Controller) Overlay(routes proxy.Routes, specs []Spec) proxy.Routes {
	out := make(proxy.Routes, len(routes))
	for k, v := range routes {
		out[k] = v
	}
	set := c.set.Load()
	saved, _ := readState(c.cfg.StateFile)
	for _, sp := range specs {
		sp = sp.WithDefaults()
		stage := 0
		fp := sp.Fingerprint()
		if m := set.byName[sp.Name]; m != nil && m.fingerprint == fp {
			m.mu.Lock()
			stage = m.stage
			m.mu.Unlock()
		} else if p, ok := saved[sp.Name]; ok && p.Fingerprint == fp {
			stage = p.Stage
		}
		out[sp.Route] = sp.RouteAt(stage)
	}
	return out
}

// applyLocked sets m's route to its stage.
func (c *Controller) applyLocked(m *migration) error {
	return c.routes.SetRoute(m.spec.Route, m.spec.RouteAt(m.stage))
}

// transitionLocked moves m to stage in state, starting the stage's statistics afresh, sets the
// route and persists; on a route the Service refuses, nothing changes.
func (c *Controller) transitionLocked(m *migration, stage int, state, kind, reason string) error {
	if m.retired {
		return fmt.Errorf("%s: replaced by a reload: %w", kind, ErrState)
	}
	prev, prevState := m.stage, m.state
	m.stage, m.state = stage, state
	if err := c.applyLocked(m); err != nil {
		m.stage, m.state = prev, prevState
		return err
	}
	now := c.cfg.Now()
	if stage != prev || kind == KindResume {
		// A new stage, or a resumed one (its counts are of what made it fail), starts afresh.
		m.since = now
		m.st.reset()
		for i := range m.calls {
			m.calls[i].Store(0)
			m.errs[i].Store(0)
		}
		m.dropped.Store(0)
	}
	m.kind, m.reason, m.at = kind, reason, now
	m.saved.Store(&persisted{Fingerprint: m.fingerprint, Stage: stage, State: state, Reason: reason, At: now})
	c.transitions.WithLabelValues(m.spec.Name, kind).Inc()
	c.stageGauge.WithLabelValues(m.spec.Name).Set(float64(stage))
	if c.cfg.Log != nil {
		fmt.Fprintf(c.cfg.Log, "migration %s: %s to %s (%s): %s\n", m.spec.Name, kind, m.spec.stageName(stage), state, reason)
	}
	return c.persist()
}

// stageName names a stage for people.
func (sp Spec) stageName(stage int) string {
	switch {
	case stage < 0:
		return "baseline (" + sp.From + " alone)"
	case stage >= len(sp.Stages):
		return "done (" + sp.To + " alone)"
	}
	return fmt.Sprintf("stage %d/%d: %s", stage+1, len(sp.Stages), sp.Stages[stage].describe())
}

// arm returns 0 for the baseline, 1 for the candidate, -1 for another target.
func (m *migration) arm(target string) int {
	switch target {
	case m.spec.From:
		return 0
	case m.spec.To:
		return 1
	}
	return -1
}

// served counts a call a route served (see Recorder.Served).
func (c *Controller) served(route, target string, err error) {
	m := c.set.Load().byRoute[route]
	if m == nil {
		return
	}
	if a := m.arm(target); a >= 0 {
		m.calls[a].Add(1)
		if err != nil {
			m.errs[a].Add(1)
		}
	}
}

// dropped counts a shadowed call the queue dropped, without waiting (see migration.dropped).
func (c *Controller) dropped(route string) {
	if m := c.set.Load().byRoute[route]; m != nil {
		m.dropped.Add(1)
	}
}

// compared takes one shadowed call's outcome and, when it had both answers, their comparison
// (base: the baseline's answer); a rate gate it makes fail rolls the migration back at once.
func (c *Controller) compared(o *proxy.ShadowOutcome, d Diff, timeout bool) {
	m := c.set.Load().byRoute[o.Route]
	if m == nil {
		return
	}
	shadowArm, primaryArm := m.arm(o.Shadow), m.arm(o.Primary)
	if shadowArm < 0 || primaryArm < 0 || shadowArm == primaryArm {
		return // a shadow of another route's making: not this migration's comparison
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s := &m.st
	s.shadowed++
	if shadowArm == 1 {
		s.candCalls++
	}
	if o.Err != nil {
		if timeout {
			s.timeouts++
		}
		if shadowArm == 1 {
			s.candErrs++
		}
	} else {
		s.compared++
		if !d.Agree() {
			s.disagreed++
			for _, f := range d.Fields {
				s.fields[f]++
				// A Diff's Detail describes its first disagreement: it is a field's example when
				// it names the field (a field without one yet takes it anyway).
				if _, ok := s.examples[f]; !ok || (!strings.Contains(s.examples[f], f) && strings.Contains(d.Detail, f)) {
					s.examples[f] = d.Detail
				}
			}
		}
		delta := o.Latency - o.PrimaryLatency // shadow minus primary
		if shadowArm == 0 {
			delta = -delta // candidate minus baseline
		}
		s.deltas.Add(delta.Seconds())
	}
	if m.state == StateDone {
		return
	}
	// A rolled-back migration still compares at its stage (the candidate may serve a share): a
	// gate failing there rolls it back further, to the baseline alone at last.
	if v := c.verdictLocked(m, false); v.fail {
		if err := c.transitionLocked(m, m.stage-1, StateRolledBack, KindRollback, v.why); err != nil && c.cfg.Log != nil {
			fmt.Fprintf(c.cfg.Log, "migration %s: rollback failed: %v\n", m.spec.Name, err)
		}
	}
}

// verdict is a migration's gate evaluation.
type verdict struct {
	fail, advance bool
	why           string
}

// verdictLocked evaluates m's gates in its current stage. With latency it also evaluates the p99
// latency gate (which sorts the stage's deltas).
func (c *Controller) verdictLocked(m *migration, latency bool) verdict {
	if m.stage < 0 || m.stage >= len(m.spec.Stages) {
		return verdict{why: "no stage to evaluate"}
	}
	g, st, s := m.spec.Gates, m.spec.Stages[m.stage], &m.st
	z := Z(g.Confidence)
	_, dHi := Bounds(s.disagreed, s.compared, z)
	cand := s.candCalls + m.calls[1].Load()
	candErrs := s.candErrs + m.errs[1].Load()
	_, eHi := Bounds(candErrs, cand, z)
	conf := pct(g.Confidence * 100)
	// The rates are tested after every compared call: a sequential look, which at the gates'
	// own confidence would roll good candidates back far more often than it says. A rollback
	// needs the stricter failConfidence and at least rollbackMinCalls calls.
	failConf := 1 - (1-g.Confidence)/failStrictness
	zFail := Z(failConf)
	dLo, _ := Bounds(s.disagreed, s.compared, zFail)
	eLo, _ := Bounds(candErrs, cand, zFail)
	switch {
	case s.compared >= rollbackMinCalls && dLo > g.MaxDisagreement:
		return verdict{fail: true, why: fmt.Sprintf("disagreement: %d of %d compared calls disagree (at least %.2f%% at %s%% confidence; gate %.2f%%)%s",
			s.disagreed, s.compared, 100*dLo, pct(failConf*100), 100*g.MaxDisagreement, topField(s))}
	case cand >= rollbackMinCalls && eLo > g.MaxShadowErrors:
		return verdict{fail: true, why: fmt.Sprintf("errors: %d of %d calls of %s failed (at least %.2f%% at %s%% confidence; gate %.2f%%)",
			candErrs, cand, m.spec.To, 100*eLo, pct(failConf*100), 100*g.MaxShadowErrors)}
	}
	if latency && s.compared >= st.MinCalls && s.deltas.Len() > 0 {
		if p99 := c.p99Locked(m); p99 > g.MaxP99Delta {
			return verdict{fail: true, why: fmt.Sprintf("latency: p99 of %s minus %s is %v over %d calls (gate %v)",
				m.spec.To, m.spec.From, p99.Round(10*time.Microsecond), s.deltas.Len(), g.MaxP99Delta)}
		}
	}
	in := c.cfg.Now().Sub(m.since)
	switch {
	case in < st.MinDuration:
		return verdict{why: fmt.Sprintf("holding: %v of the stage's %v", in.Round(time.Second), st.MinDuration)}
	case s.compared < st.MinCalls:
		return verdict{why: fmt.Sprintf("holding: %d of the stage's %d compared calls", s.compared, st.MinCalls)}
	case dHi > g.MaxDisagreement:
		return verdict{why: fmt.Sprintf("holding: disagreement could still be %.2f%% (%d of %d; gate %.2f%% at %s%% confidence): needs more calls",
			100*dHi, s.disagreed, s.compared, 100*g.MaxDisagreement, conf)}
	case eHi > g.MaxShadowErrors:
		return verdict{why: fmt.Sprintf("holding: %s's error rate could still be %.2f%% (%d of %d; gate %.2f%%): needs more calls",
			m.spec.To, 100*eHi, candErrs, cand, 100*g.MaxShadowErrors)}
	case !latency:
		return verdict{why: "holding: gates hold; the latency gate is evaluated at the next tick"}
	}
	return verdict{advance: true, why: fmt.Sprintf("gates held: %d of %d compared calls disagree (at most %.2f%%), %s errors at most %.2f%%, p99 latency delta %v",
		s.disagreed, s.compared, 100*dHi, m.spec.To, 100*eHi, c.p99Locked(m).Round(10*time.Microsecond))}
}

// p99Locked is the p99 of the stage's latency deltas (candidate minus baseline).
func (c *Controller) p99Locked(m *migration) time.Duration {
	vals := m.st.deltas.Values(nil)
	if len(vals) == 0 {
		return 0
	}
	return time.Duration(Quantile(vals, 0.99) * float64(time.Second))
}

// topField names the field that disagreed most, with its example.
func topField(s *stageStats) string {
	best, n := "", int64(0)
	for f, k := range s.fields {
		if k > n || (k == n && f < best) {
			best, n = f, k
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf("; most in %s (%d), e.g. %s", best, n, s.examples[best])
}

// Tick evaluates every running migration's gates: one whose stage is over and whose gates hold
// advances (or, after the last stage, is done); one whose gate fails rolls back.
func (c *Controller) Tick() {
	set := c.set.Load()
	for _, name := range set.names {
		m := set.byName[name]
		m.mu.Lock()
		if m.state != StateDone {
			v := c.verdictLocked(m, true)
			var err error
			switch {
			case v.fail:
				err = c.transitionLocked(m, m.stage-1, StateRolledBack, KindRollback, v.why)
			case v.advance && m.state == StateRunning && m.stage+1 >= len(m.spec.Stages):
				err = c.transitionLocked(m, len(m.spec.Stages), StateDone, KindDone, v.why)
			case v.advance && m.state == StateRunning:
				err = c.transitionLocked(m, m.stage+1, StateRunning, KindAdvance, v.why)
			}
			if err != nil && c.cfg.Log != nil {
				fmt.Fprintf(c.cfg.Log, "migration %s: %v\n", name, err)
			}
		}
		m.mu.Unlock()
	}
}

// Run calls Tick every EvalEvery until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	t := time.NewTicker(c.cfg.EvalEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.Tick()
		}
	}
}

// Errors of the operator's actions.
var (
	ErrNoMigration = errors.New("no such migration")
	ErrState       = errors.New("not possible in the migration's state")
)

// Pause holds a running migration at its stage (a failing gate still rolls it back).
func (c *Controller) Pause(name, why string) error {
	return c.act(name, func(m *migration) error {
		if m.state != StateRunning {
			return fmt.Errorf("pause: the migration is %s: %w", m.state, ErrState)
		}
		return c.transitionLocked(m, m.stage, StatePaused, KindPause, "operator: "+why)
	})
}

// Resume sets a paused or rolled-back migration running again from its stage (a rolled-back one
// from before its first stage starts at the first).
func (c *Controller) Resume(name, why string) error {
	return c.act(name, func(m *migration) error {
		if m.state != StatePaused && m.state != StateRolledBack {
			return fmt.Errorf("resume: the migration is %s: %w", m.state, ErrState)
		}
		return c.transitionLocked(m, max(m.stage, 0), StateRunning, KindResume, "operator: "+why)
	})
}

// Advance moves a migration to its next stage now, whatever its gates say (or to done after the
// last); its state is kept (a paused one stays paused).
func (c *Controller) Advance(name, why string) error {
	return c.act(name, func(m *migration) error {
		if m.state == StateDone {
			return fmt.Errorf("advance: the migration is done: %w", ErrState)
		}
		next, state, kind := m.stage+1, m.state, KindAdvance
		if state == StateRolledBack {
			state = StatePaused
		}
		if next >= len(m.spec.Stages) {
			next, state, kind = len(m.spec.Stages), StateDone, KindDone
		}
		return c.transitionLocked(m, next, state, kind, "operator: "+why)
	})
}

// Rollback moves a migration back one stage (from done: to its last stage) and holds it there,
// rolled back, until it is resumed.
func (c *Controller) Rollback(name, why string) error {
	return c.act(name, func(m *migration) error {
		if m.stage < 0 {
			return fmt.Errorf("rollback: the migration is already before its first stage: %w", ErrState)
		}
		return c.transitionLocked(m, m.stage-1, StateRolledBack, KindRollback, "operator: "+why)
	})
}

func (c *Controller) act(name string, f func(*migration) error) error {
	m := c.set.Load().byName[name]
	if m == nil {
		return fmt.Errorf("%q: %w (migrations: %v)", name, ErrNoMigration, c.set.Load().names)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return f(m)
}
