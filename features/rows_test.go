package features

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"
)

// rawMetrics makes raw VM metrics (metrics.csv's layout): vms VMs interleaved step by step, with
// a few empty cells (the bandwidth spec carries them forward or skips a window; the anomaly spec
// skips the row), as CSV and as the rows of a Parquet file.
func rawMetrics(vms, steps int) (string, []rawRow) {
	rng := rand.New(rand.NewPCG(3, 4))
	var b strings.Builder
	b.WriteString("vm_id,timestamp,cpu,memory,disk_io,network_io,latency,error_rate,anomaly_type\n")
	var rows []rawRow
	for s := 0; s < steps; s++ {
		for v := 0; v < vms; v++ {
			vm := "vm-" + strconv.Itoa(v)
			cpu := rng.Float64() * 110
			r := rawRow{VMID: vm, Timestamp: strconv.Itoa(s), CPU: &cpu, Memory: rng.Float64() * 100, DiskIO: rng.ExpFloat64() * 50,
				NetworkIO: rng.Float64() * 900, Latency: rng.ExpFloat64() * 20, ErrorRate: rng.Float64() * 0.05, Anomaly: "normal"}
			cell := strconv.FormatFloat(cpu, 'g', -1, 64)
			if rng.IntN(40) == 0 {
				r.CPU, cell = nil, ""
			}
			if rng.IntN(30) == 0 {
				r.Anomaly = "cpu_spike"
			}
			rows = append(rows, r)
			f := func(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }
			fmt.Fprintf(&b, "%s,%d,%s,%s,%s,%s,%s,%s,%s\n", vm, s, cell, f(r.Memory), f(r.DiskIO), f(r.NetworkIO), f(r.Latency), f(r.ErrorRate), r.Anomaly)
		}
	}
	return b.String(), rows
}

// matrixRows parses the feature cells of a CSV matrix Transform wrote.
func matrixRows(t *testing.T, spec *Spec, matrix []byte) [][]float32 {
	t.Helper()
	recs, err := csv.NewReader(bytes.NewReader(matrix)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	first := 0
	if spec.Entity != "" {
		first++
	}
	if spec.Time != "" {
		first++
	}
	var out [][]float32
	for _, rec := range recs[1:] {
		row := make([]float32, spec.Size())
		for i, cell := range rec[first : first+spec.Size()] {
			f, err := strconv.ParseFloat(cell, 32)
			if err != nil {
				t.Fatal(err)
			}
			row[i] = float32(f)
		}
		out = append(out, row)
	}
	return out
}

// sameRows fails unless got and want hold the same rows, bit for bit, in the same order.
func sameRows(t *testing.T, what string, got, want [][]float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d rows, want %d", what, len(got), len(want))
	}
	for i := range want {
		for j := range want[i] {
			if math.Float32bits(got[i][j]) != math.Float32bits(want[i][j]) {
				t.Fatalf("%s: row %d value %d = %v, the matrix has %v", what, i, j, got[i][j], want[i][j])
			}
		}
	}
}

// TestRowsEqualTransform: Rows yields, bit for bit and in order, the rows the transform writes of
// the same input, for a sequence spec and row specs, from CSV and from Parquet, with and without
// the label columns, and skips what the transform skips.
func TestRowsEqualTransform(t *testing.T) {
	csvText, raw := rawMetrics(5, 60)
	dir := t.TempDir()
	pqIn := filepath.Join(dir, "raw.parquet")
	f, err := os.Create(pqIn)
	if err != nil {
		t.Fatal(err)
	}
	w := parquet.NewGenericWriter[rawRow](f)
	if _, err := w.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// The same records without the label column: Rows does not need it.
	var noLabels strings.Builder
	for _, line := range strings.SplitAfter(csvText, "\n") {
		if i := strings.LastIndexByte(line, ','); i >= 0 {
			line = line[:i] + "\n"
		}
		noLabels.WriteString(line)
	}

	for _, name := range []string{"bandwidth", "anomaly"} {
		t.Run(name, func(t *testing.T) {
			spec := mustLoad(t, "../examples/specs/"+name+".yaml")
			var matrix bytes.Buffer
			tst, err := spec.Transform(strings.NewReader(csvText), &matrix, TransformOptions{})
			if err != nil {
				t.Fatal(err)
			}
			want := matrixRows(t, spec, matrix.Bytes())
			if len(want) == 0 || len(tst.Skipped) == 0 {
				t.Fatalf("the input should give rows and skip some: %d rows, skipped %v", len(want), tst.Skipped)
			}
			collect := func(run func(each func([]float32) error) (TransformStats, error)) ([][]float32, TransformStats) {
				t.Helper()
				var got [][]float32
				st, err := run(func(row []float32) error {
					if len(row) != spec.Size() {
						t.Fatalf("row of %d values, want %d", len(row), spec.Size())
					}
					got = append(got, append([]float32(nil), row...))
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				return got, st
			}
			runs := map[string]func(each func([]float32) error) (TransformStats, error){
				"csv": func(each func([]float32) error) (TransformStats, error) {
					return spec.Rows(strings.NewReader(csvText), TransformOptions{}, each)
				},
				"csv without labels": func(each func([]float32) error) (TransformStats, error) {
					return spec.Rows(strings.NewReader(noLabels.String()), TransformOptions{}, each)
				},
				"parquet file": func(each func([]float32) error) (TransformStats, error) {
					return spec.RowsFile(pqIn, TransformOptions{}, each)
				},
			}
			for what, run := range runs {
				got, st := collect(run)
				sameRows(t, what, got, want)
				if st.InputRows != tst.InputRows || st.OutputRows != tst.OutputRows || fmt.Sprint(st.Skipped) != fmt.Sprint(tst.Skipped) {
					t.Errorf("%s: stats %d in %d out skipped %v, the transform's %d %d %v", what, st.InputRows, st.OutputRows, st.Skipped,
						tst.InputRows, tst.OutputRows, tst.Skipped)
				}
			}
		})
	}
}

func TestRowsErrors(t *testing.T) {
	spec := mustLoad(t, "../examples/specs/anomaly.yaml")
	csvText, _ := rawMetrics(2, 10)
	stop := errors.New("stop")
	n := 0
	st, err := spec.Rows(strings.NewReader(csvText), TransformOptions{}, func([]float32) error {
		if n++; n == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 3 || st.OutputRows != 3 {
		t.Errorf("each's error: err %v after %d rows (stats %d), want it returned at the third", err, n, st.OutputRows)
	}
	calls := 0
	_, err = spec.Rows(strings.NewReader("vm_id,timestamp,cpu\n"), TransformOptions{}, func([]float32) error { calls++; return nil })
	if err == nil || !strings.Contains(err.Error(), `no column "memory"`) || calls != 0 {
		t.Errorf("missing column: %v, %d calls", err, calls)
	}
	if _, err := spec.RowsFile(filepath.Join(t.TempDir(), "none.csv"), TransformOptions{}, func([]float32) error { return nil }); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	var progress []int
	st, err = spec.Rows(strings.NewReader(csvText), TransformOptions{ProgressEvery: 8, Progress: func(rows int) { progress = append(progress, rows) }},
		func([]float32) error { return nil })
	if err != nil || fmt.Sprint(progress) != "[8 16 20]" || st.InputRows != 20 {
		t.Errorf("progress %v, stats %+v, err %v", progress, st, err)
	}
}
