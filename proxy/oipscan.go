package proxy

import (
	"encoding/json"
	"fmt"
	"strings"
)

// jsonTok is the kind of a JSON scalar.
type jsonTok uint8

const (
	tokNumber jsonTok = iota
	tokString
	tokTrue
	tokFalse
	tokNull
)

func (t jsonTok) String() string {
	return [...]string{"a number", "a string", "true", "false", "null"}[t]
}

// oipScan reads a JSON body in place, keeping the path of the field it is in for errors.
type oipScan struct {
	jsonScan // the body and the read position; its peek and byte read punctuation after whitespace
	depth    int
	path     []pathSeg
}

// pathSeg is one step of a field path: a key, or an index when key is "" and index >= 0.
type pathSeg struct {
	key   string
	index int
}

func (p *oipScan) push(key string) { p.path = append(p.path, pathSeg{key: key, index: -1}) }
func (p *oipScan) pushIndex(k int) { p.path = append(p.path, pathSeg{index: k}) }
func (p *oipScan) pop()            { p.path = p.path[:len(p.path)-1] }
func (p *oipScan) fieldKey(k string) string {
	if f := p.field(); f != "" {
		return f + "." + k
	}
	return k
}

// field renders the path, such as inputs[0].parameters.x.
func (p *oipScan) field() string {
	var b strings.Builder
	for _, s := range p.path {
		if s.index >= 0 {
			fmt.Fprintf(&b, "[%d]", s.index)
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(s.key)
	}
	return b.String()
}

func (p *oipScan) unknown(key []byte, has string) error {
	return invalid(p.fieldKey(keyName(string(key))), "unknown field; "+has)
}

func (p *oipScan) twice(key string) error {
	return invalid(p.fieldKey(key), "given twice; a key may appear once in an object")
}

func (p *oipScan) tooDeep() error {
	f := p.field()
	if len(f) > 64 {
		f = f[:64] + "..."
	}
	return invalid(f, fmt.Sprintf("nested deeper than %d arrays and objects", maxJSONDepth))
}

// keyName is a key as a field path shows it: as is when it is a short plain name, else quoted
// and clipped.
func keyName(k string) string {
	plain := k != "" && len(k) <= clipBytes
	for i := 0; plain && i < len(k); i++ {
		c := k[i]
		plain = c == '_' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
	}
	if plain {
		return k
	}
	return clip(k)
}

// clipToken cuts a number's text for an error message.
func clipToken(b []byte) string {
	if len(b) <= clipBytes {
		return string(b)
	}
	return fmt.Sprintf("%s... (%d digits)", b[:clipBytes], len(b))
}

// syntax reports malformed JSON at the current offset.
func (p *oipScan) syntax(what string) error {
	if p.i >= len(p.b) {
		return invalid("body", "invalid JSON: unexpected end, "+what)
	}
	return invalid("body", fmt.Sprintf("invalid JSON at offset %d: %s", p.i, what))
}

// want reports a value of the wrong kind at the current field.
func (p *oipScan) want(what string) error {
	if k := p.kind(); k != "" {
		return invalid(p.field(), fmt.Sprintf("%s, want %s", k, what))
	}
	return p.syntax("want a value")
}

// kind describes the value that starts next, or "" when none does.
func (p *oipScan) kind() string {
	switch p.peek() {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return "a number"
	}
	return ""
}

// The members of the request's objects, in order: a member's bit in its object's seen set is
// 1 << its index.
var (
	requestFields = []string{"id", "parameters", "inputs", "outputs"}
	inputFields   = []string{"name", "shape", "datatype", "parameters", "data"}
	outputFields  = []string{"name", "parameters"}
)

// member checks an object's key against its members (fields): an unknown or repeated key is
// refused. It returns the key's bit and pushes the key on the path; pop it when done.
func (p *oipScan) member(key []byte, fields []string, seen *uint8, help string) (uint8, error) {
	for i, f := range fields {
		if string(key) == f {
			bit := uint8(1) << i
			if *seen&bit != 0 {
				return 0, p.twice(f)
			}
			*seen |= bit
			p.push(f)
			return bit, nil
		}
	}
	return 0, p.unknown(key, help)
}

// null reads a null if one comes next.
func (p *oipScan) null() bool {
	if p.peek() == 'n' && p.literal("null") {
		return true
	}
	return false
}

func (p *oipScan) literal(w string) bool {
	if len(p.b)-p.i >= len(w) && string(p.b[p.i:p.i+len(w)]) == w {
		p.i += len(w)
		return true
	}
	return false
}

// object reads an object, calling fn with each key once the colon is read; fn reads the value.
func (p *oipScan) object(fn func(key []byte) error) error {
	if !p.byte('{') {
		return p.want("an object")
	}
	if p.depth++; p.depth > maxJSONDepth {
		return p.tooDeep()
	}
	defer func() { p.depth-- }()
	if p.byte('}') {
		return nil
	}
	for {
		if p.peek() != '"' {
			return p.syntax("want a key (a string)")
		}
		key, err := p.str()
		if err != nil {
			return err
		}
		if !p.byte(':') {
			return p.syntax("want ':' after a key")
		}
		if err := fn(key); err != nil {
			return err
		}
		if p.byte('}') {
			return nil
		}
		if !p.byte(',') {
			return p.syntax("want ',' or '}' in an object")
		}
	}
}

// array reads an array, calling fn with each element's index; fn reads the element.
func (p *oipScan) array(fn func(k int) error) error {
	if !p.byte('[') {
		return p.want("an array")
	}
	if p.depth++; p.depth > maxJSONDepth {
		return p.tooDeep()
	}
	defer func() { p.depth-- }()
	if p.byte(']') {
		return nil
	}
	for k := 0; ; k++ {
		if err := fn(k); err != nil {
			return err
		}
		if p.byte(']') {
			return nil
		}
		if !p.byte(',') {
			return p.syntax("want ',' or ']' in an array")
		}
	}
}

// skip reads any value, checking that it is well-formed and that no object in it repeats a key.
func (p *oipScan) skip() error {
	switch p.peek() {
	case '{':
		var keys map[string]struct{}
		return p.object(func(key []byte) error {
			if keys == nil {
				keys = make(map[string]struct{}, 4)
			}
			if _, dup := keys[string(key)]; dup {
				return p.twice(keyName(string(key)))
			}
			keys[string(key)] = struct{}{}
			p.push(keyName(string(key)))
			defer p.pop()
			return p.skip()
		})
	case '[':
		return p.array(func(k int) error {
			p.pushIndex(k) // for a duplicate key's path
			defer p.pop()
			return p.skip()
		})
	}
	_, _, err := p.scalar()
	return err
}

// stringValue reads a string value.
func (p *oipScan) stringValue() ([]byte, error) {
	if p.peek() != '"' {
		return nil, p.want("a string")
	}
	return p.str()
}

// scalar reads a string, number, true, false or null: its kind and text (a string's decoded
// contents, a number's literal).
func (p *oipScan) scalar() (jsonTok, []byte, error) {
	switch c := p.peek(); {
	case c == '"':
		s, err := p.str()
		return tokString, s, err
	case c == 't' && p.literal("true"):
		return tokTrue, nil, nil
	case c == 'f' && p.literal("false"):
		return tokFalse, nil, nil
	case c == 'n' && p.literal("null"):
		return tokNull, nil, nil
	case c == '-' || (c >= '0' && c <= '9'):
		if b, ok := p.numberBytes(); ok {
			return tokNumber, b, nil
		}
	}
	return 0, nil, p.syntax("want a value")
}

// str reads a string at p.i (a '"'). The result is the body's own bytes when the string is plain
// ASCII without escapes, else a decoded copy (encoding/json's decoding: escapes resolved, invalid
// UTF-8 replaced).
func (p *oipScan) str() ([]byte, error) {
	start := p.i
	plain := true
	for j := start + 1; j < len(p.b); j++ {
		switch c := p.b[j]; {
		case c == '"':
			p.i = j + 1
			if plain {
				return p.b[start+1 : j], nil
			}
			var s string
			if err := json.Unmarshal(p.b[start:j+1], &s); err != nil {
				p.i = start
				return nil, p.syntax("bad string: " + strings.TrimPrefix(err.Error(), "json: "))
			}
			return []byte(s), nil
		case c == '\\':
			plain = false
			j++ // the escaped byte; json.Unmarshal checks the escape
		case c < 0x20:
			p.i = j
			return nil, p.syntax("control character in a string")
		case c >= 0x80:
			plain = false
		}
	}
	p.i = len(p.b)
	return nil, p.syntax("unterminated string")
}
