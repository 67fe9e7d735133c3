// Command migration is the seed's HTTP-versus-gRPC A/B, end to end, with real processes on
// loopback: the seed's Python service (examples/legacy/seed_server.py) over both of its protocols,
// and the sidecar binary in front of it, driven by the config in sidecar.yaml.tmpl.
//
// Phase 1 migrates the bandwidth route from the service's HTTP/JSON arm to its gRPC arm, stage by
// stage (shadow 10%, shadow 100%, split 10%, 50%, 100%) while calls flow; the arms answer alike,
// so every gate holds and the migration ends done. Phase 2 rewrites the config (the route now
// targets the gRPC arm) and reloads it with SIGHUP, with a migration to the sidecar's own ONNX
// model, which answers differently: its disagreement gate rolls it back. At each stage the demo
// prints what `sidecar migration status` shows; at the end, a summary. It exits 0 only if the
// first migration went through every stage to done with every compared answer agreeing, the
// second was rolled back by its disagreement gate, and no data-plane call failed.
//
//	make demo-migration
//	go run ./examples/migration -sidecar bin/sidecar -onnxruntime LIB [-quick] [-deadline 150s]
//
// Every process it starts is stopped when it ends, however it ends (and, on Linux, killed by the
// kernel if the demo itself is killed).
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/novacron/sidecar/examples/internal/demoproc"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
	"github.com/novacron/sidecar/proxy/migrate"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are the demo's flags.
type options struct {
	sidecar, lib, python, seed string
	deadline                   time.Duration
	quick                      bool
	rate, workers              int
}

// pollEvery is how often the demo reads GET /admin/migrations.
const pollEvery = 250 * time.Millisecond

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("migration", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.sidecar, "sidecar", filepath.Join("bin", "sidecar"), "the sidecar binary (go build -o bin/sidecar ./cmd/sidecar)")
	fs.StringVar(&o.lib, "onnxruntime", "", "path of libonnxruntime.so; empty: the sidecar's default ($ONNXRUNTIME_LIB, then the repository's .onnxruntime/ cache)")
	fs.StringVar(&o.python, "python", "/usr/bin/python3", "a Python with grpcio and protobuf (Debian's: scripts/ensure-python-grpc.sh)")
	fs.StringVar(&o.seed, "seed", filepath.Join("examples", "legacy", "seed_server.py"), "the seed's Python service")
	fs.DurationVar(&o.deadline, "deadline", 150*time.Second, "bound of the whole demo")
	fs.BoolVar(&o.quick, "quick", false, "smaller stages (80 compared calls and 1s each; gates 5%), for tests")
	fs.IntVar(&o.rate, "rate", 300, "data-plane calls per second, in all")
	fs.IntVar(&o.workers, "workers", 4, "goroutines making the calls")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || o.rate <= 0 || o.workers <= 0 || o.deadline <= 0 {
		fmt.Fprintln(stderr, "migration: want no arguments, and a positive -rate, -workers and -deadline")
		return 2
	}
	ctx, cancel := context.WithTimeoutCause(ctx, o.deadline, fmt.Errorf("the demo's -deadline (%v) passed", o.deadline))
	defer cancel()

	d := &demo{opts: o, out: stdout, start: time.Now()}
	defer d.close()
	err := d.run(ctx)
	problems := d.summary()
	if err != nil {
		problems = append([]string{err.Error()}, problems...)
	}
	if len(problems) == 0 {
		fmt.Fprintf(stdout, "\nPASS: %s went through its stages to done with every compared answer agreeing; %s was rolled back by its disagreement gate; no call failed\n",
			phaseHTTPToGRPC, phaseGRPCToONNX)
		return 0
	}
	fmt.Fprintln(stdout, "\nFAIL:")
	for _, p := range problems {
		fmt.Fprintln(stdout, "  -", p)
	}
	for _, p := range []*demoproc.Proc{d.side, d.seed} {
		if p != nil {
			fmt.Fprintf(stderr, "\n%s's log, last lines:\n%s", p.Label, p.Stderr.Tail(40))
		}
	}
	return 1
}

// demo is one run: its processes, its clients and what each phase saw. One goroutine uses it.
type demo struct {
	opts  options
	out   io.Writer
	start time.Time

	dir        string // temp dir: token, config, state file
	cfg        string // the config's path
	params     params
	seed, side *demoproc.Proc
	conn       *grpc.ClientConn
	admin      *adminClient
	phases     []*phaseReport
}

// phaseReport is what one phase (one migration) saw.
type phaseReport struct {
	name    string
	traffic *traffic
	// first and final are the migration's first and last polled status; ran says how long
	// the phase drove calls.
	first, final migrate.Status
	ran          time.Duration
}

func (d *demo) run(ctx context.Context) error {
	o := d.opts
	dir, err := os.MkdirTemp("", "sidecar-migration-demo")
	if err != nil {
		return err
	}
	d.dir = dir
	minDur, minCalls, maxDis := sizes(o.quick)
	d.say("the migration demo: %d calls/s from %d goroutines over %d VMs; stages of at least %v and %d compared calls; disagreement gate %g%%",
		o.rate, o.workers, vms, minDur, minCalls, 100*maxDis)

	seed, grpcAddr, httpAddr, err := startSeed(ctx, o.python, o.seed)
	if err != nil {
		return err
	}
	d.seed = seed
	d.say("the seed's Python service: gRPC %s, HTTP/JSON %s (one heuristic behind both)", grpcAddr, httpAddr)

	adminListen, err := freePort()
	if err != nil {
		return err
	}
	tok := make([]byte, 32)
	rand.Read(tok)
	d.params = params{Phase: phaseHTTPToGRPC, SeedHTTP: "http://" + httpAddr, SeedGRPC: grpcAddr, AdminListen: adminListen,
		TokenFile: filepath.Join(dir, "admin.token"), StateFile: filepath.Join(dir, "state.json"),
		MinDuration: minDur, MinCalls: minCalls, MaxDisagreement: maxDis}
	if err := os.WriteFile(d.params.TokenFile, []byte(hex.EncodeToString(tok)+"\n"), 0o600); err != nil {
		return err
	}
	d.cfg = filepath.Join(dir, "sidecar.yaml")
	if err := writeConfig(d.cfg, d.params); err != nil {
		return err
	}
	side, sideGRPC, adminAddr, err := startSidecar(ctx, o.sidecar, d.cfg, o.lib)
	if err != nil {
		return err
	}
	d.side = side
	d.say("the sidecar: gRPC %s, admin API %s, config %s", sideGRPC, adminAddr, d.cfg)
	if d.conn, err = grpc.NewClient(sideGRPC, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		return err
	}
	client := aipb.NewAIServiceClient(d.conn)
	d.admin = &adminClient{addr: adminAddr, token: hex.EncodeToString(tok), tokenFile: d.params.TokenFile, sidecar: o.sidecar,
		http: &http.Client{Timeout: 5 * time.Second}}

	if err := d.phase(ctx, client, phaseHTTPToGRPC); err != nil {
		return err
	}
	if st := d.phases[0].final; st.State != migrate.StateDone {
		return fmt.Errorf("%s ended %s, not done: phase 2 not run", st.Name, st.State)
	}

	d.banner("SIGHUP: routes.predict_bandwidth is now bandwidth-grpc, and migration grpc-to-onnx moves it to bandwidth (the sidecar's ONNX model)")
	d.params.Phase = phaseGRPCToONNX
	if err := writeConfig(d.cfg, d.params); err != nil {
		return err
	}
	if err := d.reload(ctx, phaseGRPCToONNX); err != nil {
		return err
	}
	if err := d.phase(ctx, client, phaseGRPCToONNX); err != nil {
		return err
	}
	d.banner("migration status " + phaseGRPCToONNX + ": the report and the kept disagreements")
	out, err := d.admin.status(ctx, phaseGRPCToONNX)
	fmt.Fprint(d.out, out)
	return err
}

// phase drives calls while polling migration name, printing the report at each change of stage
// or state, until the migration is done or rolled back.
func (d *demo) phase(ctx context.Context, client aipb.AIServiceClient, name string) error {
	rep := &phaseReport{name: name}
	d.phases = append(d.phases, rep)
	began := time.Now()
	rep.traffic = drive(ctx, client, d.opts.rate, d.opts.workers)
	defer func() {
		rep.traffic.stop()
		rep.ran = time.Since(began)
	}()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	last := ""
	for {
		st, ok, err := d.admin.migration(ctx, name)
		switch {
		case err != nil:
			return err
		case !ok:
			return fmt.Errorf("the sidecar has no migration %s", name)
		}
		if rep.first.Name == "" {
			rep.first = st
		}
		rep.final = st
		if key := fmt.Sprint(st.Stage, st.State); key != last {
			last = key
			d.banner(fmt.Sprintf("%s: %s (%s)", name, st.StageName, st.State))
			out, err := d.admin.status(ctx)
			fmt.Fprint(d.out, out)
			if err != nil {
				return err
			}
		}
		if st.State == migrate.StateDone || st.State == migrate.StateRolledBack {
			return nil
		}
		if how := d.side.Exited(); how != "" {
			return fmt.Errorf("the sidecar %s during %s", how, name)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s still %s at %s when %w", name, st.State, st.StageName, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// reload sends SIGHUP and waits until the sidecar lists migration name, or reports the reload's
// failure.
func (d *demo) reload(ctx context.Context, name string) error {
	logged := len(d.side.Stderr.Snapshot())
	if err := d.side.Signal(syscall.SIGHUP); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if _, ok, err := d.admin.migration(ctx, name); err == nil && ok {
			return nil
		}
		for _, ln := range d.side.Stderr.Snapshot()[logged:] {
			if strings.HasPrefix(ln.Text, "sidecar: reload:") {
				return fmt.Errorf("the reload failed: %s", ln.Text)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the sidecar did not list migration %s after SIGHUP: %w", name, context.Cause(ctx))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// transitionRE is the sidecar's log line of a migration's transition (migrate.Controller).
var transitionRE = regexp.MustCompile(`^migration (\S+): (\w+) to (.+) \((running|paused|rolled_back|done)\): (.*)$`)

// comparedRE finds the counts in a gate's reason ("... 0 of 200 compared calls disagree ...").
var comparedRE = regexp.MustCompile(`(\d+) of (\d+) compared calls disagree`)

// stageRecord is one stage as the sidecar's log closed it.
type stageRecord struct {
	name                string // the stage left
	took                time.Duration
	kind                string // of the transition that ended it: advance, done, rollback
	compared, disagreed int64
	ok                  bool // the counts were found in the reason
	reason              string
}

// stages returns the stages migration rep.name went through, from the sidecar's log.
func (d *demo) stages(rep *phaseReport) []stageRecord {
	var out []stageRecord
	from, since := rep.first.StageName, rep.first.Since
	for _, ln := range d.side.Stderr.Snapshot() {
		m := transitionRE.FindStringSubmatch(ln.Text)
		if m == nil || m[1] != rep.name {
			continue
		}
		r := stageRecord{name: from, took: ln.At.Sub(since), kind: m[2], reason: m[5]}
		if c := comparedRE.FindStringSubmatch(r.reason); c != nil {
			r.disagreed, _ = strconv.ParseInt(c[1], 10, 64)
			r.compared, _ = strconv.ParseInt(c[2], 10, 64)
			r.ok = true
		}
		out = append(out, r)
		from, since = m[3], ln.At
	}
	return out
}

// summary prints what each phase did and returns what was wrong.
func (d *demo) summary() []string {
	if d.side == nil {
		return nil
	}
	d.banner(fmt.Sprintf("summary (%.1fs in all)", time.Since(d.start).Seconds()))
	var problems []string
	for i, rep := range d.phases {
		t, st := rep.traffic, rep.final
		fmt.Fprintf(d.out, "%s (%s -> %s): %s after %.1fs; %d calls, %d failed; answered by %s\n",
			rep.name, st.From, st.To, st.State, rep.ran.Seconds(), t.calls.Load(), t.failed.Load(), t.answeredBy())
		records := d.stages(rep)
		var compared, disagreed int64
		for _, r := range records {
			counts := "compared ?"
			if r.ok {
				counts = fmt.Sprintf("compared %4d, disagreed %3d", r.compared, r.disagreed)
			}
			fmt.Fprintf(d.out, "  %-36s %6.1fs  %s  -> %s\n", r.name, r.took.Seconds(), counts, r.kind)
			compared, disagreed = compared+r.compared, disagreed+r.disagreed
		}
		if f := t.failed.Load(); f > 0 {
			problems = append(problems, fmt.Sprintf("%s: %d of %d calls failed, e.g.: %s", rep.name, f, t.calls.Load(), strings.Join(t.errs, "; ")))
		}
		switch i {
		case 0:
			fmt.Fprintf(d.out, "  %d compared calls over %d stages, %d disagreed\n", compared, len(records), disagreed)
			problems = append(problems, checkDone(st, records, disagreed)...)
		case 1:
			problems = append(problems, checkRolledBack(st)...)
		}
	}
	if len(d.phases) < 2 {
		problems = append(problems, phaseGRPCToONNX+": not run")
	}
	return problems
}

// checkDone: the first migration went through every stage, in order, to done, and no compared
// answer disagreed.
func checkDone(st migrate.Status, records []stageRecord, disagreed int64) []string {
	var problems []string
	if st.State != migrate.StateDone {
		problems = append(problems, fmt.Sprintf("%s ended %s at %s, not done: %s", st.Name, st.State, st.StageName, st.Verdict))
	}
	if len(records) != st.Stages || len(records) == 0 || records[len(records)-1].kind != migrate.KindDone {
		problems = append(problems, fmt.Sprintf("%s: %d transitions logged, want %d advances ending in done", st.Name, len(records), st.Stages))
	}
	for _, r := range records[:max(len(records)-1, 0)] {
		if r.kind != migrate.KindAdvance {
			problems = append(problems, fmt.Sprintf("%s: %s ended by %s: %s", st.Name, r.name, r.kind, r.reason))
		}
	}
	if disagreed > 0 {
		problems = append(problems, fmt.Sprintf("%s: %d compared calls disagreed; the two arms of one service should agree on every one", st.Name, disagreed))
	}
	return problems
}

// checkRolledBack: the second migration was rolled back, by its disagreement gate.
func checkRolledBack(st migrate.Status) []string {
	if st.State != migrate.StateRolledBack || st.Last.Kind != migrate.KindRollback {
		return []string{fmt.Sprintf("%s ended %s at %s, not rolled back: %s", st.Name, st.State, st.StageName, st.Verdict)}
	}
	if !strings.HasPrefix(st.Last.Reason, "disagreement:") {
		return []string{fmt.Sprintf("%s was rolled back, but not by its disagreement gate: %s", st.Name, st.Last.Reason)}
	}
	return nil
}

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
	if d.conn != nil {
		d.conn.Close()
	}
	for _, p := range []*demoproc.Proc{d.side, d.seed} {
		if p != nil {
			p.Stop()
		}
	}
	if d.dir != "" {
		os.RemoveAll(d.dir)
	}
}
