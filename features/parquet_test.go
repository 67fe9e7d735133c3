package features

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"
)

type rawRow struct {
	VMID      string   `parquet:"vm_id"`
	Timestamp string   `parquet:"timestamp"`
	CPU       *float64 `parquet:"cpu,optional"`
	Memory    float64  `parquet:"memory"`
	DiskIO    float64  `parquet:"disk_io"`
	NetworkIO float64  `parquet:"network_io"`
	Latency   float64  `parquet:"latency"`
	ErrorRate float64  `parquet:"error_rate"`
	Anomaly   string   `parquet:"anomaly_type"`
}

// TestParquetRoundTrip: the same raw records as CSV and as Parquet give the same matrix, written as
// CSV or as Parquet (with the fingerprint in its metadata), value for value.
func TestParquetRoundTrip(t *testing.T) {
	spec := mustLoad(t, "../examples/specs/bandwidth.yaml")
	dir := t.TempDir()
	csvIn, pqIn := filepath.Join(dir, "raw.csv"), filepath.Join(dir, "raw.parquet")
	var rows []rawRow
	csvText := "vm_id,timestamp,cpu,memory,disk_io,network_io,latency,error_rate,anomaly_type\n"
	for s := 0; s < 25; s++ {
		for _, vm := range []string{"a", "b"} {
			cpu := 10.5 + float64(s)*1.25
			r := rawRow{VMID: vm, Timestamp: strconv.Itoa(s), CPU: &cpu, Memory: 50, DiskIO: float64(s % 4), NetworkIO: 200 + float64(s)*3.3, Latency: 7, ErrorRate: 0.002, Anomaly: "normal"}
			cell := strconv.FormatFloat(cpu, 'g', -1, 64)
			if vm == "b" && s == 15 {
				r.CPU, cell = nil, "" // missing: policy previous
			}
			rows = append(rows, r)
			csvText += fmt.Sprintf("%s,%d,%s,50,%d,%s,7,0.002,normal\n", vm, s, cell, s%4, strconv.FormatFloat(r.NetworkIO, 'g', -1, 64))
		}
	}
	if err := os.WriteFile(csvIn, []byte(csvText), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(pqIn)
	if err != nil {
		t.Fatal(err)
	}
	w := parquet.NewGenericWriter[rawRow](f)
	if _, err := w.Write(rows); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()

	read := func(path string) [][]string {
		t.Helper()
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var src recordSource
		if IsParquet(path) {
			info, _ := f.Stat()
			src, err = newParquetSource(f, info.Size())
		} else {
			src, err = newCSVSource(f)
		}
		if err != nil {
			t.Fatal(err)
		}
		out := [][]string{}
		for {
			rec, _, err := src.next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			// Parquet orders columns by name; put them in the matrix's order.
			byName := map[string]string{}
			for i, h := range src.header() {
				byName[h] = rec[i]
			}
			row := make([]string, 0, len(rec))
			for _, c := range spec.Columns() {
				row = append(row, byName[c])
			}
			out = append(out, row)
		}
		return out
	}
	var want [][]string
	for _, in := range []string{csvIn, pqIn} {
		for _, out := range []string{"m.csv", "m.parquet"} {
			path := filepath.Join(dir, filepath.Base(in)+"."+out)
			st, err := spec.TransformFile(in, path, TransformOptions{})
			if err != nil {
				t.Fatalf("%s -> %s: %v", in, out, err)
			}
			got := read(path)
			if want == nil {
				want = got
				if len(want) != st.OutputRows || len(want) == 0 {
					t.Fatalf("%d rows read, %d written", len(want), st.OutputRows)
				}
				continue
			}
			if len(got) != len(want) {
				t.Fatalf("%s -> %s: %d rows, want %d", in, out, len(got), len(want))
			}
			for i := range want {
				if !slices.Equal(got[i], want[i]) {
					t.Fatalf("%s -> %s row %d:\n got  %v\n want %v", in, out, i, got[i], want[i])
				}
			}
		}
	}
	// The Parquet matrix carries the fingerprint.
	pf, err := os.Open(filepath.Join(dir, "raw.parquet.m.parquet"))
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	info, _ := pf.Stat()
	file, err := parquet.OpenFile(pf, info.Size())
	if err != nil {
		t.Fatal(err)
	}
	if fp, ok := file.Lookup(MetaFingerprint); !ok || fp != spec.Fingerprint() {
		t.Errorf("fingerprint metadata %q %v", fp, ok)
	}
}

func TestParquetRepeatedColumnRefused(t *testing.T) {
	type listRow struct {
		VMID string    `parquet:"vm_id"`
		CPU  []float64 `parquet:"cpu,list"`
	}
	path := filepath.Join(t.TempDir(), "list.parquet")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := parquet.NewGenericWriter[listRow](f)
	w.Write([]listRow{{VMID: "a", CPU: []float64{10, 90}}})
	w.Close()
	f.Close()
	spec := mustLoad(t, "../examples/specs/anomaly.yaml")
	_, err = spec.TransformFile(path, filepath.Join(t.TempDir(), "m.csv"), TransformOptions{})
	if err == nil || !strings.Contains(err.Error(), "is repeated") {
		t.Errorf("a list column: %v", err)
	}
}
