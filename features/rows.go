package features

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Rows reads a CSV of raw records, as Transform does, and calls each with every canonical row of
// the matrix Transform would write of it, in the same order, without writing it: Spec.Size()
// float32 values, the exact values Canonicalize produces online. For sequence specs a row is one
// complete window of an entity, and, as in the matrix, only windows whose label horizon is in the
// file (a window is written with the labels of the steps after it). Label columns are not read
// and need not be in the header; the spec's sources (and entity and time, if it names them) must.
// Rows refused by a missing-value policy are counted in the stats' Skipped, not passed to each.
//
// row is valid only until each returns (the next row reuses it). each runs on the calling
// goroutine; an error from it stops the read and is returned as is. The stats' OutputRows counts
// the rows passed to each.
func (s *Spec) Rows(in io.Reader, opt TransformOptions, each func(row []float32) error) (TransformStats, error) {
	src, err := newCSVSource(in)
	if err != nil {
		return s.newStats(), err
	}
	return s.rows(src, opt, each)
}

// RowsFile is Rows of the raw file at path, CSV or Parquet by its extension (as TransformFile
// reads its input); opt.Input wraps a CSV input's reader.
func (s *Spec) RowsFile(path string, opt TransformOptions, each func(row []float32) error) (TransformStats, error) {
	f, err := os.Open(path)
	if err != nil {
		return s.newStats(), err
	}
	defer f.Close()
	var src recordSource
	if IsParquet(path) {
		info, err := f.Stat()
		if err != nil {
			return s.newStats(), err
		}
		if src, err = newParquetSource(f, info.Size()); err != nil {
			return s.newStats(), err
		}
	} else if src, err = newCSVSource(opt.wrap(f)); err != nil {
		return s.newStats(), err
	}
	return s.rows(src, opt, each)
}

func (s *Spec) rows(src recordSource, opt TransformOptions, each func(row []float32) error) (TransformStats, error) {
	rr, err := s.newRowReader(src, false)
	if err != nil {
		return s.newStats(), err
	}
	return rr.run(opt, func(_, _ string, row []float32, _ []string) error { return each(row) })
}

// newStats is the stats of a read that has not started.
func (s *Spec) newStats() TransformStats {
	return TransformStats{Skipped: map[string]int{}, Columns: s.Columns()}
}

// rowReader canonicalizes the records of one raw input: the one path from raw records to
// canonical rows that Transform (which writes them) and Rows (which hands them out) share.
type rowReader struct {
	spec *Spec
	in   recordSource
	// header is the input's header; src, lab the columns of each feature's source and each
	// label's (nil when labels are not read); key, time the entity and time columns, or -1.
	header    []string
	src, lab  []int
	key, time int
}

// newRowReader resolves the spec's columns in the input's header; labels says whether the label
// columns are needed (and read).
func (s *Spec) newRowReader(in recordSource, labels bool) (*rowReader, error) {
	header := in.header()
	col := map[string]int{}
	for i, h := range header {
		col[strings.TrimSpace(h)] = i
	}
	need := func(name, why string) (int, error) {
		i, ok := col[name]
		if !ok {
			return 0, fmt.Errorf("header: no column %q (%s); the header has %s", name, why, strings.Join(header, ","))
		}
		return i, nil
	}
	r := &rowReader{spec: s, in: in, header: header, src: make([]int, len(s.Features)), key: -1, time: -1}
	var err error
	for i, f := range s.Features {
		if r.src[i], err = need(f.Source, "source of feature "+f.Name); err != nil {
			return nil, err
		}
	}
	if labels {
		r.lab = make([]int, len(s.Labels))
		for i, l := range s.Labels {
			if r.lab[i], err = need(l.Source, "source of label "+l.Name); err != nil {
				return nil, err
			}
		}
	}
	if s.Entity != "" {
		if r.key, err = need(s.Entity, "entity"); err != nil {
			return nil, err
		}
	}
	if s.Time != "" {
		if r.time, err = need(s.Time, "time"); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// emitFunc takes one canonical row: the entity and time of its record (a window's last step), its
// values (valid until the call returns), and its label cells in Columns' order (nil when labels
// are not read).
type emitFunc func(key, tm string, row []float32, labels []string) error

// run reads every record and emits the rows of the matrix: for row specs one per record, for
// sequence specs one per complete window of an entity with its label horizon after it.
func (r *rowReader) run(opt TransformOptions, emit emitFunc) (TransformStats, error) {
	s, in := r.spec, r.in
	st := s.newStats()
	if opt.ProgressEvery <= 0 {
		opt.ProgressEvery = 1 << 16
	}
	horizon := 0
	for _, l := range s.Labels {
		horizon = max(horizon, l.Horizon)
	}
	width := len(s.Features)
	row := make([]float32, s.Size())
	raw := make([]float64, s.Size())
	entities := map[string][]step{}

	skip := func(err error) error {
		var ve *ValueError
		if errors.As(err, &ve) {
			st.Skipped[ve.Feature+": "+ve.Reason]++
			return nil
		}
		return err
	}
	readLabels := func(fields []string) []string {
		if r.lab == nil {
			return nil
		}
		labels := make([]string, len(r.lab))
		for i, c := range r.lab {
			labels[i] = fields[c]
		}
		return labels
	}

	for {
		fields, line, err := in.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return st, err
		}
		st.InputRows++
		if st.InputRows%opt.ProgressEvery == 0 && opt.Progress != nil {
			opt.Progress(st.InputRows)
		}
		one := make([]float64, width)
		for i, c := range r.src {
			if one[i], err = parseCell(fields[c]); err != nil {
				return st, fmt.Errorf("line %d column %s: %w", line, r.header[c], err)
			}
		}
		var key, tm string
		if r.key >= 0 {
			key = fields[r.key]
		}
		if r.time >= 0 {
			tm = fields[r.time]
		}
		if !s.Sequence() {
			labels := readLabels(fields)
			if err := s.Canonicalize(row, one); err != nil {
				if err := skip(err); err != nil {
					return st, err
				}
				continue
			}
			st.OutputRows++
			if err := emit(key, tm, row, labels); err != nil {
				return st, err
			}
			continue
		}
		labels := readLabels(fields)
		key = strings.Clone(key)
		steps := append(entities[key], step{key: key, time: strings.Clone(tm), raw: one, labels: labels})
		if len(steps) == s.Window+horizon {
			for t := 0; t < s.Window; t++ {
				copy(raw[t*width:], steps[t].raw)
			}
			if err := s.Canonicalize(row, raw); err != nil {
				if err := skip(err); err != nil {
					return st, err
				}
			} else {
				var out []string
				last := steps[s.Window-1]
				if r.lab != nil {
					for i, l := range s.Labels {
						if l.Horizon == 0 {
							out = append(out, last.labels[i])
							continue
						}
						for h := 1; h <= l.Horizon; h++ {
							out = append(out, steps[s.Window-1+h].labels[i])
						}
					}
				}
				st.OutputRows++
				if err := emit(last.key, last.time, row, out); err != nil {
					return st, err
				}
			}
			steps = steps[1:]
		}
		entities[key] = steps
	}
	if opt.Progress != nil {
		opt.Progress(st.InputRows)
	}
	return st, nil
}
