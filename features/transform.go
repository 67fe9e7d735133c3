package features

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// TransformStats summarizes one offline transform.
type TransformStats struct {
	// InputRows counts data rows read; OutputRows rows written.
	InputRows, OutputRows int
	// Skipped counts input rows (or windows, for sequence specs) refused by a missing-value
	// policy, by reason; they are left out of the matrix, never filled in differently than online.
	Skipped map[string]int
	// Columns is the output header.
	Columns []string
}

// TransformOptions tune Transform; the zero value is valid.
type TransformOptions struct {
	// Progress, when set, is called every ProgressEvery input rows and at the end, with the number
	// of rows read so far. It runs on the transforming goroutine.
	Progress func(rows int)
	// ProgressEvery defaults to 65536 rows.
	ProgressEvery int
	// Input, when set, wraps a CSV input reader (TransformFile), e.g. to count bytes read.
	Input func(io.Reader) io.Reader
}

// Columns returns the header of the matrix Transform writes for this spec.
func (s *Spec) Columns() []string {
	var cols []string
	if s.Entity != "" {
		cols = append(cols, s.Entity)
	}
	if s.Time != "" {
		cols = append(cols, s.Time)
	}
	if s.Sequence() {
		for t := 0; t < s.Window; t++ {
			for _, f := range s.Features {
				cols = append(cols, "t"+strconv.Itoa(t)+"."+f.Name)
			}
		}
	} else {
		cols = append(cols, s.FeatureNames()...)
	}
	for _, l := range s.Labels {
		if l.Horizon > 0 {
			for h := 1; h <= l.Horizon; h++ {
				cols = append(cols, "label."+l.Name+"+"+strconv.Itoa(h))
			}
		} else {
			cols = append(cols, "label."+l.Name)
		}
	}
	return cols
}

// step is one input row of a sequence entity, kept until its windows are written.
type step struct {
	key, time string
	raw       []float64
	labels    []string
}

// Transform reads a CSV of raw records (a header naming the spec's sources, entity, time and label
// columns) and writes the model input matrix as CSV: for row specs one row per input row, for
// sequence specs one row per complete window of an entity (rows of an entity in time order; entities
// may interleave), followed by the label columns. Values are the exact float32 values Canonicalize
// produces online, printed in shortest round-trip form, so parsing them gives the same bits.
// Empty cells are missing values; text that is not a number is an error naming line and column.
// Transform streams: memory holds one window per entity, not the file. Its rows are the ones Rows
// yields of the same input.
func (s *Spec) Transform(in io.Reader, out io.Writer, opt TransformOptions) (TransformStats, error) {
	src, err := newCSVSource(in)
	if err != nil {
		return TransformStats{}, err
	}
	bw := bufio.NewWriterSize(out, 1<<20)
	st, err := s.transform(src, &csvSink{w: csv.NewWriter(bw)}, opt)
	if ferr := bw.Flush(); err == nil {
		err = ferr
	}
	return st, err
}

// recordSource yields the records of a raw input file as text cells.
type recordSource interface {
	header() []string
	// next returns the next record (valid until the following call), its line (or row) number, or
	// io.EOF.
	next() ([]string, int, error)
}

// recordSink takes the matrix's header, then its rows.
type recordSink interface {
	write(rec []string) error
	close() error
}

type csvSource struct {
	r    *csv.Reader
	head []string
}

func newCSVSource(in io.Reader) (*csvSource, error) {
	r := csv.NewReader(bufio.NewReaderSize(in, 1<<20))
	r.ReuseRecord = true
	header, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("reading header: %w", err)
	}
	return &csvSource{r: r, head: slices.Clone(header)}, nil // the reader reuses its record
}

func (c *csvSource) header() []string { return c.head }

func (c *csvSource) next() ([]string, int, error) {
	rec, err := c.r.Read()
	if err != nil {
		return nil, 0, err
	}
	line, _ := c.r.FieldPos(0)
	return rec, line, nil
}

type csvSink struct{ w *csv.Writer }

func (c *csvSink) write(rec []string) error { return c.w.Write(rec) }
func (c *csvSink) close() error             { c.w.Flush(); return c.w.Error() }

// transform writes the header, then every row the spec's rowReader yields, formatted.
func (s *Spec) transform(in recordSource, out recordSink, opt TransformOptions) (TransformStats, error) {
	rr, err := s.newRowReader(in, true)
	if err != nil {
		return s.newStats(), err
	}
	cols := s.Columns()
	if err := out.write(cols); err != nil {
		return s.newStats(), err
	}
	rec := make([]string, 0, len(cols))
	buf := make([]byte, 0, 32)
	st, err := rr.run(opt, func(key, tm string, row []float32, labels []string) error {
		rec = rec[:0]
		if rr.key >= 0 {
			rec = append(rec, key)
		}
		if rr.time >= 0 {
			rec = append(rec, tm)
		}
		for _, v := range row {
			buf = strconv.AppendFloat(buf[:0], float64(v), 'g', -1, 32)
			rec = append(rec, string(buf))
		}
		rec = append(rec, labels...)
		return out.write(rec)
	})
	if err != nil {
		return st, err
	}
	return st, out.close()
}

// parseCell reads one raw value: empty is missing (NaN); anything else must be a finite number.
func parseCell(c string) (float64, error) {
	c = strings.TrimSpace(c)
	if c == "" {
		return math.NaN(), nil
	}
	v, err := strconv.ParseFloat(c, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("%q is not a finite number (leave the cell empty for a missing value)", c)
	}
	return v, nil
}

func newCSVWriter(out io.Writer) *csv.Writer { return csv.NewWriter(out) }

// wrap applies the options' input wrapper (a progress counter), if any.
func (o TransformOptions) wrap(r io.Reader) io.Reader {
	if o.Input != nil {
		return o.Input(r)
	}
	return r
}
