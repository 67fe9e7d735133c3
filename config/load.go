package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// lineRE matches yaml.v3's "line N: " prefix, rewritten as "N: " after the file name.
var lineRE = regexp.MustCompile(`^line (\d+):`)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// FieldError is a validation error at a YAML path; Load adds the file and line.
type FieldError struct {
	Path string
	Msg  string
	File string
	Line int
}

func (e *FieldError) Error() string {
	msg := e.Msg
	if e.Path != "" {
		msg = e.Path + ": " + msg
	}
	if e.File != "" && e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, msg)
	}
	return msg
}

// Load reads a config file. An empty path loads the embedded default from embedded (the
// examples' files: configs/default.yaml and what it names).
func Load(path string, embedded fs.FS) (*Config, error) {
	if path == "" {
		path = EmbeddedPrefix + "configs/default.yaml"
	}
	b, err := ReadFile(path, "", embedded)
	if err != nil {
		return nil, err
	}
	c, err := Parse(path, b)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Parse decodes b strictly (unknown keys are errors), fills defaults and validates. name is used
// in error messages (the file name). Each error names the file, the line and the YAML path; an
// unknown key comes with the closest known key (or the keys of its level), a value of the wrong
// type with what to write instead (a duration with its unit, such as 5s).
func Parse(name string, b []byte) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, errors.New(name + ":" + lineRE.ReplaceAllString(strings.TrimPrefix(err.Error(), "yaml: "), "$1:"))
	}
	if err := check(name, &root); err != nil {
		return nil, err
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: the file is empty", name)
		}
		var te *yaml.TypeError
		if errors.As(err, &te) {
			var errs []error
			for _, e := range te.Errors {
				errs = append(errs, errors.New(name+":"+lineRE.ReplaceAllString(e, "$1:")))
			}
			return nil, errors.Join(errs...)
		}
		return nil, fmt.Errorf("%s: %s", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: holds more than one YAML document (a second ---); give one config", name)
	}
	c.Source = name
	c.root = &root
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		var out []error
		for _, e := range unjoin(err) {
			var fe *FieldError
			if errors.As(e, &fe) {
				fe.File = name
				fe.Line = lineOf(&root, fe.Path)
			}
			out = append(out, e)
		}
		return nil, errors.Join(out...)
	}
	return &c, nil
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// Line is the line of a YAML path such as models[1].pool.sessions in the file c was parsed from,
// or of its nearest ancestor there (for a model added in code: the models key); 0 for a Config
// built in code. Safe for concurrent use (c's file is not changed after Parse).
func (c *Config) Line(path string) int {
	if c.root == nil {
		return 0
	}
	return lineOf(c.root, path)
}

// Pos is where a YAML path is in the file c came from, as an error message's prefix: "file:line",
// or the file alone when no line is known (see Line), or "config" for a Config built in code.
func (c *Config) Pos(path string) string {
	name := c.Source
	if name == "" {
		name = "config"
	}
	if line := c.Line(path); line > 0 {
		return fmt.Sprintf("%s:%d", name, line)
	}
	return name
}

// lineOf finds the line of a path such as models[1].pool.sessions in a YAML document, falling
// back to the nearest ancestor present; 0 when nothing matches.
func lineOf(root *yaml.Node, path string) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, part := range strings.Split(path, ".") {
		key, idx := part, -1
		if i := strings.IndexByte(part, '['); i >= 0 && strings.HasSuffix(part, "]") {
			key = part[:i]
			idx, _ = strconv.Atoi(part[i+1 : len(part)-1])
		}
		next := (*yaml.Node)(nil)
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == key {
					line = n.Content[i].Line
					next = n.Content[i+1]
					break
				}
			}
		}
		if next == nil {
			return line
		}
		n = next
		if idx >= 0 {
			if n.Kind != yaml.SequenceNode || idx >= len(n.Content) {
				return line
			}
			n = n.Content[idx]
			line = n.Line
		}
	}
	return line
}
