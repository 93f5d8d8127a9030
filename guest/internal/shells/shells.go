// Package shells keeps the agent's interactive shells: login shells on
// pseudo-terminals that belong to the agent rather than to the session that
// opened them, so any later session can read their output, type into them,
// signal and close them.
//
// The agent reads each terminal continuously into a bounded buffer (a
// full-screen program or a flood of output never blocks the shell); readers
// address that output by absolute offsets.
package shells

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"pyro/guest/internal/cgroup"
	"pyro/guest/internal/outbuf"
	"pyro/guest/internal/process"
	"pyro/guest/internal/pty"
	"pyro/guest/internal/reaper"
)

// Limits and timings.
const (
	// MaxShells bounds the shells kept at once (running or exited but not
	// yet closed); each may hold BufferSize of output.
	MaxShells = 32
	// BufferSize is the output each shell keeps (the newest bytes).
	BufferSize = 1 << 20
	// MaxCols and MaxRows bound the terminal size.
	MaxCols = 1000
	MaxRows = 500
	// MaxWrite bounds one write to the terminal.
	MaxWrite = 64 << 10
	// CloseGrace is how long a shell has to end after SIGHUP.
	CloseGrace = 500 * time.Millisecond

	// exitDrain is how long, once the shell has exited, the agent waits
	// for the rest of its output before reporting the exit (a background
	// process still holding the terminal would otherwise keep it open).
	exitDrain = 250 * time.Millisecond
	// killWait bounds the wait for a shell to die after SIGKILL.
	killWait = 5 * time.Second
	// writeQueueLen bounds the writes waiting for the terminal, and
	// queueWait how long a write waits for room in that queue.
	writeQueueLen = 16
	queueWait     = 5 * time.Second
	// writeTimeout bounds how long one write waits for the terminal to
	// take its bytes (a program that reads no input fills the terminal's
	// input buffer).
	writeTimeout = 10 * time.Second
)

// Errors of the registry; the session maps them to protocol codes.
var (
	ErrNotFound = errors.New("no such shell")
	ErrTooMany  = fmt.Errorf("too many shells (at most %d)", MaxShells)
	ErrExited   = errors.New("the shell has exited")
)

// Options describe a shell to open.
type Options struct {
	Cwd        string            // "" as for exec
	Cols, Rows int               // validated by the caller
	Env        map[string]string // overlaid on the base environment
}

// Registry holds the shells of the agent; it is safe for concurrent use.
type Registry struct {
	reaper *reaper.Reaper
	mu     sync.Mutex
	shells map[string]*Shell
}

// NewRegistry returns an empty registry whose shells are started with r.
func NewRegistry(r *reaper.Reaper) *Registry {
	process.RestoreChildSignals()
	return &Registry{reaper: r, shells: map[string]*Shell{}}
}

// Shell is one shell.
type Shell struct {
	id      string
	pid     int
	cwd     string // where it started
	started time.Time
	master  *os.File
	group   *cgroup.Group
	out     *outbuf.Buffer

	procDone   chan struct{} // closed once the shell process has been reaped
	exited     chan struct{} // closed once the exit is reported (output drained)
	readerDone chan struct{} // closed when the terminal reads EOF
	freed      chan struct{} // closed by Close
	writes     chan writeReq
	closeOnce  sync.Once
	closeErr   error

	mu       sync.Mutex
	cols     int
	rows     int
	exitCode int
	signal   string
}

type writeReq struct {
	data []byte
	done func(error)
}

// Exit is how a shell ended.
type Exit struct {
	Code   int
	Signal string // "" unless killed by a signal
}

// Info describes a shell for shell_list.
type Info struct {
	ID         string
	Pid        int
	Cols, Rows int
	Cwd        string
	Running    bool
	Exit       Exit // when !Running
	End        int64
	Started    time.Time
}

// Open starts a shell. Failures to start are *process.StartError.
func (g *Registry) Open(opts Options) (*Shell, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.shells) >= MaxShells {
		return nil, ErrTooMany
	}
	id, err := newID()
	if err != nil {
		return nil, err
	}
	sh, err := start(g.reaper, id, opts)
	if err != nil {
		return nil, &process.StartError{Err: err}
	}
	g.shells[id] = sh
	return sh, nil
}

func newID() (string, error) {
	var b [6]byte
	if _, err := io.ReadFull(rand.Reader, b[:]); err != nil {
		return "", err
	}
	return "sh-" + hex.EncodeToString(b[:]), nil
}

func start(r *reaper.Reaper, id string, opts Options) (*Shell, error) {
	shellPath, shellName := process.Shell()
	env := process.Env(shellPath, map[string]string{"TERM": "xterm-256color"}, opts.Env)
	cwd, err := process.WorkDir(opts.Cwd)
	if err != nil {
		return nil, err
	}
	master, slave, err := pty.Open()
	if err != nil {
		return nil, err
	}
	defer slave.Close() // the shell has its own copies; ours would hide EOF
	if err := pty.SetSize(master, opts.Cols, opts.Rows); err != nil {
		master.Close()
		return nil, fmt.Errorf("set terminal size: %w", err)
	}
	fd := slave.Fd()
	attr := &syscall.ProcAttr{
		Dir:   cwd,
		Env:   env,
		Files: []uintptr{fd, fd, fd},
		// A session of its own with the terminal as its controlling
		// terminal: job control works, and the shell's jobs get the
		// terminal's signals.
		Sys: &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0},
	}
	started := time.Now()
	pid, status, err := r.Spawn(shellPath, []string{shellName, "-l"}, attr)
	if err != nil {
		master.Close()
		return nil, fmt.Errorf("%s: %w", shellName, err)
	}
	sh := &Shell{
		id:         id,
		pid:        pid,
		cwd:        cwd,
		started:    started,
		master:     master,
		out:        outbuf.New(BufferSize),
		procDone:   make(chan struct{}),
		exited:     make(chan struct{}),
		readerDone: make(chan struct{}),
		freed:      make(chan struct{}),
		writes:     make(chan writeReq, writeQueueLen),
		cols:       opts.Cols,
		rows:       opts.Rows,
	}
	sh.group = process.JoinCgroup(pid, id)
	go sh.readLoop()
	go sh.waitLoop(status)
	go sh.writeLoop()
	return sh, nil
}

// readLoop copies the terminal into the buffer until it reads EOF (EIO
// once no process holds the terminal any more) or the master is closed.
func (sh *Shell) readLoop() {
	defer close(sh.readerDone)
	_, _ = sh.out.ReadFrom(sh.master)
}

func (sh *Shell) waitLoop(status <-chan reaper.Status) {
	st := <-status
	code, sig := process.ExitStatus(st.Wait)
	sh.mu.Lock()
	sh.exitCode, sh.signal = code, sig
	sh.mu.Unlock()
	close(sh.procDone)
	t := time.NewTimer(exitDrain)
	select {
	case <-sh.readerDone:
	case <-t.C:
	}
	t.Stop()
	close(sh.exited)
	if sh.group != nil {
		sh.group.Remove() // fails while something of the shell lives on
	}
}

func (sh *Shell) writeLoop() {
	for {
		select {
		case req := <-sh.writes:
			req.done(sh.write(req.data))
		case <-sh.freed:
			for {
				select {
				case req := <-sh.writes:
					req.done(ErrNotFound)
				default:
					return
				}
			}
		}
	}
}

func (sh *Shell) write(data []byte) error {
	if sh.Exited() {
		return ErrExited
	}
	_ = sh.master.SetWriteDeadline(time.Now().Add(writeTimeout))
	n, err := sh.master.Write(data)
	if err == nil {
		return nil
	}
	if sh.Exited() || errors.Is(err, syscall.EIO) {
		return ErrExited
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("the terminal took only %d of %d bytes within %v (the program does not read its input)", n, len(data), writeTimeout)
	}
	return err
}

// Get returns the shell with id.
func (g *Registry) Get(id string) (*Shell, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if sh := g.shells[id]; sh != nil {
		return sh, nil
	}
	return nil, ErrNotFound
}

// ID returns the shell's id.
func (sh *Shell) ID() string { return sh.id }

// Pid returns the pid of the shell process.
func (sh *Shell) Pid() int { return sh.pid }

// Exited says whether the shell process has exited.
func (sh *Shell) Exited() bool {
	select {
	case <-sh.exited:
		return true
	default:
		return false
	}
}

func (sh *Shell) exit() Exit {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return Exit{Code: sh.exitCode, Signal: sh.signal}
}

// ReadRequest is a shell_read.
type ReadRequest struct {
	Cursor   int64
	MaxBytes int
	// WaitForIdle, when non-nil: wait while output arrived less than
	// this long ago.
	WaitForIdle *time.Duration
	// Wait bounds the waiting.
	Wait time.Duration
}

// ReadResult is what shell_read replies.
type ReadResult struct {
	Start, Next, Dropped, End int64
	Data                      []byte
	Idle                      time.Duration
	Running                   bool
	Exit                      Exit // when !Running
}

// Read waits as ReadRequest says (or until cancel is closed), then returns
// the output from the cursor on.
func (sh *Shell) Read(req ReadRequest, cancel <-chan struct{}) ReadResult {
	deadline := time.Now().Add(req.Wait)
	for !sh.Exited() {
		var changed <-chan struct{}
		if req.WaitForIdle == nil {
			// Taken before looking, so no write can slip in between.
			changed = sh.out.Changed()
		}
		st := sh.out.Stats()
		now := time.Now()
		left := deadline.Sub(now)
		if left <= 0 {
			break
		}
		if req.WaitForIdle != nil {
			quiet := now.Sub(st.LastWrite)
			if quiet >= *req.WaitForIdle {
				break
			}
			// Output only ever pushes the idle point later, so sleeping
			// until the current one is never too long.
			if d := *req.WaitForIdle - quiet; d < left {
				left = d
			}
		} else if st.End > req.Cursor {
			break
		}
		t := time.NewTimer(left)
		select {
		case <-changed: // nil (never ready) in idle mode
		case <-sh.exited:
		case <-t.C:
		case <-cancel:
			t.Stop()
			return sh.snapshot(req)
		}
		t.Stop()
	}
	return sh.snapshot(req)
}

func (sh *Shell) snapshot(req ReadRequest) ReadResult {
	running := !sh.Exited() // first: output read after it is complete
	start, data, st := sh.out.ReadAt(req.Cursor, req.MaxBytes)
	res := ReadResult{
		Start:   start,
		Next:    start + int64(len(data)),
		End:     st.End,
		Data:    data,
		Idle:    time.Since(st.LastWrite),
		Running: running,
	}
	cursor := req.Cursor
	if cursor > st.End {
		cursor = st.End
	}
	if start > cursor {
		res.Dropped = start - cursor
	}
	if !running {
		res.Exit = sh.exit()
	}
	return res
}

// Write queues data for the terminal; done is called with the outcome
// once it has been written. Writes are done in the order Write is called.
func (sh *Shell) Write(data []byte, done func(error)) {
	if sh.Exited() {
		done(ErrExited)
		return
	}
	t := time.NewTimer(queueWait)
	defer t.Stop()
	select {
	case sh.writes <- writeReq{data: data, done: done}:
	case <-sh.freed:
		done(ErrNotFound)
	case <-t.C:
		done(fmt.Errorf("%d writes are still waiting for the terminal", writeQueueLen))
	}
}

// Resize sets the terminal size.
func (sh *Shell) Resize(cols, rows int) error {
	if err := pty.SetSize(sh.master, cols, rows); err != nil {
		return err
	}
	sh.mu.Lock()
	sh.cols, sh.rows = cols, rows
	sh.mu.Unlock()
	return nil
}

// Signal sends sig to the terminal's foreground process group (the shell
// itself when no job runs) and returns that group.
func (sh *Shell) Signal(sig syscall.Signal) (int, error) {
	if sh.Exited() {
		return 0, ErrExited
	}
	pgid := sh.foreground()
	if err := syscall.Kill(-pgid, sig); err != nil && err != syscall.ESRCH {
		return pgid, err
	}
	return pgid, nil
}

// foreground returns the terminal's foreground process group, or the
// shell's own group when the terminal has none.
func (sh *Shell) foreground() int {
	if pgid, err := pty.ForegroundPgrp(sh.master); err == nil && pgid > 0 {
		return pgid
	}
	return sh.pid
}

// Close ends the shell and forgets it: SIGHUP to the terminal's foreground
// group and the shell, and after CloseGrace the whole cgroup and the
// groups get SIGKILL. It returns how the shell ended.
func (g *Registry) Close(id string) (Exit, error) {
	sh, err := g.Get(id)
	if err != nil {
		return Exit{}, err
	}
	sh.closeOnce.Do(func() {
		sh.closeErr = sh.terminate()
		close(sh.freed)
		sh.master.Close() // ends the reader even if something holds the terminal (again, after terminate)
		if sh.group != nil {
			sh.group.Remove()
		}
		g.mu.Lock()
		if g.shells[id] == sh {
			delete(g.shells, id)
		}
		g.mu.Unlock()
	})
	if sh.closeErr != nil {
		return Exit{}, sh.closeErr
	}
	return sh.exit(), nil
}

func (sh *Shell) terminate() error {
	if sh.Exited() {
		return nil
	}
	fg := sh.foreground()
	_ = syscall.Kill(-fg, syscall.SIGHUP)
	_ = syscall.Kill(sh.pid, syscall.SIGHUP)
	// Hang up the terminal as well: bash (readline) can miss a signal
	// that arrives just before it blocks waiting for input, but not the
	// hangup, which makes that wait return.
	sh.master.Close()
	if waitClosed(sh.procDone, CloseGrace) {
		<-sh.exited // at most exitDrain later
		return nil
	}
	if sh.group != nil {
		_ = sh.group.Kill()
	}
	_ = syscall.Kill(-fg, syscall.SIGKILL)
	_ = syscall.Kill(-sh.pid, syscall.SIGKILL)
	_ = syscall.Kill(sh.pid, syscall.SIGKILL)
	// Without a cgroup (off-VM) the rest of the terminal's session: a job
	// that became the foreground after fg was looked up, for one.
	killSession(sh.pid)
	if waitClosed(sh.procDone, killWait) {
		<-sh.exited
		return nil
	}
	return fmt.Errorf("shell %s (pid %d) did not end after SIGKILL", sh.id, sh.pid)
}

// killSession sends SIGKILL to every process of session sid.
func killSession(sid int) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp session …; comm may hold anything,
		// so the fields are counted from its closing parenthesis.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 3 && f[3] == strconv.Itoa(sid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func waitClosed(ch <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}

// List describes every shell, oldest first.
func (g *Registry) List() []Info {
	g.mu.Lock()
	all := make([]*Shell, 0, len(g.shells))
	for _, sh := range g.shells {
		all = append(all, sh)
	}
	g.mu.Unlock()
	sort.Slice(all, func(i, j int) bool {
		if !all[i].started.Equal(all[j].started) {
			return all[i].started.Before(all[j].started)
		}
		return all[i].id < all[j].id
	})
	infos := make([]Info, 0, len(all))
	for _, sh := range all {
		infos = append(infos, sh.Info())
	}
	return infos
}

// Info describes the shell. Cwd is the shell's current directory while it
// runs, else where it started.
func (sh *Shell) Info() Info {
	running := !sh.Exited()
	sh.mu.Lock()
	info := Info{ID: sh.id, Pid: sh.pid, Cols: sh.cols, Rows: sh.rows, Cwd: sh.cwd, Running: running, Started: sh.started}
	sh.mu.Unlock()
	if running {
		if cwd, err := os.Readlink("/proc/" + strconv.Itoa(sh.pid) + "/cwd"); err == nil {
			info.Cwd = cwd
		}
	} else {
		info.Exit = sh.exit()
	}
	info.End = sh.out.Stats().End
	return info
}
