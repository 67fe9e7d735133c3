package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/novacron/sidecar/features/drift"
	"github.com/novacron/sidecar/proxy"
)

const driftUsage = `usage: sidecar drift <command> [flags]

commands:
  merge    merge the drift sketches of many nodes (URLs or files) and print the fleet's drift table

  sidecar drift merge [-json] [-timeout 10s] [-model NAME] SOURCE...

A SOURCE is a node's sketch route, http://HOST:PORT/v1/drift/sketches?model=NAME on its
listen.http address (with -model NAME, http://HOST:PORT is enough), or a file saved from one:
FILE.json as the route answers by default, FILE.pb as it answers to
Accept: application/x-protobuf. Merging is exact: the table is what one node that saw every
node's rows would report.
`

// driftFetchers bounds the nodes fetched at once.
const driftFetchers = 16

func driftCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return subcommand("drift", driftUsage, args, stdout, stderr, map[string]func([]string) int{
		"merge": func(a []string) int { return driftMergeCmd(ctx, a, stdout, stderr) },
	})
}

func driftMergeCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	const prefix = "sidecar drift merge:"
	fs := flag.NewFlagSet("drift merge", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: sidecar drift merge [-json] [-timeout 10s] [-model NAME] SOURCE...\n\n"+
			"SOURCE: http://HOST:PORT/v1/drift/sketches?model=NAME, or a FILE.json or FILE.pb saved from it\n\nflags:")
		fs.PrintDefaults()
	}
	asJSON := fs.Bool("json", false, "print the merged windows' reports as JSON instead of a table")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for each node's answer")
	model := fs.String("model", "", "the model, for URLs that do not name it (http://HOST:PORT)")
	sources, err := parseInterleaved(fs, args)
	if err != nil {
		return flagExit(err)
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintln(stderr, prefix, fmt.Sprintf(format, a...))
		return 2
	}
	switch {
	case len(sources) == 0:
		fs.Usage()
		return usageErr("give one SOURCE or more: each node's http://HOST:PORT/v1/drift/sketches?model=NAME, or files saved from it")
	case *timeout <= 0:
		return usageErr("-timeout %v: want a positive duration", *timeout)
	}
	targets := make([]string, len(sources))
	for i, src := range sources {
		if !isURL(src) {
			targets[i] = src
			continue
		}
		if targets[i], err = sketchURL(src, *model); err != nil {
			return usageErr("%v", err)
		}
	}

	snaps := make([]*drift.Snapshot, len(sources))
	errs := make([]error, len(sources))
	client := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone(),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer client.CloseIdleConnections()
	var wg sync.WaitGroup
	work := make(chan int)
	for range min(driftFetchers, len(sources)) {
		wg.Go(func() {
			for i := range work {
				if isURL(targets[i]) {
					snaps[i], errs[i] = fetchSnapshot(ctx, client, sources[i], targets[i], *timeout)
				} else {
					snaps[i], errs[i] = readSnapshot(sources[i])
				}
				if snaps[i] != nil {
					snaps[i].Source = sources[i]
				}
			}
		})
	}
	for i := range sources {
		work <- i
	}
	close(work)
	wg.Wait()
	failed := 0
	for _, err := range errs {
		if err != nil {
			fmt.Fprintln(stderr, prefix, err)
			failed++
		}
	}
	if failed > 0 {
		if len(sources) > 1 {
			fmt.Fprintf(stderr, "%s %d of %d sources failed: nothing merged (a fleet table without them would mislead); fix them, or leave them out\n", prefix, failed, len(sources))
		}
		return 1
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, prefix, strings.TrimPrefix(err.Error(), "drift: "))
		return 1
	}
	merged, err := drift.Merge(snaps)
	if err != nil {
		return fail(err)
	}
	reports, err := drift.ScoreSnapshot(merged, drift.Config{})
	if err != nil {
		return fail(err)
	}
	if *asJSON {
		err = writeDriftJSON(stdout, merged, sources, reports)
	} else {
		err = writeDriftTable(stdout, merged, len(sources), reports, time.Now())
	}
	if err != nil {
		return fail(err)
	}
	return 0
}

func isURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// sketchURL completes a node's URL: the sketch route's path when it has none, the model when it
// names none.
func sketchURL(src, model string) (string, error) {
	u, err := url.Parse(src)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("%s is not a URL such as http://HOST:PORT%s?model=NAME", src, proxy.DriftSketchesPath)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = proxy.DriftSketchesPath
	}
	q := u.Query()
	switch named := q.Get("model"); {
	case named == "" && model == "":
		return "", fmt.Errorf("%s names no model: add ?model=NAME, or give -model NAME", src)
	case named == "":
		q.Set("model", model)
		u.RawQuery = q.Encode()
	case model != "" && named != model:
		return "", fmt.Errorf("%s names model %q, -model %q: give one", src, named, model)
	}
	return u.String(), nil
}

// fetchSnapshot reads a node's snapshot from its sketch route, in protobuf.
func fetchSnapshot(ctx context.Context, client *http.Client, src, target string, timeout time.Duration) (*drift.Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", src, err)
	}
	req.Header.Set("Accept", proxy.ProtobufContentType)
	resp, err := client.Do(req)
	if err != nil {
		return nil, fetchError(src, req.URL.Host, err, timeout)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, drift.MaxSnapshotBytes+1))
	if err != nil {
		return nil, fetchError(src, req.URL.Host, err, timeout)
	}
	if len(body) > drift.MaxSnapshotBytes {
		return nil, fmt.Errorf("%s: the answer is larger than %d bytes", src, drift.MaxSnapshotBytes)
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if mt != "application/json" || json.Unmarshal(body, &e) != nil || e.Error.Message == "" {
			return nil, fmt.Errorf("%s answered %s, not as a sidecar does: is %s a sidecar's listen.http address?", src, resp.Status, req.URL.Host)
		}
		switch {
		case resp.StatusCode == http.StatusNotFound && strings.Contains(e.Error.Message, "no such route"):
			return nil, fmt.Errorf("%s: the sidecar at %s serves no %s: is it a version that serves drift sketches, and is %s its listen.http address (not its gRPC or admin port)?",
				src, req.URL.Host, proxy.DriftSketchesPath, req.URL.Host)
		case resp.StatusCode == http.StatusNotFound:
			return nil, fmt.Errorf("%s: %s: ask for one of those models (?model=NAME)", src, e.Error.Message)
		}
		return nil, fmt.Errorf("%s answered %s: %s", src, resp.Status, e.Error.Message)
	}
	var s *drift.Snapshot
	switch mt {
	case proxy.ProtobufContentType:
		s, err = drift.UnmarshalSnapshotProto(body)
	case "application/json":
		s, err = drift.UnmarshalSnapshotJSON(body)
	default:
		return nil, fmt.Errorf("%s answered with Content-Type %q, not a drift snapshot: is %s a sidecar's listen.http address?", src, resp.Header.Get("Content-Type"), req.URL.Host)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	return s, nil
}

// fetchError says what a transport error means for the user.
func fetchError(src, host string, err error, timeout time.Duration) error {
	var dns *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%s: nothing listens on %s: is the sidecar running on that node, and is that port its listen.http?", src, host)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %s did not answer within %v: is the node up and reachable from here? (-timeout waits longer)", src, host, timeout)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%s: interrupted", src)
	case errors.As(err, &dns):
		return fmt.Errorf("%s: cannot resolve %s: %v: check the node's name", src, dns.Name, dns.Err)
	}
	return fmt.Errorf("%s: %v", src, err)
}

// readSnapshot reads a snapshot file: .json or .pb, as the sketch route answers; another name
// by its first byte.
func readSnapshot(path string) (*drift.Snapshot, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("cannot read %s: it does not exist (a SOURCE is a file saved from a node's %s, or the http:// URL of one)", path, proxy.DriftSketchesPath)
		}
		return nil, inputError(path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, drift.MaxSnapshotBytes+1))
	if err != nil {
		return nil, inputError(path, err)
	}
	if len(b) > drift.MaxSnapshotBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes: not a drift snapshot", path, drift.MaxSnapshotBytes)
	}
	var s *drift.Snapshot
	switch ext := strings.ToLower(filepath.Ext(path)); {
	case ext == ".json", ext != ".pb" && bytes.HasPrefix(bytes.TrimLeft(b, " \t\r\n"), []byte("{")):
		s, err = drift.UnmarshalSnapshotJSON(b)
	default:
		s, err = drift.UnmarshalSnapshotProto(b)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w (is it saved from a node's %s: JSON, or protobuf with Accept: %s?)", path, err, proxy.DriftSketchesPath, proxy.ProtobufContentType)
	}
	return s, nil
}

// writeDriftTable prints the merged windows, newest first: a line per window with its verdict,
// then a line per feature.
func writeDriftTable(w io.Writer, s *drift.Snapshot, sources int, reports []drift.WindowReport, now time.Time) error {
	var b strings.Builder
	fmt.Fprintf(&b, "model %s: spec %s %.12s; %s merged, %s\n", s.Model, s.Spec, s.Fingerprint, plural(sources, "source"), plural(len(reports), "window"))
	fmt.Fprintf(&b, "scoring: %s\n", s.Scoring)
	if len(reports) == 0 {
		b.WriteString("\nno windows: the nodes have seen no rows of this model yet\n")
	}
	nameW := len("feature")
	for _, r := range s.Profile.Features {
		nameW = max(nameW, len(r.Name))
	}
	for _, r := range s.Profile.Outputs {
		nameW = max(nameW, len(r.Name))
	}
	for _, r := range reports {
		span := r.End.Sub(r.Start).String()
		if strings.HasSuffix(span, "m0s") {
			span = strings.TrimSuffix(span, "0s")
		}
		current := ""
		if now.Before(r.End) {
			current = " (current, still filling)"
		}
		fmt.Fprintf(&b, "\nwindow %s +%s%s: %d rows, %s\n", r.Start.UTC().Format(time.RFC3339), span, current, r.Rows, verdict(r, s.Scoring))
		head := func(what string) {
			fmt.Fprintf(&b, "  %-*s  %8s  %8s  %8s  %8s  %11s  %-11s  %9s  %s\n", nameW, what, "rows", "missing", "psi", "js", "wasserstein", "method", "threshold", "drifted")
		}
		line := func(f drift.FeatureScore) {
			drifted := "no"
			switch {
			case !r.Verdict:
				drifted = "-"
			case f.Drifted:
				drifted = "YES"
			}
			missing := "0"
			if f.Missing > 0 {
				missing = strconv.FormatFloat(100*f.MissingRate, 'f', 1, 64) + "%"
			}
			fmt.Fprintf(&b, "  %-*s  %8d  %8s  %8s  %8s  %11s  %-11s  %9s  %s\n", nameW, f.Name, f.Rows, missing, score(f.PSI), score(f.JS), score(f.Wasserstein),
				f.Method, strconv.FormatFloat(f.Threshold, 'g', -1, 64), drifted)
		}
		head("feature")
		for _, f := range r.Features {
			line(f)
		}
		if len(r.Outputs) > 0 { // prediction drift: reported, not counted in the verdict
			head("output")
			for _, f := range r.Outputs {
				line(f)
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// verdict is a window's verdict in words.
func verdict(r drift.WindowReport, sc drift.Scoring) string {
	n := len(r.Features)
	pct := func(v float64) string { return strconv.FormatFloat(100*v, 'f', 0, 64) + "%" }
	switch {
	case !r.Verdict:
		return fmt.Sprintf("no verdict (fewer than min_samples %d rows)", sc.MinSamples)
	case r.ModelDrifted:
		return fmt.Sprintf("MODEL DRIFTED: %d of %d features drifted (%s, over the share %s)", r.Drifted, n, pct(r.Share), pct(sc.Share))
	case r.Drifted > 0:
		return fmt.Sprintf("model not drifted: %d of %d features drifted (%s, not over the share %s)", r.Drifted, n, pct(r.Share), pct(sc.Share))
	}
	return fmt.Sprintf("no drift: none of %d features drifted", n)
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func score(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 4, 64)
}

// writeDriftJSON prints the merged reports, newest first, with what they are of.
func writeDriftJSON(w io.Writer, s *drift.Snapshot, sources []string, reports []drift.WindowReport) error {
	// A score that is not a number (a column with no finite value in a window) is null.
	out := struct {
		Model       string               `json:"model"`
		Spec        string               `json:"spec"`
		Fingerprint string               `json:"spec_fingerprint"`
		Sources     []string             `json:"sources"`
		Scoring     drift.Scoring        `json:"scoring"`
		Windows     []drift.WindowReport `json:"windows"`
	}{Model: s.Model, Spec: s.Spec, Fingerprint: s.Fingerprint, Sources: sources, Scoring: s.Scoring, Windows: reports}
	if out.Windows == nil {
		out.Windows = []drift.WindowReport{}
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
