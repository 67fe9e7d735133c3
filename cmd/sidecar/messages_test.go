package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGoldenOtherSpec: a golden file checked against another spec is the wrong file, and says so
// (naming the spec and fingerprint it holds) instead of advising -write, which would overwrite it
// with the wrong spec's vectors; -write refuses to. -write is advised only for the same spec,
// changed; what it writes is the committed file, byte for byte.
func TestGoldenOtherSpec(t *testing.T) {
	dir := t.TempDir()
	committed := func(name string) []byte {
		b, err := os.ReadFile("../../examples/specs/golden/" + name + ".json")
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	anomaly := filepath.Join(dir, "anomaly.json")
	if err := os.WriteFile(anomaly, committed("anomaly"), 0o644); err != nil {
		t.Fatal(err)
	}
	bandwidth := "../../examples/specs/bandwidth.yaml"

	code, _, errs := runArgs("features", "golden", "-spec", bandwidth, "-file", anomaly)
	want := anomaly + ` holds the vectors of spec "anomaly" (fingerprint 56a8af774cd2), not of "bandwidth": give the spec's own golden file`
	if code != 1 || !strings.Contains(errs, want) || strings.Contains(errs, "-write") {
		t.Errorf("check with another spec: exit %d, stderr %q; want 1 and %q, no -write", code, errs, want)
	}
	code, _, errs = runArgs("features", "golden", "-write", "-spec", bandwidth, "-file", anomaly)
	if code != 1 || !strings.Contains(errs, `holds the vectors of spec "anomaly"`) || !strings.Contains(errs, "not overwriting it") {
		t.Errorf("-write over another spec's file: exit %d, stderr %q", code, errs)
	}
	if b, _ := os.ReadFile(anomaly); string(b) != string(committed("anomaly")) {
		t.Error("-write overwrote another spec's golden file")
	}

	// The same spec, changed (here: the file's fingerprint): -write is the advice, and it writes
	// the committed vectors again.
	for _, name := range []string{"bandwidth", "anomaly", "placement"} {
		spec := "../../examples/specs/" + name + ".yaml"
		file := filepath.Join(dir, name+"-changed.json")
		changed := strings.Replace(string(committed(name)), `"fingerprint": "`, `"fingerprint": "0`, 1)
		if err := os.WriteFile(file, []byte(changed), 0o644); err != nil {
			t.Fatal(err)
		}
		code, _, errs = runArgs("features", "golden", "-spec", spec, "-file", file)
		if code != 1 || !strings.Contains(errs, "the spec changed") || !strings.Contains(errs, "golden -write") {
			t.Errorf("%s changed: exit %d, stderr %q", name, code, errs)
		}
		code, out, errs := runArgs("features", "golden", "-write", "-spec", spec, "-file", file)
		if code != 0 || !strings.Contains(out, "spec "+name) {
			t.Fatalf("%s -write: exit %d, %q %q", name, code, out, errs)
		}
		if b, _ := os.ReadFile(file); string(b) != string(committed(name)) {
			t.Errorf("%s: -write does not reproduce the committed golden file", name)
		}
		if code, _, errs = runArgs("features", "golden", "-spec", spec, "-file", file); code != 0 {
			t.Errorf("%s after -write: exit %d, %q", name, code, errs)
		}
	}
}

// TestOutputPathErrors: an output that cannot be written is named as the user gave it (never
// the temporary file written in its place), with the reason, for every output of the features
// commands: the matrix (CSV, Parquet), its .meta.json, a golden file.
func TestOutputPathErrors(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "raw.csv")
	var b strings.Builder
	b.WriteString("vm_id,timestamp,cpu,memory,disk_io,network_io,latency,error_rate,anomaly_type\n")
	for i := 0; i < 12; i++ {
		b.WriteString("vm-1,t,10,20,30,400,5,0.01,normal\n")
	}
	file := filepath.Join(dir, "file")
	for _, p := range []string{raw, file} {
		if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "taken.csv.meta.json"), 0o755); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "nonexist")
	spec := "../../examples/specs/bandwidth.yaml"
	transform := func(out string) []string {
		return []string{"features", "transform", "-quiet", "-spec", spec, "-in", raw, "-out", out}
	}
	for _, tc := range []struct {
		args       []string
		path, want string
	}{
		{transform(filepath.Join(missing, "x.csv")), filepath.Join(missing, "x.csv"), "the folder " + missing + " does not exist"},
		{transform(filepath.Join(missing, "x.parquet")), filepath.Join(missing, "x.parquet"), "the folder " + missing + " does not exist"},
		{transform(filepath.Join(missing, "deeper", "x.csv")), filepath.Join(missing, "deeper", "x.csv"), "the folder " + filepath.Join(missing, "deeper") + " does not exist"},
		{transform(filepath.Join(file, "x.csv")), filepath.Join(file, "x.csv"), file + " is a file, not a folder"},
		{transform(dir), dir, "it is a folder"},
		{transform(filepath.Join(dir, "taken.csv")), filepath.Join(dir, "taken.csv.meta.json"), "it is a folder"},
		{[]string{"features", "golden", "-write", "-spec", spec, "-file", filepath.Join(missing, "g.json")}, filepath.Join(missing, "g.json"), "the folder " + missing + " does not exist"},
	} {
		code, _, errs := runArgs(tc.args...)
		want := "cannot write " + tc.path + ": " + tc.want
		if code != 1 || !strings.Contains(errs, want) || strings.Contains(errs, ".tmp-") {
			t.Errorf("%q: exit %d, stderr %q; want 1 and %q", tc.args, code, errs, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "taken.csv")); err == nil {
		t.Error("a transform whose .meta.json cannot be written wrote its matrix")
	}
}

// TestHelp: help, -h, -help and --help print the commands, each with a line, and how to get each
// one's flags, on stdout, exit 0; an unknown command prints them on stderr, exit 2; a command's -h
// prints its flags.
func TestHelp(t *testing.T) {
	for _, arg := range []string{"help", "-h", "-help", "--help"} {
		code, out, errs := runArgs(arg)
		if code != 0 || errs != "" {
			t.Errorf("%s: exit %d, stderr %q; want 0 and nothing", arg, code, errs)
		}
		for _, want := range []string{"  serve ", "  features transform ", "  features fingerprint ", "  features golden ", "  bench ", `"sidecar serve -h"`} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: no %q in %q", arg, want, out)
			}
		}
	}
	if code, out, errs := runArgs("frobnicate"); code != 2 || out != "" || !strings.Contains(errs, `unknown command "frobnicate"`) || !strings.Contains(errs, "  features golden ") {
		t.Errorf("unknown command: exit %d, %q %q", code, out, errs)
	}
	// serve's -h prints serve's flags (and serves nothing).
	if _, out, errs := runArgs("serve", "-h"); out != "" || !strings.Contains(errs, "-print-config") || strings.Contains(errs, "features transform") {
		t.Errorf("serve -h: %q %q", out, errs)
	}
	for _, args := range [][]string{{"features", "-h"}, {"features", "help"}} {
		if code, out, _ := runArgs(args...); code != 0 || !strings.Contains(out, "  fingerprint ") {
			t.Errorf("%q: exit %d, %q", args, code, out)
		}
	}
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"features", "transform", "-h"}, "-out"},
		{[]string{"features", "fingerprint", "-h"}, "-canonical"},
		{[]string{"features", "golden", "-h"}, "-write"},
		{[]string{"bench", "-h"}, "-duration"},
	} {
		if code, _, errs := runArgs(tc.args...); code != 0 || !strings.Contains(errs, tc.flag) {
			t.Errorf("%q: exit %d, stderr %q; want 0 and the flags", tc.args, code, errs)
		}
	}
	if code, _, _ := runArgs("features"); code != 2 {
		t.Errorf("features alone: exit %d, want 2", code)
	}
}
