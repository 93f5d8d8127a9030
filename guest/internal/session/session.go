// Package session serves the agent protocol on one transport endpoint (a
// virtio-serial port or an accepted unix-socket connection).
//
// A Conn owns the endpoint's single writer goroutine and a monotonically
// increasing epoch. Every reply is tagged with the epoch of the session that
// produced it, and the writer drops frames whose epoch is no longer current.
// Because hello (and EOF) bump the epoch before anything of the new session
// is queued, nothing belonging to an older session is written after the
// hello_ok of a newer one. Producers of an ended session also stop blocking
// at once (their session's done channel is closed), so a command that
// outlives its session just has its output discarded.
package session

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"pyro/guest/internal/identity"
	"pyro/guest/internal/process"
	"pyro/guest/internal/protocol"
	"pyro/guest/internal/reaper"
	"pyro/guest/internal/secrets"
	"pyro/guest/internal/services"
	"pyro/guest/internal/shells"
	"pyro/guest/internal/tcpfwd"
)

const (
	// outQueueLen bounds the frames waiting for the writer. With output
	// chunks of at most 64 KiB this caps buffered output at ~1 MiB per
	// endpoint; beyond that, producers block and the children's pipes fill.
	outQueueLen = 16
	// flushTimeout bounds how long poweroff waits for its ok to be written
	// (a virtio port write blocks while no host is connected).
	flushTimeout = 2 * time.Second
	// maxMessageLen keeps error messages (which may embed host-supplied
	// strings) far below the header limit.
	maxMessageLen = 1024
)

// Options configure a Conn.
type Options struct {
	// PID1 is reported in hello_ok.
	PID1 bool
	// Identity applies hello fields (it is a no-op off-VM).
	Identity identity.Applier
	// Reaper starts and waits for children; required.
	Reaper *reaper.Reaper
	// PowerOff is called after the ok reply to poweroff has been written.
	PowerOff func()
	// BootID returns the boot id for hello_ok; defaults to identity.BootID.
	BootID func() string
	// Logf logs diagnostics; defaults to log.Printf.
	Logf func(format string, args ...any)
	// Shells and Services are the agent's registries, shared by every
	// endpoint; they default to ones shared by the whole process.
	Shells   *shells.Registry
	Services *services.Registry
	// Secrets is the secrets directory; it defaults to the VM's (with its
	// tmpfs) in PID-1 mode, else $PYRO_AGENT_SECRETS_DIR.
	Secrets *secrets.Store
}

// The process-wide defaults of Options' registries: whatever endpoint a
// request comes through, it sees the same shells, services and secrets.
var (
	sharedOnce     sync.Once
	sharedShells   *shells.Registry
	sharedServices *services.Registry
	sharedSecrets  [2]*secrets.Store // off-VM, PID 1
)

func sharedDefaults(r *reaper.Reaper) {
	sharedOnce.Do(func() {
		sharedShells = shells.NewRegistry(r)
		sharedServices = services.NewRegistry(r)
		sharedSecrets = [2]*secrets.Store{secrets.New("", false), secrets.New(secrets.VMDir, true)}
	})
}

// Conn serves one endpoint. Serve may be called repeatedly (once per host
// connection) on the same Conn; the writer and epoch persist across calls.
type Conn struct {
	opts Options
	w    io.Writer
	out  chan outFrame
	stop chan struct{}

	closeOnce sync.Once
	epoch     atomic.Uint64

	mu  sync.Mutex
	cur *session
}

// session is the state between two epoch changes.
type session struct {
	epoch       uint64
	established bool          // true if started by hello
	done        chan struct{} // closed when a newer session replaces it

	tcp *tcpfwd.Table // forwarded connections

	mu    sync.Mutex
	execs map[uint64]*process.Proc // running execs, for kill
	puts  map[uint64]*putTar       // put_tar transfers, by id
	over  bool                     // ended: no new transfer may start
}

type outFrame struct {
	epoch   uint64
	data    []byte
	flushed chan struct{} // closed once written or dropped; may be nil
}

// NewConn starts the writer goroutine for w.
func NewConn(w io.Writer, opts Options) *Conn {
	if opts.Logf == nil {
		opts.Logf = log.Printf
	}
	if opts.BootID == nil {
		opts.BootID = identity.BootID
	}
	if opts.PowerOff == nil {
		opts.PowerOff = func() {}
	}
	if opts.Shells == nil || opts.Services == nil || opts.Secrets == nil {
		sharedDefaults(opts.Reaper)
		if opts.Shells == nil {
			opts.Shells = sharedShells
		}
		if opts.Services == nil {
			opts.Services = sharedServices
		}
		if opts.Secrets == nil {
			if opts.PID1 {
				opts.Secrets = sharedSecrets[1]
			} else {
				opts.Secrets = sharedSecrets[0]
			}
		}
	}
	c := &Conn{
		opts: opts,
		w:    w,
		out:  make(chan outFrame, outQueueLen),
		stop: make(chan struct{}),
	}
	c.cur = c.newSessionLocked(false)
	go c.writeLoop()
	return c
}

// Close ends the current session and stops the writer. The caller should
// close the underlying transport first so that a blocked Write returns.
func (c *Conn) Close() {
	c.closeOnce.Do(func() {
		c.replaceSession(false)
		close(c.stop)
	})
}

// Serve reads and handles requests until r returns an error (io.EOF when the
// host disconnected), then ends the current session. Partial input is lost
// with the decoder, as PROTOCOL.md requires.
func (c *Conn) Serve(r io.Reader) error {
	defer c.replaceSession(false)
	dec := protocol.NewDecoder(r)
	for {
		f, err := dec.Next()
		if err != nil {
			return err
		}
		c.handleSafely(f)
	}
}

// newSessionLocked bumps the epoch and returns a fresh session; c.mu must
// be held (or c not yet shared).
func (c *Conn) newSessionLocked(established bool) *session {
	s := &session{
		epoch:       c.epoch.Add(1),
		established: established,
		done:        make(chan struct{}),
		execs:       map[uint64]*process.Proc{},
		puts:        map[uint64]*putTar{},
	}
	s.tcp = tcpfwd.NewTable(func(header any, payload []byte) bool {
		return c.sendFlushed(s, header, payload, nil)
	}, s.done)
	return s
}

// replaceSession ends the current session and starts a new one. The epoch
// is bumped before done is closed, so by the time producers of the old
// session are released, the writer already rejects their frames.
func (c *Conn) replaceSession(established bool) *session {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.cur
	c.cur = c.newSessionLocked(established)
	close(old.done)
	old.abortPuts()
	old.tcp.CloseAll()
	return c.cur
}

func (c *Conn) current() *session {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

func (c *Conn) writeLoop() {
	for {
		select {
		case f := <-c.out:
			c.writeFrame(f)
		case <-c.stop:
			return
		}
	}
}

func (c *Conn) writeFrame(f outFrame) {
	defer func() {
		if f.flushed != nil {
			close(f.flushed)
		}
		if p := recover(); p != nil {
			c.opts.Logf("session: writer panic: %v", p)
		}
	}()
	if f.epoch != c.epoch.Load() {
		return // belongs to a session that has ended
	}
	// Write errors mean the host went away; the reader will see that too
	// and end the session, so there is nothing to do here.
	_, _ = c.w.Write(f.data)
}

// enqueue queues data for the writer, blocking while the queue is full
// (back-pressure) unless the session ends meanwhile. It reports whether the
// frame was queued.
func (c *Conn) enqueue(s *session, data []byte, flushed chan struct{}) bool {
	select {
	case <-s.done:
		return false
	default:
	}
	select {
	case c.out <- outFrame{epoch: s.epoch, data: data, flushed: flushed}:
		return true
	case <-s.done:
	case <-c.stop:
	}
	return false
}

func (c *Conn) send(s *session, header any, payload []byte) {
	c.sendFlushed(s, header, payload, nil)
}

func (c *Conn) sendFlushed(s *session, header any, payload []byte, flushed chan struct{}) bool {
	data, err := protocol.Encode(header, payload)
	if err != nil {
		c.opts.Logf("session: cannot encode reply: %v", err)
		return false
	}
	return c.enqueue(s, data, flushed)
}

func (c *Conn) sendError(s *session, id uint64, code, msg string) {
	c.send(s, protocol.Error{Type: protocol.TypeError, ID: id, Code: code, Message: clip(msg)}, nil)
}

func (c *Conn) handleSafely(f protocol.Frame) {
	defer func() {
		if p := recover(); p != nil {
			c.opts.Logf("session: panic handling request: %v\n%s", p, debug.Stack())
		}
	}()
	c.handle(f)
}

func (c *Conn) handle(f protocol.Frame) {
	typ, id, err := protocol.ParseEnvelope(f.Header)
	if err != nil {
		c.sendError(c.current(), id, protocol.CodeBadRequest, err.Error())
		return
	}
	if typ == protocol.TypeHello {
		c.hello(id, f)
		return
	}
	s := c.current()
	if !s.established {
		// Most likely a request left over from a host that disconnected;
		// executing it on behalf of nobody would be wrong.
		c.sendError(s, id, protocol.CodeBadRequest, "no session: send hello first")
		return
	}
	switch typ {
	case protocol.TypeExec:
		c.exec(s, id, f.Header)
	case protocol.TypeKill:
		c.kill(s, id, f.Header)
	case protocol.TypePing:
		c.send(s, protocol.OK{Type: protocol.TypeOK, ID: id}, nil)
	case protocol.TypePoweroff:
		c.poweroff(s, id)
	case protocol.TypePutTar:
		c.putTarStart(s, id, f)
	case protocol.TypePutTarData:
		c.putTarData(s, id, f.Payload)
	case protocol.TypePutTarEnd:
		c.putTarEnd(s, id)
	case protocol.TypeFsList, protocol.TypeFsRead, protocol.TypeFsWrite, protocol.TypeFsRemove, protocol.TypeGetTar:
		c.fsRequest(s, id, typ, f)
	case protocol.TypeSync:
		go func() {
			syncAll()
			c.send(s, protocol.OK{Type: protocol.TypeOK, ID: id}, nil)
		}()
	case protocol.TypeSecretsPut:
		c.secretsPut(s, id, f.Payload)
	case protocol.TypeShellOpen, protocol.TypeShellRead, protocol.TypeShellWrite, protocol.TypeShellResize,
		protocol.TypeShellSignal, protocol.TypeShellClose, protocol.TypeShellList:
		c.shellRequest(s, id, typ, f)
	case protocol.TypeServiceStart, protocol.TypeServiceStatus, protocol.TypeServiceLogs,
		protocol.TypeServiceStop, protocol.TypeServiceRemove:
		c.serviceRequest(s, id, typ, f.Header)
	case protocol.TypeProbe:
		c.probe(s, id, f.Header)
	case protocol.TypeTCPOpen, protocol.TypeTCPSend, protocol.TypeTCPShutdown, protocol.TypeTCPClose:
		c.tcpRequest(s, id, typ, f)
	default:
		c.sendError(s, id, protocol.CodeBadRequest, fmt.Sprintf("unknown request type %q", typ))
	}
}

func (c *Conn) hello(id uint64, f protocol.Frame) {
	// The session starts even if the hello turns out to be invalid: the
	// host has clearly reconnected, and its error reply must not be mixed
	// with leftovers of the previous session.
	s := c.replaceSession(true)
	var h protocol.Hello
	if err := json.Unmarshal(f.Header, &h); err != nil {
		c.sendError(s, id, protocol.CodeBadRequest, "hello: "+err.Error())
		return
	}
	if h.Nonce == nil || *h.Nonce == "" {
		c.sendError(s, id, protocol.CodeBadRequest, "hello: nonce must be a non-empty string")
		return
	}
	nonce := *h.Nonce
	fail := func(code, msg string) {
		c.send(s, protocol.Error{Type: protocol.TypeError, ID: id, Code: code, Message: clip(msg), Nonce: nonce}, nil)
	}
	req := identity.Request{
		Entropy:    f.Payload,
		TimeUnixMs: h.TimeUnixMs,
		Hostname:   h.Hostname,
		MachineID:  h.MachineID,
	}
	if err := req.Validate(); err != nil {
		fail(protocol.CodeBadRequest, "hello: "+err.Error())
		return
	}
	if err := c.opts.Identity.Apply(req); err != nil {
		c.opts.Logf("session: hello: %v", err)
		fail(protocol.CodeHelloFailed, "hello: "+err.Error())
		return
	}
	c.send(s, protocol.HelloOK{
		Type:         protocol.TypeHelloOK,
		ID:           id,
		Nonce:        nonce,
		AgentVersion: protocol.AgentVersion,
		Protocol:     protocol.ProtocolVersion,
		BootID:       c.opts.BootID(),
		PID1:         c.opts.PID1,
	}, nil)
}

// parseExec validates an exec request into a process.Spec, whether to
// sync the filesystems once the command is over, and its secret_env.
func parseExec(header []byte) (process.Spec, bool, map[string]string, error) {
	var req protocol.Exec
	if err := json.Unmarshal(header, &req); err != nil {
		return process.Spec{}, false, nil, fmt.Errorf("exec: %v", err)
	}
	spec, syncAfter, err := execSpec(req)
	if err == nil {
		err = checkSecretEnv("exec", req.SecretEnv)
	}
	return spec, syncAfter, req.SecretEnv, err
}

func execSpec(req protocol.Exec) (process.Spec, bool, error) {
	hasArgv, hasShell := req.Argv != nil, req.Shell != nil
	if hasArgv == hasShell {
		return process.Spec{}, false, errors.New("exec: exactly one of argv and shell is required")
	}
	if hasArgv && len(req.Argv) == 0 {
		return process.Spec{}, false, errors.New("exec: argv must be non-empty")
	}
	if hasArgv && req.Argv[0] == "" {
		return process.Spec{}, false, errors.New("exec: argv[0] must be non-empty")
	}
	if hasShell && *req.Shell == "" {
		return process.Spec{}, false, errors.New("exec: shell must be non-empty")
	}
	if req.TimeoutMs == nil || *req.TimeoutMs <= 0 {
		return process.Spec{}, false, errors.New("exec: timeout_ms must be a positive integer")
	}
	if req.MaxOutputBytes == nil || *req.MaxOutputBytes < 0 {
		return process.Spec{}, false, errors.New("exec: max_output_bytes must be a non-negative integer")
	}
	if err := checkEnv("exec", req.Env); err != nil {
		return process.Spec{}, false, err
	}
	spec := process.Spec{
		Argv:      req.Argv,
		Env:       req.Env,
		Timeout:   process.TimeoutFromMillis(*req.TimeoutMs),
		MaxOutput: *req.MaxOutputBytes,
	}
	if hasShell {
		spec.Shell = *req.Shell
	}
	if req.Cwd != nil {
		if *req.Cwd == "" {
			return process.Spec{}, false, errors.New("exec: cwd must be non-empty when given")
		}
		spec.Cwd = *req.Cwd
	}
	return spec, req.Sync, nil
}

func (c *Conn) exec(s *session, id uint64, header []byte) {
	spec, syncAfter, secretEnv, err := parseExec(header)
	if err != nil {
		c.sendError(s, id, protocol.CodeBadRequest, err.Error())
		return
	}
	// Only this (reader) goroutine inserts, so check-then-insert is safe
	// without holding the lock across the fork.
	s.mu.Lock()
	_, dup := s.execs[id]
	s.mu.Unlock()
	if dup {
		c.sendError(s, id, protocol.CodeBadRequest, fmt.Sprintf("exec: id %d is already running", id))
		return
	}
	if spec.Env, err = c.withSecrets(s, id, "exec", spec.Env, secretEnv); err != nil {
		return // replied
	}
	proc, err := process.Start(c.opts.Reaper, spec)
	if err != nil {
		c.sendError(s, id, protocol.CodeExecFailed, err.Error())
		return
	}
	// Registered before "started" is queued, so a kill sent in response to
	// "started" (or even right after the exec) always finds the command.
	s.mu.Lock()
	s.execs[id] = proc
	s.mu.Unlock()
	go c.runExec(s, id, proc, syncAfter)
}

func (c *Conn) runExec(s *session, id uint64, proc *process.Proc, syncAfter bool) {
	defer func() {
		s.mu.Lock()
		delete(s.execs, id)
		s.mu.Unlock()
		if p := recover(); p != nil {
			c.opts.Logf("session: panic in exec %d: %v\n%s", id, p, debug.Stack())
		}
	}()
	c.send(s, protocol.Started{Type: protocol.TypeStarted, ID: id, Pid: proc.Pid()}, nil)
	res := proc.Wait(func(st process.Stream, b []byte) {
		c.send(s, protocol.Output{Type: protocol.TypeOutput, ID: id, Stream: st.String()}, b)
	})
	if syncAfter {
		syncAll()
	}
	exit := protocol.Exit{
		Type:            protocol.TypeExit,
		ID:              id,
		ExitCode:        res.ExitCode,
		TimedOut:        res.TimedOut,
		DurationMs:      res.Duration.Milliseconds(),
		StdoutBytes:     res.StdoutBytes,
		StderrBytes:     res.StderrBytes,
		StdoutTruncated: res.StdoutTruncated,
		StderrTruncated: res.StderrTruncated,
	}
	if res.Signal != "" {
		sig := res.Signal
		exit.Signal = &sig
	}
	// Forgotten before "exit" is queued: a host that reads the exit and then
	// kills the id, or reuses it, must find nothing running under it.
	s.mu.Lock()
	delete(s.execs, id)
	s.mu.Unlock()
	c.send(s, exit, nil)
}

func (c *Conn) kill(s *session, id uint64, header []byte) {
	var req protocol.Kill
	if err := json.Unmarshal(header, &req); err != nil {
		c.sendError(s, id, protocol.CodeBadRequest, "kill: "+err.Error())
		return
	}
	if req.Target == nil {
		c.sendError(s, id, protocol.CodeBadRequest, "kill: target is required")
		return
	}
	name := "SIGKILL"
	if req.Signal != nil {
		name = *req.Signal
	}
	sig, ok := process.ParseKillSignal(name)
	if !ok {
		c.sendError(s, id, protocol.CodeBadRequest, fmt.Sprintf("kill: unsupported signal %q", clip(name)))
		return
	}
	// Exec ids are chosen by the host per connection, so only the current
	// session's commands are addressable.
	s.mu.Lock()
	proc := s.execs[*req.Target]
	s.mu.Unlock()
	if proc == nil {
		c.sendError(s, id, protocol.CodeNotFound, fmt.Sprintf("kill: no running exec with id %d", *req.Target))
		return
	}
	if err := proc.Signal(sig); err != nil {
		c.sendError(s, id, protocol.CodeKillFailed, "kill: "+err.Error())
		return
	}
	c.send(s, protocol.OK{Type: protocol.TypeOK, ID: id}, nil)
}

func (c *Conn) poweroff(s *session, id uint64) {
	flushed := make(chan struct{})
	if c.sendFlushed(s, protocol.OK{Type: protocol.TypeOK, ID: id}, nil, flushed) {
		select {
		case <-flushed:
		case <-time.After(flushTimeout):
		}
	}
	c.opts.PowerOff()
}

// clip bounds a message and keeps it valid UTF-8.
func clip(s string) string { return clipTo(s, maxMessageLen) }

// clipTo bounds s to n bytes (plus an ellipsis when cut), keeping it valid
// UTF-8.
func clipTo(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}
