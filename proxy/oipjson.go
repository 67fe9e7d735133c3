package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/backends/oip"
)

// The REST form's request decoder. It reads a v2 inference request as strictly as /api/v1 reads
// its bodies: one JSON object and nothing after it; keys matched exactly (case included), each at
// most once in any object, unknown ones refused (a "parameters" object takes any keys, of any JSON
// value); and each input's data a JSON array, flat (as many scalars as its shape holds) or nested
// exactly as its shape, dimension by dimension. JSON null stands for a missing value (NaN) in the
// data of an FP32 or FP64 input other than the canonical "features" tensor, that is in the spec's
// raw features, whose missing-value policy then applies; null is refused everywhere else, and so
// is the string "NaN" (the protocol's JSON has no NaN). A null key value is the key left out.
//
// Every error is a FieldError naming the field ("inputs[0].data", "parameters.x", "body" for the
// JSON syntax) and the reason. The decoder allocates the tensors' names and typed data, the
// request's id and the output names; keys, numbers and unescaped strings are read in place.

// maxJSONDepth bounds the nesting of objects and arrays in a request body.
const maxJSONDepth = 128

// decodeRESTInfer decodes a v2 REST inference request body into c's ID, Inputs and Outputs.
func decodeRESTInfer(body []byte, c *InferCall) error {
	p := &oipScan{jsonScan: jsonScan{b: body}}
	p.jsonScan.skip()
	if p.i == len(body) {
		return invalid("body", "empty; want a JSON object (a v2 inference request)")
	}
	if body[p.i] != '{' {
		return invalid("body", fmt.Sprintf("%s, not a JSON object; want a v2 inference request", p.kind()))
	}
	var seen uint8
	err := p.object(func(key []byte) error {
		bit, err := p.member(key, requestFields, &seen, "a v2 inference request has id, parameters, inputs and outputs")
		if err != nil {
			return err
		}
		defer p.pop()
		switch bit {
		case 1:
			if p.null() {
				return nil
			}
			s, err := p.stringValue()
			c.ID = string(s)
			return err
		case 2:
			return p.parameters()
		case 4:
			if p.null() {
				return nil
			}
			return p.array(func(k int) error {
				p.pushIndex(k)
				defer p.pop()
				t, err := p.input()
				if err == nil {
					c.Inputs = append(c.Inputs, t)
				}
				return err
			})
		default:
			if p.null() {
				return nil
			}
			return p.array(func(k int) error {
				p.pushIndex(k)
				defer p.pop()
				name, err := p.output()
				if err == nil {
					c.Outputs = append(c.Outputs, name)
				}
				return err
			})
		}
	})
	if err != nil {
		return err
	}
	p.jsonScan.skip()
	if p.i < len(body) {
		if ch := body[p.i]; ch == '{' || ch == '[' {
			return invalid("body", fmt.Sprintf("a second JSON document follows the request at offset %d; send one JSON object", p.i))
		}
		return invalid("body", fmt.Sprintf("trailing data after the JSON object at offset %d", p.i))
	}
	return nil
}

// input decodes one input object: its name, datatype, shape and data (parameters are read and
// dropped). The data is located on the first pass and decoded once the datatype and shape are
// known, whatever the order of the keys.
func (p *oipScan) input() (backends.Tensor, error) {
	if p.peek() != '{' {
		return backends.Tensor{}, p.want("an object")
	}
	var (
		seen               uint8
		name, dtype        []byte
		shape              []int64
		hasShape           bool
		dataStart, dataEnd = -1, -1
	)
	err := p.object(func(key []byte) error {
		bit, err := p.member(key, inputFields, &seen, "an input has name, shape, datatype, parameters and data")
		if err != nil {
			return err
		}
		defer p.pop()
		if bit != 8 && p.null() {
			return nil
		}
		switch bit {
		case 1:
			name, err = p.stringValue()
		case 2:
			hasShape = true
			shape, err = p.shape()
		case 4:
			dtype, err = p.stringValue()
		case 8:
			err = p.parameters()
		default:
			p.jsonScan.skip()
			dataStart = p.i
			err = p.skip()
			dataEnd = p.i
		}
		return err
	})
	if err != nil {
		return backends.Tensor{}, err
	}
	at := p.field()
	if len(name) == 0 {
		return backends.Tensor{}, invalid(at+".name", "missing or empty")
	}
	dt, ok := backends.ParseDType(string(dtype))
	if !ok {
		return backends.Tensor{}, invalid(at+".datatype", fmt.Sprintf("%s is not carried by the sidecar; use one of %v", clip(string(dtype)), backends.DTypeNames()))
	}
	if !hasShape {
		return backends.Tensor{}, invalid(at+".shape", "missing; give the tensor's dimensions, such as [N, 4]")
	}
	n := 1
	for _, d := range shape {
		if d < 0 || d > oip.MaxElements || n*int(d) > oip.MaxElements {
			return backends.Tensor{}, invalid(at+".shape", fmt.Sprintf("%v: dimensions must be 0 or more, with at most %d elements", shape, oip.MaxElements))
		}
		n *= int(d)
	}
	if dataStart < 0 {
		return backends.Tensor{}, invalid(at+".data", "missing")
	}
	t := backends.Tensor{Name: string(name), DType: dt, Shape: shape}
	d := &tensorData{p: oipScan{jsonScan: jsonScan{b: p.b[:dataEnd], i: dataStart}}, shape: shape, n: n,
		elemCtx: elemCtx{dt: dt, nullOK: (dt == backends.FP32 || dt == backends.FP64) && t.Name != inputFeatures}}
	switch dt {
	case backends.FP32:
		t.Data, err = decodeElems(d, elemFloat32)
	case backends.FP64:
		t.Data, err = decodeElems(d, elemFloat64)
	case backends.INT32:
		t.Data, err = decodeElems(d, elemInt32)
	case backends.INT64:
		t.Data, err = decodeElems(d, elemInt64)
	case backends.BOOL:
		t.Data, err = decodeElems(d, elemBool)
	case backends.BYTES:
		t.Data, err = decodeElems(d, elemBytes)
	}
	if err != nil {
		return backends.Tensor{}, invalid(at+".data", err.Error())
	}
	return t, nil
}

// output decodes one requested output object and returns its name.
func (p *oipScan) output() (string, error) {
	if p.peek() != '{' {
		return "", p.want("an object")
	}
	var seen uint8
	var name []byte
	err := p.object(func(key []byte) error {
		bit, err := p.member(key, outputFields, &seen, "an output has name and parameters")
		if err != nil {
			return err
		}
		defer p.pop()
		if bit == 2 {
			return p.parameters()
		}
		if p.null() {
			return nil
		}
		name, err = p.stringValue()
		return err
	})
	if err != nil {
		return "", err
	}
	if len(name) == 0 {
		return "", invalid(p.field()+".name", "missing or empty")
	}
	return string(name), nil
}

// parameters reads a parameters object (or null): any keys, each once, of any JSON value.
func (p *oipScan) parameters() error {
	if p.null() {
		return nil
	}
	if p.peek() != '{' {
		return p.want("an object of parameters")
	}
	return p.skip()
}

// shape reads an array of integers.
func (p *oipScan) shape() ([]int64, error) {
	shape := make([]int64, 0, 4)
	err := p.array(func(k int) error {
		if c := p.peek(); c == '{' || c == '[' {
			return invalid(p.field(), fmt.Sprintf("element %d is %s, want an integer", k, p.kind()))
		}
		tok, b, err := p.scalar()
		if err != nil {
			return err
		}
		if tok != tokNumber {
			return invalid(p.field(), fmt.Sprintf("element %d is %s, want an integer", k, tok))
		}
		v, err := strconv.ParseInt(string(b), 10, 64)
		if err != nil {
			return invalid(p.field(), fmt.Sprintf("element %d (%s) is not an integer of 64 bits", k, clipToken(b)))
		}
		shape = append(shape, v)
		return nil
	})
	return shape, err
}

// ---- tensor data ----

// tensorData is one input's data being decoded: p is positioned at its value, which the first
// pass checked to be well-formed JSON.
type tensorData struct {
	p     oipScan
	shape []int64
	n     int // elements the shape holds
	elemCtx
	idx []int  // the index of each enclosing array while nested
	why string // a structural error's reason, set by walk
}

// elemCtx is what converting an element needs to know of its tensor.
type elemCtx struct {
	dt     backends.DType
	nullOK bool // null reads as NaN (FP32 and FP64 raw features)
}

// An elem function converts one scalar of tensor data; on error it returns the reason, which
// names the element as "element %d".
type elemFunc[T any] func(d elemCtx, k int, tok jsonTok, b []byte) (T, error)

// decodeElems decodes d's data into a []T of d.n elements.
func decodeElems[T any](d *tensorData, conv elemFunc[T]) ([]T, error) {
	// The shape may claim far more elements than the data holds: allocate for what the data
	// can hold (a scalar and a comma take at least two bytes).
	out := make([]T, 0, min(d.n, (len(d.p.b)-d.p.i)/2+1))
	var cerr error
	put := func(k int) bool {
		if d.p.peek() == '{' {
			cerr = fmt.Errorf("element %d is an object; tensor data holds numbers, booleans or strings (datatype %s)", k, d.dt)
			return false
		}
		tok, b, err := d.p.scalar()
		if err != nil {
			cerr = err
			return false
		}
		if k >= d.n {
			return true // counted, not kept: the count is reported at the end
		}
		v, err := conv(d.elemCtx, k, tok, b)
		if err != nil {
			cerr = err
			return false
		}
		out = append(out, v)
		return true
	}
	if !d.walk(put) {
		if cerr != nil {
			return nil, cerr
		}
		return nil, errors.New(d.why)
	}
	return out, nil
}

// walk reads the data array, flat or nested, calling put for each scalar in row-major order with
// its index. It returns false when put does, or with d.why set when the data's structure does
// not fit the shape.
func (d *tensorData) walk(put func(k int) bool) bool {
	p := &d.p
	if p.peek() != '[' {
		d.why = fmt.Sprintf("%s, not an array; give the elements flat or nested as shape %v", p.kind(), d.shape)
		return false
	}
	// Nested when the first element is an array.
	at := p.i
	p.i++
	nested := p.peek() == '['
	p.i = at
	if !nested {
		return d.flat(put)
	}
	if len(d.shape) == 0 {
		d.why = "nesting does not match shape []: data[0] is an array, and a scalar tensor has no dimensions"
		return false
	}
	d.idx = make([]int, len(d.shape))
	k := 0
	return d.nested(0, &k, put)
}

func (d *tensorData) flat(put func(k int) bool) bool {
	p := &d.p
	p.i++ // [
	k := 0
	if p.peek() == ']' {
		p.i++
	} else {
		for {
			if p.peek() == '[' {
				d.why = fmt.Sprintf("element %d is an array; give the data flat, or nested exactly as shape %v", k, d.shape)
				return false
			}
			if !put(k) {
				return false
			}
			k++
			if p.byte(']') {
				break
			}
			p.byte(',')
		}
	}
	if k != d.n {
		d.why = fmt.Sprintf("%d elements, shape %v needs %d", k, d.shape, d.n)
		return false
	}
	return true
}

// nested reads the array at depth dim, whose length must be shape[dim].
func (d *tensorData) nested(dim int, k *int, put func(k int) bool) bool {
	p := &d.p
	want := d.shape[dim]
	leaf := dim == len(d.shape)-1
	p.i++ // [
	c := 0
	if p.peek() == ']' {
		p.i++
	} else {
		for {
			if int64(c) == want {
				d.why = fmt.Sprintf("nesting does not match shape %v: %s has more than %d elements, the size of dimension %d", d.shape, d.path(dim), want, dim)
				return false
			}
			d.idx[dim] = c
			isArray := p.peek() == '['
			switch {
			case leaf && isArray:
				d.why = fmt.Sprintf("nesting does not match shape %v: %s is an array, a level deeper than the shape", d.shape, d.path(dim+1))
				return false
			case !leaf && !isArray:
				d.why = fmt.Sprintf("nesting does not match shape %v: %s is %s where the shape needs an array of %d", d.shape, d.path(dim+1), p.kind(), d.shape[dim+1])
				return false
			case leaf:
				if !put(*k) {
					return false
				}
				*k++
			default:
				if !d.nested(dim+1, k, put) {
					return false
				}
			}
			c++
			if p.byte(']') {
				break
			}
			p.byte(',')
		}
	}
	if int64(c) != want {
		d.why = fmt.Sprintf("nesting does not match shape %v: %s has %d elements, dimension %d is %d", d.shape, d.path(dim), c, dim, want)
		return false
	}
	return true
}

// path names the array or element at depth dim, such as data[1][0].
func (d *tensorData) path(dim int) string {
	var b strings.Builder
	b.WriteString("data")
	for _, i := range d.idx[:dim] {
		fmt.Fprintf(&b, "[%d]", i)
	}
	return b.String()
}

// null reads a null element: NaN where allowed, else the reason it is not.
func nullElem(d elemCtx, k int) (float64, error) {
	switch {
	case d.nullOK:
		return math.NaN(), nil
	case d.dt == backends.FP32 || d.dt == backends.FP64:
		return 0, fmt.Errorf("element %d is null: null (missing) is accepted only in the spec's raw features; canonical %q rows hold finite numbers", k, inputFeatures)
	}
	return 0, fmt.Errorf("element %d is null: null (missing) is accepted only in FP32 or FP64 raw features, not %s", k, d.dt)
}

func wrongKind(d elemCtx, k int, tok jsonTok, b []byte, want string) error {
	if tok == tokString && (d.dt == backends.FP32 || d.dt == backends.FP64) && strings.EqualFold(string(b), "nan") {
		return fmt.Errorf("element %d is the string %q: the protocol's JSON has no NaN; send null for a missing value", k, b)
	}
	return fmt.Errorf("element %d is %s, want %s (datatype %s)", k, tok, want, d.dt)
}

func elemFloat(d elemCtx, k int, tok jsonTok, b []byte, bits int) (float64, error) {
	switch tok {
	case tokNull:
		return nullElem(d, k)
	case tokNumber:
		v, err := strconv.ParseFloat(string(b), bits)
		if err != nil {
			return 0, fmt.Errorf("element %d (%s): out of range (datatype %s)", k, clipToken(b), d.dt)
		}
		return v, nil
	}
	return 0, wrongKind(d, k, tok, b, "a number")
}

func elemFloat32(d elemCtx, k int, tok jsonTok, b []byte) (float32, error) {
	v, err := elemFloat(d, k, tok, b, 32)
	return float32(v), err
}

func elemFloat64(d elemCtx, k int, tok jsonTok, b []byte) (float64, error) {
	return elemFloat(d, k, tok, b, 64)
}

func elemInt(d elemCtx, k int, tok jsonTok, b []byte, bits int) (int64, error) {
	switch tok {
	case tokNull:
		_, err := nullElem(d, k)
		return 0, err
	case tokNumber:
		v, err := strconv.ParseInt(string(b), 10, bits)
		if err != nil {
			return 0, fmt.Errorf("element %d (%s): not an integer of %d bits (datatype %s)", k, clipToken(b), bits, d.dt)
		}
		return v, nil
	}
	return 0, wrongKind(d, k, tok, b, "an integer")
}

func elemInt32(d elemCtx, k int, tok jsonTok, b []byte) (int32, error) {
	v, err := elemInt(d, k, tok, b, 32)
	return int32(v), err
}

func elemInt64(d elemCtx, k int, tok jsonTok, b []byte) (int64, error) {
	return elemInt(d, k, tok, b, 64)
}

func elemBool(d elemCtx, k int, tok jsonTok, b []byte) (bool, error) {
	switch tok {
	case tokTrue, tokFalse:
		return tok == tokTrue, nil
	case tokNull:
		_, err := nullElem(d, k)
		return false, err
	}
	return false, wrongKind(d, k, tok, b, "true or false")
}

func elemBytes(d elemCtx, k int, tok jsonTok, b []byte) ([]byte, error) {
	switch tok {
	case tokString:
		return append([]byte(nil), b...), nil
	case tokNull:
		_, err := nullElem(d, k)
		return nil, err
	}
	return nil, wrongKind(d, k, tok, b, "a string")
}

// ---- scanner ----

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
