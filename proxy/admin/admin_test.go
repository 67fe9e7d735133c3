package admin_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
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

const testToken = "0123456789abcdef0123456789abcdef"

// fakeRoutes is a fake of the proxy.Service a Controller drives (the real one is wired by
// cmd/sidecar): it records every route set.
type fakeRoutes struct {
	// mu guards set.
	mu  sync.Mutex
	set []string
}

func (f *fakeRoutes) SetRoute(name string, r proxy.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.set = append(f.set, name)
	return nil
}

func (f *fakeRoutes) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.set)
}

// harness is an admin Server serving on a real listener, with its Controller and a client.
type harness struct {
	srv    *admin.Server
	ctrl   *migrate.Controller
	rec    *migrate.Recorder
	routes *fakeRoutes
	client *http.Client
	base   string // "http://127.0.0.1:PORT" or "http://localhost" (a unix socket)
	addr   string // the listener's address, in Config.Listen's form
}

func writeToken(t *testing.T, token string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// start serves cfg over a Controller of one migration, m1 (route predict_bandwidth, a -> b),
// until the test ends.
func start(t *testing.T, cfg admin.Config) *harness {
	t.Helper()
	h := &harness{routes: &fakeRoutes{}, rec: migrate.NewRecorder(nil)}
	var err error
	h.ctrl, err = migrate.NewController(migrate.Config{
		Migrations: []migrate.Spec{{Name: "m1", Route: proxy.RouteBandwidth, From: "a", To: "b"}},
		StateFile:  filepath.Join(t.TempDir(), "state.json"),
	}, h.routes, nil)
	if err != nil {
		t.Fatal(err)
	}
	if h.srv, err = admin.New(cfg, h.ctrl, h.rec); err != nil {
		t.Fatal(err)
	}
	l, err := h.srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{Proxy: nil}
	h.base = "http://" + l.Addr().String()
	h.addr = l.Addr().String()
	if l.Addr().Network() == "unix" {
		path := l.Addr().String()
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}
		h.base, h.addr = "http://localhost", "unix:"+path
	}
	h.client = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- h.srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := h.srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		tr.CloseIdleConnections()
	})
	return h
}

// answer is one response.
type answer struct {
	code   int
	header http.Header
	body   []byte
}

// errMsg is the answer's JSON error, failing t when there is none.
func (a answer) errMsg(t *testing.T) string {
	t.Helper()
	var e admin.ErrorBody
	if err := json.Unmarshal(a.body, &e); err != nil || e.Error == "" {
		t.Fatalf("%d: not a JSON error: %q (%v)", a.code, a.body, err)
	}
	return e.Error
}

func (a answer) status(t *testing.T) migrate.Status {
	t.Helper()
	if a.code != http.StatusOK {
		t.Fatalf("got %d %s, want 200", a.code, a.body)
	}
	var st migrate.Status
	if err := json.Unmarshal(a.body, &st); err != nil {
		t.Fatalf("not a Status: %v: %s", err, a.body)
	}
	return st
}

// call sends a request; token "" sends no Authorization; set changes the request before it is
// sent.
func (h *harness) call(t *testing.T, method, path, token, body string, set ...func(*http.Request)) answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var rb io.Reader
	if body != "" {
		rb = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.base+path, rb)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for _, f := range set {
		f(req)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("%s %s: Cache-Control %q, want no-store", method, path, cc)
	}
	return answer{code: resp.StatusCode, header: resp.Header, body: b}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  admin.Config
		want string // "" for valid
	}{
		{"default with token", admin.Config{TokenFile: "/etc/t"}, ""},
		{"loopback v4", admin.Config{Listen: "127.0.0.1:9464", TokenFile: "/etc/t"}, ""},
		{"loopback 127/8", admin.Config{Listen: "127.1.2.3:0", TokenFile: "/etc/t"}, ""},
		{"loopback v6", admin.Config{Listen: "[::1]:9464", TokenFile: "/etc/t"}, ""},
		{"localhost", admin.Config{Listen: "localhost:9464", TokenFile: "/etc/t"}, ""},
		{"unix without token", admin.Config{Listen: "unix:/run/sidecar/admin.sock"}, ""},
		{"unix with token", admin.Config{Listen: "unix:/run/sidecar/admin.sock", TokenFile: "/etc/t"}, ""},
		{"default without token", admin.Config{}, "admin.token_file: required when admin.listen is a TCP address (127.0.0.1:9464)"},
		{"tcp without token", admin.Config{Listen: "127.0.0.1:9464"}, "admin.token_file: required"},
		{"all interfaces", admin.Config{Listen: "0.0.0.0:9464", TokenFile: "/etc/t"}, `admin.listen: "0.0.0.0:9464": "0.0.0.0" is not a loopback address`},
		{"empty host", admin.Config{Listen: ":9464", TokenFile: "/etc/t"}, "admin.listen: \":9464\": an empty host listens on every interface"},
		{"lan address", admin.Config{Listen: "10.0.0.7:9464", TokenFile: "/etc/t"}, "use a loopback address (127.0.0.1:9464) or a unix socket"},
		{"v6 any", admin.Config{Listen: "[::]:9464", TokenFile: "/etc/t"}, "is not a loopback address"},
		{"host name", admin.Config{Listen: "admin.example.com:9464", TokenFile: "/etc/t"}, "is not a loopback address"},
		{"no port", admin.Config{Listen: "127.0.0.1", TokenFile: "/etc/t"}, "admin.listen: \"127.0.0.1\": want a loopback host:port"},
		{"named port", admin.Config{Listen: "127.0.0.1:http", TokenFile: "/etc/t"}, "port \"http\" is not a number"},
		{"unix empty", admin.Config{Listen: "unix:"}, `admin.listen: "unix:" names no socket`},
		{"unix relative", admin.Config{Listen: "unix:admin.sock"}, "is not an absolute path"},
		{"unix abstract", admin.Config{Listen: "unix:@admin"}, "is not an absolute path"},
		{"unix too long", admin.Config{Listen: "unix:/" + strings.Repeat("s", 120)}, "choose a shorter path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate: %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestNewTokenFile(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ctrl, err := migrate.NewController(migrate.Config{}, &fakeRoutes{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"ok", file("ok", "  "+testToken+"\n"), ""},
		{"missing", filepath.Join(dir, "none"), "admin.token_file: open " + filepath.Join(dir, "none") + ": no such file or directory: write a random token to it: openssl rand -hex 32"},
		{"short", file("short", "abc\n"), "holds 3 bytes of token, fewer than 16"},
		{"empty", file("empty", "\n\n"), "holds 0 bytes of token"},
		{"folder", dir, "is not a regular file"},
		{"large", file("large", strings.Repeat("a", admin.MaxTokenFileBytes+1)), "larger than 4096 bytes"},
		{"space inside", file("space", "0123456789 abcdef0123"), "not visible ASCII"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := admin.New(admin.Config{Listen: "127.0.0.1:0", TokenFile: tc.path}, ctrl, nil)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("New: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("New: %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if _, err := admin.New(admin.Config{Listen: "0.0.0.0:0", TokenFile: file("ok2", testToken)}, ctrl, nil); err == nil || !strings.Contains(err.Error(), "admin.listen:") {
		t.Errorf("New on 0.0.0.0: %v, want admin.listen refused", err)
	}
	if _, err := admin.New(admin.Config{Listen: "127.0.0.1:0"}, ctrl, nil); err == nil || !strings.Contains(err.Error(), "admin.token_file: required") {
		t.Errorf("New on TCP without a token: %v", err)
	}
}

func TestAPI(t *testing.T) {
	leaktest.Check(t)
	h := start(t, admin.Config{Listen: "127.0.0.1:0", TokenFile: writeToken(t, testToken)})

	// A disagreement kept for m1's route, shown by its detail.
	h.rec.Shadowed(&proxy.ShadowOutcome{Route: proxy.RouteBandwidth, Primary: "a", Shadow: "b",
		Request:       &aipb.AnomalyRequest{},
		PrimaryAnswer: &aipb.AnomalyResponse{IsAnomaly: true, Score: 0.9}, Answer: &aipb.AnomalyResponse{Score: 0.1}})

	a := h.call(t, "GET", "/admin/migrations", testToken, "")
	var list admin.List
	if err := json.Unmarshal(a.body, &list); a.code != 200 || err != nil {
		t.Fatalf("list: %d %s %v", a.code, a.body, err)
	}
	if len(list.Migrations) != 1 || list.Migrations[0].Name != "m1" || list.Migrations[0].State != migrate.StateRunning {
		t.Fatalf("list: %+v", list)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	// Serve has begun (it answered): Addr is the listener's, with its port.
	if got := h.srv.Addr(); got != h.addr {
		t.Errorf("Addr %q, want %q", got, h.addr)
	}

	a = h.call(t, "GET", "/admin/migrations/m1", testToken, "")
	var d admin.Detail
	if err := json.Unmarshal(a.body, &d); a.code != 200 || err != nil {
		t.Fatalf("detail: %d %s %v", a.code, a.body, err)
	}
	if d.Name != "m1" || d.Stage != 0 || len(d.Disagreements) != 1 || d.Disagreements[0].BaselineName != "a" || len(d.Disagreements[0].Fields) == 0 {
		t.Errorf("detail: %+v", d)
	}

	steps := []struct {
		action, body string
		state        string
		stage        int
		reason       string
	}{
		{"pause", `{"reason": "looking at p99"}`, migrate.StatePaused, 0, "operator: looking at p99"},
		{"resume", "", migrate.StateRunning, 0, "operator: via the admin API"},
		{"advance", `{"reason": "enough"}`, migrate.StateRunning, 1, "operator: enough"},
		{"rollback", `{}`, migrate.StateRolledBack, 0, "operator: via the admin API"},
	}
	for _, s := range steps {
		before := h.routes.count()
		st := h.call(t, "POST", "/admin/migrations/m1/"+s.action, testToken, s.body).status(t)
		if st.State != s.state || st.Stage != s.stage || st.Last.Reason != s.reason || st.Last.Kind != s.action {
			t.Errorf("%s: got %s stage %d, last %+v; want %s stage %d, %q", s.action, st.State, st.Stage, st.Last, s.state, s.stage, s.reason)
		}
		if now, _ := h.ctrl.StatusOf("m1"); now.State != s.state || now.Stage != s.stage {
			t.Errorf("%s: the controller says %s stage %d", s.action, now.State, now.Stage)
		}
		if h.routes.count() != before+1 {
			t.Errorf("%s: %d routes set, want 1", s.action, h.routes.count()-before)
		}
	}

	for _, tc := range []struct {
		name, method, path, body string
		code                     int
		want, allow              string
	}{
		{"unknown migration", "GET", "/admin/migrations/m9", "", 404, `"m9": no such migration (migrations: [m1])`, ""},
		{"unknown migration action", "POST", "/admin/migrations/m9/pause", "", 404, "no such migration", ""},
		{"state refuses", "POST", "/admin/migrations/m1/pause", "", 409, "pause: the migration is rolled_back", ""},
		{"unknown action", "POST", "/admin/migrations/m1/explode", "", 404, "no such route", ""},
		{"unknown path", "GET", "/admin", "", 404, "no such route", ""},
		{"GET an action", "GET", "/admin/migrations/m1/pause", "", 405, "takes POST", "POST"},
		{"POST the list", "POST", "/admin/migrations", "", 405, "takes GET, HEAD", "GET, HEAD"},
		{"DELETE a migration", "DELETE", "/admin/migrations/m1", "", 405, "takes GET, HEAD", "GET, HEAD"},
		{"unknown field", "POST", "/admin/migrations/m1/resume", `{"reasn": "x"}`, 400, `unknown field "reasn"`, ""},
		{"not JSON", "POST", "/admin/migrations/m1/resume", `reason=x`, 400, `want {"reason": "..."} or nothing`, ""},
		{"two objects", "POST", "/admin/migrations/m1/resume", `{} {}`, 400, "data after the JSON object", ""},
		{"newline in reason", "POST", "/admin/migrations/m1/resume", `{"reason": "a\nb"}`, 400, "control characters", ""},
		{"large body", "POST", "/admin/migrations/m1/resume", `{"reason": "` + strings.Repeat("x", admin.MaxBodyBytes) + `"}`, 413, "larger than 4096 bytes", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, routes := mustStatus(t, h.ctrl), h.routes.count()
			a := h.call(t, tc.method, tc.path, testToken, tc.body)
			if a.code != tc.code || !strings.Contains(a.errMsg(t), tc.want) {
				t.Errorf("got %d %q, want %d containing %q", a.code, a.errMsg(t), tc.code, tc.want)
			}
			if got := a.header.Get("Allow"); got != tc.allow {
				t.Errorf("Allow %q, want %q", got, tc.allow)
			}
			if after := mustStatus(t, h.ctrl); after.State != before.State || after.Stage != before.Stage || after.Last != before.Last || h.routes.count() != routes {
				t.Errorf("the migration changed: %+v -> %+v", before.Last, after.Last)
			}
		})
	}
}

func mustStatus(t *testing.T, c *migrate.Controller) migrate.Status {
	t.Helper()
	st, err := c.StatusOf("m1")
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestAuth: a request without the token, or with another, is refused with 401 and changes
// nothing.
func TestAuth(t *testing.T) {
	leaktest.Check(t)
	h := start(t, admin.Config{Listen: "127.0.0.1:0", TokenFile: writeToken(t, testToken)})
	for _, tc := range []struct {
		name, auth, want string
	}{
		{"none", "", "missing Authorization"},
		{"wrong token", "Bearer " + strings.Repeat("x", len(testToken)), "wrong token"},
		{"prefix of the token", "Bearer " + testToken[:len(testToken)-1], "wrong token"},
		{"token and more", "Bearer " + testToken + "0", "wrong token"},
		{"basic", "Basic " + testToken, "want Bearer TOKEN"},
		{"bare token", testToken, "want Bearer TOKEN"},
	} {
		for _, call := range []struct{ method, path string }{
			{"GET", "/admin/migrations"},
			{"GET", "/admin/migrations/m1"},
			{"POST", "/admin/migrations/m1/pause"},
			{"POST", "/admin/migrations/m1/rollback"},
			{"POST", "/admin/migrations/m1/advance"},
			{"GET", "/admin/migrations/m1/pause"}, // 401 before 405: nothing is told without the token
			{"GET", "/nowhere"},
		} {
			t.Run(tc.name+" "+call.method+" "+call.path, func(t *testing.T) {
				before, routes := mustStatus(t, h.ctrl), h.routes.count()
				a := h.call(t, call.method, call.path, "", `{"reason": "x"}`, func(r *http.Request) {
					if tc.auth != "" {
						r.Header.Set("Authorization", tc.auth)
					}
				})
				if a.code != http.StatusUnauthorized || !strings.Contains(a.errMsg(t), tc.want) {
					t.Errorf("got %d %s, want 401 containing %q", a.code, a.body, tc.want)
				}
				if got := a.header.Get("WWW-Authenticate"); got != `Bearer realm="novacron-sidecar admin"` {
					t.Errorf("WWW-Authenticate %q", got)
				}
				after := mustStatus(t, h.ctrl)
				if after.State != before.State || after.Stage != before.Stage || after.Last != before.Last {
					t.Errorf("the migration changed: %s stage %d -> %s stage %d", before.State, before.Stage, after.State, after.Stage)
				}
				if n := h.routes.count(); n != routes {
					t.Errorf("%d routes set", n-routes)
				}
			})
		}
	}
	if st := mustStatus(t, h.ctrl); st.State != migrate.StateRunning || st.Stage != 0 || st.Last.Kind != migrate.KindStart {
		t.Errorf("after the refused calls: %s stage %d, last %+v", st.State, st.Stage, st.Last)
	}
}

// TestHost: a Host that is not loopback (DNS rebinding) is refused with 403, token or not.
func TestHost(t *testing.T) {
	leaktest.Check(t)
	h := start(t, admin.Config{Listen: "127.0.0.1:0", TokenFile: writeToken(t, testToken)})
	for _, tc := range []struct {
		host string
		code int
	}{
		{"evil.example:9464", 403},
		{"evil.example", 403},
		{"10.0.0.7:9464", 403},
		{"localhost.evil.example", 403},
		{"localhost:9464", 200},
		{"LOCALHOST", 200},
		{"127.0.0.1:1", 200},
		{"[::1]:9464", 200},
	} {
		t.Run(tc.host, func(t *testing.T) {
			routes := h.routes.count()
			a := h.call(t, "POST", "/admin/migrations/m1/advance", testToken, "", func(r *http.Request) { r.Host = tc.host })
			if a.code != tc.code {
				t.Fatalf("got %d %s, want %d", a.code, a.body, tc.code)
			}
			if tc.code == 403 {
				if msg := a.errMsg(t); !strings.Contains(msg, "is not a loopback address") {
					t.Errorf("message %q", msg)
				}
				if h.routes.count() != routes {
					t.Error("a route was set")
				}
			}
		})
	}
}

func TestUnixSocket(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	t.Run("no token", func(t *testing.T) {
		sock := filepath.Join(dir, "a.sock")
		h := start(t, admin.Config{Listen: "unix:" + sock})
		fi, err := os.Stat(sock)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
			t.Errorf("socket mode %v, want a socket of 0600", fi.Mode())
		}
		if st := h.call(t, "POST", "/admin/migrations/m1/pause", "", "").status(t); st.State != migrate.StatePaused {
			t.Errorf("pause over the socket: %s", st.State)
		}
		if got := h.srv.Addr(); got != "unix:"+sock {
			t.Errorf("Addr %q", got)
		}
	})
	if _, err := os.Lstat(filepath.Join(dir, "a.sock")); !os.IsNotExist(err) {
		t.Errorf("the socket is still there after Shutdown: %v", err)
	}
	t.Run("token", func(t *testing.T) {
		h := start(t, admin.Config{Listen: "unix:" + filepath.Join(dir, "b.sock"), TokenFile: writeToken(t, testToken)})
		if a := h.call(t, "POST", "/admin/migrations/m1/pause", "", ""); a.code != http.StatusUnauthorized {
			t.Errorf("no token over the socket: %d %s", a.code, a.body)
		}
		if st := mustStatus(t, h.ctrl); st.State != migrate.StateRunning {
			t.Errorf("refused pause changed the state to %s", st.State)
		}
		if st := h.call(t, "POST", "/admin/migrations/m1/pause", testToken, "").status(t); st.State != migrate.StatePaused {
			t.Errorf("pause: %s", st.State)
		}
	})
	t.Run("stale socket", func(t *testing.T) {
		sock := filepath.Join(dir, "c.sock")
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		l.SetUnlinkOnClose(false)
		l.Close()
		h := start(t, admin.Config{Listen: "unix:" + sock})
		h.call(t, "GET", "/admin/migrations", "", "").status(t)
	})
	t.Run("not a socket", func(t *testing.T) {
		path := filepath.Join(dir, "d.sock")
		if err := os.WriteFile(path, []byte("keep me"), 0o644); err != nil {
			t.Fatal(err)
		}
		srv := newServer(t, admin.Config{Listen: "unix:" + path})
		if _, err := srv.Listen(); err == nil || !strings.Contains(err.Error(), "exists and is not a socket") {
			t.Errorf("Listen over a file: %v", err)
		}
		if b, _ := os.ReadFile(path); string(b) != "keep me" {
			t.Error("the file was changed")
		}
	})
	t.Run("live socket", func(t *testing.T) {
		sock := filepath.Join(dir, "e.sock")
		start(t, admin.Config{Listen: "unix:" + sock})
		srv := newServer(t, admin.Config{Listen: "unix:" + sock})
		if _, err := srv.Listen(); err == nil || !strings.Contains(err.Error(), "another process listens on") {
			t.Errorf("Listen over a live socket: %v", err)
		}
	})
	t.Run("no folder", func(t *testing.T) {
		srv := newServer(t, admin.Config{Listen: "unix:" + filepath.Join(dir, "none", "f.sock")})
		if _, err := srv.Listen(); err == nil || !strings.Contains(err.Error(), "does not exist: create it") {
			t.Errorf("Listen in a missing folder: %v", err)
		}
	})
}

func newServer(t *testing.T, cfg admin.Config) *admin.Server {
	t.Helper()
	ctrl, err := migrate.NewController(migrate.Config{}, &fakeRoutes{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := admin.New(cfg, ctrl, nil)
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// TestHandler: the handler alone, as a test of another package would use it.
func TestHandler(t *testing.T) {
	srv := newServer(t, admin.Config{Listen: "unix:/nonexistent/admin.sock"})
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "http://localhost/admin/migrations", nil))
	if rec.Code != 200 || strings.TrimSpace(rec.Body.String()) != `{"migrations":[]}` {
		t.Errorf("got %d %s", rec.Code, rec.Body)
	}
}

var _ migrate.RouteSetter = (*fakeRoutes)(nil)
