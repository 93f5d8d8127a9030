package process

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"pyro/guest/internal/reaper"
)

// These tests never use os/exec: its Wait would race with the reaper.

type collected struct {
	mu       sync.Mutex
	out      [2]bytes.Buffer
	maxChunk int
	chunks   int
}

func (c *collected) emit(s Stream, b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.out[s].Write(b)
	c.chunks++
	if len(b) > c.maxChunk {
		c.maxChunk = len(b)
	}
}

func (c *collected) stdout() string { c.mu.Lock(); defer c.mu.Unlock(); return c.out[Stdout].String() }
func (c *collected) stderr() string { c.mu.Lock(); defer c.mu.Unlock(); return c.out[Stderr].String() }

func spec(shell string) Spec {
	// HOME points at an empty directory so that a login shell (the
	// fallback when there is no login environment) does not source the
	// test machine's ~/.profile, which could print things. (The login
	// environment itself is an empty HOME's: see TestMain.)
	return Spec{Shell: shell, Timeout: 10 * time.Second, MaxOutput: 1 << 20, Env: map[string]string{"HOME": os.TempDir()}}
}

func run(t *testing.T, s Spec) (Result, *collected) {
	t.Helper()
	p, err := Start(reaper.Start(), s)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	c := &collected{}
	return p.Wait(c.emit), c
}

func TestArgv(t *testing.T) {
	res, c := run(t, Spec{Argv: []string{"printf", "%s|%s", "a b", "c"}, Timeout: 5 * time.Second, MaxOutput: 100})
	if c.stdout() != "a b|c" || res.ExitCode != 0 || res.Signal != "" || res.TimedOut {
		t.Fatalf("got %q %+v", c.stdout(), res)
	}
	if res.StdoutBytes != 5 || res.StdoutTruncated {
		t.Fatalf("counts: %+v", res)
	}
}

func TestShellSeparateStreamsAndExitCode(t *testing.T) {
	res, c := run(t, spec("echo out; echo err >&2; exit 7"))
	if c.stdout() != "out\n" || c.stderr() != "err\n" {
		t.Fatalf("stdout %q stderr %q", c.stdout(), c.stderr())
	}
	if res.ExitCode != 7 || res.Signal != "" || res.TimedOut {
		t.Fatalf("result %+v", res)
	}
	if res.StdoutBytes != 4 || res.StderrBytes != 4 {
		t.Fatalf("counts %+v", res)
	}
}

func TestSignalExit(t *testing.T) {
	res, _ := run(t, spec("kill -TERM $$"))
	if res.ExitCode != 128+15 || res.Signal != "SIGTERM" || res.TimedOut {
		t.Fatalf("result %+v", res)
	}
}

func TestEnvAndCwd(t *testing.T) {
	dir := t.TempDir()
	s := Spec{
		Argv:      []string{"sh", "-c", `echo "$FOO|$TERM|$LANG|$USER|$HOME|$PATH"; pwd`},
		Cwd:       dir,
		Env:       map[string]string{"FOO": "bar baz", "HOME": "/elsewhere"},
		Timeout:   5 * time.Second,
		MaxOutput: 1000,
	}
	res, c := run(t, s)
	want := "bar baz|dumb|C.UTF-8|root|/elsewhere|" + DefaultPath + "\n" + dir + "\n"
	if res.ExitCode != 0 || c.stdout() != want {
		t.Fatalf("got %q, want %q (%+v)", c.stdout(), want, res)
	}
}

func TestArgv0LookedUpInChildPath(t *testing.T) {
	dir := t.TempDir()
	script := "#!/bin/sh\necho custom tool\n"
	if err := os.WriteFile(dir+"/mytool", []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	res, c := run(t, Spec{Argv: []string{"mytool"}, Env: map[string]string{"PATH": dir + ":/bin:/usr/bin"}, Timeout: 5 * time.Second, MaxOutput: 100})
	if res.ExitCode != 0 || c.stdout() != "custom tool\n" {
		t.Fatalf("got %q %+v", c.stdout(), res)
	}
}

func TestStartFailures(t *testing.T) {
	cases := map[string]Spec{
		"missing command": {Argv: []string{"definitely-not-a-command-7f3a"}, Timeout: time.Second},
		"missing cwd":     {Argv: []string{"true"}, Cwd: "/nonexistent-dir-7f3a", Timeout: time.Second},
		"cwd is a file":   {Argv: []string{"true"}, Cwd: "/etc/passwd", Timeout: time.Second},
		"not executable":  {Argv: []string{"/etc/passwd"}, Timeout: time.Second},
		"both":            {Argv: []string{"true"}, Shell: "true", Timeout: time.Second},
	}
	for name, s := range cases {
		p, err := Start(reaper.Start(), s)
		var se *StartError
		if p != nil || !errors.As(err, &se) {
			t.Errorf("%s: got %v, %v; want StartError", name, p, err)
		}
	}
}

// procGone reports whether pid has exited (gone or a zombie awaiting its
// new parent).
func procGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !procGone(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("process %d is still running", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTimeoutKillsWholeGroup(t *testing.T) {
	s := spec("sleep 60 & echo $!; sleep 60")
	s.Timeout = 300 * time.Millisecond
	start := time.Now()
	res, c := run(t, s)
	elapsed := time.Since(start)
	if !res.TimedOut || res.ExitCode != TimeoutExitCode || res.Signal != "SIGKILL" {
		t.Fatalf("result %+v", res)
	}
	// Both sleeps held the pipes; they only close this fast if the whole
	// group died (otherwise we would wait at least the 250 ms grace and the
	// background sleep would survive).
	if elapsed > 2*time.Second {
		t.Fatalf("took %v", elapsed)
	}
	if res.Duration < 300*time.Millisecond {
		t.Fatalf("duration %v shorter than the timeout", res.Duration)
	}
	bg, err := strconv.Atoi(strings.TrimSpace(c.stdout()))
	if err != nil {
		t.Fatalf("bad output %q", c.stdout())
	}
	waitGone(t, bg)
}

func TestTruncation(t *testing.T) {
	s := spec("yes | head -c 5000000; echo done >&2")
	s.MaxOutput = 1000
	res, c := run(t, s)
	if res.ExitCode != 0 {
		t.Fatalf("result %+v", res)
	}
	if res.StdoutBytes != 5000000 || !res.StdoutTruncated {
		t.Fatalf("stdout counts %+v", res)
	}
	if got := c.stdout(); len(got) != 1000 || got != strings.Repeat("y\n", 500) {
		t.Fatalf("sent %d stdout bytes", len(got))
	}
	if res.StderrBytes != 5 || res.StderrTruncated || c.stderr() != "done\n" {
		t.Fatalf("stderr %q %+v", c.stderr(), res)
	}
}

func TestZeroMaxOutput(t *testing.T) {
	s := spec("echo hidden")
	s.MaxOutput = 0
	res, c := run(t, s)
	if c.stdout() != "" || res.StdoutBytes != 7 || !res.StdoutTruncated {
		t.Fatalf("got %q %+v", c.stdout(), res)
	}
}

func TestChunksAreBounded(t *testing.T) {
	s := spec("head -c 300000 /dev/zero")
	s.MaxOutput = 1 << 20
	res, c := run(t, s)
	if res.StdoutBytes != 300000 || c.out[Stdout].Len() != 300000 || res.StdoutTruncated {
		t.Fatalf("got %d bytes, %+v", c.out[Stdout].Len(), res)
	}
	if c.maxChunk > ChunkSize || c.chunks < 300000/ChunkSize {
		t.Fatalf("max chunk %d over %d chunks", c.maxChunk, c.chunks)
	}
}

// A slow consumer must stall the child rather than make us buffer: with
// emit blocked, a 10 MB writer cannot finish.
func TestBackPressure(t *testing.T) {
	s := spec("head -c 10000000 /dev/zero; echo finished >&2")
	s.MaxOutput = 1 << 30
	p, err := Start(reaper.Start(), s)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var got, stderrSeen int64
	var mu sync.Mutex
	done := make(chan Result)
	go func() {
		done <- p.Wait(func(st Stream, b []byte) {
			if st == Stderr {
				mu.Lock()
				stderrSeen++
				mu.Unlock()
				return
			}
			<-release
			mu.Lock()
			got += int64(len(b))
			mu.Unlock()
		})
	}()
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	blocked := stderrSeen == 0
	mu.Unlock()
	if !blocked {
		t.Fatal("child finished although the consumer never read")
	}
	close(release)
	res := <-done
	if res.StdoutBytes != 10000000 || got != 10000000 || res.ExitCode != 0 {
		t.Fatalf("got %d, %+v", got, res)
	}
}

func TestSignalMethod(t *testing.T) {
	p, err := Start(reaper.Start(), spec("sleep 60"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan Result)
	go func() { done <- p.Wait(func(Stream, []byte) {}) }()
	time.Sleep(50 * time.Millisecond)
	if err := p.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-done:
		// The signal went to the whole group, so the shell died of it too
		// (whether or not it exec'ed sleep directly).
		if res.ExitCode != 128+2 || res.Signal != "SIGINT" || res.TimedOut {
			t.Fatalf("result %+v", res)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("signal did not end the command")
	}
}

// After the main process exits, a background child holding the pipes keeps
// the command going: its output is the command's, and the command ends
// when it does.
func TestBackgroundOutputIsWaitedFor(t *testing.T) {
	p, err := Start(reaper.Start(), spec("(sleep 1; echo late) & echo early"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c := &collected{}
	res := p.Wait(c.emit)
	if c.stdout() != "early\nlate\n" || res.ExitCode != 0 || res.TimedOut {
		t.Fatalf("stdout %q, result %+v", c.stdout(), res)
	}
	if elapsed := time.Since(start); elapsed < time.Second {
		t.Fatalf("returned after %v, before the background child was done", elapsed)
	}
}

// A background child that holds the output past the deadline is killed with
// the rest, and the command timed out, though its main process exited 0.
func TestBackgroundOutputPastTheDeadlineTimesOut(t *testing.T) {
	s := spec("sleep 30 & echo started")
	s.Timeout = 500 * time.Millisecond
	p, err := Start(reaper.Start(), s)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c := &collected{}
	res := p.Wait(c.emit)
	if !res.TimedOut || res.ExitCode != TimeoutExitCode || c.stdout() != "started\n" {
		t.Fatalf("stdout %q, result %+v", c.stdout(), res)
	}
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Fatalf("took %v", elapsed)
	}
}

// One that redirected its output is not waited for, and lives on.
func TestRedirectedBackgroundChildOutlivesTheCommand(t *testing.T) {
	p, err := Start(reaper.Start(), spec("sleep 30 >/dev/null 2>&1 & echo $!"))
	if err != nil {
		t.Fatal(err)
	}
	c := &collected{}
	start := time.Now()
	res := p.Wait(c.emit)
	if res.ExitCode != 0 || time.Since(start) > 2*time.Second {
		t.Fatalf("result %+v after %v", res, time.Since(start))
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(c.stdout()))
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		t.Fatalf("the background child %q is gone", c.stdout())
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
}

func TestSignalName(t *testing.T) {
	for sig, want := range map[syscall.Signal]string{syscall.SIGKILL: "SIGKILL", syscall.SIGSEGV: "SIGSEGV", 34: "SIGRTMIN+2", 99: "SIG99"} {
		if got := SignalName(sig); got != want {
			t.Errorf("SignalName(%d) = %q, want %q", sig, got, want)
		}
	}
}

func TestEnvOverlaysInOrder(t *testing.T) {
	env := Env("/bin/bash", map[string]string{"TERM": "xterm-256color", "A": "1"}, map[string]string{"A": "2"}, nil)
	want := map[string]bool{"TERM=xterm-256color": true, "A=2": true, "SHELL=/bin/bash": true, "PATH=" + DefaultPath: true}
	for _, kv := range env {
		delete(want, kv)
	}
	if len(want) != 0 {
		t.Fatalf("missing %v in %v", want, env)
	}
}

func TestWorkDirAndExitStatus(t *testing.T) {
	if d, err := WorkDir(""); err != nil || (d != "/" && d != defaultWorkspace) {
		t.Fatalf("default %q %v", d, err)
	}
	if _, err := WorkDir("/no/such/dir"); err == nil {
		t.Fatal("missing dir accepted")
	}
	if code, sig := ExitStatus(syscall.WaitStatus(3 << 8)); code != 3 || sig != "" {
		t.Fatalf("exit 3: %d %q", code, sig)
	}
	if code, sig := ExitStatus(syscall.WaitStatus(syscall.SIGTERM)); code != 143 || sig != "SIGTERM" {
		t.Fatalf("SIGTERM: %d %q", code, sig)
	}
}
