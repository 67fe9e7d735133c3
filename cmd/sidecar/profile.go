package main

import (
	"bytes"
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
	"strconv"
	"strings"

	"github.com/novacron/sidecar/features"
	"github.com/novacron/sidecar/features/drift"
)

const profileUsage = `usage: sidecar profile <command> [flags]

commands:
  build    profile a model's training data: canonicalize every row as serving does and write the
           drift reference profile (per feature: bin edges, counts, missing, min/max, quantiles);
           with -model, also run the model on the rows and profile each of its output values
  show     print a profile's table, checked against its spec

  sidecar profile build -spec SPEC.yaml -in DATA.csv|DATA.parquet -out MODEL.profile [-model MODEL.onnx] [-bins N] [-quiet]
  sidecar profile show -spec SPEC.yaml MODEL.profile

Run "sidecar profile <command> -h" for a command's flags.
`

func profileCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return subcommand("profile", profileUsage, args, stdout, stderr, map[string]func([]string) int{
		"build": func(a []string) int { return profileBuildCmd(ctx, a, stdout, stderr) },
		"show":  func(a []string) int { return profileShowCmd(a, stdout, stderr) },
	})
}

// parseInterleaved parses flags that may come before, between or after positional arguments
// ("show FILE -spec S" as well as "show -spec S FILE") and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func profileBuildCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("profile build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	specPath := fs.String("spec", "", "feature spec YAML file of the model (required)")
	inPath := fs.String("in", "", "raw training data, CSV or .parquet, as sidecar features transform reads it (required)")
	outPath := fs.String("out", "", "profile to write, e.g. examples/models/MODEL.profile (required; written atomically)")
	bins := fs.Int("bins", drift.DefaultBins, "reference bins per feature, from the training quantiles (2..1000)")
	modelPath := fs.String("model", "", "the ONNX model of the spec: run it on the rows and profile its outputs too (prediction drift); needs ONNX Runtime, as serving does")
	quiet := fs.Bool("quiet", false, "no progress bar")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return flagExit(err)
	}
	switch {
	case len(pos) > 0:
		fmt.Fprintf(stderr, "sidecar profile build: unexpected argument %q: give the input with -in and the profile with -out\n", pos[0])
		fs.Usage()
		return 2
	case *specPath == "" || *inPath == "" || *outPath == "":
		fmt.Fprintln(stderr, "sidecar profile build: -spec, -in and -out are required")
		fs.Usage()
		return 2
	case *bins < 2 || *bins > 1000:
		fmt.Fprintf(stderr, "sidecar profile build: -bins %d: give 2 to 1000 (default %d: deciles)\n", *bins, drift.DefaultBins)
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "sidecar profile build:", err)
		return 1
	}
	spec, err := features.LoadFile(*specPath)
	if err != nil {
		return fail(err)
	}
	info, err := os.Stat(*inPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fail(fmt.Errorf("cannot read %s: it does not exist; -in is the model's raw training data, CSV or .parquet (what sidecar features transform reads)", *inPath))
	case err != nil:
		return fail(inputError(*inPath, err))
	case info.IsDir():
		return fail(fmt.Errorf("%s is a folder: -in is the raw training data file (CSV or .parquet) that sidecar features transform reads", *inPath))
	}
	// Fail now, not after reading the data, when the profile cannot be written where asked.
	if err := checkOutput(*outPath); err != nil {
		return fail(err)
	}
	builder, err := drift.NewBuilder(spec, *bins)
	if err != nil {
		return fail(err)
	}
	add := builder.Add
	var pm *profileModel
	if *modelPath != "" {
		if pm, err = openProfileModel(*modelPath, spec); err != nil {
			return fail(err)
		}
		defer pm.close()
		if err := builder.SetOutputs(pm.columns); err != nil {
			return fail(err)
		}
		add = func(rows []float32) error {
			if err := builder.Add(rows); err != nil {
				return err
			}
			out, err := pm.answer(ctx, rows)
			if err != nil {
				return err
			}
			return builder.AddOutputs(out)
		}
	}

	stats, err := withProgress(ctx, stderr, "profile "+spec.Name, *inPath, info.Size(), *quiet, func(opt features.TransformOptions) (features.TransformStats, error) {
		return spec.RowsFile(*inPath, opt, add)
	})
	if err != nil {
		if errors.Is(err, errInterrupted) {
			return fail(err)
		}
		return fail(fmt.Errorf("%s: %w", *inPath, err))
	}
	p, err := builder.Profile()
	if err != nil {
		return fail(noRowsError(*inPath, spec, stats, err))
	}
	if pm != nil {
		p.ModelDigest = pm.digest
	}
	var buf bytes.Buffer
	if err := p.Write(&buf); err != nil {
		return fail(err)
	}
	// What is written must load as the sidecar loads it.
	if _, err := drift.ReadProfile(bytes.NewReader(buf.Bytes()), spec); err != nil {
		return fail(fmt.Errorf("the profile built does not read back: %w", err))
	}
	if err := writeAtomic(*outPath, buf.Bytes()); err != nil {
		return fail(err)
	}

	row := func(k, v string) { fmt.Fprintf(stdout, "%-13s %s\n", k, v) }
	row("spec", spec.Name)
	row("fingerprint", p.Fingerprint)
	row("input rows", strconv.Itoa(stats.InputRows))
	row("profiled", rowsNote(spec, p.Rows))
	printSkipped(stdout, stats.Skipped)
	row("bins", fmt.Sprintf("%d per feature (quantiles of the training rows; equal edges merged)", *bins))
	if pm != nil {
		row("outputs", fmt.Sprintf("%d values per row of %s (its answers to the same rows)", len(p.Outputs), *modelPath))
		row("model", p.ModelDigest)
		if len(pm.skipped) > 0 {
			row("not profiled", fmt.Sprintf("outputs %v: the sidecar never reads them", pm.skipped))
		}
	}
	row("wrote", *outPath)
	fmt.Fprintln(stdout)
	writeProfileTable(stdout, p)
	return 0
}

func profileShowCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("profile show", flag.ContinueOnError)
	fs.SetOutput(stderr)
	specPath := fs.String("spec", "", "feature spec YAML file the profile must be of (required)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sidecar profile show -spec SPEC.yaml MODEL.profile")
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return flagExit(err)
	}
	switch {
	case *specPath == "" || len(pos) != 1:
		fmt.Fprintln(stderr, "sidecar profile show: give -spec and one profile file")
		fs.Usage()
		return 2
	}
	file := pos[0]
	fail := func(err error) int {
		fmt.Fprintln(stderr, "sidecar profile show:", err)
		return 1
	}
	spec, err := features.LoadFile(*specPath)
	if err != nil {
		return fail(err)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fail(fmt.Errorf("%s does not exist: build it from the model's training data (sidecar profile build -spec %s -in DATA -out %s)", file, *specPath, file))
		}
		return fail(inputError(file, err))
	}
	p, err := drift.ReadProfile(bytes.NewReader(b), spec)
	if err != nil {
		return fail(profileMismatch(file, *specPath, spec, b, err))
	}
	row := func(k, v string) { fmt.Fprintf(stdout, "%-13s %s\n", k, v) }
	row("profile", file)
	row("spec", p.Spec+" (matches "+*specPath+")")
	row("fingerprint", p.Fingerprint)
	row("profiled", rowsNote(spec, p.Rows))
	fmt.Fprintln(stdout)
	writeProfileTable(stdout, p)
	return 0
}

// profileMismatch explains why the profile in b (read from file) does not load for spec: another
// spec's profile, or this spec's before it changed, or drift's own reason (a damaged file).
func profileMismatch(file, specPath string, spec *features.Spec, b []byte, err error) error {
	var head struct {
		Spec        string `json:"spec"`
		Fingerprint string `json:"spec_fingerprint"`
	}
	if json.Unmarshal(b, &head) == nil && head.Fingerprint != "" && head.Fingerprint != spec.Fingerprint() {
		if head.Spec != spec.Name {
			return fmt.Errorf("%s is the profile of spec %q (fingerprint %.12s), not of %q (%s, fingerprint %.12s): give the spec it was built from, or this spec's own profile",
				file, head.Spec, head.Fingerprint, spec.Name, specPath, spec.Fingerprint())
		}
		return fmt.Errorf("%s is a profile of spec %q at fingerprint %.12s, which now has %.12s: the spec changed; rebuild the profile from the training data (sidecar profile build -spec %s -in DATA -out %s), as the model is retrained",
			file, head.Spec, head.Fingerprint, spec.Fingerprint(), specPath, file)
	}
	return fmt.Errorf("%s: %w", file, err)
}

// noRowsError explains a profile that could not be built from the rows read.
func noRowsError(in string, spec *features.Spec, st features.TransformStats, err error) error {
	skipped := 0
	for _, n := range st.Skipped {
		skipped += n
	}
	switch {
	case st.InputRows == 0:
		return fmt.Errorf("%s has no data rows (only a header): give the model's raw training data", in)
	case st.OutputRows == 0 && skipped > 0:
		return fmt.Errorf("%s: the spec's missing-value policies refused all %d rows (%s): the data has empty cells where spec %s requires values",
			in, skipped, skippedList(st.Skipped), spec.Name)
	case st.OutputRows == 0 && spec.Sequence():
		return fmt.Errorf("%s: %d records gave no complete window: spec %s needs %d consecutive rows of one %s (window %d plus the labels' horizon)",
			in, st.InputRows, spec.Name, spec.Window+horizonOf(spec), spec.Entity, spec.Window)
	}
	return fmt.Errorf("%s: %w", in, err)
}

func horizonOf(spec *features.Spec) int {
	h := 0
	for _, l := range spec.Labels {
		h = max(h, l.Horizon)
	}
	return h
}

// rowsNote is the profiled-rows line: for a sequence spec, what a row's values are.
func rowsNote(spec *features.Spec, rows int64) string {
	if spec.Sequence() {
		return fmt.Sprintf("%d windows of %d steps (a feature's value in a window: its last step's)", rows, spec.Window)
	}
	return fmt.Sprintf("%d rows", rows)
}

func skippedList(skipped map[string]int) string {
	reasons := make([]string, 0, len(skipped))
	for r := range skipped {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for i, r := range reasons {
		reasons[i] = fmt.Sprintf("%d %s", skipped[r], r)
	}
	return strings.Join(reasons, "; ")
}

func printSkipped(w io.Writer, skipped map[string]int) {
	if len(skipped) == 0 {
		return
	}
	reasons := make([]string, 0, len(skipped))
	for r := range skipped {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	fmt.Fprintln(w, "skipped (missing values refused by the spec's policy, as serving refuses them):")
	for _, r := range reasons {
		fmt.Fprintf(w, "  %8d  %s\n", skipped[r], r)
	}
}

// writeProfileTable prints one line per feature: its bins, the statistics of its finite values
// (canonical units: what the model reads) and its missing (non-finite) count.
func writeProfileTable(w io.Writer, p *drift.Profile) {
	nameW := len("feature")
	for _, r := range p.Features {
		nameW = max(nameW, len(r.Name))
	}
	for _, r := range p.Outputs {
		nameW = max(nameW, len("output ")+len(r.Name))
	}
	num := func(v float64) string { return strconv.FormatFloat(v, 'f', 4, 64) }
	fmt.Fprintf(w, "%-*s  %4s  %10s  %10s  %10s  %10s  %s\n", nameW, "feature", "bins", "min", "mean", "std", "max", "missing")
	line := func(name string, r *drift.Reference) {
		missing := "0"
		if r.Missing > 0 {
			missing = fmt.Sprintf("%d (%.3f%%)", r.Missing, 100*float64(r.Missing)/float64(max(p.Rows, 1)))
		}
		fmt.Fprintf(w, "%-*s  %4d  %10s  %10s  %10s  %10s  %s\n", nameW, name, len(r.Counts), num(r.Min), num(r.Mean), num(r.Std), num(r.Max), missing)
	}
	for i := range p.Features {
		line(p.Features[i].Name, &p.Features[i])
	}
	for i := range p.Outputs { // the model's answers, in their own units
		line("output "+p.Outputs[i].Name, &p.Outputs[i])
	}
}

// writeAtomic writes b to path through a temporary file in the same folder, renamed over path
// once complete: a reader never sees half a file, and a failure leaves what was there.
func writeAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return outputError(path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after the rename, a no-op
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return outputError(path, err)
	}
	return nil
}

// inputError describes a file that cannot be read: "cannot read PATH: REASON".
func inputError(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cannot read %s: it does not exist", path)
	}
	return fmt.Errorf("cannot read %s: %v", path, err)
}
