// Package loginenv captures the environment a bash login shell builds from
// its profile scripts, so that shell commands can run as a plain `bash -c`
// with that environment instead of `bash -lc`: the same variables without
// paying for the profile scripts on every command (under emulation a login
// shell costs about three times a plain one).
//
// The capture runs once and is kept while the files a login shell reads are
// unchanged: before each use they are stat'ed again (cheap), and any change
// (a file created, removed, replaced or written) captures anew, so an edit
// of ~/.profile is seen by the next command as with bash -lc. When the
// capture fails (a profile that exits, hangs, or bash missing) the caller
// runs a real login shell instead, and the capture is retried at most once
// per RetryAfter.
package loginenv

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"pyro/guest/internal/cgroup"
	"pyro/guest/internal/reaper"
)

// Defaults of Config.
const (
	DefaultTimeout    = 10 * time.Second
	DefaultRetryAfter = time.Minute
)

const (
	// captureScript runs after the profile scripts. Its output goes to fd 3,
	// so whatever the profile prints on stdout cannot mix with it.
	captureScript = "env -0 >&3"
	// killWait bounds the wait for a capture killed at its timeout.
	killWait = 2 * time.Second
	// maxOutput bounds the captured environment, well above what an exec
	// can pass on (a quarter of the stack limit, 2 MiB by default).
	maxOutput = 8 << 20
)

// dropped are the variables that describe the capturing shell rather than
// the login environment; the shell that runs a command sets its own.
var dropped = map[string]bool{"_": true, "SHLVL": true, "PWD": true, "OLDPWD": true}

// Config says how to capture.
type Config struct {
	// Bash is the bash binary, e.g. /bin/bash.
	Bash string
	// Env is the environment the login shell starts from ("NAME=value").
	Env []string
	// Home is the directory whose dot files a login shell reads; "" means
	// HOME of Env.
	Home string
	// Timeout bounds one capture (default DefaultTimeout).
	Timeout time.Duration
	// RetryAfter is how long a failed capture is not retried (default
	// DefaultRetryAfter).
	RetryAfter time.Duration
}

// Cache holds the captured login environment. It is safe for concurrent
// use: one capture runs at a time, and whoever needs the environment
// meanwhile waits for it.
type Cache struct {
	cfg Config

	mu       sync.Mutex
	valid    bool              // env was captured with the files as in key
	env      map[string]string // read-only once published
	key      []fileState
	failedAt time.Time // zero unless the last capture failed
	captures int
}

// New returns an empty cache; nothing runs until the first Get.
func New(cfg Config) *Cache {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = DefaultRetryAfter
	}
	if cfg.Home == "" {
		for _, kv := range cfg.Env {
			if strings.HasPrefix(kv, "HOME=") {
				cfg.Home = kv[len("HOME="):]
			}
		}
	}
	return &Cache{cfg: cfg}
}

// Get returns the login environment, capturing it (with children started
// through r) when there is none yet or a file a login shell reads changed.
// The map is shared: callers must not modify it. ok is false when there is
// no usable capture (it failed, now or less than RetryAfter ago): the
// caller should then run a login shell.
func (c *Cache) Get(r *reaper.Reaper) (env map[string]string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.failedAt.IsZero() && time.Since(c.failedAt) < c.cfg.RetryAfter {
		return nil, false
	}
	key := c.fileStates()
	if c.valid && sameStates(key, c.key) {
		return c.env, true
	}
	for attempt := 1; ; attempt++ {
		c.captures++
		env, err := c.capture(r)
		if err != nil {
			c.valid, c.env, c.key = false, nil, nil
			c.failedAt = time.Now()
			log.Printf("loginenv: capturing the login environment failed (shell commands run as %s -lc; retrying in %v at the earliest): %v",
				filepath.Base(c.cfg.Bash), c.cfg.RetryAfter, err)
			return nil, false
		}
		// A file that changed while the capture ran may or may not be in
		// it: capture once more. If it changed again, the profile itself
		// is what changes it (say, it touches ~/.bashrc); keeping the
		// state it left stops that from causing a capture per command.
		after := c.fileStates()
		if sameStates(key, after) || attempt == 2 {
			c.valid, c.env, c.key, c.failedAt = true, env, after, time.Time{}
			return env, true
		}
		key = after
	}
}

// Captures returns how many captures have been attempted.
func (c *Cache) Captures() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.captures
}

// fileState is what identifies a file's content without reading it.
type fileState struct {
	path   string
	exists bool
	dev    uint64
	ino    uint64
	size   int64
	mtime  int64 // ns
	ctime  int64 // ns; catches a rewrite that restored the old mtime
}

// fileStates stats every file a bash login shell (and Debian's profile
// scripts) may read, in a fixed order.
func (c *Cache) fileStates() []fileState {
	paths := []string{"/etc/profile", "/etc/bash.bashrc", "/etc/environment"}
	if d, err := os.Open("/etc/profile.d"); err == nil {
		names, _ := d.Readdirnames(-1)
		d.Close()
		sort.Strings(names)
		for _, n := range names {
			paths = append(paths, "/etc/profile.d/"+n)
		}
	}
	if c.cfg.Home != "" {
		for _, n := range []string{".bash_profile", ".bash_login", ".profile", ".bashrc"} {
			paths = append(paths, filepath.Join(c.cfg.Home, n))
		}
	}
	states := make([]fileState, len(paths))
	for i, p := range paths {
		states[i].path = p
		var st syscall.Stat_t
		if syscall.Stat(p, &st) != nil {
			continue
		}
		states[i] = fileState{
			path:   p,
			exists: true,
			dev:    uint64(st.Dev),
			ino:    uint64(st.Ino),
			size:   st.Size,
			mtime:  st.Mtim.Nano(),
			ctime:  st.Ctim.Nano(),
		}
	}
	return states
}

func sameStates(a, b []fileState) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// capture runs `bash -lc 'env -0 >&3'` in /, stdin, stdout and stderr on
// /dev/null, in a process group (and in a VM a cgroup) of its own, and
// parses what it wrote to fd 3.
func (c *Cache) capture(r *reaper.Reaper) (map[string]string, error) {
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		null.Close()
		return nil, err
	}
	defer pr.Close()
	attr := &syscall.ProcAttr{
		Dir:   "/",
		Env:   c.cfg.Env,
		Files: []uintptr{null.Fd(), null.Fd(), null.Fd(), pw.Fd()},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	}
	pid, status, err := r.Spawn(c.cfg.Bash, []string{"bash", "-lc", captureScript}, attr)
	null.Close()
	pw.Close() // the child has its copy; ours would hide EOF
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.cfg.Bash, err)
	}
	var group *cgroup.Group
	if cgroup.Enabled() {
		if g, err := cgroup.New(); err == nil {
			if g.Add(pid) == nil {
				group = g
			} else {
				g.Remove()
			}
		}
	}
	if group != nil {
		// Emptied unless the profile left a process running (then a later
		// command's sweep removes it).
		defer group.Remove()
	}

	read := make(chan readResult, 1)
	go func() {
		var res readResult
		res.b, res.err = readUpTo(pr, maxOutput+1)
		read <- res
	}()

	timer := time.NewTimer(c.cfg.Timeout)
	defer timer.Stop()
	var st reaper.Status
	select {
	case st = <-status:
	case <-timer.C:
		if group != nil {
			_ = group.Kill()
		}
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = pr.SetReadDeadline(time.Now())
		<-read
		t := time.NewTimer(killWait)
		select {
		case <-status:
		case <-t.C:
		}
		t.Stop()
		return nil, fmt.Errorf("the login shell did not finish within %v", c.cfg.Timeout)
	}

	// The shell has exited, so everything env wrote is in the pipe. A
	// process the profile started in the background may still hold the
	// pipe open, so rather than wait for EOF: stop the reader, then take
	// what is left without blocking.
	_ = pr.SetReadDeadline(time.Now())
	res := <-read
	out := res.b
	if res.err != nil && !errors.Is(res.err, os.ErrDeadlineExceeded) {
		return nil, res.err
	}
	rest, err := drain(pr, maxOutput+1-len(out))
	if err != nil {
		return nil, err
	}
	out = append(out, rest...)

	if st.Wait.Signaled() {
		return nil, fmt.Errorf("the login shell was killed by signal %d", st.Wait.Signal())
	}
	if code := st.Wait.ExitStatus(); code != 0 {
		return nil, fmt.Errorf("the login shell exited with status %d", code)
	}
	if len(out) > maxOutput {
		return nil, fmt.Errorf("the environment is larger than %d bytes", maxOutput)
	}
	return Parse(out)
}

type readResult struct {
	b   []byte
	err error
}

// readUpTo reads f until EOF or an error, keeping at most max bytes; the
// rest is read and dropped, so that the writer never blocks on a full pipe.
func readUpTo(f *os.File, max int) ([]byte, error) {
	var out []byte
	buf := make([]byte, 32<<10)
	for {
		n, err := f.Read(buf)
		if keep := max - len(out); keep > 0 {
			if n > keep {
				n = keep
			}
			out = append(out, buf[:n]...)
		}
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

// drain reads what f holds right now, at most max bytes, without waiting.
func drain(f *os.File, max int) ([]byte, error) {
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		return nil, err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var out []byte
	var rerr error
	buf := make([]byte, 32<<10)
	err = rc.Read(func(fd uintptr) bool {
		for len(out) < max {
			n, err := syscall.Read(int(fd), buf)
			if err == syscall.EINTR {
				continue
			}
			if err == syscall.EAGAIN || n == 0 {
				return true // nothing more now, or EOF
			}
			if err != nil {
				rerr = err
				return true
			}
			out = append(out, buf[:n]...)
		}
		return true
	})
	if err == nil {
		err = rerr
	}
	return out, err
}

// Parse reads the output of `env -0`: NAME=value entries, each ended by a
// NUL. Variables that describe the capturing shell (_, SHLVL, PWD, OLDPWD)
// are left out. Output that is empty or not in that form is an error (a
// profile that exits 0 before env ran leaves nothing).
func Parse(out []byte) (map[string]string, error) {
	if len(out) == 0 {
		return nil, errors.New("the login shell wrote no environment")
	}
	if out[len(out)-1] != 0 {
		return nil, errors.New("the environment does not end with a NUL byte")
	}
	env := map[string]string{}
	for _, entry := range bytes.Split(out[:len(out)-1], []byte{0}) {
		i := bytes.IndexByte(entry, '=')
		if i <= 0 {
			return nil, fmt.Errorf("malformed environment entry %q", truncate(entry))
		}
		name := string(entry[:i])
		if dropped[name] {
			continue
		}
		if _, dup := env[name]; !dup { // as getenv: the first one counts
			env[name] = string(entry[i+1:])
		}
	}
	return env, nil
}

func truncate(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "…"
	}
	return string(b)
}
