package admin

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/novacron/sidecar/proxy/migrate"
)

// MaxBodyBytes bounds the body of an action (its JSON {"reason": ...}).
const MaxBodyBytes = 4 << 10

// Realm is the realm of the WWW-Authenticate header of a 401.
const Realm = "novacron-sidecar admin"

// Timeouts of the admin HTTP server.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 16 << 10
)

// List is the body of GET /admin/migrations.
type List struct {
	Migrations []migrate.Status `json:"migrations"`
}

// Detail is the body of GET /admin/migrations/{name}: the migration's Status and its route's
// kept disagreements, newest first (empty, never null, when none).
type Detail struct {
	migrate.Status
	Disagreements []migrate.Sample `json:"disagreements"`
}

// ActionRequest is the optional body of POST /admin/migrations/{name}/{action}. Unknown fields
// are errors.
type ActionRequest struct {
	// Reason is recorded with the transition ("operator: REASON"); no control characters.
	// Empty: "via the admin API".
	Reason string `json:"reason"`
}

// ErrorBody is the body of every error answer.
type ErrorBody struct {
	Error string `json:"error"`
}

// Server is the admin API over a Controller. Its methods may be called concurrently; Serve runs
// until Shutdown.
type Server struct {
	network, address string // of Config.Listen, by SplitListen
	ctrl             *migrate.Controller
	rec              *migrate.Recorder
	// tokenSum is the SHA-256 of the token (compared in constant time, whatever the lengths);
	// hasToken is false when no token is configured (a unix socket without a token file).
	tokenSum [sha256.Size]byte
	hasToken bool
	handler  http.Handler
	http     *http.Server

	// mu guards addr.
	mu   sync.Mutex
	addr string // the bound (or served) listener's address, in Config.Listen's form; "" before Listen
}

// New makes a Server for cfg over ctrl, taking the disagreements from rec (nil: none are
// shown). It validates cfg and reads the token file; its errors name the field and say what to
// do. It listens on nothing: call Listen, then Serve.
func New(cfg Config, ctrl *migrate.Controller, rec *migrate.Recorder) (*Server, error) {
	if ctrl == nil {
		return nil, errors.New("admin: no migration controller")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	network, address, _ := SplitListen(cmp.Or(cfg.Listen, DefaultListen)) // Validate checked it
	s := &Server{network: network, address: address, ctrl: ctrl, rec: rec}
	if cfg.TokenFile != "" {
		tok, err := ReadToken(cfg.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("admin.token_file: %w", err)
		}
		s.tokenSum, s.hasToken = sha256.Sum256([]byte(tok)), true
	}
	s.handler = s.routes()
	s.http = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
	}
	return s, nil
}

// Handler is the API's handler, checks included (host, token): what Serve serves.
func (s *Server) Handler() http.Handler { return s.handler }

// Listen opens the configured address. A TCP listener must land on a loopback address. For a
// unix socket it removes a stale socket file left at the path (never another kind of file, nor
// a socket another process still listens on) and creates the socket with mode 0600; closing the
// listener (Shutdown) removes it. Its errors start with admin.listen.
func (s *Server) Listen() (net.Listener, error) {
	if s.network == "unix" {
		l, err := listenUnix(s.address)
		if err != nil {
			return nil, fmt.Errorf("admin.listen: %w", err)
		}
		return l, nil
	}
	l, err := net.Listen("tcp", s.address)
	if err != nil {
		return nil, fmt.Errorf("admin.listen: %w", err)
	}
	if ta, ok := l.Addr().(*net.TCPAddr); !ok || !ta.IP.IsLoopback() {
		l.Close()
		return nil, fmt.Errorf("admin.listen: %s resolved to %s, not a loopback address: use an IP address (%s)", s.address, l.Addr(), DefaultListen)
	}
	s.mu.Lock()
	s.addr = l.Addr().String() // the bound port, for port 0
	s.mu.Unlock()
	return l, nil
}

// listenUnix creates the socket at path, mode 0600, in place of a stale one.
func listenUnix(path string) (net.Listener, error) {
	fi, err := os.Lstat(path)
	switch {
	case err == nil && fi.Mode().Type() != os.ModeSocket:
		return nil, fmt.Errorf("%s exists and is not a socket (%s): remove it, or choose another path", path, fi.Mode().Type())
	case err == nil:
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("another process listens on %s (another sidecar?): stop it, or choose another path", path)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("removing the stale socket: %w", err)
		}
	case !errors.Is(err, os.ErrNotExist):
		return nil, err
	}
	if fi, err := os.Stat(filepath.Dir(path)); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("the folder of %s does not exist: create it, owned by the sidecar's user (mode 0700 or 0750)", path)
	}
	l, err := listenPrivate(path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// Serve answers the API on l until Shutdown (then it returns nil) or l fails. A Server serves
// one listener at a time.
func (s *Server) Serve(l net.Listener) error {
	addr := l.Addr().String()
	if l.Addr().Network() == "unix" {
		addr = "unix:" + addr
	}
	s.mu.Lock()
	s.addr = addr
	s.mu.Unlock()
	if err := s.http.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Addr is the address being served, in Config.Listen's form ("127.0.0.1:40123", with the port
// picked for port 0, or "unix:/path"); before Serve, the configured address.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.addr != "" {
		return s.addr
	}
	if s.network == "unix" {
		return "unix:" + s.address
	}
	return s.address
}

// Shutdown stops accepting, closes the listener (removing a unix socket) and waits for the
// requests in flight until ctx ends, then closes their connections and returns ctx's error.
// Serve returns once Shutdown starts.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	if err != nil {
		s.http.Close()
	}
	return err
}

// routes builds the handler: the checks every request passes, then the API's routes.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/migrations", s.list)
	mux.HandleFunc("/admin/migrations", methodNotAllowed("GET, HEAD"))
	mux.HandleFunc("GET /admin/migrations/{name}", s.detail)
	mux.HandleFunc("/admin/migrations/{name}", methodNotAllowed("GET, HEAD"))
	for action, do := range map[string]func(name, why string) error{
		"pause": s.ctrl.Pause, "resume": s.ctrl.Resume, "advance": s.ctrl.Advance, "rollback": s.ctrl.Rollback,
	} {
		mux.HandleFunc("POST /admin/migrations/{name}/"+action, s.action(do))
		mux.HandleFunc("/admin/migrations/{name}/"+action, methodNotAllowed("POST"))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("path %s: no such route (routes: GET /admin/migrations, GET /admin/migrations/NAME, POST /admin/migrations/NAME/pause|resume|advance|rollback)", clip(r.URL.Path)))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		if err := checkHost(r.Host); err != nil {
			writeError(w, http.StatusForbidden, err.Error())
			return
		}
		if msg := s.checkToken(r); msg != "" {
			h.Set("WWW-Authenticate", `Bearer realm="`+Realm+`"`)
			writeError(w, http.StatusUnauthorized, msg)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// checkHost refuses a Host header naming anything but localhost or a loopback IP address (the
// listener is loopback only): a web page that reaches the port through a DNS name it controls
// (DNS rebinding) names its own host. A missing Host (HTTP/1.0) passes.
func checkHost(hostport string) error {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if host == "" || IsLoopbackHost(host) {
		return nil
	}
	return fmt.Errorf("Host: %s is not a loopback address: call the admin API as localhost, 127.0.0.1 or [::1]", clip(hostport))
}

// checkToken returns why r is not authorized, or "" when it is.
func (s *Server) checkToken(r *http.Request) string {
	if !s.hasToken {
		return ""
	}
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return "missing Authorization: Bearer TOKEN, with the token of the file named by admin.token_file"
	}
	scheme, tok, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "Authorization: want Bearer TOKEN, with the token of the file named by admin.token_file"
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	if subtle.ConstantTimeCompare(sum[:], s.tokenSum[:]) != 1 {
		return "wrong token: use the token of the file named by admin.token_file"
	}
	return ""
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, List{Migrations: s.ctrl.Status()})
}

func (s *Server) detail(w http.ResponseWriter, r *http.Request) {
	st, err := s.ctrl.StatusOf(r.PathValue("name"))
	if err != nil {
		writeActionError(w, err)
		return
	}
	d := Detail{Status: st, Disagreements: []migrate.Sample{}}
	if s.rec != nil {
		d.Disagreements = append(d.Disagreements, s.rec.Samples(st.Route)...)
	}
	writeJSON(w, http.StatusOK, d)
}

// action answers a POST that runs do on the named migration, with the new Status.
func (s *Server) action(do func(name, why string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		req, code, err := readAction(w, r)
		if err != nil {
			writeError(w, code, err.Error())
			return
		}
		if err := do(name, cmp.Or(req.Reason, "via the admin API")); err != nil {
			writeActionError(w, err)
			return
		}
		st, err := s.ctrl.StatusOf(name)
		if err != nil {
			writeActionError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, st)
	}
}

// readAction reads an action's optional body, with the status of its error.
func readAction(w http.ResponseWriter, r *http.Request) (ActionRequest, int, error) {
	var req ActionRequest
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			return req, http.StatusRequestEntityTooLarge, fmt.Errorf("body: larger than %d bytes; it holds {\"reason\": \"...\"} alone", MaxBodyBytes)
		}
		return req, http.StatusBadRequest, fmt.Errorf("body: %w", err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return req, 0, nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, http.StatusBadRequest, fmt.Errorf(`body: %v: want {"reason": "..."} or nothing`, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return req, http.StatusBadRequest, errors.New(`body: data after the JSON object: want {"reason": "..."} or nothing`)
	}
	if strings.ContainsFunc(req.Reason, unicode.IsControl) {
		return req, http.StatusBadRequest, errors.New("reason: control characters (newlines, tabs) are not allowed: it goes to logs and the state file on one line")
	}
	return req, 0, nil
}

// writeActionError answers a Controller's error: 404 for an unknown migration, 409 for an
// action its state refuses, else 500 (a route the Service refused, a state file not written).
func writeActionError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, migrate.ErrNoMigration):
		code = http.StatusNotFound
	case errors.Is(err, migrate.ErrState):
		code = http.StatusConflict
	}
	writeError(w, code, err.Error())
}

func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s: %s takes %s", clip(r.Method), clip(r.URL.Path), allow))
	}
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, ErrorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		b, _ = json.Marshal(ErrorBody{Error: "encoding the answer: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// clip bounds a client's string quoted in an error.
func clip(s string) string {
	const n = 128
	if len(s) > n {
		return fmt.Sprintf("%q...", s[:n])
	}
	return fmt.Sprintf("%q", s)
}
