// Package process runs one exec request: a child in its own process group
// and (in a VM) its own cgroup, a deadline that kills every process of it at
// once, and bounded, back-pressured delivery of its stdout and stderr.
//
// Shells and services start from the same ground, which this package also
// provides: the shell (Shell), the base environment (Env), how a command
// line runs (ShellCommand), the working directory (WorkDir), the cgroup
// (JoinCgroup) and the exit status (ExitStatus).
//
// A command line runs as `bash -c` with the login environment that
// package loginenv captured once, rather than as `bash -lc`, which would
// run the profile scripts again for every command.
package process

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"pyro/guest/internal/cgroup"
	"pyro/guest/internal/loginenv"
	"pyro/guest/internal/reaper"
)

const (
	// ChunkSize is the largest output chunk handed to the sink; it matches
	// the per-frame output limit of the protocol.
	ChunkSize = 64 << 10
	// TimeoutExitCode is reported when the deadline killed the command.
	TimeoutExitCode = 124

	// DefaultPath is the PATH of the base environment.
	DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	// DevNull is the stdin of commands and services.
	DevNull = "/dev/null"
)

// Paths consulted at start time.
const (
	bashPath         = "/bin/bash"
	shPath           = "/bin/sh"
	defaultWorkspace = "/workspace"
)

// Stream identifies stdout or stderr.
type Stream int

// The two output streams.
const (
	Stdout Stream = iota
	Stderr
)

func (s Stream) String() string {
	if s == Stderr {
		return "stderr"
	}
	return "stdout"
}

// Spec describes a command. Exactly one of Argv and Shell must be set.
type Spec struct {
	Argv      []string
	Shell     string
	Cwd       string            // "" means /workspace if it exists, else /
	Env       map[string]string // overlaid on the base environment
	Timeout   time.Duration     // > 0
	MaxOutput int64             // per stream; >= 0
}

// Result is the outcome reported in the exit reply.
type Result struct {
	ExitCode        int
	Signal          string // "" unless the main process was killed by a signal
	TimedOut        bool
	Duration        time.Duration // start to main-process exit
	StdoutBytes     int64
	StderrBytes     int64
	StdoutTruncated bool
	StderrTruncated bool
}

// StartError means the command could not be started (exec_failed).
type StartError struct{ Err error }

func (e *StartError) Error() string { return e.Err.Error() }
func (e *StartError) Unwrap() error { return e.Err }

// Proc is a started command.
type Proc struct {
	pid       int
	group     *cgroup.Group // nil when the guest has no cgroups (off-VM)
	status    <-chan reaper.Status
	outR      [2]*os.File
	maxOutput int64
	started   time.Time
	timer     *time.Timer

	mu       sync.Mutex
	exited   bool // main process reaped
	done     bool // output closed: the command is over
	timedOut bool
}

// Start launches spec. Every failure to launch is returned as *StartError.
func Start(r *reaper.Reaper, spec Spec) (*Proc, error) {
	p, err := start(r, spec)
	if err != nil {
		return nil, &StartError{err}
	}
	return p, nil
}

func start(r *reaper.Reaper, spec Spec) (*Proc, error) {
	if (len(spec.Argv) == 0) == (spec.Shell == "") {
		return nil, errors.New("exactly one of argv and shell is required")
	}
	if spec.Timeout <= 0 {
		return nil, errors.New("timeout must be positive")
	}
	cwd, err := WorkDir(spec.Cwd)
	if err != nil {
		return nil, err
	}

	var path string
	var argv, env []string
	if spec.Shell != "" {
		path, argv, env = ShellCommand(r, spec.Shell, spec.Env)
	} else {
		shellPath, _ := Shell()
		env = Env(shellPath, spec.Env)
		if path, err = lookPath(spec.Argv[0], envValue(env, "PATH"), cwd); err != nil {
			return nil, err
		}
		argv = spec.Argv
	}

	stdin, err := os.Open(DevNull)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", DevNull, err)
	}
	defer stdin.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer outW.Close() // the child has its own copy; ours would hide EOF
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		return nil, err
	}
	defer errW.Close()

	attr := &syscall.ProcAttr{
		Dir:   cwd,
		Env:   env,
		Files: []uintptr{stdin.Fd(), outW.Fd(), errW.Fd()},
		// A new process group lets deadline and kill reach every
		// descendant that does not deliberately leave it.
		Sys: &syscall.SysProcAttr{Setpgid: true},
	}
	started := time.Now()
	pid, status, err := r.Spawn(path, argv, attr)
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("%s: %w", argv[0], err)
	}
	p := &Proc{
		pid:       pid,
		status:    status,
		outR:      [2]*os.File{outR, errR},
		maxOutput: spec.MaxOutput,
		started:   started,
	}
	// The command is still starting its shell: moved now, everything it
	// starts from here on is in its group, within reach of one kill.
	p.group = JoinCgroup(pid, "")
	p.timer = time.AfterFunc(spec.Timeout, p.deadline)
	return p, nil
}

// Pid returns the pid (and process group id) of the main process.
func (p *Proc) Pid() int { return p.pid }

func (p *Proc) deadline() {
	p.mu.Lock()
	defer p.mu.Unlock()
	// A command is over when its output is closed: until then the deadline
	// applies to whatever of it still holds the pipes, main process or not.
	if p.done {
		return
	}
	p.timedOut = true
	p.killAll()
}

// killAll ends the command: its whole cgroup at once (a fork bomb cannot
// outrun that), and its process group for what left the cgroup or when
// there is none. The group id stays the command's while any member lives.
func (p *Proc) killAll() {
	if p.group != nil {
		_ = p.group.Kill()
	}
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
}

// Signal sends sig to the command's process group. A group that has
// already disappeared is not an error.
func (p *Proc) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return nil
	}
	if sig == syscall.SIGKILL {
		p.killAll()
		return nil
	}
	if err := syscall.Kill(-p.pid, sig); err != nil && err != syscall.ESRCH {
		return err
	}
	return nil
}

// Wait pumps output to emit until the command is done and returns its
// result. A command is done when its main process has exited and its output
// is closed: background processes it started and that still hold stdout or
// stderr keep it running, as a remote shell would, until they end or the
// deadline kills them all (a fork bomb's processes all hold them). One that
// redirected its output lives on after the command. emit may block: that is
// how a slow host back-pressures the child (its pipe fills and its writes
// block). Output beyond MaxOutput is read and counted but not emitted, so it
// never blocks.
func (p *Proc) Wait(emit func(Stream, []byte)) Result {
	var counts [2]int64
	var wg sync.WaitGroup
	for i := range p.outR {
		wg.Add(1)
		go func(s Stream) {
			defer wg.Done()
			counts[s] = p.pump(s, emit)
		}(Stream(i))
	}

	st := <-p.status
	p.mu.Lock()
	p.exited = true
	p.mu.Unlock()
	wg.Wait()
	p.timer.Stop()
	p.mu.Lock()
	p.done = true
	timedOut := p.timedOut
	p.mu.Unlock()
	duration := time.Since(p.started)
	for _, f := range p.outR {
		f.Close()
	}
	if p.group != nil {
		// Background processes of the command may live on; their group then
		// stays until they end (a later command's sweep removes it).
		p.group.Remove()
	}

	res := Result{
		Duration:        duration,
		TimedOut:        timedOut,
		StdoutBytes:     counts[Stdout],
		StderrBytes:     counts[Stderr],
		StdoutTruncated: counts[Stdout] > p.maxOutput,
		StderrTruncated: counts[Stderr] > p.maxOutput,
	}
	res.ExitCode, res.Signal = ExitStatus(st.Wait)
	if timedOut {
		res.ExitCode = TimeoutExitCode
	}
	return res
}

// pump copies one stream to emit, returning the total number of bytes the
// command produced on it.
func (p *Proc) pump(s Stream, emit func(Stream, []byte)) int64 {
	f := p.outR[s]
	buf := make([]byte, ChunkSize)
	var total int64
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if room := p.maxOutput - total; room > 0 {
				chunk := buf[:n]
				if int64(n) > room {
					chunk = chunk[:room]
				}
				// The sink may retain the slice (it is queued for the
				// writer), so hand over a copy rather than our buffer.
				emit(s, append([]byte(nil), chunk...))
			}
			total += int64(n)
		}
		if err != nil {
			// io.EOF: every writer closed the pipe (they ended, or the
			// deadline killed them). Any other read error would leave
			// nothing better to do.
			return total
		}
	}
}

// TimeoutFromMillis converts a protocol timeout, saturating instead of
// overflowing time.Duration for absurd values.
func TimeoutFromMillis(ms int64) time.Duration {
	if ms > math.MaxInt64/int64(time.Millisecond) {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(ms) * time.Millisecond
}

// Shell returns the shell commands, shells and services run with: bash
// when /bin/bash exists, else sh.
func Shell() (path, name string) {
	if isExecutable(bashPath) {
		return bashPath, "bash"
	}
	return shPath, "sh"
}

// loginEnv holds the login environment of shell commands; nil runs them
// as login shells (tests compare the two).
var loginEnv atomic.Pointer[loginenv.Cache]

func init() { loginEnv.Store(newLoginEnv("")) }

// newLoginEnv returns a cache of the login environment that bash builds
// from the exec base environment; home, unless "", replaces its HOME.
func newLoginEnv(home string) *loginenv.Cache {
	var overlay map[string]string
	if home != "" {
		overlay = map[string]string{"HOME": home}
	}
	return loginenv.New(loginenv.Config{Bash: bashPath, Env: Env(bashPath, overlay)})
}

// SetLoginHome is for tests: from now on shell commands get the login
// environment that bash builds with HOME=home instead of /root (captured
// afresh), so that the tester's own dot files stay out. "" restores /root.
func SetLoginHome(home string) { loginEnv.Store(newLoginEnv(home)) }

// ShellCommand returns how the command line command runs, for exec and
// services: the program, its argv and its environment. With bash that is
// `bash -c COMMAND` with the captured login environment overlaid with env,
// so env wins over what the profile scripts set; when there is no usable
// capture (see loginenv), or no bash, a login shell (`bash -lc COMMAND`,
// `sh -lc COMMAND`) with the base environment overlaid with env. A capture
// runs children through r.
func ShellCommand(r *reaper.Reaper, command string, env map[string]string) (path string, argv, envv []string) {
	shellPath, shellName := Shell()
	if shellName == "bash" {
		if cache := loginEnv.Load(); cache != nil {
			if login, ok := cache.Get(r); ok {
				return shellPath, []string{shellName, "-c", command}, envList(login, env)
			}
		}
	}
	return shellPath, []string{shellName, "-lc", command}, Env(shellPath, env)
}

// Env returns the base environment for a child whose shell is shellPath,
// overlaid with each of overlays in turn, sorted so the child sees a
// deterministic order.
func Env(shellPath string, overlays ...map[string]string) []string {
	m := map[string]string{
		"PATH":    DefaultPath,
		"HOME":    "/root",
		"LANG":    "C.UTF-8",
		"TERM":    "dumb",
		"USER":    "root",
		"LOGNAME": "root",
		"SHELL":   shellPath,
	}
	return envList(m, overlays...)
}

// envList returns base overlaid with each of overlays in turn as a sorted
// environment list. base is not modified.
func envList(base map[string]string, overlays ...map[string]string) []string {
	n := len(base)
	for _, extra := range overlays {
		n += len(extra)
	}
	env := make([]string, 0, n)
	for k, v := range base {
		if !overlaid(k, overlays) {
			env = append(env, k+"="+v)
		}
	}
	for i, extra := range overlays {
		for k, v := range extra {
			if !overlaid(k, overlays[i+1:]) {
				env = append(env, k+"="+v)
			}
		}
	}
	sort.Strings(env)
	return env
}

// overlaid says whether one of overlays sets name.
func overlaid(name string, overlays []map[string]string) bool {
	for _, extra := range overlays {
		if _, ok := extra[name]; ok {
			return true
		}
	}
	return false
}

// WorkDir resolves a requested working directory: "" means /workspace when
// it exists, else /. The result is checked to be a directory, because the
// child's chdir failure would only surface as a bare errno; the error names
// the culprit instead.
func WorkDir(cwd string) (string, error) {
	if cwd == "" {
		cwd = "/"
		if fi, err := os.Stat(defaultWorkspace); err == nil && fi.IsDir() {
			cwd = defaultWorkspace
		}
	}
	if fi, err := os.Stat(cwd); err != nil {
		return "", fmt.Errorf("cwd: %w", err)
	} else if !fi.IsDir() {
		return "", fmt.Errorf("cwd %s: not a directory", cwd)
	}
	return cwd, nil
}

// JoinCgroup moves pid into a cgroup of its own: commands/NAME, or the next
// numbered one when name is "". It returns nil when the guest has no
// cgroups (off-VM) or the move failed; the process group is then all there
// is to signal.
func JoinCgroup(pid int, name string) *cgroup.Group {
	if !cgroup.Enabled() {
		return nil
	}
	var g *cgroup.Group
	var err error
	if name == "" {
		g, err = cgroup.New()
	} else {
		g, err = cgroup.NewNamed(name)
	}
	if err != nil {
		return nil
	}
	if err := g.Add(pid); err != nil {
		g.Remove()
		return nil
	}
	return g
}

// ExitStatus converts a wait status into the protocol's exit code (the
// status, or 128+N when killed by signal N) and signal name ("" unless
// killed by a signal).
func ExitStatus(ws syscall.WaitStatus) (int, string) {
	if ws.Signaled() {
		return 128 + int(ws.Signal()), SignalName(ws.Signal())
	}
	return ws.ExitStatus(), ""
}

func envValue(env []string, key string) string {
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			return kv[len(key)+1:]
		}
	}
	return ""
}

// lookPath resolves file like execvp does, but against the child's PATH and
// working directory rather than the agent's.
func lookPath(file, pathEnv, cwd string) (string, error) {
	abs := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(cwd, p)
	}
	if strings.Contains(file, "/") {
		if isExecutable(abs(file)) {
			return abs(file), nil
		}
		return "", fmt.Errorf("%s: not found or not executable", file)
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "." // POSIX: an empty PATH entry means the current directory
		}
		if cand := abs(filepath.Join(dir, file)); isExecutable(cand) {
			return cand, nil
		}
	}
	return "", fmt.Errorf("%s: executable file not found in PATH", file)
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}
