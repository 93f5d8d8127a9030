// Package services keeps the agent's named background commands. A service
// belongs to the agent, not to the session that started it: it runs until
// it exits or is stopped, its stdout and stderr go to one bounded buffer
// that any later session can read, and it has a process group and a cgroup
// of its own so that stopping it reaches everything it started.
package services

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"syscall"
	"time"

	"pyro/guest/internal/cgroup"
	"pyro/guest/internal/outbuf"
	"pyro/guest/internal/process"
	"pyro/guest/internal/reaper"
)

// Limits and timings.
const (
	// MaxServices bounds the services kept (running or exited).
	MaxServices = 32
	// BufferSize is the output each service keeps (the newest bytes).
	BufferSize = 1 << 20
	// DefaultGrace and MaxGrace are the time a service has to end after
	// SIGTERM when stopped.
	DefaultGrace = 3 * time.Second
	MaxGrace     = 60 * time.Second
	// maxNameLen bounds a name (the cgroup is svc-NAME).
	maxNameLen = 63

	exitDrain = 250 * time.Millisecond
	killWait  = 10 * time.Second
)

// Errors of the registry; the session maps them to protocol codes.
var (
	ErrNotFound      = errors.New("no such service")
	ErrAlreadyExists = errors.New("a service of that name is running")
	ErrTooMany       = fmt.Errorf("too many services (at most %d)", MaxServices)
)

// ValidName says whether name may name a service:
// ^[a-z0-9][a-z0-9_.-]{0,62}$.
func ValidName(name string) bool {
	if name == "" || len(name) > maxNameLen {
		return false
	}
	for i, c := range []byte(name) {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '_' || c == '.' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// Spec describes a service to start.
type Spec struct {
	Name    string // valid
	Command string // run as exec runs a shell command (process.ShellCommand)
	Cwd     string // "" as for exec
	Env     map[string]string
}

// Registry holds the services of the agent; it is safe for concurrent use.
type Registry struct {
	reaper *reaper.Reaper
	mu     sync.Mutex
	svcs   map[string]*Service
}

// NewRegistry returns an empty registry whose services are started with r.
func NewRegistry(r *reaper.Reaper) *Registry {
	process.RestoreChildSignals()
	return &Registry{reaper: r, svcs: map[string]*Service{}}
}

// Service is one started service.
type Service struct {
	name    string
	command string
	pid     int
	started time.Time
	group   *cgroup.Group
	outR    *os.File
	out     *outbuf.Buffer
	procD   chan struct{} // closed once the main process has been reaped
	exited  chan struct{} // closed once the exit is reported (output drained)
	readerD chan struct{} // closed when the output reads EOF

	mu       sync.Mutex
	ended    time.Time
	exitCode int
	signal   string
}

// Exit is how a service ended.
type Exit struct {
	Code   int
	Signal string // "" unless killed by a signal
}

// Info describes a service for service_status.
type Info struct {
	Name        string
	Command     string
	Pid         int
	Running     bool
	Exit        Exit      // when !Running
	Started     time.Time //
	Ended       time.Time // when !Running
	OutputBytes int64
}

// Start starts a service. A running service of that name is
// ErrAlreadyExists; an exited one is replaced. Failures to start are
// *process.StartError.
func (g *Registry) Start(spec Spec) (Info, error) {
	if !ValidName(spec.Name) {
		return Info{}, fmt.Errorf("invalid service name %q", spec.Name)
	}
	// Resolved before taking the lock: capturing the login environment may
	// take a while, and the registry should keep answering meanwhile.
	path, argv, env := process.ShellCommand(g.reaper, spec.Command, spec.Env)
	g.mu.Lock()
	defer g.mu.Unlock()
	old := g.svcs[spec.Name]
	switch {
	case old != nil && !old.Exited():
		return Info{}, ErrAlreadyExists
	case old == nil && len(g.svcs) >= MaxServices:
		return Info{}, ErrTooMany
	}
	svc, err := start(g.reaper, spec, path, argv, env)
	if err != nil {
		return Info{}, &process.StartError{Err: err}
	}
	if old != nil {
		old.release()
	}
	g.svcs[spec.Name] = svc
	return svc.Info(), nil
}

// start runs path with argv and env as the service spec describes.
func start(r *reaper.Reaper, spec Spec, path string, argv, env []string) (*Service, error) {
	cwd, err := process.WorkDir(spec.Cwd)
	if err != nil {
		return nil, err
	}
	stdin, err := os.Open(process.DevNull)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", process.DevNull, err)
	}
	defer stdin.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer outW.Close() // the service has its own copies; ours would hide EOF
	attr := &syscall.ProcAttr{
		Dir:   cwd,
		Env:   env,
		Files: []uintptr{stdin.Fd(), outW.Fd(), outW.Fd()},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	}
	started := time.Now()
	pid, status, err := r.Spawn(path, argv, attr)
	if err != nil {
		outR.Close()
		return nil, fmt.Errorf("%s: %w", argv[0], err)
	}
	svc := &Service{
		name:    spec.Name,
		command: spec.Command,
		pid:     pid,
		started: started,
		outR:    outR,
		out:     outbuf.New(BufferSize),
		procD:   make(chan struct{}),
		exited:  make(chan struct{}),
		readerD: make(chan struct{}),
	}
	svc.group = process.JoinCgroup(pid, "svc-"+spec.Name)
	go svc.readLoop()
	go svc.waitLoop(status)
	return svc, nil
}

func (svc *Service) readLoop() {
	defer close(svc.readerD)
	_, _ = svc.out.ReadFrom(svc.outR)
}

func (svc *Service) waitLoop(status <-chan reaper.Status) {
	st := <-status
	ended := time.Now()
	code, sig := process.ExitStatus(st.Wait)
	svc.mu.Lock()
	svc.ended, svc.exitCode, svc.signal = ended, code, sig
	svc.mu.Unlock()
	close(svc.procD)
	// What the service printed last is read before its exit is reported,
	// unless a background process it left keeps the output open.
	t := time.NewTimer(exitDrain)
	select {
	case <-svc.readerD:
	case <-t.C:
	}
	t.Stop()
	close(svc.exited)
	if svc.group != nil {
		svc.group.Remove() // fails while something it started lives on
	}
}

// release frees what an exited service still holds once it is replaced or
// removed: its output pipe (left open by a background process) and its
// cgroup if empty.
func (svc *Service) release() {
	svc.outR.Close()
	if svc.group != nil {
		svc.group.Remove()
	}
}

// Exited says whether the service's main process has exited.
func (svc *Service) Exited() bool {
	select {
	case <-svc.exited:
		return true
	default:
		return false
	}
}

func (svc *Service) exit() Exit {
	svc.mu.Lock()
	defer svc.mu.Unlock()
	return Exit{Code: svc.exitCode, Signal: svc.signal}
}

// Info describes the service.
func (svc *Service) Info() Info {
	info := Info{
		Name:        svc.name,
		Command:     svc.command,
		Pid:         svc.pid,
		Running:     !svc.Exited(),
		Started:     svc.started,
		OutputBytes: svc.out.Stats().End,
	}
	if !info.Running {
		svc.mu.Lock()
		info.Exit = Exit{Code: svc.exitCode, Signal: svc.signal}
		info.Ended = svc.ended
		svc.mu.Unlock()
	}
	return info
}

func (g *Registry) get(name string) (*Service, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if svc := g.svcs[name]; svc != nil {
		return svc, nil
	}
	return nil, ErrNotFound
}

// Status describes every service sorted by name, or only the one named
// (when name is not "").
func (g *Registry) Status(name string) ([]Info, error) {
	if name != "" {
		svc, err := g.get(name)
		if err != nil {
			return nil, err
		}
		return []Info{svc.Info()}, nil
	}
	g.mu.Lock()
	all := make([]*Service, 0, len(g.svcs))
	for _, svc := range g.svcs {
		all = append(all, svc)
	}
	g.mu.Unlock()
	sort.Slice(all, func(i, j int) bool { return all[i].name < all[j].name })
	infos := make([]Info, 0, len(all))
	for _, svc := range all {
		infos = append(infos, svc.Info())
	}
	return infos, nil
}

// Logs is what service_logs replies.
type Logs struct {
	Data      []byte
	Dropped   int64 // bytes the buffer no longer holds
	Total     int64 // bytes the service has written
	Truncated bool  // Data was cut to maxBytes
}

// Logs returns the last tailLines lines of the service's output (all of
// it when tailLines < 0), at most the last maxBytes of them.
func (g *Registry) Logs(name string, tailLines int64, maxBytes int) (Logs, error) {
	svc, err := g.get(name)
	if err != nil {
		return Logs{}, err
	}
	data, st := svc.out.Snapshot()
	if tailLines >= 0 {
		n := tailLines
		if n > int64(len(data)) {
			n = int64(len(data)) // more lines than bytes: all of them
		}
		data = outbuf.TailLines(data, int(n))
	}
	logs := Logs{Dropped: st.Start, Total: st.End}
	if maxBytes < 0 {
		maxBytes = 0
	}
	if len(data) > maxBytes {
		data = data[len(data)-maxBytes:]
		logs.Truncated = true
	}
	logs.Data = data
	return logs, nil
}

// Stop ends a running service: SIGTERM to its process group, and after
// grace SIGKILL to its cgroup and group. It returns once the service has
// exited, with how it ended (at once for an exited service).
func (g *Registry) Stop(name string, grace time.Duration) (Exit, error) {
	svc, err := g.get(name)
	if err != nil {
		return Exit{}, err
	}
	return svc.stop(grace)
}

func (svc *Service) stop(grace time.Duration) (Exit, error) {
	if svc.Exited() {
		return svc.exit(), nil
	}
	_ = syscall.Kill(-svc.pid, syscall.SIGTERM)
	if waitClosed(svc.procD, grace) {
		<-svc.exited // at most exitDrain later
		return svc.exit(), nil
	}
	if svc.group != nil {
		_ = svc.group.Kill()
	}
	_ = syscall.Kill(-svc.pid, syscall.SIGKILL)
	if waitClosed(svc.procD, killWait) {
		<-svc.exited
		return svc.exit(), nil
	}
	return Exit{}, fmt.Errorf("service %s (pid %d) did not end after SIGKILL", svc.name, svc.pid)
}

// Remove forgets a service, stopping it first (with DefaultGrace) when it
// still runs.
func (g *Registry) Remove(name string) error {
	svc, err := g.get(name)
	if err != nil {
		return err
	}
	if _, err := svc.stop(DefaultGrace); err != nil {
		return err
	}
	g.mu.Lock()
	if g.svcs[name] == svc {
		delete(g.svcs, name)
	}
	g.mu.Unlock()
	svc.release()
	return nil
}

func waitClosed(ch <-chan struct{}, d time.Duration) bool {
	if d <= 0 {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}
