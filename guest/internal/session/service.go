package session

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"pyro/guest/internal/process"
	"pyro/guest/internal/protocol"
	"pyro/guest/internal/services"
)

// serviceCode maps a services failure to a protocol code.
func serviceCode(err error) string {
	var se *process.StartError
	switch {
	case errors.Is(err, services.ErrNotFound):
		return protocol.CodeNotFound
	case errors.Is(err, services.ErrAlreadyExists):
		return protocol.CodeAlreadyExists
	case errors.Is(err, services.ErrTooMany):
		return protocol.CodeTooMany
	case errors.As(err, &se):
		return protocol.CodeExecFailed
	}
	return protocol.CodeKillFailed // only stopping fails otherwise
}

func (c *Conn) serviceRequest(s *session, id uint64, typ string, header []byte) {
	var req protocol.ServiceRequest
	if err := json.Unmarshal(header, &req); err != nil {
		c.sendError(s, id, protocol.CodeBadRequest, typ+": "+err.Error())
		return
	}
	bad := func(format string, args ...any) {
		c.sendError(s, id, protocol.CodeBadRequest, typ+": "+fmt.Sprintf(format, args...))
	}
	fail := func(err error) { c.sendError(s, id, serviceCode(err), typ+": "+err.Error()) }
	name := ""
	if req.Name != nil {
		name = *req.Name
		if !services.ValidName(name) {
			bad("invalid service name %q (want [a-z0-9][a-z0-9_.-]{0,62})", clip(name))
			return
		}
	} else if typ != protocol.TypeServiceStatus {
		bad("name is required")
		return
	}
	reg := c.opts.Services
	switch typ {
	case protocol.TypeServiceStart:
		c.serviceStart(s, id, name, req)
	case protocol.TypeServiceStatus:
		infos, err := reg.Status(name)
		if err != nil {
			fail(fmt.Errorf("%w: %q", err, name))
			return
		}
		c.send(s, serviceStatus(id, infos), nil)
	case protocol.TypeServiceLogs:
		tail := int64(-1)
		if req.TailLines != nil {
			if *req.TailLines < 0 {
				bad("tail_lines must be a non-negative integer")
				return
			}
			tail = *req.TailLines
		}
		max, err := intField(typ, "max_bytes", req.MaxBytes, 0, protocol.MaxPayloadLen, true)
		if err != nil {
			c.sendError(s, id, protocol.CodeBadRequest, err.Error())
			return
		}
		logs, err := reg.Logs(name, tail, int(max))
		if err != nil {
			fail(fmt.Errorf("%w: %q", err, name))
			return
		}
		c.send(s, protocol.ServiceLogsOK{Type: protocol.TypeOK, ID: id, DroppedBytes: logs.Dropped,
			TotalBytes: logs.Total, Truncated: logs.Truncated}, logs.Data)
	case protocol.TypeServiceStop:
		grace := services.DefaultGrace
		if req.GraceMs != nil {
			ms, err := intField(typ, "grace_ms", req.GraceMs, 0, services.MaxGrace.Milliseconds(), false)
			if err != nil {
				c.sendError(s, id, protocol.CodeBadRequest, err.Error())
				return
			}
			grace = time.Duration(ms) * time.Millisecond
		}
		go func() {
			defer c.recoverIn(s, id, typ)
			ex, err := reg.Stop(name, grace)
			if err != nil {
				fail(fmt.Errorf("%w: %q", err, name))
				return
			}
			c.send(s, exitOK(id, ex.Code, ex.Signal), nil)
		}()
	case protocol.TypeServiceRemove:
		go func() {
			defer c.recoverIn(s, id, typ)
			if err := reg.Remove(name); err != nil {
				fail(fmt.Errorf("%w: %q", err, name))
				return
			}
			c.send(s, protocol.OK{Type: protocol.TypeOK, ID: id}, nil)
		}()
	}
}

// serviceStatus builds the service_status reply, cutting long commands as
// far as needed for the header to stay within the frame limit.
func serviceStatus(id uint64, infos []services.Info) protocol.ServiceStatusOK {
	return fitHeader(func(limit int) protocol.ServiceStatusOK {
		out := make([]protocol.ServiceInfo, 0, len(infos))
		for _, in := range infos {
			si := protocol.ServiceInfo{Name: in.Name, Command: clipTo(in.Command, limit), Pid: in.Pid, State: protocol.StateRunning,
				StartedUnixMs: in.Started.UnixMilli(), OutputBytes: in.OutputBytes}
			if !in.Running {
				si.State = protocol.StateExited
				si.ExitCode, si.Signal = exitFields(in.Exit.Code, in.Exit.Signal)
				ended := in.Ended.UnixMilli()
				si.EndedUnixMs = &ended
			}
			out = append(out, si)
		}
		return protocol.ServiceStatusOK{Type: protocol.TypeOK, ID: id, Services: out}
	})
}

func (c *Conn) serviceStart(s *session, id uint64, name string, req protocol.ServiceRequest) {
	const what = "service_start"
	bad := func(msg string) { c.sendError(s, id, protocol.CodeBadRequest, what+": "+msg) }
	if req.Shell == nil || *req.Shell == "" {
		bad("shell must be a non-empty string")
		return
	}
	if strings.ContainsRune(*req.Shell, 0) {
		bad("shell must not contain a NUL byte")
		return
	}
	spec := services.Spec{Name: name, Command: *req.Shell, Env: req.Env}
	if req.Cwd != nil {
		if *req.Cwd == "" {
			bad("cwd must be non-empty when given")
			return
		}
		spec.Cwd = *req.Cwd
	}
	if err := checkEnv(what, req.Env); err != nil {
		c.sendError(s, id, protocol.CodeBadRequest, err.Error())
		return
	}
	if err := checkSecretEnv(what, req.SecretEnv); err != nil {
		c.sendError(s, id, protocol.CodeBadRequest, err.Error())
		return
	}
	var err error
	if spec.Env, err = c.withSecrets(s, id, what, spec.Env, req.SecretEnv); err != nil {
		return // replied
	}
	info, err := c.opts.Services.Start(spec)
	if err != nil {
		msg := err.Error()
		if errors.Is(err, services.ErrAlreadyExists) {
			msg = fmt.Sprintf("service %q is running", name)
		}
		c.sendError(s, id, serviceCode(err), what+": "+msg)
		return
	}
	c.send(s, protocol.ServiceStartOK{Type: protocol.TypeOK, ID: id, Pid: info.Pid, StartedUnixMs: info.Started.UnixMilli()}, nil)
}

func (c *Conn) probe(s *session, id uint64, header []byte) {
	var req protocol.Probe
	if err := json.Unmarshal(header, &req); err != nil {
		c.sendError(s, id, protocol.CodeBadRequest, "probe: "+err.Error())
		return
	}
	if req.Kind == nil {
		c.sendError(s, id, protocol.CodeBadRequest, "probe: kind is required (file, tcp or http)")
		return
	}
	p := services.Probe{Kind: services.ProbeKind(*req.Kind)}
	if req.Path != nil {
		p.Path = *req.Path
	}
	if req.Port != nil {
		if *req.Port < 1 || *req.Port > 65535 {
			c.sendError(s, id, protocol.CodeBadRequest, "probe: port must be an integer from 1 to 65535")
			return
		}
		p.Port = int(*req.Port)
	}
	if req.URL != nil {
		p.URL = *req.URL
	}
	if err := p.Validate(); err != nil {
		c.sendError(s, id, protocol.CodeBadRequest, "probe: "+err.Error())
		return
	}
	go func() {
		defer c.recoverIn(s, id, protocol.TypeProbe)
		ready, detail := p.Run()
		c.send(s, protocol.ProbeOK{Type: protocol.TypeOK, ID: id, Ready: ready, Detail: clip(detail)}, nil)
	}()
}
