package session

import (
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"syscall"
	"time"

	"pyro/guest/internal/process"
	"pyro/guest/internal/protocol"
	"pyro/guest/internal/shells"
)

// maxWaitMs bounds shell_read's waits.
const maxWaitMs = 60_000

// shellCode maps a shells failure to a protocol code.
func shellCode(err error) string {
	var se *process.StartError
	switch {
	case errors.Is(err, shells.ErrNotFound):
		return protocol.CodeNotFound
	case errors.Is(err, shells.ErrTooMany):
		return protocol.CodeTooMany
	case errors.Is(err, shells.ErrExited):
		return protocol.CodeShellExited
	case errors.As(err, &se):
		return protocol.CodeExecFailed
	}
	return protocol.CodeIOError
}

// intField checks an optional integer field against [min, max].
func intField(what, name string, v *int64, min, max int64, required bool) (int64, error) {
	if v == nil {
		if required {
			return 0, fmt.Errorf("%s: %s is required (an integer from %d to %d)", what, name, min, max)
		}
		return 0, nil
	}
	if *v < min || *v > max {
		return 0, fmt.Errorf("%s: %s must be an integer from %d to %d", what, name, min, max)
	}
	return *v, nil
}

func shellSignal(name string) (syscall.Signal, bool) {
	switch name {
	case "SIGINT":
		return syscall.SIGINT, true
	case "SIGTERM":
		return syscall.SIGTERM, true
	case "SIGKILL":
		return syscall.SIGKILL, true
	case "SIGHUP":
		return syscall.SIGHUP, true
	}
	return 0, false
}

func exitOK(id uint64, code int, sig string) protocol.ExitOK {
	r := protocol.ExitOK{Type: protocol.TypeOK, ID: id, ExitCode: code}
	if sig != "" {
		r.Signal = &sig
	}
	return r
}

// exitFields gives the optional exit_code and signal of an exited shell or
// service.
func exitFields(code int, sig string) (*int, *string) {
	if sig == "" {
		return &code, nil
	}
	return &code, &sig
}

func (c *Conn) shellRequest(s *session, id uint64, typ string, f protocol.Frame) {
	var req protocol.ShellRequest
	if err := json.Unmarshal(f.Header, &req); err != nil {
		c.sendError(s, id, protocol.CodeBadRequest, typ+": "+err.Error())
		return
	}
	fail := func(err error) { c.sendError(s, id, shellCode(err), typ+": "+err.Error()) }
	bad := func(err error) { c.sendError(s, id, protocol.CodeBadRequest, err.Error()) }
	reg := c.opts.Shells
	switch typ {
	case protocol.TypeShellOpen:
		c.shellOpen(s, id, req)
		return
	case protocol.TypeShellList:
		c.send(s, shellList(id, reg.List()), nil)
		return
	}
	if req.ShellID == nil || *req.ShellID == "" {
		bad(fmt.Errorf("%s: shell_id is required", typ))
		return
	}
	shellID := *req.ShellID
	// Every field is checked before the shell is looked up, so a bad
	// request is bad_request whatever shell it names.
	var (
		rr         shells.ReadRequest
		cols, rows int64
		sig        syscall.Signal
		err        error
	)
	switch typ {
	case protocol.TypeShellRead:
		rr, err = parseShellRead(req)
	case protocol.TypeShellWrite:
		if len(f.Payload) > shells.MaxWrite {
			err = fmt.Errorf("shell_write: payload over %d bytes", shells.MaxWrite)
		}
	case protocol.TypeShellResize:
		if cols, err = intField(typ, "cols", req.Cols, 1, shells.MaxCols, true); err == nil {
			rows, err = intField(typ, "rows", req.Rows, 1, shells.MaxRows, true)
		}
	case protocol.TypeShellSignal:
		var ok bool
		switch {
		case req.Signal == nil:
			err = errors.New("shell_signal: signal is required")
		default:
			if sig, ok = shellSignal(*req.Signal); !ok {
				err = fmt.Errorf("shell_signal: unsupported signal %q (SIGINT, SIGTERM, SIGKILL or SIGHUP)", clip(*req.Signal))
			}
		}
	}
	if err != nil {
		bad(err)
		return
	}
	if typ == protocol.TypeShellClose {
		go func() {
			defer c.recoverIn(s, id, typ)
			ex, err := reg.Close(shellID)
			if err != nil {
				fail(fmt.Errorf("%w: %q", err, clip(shellID)))
				return
			}
			c.send(s, exitOK(id, ex.Code, ex.Signal), nil)
		}()
		return
	}
	sh, err := reg.Get(shellID)
	if err != nil {
		fail(fmt.Errorf("%w: %q", err, clip(shellID)))
		return
	}
	switch typ {
	case protocol.TypeShellRead:
		go func() {
			defer c.recoverIn(s, id, typ)
			res := sh.Read(rr, s.done)
			reply := protocol.ShellReadOK{Type: protocol.TypeOK, ID: id, Start: res.Start, NextCursor: res.Next,
				DroppedBytes: res.Dropped, End: res.End, IdleMs: res.Idle.Milliseconds(), State: protocol.StateRunning}
			if !res.Running {
				reply.State = protocol.StateExited
				reply.ExitCode, reply.Signal = exitFields(res.Exit.Code, res.Exit.Signal)
			}
			c.send(s, reply, res.Data)
		}()
	case protocol.TypeShellWrite:
		// Queued in arrival order; the reply comes once written.
		sh.Write(f.Payload, func(err error) {
			if err != nil {
				fail(err)
				return
			}
			c.send(s, protocol.OK{Type: protocol.TypeOK, ID: id}, nil)
		})
	case protocol.TypeShellResize:
		if err := sh.Resize(int(cols), int(rows)); err != nil {
			fail(err)
			return
		}
		c.send(s, protocol.OK{Type: protocol.TypeOK, ID: id}, nil)
	case protocol.TypeShellSignal:
		pgid, err := sh.Signal(sig)
		if err != nil {
			code := shellCode(err)
			if code == protocol.CodeIOError {
				code = protocol.CodeKillFailed
			}
			c.sendError(s, id, code, typ+": "+err.Error())
			return
		}
		c.send(s, protocol.ShellSignalOK{Type: protocol.TypeOK, ID: id, Pgid: pgid}, nil)
	}
}

// shellList builds the shell_list reply, cutting long working directories
// as far as needed for the header to stay within the frame limit.
func shellList(id uint64, infos []shells.Info) protocol.ShellListOK {
	return fitHeader(func(limit int) protocol.ShellListOK {
		out := make([]protocol.ShellInfo, 0, len(infos))
		for _, in := range infos {
			si := protocol.ShellInfo{ShellID: in.ID, Pid: in.Pid, Cols: in.Cols, Rows: in.Rows, Cwd: clipTo(in.Cwd, limit),
				State: protocol.StateRunning, End: in.End, StartedUnixMs: in.Started.UnixMilli()}
			if !in.Running {
				si.State = protocol.StateExited
				si.ExitCode, si.Signal = exitFields(in.Exit.Code, in.Exit.Signal)
			}
			out = append(out, si)
		}
		return protocol.ShellListOK{Type: protocol.TypeOK, ID: id, Shells: out}
	})
}

// fitHeader returns build(limit) for the largest limit on variable strings
// whose JSON fits a header (with room to spare).
func fitHeader[T any](build func(limit int) T) T {
	var r T
	for _, limit := range []int{maxMessageLen, 256, 64, 0} {
		r = build(limit)
		if b, err := json.Marshal(r); err == nil && len(b) <= protocol.MaxHeaderLen-1024 {
			break
		}
	}
	return r
}

func parseShellRead(req protocol.ShellRequest) (shells.ReadRequest, error) {
	const what = "shell_read"
	var rr shells.ReadRequest
	cursor, err := intField(what, "cursor", req.Cursor, 0, 1<<62, true)
	if err != nil {
		return rr, err
	}
	max, err := intField(what, "max_bytes", req.MaxBytes, 0, protocol.MaxPayloadLen, true)
	if err != nil {
		return rr, err
	}
	wait, err := intField(what, "wait_ms", req.WaitMs, 0, maxWaitMs, false)
	if err != nil {
		return rr, err
	}
	rr = shells.ReadRequest{Cursor: cursor, MaxBytes: int(max), Wait: time.Duration(wait) * time.Millisecond}
	if req.WaitForIdleMs != nil {
		idle, err := intField(what, "wait_for_idle_ms", req.WaitForIdleMs, 0, maxWaitMs, false)
		if err != nil {
			return rr, err
		}
		d := time.Duration(idle) * time.Millisecond
		rr.WaitForIdle = &d
	}
	return rr, nil
}

func (c *Conn) shellOpen(s *session, id uint64, req protocol.ShellRequest) {
	const what = "shell_open"
	bad := func(err error) { c.sendError(s, id, protocol.CodeBadRequest, err.Error()) }
	cols, err := intField(what, "cols", req.Cols, 1, shells.MaxCols, true)
	if err != nil {
		bad(err)
		return
	}
	rows, err := intField(what, "rows", req.Rows, 1, shells.MaxRows, true)
	if err != nil {
		bad(err)
		return
	}
	opts := shells.Options{Cols: int(cols), Rows: int(rows), Env: req.Env}
	if req.Cwd != nil {
		if *req.Cwd == "" {
			bad(errors.New("shell_open: cwd must be non-empty when given"))
			return
		}
		opts.Cwd = *req.Cwd
	}
	if err := checkEnv(what, req.Env); err != nil {
		bad(err)
		return
	}
	if err := checkSecretEnv(what, req.SecretEnv); err != nil {
		bad(err)
		return
	}
	if opts.Env, err = c.withSecrets(s, id, what, opts.Env, req.SecretEnv); err != nil {
		return // replied
	}
	sh, err := c.opts.Shells.Open(opts)
	if err != nil {
		c.sendError(s, id, shellCode(err), what+": "+err.Error())
		return
	}
	c.send(s, protocol.ShellOpenOK{Type: protocol.TypeOK, ID: id, ShellID: sh.ID(), Pid: sh.Pid()}, nil)
}

// recoverIn keeps a panic in a request's goroutine from ending the agent,
// and answers the request.
func (c *Conn) recoverIn(s *session, id uint64, typ string) {
	if p := recover(); p != nil {
		c.opts.Logf("session: panic in %s %d: %v\n%s", typ, id, p, debug.Stack())
		c.sendError(s, id, protocol.CodeIOError, typ+": internal error")
	}
}
