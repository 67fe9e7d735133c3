package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The README's examples call the sidecar at these addresses: the embedded default's.
const (
	readmeGRPC = "127.0.0.1:50051"
	readmeHTTP = "127.0.0.1:8080"
)

// readmeSkip marks a shell block that is not run, on the line just before its fence, with the
// reason: <!-- README test: not run: REASON -->. The README has two: `make run` / `make test`
// (the first serves on the fixed ports until stopped, the second is what runs this test) and
// `features transform` (it needs the reader's own raw.csv and writes into the current folder).
const readmeSkip = "<!-- README test: not run:"

// example is one command of a README shell block, and its documented output, if any.
type example struct {
	line int    // 1-based line of README.md where the command starts
	cmd  string // the command as written: one line, or several (continuations, quotes, loops)
	want string // the `# ` comment lines right after it, without the `#`; "" when none
}

// shellBlock is a ```sh block of README.md.
type shellBlock struct {
	line     int    // the fence's line
	skip     string // the reason of a readmeSkip marker; "" when the block runs
	examples []example
}

// TestReadme runs every shell example of README.md as written against the built sidecar, running
// as its own process with its embedded default config on free loopback ports: only the addresses
// 127.0.0.1:50051 and 127.0.0.1:8080 are rewritten to those ports. Each ```sh block runs in one
// bash (so a variable one line sets is seen by the next) from the repository's root; every command
// must exit 0, and when `# ` comment lines follow a command directly (no blank line between), they
// are its documented output, which the actual output must match: whitespace next to JSON
// punctuation and line breaks do not count (grpcurl prints indented JSON, the README compact), and
// `...`, or a described elision such as `...5 values...`, matches any text. A comment after a
// blank line is prose, not output. Commands that do not call the sidecar run too, unless their
// block is marked (readmeSkip).
//
// grpcurl comes from $GRPCURL (make test sets it from scripts/ensure-grpcurl.sh), PATH, or the
// repository's .tools/bin; without one the test fails, saying how to install it.
func TestReadme(t *testing.T) {
	grpcurl := findGrpcurl(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl not found on PATH; the README's HTTP examples use it")
	}
	// grpcurl under its own name first on PATH, whatever the file found is called.
	bin := t.TempDir()
	if err := os.Symlink(grpcurl, filepath.Join(bin, "grpcurl")); err != nil {
		t.Fatal(err)
	}

	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeBlocks(t, string(readme))
	var calls int
	for _, b := range blocks {
		for _, e := range b.examples {
			if b.skip == "" && (strings.Contains(e.cmd, readmeGRPC) || strings.Contains(e.cmd, readmeHTTP)) {
				calls++
			}
		}
	}
	if calls < 10 {
		t.Fatalf("found only %d README examples that call the sidecar at %s or %s; is the parser broken?", calls, readmeGRPC, readmeHTTP)
	}

	p := launch(t)
	addrs := strings.NewReplacer(readmeGRPC, p.grpc, readmeHTTP, p.http)
	env := append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	var ran, checked int
	for _, b := range blocks {
		if b.skip != "" {
			t.Logf("README.md:%d: not run: %s", b.line, b.skip)
			continue
		}
		outs := runBlock(t, b, addrs, env)
		for i, e := range b.examples {
			o := outs[i]
			ran++
			if e.want != "" {
				checked++
			}
			where := fmt.Sprintf("README.md:%d", e.line)
			if o.status != 0 {
				t.Errorf("%s: exit status %d\ncommand:\n%s\noutput:\n%s", where, o.status, e.cmd, o.text)
				continue
			}
			if e.want != "" && !outputMatches(e.want, o.text) {
				t.Errorf("%s: the output is not the documented one\ncommand:\n%s\ndocumented:\n%s\ngot:\n%s", where, e.cmd, e.want, o.text)
			}
		}
	}
	t.Logf("ran %d commands of README.md (%d call the sidecar), %d with a documented output", ran, calls, checked)
	if t.Failed() {
		t.Logf("sidecar's log:\n%s", p.log())
	}
}

// findGrpcurl: $GRPCURL, else grpcurl on PATH, else the repository's .tools/bin/grpcurl.
func findGrpcurl(t *testing.T) string {
	t.Helper()
	const howto = "run scripts/ensure-grpcurl.sh (make test does) to install grpcurl into .tools/bin, or set GRPCURL to a grpcurl binary"
	if g := os.Getenv("GRPCURL"); g != "" {
		abs, err := filepath.Abs(g)
		if err != nil {
			t.Fatal(err)
		}
		if st, err := os.Stat(abs); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			t.Fatalf("GRPCURL=%s is not an executable file; %s", g, howto)
		}
		return abs
	}
	if g, err := exec.LookPath("grpcurl"); err == nil {
		return g
	}
	if g, err := filepath.Abs(filepath.Join("..", ".tools", "bin", "grpcurl")); err == nil {
		if st, err := os.Stat(g); err == nil && !st.IsDir() {
			return g
		}
	}
	t.Fatalf("grpcurl not found (not in $GRPCURL, on PATH or in .tools/bin); %s", howto)
	return ""
}

var fenceRE = regexp.MustCompile("^```(sh|bash|shell)\\s*$")

// readmeBlocks parses the README's shell blocks into commands and documented outputs.
func readmeBlocks(t *testing.T, readme string) []shellBlock {
	t.Helper()
	lines := strings.Split(readme, "\n")
	var blocks []shellBlock
	prev := "" // the last non-blank line outside a block
	for i := 0; i < len(lines); i++ {
		if !fenceRE.MatchString(lines[i]) {
			if strings.TrimSpace(lines[i]) != "" {
				prev = strings.TrimSpace(lines[i])
			}
			continue
		}
		b := shellBlock{line: i + 1}
		if rest, ok := strings.CutPrefix(prev, readmeSkip); ok {
			b.skip = strings.TrimSpace(strings.TrimSuffix(rest, "-->"))
			if b.skip == "" {
				t.Fatalf("README.md:%d: a %q marker must say why the block is not run", i, readmeSkip)
			}
		}
		prev = ""
		start := i + 1
		end := start
		for end < len(lines) && strings.TrimSpace(lines[end]) != "```" {
			end++
		}
		if end == len(lines) {
			t.Fatalf("README.md:%d: the shell block never ends", b.line)
		}
		b.examples = parseBlock(t, lines[start:end], start+1)
		blocks = append(blocks, b)
		i = end
	}
	return blocks
}

// parseBlock splits a block's lines (the first being README line first) into commands, each with
// the comment lines that follow it directly.
func parseBlock(t *testing.T, lines []string, first int) []example {
	t.Helper()
	var out []example
	outputOf := -1 // index in out of the command whose documented output the next comment extends
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		switch {
		case line == "":
			outputOf = -1
		case strings.HasPrefix(line, "#"):
			if outputOf >= 0 {
				text := strings.TrimPrefix(line, "#")
				if out[outputOf].want != "" {
					out[outputOf].want += "\n"
				}
				out[outputOf].want += text
			}
		default:
			// A command: this line and the next ones while it continues (a trailing backslash) or
			// is not yet complete shell (an open quote, $( or loop), as bash itself judges it.
			j := i
			cmd := lines[i]
			for strings.HasSuffix(cmd, "\\") || !completeShell(cmd) {
				j++
				if j == len(lines) {
					t.Fatalf("README.md:%d: the command does not end within its block:\n%s", first+i, cmd)
				}
				cmd += "\n" + lines[j]
			}
			out = append(out, example{line: first + i, cmd: cmd})
			outputOf = len(out) - 1
			i = j
		}
	}
	return out
}

// completeShell reports whether bash parses src without running out of input.
func completeShell(src string) bool {
	err := exec.Command("bash", "-n", "-c", src).Run()
	var ee *exec.ExitError
	return err == nil || !errors.As(err, &ee) // a bash that cannot start is reported when run
}

type output struct {
	status int
	text   string // stdout and stderr together
}

// runBlock runs the block's commands in one bash from the repository's root, with the sidecar's
// addresses rewritten, and returns each command's exit status and output.
func runBlock(t *testing.T, b shellBlock, addrs *strings.Replacer, env []string) []output {
	t.Helper()
	var nonce [8]byte
	rand.Read(nonce[:])
	sep := "README-TEST-" + hex.EncodeToString(nonce[:])
	var script strings.Builder
	for _, e := range b.examples {
		// A group in this shell, so assignments carry over; the separator on a line of its own.
		fmt.Fprintf(&script, "{\n%s\n} </dev/null 2>&1\nprintf '\\n%s %%d\\n' $?\n", addrs.Replace(e.cmd), sep)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script.String())
	cmd.Dir = ".."
	cmd.Env = env
	raw, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("README.md:%d: running the block: %v\n%s", b.line, err, raw)
	}
	var outs []output
	var text strings.Builder
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), sep+" "); ok {
			status, err := strconv.Atoi(rest)
			if err != nil {
				t.Fatalf("README.md:%d: bad status line %q", b.line, sc.Text())
			}
			outs = append(outs, output{status: status, text: strings.TrimSuffix(text.String(), "\n")})
			text.Reset()
			continue
		}
		text.WriteString(sc.Text())
		text.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(outs) != len(b.examples) {
		t.Fatalf("README.md:%d: %d commands but %d results; output:\n%s", b.line, len(b.examples), len(outs), raw)
	}
	return outs
}

var (
	spacesRE = regexp.MustCompile(`\s+`)
	punctRE  = regexp.MustCompile(` ?([{}\[\]:,]) ?`)
	// a described elision, such as ...5 values...: words between two ellipses
	describedRE = regexp.MustCompile(`\.\.\.[A-Za-z0-9 ]*[A-Za-z][A-Za-z0-9 ]*\.\.\.`)
)

// normalize folds whitespace runs to one space and drops it next to JSON punctuation, so indented
// and compact JSON, and one name a line against names separated by spaces, compare equal.
func normalize(s string) string {
	return punctRE.ReplaceAllString(strings.TrimSpace(spacesRE.ReplaceAllString(s, " ")), "$1")
}

// outputMatches reports whether got is the documented output want, `...` in want matching any text,
// as does a described elision such as `...5 values...`.
func outputMatches(want, got string) bool {
	parts := strings.Split(describedRE.ReplaceAllString(normalize(want), "..."), "...")
	for i, p := range parts {
		if i > 0 {
			p = strings.TrimLeft(p, " ")
		}
		if i < len(parts)-1 {
			p = strings.TrimRight(p, " ")
		}
		parts[i] = regexp.QuoteMeta(p)
	}
	re, err := regexp.Compile(`^(?s)` + strings.Join(parts, `.*`) + `$`)
	if err != nil {
		return false
	}
	return re.MatchString(normalize(got))
}

// TestReadmeOutputMatches pins the comparison of documented and actual outputs.
func TestReadmeOutputMatches(t *testing.T) {
	for _, c := range []struct {
		want, got string
		ok        bool
	}{
		{"a\nb", "a\nb\n", true},
		{"a\nb", "a b", true},
		{"a\nb", "ab", false},
		{`{"x":1,"y":[...]}`, "{\n  \"x\": 1,\n  \"y\": [\n    2,\n    3\n  ]\n}", true},
		{`{"x":1,...}`, `{"x":2,"y":3}`, false},
		{`{"c":0.7398...}`, `{"c":0.7398655850189071}`, true},
		{`{"c":0.7398...}`, `{"c":0.7498655850189071}`, false},
		{`{... "r":["L=="]}`, `{"m":"p","r":["L=="]}`, true},
		{`{"p":[...5 values...],"c":0.7...}`, `{"p":[1, 2, 3, 4, 5], "c":0.75}`, true},
		{`{"p":[...5 values...],"c":0.7...}`, `{"p":[1, 2, 3, 4, 5], "c":0.65}`, false},
		{`ok`, `ok, mostly`, false},
		{`score 0.781; driven by x (+0.1)`, `score 0.781;  driven by x (+0.1)`, true},
	} {
		if got := outputMatches(c.want, c.got); got != c.ok {
			t.Errorf("outputMatches(%q, %q) = %v, want %v", c.want, c.got, got, c.ok)
		}
	}
}
