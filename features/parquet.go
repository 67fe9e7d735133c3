package features

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/parquet-go/parquet-go"
)

// Parquet files: the offline transform reads raw records from and writes matrices to Parquet as
// well as CSV, chosen by the file extension (.parquet). A matrix written as Parquet carries the
// spec's name and fingerprint in its key/value metadata (MetaFingerprint), its features as FLOAT
// (the exact float32 values), and entity, time and labels as strings.

// MetaFingerprint and MetaSpec are the Parquet key/value metadata keys of a matrix.
const (
	MetaFingerprint = "novacron.spec_fingerprint"
	MetaSpec        = "novacron.spec_name"
)

// IsParquet reports whether a path names a Parquet file.
func IsParquet(path string) bool { return strings.HasSuffix(strings.ToLower(path), ".parquet") }

// TransformFile transforms the raw file at inPath into the matrix at outPath, each CSV or Parquet
// by its extension, streaming both.
func (s *Spec) TransformFile(inPath, outPath string, opt TransformOptions) (TransformStats, error) {
	in, err := os.Open(inPath)
	if err != nil {
		return TransformStats{}, err
	}
	defer in.Close()
	out, err := os.Create(outPath)
	if err != nil {
		return TransformStats{}, err
	}
	var st TransformStats
	switch {
	case !IsParquet(inPath) && !IsParquet(outPath):
		st, err = s.Transform(opt.wrap(in), out, opt)
	default:
		var src recordSource
		if IsParquet(inPath) {
			info, serr := in.Stat()
			if serr != nil {
				out.Close()
				return st, serr
			}
			src, err = newParquetSource(in, info.Size())
		} else {
			src, err = newCSVSource(opt.wrap(in))
		}
		if err == nil {
			var sink recordSink
			if IsParquet(outPath) {
				sink = s.newParquetSink(out)
			} else {
				sink = &csvSink{w: newCSVWriter(out)}
			}
			st, err = s.transform(src, sink, opt)
		}
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return st, err
}

// ParquetRows is the number of rows a Parquet file holds, from its footer.
func ParquetRows(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return 0, err
	}
	pf, err := parquet.OpenFile(f, info.Size())
	if err != nil {
		return 0, fmt.Errorf("parquet: %w", err)
	}
	return pf.NumRows(), nil
}

// parquetSource reads the rows of a Parquet file as text cells, column by column in the file's
// leaf order; a null is an empty cell (a missing value).
type parquetSource struct {
	r    *parquet.Reader
	head []string
	rows []parquet.Row
	rec  []string
	n    int
}

func newParquetSource(f io.ReaderAt, size int64) (*parquetSource, error) {
	pf, err := parquet.OpenFile(f, size)
	if err != nil {
		return nil, fmt.Errorf("parquet: %w", err)
	}
	r := parquet.NewReader(pf)
	var head []string
	for _, path := range r.Schema().Columns() {
		name := strings.Join(path, ".")
		leaf, _ := r.Schema().Lookup(path...)
		if leaf.MaxRepetitionLevel > 0 {
			return nil, fmt.Errorf("parquet: column %s is repeated (a list or map); a raw file needs one value per column and row", name)
		}
		switch leaf.Node.Type().Kind() {
		case parquet.Int96, parquet.FixedLenByteArray:
			return nil, fmt.Errorf("parquet: column %s has physical type %v, which the transform does not read; use a number or a string", name, leaf.Node.Type().Kind())
		}
		head = append(head, name)
	}
	return &parquetSource{r: r, head: head, rows: make([]parquet.Row, 1), rec: make([]string, len(head))}, nil
}

func (p *parquetSource) header() []string { return p.head }

func (p *parquetSource) next() ([]string, int, error) {
	n, err := p.r.ReadRows(p.rows)
	if n == 0 {
		if err == nil {
			err = io.EOF
		}
		return nil, 0, err
	}
	p.n++
	for i := range p.rec {
		p.rec[i] = ""
	}
	for _, v := range p.rows[0] {
		c := v.Column()
		if c < 0 || c >= len(p.rec) || v.IsNull() {
			continue
		}
		switch v.Kind() {
		case parquet.Double:
			p.rec[c] = strconv.FormatFloat(v.Double(), 'g', -1, 64)
		case parquet.Float:
			p.rec[c] = strconv.FormatFloat(float64(v.Float()), 'g', -1, 32)
		case parquet.Int32:
			p.rec[c] = strconv.FormatInt(int64(v.Int32()), 10)
		case parquet.Int64:
			p.rec[c] = strconv.FormatInt(v.Int64(), 10)
		case parquet.Boolean:
			p.rec[c] = "0"
			if v.Boolean() {
				p.rec[c] = "1"
			}
		default:
			p.rec[c] = string(v.ByteArray())
		}
	}
	return p.rec, p.n, nil
}

// parquetSink writes a matrix: feature columns FLOAT, the others optional strings.
type parquetSink struct {
	w       *parquet.Writer
	columns []string
	isFloat []bool
	order   []int // schema leaf index of each matrix column
	row     parquet.Row
	header  bool
}

func (s *Spec) newParquetSink(out io.Writer) *parquetSink {
	cols := s.Columns()
	g := parquet.Group{}
	isFloat := make([]bool, len(cols))
	for i, c := range cols {
		if strings.HasPrefix(c, "label.") || c == s.Entity || c == s.Time {
			g[c] = parquet.Optional(parquet.String())
		} else {
			g[c] = parquet.Leaf(parquet.FloatType)
			isFloat[i] = true
		}
	}
	schema := parquet.NewSchema(s.Name, g)
	leaf := map[string]int{}
	for i, path := range schema.Columns() {
		leaf[strings.Join(path, ".")] = i
	}
	order := make([]int, len(cols))
	for i, c := range cols {
		order[i] = leaf[c]
	}
	w := parquet.NewWriter(out, schema, parquet.KeyValueMetadata(MetaFingerprint, s.Fingerprint()), parquet.KeyValueMetadata(MetaSpec, s.Name))
	return &parquetSink{w: w, columns: cols, isFloat: isFloat, order: order, row: make(parquet.Row, len(cols))}
}

func (p *parquetSink) write(rec []string) error {
	if !p.header { // the first record is the header: the schema has it already
		p.header = true
		return nil
	}
	for i, cell := range rec {
		var v parquet.Value
		switch {
		case p.isFloat[i]:
			f, err := strconv.ParseFloat(cell, 32)
			if err != nil {
				return fmt.Errorf("parquet: column %s: %w", p.columns[i], err)
			}
			v = parquet.FloatValue(float32(f)).Level(0, 0, p.order[i])
		case cell == "":
			v = parquet.NullValue().Level(0, 0, p.order[i])
		default:
			v = parquet.ByteArrayValue([]byte(cell)).Level(0, 1, p.order[i])
		}
		p.row[p.order[i]] = v
	}
	_, err := p.w.WriteRows([]parquet.Row{p.row})
	return err
}

func (p *parquetSink) close() error { return p.w.Close() }
