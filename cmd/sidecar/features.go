package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/novacron/sidecar/features"
)

const featuresUsage = `usage: sidecar features <command> [flags]

commands:
  transform      turn a raw CSV or Parquet file into a model's input matrix (the training matrix)
  fingerprint    print a feature spec's SHA-256 fingerprint
  golden         check (or -write) a spec's golden vectors file

Run "sidecar features <command> -h" for a command's flags.
`

func featuresCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return subcommand("features", featuresUsage, args, stdout, stderr, map[string]func([]string) int{
		"transform":   func(a []string) int { return transformCmd(ctx, a, stdout, stderr) },
		"fingerprint": func(a []string) int { return fingerprintCmd(a, stdout, stderr) },
		"golden":      func(a []string) int { return goldenCmd(a, stdout, stderr) },
	})
}

func fingerprintCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("features fingerprint", flag.ContinueOnError)
	fs.SetOutput(stderr)
	specPath := fs.String("spec", "", "feature spec YAML file (required)")
	canonical := fs.Bool("canonical", false, "also print the canonical form the fingerprint is taken of")
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	if *specPath == "" {
		fmt.Fprintln(stderr, "sidecar features fingerprint: -spec is required")
		return 2
	}
	spec, err := features.LoadFile(*specPath)
	if err != nil {
		fmt.Fprintln(stderr, "sidecar features fingerprint:", err)
		return 1
	}
	fmt.Fprintln(stdout, spec.Fingerprint())
	if *canonical {
		fmt.Fprintln(stdout, string(spec.Canonical()))
	}
	return 0
}

// Meta is written beside a transform's output as OUT.meta.json; training reads the fingerprint
// from it and stamps it into the model.
type Meta struct {
	Spec        string         `json:"spec"`
	Fingerprint string         `json:"fingerprint"`
	Columns     []string       `json:"columns"`
	Rows        int            `json:"rows"`
	InputRows   int            `json:"input_rows"`
	Window      int            `json:"window"`
	Features    []string       `json:"features"`
	Skipped     map[string]int `json:"skipped"`
}

func transformCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("features transform", flag.ContinueOnError)
	fs.SetOutput(stderr)
	specPath := fs.String("spec", "", "feature spec YAML file (required)")
	inPath := fs.String("in", "", "raw input, CSV or .parquet (required)")
	outPath := fs.String("out", "", "output matrix, CSV or .parquet (required); OUT.meta.json is written beside it")
	quiet := fs.Bool("quiet", false, "no progress bar")
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	if *specPath == "" || *inPath == "" || *outPath == "" {
		fmt.Fprintln(stderr, "sidecar features transform: -spec, -in and -out are required")
		fs.Usage()
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "sidecar features transform:", err)
		return 1
	}
	spec, err := features.LoadFile(*specPath)
	if err != nil {
		return fail(err)
	}
	info, err := os.Stat(*inPath)
	if err != nil {
		return fail(err)
	}
	metaPath := *outPath + ".meta.json"
	// Fail now, not after the transform, when the outputs cannot be written where asked.
	for _, p := range []string{*outPath, metaPath} {
		if err := checkOutput(p); err != nil {
			return fail(err)
		}
	}
	// The output's extension decides its format, so the temporary file keeps it. Errors name the
	// output the user asked for, never this file.
	tmp := filepath.Join(filepath.Dir(*outPath), ".tmp-"+filepath.Base(*outPath))
	defer os.Remove(tmp)

	stats, err := withProgress(ctx, stderr, "transform "+spec.Name, *inPath, info.Size(), *quiet, func(opt features.TransformOptions) (features.TransformStats, error) {
		return spec.TransformFile(*inPath, tmp, opt)
	})
	if err != nil {
		return fail(outputErrorOf(*outPath, tmp, err))
	}
	if err := os.Rename(tmp, *outPath); err != nil {
		return fail(outputError(*outPath, err))
	}
	meta := Meta{Spec: spec.Name, Fingerprint: spec.Fingerprint(), Columns: stats.Columns, Rows: stats.OutputRows,
		InputRows: stats.InputRows, Window: spec.Steps(), Features: spec.FeatureNames(), Skipped: stats.Skipped}
	mb, _ := json.MarshalIndent(meta, "", "  ")
	if err := os.WriteFile(metaPath, append(mb, '\n'), 0o644); err != nil {
		return fail(outputError(metaPath, err))
	}
	fmt.Fprintf(stdout, "%-12s %s\n%-12s %d\n%-12s %d\n%-12s %s\n", "spec", spec.Name, "input rows", stats.InputRows,
		"output rows", stats.OutputRows, "fingerprint", meta.Fingerprint)
	if len(stats.Skipped) > 0 {
		reasons := make([]string, 0, len(stats.Skipped))
		for r := range stats.Skipped {
			reasons = append(reasons, r)
		}
		sort.Strings(reasons)
		fmt.Fprintln(stdout, "skipped (missing values refused by the spec's policy):")
		for _, r := range reasons {
			fmt.Fprintf(stdout, "  %8d  %s\n", stats.Skipped[r], r)
		}
	}
	fmt.Fprintf(stdout, "%-12s %s (+ .meta.json)\n", "wrote", *outPath)
	return 0
}

var errInterrupted = fmt.Errorf("interrupted")

// withProgress runs a read of the raw file inPath (size bytes) through the spec (run: a transform,
// or the rows of a profile) with a progress bar labelled label on w unless quiet, and stops it
// with errInterrupted when ctx ends.
func withProgress(ctx context.Context, w io.Writer, label, inPath string, size int64, quiet bool,
	run func(features.TransformOptions) (features.TransformStats, error)) (features.TransformStats, error) {
	cr := &countingReader{}
	var bar *progressBar
	if !quiet {
		bar = newProgressBar(w, label, size)
	}
	opt := features.TransformOptions{ProgressEvery: 8192, Input: func(r io.Reader) io.Reader { cr.r = r; return cr }}
	// A Parquet input is read by row groups, not as a byte stream: its bar counts rows against the
	// file's row count.
	byRows := int64(0)
	if features.IsParquet(inPath) && bar != nil {
		if n, err := features.ParquetRows(inPath); err == nil {
			byRows = n
			bar.total, bar.unit, bar.enabled = n, "rows", n >= 100000
		}
	}
	progress := func(rows int) int64 {
		if byRows > 0 {
			return int64(rows)
		}
		return cr.n.Load()
	}
	opt.Progress = func(rows int) {
		if ctx.Err() != nil {
			panic(errInterrupted)
		}
		if bar != nil {
			bar.update(progress(rows), rows)
		}
	}
	stats, err := transformGuarded(func() (features.TransformStats, error) { return run(opt) })
	if bar != nil {
		bar.done(progress(stats.InputRows), stats.InputRows)
	}
	return stats, err
}

// transformGuarded runs the transform, turning an interrupt raised from the progress callback into
// an error.
func transformGuarded(run func() (features.TransformStats, error)) (st features.TransformStats, err error) {
	defer func() {
		if r := recover(); r != nil {
			if r != errInterrupted {
				panic(r)
			}
			err = errInterrupted
		}
	}()
	return run()
}

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// progressBar draws "label [=====>    ]  45%  12.3/27.0 MB  1.2M rows  3.1s" on a terminal, and a
// plain line every 10% elsewhere. Files under 4 MB get no bar.
type progressBar struct {
	w        io.Writer
	label    string
	total    int64
	start    time.Time
	last     time.Time
	tty      bool
	lastTick int64
	enabled  bool
	// unit is "" for bytes (shown in MB), or "rows" when total counts rows.
	unit string
}

func newProgressBar(w io.Writer, label string, total int64) *progressBar {
	tty := false
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progressBar{w: w, label: label, total: total, start: time.Now(), tty: tty, enabled: total >= 4<<20}
}

func (p *progressBar) line(read int64, rows int) string {
	frac := 1.0
	if p.total > 0 {
		frac = min(float64(read)/float64(p.total), 1)
	}
	const width = 30
	fill := int(frac * width)
	bar := strings.Repeat("=", fill)
	if fill < width {
		bar += ">" + strings.Repeat(" ", width-fill-1)
	}
	if p.unit == "rows" {
		return fmt.Sprintf("%s [%s] %3.0f%%  %d/%d rows  %.1fs", p.label, bar, frac*100, read, p.total, time.Since(p.start).Seconds())
	}
	return fmt.Sprintf("%s [%s] %3.0f%%  %.1f/%.1f MB  %d rows  %.1fs", p.label, bar, frac*100,
		float64(read)/1e6, float64(p.total)/1e6, rows, time.Since(p.start).Seconds())
}

func (p *progressBar) update(read int64, rows int) {
	if !p.enabled {
		return
	}
	if p.tty {
		if time.Since(p.last) < 100*time.Millisecond {
			return
		}
		p.last = time.Now()
		fmt.Fprint(p.w, "\r"+p.line(read, rows))
		return
	}
	if tick := read * 10 / max(p.total, 1); tick > p.lastTick {
		p.lastTick = tick
		fmt.Fprintln(p.w, p.line(read, rows))
	}
}

func (p *progressBar) done(read int64, rows int) {
	if !p.enabled {
		return
	}
	if p.tty {
		fmt.Fprint(p.w, "\r"+p.line(read, rows)+"\n")
	} else if p.lastTick < 10 {
		fmt.Fprintln(p.w, p.line(read, rows))
	}
}

// goldenCmd writes (-write) or checks a spec's golden vectors file.
func goldenCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("features golden", flag.ContinueOnError)
	fs.SetOutput(stderr)
	specPath := fs.String("spec", "", "feature spec YAML file (required)")
	file := fs.String("file", "", "golden vectors JSON file (required)")
	write := fs.Bool("write", false, "write the file from the spec instead of checking it")
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	if *specPath == "" || *file == "" {
		fmt.Fprintln(stderr, "sidecar features golden: -spec and -file are required")
		return 2
	}
	spec, err := features.LoadFile(*specPath)
	if err != nil {
		fmt.Fprintln(stderr, "sidecar features golden:", err)
		return 1
	}
	if *write {
		if err := checkOutput(*file); err != nil {
			fmt.Fprintln(stderr, "sidecar features golden:", err)
			return 1
		}
		g, err := spec.WriteGoldenFile(*file)
		if err != nil {
			fmt.Fprintln(stderr, "sidecar features golden:", outputErrorOf(*file, *file, err))
			return 1
		}
		fmt.Fprintf(stdout, "wrote %s (spec %s, %d cases, fingerprint %.12s)\n", *file, g.Spec, len(g.Cases), g.Fingerprint)
		return 0
	}
	if err := spec.CheckGoldenFile(*file); err != nil {
		fmt.Fprintln(stderr, "sidecar features golden:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: golden vectors hold for spec %s\n", *file, spec.Name)
	return 0
}

// checkOutput checks, before any work, that a file can be created at path: its folder exists and
// path is not a folder. Its error names path and says why not.
func checkOutput(path string) error {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if err != nil {
		return outputError(path, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("cannot write %s: %s is a file, not a folder", path, dir)
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("cannot write %s: it is a folder", path)
	}
	return nil
}

// outputErrorOf is outputError when err is about writing the file at written (path itself, or a
// temporary file standing in for it); other errors (the input's, the spec's) are returned as
// they are.
func outputErrorOf(path, written string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) && (pe.Path == written || pe.Path == path) {
		return outputError(path, err)
	}
	return err
}

// outputError describes a failure to write the output the user named path: "cannot write PATH:
// REASON", the reason in words (a missing folder is named), whatever file the error was about.
func outputError(path string, err error) error {
	cause := err
	var pe *fs.PathError
	var le *os.LinkError
	if errors.As(err, &pe) {
		cause = pe.Err
	} else if errors.As(err, &le) {
		cause = le.Err
	}
	reason := cause.Error()
	dir := filepath.Dir(path)
	switch {
	case errors.Is(cause, fs.ErrNotExist), errors.Is(cause, syscall.ENOTDIR):
		// Say which part of the path is missing, or is a file: the nearest one that exists.
		for d := dir; ; d = filepath.Dir(d) {
			if fi, err := os.Stat(d); err == nil {
				if !fi.IsDir() {
					reason = fmt.Sprintf("%s is a file, not a folder", d)
				} else if d != dir {
					reason = fmt.Sprintf("the folder %s does not exist", dir)
				}
				break
			}
			if d == filepath.Dir(d) {
				break
			}
		}
	case errors.Is(cause, syscall.EISDIR):
		if fi, err := os.Stat(path); err == nil && fi.IsDir() {
			reason = "it is a folder"
		}
	}
	return fmt.Errorf("cannot write %s: %s", path, reason)
}
