// Command drift shows the sidecar seeing data drift in seconds, end to end, with real processes
// on loopback: the sidecar binary serving the example anomaly model with its training data's
// reference profile and short drift windows (sidecar.yaml.tmpl), a webhook receiver in this
// process, and generated DetectAnomaly traffic over gRPC whose VM metrics are drawn like the
// training data's.
//
// Once a whole window of that traffic has been scored, and half a window more, one feature's
// distribution shifts (cpu, by one reference standard deviation, by default) while the calls
// go on. The demo prints the drift table (sidecar drift merge, the real CLI, on the sidecar's
// sketch route) before and after the shift, and the drift gauges (GET /metrics) as they move.
// It exits 0 only if nothing drifted before the shift; after it, the shifted feature's gauge
// (model_data_drift_score, its method's) crossed its threshold within one window while every
// other feature's stayed below, and the webhook received a drift alert of the model naming that
// feature, and only it, as drifted. Otherwise it says what was wrong and exits 1.
//
//	make demo-drift
//	go run ./examples/drift -sidecar bin/sidecar -onnxruntime LIB [-quick] [-deadline 150s]
//
// Every process it starts is stopped when it ends, however it ends (and, on Linux, killed by the
// kernel if the demo itself is killed).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/novacron/sidecar/examples/internal/demoproc"
	"github.com/novacron/sidecar/features"
	"github.com/novacron/sidecar/features/drift"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are the demo's flags.
type options struct {
	sidecar, lib, spec, feature string
	deadline                    time.Duration
	quick                       bool
	shift                       float64
	rate, workers               int
	seed                        uint64
}

const (
	// pollEvery is how often the demo scrapes GET /metrics and looks at the webhook's alerts.
	pollEvery = 250 * time.Millisecond
	// alertEvery is how often the sidecar looks for alerts to send (internal/app's alertEvery):
	// the webhook hears of a drift at most this long after the gauges show it.
	alertEvery = 10 * time.Second
)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("drift", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.sidecar, "sidecar", filepath.Join("bin", "sidecar"), "the sidecar binary (go build -o bin/sidecar ./cmd/sidecar)")
	fs.StringVar(&o.lib, "onnxruntime", "", "path of libonnxruntime.so; empty: the sidecar's default ($ONNXRUNTIME_LIB, then the repository's .onnxruntime/ cache)")
	fs.StringVar(&o.spec, "spec", filepath.Join("examples", "specs", "anomaly.yaml"), "the anomaly model's feature spec (the one the sidecar embeds), to draw raw metrics")
	fs.StringVar(&o.feature, "feature", "cpu", "the feature whose distribution shifts")
	fs.Float64Var(&o.shift, "shift", 1, "the shift, in the reference's standard deviations of the feature")
	fs.DurationVar(&o.deadline, "deadline", 150*time.Second, "bound of the whole demo")
	fs.BoolVar(&o.quick, "quick", false, "windows of 10s instead of 20s, for tests")
	fs.IntVar(&o.rate, "rate", 200, "DetectAnomaly calls per second, in all")
	fs.IntVar(&o.workers, "workers", 4, "goroutines making the calls")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the metrics drawn")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || o.rate <= 0 || o.workers <= 0 || o.deadline <= 0 || o.shift == 0 {
		fmt.Fprintln(stderr, "drift: want no arguments, a positive -rate, -workers and -deadline, and a nonzero -shift")
		return 2
	}
	ctx, cancel := context.WithTimeoutCause(ctx, o.deadline, fmt.Errorf("the demo's -deadline (%v) passed", o.deadline))
	defer cancel()

	d := &demo{opts: o, out: stdout, start: time.Now(), params: sizes(o.quick)}
	defer d.close()
	err := d.run(ctx)
	problems := d.summary()
	if err != nil {
		problems = append([]string{err.Error()}, problems...)
	}
	if len(problems) == 0 {
		fmt.Fprintf(stdout, "\nPASS: no drift before the shift; after it, %s's %s crossed %g within one window (%.1fs after the shift) while the other features stayed below, and the webhook received the drift alert naming %s alone (%.1fs after the shift)\n",
			o.feature, d.method, d.threshold, d.crossedAt.Sub(d.shiftAt).Seconds(), o.feature, d.alertAt.Sub(d.shiftAt).Seconds())
		return 0
	}
	fmt.Fprintln(stdout, "\nFAIL:")
	for _, p := range problems {
		fmt.Fprintln(stdout, "  -", p)
	}
	if d.side != nil {
		fmt.Fprintf(stderr, "\n%s's log, last lines:\n%s", d.side.Label, d.side.Stderr.Tail(40))
	}
	return 1
}

// demo is one run: its processes, its clients and what it saw. One goroutine uses it.
type demo struct {
	opts   options
	out    io.Writer
	start  time.Time
	params params

	dir     string // temp dir: the config
	hook    *receiver
	side    *demoproc.Proc
	conn    *grpc.ClientConn
	sc      *sidecarClient
	traffic *traffic

	// From the sidecar's first snapshot: the features' names, the shifted one's index, method
	// and threshold, the scoring settings, the windows' length.
	names     []string
	shift     int
	method    string
	threshold float64
	scoring   drift.Scoring
	window    time.Duration

	shiftAt   time.Time // when the rows began to shift
	crossedAt time.Time // the first scrape with the shifted feature, and it alone, drifted
	alertAt   time.Time // when the first drift alert after the shift came
	alert     *drift.Alert
	// before and after are what the scrapes saw on either side of the shift; final the
	// problems found in the last snapshot's windows.
	before, after watch
	final         []string
	// printedProgressAt is when the last line of gauges was printed.
	printedProgressAt time.Time
}

// watch is what the scrapes of one phase saw.
type watch struct {
	scrapes, verdicts int // scrapes, and those with a window with a verdict
	// top holds each feature's largest score of its method; drifted the largest
	// model_features_drifted.
	top     map[string]float64
	drifted float64
	// crossed lists the features other than the shifted one (before the shift: any) seen over
	// their threshold, with the first such score.
	crossed map[string]string
}

func newWatch() watch { return watch{top: map[string]float64{}, crossed: map[string]string{}} }

func (d *demo) run(ctx context.Context) error {
	o, p := d.opts, &d.params
	d.before, d.after = newWatch(), newWatch()
	d.say("the drift demo: %d DetectAnomaly calls/s from %d goroutines over %d VMs; drift windows of %v (keep %d), a verdict from %d rows; then %s shifts by %+g x its reference standard deviation",
		o.rate, o.workers, vms, p.Window, p.Keep, p.MinSamples, o.feature, o.shift)

	hook, err := listenWebhook()
	if err != nil {
		return err
	}
	d.hook = hook
	p.Webhook = hook.url
	d.say("the webhook receiver: %s", hook.url)

	if d.dir, err = os.MkdirTemp("", "sidecar-drift-demo"); err != nil {
		return err
	}
	cfg := filepath.Join(d.dir, "sidecar.yaml")
	if err := writeConfig(cfg, *p); err != nil {
		return err
	}
	side, grpcAddr, httpAddr, err := startSidecar(ctx, o.sidecar, cfg, o.lib)
	if err != nil {
		return err
	}
	d.side = side
	d.say("the sidecar: gRPC %s, HTTP %s, config %s", grpcAddr, httpAddr, cfg)
	if d.conn, err = grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		return err
	}
	d.sc = &sidecarClient{addr: httpAddr, sidecar: o.sidecar, http: &http.Client{Timeout: 5 * time.Second}}

	s, err := d.sc.snapshot(ctx)
	if err != nil {
		return err
	}
	smp, err := d.reference(s)
	if err != nil {
		return err
	}

	d.traffic = drive(ctx, aipb.NewAIServiceClient(d.conn), smp, d.shift, o.shift, o.rate, o.workers, o.seed)
	defer d.traffic.stop()
	d.say("traffic: each call's metrics drawn from the reference profile's quantiles, feature by feature, mapped back to the metrics' units")

	// The first window is the one the first rows fell in; the shift comes half a window after
	// the next one, the first whole window of unshifted rows, has closed.
	first, err := d.firstWindow(ctx)
	if err != nil {
		return err
	}
	shiftAt := first.End.Add(d.window + d.window/2)
	d.banner(fmt.Sprintf("before the shift: unshifted traffic until %s (a whole window, %s to %s, then half of the next)",
		clock(shiftAt), clock(first.End), clock(first.End.Add(d.window))))
	if err := d.watchUntil(ctx, shiftAt, &d.before, nil); err != nil {
		return err
	}
	if err := d.table(ctx, "the drift table before the shift"); err != nil {
		return err
	}

	d.traffic.startShift()
	d.shiftAt = d.traffic.shiftedAt
	f := smp.feats[d.shift]
	median := interp(f.levels, f.values, 0.5)
	d.banner(fmt.Sprintf("the shift: %s moves by %+g x its reference standard deviation (%+.3g canonical; %+.3g %s at the median, within the spec's clip bounds)",
		o.feature, o.shift, o.shift*f.std, raw(f.f, median+o.shift*f.std)-raw(f.f, median), f.f.Unit))
	// The gauge should cross within a window; the webhook hears of it at the sidecar's next
	// look for alerts; the first window wholly after the shift has a verdict min_samples rows
	// after it starts, half a window after the shift.
	bound := d.shiftAt.Add(d.window + alertEvery + 5*time.Second)
	next := first.End.Add(2 * d.window)
	d.say("watching, until %s at most: %s's gauge over %g, the others below; a drift alert at the webhook; a verdict on the first window wholly after the shift (from %s)",
		clock(bound), o.feature, d.threshold, clock(next))
	done := func() bool {
		if d.crossedAt.IsZero() || d.alert == nil || time.Now().Before(next) {
			return false
		}
		s, err := d.sc.snapshot(ctx)
		return err == nil && len(s.Windows) > 0 && !s.Windows[0].Start.Before(next) && windowRows(s.Windows[0]) >= p.MinSamples
	}
	werr := d.watchUntil(ctx, bound, &d.after, done)
	if ctx.Err() != nil {
		return werr
	}
	// What the windows show, whatever the watch saw.
	return errors.Join(werr, d.table(ctx, "the drift table after the shift"), d.checkWindows(ctx))
}

// reference reads the sidecar's first snapshot: its profile (the sampler's), its scoring and
// its window.
func (d *demo) reference(s *drift.Snapshot) (*sampler, error) {
	spec, err := features.LoadFile(d.opts.spec)
	if err != nil {
		return nil, fmt.Errorf("the spec: %w (run the demo from the repository's root, or pass -spec)", err)
	}
	smp, err := newSampler(spec, s.Profile)
	if err != nil {
		return nil, err
	}
	j, ok := smp.index(d.opts.feature)
	if !ok {
		return nil, fmt.Errorf("-feature %s: the model has no such feature", d.opts.feature)
	}
	d.shift, d.scoring = j, s.Scoring
	for _, r := range s.Profile.Features {
		d.names = append(d.names, r.Name)
	}
	d.method, d.threshold = d.featureMethod(d.opts.feature)
	d.say("the reference: profile of spec %s %.12s, %d training rows; scoring: %s", s.Spec, s.Fingerprint, s.Profile.Rows, s.Scoring)
	return smp, nil
}

// featureMethod is a feature's method and threshold, as the sidecar scores it.
func (d *demo) featureMethod(name string) (string, float64) {
	m := d.scoring.Methods[name]
	if m == "" {
		m = drift.MethodPSI
	}
	t, ok := d.scoring.Thresholds[m]
	if !ok {
		t = drift.DefaultThreshold(m)
	}
	return m, t
}

// firstWindow waits until the sidecar has a window (the first rows arrived) and returns it.
func (d *demo) firstWindow(ctx context.Context) (drift.WireWindow, error) {
	for {
		s, err := d.sc.snapshot(ctx)
		if err != nil {
			return drift.WireWindow{}, err
		}
		if len(s.Windows) > 0 {
			w := s.Windows[len(s.Windows)-1]
			d.window = w.End.Sub(w.Start)
			if d.window != d.params.Window {
				return w, fmt.Errorf("the sidecar's windows are %v long, the config's drift.window %v", d.window, d.params.Window)
			}
			return w, nil
		}
		if how := d.side.Exited(); how != "" {
			return drift.WireWindow{}, fmt.Errorf("the sidecar %s", how)
		}
		if c := d.traffic.failed[before].Load(); c > 0 && c == d.traffic.calls[before].Load() {
			return drift.WireWindow{}, fmt.Errorf("every call failed, e.g.: %s", strings.Join(d.traffic.errors(), "; "))
		}
		select {
		case <-ctx.Done():
			return drift.WireWindow{}, fmt.Errorf("no drift window after the first calls when %w", context.Cause(ctx))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// watchUntil scrapes the gauges every pollEvery into w, until the time until, or until done
// (when not nil) says so, printing a line of gauges every quarter window.
func (d *demo) watchUntil(ctx context.Context, until time.Time, w *watch, done func() bool) error {
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		g, err := d.sc.gauges(ctx)
		if err != nil {
			return err
		}
		d.observe(g, w)
		if time.Since(d.printedProgressAt) >= d.window/4 {
			d.progress(g)
		}
		if done != nil && done() {
			return nil
		}
		if !time.Now().Before(until) {
			if done != nil {
				return fmt.Errorf("not everything awaited was seen within %v of the shift", until.Sub(d.shiftAt).Round(time.Second))
			}
			return nil
		}
		if how := d.side.Exited(); how != "" {
			return fmt.Errorf("the sidecar %s", how)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("watching the gauges when %w", context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// observe records one scrape, and the alerts received so far.
func (d *demo) observe(g gauges, w *watch) {
	shifted := w == &d.after
	w.scrapes++
	if g.rows > 0 {
		w.verdicts++
		w.drifted = max(w.drifted, g.drifted)
		others := true
		for _, name := range d.names {
			m, t := d.featureMethod(name)
			v, ok := g.score(name, m)
			if !ok {
				continue
			}
			w.top[name] = max(w.top[name], v)
			if v > t && (!shifted || name != d.opts.feature) {
				others = false
				if _, seen := w.crossed[name]; !seen {
					w.crossed[name] = fmt.Sprintf("%.3f at %s", v, d.since(g.at))
					d.say("!! %s's %s is %.3f, over its threshold %g", name, m, v, t)
				}
			}
		}
		if v, ok := g.score(d.opts.feature, d.method); shifted && ok && v > d.threshold && others && d.crossedAt.IsZero() {
			d.crossedAt = g.at
			d.say("model_data_drift_score{model=%q,feature=%q,method=%q} = %.3f > %g, the others below: crossed %.1fs after the shift (the window is %v)",
				model, d.opts.feature, d.method, v, d.threshold, g.at.Sub(d.shiftAt).Seconds(), d.window)
			d.progress(g)
		}
	}
	alerts, _ := d.hook.alerts()
	for _, a := range alerts {
		if shifted && d.alert == nil && a.alert.Kind == drift.AlertDrift && a.alert.Model == model {
			al := a.alert
			d.alert, d.alertAt = &al, a.at
			d.say("webhook: %s (%.1fs after the shift)", describe(al), a.at.Sub(d.shiftAt).Seconds())
		}
	}
}

// progress prints the gauges of one scrape in a line.
func (d *demo) progress(g gauges) {
	d.printedProgressAt = time.Now()
	if g.rows == 0 {
		d.say("gauges: no window with %d rows yet", d.params.MinSamples)
		return
	}
	var b strings.Builder
	var methods []string
	for _, name := range d.names {
		m, _ := d.featureMethod(name)
		v, _ := g.score(name, m)
		fmt.Fprintf(&b, " %s %.3f", name, v)
		if !slices.Contains(methods, m) {
			methods = append(methods, m)
		}
	}
	d.say("gauges: %.0f rows in the window, %.0f drifted; %s:%s", g.rows, g.drifted, strings.Join(methods, "/"), b.String())
}

// table prints what sidecar drift merge prints of the sidecar's sketches.
func (d *demo) table(ctx context.Context, title string) error {
	cmdline, out, err := d.sc.table(ctx)
	d.banner(title + ": " + cmdline)
	fmt.Fprint(d.out, out)
	return err
}

// windowRows is the rows of a window: its features' most (each feature counts every row, finite
// or not).
func windowRows(w drift.WireWindow) int64 {
	var most int64
	for _, f := range w.Features {
		n := f.Missing
		for _, c := range f.Counts {
			n += c
		}
		most = max(most, n)
	}
	return most
}

// checkWindows scores the sidecar's last snapshot, every kept window: those wholly before the
// shift must not drift, those wholly after must show the shifted feature, and it alone, drifted.
func (d *demo) checkWindows(ctx context.Context) error {
	s, err := d.sc.snapshot(ctx)
	if err != nil {
		return err
	}
	reps, err := drift.ScoreSnapshot(s, drift.Config{})
	if err != nil {
		return err
	}
	for _, r := range reps {
		if !r.Verdict {
			continue
		}
		var drifted []string
		for _, f := range r.Features {
			if f.Drifted {
				drifted = append(drifted, f.Name)
			}
		}
		span := fmt.Sprintf("window %s..%s", clock(r.Start), clock(r.End))
		switch {
		case !r.End.After(d.shiftAt) && len(drifted) > 0:
			d.final = append(d.final, fmt.Sprintf("%s, before the shift, has %v drifted", span, drifted))
		case !r.Start.Before(d.shiftAt) && !slices.Equal(drifted, []string{d.opts.feature}):
			d.final = append(d.final, fmt.Sprintf("%s, after the shift, has %v drifted, want [%s]", span, drifted, d.opts.feature))
		}
	}
	return nil
}

// summary prints what the demo saw and returns what was wrong.
func (d *demo) summary() []string {
	if d.traffic == nil {
		return nil
	}
	d.banner(fmt.Sprintf("summary (%.1fs in all)", time.Since(d.start).Seconds()))
	t := d.traffic
	var problems []string
	for ph, name := range []string{"before the shift", "after the shift"} {
		calls, failed, flagged := t.calls[ph].Load(), t.failed[ph].Load(), t.flagged[ph].Load()
		fmt.Fprintf(d.out, "%-16s  %6d calls, %d failed, %.1f%% flagged anomalous by the model\n", name, calls, failed, 100*float64(flagged)/float64(max(calls-failed, 1)))
		if failed > 0 {
			problems = append(problems, fmt.Sprintf("%d calls %s failed, e.g.: %s", failed, name, strings.Join(t.errors(), "; ")))
		}
	}
	top := func(w watch) string {
		var b strings.Builder
		for _, name := range d.names {
			fmt.Fprintf(&b, " %s %.3f", name, w.top[name])
		}
		return b.String()
	}
	fmt.Fprintf(d.out, "largest gauges before the shift (%d scrapes, %d with a verdict):%s\n", d.before.scrapes, d.before.verdicts, top(d.before))
	fmt.Fprintf(d.out, "largest gauges after the shift  (%d scrapes, %d with a verdict):%s\n", d.after.scrapes, d.after.verdicts, top(d.after))
	alerts, bad := d.hook.alerts()
	fmt.Fprintf(d.out, "webhook: %d alerts received\n", len(alerts))
	for _, a := range alerts {
		fmt.Fprintf(d.out, "  %s  %s\n", d.since(a.at), describe(a.alert))
	}

	// Before: a verdict, and nothing drifted, nothing alerted.
	if d.before.verdicts == 0 {
		problems = append(problems, fmt.Sprintf("no window had %d rows before the shift: no verdict to compare with", d.params.MinSamples))
	}
	for _, name := range d.names {
		if s, ok := d.before.crossed[name]; ok {
			problems = append(problems, fmt.Sprintf("before the shift, %s drifted (%s): the unshifted traffic should not", name, s))
		}
	}
	if d.before.drifted > 0 {
		problems = append(problems, fmt.Sprintf("before the shift, model_features_drifted reached %g", d.before.drifted))
	}
	for _, a := range alerts {
		if !d.shiftAt.IsZero() && a.at.Before(d.shiftAt) {
			problems = append(problems, "an alert came before the shift: "+describe(a.alert))
		}
	}
	if len(bad) > 0 {
		problems = append(problems, fmt.Sprintf("the webhook received %d requests that were not alerts: %s", len(bad), bad[0]))
	}
	if d.shiftAt.IsZero() {
		return append(problems, "the shift never came")
	}

	// After: the shifted feature crossed within a window, the others stayed below.
	switch {
	case d.crossedAt.IsZero():
		problems = append(problems, fmt.Sprintf("%s's %s never crossed %g alone after the shift (largest %.3f)", d.opts.feature, d.method, d.threshold, d.after.top[d.opts.feature]))
	case d.crossedAt.Sub(d.shiftAt) > d.window:
		problems = append(problems, fmt.Sprintf("%s's %s crossed %g %.1fs after the shift: later than one window (%v)", d.opts.feature, d.method, d.threshold, d.crossedAt.Sub(d.shiftAt).Seconds(), d.window))
	}
	for _, name := range d.names {
		if s, ok := d.after.crossed[name]; ok {
			problems = append(problems, fmt.Sprintf("after the shift, %s drifted too (%s): only %s was shifted", name, s, d.opts.feature))
		}
	}
	// The webhook's report names the shifted feature, and it alone.
	if d.alert == nil {
		problems = append(problems, fmt.Sprintf("the webhook received no drift alert of model %s after the shift", model))
	} else {
		var drifted []string
		for _, f := range d.alert.Window.Features {
			if f.Drifted {
				drifted = append(drifted, f.Name)
			}
		}
		if !d.alert.Window.ModelDrifted || !slices.Equal(drifted, []string{d.opts.feature}) {
			problems = append(problems, fmt.Sprintf("the drift alert has model_drifted %v and features %v drifted, want true and [%s]", d.alert.Window.ModelDrifted, drifted, d.opts.feature))
		}
	}
	return append(problems, d.final...)
}

// since is a time as seconds since the demo's start.
func (d *demo) since(t time.Time) string { return fmt.Sprintf("%6.1fs", t.Sub(d.start).Seconds()) }

// clock is a time of day, UTC, as the drift table prints windows.
func clock(t time.Time) string { return t.UTC().Format("15:04:05") }

// say prints a line stamped with the time since the start.
func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "%6.1fs  %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

// banner prints a header line.
func (d *demo) banner(s string) {
	fmt.Fprintf(d.out, "\n=== %6.1fs  %s\n", time.Since(d.start).Seconds(), s)
}

// close stops what run started, whatever happened.
func (d *demo) close() {
	if d.traffic != nil {
		d.traffic.stop()
	}
	if d.conn != nil {
		d.conn.Close()
	}
	if d.side != nil {
		d.side.Stop()
	}
	if d.hook != nil {
		d.hook.close()
	}
	if d.dir != "" {
		os.RemoveAll(d.dir)
	}
}
