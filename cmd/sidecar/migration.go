package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/novacron/sidecar/proxy/admin"
	"github.com/novacron/sidecar/proxy/migrate"
)

const migrationUsage = `usage: sidecar migration <command> [flags] [NAME]

Shows and steers the traffic migrations of a running sidecar, through its admin API (admin.listen).

commands:
  status [NAME]    every migration, as a table; with NAME, that one and its kept disagreements
  pause NAME       hold a running migration at its stage (a failing gate still rolls it back)
  resume NAME      set a paused or rolled-back migration running again
  advance NAME     move a migration to its next stage now, whatever its gates say
  rollback NAME    move a migration back one stage and hold it there until resumed

Flags go after the command, before or after NAME; "sidecar migration status -h" lists them.
`

// tokenFileEnv names the environment variable -token-file defaults to.
const tokenFileEnv = "SIDECAR_ADMIN_TOKEN_FILE"

// Bounds of the admin API's answer as this command reads it.
const (
	maxAdminAnswer = 8 << 20
	// sampleCut is how much of each message of a disagreement the table form prints.
	sampleCut = 300
)

func migrationCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, migrationUsage)
		return 2
	}
	verb := args[0]
	switch verb {
	case "status", "pause", "resume", "advance", "rollback":
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, migrationUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "sidecar migration: unknown command %q\n\n%s", verb, migrationUsage)
		return 2
	}
	prefix := "sidecar migration " + verb + ":"
	fs := flag.NewFlagSet("migration "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		arg := "NAME"
		if verb == "status" {
			arg = "[NAME]"
		}
		fmt.Fprintf(fs.Output(), "usage: sidecar migration %s [flags] %s\n\nflags:\n", verb, arg)
		fs.PrintDefaults()
	}
	addr := fs.String("admin", admin.DefaultListen, "the sidecar's admin address (its admin.listen): a loopback host:port, or unix:/path/to/socket")
	tokenFile := fs.String("token-file", "", "file holding the admin API's token (the file named by admin.token_file); default $"+tokenFileEnv)
	asJSON := fs.Bool("json", false, "print the admin API's JSON answer, indented, instead of a table")
	reason := fs.String("reason", "", "why (pause, resume, advance, rollback): recorded with the transition and logged by the sidecar")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the sidecar's answer")
	// Flags may follow NAME too: parse again after each word that is not a flag.
	var names []string
	for rest := args[1:]; ; {
		if err := fs.Parse(rest); err != nil {
			return flagExit(err)
		}
		if rest = fs.Args(); len(rest) == 0 {
			break
		}
		names, rest = append(names, rest[0]), rest[1:]
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintln(stderr, prefix, fmt.Sprintf(format, a...))
		return 2
	}
	switch {
	case verb == "status" && len(names) > 1:
		return usageErr("want at most one migration NAME, got %d: %q", len(names), names)
	case verb != "status" && len(names) != 1:
		return usageErr("want one migration NAME, got %d (sidecar migration status lists them)", len(names))
	case verb == "status" && *reason != "":
		return usageErr("-reason is for pause, resume, advance and rollback")
	case *timeout <= 0:
		return usageErr("-timeout %v: want a positive duration", *timeout)
	}
	network, address, err := admin.SplitListen(*addr)
	if err != nil {
		return usageErr("-admin: %v", err)
	}
	if *tokenFile == "" {
		*tokenFile = os.Getenv(tokenFileEnv)
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, prefix, err)
		return 1
	}
	var token string
	if *tokenFile != "" {
		if token, err = admin.ReadToken(*tokenFile); err != nil {
			return fail(fmt.Errorf("-token-file: %w", err))
		}
	} else if network == "tcp" {
		return usageErr("-token-file is required for a TCP admin address (%s): pass the file named by admin.token_file in the sidecar's config, or set %s", *addr, tokenFileEnv)
	}

	c := newAdminClient(*addr, network, address, token)
	defer c.close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	path := "/admin/migrations"
	var body []byte
	if len(names) == 1 {
		path += "/" + url.PathEscape(names[0])
	}
	method := http.MethodGet
	if verb != "status" {
		method, path = http.MethodPost, path+"/"+verb
		body, _ = json.Marshal(admin.ActionRequest{Reason: *reason})
	}
	raw, err := c.call(ctx, method, path, body, *timeout)
	if err != nil {
		return fail(err)
	}
	if *asJSON {
		var b bytes.Buffer
		if err := json.Indent(&b, raw, "", "  "); err != nil {
			return fail(fmt.Errorf("the admin API's answer is not JSON: %w", err))
		}
		b.WriteByte('\n')
		stdout.Write(b.Bytes())
		return 0
	}
	switch {
	case verb == "status" && len(names) == 0:
		var list admin.List
		if err := json.Unmarshal(raw, &list); err != nil {
			return fail(fmt.Errorf("the admin API's answer: %w", err))
		}
		if len(list.Migrations) == 0 {
			fmt.Fprintln(stdout, "no migrations: the sidecar's config (migrations:) names none")
			return 0
		}
		err = migrate.WriteTable(stdout, list.Migrations)
	case verb == "status":
		var d admin.Detail
		if err := json.Unmarshal(raw, &d); err != nil {
			return fail(fmt.Errorf("the admin API's answer: %w", err))
		}
		if err = migrate.WriteTable(stdout, []migrate.Status{d.Status}); err == nil {
			err = writeDisagreements(stdout, d.Route, d.Disagreements)
		}
	default:
		var st migrate.Status
		if err := json.Unmarshal(raw, &st); err != nil {
			return fail(fmt.Errorf("the admin API's answer: %w", err))
		}
		err = migrate.WriteTable(stdout, []migrate.Status{st})
	}
	if err != nil {
		return fail(err)
	}
	return 0
}

// writeDisagreements prints a route's kept disagreements, newest first, each message cut to
// sampleCut bytes.
func writeDisagreements(w io.Writer, route string, samples []migrate.Sample) error {
	if len(samples) == 0 {
		_, err := fmt.Fprintf(w, "\nno disagreements kept for route %s\n", route)
		return err
	}
	var b strings.Builder
	noun := "disagreements"
	if len(samples) == 1 {
		noun = "disagreement"
	}
	fmt.Fprintf(&b, "\n%d %s kept for route %s, newest first (-json prints them whole):\n", len(samples), noun, route)
	for _, s := range samples {
		fmt.Fprintf(&b, "\n  %s  %s (baseline) vs %s (candidate): %s\n", s.At.Format(time.RFC3339), s.BaselineName, s.CandidateName, strings.Join(s.Fields, ", "))
		fmt.Fprintf(&b, "    detail:     %s\n", s.Detail)
		fmt.Fprintf(&b, "    request:    %s\n", cutJSON(s.Request))
		fmt.Fprintf(&b, "    baseline:   %s\n", cutJSON(s.BaselineAnswer))
		fmt.Fprintf(&b, "    candidate:  %s\n", cutJSON(s.CandidateAnswer))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// cutJSON is a message on one line, cut to sampleCut bytes (at a character's boundary).
func cutJSON(m json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, m); err != nil {
		b.Reset()
		b.Write(m)
	}
	s := b.String()
	if len(s) <= sampleCut {
		return s
	}
	cut := sampleCut
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (%d bytes)", s[:cut], len(s))
}

// adminClient calls a sidecar's admin API, one request at a time.
type adminClient struct {
	addr  string // as the user gave it, for messages
	unix  bool
	base  string // http://host:port, or http://localhost for a unix socket
	token string // "" sends none
	tr    *http.Transport
	http  *http.Client
}

func newAdminClient(addr, network, address, token string) *adminClient {
	// No proxy: the token goes to the sidecar's loopback address or socket alone.
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	c := &adminClient{addr: addr, token: token, tr: tr, base: "http://" + address}
	if network == "unix" {
		c.unix, c.base = true, "http://localhost"
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", address)
		}
	}
	c.http = &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return c
}

func (c *adminClient) close() { c.tr.CloseIdleConnections() }

// call sends one request and returns the body of a 200 answer; its errors say what to do.
func (c *adminClient) call(ctx context.Context, method, path string, body []byte, timeout time.Duration) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.dialError(err, timeout)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAdminAnswer))
	if err != nil {
		return nil, c.dialError(err, timeout)
	}
	if resp.StatusCode == http.StatusOK && json.Valid(raw) {
		return raw, nil
	}
	var e admin.ErrorBody
	if json.Unmarshal(raw, &e) != nil || e.Error == "" {
		return nil, fmt.Errorf("%s answered %s, not as the admin API does: is -admin the sidecar's admin.listen address, not a data port?", c.addr, resp.Status)
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		if c.token == "" {
			return nil, fmt.Errorf("the admin API wants a token: pass -token-file with the file named by admin.token_file (or set %s)", tokenFileEnv)
		}
		return nil, errors.New("the admin API refused the token: pass -token-file with the file named by admin.token_file")
	case http.StatusNotFound:
		if strings.Contains(e.Error, migrate.ErrNoMigration.Error()) {
			return nil, fmt.Errorf("%s (sidecar migration status lists them)", e.Error)
		}
	case http.StatusConflict:
		return nil, fmt.Errorf("%s (sidecar migration status NAME shows why)", e.Error)
	}
	return nil, fmt.Errorf("the admin API answered %s: %s", resp.Status, e.Error)
}

// dialError says what a transport error means for the user.
func (c *adminClient) dialError(err error, timeout time.Duration) error {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), c.unix && errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("nothing listens on %s: is admin.listen set in the sidecar's config, and the sidecar running?", c.addr)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("%s: permission denied: run this as the sidecar's user (its admin socket is mode 0600)", c.addr)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s did not answer within %v: is it the sidecar's admin address? (-timeout waits longer)", c.addr, timeout)
	}
	return fmt.Errorf("calling the admin API at %s: %w", c.addr, err)
}
