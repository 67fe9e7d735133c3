package failover

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/backends/legacy"
	"github.com/novacron/sidecar/config"
	"github.com/novacron/sidecar/internal/app"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// callDeadline is every load call's deadline; a call that takes longer than it (plus scheduling
// slack) has hung.
const callDeadline = 2 * time.Second

// window is a distinct, realistic 10-minute window of the six VM metrics for input i.
func window(i int) []float64 {
	var w []float64
	for step := 0; step < 10; step++ {
		x := float64(step+i)/7 + float64(i%5)
		w = append(w, 40+20*math.Sin(x), 55+5*math.Cos(x), 30+10*math.Sin(2*x),
			100+float64(i*9%400)+60*math.Sin(x+.5), 8+3*math.Sin(x), 0.002)
	}
	return w
}

func bandwidthReq(i int) *aipb.BandwidthRequest {
	return &aipb.BandwidthRequest{VmId: fmt.Sprintf("vm-%d", i), HistoricalMetrics: window(i), HorizonMinutes: 10}
}

// inputs is how many distinct inputs the load cycles through.
const inputs = 64

// expected asks a healthy upstream (directly) for the answer to every input, and checks that
// they differ, so a mixed-up row cannot pass for a correct one.
func expected(t *testing.T, c aipb.AIServiceClient) []*aipb.BandwidthResponse {
	t.Helper()
	out := make([]*aipb.BandwidthResponse, inputs)
	for i := range out {
		r, err := c.PredictBandwidth(context.Background(), bandwidthReq(i))
		if err != nil {
			t.Fatal(err)
		}
		out[i] = r
	}
	for i := 1; i < inputs; i++ {
		if same(out[i].Predictions, out[i-1].Predictions, 1e-3) {
			t.Fatalf("inputs %d and %d get the same forecast; the check could not see a mix-up", i-1, i)
		}
	}
	return out
}

// same: equal within a relative tolerance (a batch of another size may change the last bits).
func same(a, b []float64, tol float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Abs(a[i]-b[i]) > tol*math.Max(1, math.Abs(b[i])) {
			return false
		}
	}
	return true
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// stats are the outcomes of a load run.
type stats struct {
	mu       sync.Mutex
	calls    int
	correct  int
	wrong    int
	errors   map[codes.Code]int
	hung     int
	event    time.Time // the fault (zero: none)
	lastFail time.Time // end of the last failed call started after the fault
	during   []time.Duration
	all      []time.Duration
	firstErr string
}

func (s *stats) explicit() int {
	n := 0
	for _, v := range s.errors {
		n += v
	}
	return n
}

// failover is how long after the fault calls kept failing: 0 when none did.
func (s *stats) failover() time.Duration {
	if s.lastFail.IsZero() || s.event.IsZero() {
		return 0
	}
	return s.lastFail.Sub(s.event)
}

func p99(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	d = slices.Clone(d)
	slices.Sort(d)
	return d[(len(d)*99)/100]
}

// load runs workers closed loops of call for d, each call with callDeadline. fault, if set,
// runs once at d/3 (its time marks the event). call says whether an answer is correct (errWrong).
func load(t *testing.T, d time.Duration, workers int, call func(ctx context.Context, i int) error, fault func()) *stats {
	t.Helper()
	return loadUntil(t, d, nil, workers, call, fault)
}

// loadUntil is load that, when until is not nil, also goes on until until is closed.
func loadUntil(t *testing.T, d time.Duration, until <-chan struct{}, workers int, call func(ctx context.Context, i int) error, fault func()) *stats {
	t.Helper()
	s := &stats{errors: map[codes.Code]int{}}
	var next atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ended := make(chan struct{})
	defer func() { <-ended }()
	go func() { // the load's end: d, then until
		defer close(ended)
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-ctx.Done():
			return
		}
		if until != nil {
			select {
			case <-until:
			case <-ctx.Done():
				return
			}
		}
		cancel()
	}()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1))
				cctx, ccancel := context.WithTimeout(context.Background(), callDeadline)
				began := time.Now()
				err := call(cctx, i)
				took := time.Since(began)
				ccancel()
				s.mu.Lock()
				s.calls++
				s.all = append(s.all, took)
				ev := s.event
				if !ev.IsZero() && began.After(ev) && began.Before(ev.Add(time.Second)) {
					s.during = append(s.during, took)
				}
				switch {
				case err == nil:
					s.correct++
				case err == errWrong:
					s.wrong++
				default:
					s.errors[status.Code(err)]++
					if s.firstErr == "" {
						s.firstErr = err.Error()
					}
					if !ev.IsZero() && !began.Before(ev.Add(-callDeadline)) {
						s.lastFail = time.Now()
					}
				}
				if took > callDeadline+500*time.Millisecond {
					s.hung++
				}
				s.mu.Unlock()
			}
		})
	}
	if fault != nil {
		select {
		case <-time.After(d / 3):
			s.mu.Lock()
			s.event = time.Now()
			s.mu.Unlock()
			fault()
		case <-ctx.Done():
		}
	}
	wg.Wait()
	return s
}

// errWrong marks an answer that is not the right one for its input.
var errWrong = fmt.Errorf("wrong answer")

// hangGuard bounds, in make test, a wait for the pool to reach a state, so that a pool that never
// gets there fails the test instead of hanging it: a bound on a hang, far above what any machine
// needs, not a target.
const hangGuard = time.Minute

// within is how long a scenario waits for the pool to reach a state: under make chaos (timed),
// target, the recovery time the scenario asserts; in make test, hangGuard.
func within(target time.Duration) time.Duration {
	if timed {
		return target
	}
	return hangGuard
}

// eventually makes calls one at a time until ok holds, and fails t, with what state says, if it
// does not within bound (ok is checked before each call: a bound of 0 checks it once). A wrong
// answer fails t.
func eventually(t *testing.T, bound time.Duration, call func(ctx context.Context, i int) error, ok func() bool, state func() string) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for i := 0; !ok(); i++ {
		if !time.Now().Before(deadline) {
			t.Fatalf("not within %v: %s", bound, state())
		}
		ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
		err := call(ctx, i)
		cancel()
		if err == errWrong {
			t.Fatalf("call %d: a wrong answer", i)
		}
	}
}

// restored checks that full service came back after a fault, however long that took (make chaos
// asserts how long): calls are made until inputs of them in a row get their right answers.
func restored(t *testing.T, call func(ctx context.Context, i int) error) {
	t.Helper()
	streak, last := 0, "none"
	eventually(t, hangGuard, func(ctx context.Context, i int) error {
		err := call(ctx, i)
		switch {
		case err == nil:
			streak++
		case err != errWrong:
			streak, last = 0, err.Error()
		}
		return err
	}, func() bool { return streak >= inputs }, func() string {
		return fmt.Sprintf("service did not come back: no %d calls in a row answered; last error: %s", inputs, last)
	})
}

func bandwidthCall(client aipb.AIServiceClient, want []*aipb.BandwidthResponse) func(ctx context.Context, i int) error {
	return func(ctx context.Context, i int) error {
		k := i % inputs
		r, err := client.PredictBandwidth(ctx, bandwidthReq(k))
		if err != nil {
			return err
		}
		if r.GetVmId() != fmt.Sprintf("vm-%d", k) || !same(r.Predictions, want[k].Predictions, 1e-4) {
			return errWrong
		}
		return nil
	}
}

// summary collects one row per fault run for the table make chaos prints.
var summary struct {
	sync.Mutex
	rows []string
}

// started is when the test binary started, for the times of make chaos's progress lines.
var started = time.Now()

// chaos reports whether this is a make chaos run (CHAOS_DURATION set), which prints progress lines
// and the summary table.
func chaos() bool { return os.Getenv("CHAOS_DURATION") != "" }

// progress prints one line of make chaos's progress on stdout as it happens, after the time since
// the start ("chaos   1m5s  ..."); make chaos passes the lines that begin "chaos " through its
// filter. It prints nothing outside make chaos.
func progress(format string, args ...any) {
	if !chaos() {
		return
	}
	fmt.Printf("chaos %6s  %s\n", time.Since(started).Round(time.Second), fmt.Sprintf(format, args...))
}

// scenario is one fault run. begin prints a progress line as it starts, and another when its test
// ends (after its cleanups): PASS or FAIL, how long it took, and its row of the table if it
// reported one, else its name:
//
//	chaos     9s  start        kserve: SIGKILL of 1 of 2 upstream sidecars
//	chaos    12s  PASS   3.5s  | kserve: SIGKILL of 1 of 2 upstream sidecars | 4830 | 4830 | ...
type scenario struct {
	name string
	row  string // set by report; read by the cleanup, after the test function returned
}

func begin(t *testing.T, name string) *scenario {
	t.Helper()
	sc := &scenario{name: name}
	began := time.Now()
	progress("start        %s", name)
	t.Cleanup(func() { // registered first, so it runs last, after the processes are stopped
		verdict := "PASS"
		if t.Failed() {
			verdict = "FAIL"
		}
		what := sc.name
		if sc.row != "" {
			what = sc.row
		}
		progress("%-4s %6v  %s", verdict, time.Since(began).Round(100*time.Millisecond), what)
	})
	return sc
}

// report records the scenario's row of the summary table.
func (sc *scenario) report(t *testing.T, s *stats) {
	t.Helper()
	name := sc.name
	codes := []string{}
	for c, n := range s.errors {
		codes = append(codes, fmt.Sprintf("%s %d", c, n))
	}
	slices.Sort(codes)
	failover, during := "-", "-"
	if !s.event.IsZero() {
		failover, during = s.failover().Round(time.Millisecond).String(), p99(s.during).Round(time.Millisecond).String()
	}
	errs := fmt.Sprint(s.explicit())
	if len(codes) > 0 {
		errs += " (" + strings.Join(codes, ", ") + ")"
	}
	row := fmt.Sprintf("| %s | %d | %d | %s | %d | %d | %s | %s | %v |", name, s.calls, s.correct, errs,
		s.wrong, s.hung, failover, during, p99(s.all).Round(time.Millisecond))
	if !chaos() { // make chaos prints it in the scenario's end line
		t.Log(row)
	}
	if s.firstErr != "" {
		t.Logf("first error: %s", s.firstErr)
	}
	sc.row = row
	summary.Lock()
	summary.rows = append(summary.rows, row)
	summary.Unlock()
}

func printSummary() {
	summary.Lock()
	defer summary.Unlock()
	if len(summary.rows) == 0 || !chaos() {
		return
	}
	fmt.Println("\n| fault | calls | correct | explicit errors | wrong | hung | failover | p99, first second of the fault | p99, whole run |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	for _, r := range summary.rows {
		fmt.Println(r)
	}
}

// pool returns a model's endpoint states.
func states(t *testing.T, a *app.App, model string) []backends.MemberState {
	t.Helper()
	switch r := a.Service.Targets()[model].Runner().(type) {
	case *backends.Remote:
		return r.Pool().States()
	case *backends.Fallback:
		return r.Primary.(*backends.Remote).Pool().States()
	case *legacy.Pooled:
		return r.Pool().States()
	}
	t.Fatalf("model %s has no pool", model)
	return nil
}

func stateOf(ss []backends.MemberState, name string) backends.MemberState {
	for _, s := range ss {
		if s.Name == name {
			return s
		}
	}
	return backends.MemberState{}
}

// remoteModelYAML is a config whose bandwidth model runs on endpoints of the given kind.
func remoteModelYAML(kind string, endpoints []string, extra string) string {
	return fmt.Sprintf(`listen: {grpc: 127.0.0.1:0, http: "off"}
cache: {disabled: true}
models:
  - name: bandwidth
    task: forecast
    spec: embedded:specs/bandwidth.yaml
    batching: {max_batch_size: 64, max_inflight_batches: 4}
    backend:
      kind: %s
      endpoints: [%s]
      timeout: 1s
      health: {interval: 100ms, timeout: 200ms}
%s`, kind, strings.Join(endpoints, ", "), extra)
}

// TestUpstreamKilledMidLoad: two upstream sidecar processes; one is killed with SIGKILL while
// calls run. Every call must get the right answer or an explicit error, none may hang, the pool
// must mark the killed endpoint and come back to full service: under make chaos, within a second
// of the kill (with most calls answered); in make test, at all.
func TestUpstreamKilledMidLoad(t *testing.T) {
	for _, kind := range []string{"kserve", "legacy_http"} {
		t.Run(kind, func(t *testing.T) {
			sc := begin(t, kind+": SIGKILL of 1 of 2 upstream sidecars")
			g1, h1, p1 := upstreamSidecar(t)
			g2, h2, _ := upstreamSidecar(t)
			eps := []string{g1, g2}
			if kind == "legacy_http" {
				eps = []string{"http://" + h1, "http://" + h2}
			}
			want := expected(t, aipb.NewAIServiceClient(dial(t, g2)))
			// path: a local copy of the model describes it (its metadata_props); no fallback.
			a := downstream(t, remoteModelYAML(kind, eps, "    path: embedded:models/bandwidth.onnx\n"))
			client := aipb.NewAIServiceClient(dial(t, a.GRPCAddr))
			call := bandwidthCall(client, want)
			s := load(t, chaosDuration(t), 8, call, p1.kill)
			sc.report(t, s)
			if s.wrong != 0 || s.hung != 0 {
				t.Errorf("%d wrong answers, %d calls past their deadline", s.wrong, s.hung)
			}
			if timed {
				if f := s.failover(); f >= time.Second {
					t.Errorf("calls failed until %v after the kill; want full service within 1s", f)
				}
				if s.correct < s.calls/2 {
					t.Errorf("only %d of %d calls answered", s.correct, s.calls)
				}
			}
			// Under make chaos, right after the load.
			eventually(t, within(0), call, func() bool {
				st := stateOf(states(t, a, "bandwidth"), eps[0])
				return st.Health == backends.HealthDown || st.Breaker == backends.BreakerOpen
			}, func() string {
				return fmt.Sprintf("the killed endpoint is still healthy and closed: %+v", stateOf(states(t, a, "bandwidth"), eps[0]))
			})
			restored(t, call)
			for _, ep := range eps {
				if n := counterOf(t, a, "sidecar_backend_endpoint_requests_total", "endpoint", ep); n == 0 {
					t.Errorf("endpoint %s served no requests; the load did not spread", ep)
				}
			}
		})
	}
}

// TestFallbackWhenEveryEndpointIsDown: the only upstream is killed; the model's local fallback
// answers, and each fallback is counted.
func TestFallbackWhenEveryEndpointIsDown(t *testing.T) {
	sc := begin(t, "kserve: SIGKILL of the only upstream, local fallback")
	g1, _, p1 := upstreamSidecar(t)
	want := expected(t, aipb.NewAIServiceClient(dial(t, g1)))
	a := downstream(t, remoteModelYAML("kserve", []string{g1}, `    path: embedded:models/bandwidth.onnx
    fallback: local
`))
	client := aipb.NewAIServiceClient(dial(t, a.GRPCAddr))
	s := load(t, chaosDuration(t), 4, bandwidthCall(client, want), p1.kill)
	sc.report(t, s)
	if s.wrong != 0 || s.hung != 0 || s.explicit() != 0 {
		t.Errorf("%d wrong, %d hung, %d errors; the fallback should answer every call", s.wrong, s.hung, s.explicit())
	}
	if n := counter(t, a, "sidecar_model_fallbacks_total"); n == 0 {
		t.Error("no fallback counted")
	}
}

func counter(t *testing.T, a *app.App, name string) float64 {
	t.Helper()
	return counterOf(t, a, name, "", "")
}

// counterOf sums a counter's series, only those with label=value when label is set.
func counterOf(t *testing.T, a *app.App, name, label, value string) float64 {
	t.Helper()
	mfs, err := a.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.Metric {
				ok := label == ""
				for _, lp := range m.GetLabel() {
					ok = ok || (lp.GetName() == label && lp.GetValue() == value)
				}
				if ok {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

// watch polls a model's pool while a test runs and records the worst breaker state and health
// each endpoint reached.
type watch struct {
	mu     sync.Mutex
	opened map[string]bool
	down   map[string]bool
	stop   chan struct{}
	done   chan struct{}
}

func watchPool(t *testing.T, a *app.App, model string) *watch {
	w := &watch{opened: map[string]bool{}, down: map[string]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, s := range states(t, a, model) {
				w.mu.Lock()
				w.opened[s.Name] = w.opened[s.Name] || s.Breaker == backends.BreakerOpen
				w.down[s.Name] = w.down[s.Name] || s.Health == backends.HealthDown
				w.mu.Unlock()
			}
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(w.close)
	return w
}

func (w *watch) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// legacyGRPCYAML is a config whose bandwidth model runs on seed services over gRPC.
func legacyGRPCYAML(endpoints []string, backend string) string {
	return fmt.Sprintf(`listen: {grpc: 127.0.0.1:0, http: "off"}
cache: {disabled: true}
models:
  - name: bandwidth
    task: forecast
    spec: embedded:specs/bandwidth.yaml
    batching: {disabled: true}
    backend:
      kind: legacy_grpc
      endpoints: [%s]
%s`, strings.Join(endpoints, ", "), backend)
}

// TestFlakyUpstreamOpensThenClosesItsBreaker: one of two seed services fails half of its calls.
// Its breaker opens and traffic moves to the other; the service is then restarted healthy on the
// same port, and its breaker half-opens and closes again.
func TestFlakyUpstreamOpensThenClosesItsBreaker(t *testing.T) {
	sc := begin(t, "legacy_grpc: 1 of 2 seed services failing half its calls, then restarted healthy")
	flaky, fp := seedServer(t, "0", "--error-rate", "0.5", "--seed", "7")
	good, _ := seedServer(t, "0")
	want := expected(t, aipb.NewAIServiceClient(dial(t, good)))
	a := downstream(t, legacyGRPCYAML([]string{flaky, good}, `      timeout: 1s
      health: {interval: 100ms, timeout: 200ms}
      breaker: {consecutive_failures: 3, open_timeout: 300ms}
`))
	w := watchPool(t, a, "bandwidth")
	client := aipb.NewAIServiceClient(dial(t, a.GRPCAddr))
	call := bandwidthCall(client, want)
	var restarted atomic.Bool
	s := load(t, chaosDuration(t), 4, call, func() {
		// The upstream recovers: the flaky process is replaced by a healthy one on its port.
		fp.kill()
		_, port, _ := strings.Cut(flaky, ":")
		seedServer(t, port)
		restarted.Store(true)
	})
	sc.report(t, s)
	if s.wrong != 0 || s.hung != 0 {
		t.Errorf("%d wrong, %d hung", s.wrong, s.hung)
	}
	w.mu.Lock()
	opened := w.opened[flaky]
	w.mu.Unlock()
	if !opened {
		t.Errorf("the flaky endpoint's breaker never opened")
	}
	// After the restart the breaker half-opens and closes on successful probes: keep calling
	// until it is closed (under make chaos, within 5s).
	before := counterOf(t, a, "sidecar_backend_endpoint_requests_total", "endpoint", flaky)
	served := func() float64 {
		return counterOf(t, a, "sidecar_backend_endpoint_requests_total", "endpoint", flaky) - before
	}
	eventually(t, within(5*time.Second), call, func() bool {
		st := stateOf(states(t, a, "bandwidth"), flaky)
		return st.Breaker == backends.BreakerClosed && st.Health == backends.HealthUp && served() > 0
	}, func() string {
		return fmt.Sprintf("after the restart: %+v, %v calls served by it", stateOf(states(t, a, "bandwidth"), flaky), served())
	})
}

// TestSlowUpstream: one of two seed services answers after 1.5s, beyond the 300ms attempt
// timeout. Its attempts fail over to the other within the callers' deadlines, its breaker opens;
// with hedging after 50ms the other answers first without waiting for the timeout.
func TestSlowUpstream(t *testing.T) {
	for _, hedge := range []bool{false, true} {
		name := "timeout and failover"
		extra := ""
		if hedge {
			name, extra = "hedging after 50ms", "      hedge_delay: 50ms\n"
		}
		t.Run(name, func(t *testing.T) {
			sc := begin(t, "legacy_grpc: 1 of 2 seed services 1.5s slow, "+name)
			slow, _ := seedServer(t, "0", "--delay-ms", "1500")
			good, _ := seedServer(t, "0")
			want := expected(t, aipb.NewAIServiceClient(dial(t, good)))
			a := downstream(t, legacyGRPCYAML([]string{slow, good}, `      timeout: 300ms
      health: {interval: -1s}
      breaker: {consecutive_failures: 3, open_timeout: 5s}
`+extra))
			w := watchPool(t, a, "bandwidth")
			client := aipb.NewAIServiceClient(dial(t, a.GRPCAddr))
			s := load(t, chaosDuration(t), 4, bandwidthCall(client, want), nil)
			sc.report(t, s)
			if s.wrong != 0 || s.hung != 0 || s.explicit() > s.calls/100 {
				t.Errorf("%d wrong, %d hung, %d errors of %d calls", s.wrong, s.hung, s.explicit(), s.calls)
			}
			w.mu.Lock()
			opened := w.opened[slow]
			w.mu.Unlock()
			if !hedge && !opened {
				t.Error("the slow endpoint's breaker never opened")
			}
			if hedge {
				if n := counter(t, a, "sidecar_backend_endpoint_hedges_total"); n == 0 {
					t.Error("no hedge counted")
				}
			}
		})
	}
}

// TestMalformedUpstream: a seed service that answers every call wrongly (one prediction too
// many). Alone, every call gets an explicit error naming the bad response; beside a good one, its
// calls fail over and its breaker opens. No wrong row is ever served.
func TestMalformedUpstream(t *testing.T) {
	sc := begin(t, "legacy_grpc: 1 of 2 seed services answering malformed")
	bad, _ := seedServer(t, "0", "--malformed")
	good, _ := seedServer(t, "0")
	want := expected(t, aipb.NewAIServiceClient(dial(t, good)))
	backend := `      timeout: 1s
      health: {interval: -1s}
      breaker: {consecutive_failures: 3, open_timeout: 5s}
`
	alone := downstream(t, legacyGRPCYAML([]string{bad}, backend))
	client := aipb.NewAIServiceClient(dial(t, alone.GRPCAddr))
	for i := 0; i < 5; i++ {
		_, err := client.PredictBandwidth(context.Background(), bandwidthReq(i))
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "bad response") || !strings.Contains(err.Error(), "predictions") {
			t.Fatalf("call %d to a malformed upstream: %v; want UNAVAILABLE naming the bad response and its field", i, err)
		}
	}
	both := downstream(t, legacyGRPCYAML([]string{bad, good}, backend))
	w := watchPool(t, both, "bandwidth")
	s := load(t, chaosDuration(t)/3, 4, bandwidthCall(aipb.NewAIServiceClient(dial(t, both.GRPCAddr)), want), nil)
	sc.report(t, s)
	if s.wrong != 0 || s.hung != 0 || s.explicit() > s.calls/100 {
		t.Errorf("%d wrong, %d hung, %d errors of %d calls", s.wrong, s.hung, s.explicit(), s.calls)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.opened[bad] {
		t.Error("the malformed endpoint's breaker never opened")
	}
}

// TestStaleFallback: the only upstream is killed; calls whose input was answered before get that
// answer, marked stale (x-sidecar-stale) and counted; a call never answered before gets an
// explicit UNAVAILABLE.
func TestStaleFallback(t *testing.T) {
	begin(t, "kserve: SIGKILL of the only upstream, stale fallback (no load: each input once)")
	g1, _, p1 := upstreamSidecar(t)
	want := expected(t, aipb.NewAIServiceClient(dial(t, g1)))
	a := downstream(t, strings.Replace(remoteModelYAML("kserve", []string{g1}, `    path: embedded:models/bandwidth.onnx
    fallback: stale
    cache_ttl: 1ms
`), "cache: {disabled: true}", "cache: {max_stale: 10m}", 1))
	client := aipb.NewAIServiceClient(dial(t, a.GRPCAddr))
	for i := 0; i < inputs; i++ {
		r, err := client.PredictBandwidth(context.Background(), bandwidthReq(i))
		if err != nil || !same(r.Predictions, want[i].Predictions, 1e-4) {
			t.Fatalf("input %d before the kill: %v %v", i, r, err)
		}
	}
	p1.kill()
	served := 0
	for i := 0; i < inputs; i++ {
		var hdr metadata.MD
		ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
		r, err := client.PredictBandwidth(ctx, bandwidthReq(i), grpc.Header(&hdr))
		cancel()
		switch {
		case err == nil && !same(r.Predictions, want[i].Predictions, 1e-4):
			t.Fatalf("input %d: a wrong stale answer", i)
		case err == nil && len(hdr.Get("x-sidecar-stale")) == 0:
			t.Fatalf("input %d: answered after the kill without the stale mark (%v)", i, hdr)
		case err == nil:
			served++
		case status.Code(err) != codes.Unavailable:
			t.Fatalf("input %d: %v, want a stale answer or UNAVAILABLE", i, err)
		}
	}
	// The cache may have declined a few answers (ristretto's admission); most must be there.
	if served < inputs*9/10 {
		t.Errorf("%d of %d inputs served stale", served, inputs)
	}
	if n := counterOf(t, a, "sidecar_model_fallbacks_total", "kind", "stale"); int(n) != served {
		t.Errorf("%v stale fallbacks counted, %d served", n, served)
	}
	r := bandwidthReq(9999)
	if _, err := client.PredictBandwidth(context.Background(), r); status.Code(err) != codes.Unavailable {
		t.Errorf("an input never answered before: %v, want UNAVAILABLE", err)
	}
}

// TestReloadKeepsBreakerAndHealthState: one of two upstreams is killed, and the pool marks it:
// down by its health check, or (with health checks off) open by its breaker. A config reload then
// changes the backend's settings and adds a third endpoint. The pool is kept: right after the
// reload the dead endpoint is still down, or still open (not back to unknown and closed, as a new
// pool would have it), the live one still up, and the new one joins; calls answer correctly
// throughout.
func TestReloadKeepsBreakerAndHealthState(t *testing.T) {
	for _, c := range []struct {
		name, backend string
		marked        func(backends.MemberState) bool
	}{
		{"health", "      health: {interval: 100ms, timeout: 200ms}\n", func(s backends.MemberState) bool { return s.Health == backends.HealthDown }},
		{"breaker", "      health: {interval: -1s}\n      breaker: {consecutive_failures: 1, open_timeout: 10s}\n",
			func(s backends.MemberState) bool { return s.Breaker == backends.BreakerOpen }},
	} {
		t.Run(c.name, func(t *testing.T) {
			begin(t, "kserve: reload after an upstream's SIGKILL keeps its "+c.name+" state")
			g1, _, p1 := upstreamSidecar(t)
			g2, _, _ := upstreamSidecar(t)
			g3, _, _ := upstreamSidecar(t)
			want := expected(t, aipb.NewAIServiceClient(dial(t, g2)))
			yaml := func(eps []string, extra string) string {
				y := remoteModelYAML("kserve", eps, "    path: embedded:models/bandwidth.onnx\n")
				y = strings.Replace(y, "      health: {interval: 100ms, timeout: 200ms}\n", "", 1)
				return strings.Replace(y, "      timeout: 1s\n", "      timeout: 1s\n"+c.backend+extra, 1)
			}
			a := downstream(t, yaml([]string{g1, g2}, ""))
			client := aipb.NewAIServiceClient(dial(t, a.GRPCAddr))
			p1.kill()
			call := bandwidthCall(client, want)
			// Under make chaos, within 10s.
			eventually(t, within(10*time.Second), call, func() bool { return c.marked(stateOf(states(t, a, "bandwidth"), g1)) },
				func() string {
					return fmt.Sprintf("the killed endpoint is not marked: %+v", stateOf(states(t, a, "bandwidth"), g1))
				})
			pool := a.Service.Models()["bandwidth"].Backend.(*backends.Remote).Pool()
			cfg, err := config.Parse("failover-test-2.yaml", []byte(yaml([]string{g1, g2, g3}, "      hedge_delay: 200ms\n      retry: {max_attempts: 4}\n")))
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Reload(context.Background(), cfg); err != nil {
				t.Fatal(err)
			}
			if got := a.Service.Models()["bandwidth"].Backend.(*backends.Remote).Pool(); got != pool {
				t.Fatal("the reload built a new pool")
			}
			ss := states(t, a, "bandwidth")
			if st := stateOf(ss, g1); !c.marked(st) {
				t.Errorf("the dead endpoint right after the reload: %+v; its %s state was lost", st, c.name)
			}
			if st := stateOf(ss, g2); st.Health == backends.HealthDown || st.Breaker != backends.BreakerClosed {
				t.Errorf("the live endpoint right after the reload: %+v", st)
			}
			if st := stateOf(ss, g3); st.Name != g3 {
				t.Errorf("the added endpoint is not in the pool: %+v", ss)
			}
			s := load(t, time.Second, 4, call, nil)
			if s.wrong != 0 || s.explicit() != 0 {
				t.Errorf("after the reload: %d wrong, %d errors", s.wrong, s.explicit())
			}
			// Under make chaos, in the load's second.
			eventually(t, within(0), call, func() bool {
				return counterOf(t, a, "sidecar_backend_endpoint_requests_total", "endpoint", g3) > 0
			}, func() string { return "the added endpoint served nothing" })
		})
	}
}

// TestReloadBetweenLocalAndLegacyUnderLoad: calls run while the bandwidth model moves from the
// local ONNX model to the seed's gRPC service and back (the migration path, in reverse); the load
// lasts until the six reloads are done, however long they take. No call fails: a call caught by
// the swap runs again on the new model.
func TestReloadBetweenLocalAndLegacyUnderLoad(t *testing.T) {
	sc := begin(t, "reload local <-> legacy_grpc six times under load")
	seed, _ := seedServer(t, "0")
	local := `listen: {grpc: 127.0.0.1:0, http: "off"}
cache: {disabled: true}
models:
  - name: bandwidth
    task: forecast
    path: embedded:models/bandwidth.onnx
    spec: embedded:specs/bandwidth.yaml
`
	legacyCfg := legacyGRPCYAML([]string{seed}, "      timeout: 1s\n")
	a := downstream(t, local)
	client := aipb.NewAIServiceClient(dial(t, a.GRPCAddr))
	var reloads atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 6; i++ {
			text := legacyCfg
			if i%2 == 1 {
				text = local
			}
			cfg, err := config.Parse(fmt.Sprintf("reload-%d.yaml", i), []byte(text))
			if err == nil {
				err = a.Reload(context.Background(), cfg)
			}
			if err != nil {
				t.Errorf("reload %d: %v", i, err)
				return
			}
			reloads.Add(1)
			time.Sleep(100 * time.Millisecond) // spacing of the reloads, not a timing assertion
		}
	}()
	s := loadUntil(t, 2*time.Second, done, 8, func(ctx context.Context, i int) error {
		r, err := client.PredictBandwidth(ctx, bandwidthReq(i%inputs))
		if err == nil && (len(r.Predictions) != 10 || r.GetVmId() != fmt.Sprintf("vm-%d", i%inputs)) {
			return errWrong
		}
		return err
	}, nil)
	<-done
	sc.report(t, s)
	if reloads.Load() != 6 || s.explicit() != 0 || s.wrong != 0 || s.hung != 0 {
		t.Errorf("%d reloads; %d errors, %d wrong, %d hung of %d calls", reloads.Load(), s.explicit(), s.wrong, s.hung, s.calls)
	}
}
