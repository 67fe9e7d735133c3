package migrate

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Status is one migration's report: the admin API's JSON (GET /admin/migrations) and what
// `sidecar migration status` prints.
type Status struct {
	Name  string `json:"name"`
	Route string `json:"route"`
	From  string `json:"from"`
	To    string `json:"to"`
	State string `json:"state"`
	// Stage is the current stage's index (-1: before the first; Stages: done); StageName says
	// what it does.
	Stage     int    `json:"stage"`
	Stages    int    `json:"stages"`
	StageName string `json:"stage_name"`
	// Since is when the stage began; InStage how long ago, in seconds.
	Since   time.Time `json:"since"`
	InStage float64   `json:"in_stage_seconds"`
	// Calls and Errors count the calls each arm served in the stage, by target.
	Calls  map[string]int64 `json:"calls"`
	Errors map[string]int64 `json:"errors"`
	// Compared calls (both answers in hand) and how many disagreed; Agreement is the share that
	// agreed, with its interval (Bounds) at the gates' confidence (AgreementLow..AgreementHigh).
	Compared      int64   `json:"compared"`
	Disagreed     int64   `json:"disagreed"`
	Agreement     float64 `json:"agreement"`
	AgreementLow  float64 `json:"agreement_low"`
	AgreementHigh float64 `json:"agreement_high"`
	// Fields lists the disagreeing fields, most first, each with an example.
	Fields []FieldCount `json:"fields"`
	// Shadow counts the stage's shadowed calls: run, failed by timeout, dropped by the queue.
	Shadowed int64 `json:"shadowed"`
	Timeouts int64 `json:"shadow_timeouts"`
	Dropped  int64 `json:"shadow_dropped"`
	// DeltaP50 and DeltaP99 are quantiles of the candidate's latency minus the baseline's on the
	// compared calls, in milliseconds (NaN-free: 0 when none).
	DeltaP50 float64 `json:"latency_delta_p50_ms"`
	DeltaP99 float64 `json:"latency_delta_p99_ms"`
	// Verdict says what the gates say now (advancing, holding and on what, or why it failed);
	// Last is the last transition.
	Verdict string     `json:"verdict"`
	Last    Transition `json:"last_transition"`
}

// FieldCount is one disagreeing field.
type FieldCount struct {
	Field   string `json:"field"`
	Count   int64  `json:"count"`
	Example string `json:"example"`
}

// Transition is a migration's move from one stage or state to another.
type Transition struct {
	Kind   string    `json:"kind"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// Status reports every migration, by name.
func (c *Controller) Status() []Status {
	set := c.set.Load()
	out := make([]Status, 0, len(set.names))
	for _, name := range set.names {
		out = append(out, c.status(set.byName[name]))
	}
	return out
}

// StatusOf reports one migration.
func (c *Controller) StatusOf(name string) (Status, error) {
	m := c.set.Load().byName[name]
	if m == nil {
		return Status{}, fmt.Errorf("%q: %w (migrations: %v)", name, ErrNoMigration, c.set.Load().names)
	}
	return c.status(m), nil
}

func (c *Controller) status(m *migration) Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	sp, s := m.spec, &m.st
	st := Status{Name: sp.Name, Route: sp.Route, From: sp.From, To: sp.To, State: m.state, Stage: m.stage, Stages: len(sp.Stages),
		StageName: sp.stageName(m.stage), Since: m.since, InStage: c.cfg.Now().Sub(m.since).Seconds(),
		Calls:    map[string]int64{sp.From: m.calls[0].Load(), sp.To: m.calls[1].Load()},
		Errors:   map[string]int64{sp.From: m.errs[0].Load(), sp.To: m.errs[1].Load()},
		Compared: s.compared, Disagreed: s.disagreed, Shadowed: s.shadowed, Timeouts: s.timeouts, Dropped: m.dropped.Load(),
		Last: Transition{Kind: m.kind, Reason: m.reason, At: m.at}}
	z := Z(sp.Gates.Confidence)
	lo, hi := Bounds(s.compared-s.disagreed, s.compared, z)
	st.AgreementLow, st.AgreementHigh = lo, hi
	if s.compared > 0 {
		st.Agreement = float64(s.compared-s.disagreed) / float64(s.compared)
	}
	for f, n := range s.fields {
		st.Fields = append(st.Fields, FieldCount{Field: f, Count: n, Example: s.examples[f]})
	}
	slices.SortFunc(st.Fields, func(a, b FieldCount) int {
		if a.Count != b.Count {
			return int(b.Count - a.Count)
		}
		return strings.Compare(a.Field, b.Field)
	})
	if vals := s.deltas.Values(nil); len(vals) > 0 {
		st.DeltaP50 = 1000 * Quantile(vals, 0.5)
		st.DeltaP99 = 1000 * Quantile(vals, 0.99)
	}
	switch m.state {
	case StateDone:
		st.Verdict = "done: " + sp.To + " serves the route alone"
	case StateRolledBack:
		st.Verdict = "rolled back: " + m.reason + " (resume to run again)"
	default:
		v := c.verdictLocked(m, true)
		switch {
		case v.fail:
			st.Verdict = "failing: " + v.why
		case v.advance && m.state == StatePaused:
			st.Verdict = "paused; gates hold: " + v.why
		case v.advance:
			st.Verdict = "advancing: " + v.why
		case m.state == StatePaused:
			st.Verdict = "paused; " + v.why
		default:
			st.Verdict = v.why
		}
	}
	return st
}

// WriteTable prints statuses as a table a person reads in one screen, then each migration's
// verdict and top disagreeing fields.
func WriteTable(w io.Writer, statuses []Status) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MIGRATION\tROUTE\tSTATE\tSTAGE\tIN STAGE\tCALLS (from/to)\tERRORS (from/to)\tCOMPARED\tAGREE (CI)\tΔp50/Δp99 ms\tSHADOW t/o/drop")
	for _, s := range statuses {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%d\t%d/%d\t%d\t%s\t%s\t%d/%d\n",
			s.Name, s.Route, s.State, stageCell(s), (time.Duration(s.InStage) * time.Second).Round(time.Second),
			s.Calls[s.From], s.Calls[s.To], s.Errors[s.From], s.Errors[s.To], s.Compared, agreeCell(s),
			fmt.Sprintf("%+.2f/%+.2f", s.DeltaP50, s.DeltaP99), s.Timeouts, s.Dropped)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range statuses {
		fmt.Fprintf(w, "\n%s (%s -> %s): %s\n", s.Name, s.From, s.To, s.Verdict)
		for i, f := range s.Fields {
			if i == 3 {
				fmt.Fprintf(w, "  ... %d more fields\n", len(s.Fields)-3)
				break
			}
			fmt.Fprintf(w, "  %s: %d, e.g. %s\n", f.Field, f.Count, f.Example)
		}
		if s.Last.Kind != "" {
			fmt.Fprintf(w, "  last: %s at %s: %s\n", s.Last.Kind, s.Last.At.Format(time.RFC3339), s.Last.Reason)
		}
	}
	return nil
}

func stageCell(s Status) string {
	switch {
	case s.Stage < 0:
		return "baseline"
	case s.Stage >= s.Stages:
		return "done"
	}
	name := s.StageName
	if _, rest, ok := strings.Cut(name, ": "); ok {
		name = rest
	}
	return fmt.Sprintf("%d/%d %s", s.Stage+1, s.Stages, name)
}

func agreeCell(s Status) string {
	if s.Compared == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f%% (%.2f-%.2f)", 100*s.Agreement, 100*s.AgreementLow, 100*math.Min(1, s.AgreementHigh))
}
