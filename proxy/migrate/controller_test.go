package migrate

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	aipb "github.com/novacron/sidecar/proto/novacron/ai"
	"github.com/novacron/sidecar/proxy"
)

// fakeRoutes is a fake proxy.Service: it keeps the routes a Controller sets (the real Service is
// driven by internal/app's tests).
type fakeRoutes struct {
	mu     sync.Mutex
	routes map[string]proxy.Route
	sets   int
}

func (f *fakeRoutes) SetRoute(name string, r proxy.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.routes == nil {
		f.routes = map[string]proxy.Route{}
	}
	f.routes[name] = r
	f.sets++
	return nil
}

func (f *fakeRoutes) get(name string) proxy.Route {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.routes[name]
}

func testSpec() Spec {
	return Spec{Name: "m", Route: proxy.RouteBandwidth, From: "http", To: "grpc",
		Stages: []Stage{{Shadow: 10, MinDuration: 10 * time.Second, MinCalls: 400}, {Split: 50, Shadow: 50, MinDuration: 10 * time.Second, MinCalls: 400},
			{Split: 100, Shadow: 10, MinDuration: 10 * time.Second, MinCalls: 400}}}
}

// harness drives a Controller through a real Recorder, as the proxy would.
type harness struct {
	t      *testing.T
	rec    *Recorder
	ctrl   *Controller
	routes *fakeRoutes
	log    *bytes.Buffer
}

func newHarness(t *testing.T, stateFile string, specs ...Spec) *harness {
	t.Helper()
	h := &harness{t: t, rec: NewRecorder(nil), routes: &fakeRoutes{}, log: &bytes.Buffer{}}
	c, err := NewController(Config{Migrations: specs, StateFile: stateFile, Log: h.log}, h.routes, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.ctrl = c
	h.rec.SetController(c)
	return h
}

func answer(v ...float64) *aipb.BandwidthBatchResponse {
	return &aipb.BandwidthBatchResponse{Results: []*aipb.BandwidthResponse{{Predictions: v}}}
}

// call feeds n shadowed calls: alternately served by the baseline and shadowed on the candidate,
// and the other way round. The candidate answers cand (nil: the baseline's answer) or fails with
// err, and takes extra more time than the baseline.
func (h *harness) call(n int, cand *aipb.BandwidthBatchResponse, err error, extra time.Duration) {
	base := answer(100, 200, 300)
	if cand == nil {
		cand = base
	}
	for i := range n {
		o := &proxy.ShadowOutcome{Route: proxy.RouteBandwidth, Task: proxy.TaskForecast, Request: &aipb.BandwidthBatchRequest{},
			Primary: "http", Shadow: "grpc", PrimaryAnswer: base, Answer: cand, PrimaryLatency: time.Millisecond, Latency: time.Millisecond + extra, Err: err}
		if i%2 == 1 {
			o.Primary, o.Shadow, o.PrimaryAnswer, o.Answer = "grpc", "http", cand, base
			o.PrimaryLatency, o.Latency = time.Millisecond+extra, time.Millisecond
			if err != nil {
				o.Answer, o.Err = base, nil
				h.rec.Served(o.Route, "grpc", o.PrimaryLatency, err)
				continue
			}
		}
		if o.Err != nil {
			o.Answer = nil
		}
		h.rec.Served(o.Route, o.Primary, o.PrimaryLatency, nil)
		h.rec.Shadowed(o)
	}
}

func (h *harness) status() Status {
	h.t.Helper()
	s, err := h.ctrl.StatusOf("m")
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

func (h *harness) want(stage int, state string) {
	h.t.Helper()
	s := h.status()
	if s.Stage != stage || s.State != state {
		h.t.Fatalf("stage %d %s (%s), want stage %d %s; log:\n%s", s.Stage, s.State, s.Verdict, stage, state, h.log)
	}
	if got, want := h.routes.get(proxy.RouteBandwidth), testSpec().WithDefaults().RouteAt(stage); !reflect.DeepEqual(got, want) {
		h.t.Fatalf("route %+v, want %+v", got, want)
	}
}

// TestMigrationAdvancesThroughEveryStage: agreeing answers take a migration through each stage
// once its duration and calls are reached, and to done; never earlier.
func TestMigrationAdvancesThroughEveryStage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "", testSpec())
		h.want(0, StateRunning)
		for stage := range 3 {
			h.call(399, nil, nil, 0)
			time.Sleep(10 * time.Second) // synctest's clock
			h.ctrl.Tick()
			h.want(stage, StateRunning) // one call short
			h.call(1, nil, nil, 0)
			h.ctrl.Tick()
			if stage < 2 {
				h.want(stage+1, StateRunning)
			}
		}
		h.want(3, StateDone)
		if r := h.routes.get(proxy.RouteBandwidth); r.Target != "grpc" || len(r.Split)+len(r.Shadow) != 0 {
			t.Errorf("done: route %+v, want grpc alone", r)
		}
	})
}

// TestMigrationHoldsUntilConfident: 3 agreeing calls over a long time do not promote; the
// verdict says what it waits for.
func TestMigrationHoldsUntilConfident(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sp := testSpec()
		sp.Stages[0].MinCalls = 3
		h := newHarness(t, "", sp)
		h.call(3, nil, nil, 0)
		time.Sleep(time.Hour) // synctest's clock
		h.ctrl.Tick()
		h.want(0, StateRunning)
		if v := h.status().Verdict; !strings.Contains(v, "needs more calls") {
			t.Errorf("verdict %q; want it to say it needs more calls", v)
		}
	})
}

// TestMigrationRollsBackOnEachGate: a candidate that disagrees, fails or is slow is rolled back
// to the stage before (from the first: to the baseline alone) and held there; the disagreeing
// and failing ones within the stage's minimum calls, on the comparison itself.
func TestMigrationRollsBackOnEachGate(t *testing.T) {
	cases := []struct {
		name  string
		cand  *aipb.BandwidthBatchResponse
		err   error
		extra time.Duration
		why   string
	}{
		{"disagreement", answer(100, 250, 300), nil, 0, "disagreement"},
		{"errors", nil, errors.New("candidate down"), 0, "errors"},
		{"latency", nil, nil, 80 * time.Millisecond, "latency"},
	}
	for _, c := range cases {
		for _, from := range []int{0, 1} {
			t.Run(fmt.Sprintf("%s/stage %d", c.name, from), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					h := newHarness(t, "", testSpec())
					if from == 1 {
						h.call(400, nil, nil, 0)
						time.Sleep(10 * time.Second) // synctest's clock
						h.ctrl.Tick()
						h.want(1, StateRunning)
					}
					n := 0
					for ; n < 400 && h.status().State == StateRunning; n++ {
						h.call(1, c.cand, c.err, c.extra)
					}
					if c.name == "latency" {
						h.ctrl.Tick()
					} else if n >= 400 {
						t.Fatalf("still running after %d calls", n)
					}
					h.want(from-1, StateRolledBack)
					if s := h.status(); !strings.Contains(s.Last.Reason, c.why) {
						t.Errorf("reason %q; want it to name %s", s.Last.Reason, c.why)
					}
					// Held: good calls and time do not advance it until it is resumed.
					h.call(600, nil, nil, 0)
					time.Sleep(time.Minute) // synctest's clock
					h.ctrl.Tick()
					h.want(from-1, StateRolledBack)
					if err := h.ctrl.Resume("m", "fixed"); err != nil {
						t.Fatal(err)
					}
					h.want(max(from-1, 0), StateRunning)
				})
			})
		}
	}
}

// TestMigrationOperatorActions: pause holds a migration whose gates pass; advance and rollback
// move it by one stage; actions that do not fit its state are refused.
func TestMigrationOperatorActions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "", testSpec())
		if err := h.ctrl.Pause("m", "looking"); err != nil {
			t.Fatal(err)
		}
		h.call(400, nil, nil, 0)
		time.Sleep(time.Minute) // synctest's clock
		h.ctrl.Tick()
		h.want(0, StatePaused)
		if err := h.ctrl.Pause("m", "again"); !errors.Is(err, ErrState) {
			t.Errorf("pause of a paused migration: %v", err)
		}
		if err := h.ctrl.Advance("m", "go"); err != nil {
			t.Fatal(err)
		}
		h.want(1, StatePaused)
		if err := h.ctrl.Rollback("m", "back"); err != nil {
			t.Fatal(err)
		}
		h.want(0, StateRolledBack)
		if err := h.ctrl.Resume("m", "on"); err != nil {
			t.Fatal(err)
		}
		h.want(0, StateRunning)
		if err := h.ctrl.Advance("nope", ""); !errors.Is(err, ErrNoMigration) {
			t.Errorf("an unknown migration: %v", err)
		}
	})
}

// TestMigrationStagePersists: a restarted controller resumes each migration at its saved stage
// and state; one whose spec changed starts at its first stage; a damaged state file is refused.
func TestMigrationStagePersists(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "state.json")
		h := newHarness(t, file, testSpec())
		for range 2 {
			h.call(400, nil, nil, 0)
			time.Sleep(10 * time.Second) // synctest's clock
			h.ctrl.Tick()
		}
		if err := h.ctrl.Pause("m", "night"); err != nil {
			t.Fatal(err)
		}
		h.want(2, StatePaused)

		again := newHarness(t, file, testSpec())
		again.want(2, StatePaused)
		if s := again.status(); !strings.Contains(s.Last.Reason, "resumed from") {
			t.Errorf("reason %q", s.Last.Reason)
		}

		edited := testSpec()
		edited.Stages[2].Split = 90
		fresh := newHarness(t, file, edited)
		if s := fresh.status(); s.Stage != 0 || s.State != StateRunning || !strings.Contains(s.Last.Reason, "spec changed") {
			t.Errorf("an edited migration: stage %d %s (%s); want its first stage", s.Stage, s.State, s.Last.Reason)
		}

		if err := os.WriteFile(file, []byte(`{"version": 1, "migrations": {"m": {"stage": "x"}}}`), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := NewController(Config{Migrations: []Spec{testSpec()}, StateFile: file}, &fakeRoutes{}, nil); err == nil || !strings.Contains(err.Error(), "delete it") {
			t.Errorf("a damaged state file: %v; want an error that says what to do", err)
		}
	})
}

// TestStatusTable: the report names the migration, its stage, its arms' calls and the top
// disagreeing field with an example.
func TestStatusTable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sp := testSpec()
		sp.Gates.MaxDisagreement = 0.5
		h := newHarness(t, "", sp)
		h.call(10, nil, nil, 0)
		h.call(4, answer(100, 201, 300), nil, 0)
		var b bytes.Buffer
		if err := WriteTable(&b, h.ctrl.Status()); err != nil {
			t.Fatal(err)
		}
		out := b.String()
		for _, want := range []string{"m", "predict_bandwidth", "running", "1/3 shadow 10%", "14", "predictions: 4, e.g.", "results[0].predictions[1]"} {
			if !strings.Contains(out, want) {
				t.Errorf("the table lacks %q:\n%s", want, out)
			}
		}
	})
}
