package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/novacron/sidecar/internal/leaktest"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
	"github.com/novacron/sidecar/proxy"
	"github.com/novacron/sidecar/proxy/admin"
	"github.com/novacron/sidecar/proxy/migrate"
)

const adminTestToken = "0123456789abcdef0123456789abcdef"

// recordingRoutes is a fake of the proxy.Service a migration Controller drives (the serve
// command wires the real one): it counts the routes set.
type recordingRoutes struct {
	// mu guards n.
	mu sync.Mutex
	n  int
}

func (f *recordingRoutes) SetRoute(string, proxy.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	return nil
}

func (f *recordingRoutes) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

// adminFixture is an admin API serving a Controller of one migration, m1 (predict_bandwidth,
// a -> b), on a real listener until the test ends.
type adminFixture struct {
	ctrl   *migrate.Controller
	rec    *migrate.Recorder
	routes *recordingRoutes
	addr   string // for -admin
}

func startAdmin(t *testing.T, cfg admin.Config) *adminFixture {
	t.Helper()
	t.Setenv(tokenFileEnv, "")
	f := &adminFixture{routes: &recordingRoutes{}, rec: migrate.NewRecorder(nil)}
	var err error
	f.ctrl, err = migrate.NewController(migrate.Config{
		Migrations: []migrate.Spec{{Name: "m1", Route: proxy.RouteBandwidth, From: "a", To: "b"}},
		StateFile:  filepath.Join(t.TempDir(), "state.json"),
	}, f.routes, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := admin.New(cfg, f.ctrl, f.rec)
	if err != nil {
		t.Fatal(err)
	}
	l, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	f.addr = l.Addr().String()
	if l.Addr().Network() == "unix" {
		f.addr = "unix:" + f.addr
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return f
}

func tokenFile(t *testing.T, token string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (f *adminFixture) state(t *testing.T) migrate.Status {
	t.Helper()
	st, err := f.ctrl.StatusOf("m1")
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestMigrationStatus(t *testing.T) {
	leaktest.Check(t)
	f := startAdmin(t, admin.Config{Listen: "127.0.0.1:0", TokenFile: tokenFile(t, adminTestToken)})
	tf := tokenFile(t, adminTestToken)

	code, out, errs := runArgs("migration", "status", "-admin", f.addr, "-token-file", tf)
	if code != 0 || errs != "" {
		t.Fatalf("status: exit %d, stderr %q", code, errs)
	}
	for _, want := range []string{"MIGRATION", "m1", "predict_bandwidth", "running", "1/5 shadow", "m1 (a -> b): holding"} {
		if !strings.Contains(out, want) {
			t.Errorf("status: no %q in\n%s", want, out)
		}
	}

	code, out, errs = runArgs("migration", "status", "-json", "-admin", f.addr, "-token-file", tf)
	var list admin.List
	if err := json.Unmarshal([]byte(out), &list); code != 0 || err != nil {
		t.Fatalf("status -json: exit %d, %v, %q %q", code, err, out, errs)
	}
	if len(list.Migrations) != 1 || list.Migrations[0].Name != "m1" || list.Migrations[0].State != migrate.StateRunning {
		t.Errorf("status -json: %+v", list)
	}
	if !strings.Contains(out, "\n  \"migrations\": [") {
		t.Errorf("status -json is not indented: %q", out)
	}

	// One migration, with its kept disagreements; a long message is cut in the table form.
	long := strings.Repeat("v", 1000)
	f.rec.Shadowed(&proxy.ShadowOutcome{Route: proxy.RouteBandwidth, Primary: "a", Shadow: "b",
		Request:       &aipb.AnomalyRequest{VmId: long},
		PrimaryAnswer: &aipb.AnomalyResponse{IsAnomaly: true, Score: 0.9}, Answer: &aipb.AnomalyResponse{Score: 0.1}})
	code, out, errs = runArgs("migration", "status", "m1", "-admin", f.addr, "-token-file", tf)
	if code != 0 {
		t.Fatalf("status m1: exit %d, %q", code, errs)
	}
	for _, want := range []string{"m1", "1 disagreement kept for route predict_bandwidth", "a (baseline) vs b (candidate): ", "is_anomaly", "detail:", `request:    {"vm_id":"vvv`, "... (", `baseline:   {"is_anomaly":true`, "candidate:  "} {
		if !strings.Contains(out, want) {
			t.Errorf("status m1: no %q in\n%s", want, out)
		}
	}
	if strings.Contains(out, long) {
		t.Error("status m1: the long request was not cut")
	}
	code, out, _ = runArgs("migration", "status", "-json", "m1", "-admin", f.addr, "-token-file", tf)
	var d admin.Detail
	if err := json.Unmarshal([]byte(out), &d); code != 0 || err != nil || d.Name != "m1" || len(d.Disagreements) != 1 || !strings.Contains(string(d.Disagreements[0].Request), long) {
		t.Errorf("status -json m1: exit %d, %v, %+v", code, err, d)
	}
}

func TestMigrationActions(t *testing.T) {
	leaktest.Check(t)
	tf := tokenFile(t, adminTestToken)
	f := startAdmin(t, admin.Config{Listen: "127.0.0.1:0", TokenFile: tf})
	t.Setenv(tokenFileEnv, tf) // the token file from the environment
	for _, tc := range []struct {
		args   []string
		state  string
		stage  int
		reason string
	}{
		{[]string{"pause", "m1", "-reason", "looking at p99"}, migrate.StatePaused, 0, "operator: looking at p99"},
		{[]string{"resume", "-reason", "fine", "m1"}, migrate.StateRunning, 0, "operator: fine"},
		{[]string{"advance", "m1"}, migrate.StateRunning, 1, "operator: via the admin API"},
		{[]string{"rollback", "m1"}, migrate.StateRolledBack, 0, "operator: via the admin API"},
	} {
		routes := f.routes.count()
		code, out, errs := runArgs(append([]string{"migration", tc.args[0], "-admin", f.addr}, tc.args[1:]...)...)
		if code != 0 || errs != "" {
			t.Fatalf("%q: exit %d, stderr %q", tc.args, code, errs)
		}
		st := f.state(t)
		if st.State != tc.state || st.Stage != tc.stage || st.Last.Reason != tc.reason {
			t.Errorf("%q: %s stage %d (%q), want %s stage %d (%q)", tc.args, st.State, st.Stage, st.Last.Reason, tc.state, tc.stage, tc.reason)
		}
		if !strings.Contains(out, "m1") || !strings.Contains(out, tc.state) || !strings.Contains(out, tc.reason) {
			t.Errorf("%q: the new status is not shown:\n%s", tc.args, out)
		}
		if f.routes.count() != routes+1 {
			t.Errorf("%q: %d routes set", tc.args, f.routes.count()-routes)
		}
	}
	// -json prints the new Status.
	code, out, _ := runArgs("migration", "resume", "-json", "-admin", f.addr, "m1")
	var st migrate.Status
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || st.State != migrate.StateRunning {
		t.Errorf("resume -json: exit %d, %v, %q", code, err, out)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"resume", "m1"}, "resume: the migration is running: not possible in the migration's state (sidecar migration status NAME shows why)"},
		{[]string{"pause", "m9"}, `"m9": no such migration (migrations: [m1]) (sidecar migration status lists them)`},
		{[]string{"status", "m9"}, "no such migration"},
	} {
		before := f.state(t)
		code, out, errs := runArgs(append([]string{"migration", tc.args[0], "-admin", f.addr}, tc.args[1:]...)...)
		if code != 1 || out != "" || !strings.Contains(errs, tc.want) {
			t.Errorf("%q: exit %d, %q %q; want 1 and %q", tc.args, code, out, errs, tc.want)
		}
		if after := f.state(t); after.State != before.State || after.Stage != before.Stage {
			t.Errorf("%q changed the migration", tc.args)
		}
	}
}

func TestMigrationErrors(t *testing.T) {
	leaktest.Check(t)
	f := startAdmin(t, admin.Config{Listen: "127.0.0.1:0", TokenFile: tokenFile(t, adminTestToken)})
	wrong := tokenFile(t, strings.Repeat("w", len(adminTestToken)))
	routes := f.routes.count()
	for _, verb := range []string{"status", "pause", "rollback"} {
		code, out, errs := runArgs("migration", verb, "-admin", f.addr, "-token-file", wrong, "m1")
		if code != 1 || out != "" || errs != "sidecar migration "+verb+": the admin API refused the token: pass -token-file with the file named by admin.token_file\n" {
			t.Errorf("%s with a wrong token: exit %d, %q %q", verb, code, out, errs)
		}
	}
	if st := f.state(t); st.State != migrate.StateRunning || st.Stage != 0 || f.routes.count() != routes {
		t.Errorf("refused calls changed the migration: %s stage %d, %d routes set", st.State, st.Stage, f.routes.count()-routes)
	}

	dir := t.TempDir()
	// Something else on the address: a data port, say.
	other := httptest.NewServer(http.NotFoundHandler())
	defer other.Close()

	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no token on TCP", []string{"status", "-admin", f.addr}, 2, "-token-file is required for a TCP admin address"},
		{"missing token file", []string{"status", "-admin", f.addr, "-token-file", filepath.Join(dir, "none")}, 1, "-token-file: open " + filepath.Join(dir, "none") + ": no such file or directory: write a random token"},
		{"nothing listens", []string{"status", "-admin", "unix:" + filepath.Join(dir, "none.sock")}, 1, "nothing listens on unix:" + filepath.Join(dir, "none.sock") + ": is admin.listen set in the sidecar's config"},
		{"not the admin API", []string{"status", "-admin", strings.TrimPrefix(other.URL, "http://"), "-token-file", wrong}, 1, "answered 404 Not Found, not as the admin API does: is -admin the sidecar's admin.listen address, not a data port?"},
		{"not loopback", []string{"status", "-admin", "10.0.0.7:9464"}, 2, "-admin: \"10.0.0.7:9464\": \"10.0.0.7\" is not a loopback address"},
		{"no name", []string{"pause", "-admin", f.addr}, 2, "want one migration NAME, got 0"},
		{"two names", []string{"status", "m1", "m2"}, 2, "want at most one migration NAME, got 2"},
		{"reason for status", []string{"status", "-reason", "x"}, 2, "-reason is for pause"},
		{"bad timeout", []string{"status", "-timeout", "0s"}, 2, "-timeout 0s: want a positive duration"},
		{"unknown flag", []string{"status", "-frob"}, 2, "flag provided but not defined: -frob"},
		{"unknown command", []string{"frobnicate"}, 2, `sidecar migration: unknown command "frobnicate"`},
		{"no command", []string{}, 2, "usage: sidecar migration <command>"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runArgs(append([]string{"migration"}, tc.args...)...)
			if code != tc.code || out != "" || !strings.Contains(errs, tc.want) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d and %q", code, out, errs, tc.code, tc.want)
			}
		})
	}
	if code, out, _ := runArgs("migration", "-h"); code != 0 || !strings.Contains(out, "rollback NAME") {
		t.Errorf("migration -h: exit %d, %q", code, out)
	}
	if code, _, errs := runArgs("migration", "status", "-h"); code != 0 || !strings.Contains(errs, "-token-file") || !strings.Contains(errs, "127.0.0.1:9464") {
		t.Errorf("migration status -h: exit %d, %q", code, errs)
	}
	if code, out, _ := runArgs("help"); code != 0 || !strings.Contains(out, "  migration ") {
		t.Errorf("help names no migration command: %q", out)
	}
}

// TestMigrationUnixSocket: over a unix socket without a token file, no token is needed.
func TestMigrationUnixSocket(t *testing.T) {
	leaktest.Check(t)
	f := startAdmin(t, admin.Config{Listen: "unix:" + filepath.Join(t.TempDir(), "admin.sock")})
	code, out, errs := runArgs("migration", "pause", "-admin", f.addr, "-reason", "over the socket", "m1")
	if code != 0 || !strings.Contains(out, "paused") {
		t.Fatalf("pause: exit %d, %q %q", code, out, errs)
	}
	if st := f.state(t); st.State != migrate.StatePaused || st.Last.Reason != "operator: over the socket" {
		t.Errorf("after pause: %s, %q", st.State, st.Last.Reason)
	}
}

var _ migrate.RouteSetter = (*recordingRoutes)(nil)
