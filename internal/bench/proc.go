package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// servingRE matches the line a server prints on stdout once it listens: the sidecar's
// "sidecar: serving grpc=ADDR http=ADDR" and bench-noop's "bench-noop: serving grpc=ADDR http=ADDR".
var servingRE = regexp.MustCompile(`serving grpc=(\S+) http=(\S+)`)

// ChildEnv is set in the environment of every server the bench starts; Run refuses to run where it
// is set, so that a mistaken command (a test binary, say) can never start benches recursively.
const ChildEnv = "SIDECAR_BENCH_CHILD"

// server is one server process under test. Its CPU time and peak memory are read from /proc.
type server struct {
	cmd        *exec.Cmd
	grpc, http string
	out        *tail
	// done is closed when the process has exited and its output is copied; err is then set.
	done chan struct{}
	err  error
}

// startServer runs command (program and arguments) and waits, at most timeout, until it prints its
// addresses. The process gets SIGKILL if the bench process dies first.
func startServer(ctx context.Context, command []string, timeout time.Duration) (*server, error) {
	if len(command) == 0 {
		return nil, errors.New("no server command")
	}
	s := &server{out: &tail{max: 64 << 10}, done: make(chan struct{})}
	ready := make(chan [2]string, 1)
	s.cmd = exec.Command(command[0], command[1:]...)
	s.cmd.Stdout = &lineWatcher{onLine: func(line string) {
		if m := servingRE.FindStringSubmatch(line); m != nil {
			select {
			case ready <- [2]string{m[1], m[2]}:
			default:
			}
		}
	}, also: s.out}
	s.cmd.Stderr = s.out
	s.cmd.Env = append(os.Environ(), ChildEnv+"=1")
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	s.cmd.WaitDelay = 2 * time.Second
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { // owned by s; stop waits for it
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case a := <-ready:
		s.grpc, s.http = a[0], a[1]
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("%s exited before serving (%v):\n%s", strings.Join(command, " "), s.err, s.out)
	case <-t.C:
		s.stop()
		return nil, fmt.Errorf("%s did not print its addresses within %v:\n%s", strings.Join(command, " "), timeout, s.out)
	case <-ctx.Done():
		s.stop()
		return nil, ctx.Err()
	}
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// stop asks the server to drain and exit (SIGTERM), and kills it after 10s.
func (s *server) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-s.done:
	case <-t.C:
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// userHZ is the unit of utime and stime in /proc/PID/stat: USER_HZ, which Linux fixes at 100 in
// its user ABI on every architecture Go supports.
const userHZ = 100

// procCPU returns the CPU time (user + system, every thread) the process pid has used so far,
// from /proc/PID/stat; pid 0 means this process. The resolution is 10ms.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(procPath(pid, "stat"))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU reads utime and stime, fields 14 and 15 of /proc/PID/stat. The second field, the
// command name in parentheses, may hold spaces and parentheses, so fields are counted from the last ')'.
func parseStatCPU(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc stat: no ')' in %q", b)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc stat: %d fields after the command name, want at least 13", len(f))
	}
	var ticks int64
	for _, s := range f[11:13] { // utime, stime: fields 14 and 15; f[0] is field 3
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc stat: %w", err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// procPeakRSS returns the process's peak resident set size in bytes (VmHWM of /proc/PID/status);
// pid 0 means this process.
func procPeakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(procPath(pid, "status"))
	if err != nil {
		return 0, err
	}
	return parseHWM(b)
}

func parseHWM(b []byte) (int64, error) {
	for line := range strings.Lines(string(b)) {
		rest, ok := strings.CutPrefix(line, "VmHWM:")
		if !ok {
			continue
		}
		kb, ok := strings.CutSuffix(strings.TrimSpace(rest), " kB")
		if !ok {
			return 0, fmt.Errorf("/proc status: VmHWM %q is not in kB", strings.TrimSpace(rest))
		}
		v, err := strconv.ParseInt(strings.TrimSpace(kb), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc status: VmHWM: %w", err)
		}
		return v << 10, nil
	}
	return 0, errors.New("/proc status: no VmHWM line")
}

func procPath(pid int, file string) string {
	if pid == 0 {
		return "/proc/self/" + file
	}
	return "/proc/" + strconv.Itoa(pid) + "/" + file
}

// tail keeps the last max bytes written to it. Safe for concurrent use.
type tail struct {
	max int
	// mu guards b.
	mu sync.Mutex
	b  []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// lineWatcher calls onLine for each complete line written to it (lines longer than 4 KiB are cut)
// and copies everything to also. exec.Cmd's copying goroutine is its only caller.
type lineWatcher struct {
	onLine func(string)
	also   *tail
	buf    []byte
}

func (w *lineWatcher) Write(p []byte) (int, error) {
	w.also.Write(p)
	for _, c := range p {
		if c == '\n' {
			w.onLine(string(w.buf))
			w.buf = w.buf[:0]
			continue
		}
		if len(w.buf) < 4096 {
			w.buf = append(w.buf, c)
		}
	}
	return len(p), nil
}
