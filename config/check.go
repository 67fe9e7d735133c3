package config

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// check walks the parsed file against Config's types and reports, in document order, what strict
// decoding would refuse, in the file's terms: a key no field has (with the closest known key, or
// the keys of that level) and a value that does not fit its field (a duration without a unit,
// text for a number, a list for a mapping...), each with the file, the line and the YAML path.
// What it misses, the decoder still refuses.
func check(name string, root *yaml.Node) error {
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 {
		return nil // empty: the decoder says so
	}
	c := checker{file: name, anchors: map[*yaml.Node]bool{}}
	c.walk(root.Content[0], reflect.TypeFor[Config](), "")
	return errors.Join(c.errs...)
}

// checker holds the state of one check.
type checker struct {
	file string
	errs []error
	// anchors are the anchored nodes walked: aliases to them (and merges of them) are not walked
	// again, so that a mistake is reported once, where it is written.
	anchors map[*yaml.Node]bool
}

func (c *checker) add(n *yaml.Node, path, msg string) {
	c.errs = append(c.errs, &FieldError{Path: path, Msg: msg, File: c.file, Line: n.Line})
}

var durationType = reflect.TypeFor[time.Duration]()

// shorthand is implemented by mapping types that may be written as one name instead (Route).
type shorthand interface{ shorthand() }

var shorthandType = reflect.TypeFor[shorthand]()

// walk checks the node n, at YAML path path ("" for the top), against the Go type t; see check.
func (c *checker) walk(n *yaml.Node, t reflect.Type, path string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Anchor != "" {
		if c.anchors[n] {
			return
		}
		c.anchors[n] = true
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return // the zero value
	}
	if n.Kind == yaml.ScalarNode && reflect.PointerTo(t).Implements(shorthandType) {
		if n.ShortTag() != "!!str" {
			c.add(n, path, mismatch(n, "a name or a mapping"))
		}
		return // a mapping written as its one name (routes.predict_bandwidth: bandwidth)
	}
	switch {
	case t == durationType:
		if n.Kind != yaml.ScalarNode {
			c.add(n, path, mismatch(n, "a duration (such as 5s or 250ms)"))
			return
		}
		var d time.Duration
		if n.Decode(&d) == nil {
			return
		}
		if tag := n.ShortTag(); tag == "!!int" || tag == "!!float" {
			c.add(n, path, n.Value+" has no unit; write a duration such as 5s or 250ms")
		} else {
			c.add(n, path, fmt.Sprintf("%q is not a duration; write one with a unit, such as 5s or 250ms", n.Value))
		}
	case t.Kind() == reflect.Struct:
		fields := yamlFields(t)
		if n.Kind != yaml.MappingNode {
			want := "a mapping"
			if len(fields) > 0 {
				want += " (keys such as " + fields[0].name + ": ...)"
			}
			c.add(n, path, mismatch(n, want))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.ShortTag() == "!!merge" { // <<: *defaults
				c.walkMerge(v, t, path)
				continue
			}
			at := join(path, k.Value)
			f := slices.IndexFunc(fields, func(f field) bool { return f.name == k.Value })
			if f < 0 {
				c.add(k, at, unknownKey(k.Value, path, fields))
				continue
			}
			c.walk(v, fields[f].typ, at)
		}
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			c.add(n, path, mismatch(n, "a list"))
			return
		}
		for i, e := range n.Content {
			c.walk(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			c.add(n, path, mismatch(n, "a mapping"))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			c.walk(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value))
		}
	default:
		want := scalarKind(t)
		if n.Kind != yaml.ScalarNode {
			c.add(n, path, mismatch(n, want))
			return
		}
		if n.Decode(reflect.New(t).Interface()) != nil {
			if n.ShortTag() == "!!int" && strings.Contains(want, "integer") {
				c.add(n, path, fmt.Sprintf("%s is out of range", n.Value))
			} else {
				c.add(n, path, mismatch(n, want))
			}
		}
	}
}

// walkMerge checks the value of a merge key (<<), a mapping or a list of them, against t.
func (c *checker) walkMerge(v *yaml.Node, t reflect.Type, path string) {
	for v.Kind == yaml.AliasNode && v.Alias != nil {
		v = v.Alias
	}
	if v.Kind == yaml.SequenceNode {
		for _, e := range v.Content {
			c.walk(e, t, path)
		}
		return
	}
	c.walk(v, t, path)
}

// field is a struct field as YAML names it.
type field struct {
	name string
	typ  reflect.Type
}

// yamlFields lists the fields of struct type t that YAML decodes, in order, by their YAML names.
func yamlFields(t reflect.Type) []field {
	var out []field
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case name == "-":
			continue
		case strings.Contains(","+opts+",", ",inline,"):
			out = append(out, yamlFields(f.Type)...)
			continue
		case name == "":
			name = strings.ToLower(f.Name)
		}
		out = append(out, field{name, f.Type})
	}
	return out
}

// unknownKey says that key is not one of fields (the keys at YAML path level), suggesting the
// closest known key when one is close, else listing them.
func unknownKey(key, level string, fields []field) string {
	best, bestD := "", max(1, min(3, len(key)/3))+1
	for _, f := range fields {
		if d := editDistance(strings.ToLower(key), f.name); d < bestD {
			best, bestD = f.name, d
		}
	}
	if best != "" {
		return "unknown key; did you mean " + best + "?"
	}
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.name
	}
	if level == "" {
		return "unknown key; the top-level keys are " + strings.Join(names, ", ")
	}
	return "unknown key; the keys of " + level + " are " + strings.Join(names, ", ")
}

// editDistance is the Levenshtein distance of a and b, in bytes.
func editDistance(a, b string) int {
	prev, cur := make([]int, len(b)+1), make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// mismatch says that node n is not the want (a mapping, a list, an integer...) its field needs.
func mismatch(n *yaml.Node, want string) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping where " + want + " belongs"
	case yaml.SequenceNode:
		return "a list where " + want + " belongs"
	}
	if n.ShortTag() == "!!str" {
		return fmt.Sprintf("%q is not %s", n.Value, want)
	}
	return n.Value + " is not " + want
}

// scalarKind says what a value of scalar type t is written as.
func scalarKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	}
	return "a " + t.String()
}

// join appends key to the YAML path path.
func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
