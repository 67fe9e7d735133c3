// Package demoproc runs the child processes of the demos (examples/drift, examples/migration):
// it starts a child with its output collected line by line, waits until the child prints what
// the demo needs (an address it listens on), and stops it whatever happens, so that nothing a
// demo started outlives it.
package demoproc

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Line is one line a child process wrote, with when the demo read it.
type Line struct {
	At   time.Time
	Text string
}

// Lines collects a child's output, line by line. Its methods may be called concurrently.
type Lines struct {
	// mu guards all and partial.
	mu      sync.Mutex
	all     []Line
	partial []byte
	// added gets a value (without blocking) after each line is added.
	added chan struct{}
}

func newLines() *Lines { return &Lines{added: make(chan struct{}, 1)} }

// Write splits b into lines (what exec.Cmd's Stdout and Stderr take).
func (l *Lines) Write(b []byte) (int, error) {
	l.mu.Lock()
	l.partial = append(l.partial, b...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.all = append(l.all, Line{time.Now(), string(l.partial[:i])})
		l.partial = l.partial[i+1:]
	}
	l.mu.Unlock()
	select {
	case l.added <- struct{}{}:
	default:
	}
	return len(b), nil
}

// Snapshot returns the lines so far.
func (l *Lines) Snapshot() []Line {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Line(nil), l.all...)
}

// Tail returns the last n lines, as text.
func (l *Lines) Tail(n int) string {
	all := l.Snapshot()
	if len(all) > n {
		all = all[len(all)-n:]
	}
	var b strings.Builder
	for _, ln := range all {
		b.WriteString(ln.Text)
		b.WriteByte('\n')
	}
	return b.String()
}

// Options says how Start runs a child and how Stop ends it.
type Options struct {
	// Stdin gives the child a pipe for stdin, which Stop closes: a child that stops when its
	// stdin closes (the migration's Python seed service) needs no signal.
	Stdin bool
	// StopSignal, when not nil, is sent by Stop to ask the child to exit.
	StopSignal os.Signal
	// Grace is how long Stop waits for the child to exit before it kills it.
	Grace time.Duration
	// Env, when not empty, is added to the demo's environment for the child; when empty the
	// child gets the demo's environment as it is.
	Env []string
}

// Proc is a child process of a demo. Stop ends it whatever happens and waits for it.
type Proc struct {
	// Label names the child in errors and in the demo's output ("the sidecar").
	Label string
	// Stdout and Stderr hold what the child wrote to each.
	Stdout, Stderr *Lines
	cmd            *exec.Cmd
	opt            Options
	// stdin, when not nil, is the child's stdin (Options.Stdin).
	stdin io.Closer
	// done is closed once the child has exited; err is its exit then.
	done     chan struct{}
	err      error
	stopOnce sync.Once
}

// Start runs name with args, called label in errors. The child gets SIGKILL if the demo dies
// first (Linux), and Stop ends it: on opt.StopSignal (or the stdin's end, with opt.Stdin) with
// opt.Grace to exit, then by SIGKILL.
func Start(label string, opt Options, name string, args ...string) (*Proc, error) {
	cmd := exec.Command(name, args...)
	if len(opt.Env) > 0 {
		cmd.Env = append(os.Environ(), opt.Env...)
	}
	dieWithParent(cmd)
	p := &Proc{Label: label, Stdout: newLines(), Stderr: newLines(), cmd: cmd, opt: opt, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.Stdout, p.Stderr
	cmd.WaitDelay = 2 * time.Second // a grandchild holding the pipes does not hold Wait
	if opt.Stdin {
		w, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		p.stdin = w
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", label, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Stop ends the child: it closes the child's stdin (if it has one from Start), sends the stop
// signal (if any), and kills the child if it has not exited within the grace. It returns once
// the child has exited; later calls return at once.
func (p *Proc) Stop() {
	p.stopOnce.Do(func() {
		if p.stdin != nil {
			p.stdin.Close()
		}
		if p.opt.StopSignal != nil {
			p.cmd.Process.Signal(p.opt.StopSignal)
		}
		select {
		case <-p.done:
		case <-time.After(p.opt.Grace):
			p.cmd.Process.Kill()
			<-p.done
		}
	})
}

// Signal sends sig to the child (SIGHUP to have the sidecar reload its config, say).
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Exited says how the child ended, or "" while it runs.
func (p *Proc) Exited() string {
	select {
	case <-p.done:
		if p.err == nil {
			return "exited"
		}
		return p.err.Error()
	default:
		return ""
	}
}

// Await waits, at most bound, until each pattern matches a line of src (p.Stdout or p.Stderr),
// and returns each one's submatches (FindStringSubmatch's: the whole match first). It fails at
// once if the child exits first.
func (p *Proc) Await(ctx context.Context, bound time.Duration, src *Lines, patterns ...*regexp.Regexp) ([][]string, error) {
	timer := time.NewTimer(bound)
	defer timer.Stop()
	for {
		got, missing := make([][]string, len(patterns)), ""
		for i, re := range patterns {
			for _, ln := range src.Snapshot() {
				if m := re.FindStringSubmatch(ln.Text); m != nil {
					got[i] = m
					break
				}
			}
			if got[i] == nil && missing == "" {
				missing = re.String()
			}
		}
		if missing == "" {
			return got, nil
		}
		select {
		case <-src.added:
		case <-p.done:
			return nil, fmt.Errorf("%s %s before printing %q; its stderr:\n%s", p.Label, p.Exited(), missing, p.Stderr.Tail(30))
		case <-timer.C:
			return nil, fmt.Errorf("%s did not print %q within %v; its stderr:\n%s", p.Label, missing, bound, p.Stderr.Tail(30))
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for %s to print %q: %w", p.Label, missing, context.Cause(ctx))
		}
	}
}
