package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"pyro/guest/internal/protocol"
)

// This package starts no reaper, so os/exec is safe to use here.

// buildAgent compiles the real binary, statically as in production
// (-trimpath is left out only because it forces a slow rebuild of the
// standard library on a cold cache; it does not change behaviour).
func buildAgent(t *testing.T) string {
	t.Helper()
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		goTool = "go"
	}
	bin := filepath.Join(t.TempDir(), "pyro-agent")
	// -buildvcs=false: VCS stamping fails when the checkout belongs to another
	// user (git "dubious ownership"), and the stamp is irrelevant here.
	cmd := exec.Command(goTool, "build", "-buildvcs=false", "-ldflags=-s -w", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

type agentConn struct {
	t    *testing.T
	conn net.Conn
	dec  *protocol.Decoder
}

func (a *agentConn) send(h map[string]any, payload []byte) {
	a.t.Helper()
	b, err := protocol.Encode(h, payload)
	if err != nil {
		a.t.Fatal(err)
	}
	if _, err := a.conn.Write(b); err != nil {
		a.t.Fatal(err)
	}
}

type reply struct {
	h       map[string]any
	payload []byte
}

func (r reply) str(k string) string { s, _ := r.h[k].(string); return s }
func (r reply) num(k string) float64 {
	n, ok := r.h[k].(float64)
	if !ok {
		return -1
	}
	return n
}

func (a *agentConn) next() reply {
	a.t.Helper()
	_ = a.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := a.dec.Next()
	if err != nil {
		a.t.Fatalf("reading frame: %v", err)
	}
	var h map[string]any
	if err := json.Unmarshal(f.Header, &h); err != nil {
		a.t.Fatalf("bad header %q", f.Header)
	}
	return reply{h, f.Payload}
}

func (a *agentConn) expect(typ string, id float64) reply {
	a.t.Helper()
	r := a.next()
	if r.str("type") != typ || r.num("id") != id {
		a.t.Fatalf("want %s/%v, got %v", typ, id, r.h)
	}
	return r
}

func dial(t *testing.T, sock string) *agentConn {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &agentConn{t: t, conn: c, dec: protocol.NewDecoder(c)}
}

// runExec collects one exec's replies until exit.
func (a *agentConn) runExec(id float64) (stdout, stderr string, exit reply) {
	a.t.Helper()
	a.expect("started", id)
	for {
		r := a.next()
		if r.num("id") != id {
			a.t.Fatalf("unexpected %v", r.h)
		}
		switch r.str("type") {
		case "output":
			if r.str("stream") == "stdout" {
				stdout += string(r.payload)
			} else {
				stderr += string(r.payload)
			}
		case "exit":
			return stdout, stderr, r
		default:
			a.t.Fatalf("unexpected %v", r.h)
		}
	}
}

// tarOf builds an archive of regular files, in name order.
func tarOf(t *testing.T, files map[string]string) []byte {
	t.Helper()
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range names {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(files[name]))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(files[name])); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestEndToEnd(t *testing.T) {
	bin := buildAgent(t)

	// The binary must be static: the initramfs has no dynamic loader.
	ef, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("binary is dynamically linked (program header %v)", p.Type)
		}
	}
	ef.Close()

	out, err := exec.Command(bin, "--version").Output()
	if err != nil || !strings.Contains(string(out), protocol.AgentVersion) {
		t.Fatalf("--version: %q %v", out, err)
	}
	if err := exec.Command(bin).Run(); err == nil {
		t.Fatal("running without --listen outside PID 1 should fail")
	}

	sock := filepath.Join(t.TempDir(), "agent.sock")
	cmd := exec.Command(bin, "--listen", "unix:"+sock)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	ready := make(chan struct{})
	var logs bytes.Buffer
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
			if sc.Text() == "pyro-agent: ready" {
				close(ready)
			}
		}
		exited <- cmd.Wait()
	}()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	}()
	select {
	case <-ready:
	case <-time.After(5 * time.Second):
		t.Fatal("agent never printed ready")
	}

	a := dial(t, sock)
	a.send(map[string]any{"type": "hello", "id": 1, "nonce": "e2e-nonce", "hostname": "ignored-off-vm"}, []byte("entropy"))
	h := a.expect("hello_ok", 1)
	if h.str("nonce") != "e2e-nonce" || h.str("agent_version") != protocol.AgentVersion || h.num("protocol") != 1 || h.h["pid1"] != false {
		t.Fatalf("hello_ok %v", h.h)
	}
	if host, _ := os.Hostname(); host == "ignored-off-vm" {
		t.Fatal("off-VM agent changed the hostname")
	}

	a.send(map[string]any{"type": "exec", "id": 2, "shell": "echo out; echo err >&2; exit 3", "timeout_ms": 5000,
		"max_output_bytes": 1024, "env": map[string]string{"HOME": os.TempDir()}}, nil)
	so, se, exit := a.runExec(2)
	if so != "out\n" || se != "err\n" || exit.num("exit_code") != 3 || exit.h["signal"] != nil {
		t.Fatalf("exec: %q %q %v", so, se, exit.h)
	}

	start := time.Now()
	a.send(map[string]any{"type": "exec", "id": 3, "shell": "sleep 60 & sleep 60", "timeout_ms": 300,
		"max_output_bytes": 0, "env": map[string]string{"HOME": os.TempDir()}}, nil)
	_, _, exit = a.runExec(3)
	if exit.num("exit_code") != 124 || exit.h["timed_out"] != true || time.Since(start) > 3*time.Second {
		t.Fatalf("timeout exec: %v after %v", exit.h, time.Since(start))
	}

	// A second connection is an independent session.
	b := dial(t, sock)
	b.send(map[string]any{"type": "hello", "id": 1, "nonce": "other"}, nil)
	b.expect("hello_ok", 1)
	b.send(map[string]any{"type": "ping", "id": 2}, nil)
	b.expect("ok", 2)

	// put_tar in several chunks, then a command reads what arrived.
	dest := filepath.Join(t.TempDir(), "pushed", "tree")
	archive := tarOf(t, map[string]string{"dir/hello.txt": "hello from the host\n", "dir/pad.bin": strings.Repeat("x", 100_000)})
	const chunk = 30_000
	a.send(map[string]any{"type": "put_tar", "id": 40, "dest": dest, "max_bytes": 1 << 20, "max_entries": 10}, archive[:chunk])
	for off := chunk; off < len(archive); off += chunk {
		end := off + chunk
		if end > len(archive) {
			end = len(archive)
		}
		a.send(map[string]any{"type": "put_tar_data", "id": 40}, archive[off:end])
	}
	a.send(map[string]any{"type": "put_tar_end", "id": 40}, nil)
	if r := a.expect("ok", 40); r.num("files") != 2 || r.num("bytes") != 100_020 {
		t.Fatalf("put_tar: %v", r.h)
	}
	a.send(map[string]any{"type": "exec", "id": 41, "argv": []string{"cat", filepath.Join(dest, "dir", "hello.txt")},
		"timeout_ms": 5000, "max_output_bytes": 1024}, nil)
	if so, se, exit := a.runExec(41); so != "hello from the host\n" || exit.num("exit_code") != 0 {
		t.Fatalf("cat: %q %q %v", so, se, exit.h)
	}

	a.send(map[string]any{"type": "ping", "id": 4}, nil)
	a.expect("ok", 4)
	a.send(map[string]any{"type": "poweroff", "id": 5}, nil)
	a.expect("ok", 5)
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		if code := cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("agent exited with %d\n%s", code, logs.String())
		}
	case <-time.After(3 * time.Second):
		t.Fatal("agent did not exit after poweroff")
	}
	if _, err := os.Stat(sock); err == nil {
		t.Error("socket file left behind")
	}
}
