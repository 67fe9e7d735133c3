package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runArgs(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsage(t *testing.T) {
	if code, out, _ := runArgs("help"); code != 0 || !strings.Contains(out, "features transform") {
		t.Errorf("help: %d %q", code, out)
	}
	if code, _, errs := runArgs("frobnicate"); code != 2 || !strings.Contains(errs, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: %d %q", code, errs)
	}
}

func TestFeaturesCommands(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "raw.csv")
	var b strings.Builder
	b.WriteString("vm_id,timestamp,cpu,memory,disk_io,network_io,latency,error_rate,anomaly_type\n")
	for i := 0; i < 30; i++ {
		b.WriteString("vm-1,t,10,20,30,400,5,0.01,normal\n")
	}
	if err := os.WriteFile(raw, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := "../../examples/specs/bandwidth.yaml"
	code, fp, errs := runArgs("features", "fingerprint", "-spec", spec)
	if code != 0 || len(strings.TrimSpace(fp)) != 64 {
		t.Fatalf("fingerprint: %d %q %q", code, fp, errs)
	}
	out := filepath.Join(dir, "bw.csv")
	code, stdout, errs := runArgs("features", "transform", "-spec", spec, "-in", raw, "-out", out)
	if code != 0 {
		t.Fatalf("transform: %d %s %s", code, stdout, errs)
	}
	var meta Meta
	mb, err := os.ReadFile(out + ".meta.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(mb, &meta); err != nil {
		t.Fatal(err)
	}
	// 30 rows of one VM: windows of 10 with 10 future labels: 11 rows.
	if meta.Fingerprint != strings.TrimSpace(fp) || meta.Rows != 11 || meta.Window != 10 || len(meta.Columns) != 2+60+10 {
		t.Errorf("meta %+v", meta)
	}
	if !strings.Contains(stdout, "output rows  11") {
		t.Errorf("summary %q", stdout)
	}
	// Errors say what is wrong.
	code, _, errs = runArgs("features", "transform", "-spec", spec, "-in", filepath.Join(dir, "none.csv"), "-out", out)
	if code != 1 || !strings.Contains(errs, "none.csv") {
		t.Errorf("missing input: %d %q", code, errs)
	}
	code, _, errs = runArgs("features", "transform", "-spec", spec)
	if code != 2 || !strings.Contains(errs, "-in and -out are required") {
		t.Errorf("missing flags: %d %q", code, errs)
	}
}

func TestServeBadConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("listen:\n  grpc: 127.0.0.1:0\nmodels:\n  - name: x\n    task: forecast\n    pathh: a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runArgs("serve", "-config", path)
	// The file and line, and the key (config's tests own the wording).
	if code != 1 || !strings.Contains(errs, path+":6:") || !strings.Contains(errs, "pathh") {
		t.Errorf("bad config: %d %q", code, errs)
	}
}
